//! Shard and system health: HEALTHY / DEGRADED / UNHEALTHY from ack
//! latency, error rate, health probes and pipeline stalls, with seed 000's
//! thresholds by default (`[health]`). The judgement is a pure function of
//! what telemetry recorded, so it is tested without a running shard.

use serde::Serialize;

use crate::telemetry::{ProbeState, WriteWindow};
use floe_config::HealthConfig;
use floe_emitter::sink::SinkLag;

/// A shard's (or the system's) state, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Everything within the DEGRADED thresholds.
    Healthy,
    /// Slow (p95 ack or a probe above `degraded_latency_ms`) or failing
    /// more than `degraded_error_rate` of writes.
    Degraded,
    /// Slower than `unhealthy_latency_ms`, failing more than
    /// `unhealthy_error_rate`, or unreachable.
    Unhealthy,
}

impl HealthStatus {
    /// `HEALTHY`, `DEGRADED` or `UNHEALTHY`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Degraded => "DEGRADED",
            HealthStatus::Unhealthy => "UNHEALTHY",
        }
    }
}

/// One shard's health and the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardHealth {
    /// The shard.
    pub shard: u32,
    /// Its state.
    pub status: HealthStatus,
    /// Why it is not HEALTHY (empty when it is).
    pub reasons: Vec<String>,
    /// Writes over the health window.
    pub writes: WriteWindow,
    /// Share of the window's writes that failed on floe's side.
    pub error_rate: f64,
    /// The last health probe (a stats round trip through the shard's inbox).
    pub probe: ProbeState,
    /// Requests waiting in the shard's inbox.
    pub inbox_depth: u64,
    /// How long the group commit now in the pipeline has waited (pipeline lag).
    pub pipeline_wait_ms: f64,
    /// How long the last pipeline append took.
    pub last_append_ms: f64,
    /// Injected fault delay, when one is set (tests and drills only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_delay_ms: Option<f64>,
}

/// What a shard's judgement starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardSignals {
    pub(crate) writes: WriteWindow,
    pub(crate) probe: ProbeState,
    pub(crate) pipeline_wait_ms: f64,
}

/// The state and the reasons for it.
pub(crate) fn judge(signals: &ShardSignals, health: &HealthConfig) -> (HealthStatus, Vec<String>) {
    let mut status = HealthStatus::Healthy;
    let mut reasons = Vec::new();
    let mut flag = |level: HealthStatus, reason: String| {
        status = status.max(level);
        reasons.push(reason);
    };
    let degraded_ms = health.degraded_latency_ms as f64;
    let unhealthy_ms = health.unhealthy_latency_ms as f64;
    let w = &signals.writes;
    // p95 above a threshold <=> more than 5% of the writes were slower.
    let p95_above = |slower: u64| slower * 20 > w.writes;
    if w.writes > 0 && p95_above(w.slower_than_unhealthy) {
        flag(
            HealthStatus::Unhealthy,
            format!("p95 ack latency above {unhealthy_ms} ms"),
        );
    } else if w.writes > 0 && p95_above(w.slower_than_degraded) {
        flag(
            HealthStatus::Degraded,
            format!("p95 ack latency above {degraded_ms} ms"),
        );
    }
    let probe = &signals.probe;
    if probe.last_ms.is_some() && !probe.last_ok {
        flag(
            HealthStatus::Unhealthy,
            "unreachable: the last probe got no answer".into(),
        );
    }
    let probe_ms = probe
        .last_ms
        .unwrap_or(0.0)
        .max(probe.in_flight_ms.unwrap_or(0.0));
    for (what, ms) in [
        ("probe", probe_ms),
        ("pipeline append", signals.pipeline_wait_ms),
    ] {
        if ms > unhealthy_ms {
            flag(
                HealthStatus::Unhealthy,
                format!("{what} took {ms:.0} ms (> {unhealthy_ms} ms)"),
            );
        } else if ms > degraded_ms {
            flag(
                HealthStatus::Degraded,
                format!("{what} took {ms:.0} ms (> {degraded_ms} ms)"),
            );
        }
    }
    if w.writes >= health.min_requests.max(1) {
        let rate = error_rate(w);
        if rate > health.unhealthy_error_rate {
            flag(
                HealthStatus::Unhealthy,
                format!(
                    "error rate {:.1}% (> {:.1}%)",
                    rate * 100.0,
                    health.unhealthy_error_rate * 100.0
                ),
            );
        } else if rate > health.degraded_error_rate {
            flag(
                HealthStatus::Degraded,
                format!(
                    "error rate {:.1}% (> {:.1}%)",
                    rate * 100.0,
                    health.degraded_error_rate * 100.0
                ),
            );
        }
    }
    (status, reasons)
}

pub(crate) fn error_rate(w: &WriteWindow) -> f64 {
    if w.writes == 0 {
        0.0
    } else {
        w.failures as f64 / w.writes as f64
    }
}

/// The whole deployment's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemHealth {
    /// The worst of the shards' states and the sink's.
    pub status: HealthStatus,
    /// Why it is not HEALTHY.
    pub reasons: Vec<String>,
    /// Shards per state.
    pub healthy: u32,
    /// Shards DEGRADED.
    pub degraded: u32,
    /// Shards UNHEALTHY.
    pub unhealthy: u32,
    /// Writes in the window across shards.
    pub writes: u64,
    /// Share of them that failed on floe's side.
    pub error_rate: f64,
    /// Requests waiting across every shard inbox.
    pub inbox_depth: u64,
    /// The longest pipeline wait of any shard, in milliseconds.
    pub pipeline_wait_ms: f64,
    /// How far the lake is behind, when the sink runs in this process.
    pub sink: Option<SinkHealth>,
    /// Seconds since floe opened.
    pub uptime_s: f64,
    /// Every shard.
    pub shards: Vec<ShardHealth>,
}

/// The sink's lag as health reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SinkHealth {
    /// Events in the pipeline not yet committed to Iceberg.
    pub lag_events: u64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: f64,
    /// Iceberg commits since the sink started.
    pub commits: u64,
}

impl From<SinkLag> for SinkHealth {
    fn from(lag: SinkLag) -> Self {
        SinkHealth {
            lag_events: lag.events,
            lag_seconds: lag.seconds,
            commits: lag.commits,
        }
    }
}

/// Rolls shard states and the sink lag up into the system's.
pub(crate) fn system(
    shards: Vec<ShardHealth>,
    sink: Option<SinkHealth>,
    uptime_s: f64,
    health: &HealthConfig,
) -> SystemHealth {
    let mut status = HealthStatus::Healthy;
    let mut reasons = Vec::new();
    let count = |s: HealthStatus| shards.iter().filter(|h| h.status == s).count() as u32;
    for h in shards.iter().filter(|h| h.status != HealthStatus::Healthy) {
        status = status.max(h.status);
        reasons.push(format!("shard {} is {}", h.shard, h.status.as_str()));
    }
    if let Some(lag) = &sink {
        let level = if lag.lag_seconds > health.unhealthy_sink_lag_s {
            HealthStatus::Unhealthy
        } else if lag.lag_seconds > health.degraded_sink_lag_s {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        if level != HealthStatus::Healthy {
            status = status.max(level);
            reasons.push(format!(
                "sink is {:.0} s behind the pipeline",
                lag.lag_seconds
            ));
        }
    }
    let writes: u64 = shards.iter().map(|h| h.writes.writes).sum();
    let failures: u64 = shards.iter().map(|h| h.writes.failures).sum();
    SystemHealth {
        status,
        reasons,
        healthy: count(HealthStatus::Healthy),
        degraded: count(HealthStatus::Degraded),
        unhealthy: count(HealthStatus::Unhealthy),
        writes,
        error_rate: if writes == 0 {
            0.0
        } else {
            failures as f64 / writes as f64
        },
        inbox_depth: shards.iter().map(|h| h.inbox_depth).sum(),
        pipeline_wait_ms: shards
            .iter()
            .map(|h| h.pipeline_wait_ms)
            .fold(0.0, f64::max),
        sink,
        uptime_s,
        shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(writes: u64, failures: u64, slow: u64, very_slow: u64) -> ShardSignals {
        ShardSignals {
            writes: WriteWindow {
                window_ms: 60_000,
                writes,
                failures,
                slower_than_degraded: slow,
                slower_than_unhealthy: very_slow,
                ..WriteWindow::default()
            },
            probe: ProbeState::default(),
            pipeline_wait_ms: 0.0,
        }
    }

    fn status(s: &ShardSignals) -> HealthStatus {
        judge(s, &HealthConfig::default()).0
    }

    #[test]
    fn seed_000_thresholds() {
        assert_eq!(status(&signals(0, 0, 0, 0)), HealthStatus::Healthy);
        assert_eq!(
            status(&signals(100, 0, 5, 0)),
            HealthStatus::Healthy,
            "p95 at the line"
        );
        assert_eq!(status(&signals(100, 0, 6, 0)), HealthStatus::Degraded);
        assert_eq!(status(&signals(100, 0, 6, 6)), HealthStatus::Unhealthy);
        assert_eq!(
            status(&signals(100, 5, 0, 0)),
            HealthStatus::Healthy,
            "5% errors"
        );
        assert_eq!(status(&signals(100, 6, 0, 0)), HealthStatus::Degraded);
        assert_eq!(status(&signals(100, 11, 0, 0)), HealthStatus::Unhealthy);
        // Too few writes to judge an error rate.
        assert_eq!(status(&signals(10, 10, 0, 0)), HealthStatus::Healthy);
    }

    #[test]
    fn probes_and_stalls_count_without_writes() {
        let mut s = signals(0, 0, 0, 0);
        s.probe.in_flight_ms = Some(700.0);
        assert_eq!(status(&s), HealthStatus::Degraded);
        s.probe.last_ms = Some(2500.0);
        s.probe.last_ok = true;
        assert_eq!(status(&s), HealthStatus::Unhealthy);
        let mut s = signals(0, 0, 0, 0);
        s.probe.last_ms = Some(1.0);
        s.probe.last_ok = false;
        let (status, reasons) = judge(&s, &HealthConfig::default());
        assert_eq!(status, HealthStatus::Unhealthy);
        assert!(reasons[0].contains("unreachable"));
        let mut s = signals(0, 0, 0, 0);
        s.pipeline_wait_ms = 900.0;
        assert_eq!(super::tests::status(&s), HealthStatus::Degraded);
    }

    #[test]
    fn the_system_is_as_bad_as_its_worst_part() {
        let shard = |shard, status| ShardHealth {
            shard,
            status,
            reasons: vec![],
            writes: WriteWindow::default(),
            error_rate: 0.0,
            probe: ProbeState::default(),
            inbox_depth: 2,
            pipeline_wait_ms: 0.0,
            last_append_ms: 0.0,
            fault_delay_ms: None,
        };
        let health = HealthConfig::default();
        let all = vec![
            shard(0, HealthStatus::Healthy),
            shard(1, HealthStatus::Degraded),
        ];
        let s = system(all.clone(), None, 1.0, &health);
        assert_eq!(
            (s.status, s.healthy, s.degraded, s.inbox_depth),
            (HealthStatus::Degraded, 1, 1, 4)
        );
        let lag = SinkLag {
            events: 10,
            seconds: 400.0,
            commits: 1,
        };
        let s = system(all, Some(lag.into()), 1.0, &health);
        assert_eq!(s.status, HealthStatus::Unhealthy);
        assert!(s.reasons.iter().any(|r| r.contains("sink")));
    }
}
