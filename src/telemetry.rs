//! What `Floe` records about every write and every health probe: a sliding
//! window per shard (for health) and, with the `server` feature, Prometheus
//! counters and histograms (for `/metrics`). Recording is a short mutex
//! section per write; reading never blocks a shard worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use floe_config::HealthConfig;

#[cfg(not(feature = "server"))]
#[path = "telemetry/metrics_off.rs"]
mod metrics;
#[cfg(feature = "server")]
#[path = "telemetry/prometheus.rs"]
mod metrics;

#[cfg(feature = "server")]
pub(crate) use metrics::ShardLabel;
use metrics::{ShardMetrics, WriteMetrics};

/// The window is this many slots; the oldest slot is dropped as time moves,
/// so the window covers between `SLOTS - 1` and `SLOTS` slot lengths.
const SLOTS: usize = 10;

/// How a write ended, as health and metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// Acknowledged: durable and applied.
    Ok,
    /// Refused for the caller's input (validation, conflict, not found):
    /// the shard is fine, so health does not count these as errors.
    Rejected,
    /// Failed on floe's side (pipeline, I/O, stopped worker).
    Failed,
}

impl Outcome {
    #[cfg_attr(not(feature = "server"), allow(dead_code, reason = "labels metrics"))]
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// Writes of one shard over the recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WriteWindow {
    /// Length of the window, in milliseconds.
    pub window_ms: u64,
    /// Writes that ended (acknowledged, refused or failed).
    pub writes: u64,
    /// Writes that failed on floe's side.
    pub failures: u64,
    /// Writes slower than `health.degraded_latency_ms`.
    pub slower_than_degraded: u64,
    /// Writes slower than `health.unhealthy_latency_ms`.
    pub slower_than_unhealthy: u64,
    /// Mean ack latency, in milliseconds (0 without writes).
    pub mean_latency_ms: f64,
    /// Slowest ack, in milliseconds.
    pub max_latency_ms: f64,
}

/// The last health probe of a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProbeState {
    /// Round trip of the last completed probe, in milliseconds, if it
    /// completed within the window.
    pub last_ms: Option<f64>,
    /// Whether the last completed probe got an answer.
    pub last_ok: bool,
    /// How long the probe now waiting has waited, in milliseconds.
    pub in_flight_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot-length period this slot holds (time / slot length).
    period: u64,
    writes: u64,
    failures: u64,
    slow: u64,
    very_slow: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
}

#[derive(Debug)]
struct ShardTelemetry {
    window: Mutex<[Slot; SLOTS]>,
    /// Microseconds since `Telemetry::started` + 1 when the probe now
    /// waiting was sent; 0 when none waits.
    probe_started: AtomicU64,
    /// When the last probe ended (same clock, 0 = never) and how long it took.
    probe_ended: AtomicU64,
    probe_us: AtomicU64,
    probe_ok: AtomicU64,
    metrics: ShardMetrics,
}

/// Per-shard telemetry of one `Floe`.
#[derive(Debug)]
pub(crate) struct Telemetry {
    slot_us: u64,
    window_us: u64,
    degraded_us: u64,
    unhealthy_us: u64,
    started: Instant,
    /// Indexed by shard id; grows when a migration adds shards.
    shards: RwLock<Vec<Arc<ShardTelemetry>>>,
    metrics: WriteMetrics,
}

impl Telemetry {
    pub(crate) fn new(shard_count: u32, health: &HealthConfig) -> Telemetry {
        let window_us = health.window_ms.saturating_mul(1000);
        let telemetry = Telemetry {
            slot_us: (window_us / SLOTS as u64).max(1),
            window_us,
            degraded_us: health.degraded_latency_ms.saturating_mul(1000),
            unhealthy_us: health.unhealthy_latency_ms.saturating_mul(1000),
            started: Instant::now(),
            shards: RwLock::new(Vec::new()),
            metrics: WriteMetrics::new(),
        };
        if let Some(last) = shard_count.checked_sub(1) {
            telemetry.shard_or_grow(last);
        }
        telemetry
    }

    /// The telemetry of `shard`, if the shard has been seen.
    fn shard(&self, shard: u32) -> Option<Arc<ShardTelemetry>> {
        let shards = self.shards.read().unwrap_or_else(|p| p.into_inner());
        shards.get(shard as usize).cloned()
    }

    /// The telemetry of `shard`, growing the table when a migration added
    /// shards after open (their series appear from their first write).
    fn shard_or_grow(&self, shard: u32) -> Arc<ShardTelemetry> {
        if let Some(t) = self.shard(shard) {
            return t;
        }
        let mut shards = self.shards.write().unwrap_or_else(|p| p.into_inner());
        while shards.len() <= shard as usize {
            let id = shards.len() as u32;
            shards.push(Arc::new(ShardTelemetry {
                window: Mutex::new([Slot::default(); SLOTS]),
                probe_started: AtomicU64::new(0),
                probe_ended: AtomicU64::new(0),
                probe_us: AtomicU64::new(0),
                probe_ok: AtomicU64::new(0),
                metrics: self.metrics.shard(id),
            }));
        }
        shards[shard as usize].clone()
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64 + 1
    }

    /// Records one write that ended after `latency`.
    pub(crate) fn record_write(&self, shard: u32, latency: Duration, outcome: Outcome) {
        let t = self.shard_or_grow(shard);
        let us = latency.as_micros() as u64;
        t.metrics.record(outcome, latency);
        let period = self.now_us() / self.slot_us;
        let mut window = t.window.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut window[(period % SLOTS as u64) as usize];
        if slot.period != period {
            *slot = Slot {
                period,
                ..Slot::default()
            };
        }
        slot.writes += 1;
        slot.failures += u64::from(outcome == Outcome::Failed);
        slot.slow += u64::from(us > self.degraded_us);
        slot.very_slow += u64::from(us > self.unhealthy_us);
        slot.latency_sum_us += us;
        slot.latency_max_us = slot.latency_max_us.max(us);
    }

    /// The shard's writes over the window.
    pub(crate) fn window(&self, shard: u32) -> WriteWindow {
        let mut out = WriteWindow {
            window_ms: self.window_us / 1000,
            ..WriteWindow::default()
        };
        let Some(t) = self.shard(shard) else {
            return out;
        };
        let now = self.now_us() / self.slot_us;
        let oldest = now.saturating_sub(SLOTS as u64 - 1);
        let window = *t.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum_us = 0;
        let mut max_us = 0;
        for slot in window.iter().filter(|s| s.period >= oldest && s.writes > 0) {
            out.writes += slot.writes;
            out.failures += slot.failures;
            out.slower_than_degraded += slot.slow;
            out.slower_than_unhealthy += slot.very_slow;
            sum_us += slot.latency_sum_us;
            max_us = max_us.max(slot.latency_max_us);
        }
        if out.writes > 0 {
            out.mean_latency_ms = sum_us as f64 / out.writes as f64 / 1000.0;
        }
        out.max_latency_ms = max_us as f64 / 1000.0;
        out
    }

    /// Marks a probe of `shard` as sent.
    pub(crate) fn probe_started(&self, shard: u32) {
        if let Some(t) = self.shard(shard) {
            t.probe_started.store(self.now_us(), Ordering::Release);
        }
    }

    /// Records the end of the probe of `shard` that took `took`.
    pub(crate) fn probe_ended(&self, shard: u32, took: Duration, ok: bool) {
        if let Some(t) = self.shard(shard) {
            t.probe_us.store(took.as_micros() as u64, Ordering::Release);
            t.probe_ok.store(u64::from(ok), Ordering::Release);
            t.probe_ended.store(self.now_us(), Ordering::Release);
            t.probe_started.store(0, Ordering::Release);
        }
    }

    /// The probe state of `shard`; a probe older than the window is forgotten.
    pub(crate) fn probe(&self, shard: u32) -> ProbeState {
        let Some(t) = self.shard(shard) else {
            return ProbeState::default();
        };
        let now = self.now_us();
        let started = t.probe_started.load(Ordering::Acquire);
        let ended = t.probe_ended.load(Ordering::Acquire);
        let recent = ended != 0 && now.saturating_sub(ended) <= self.window_us;
        ProbeState {
            last_ms: recent.then(|| t.probe_us.load(Ordering::Acquire) as f64 / 1000.0),
            last_ok: recent && t.probe_ok.load(Ordering::Acquire) == 1,
            in_flight_ms: (started != 0).then(|| now.saturating_sub(started) as f64 / 1000.0),
        }
    }

    /// Adds the write counters and ack latency histograms to `registry`.
    #[cfg(feature = "server")]
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(window_ms: u64) -> Telemetry {
        Telemetry::new(
            2,
            &HealthConfig {
                window_ms,
                degraded_latency_ms: 10,
                unhealthy_latency_ms: 100,
                ..HealthConfig::default()
            },
        )
    }

    #[test]
    fn the_window_counts_outcomes_and_slow_writes() {
        let t = telemetry(60_000);
        t.record_write(0, Duration::from_millis(1), Outcome::Ok);
        t.record_write(0, Duration::from_millis(20), Outcome::Ok);
        t.record_write(0, Duration::from_millis(200), Outcome::Failed);
        t.record_write(0, Duration::from_millis(2), Outcome::Rejected);
        let w = t.window(0);
        assert_eq!(
            (
                w.writes,
                w.failures,
                w.slower_than_degraded,
                w.slower_than_unhealthy
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(w.max_latency_ms, 200.0);
        assert!((w.mean_latency_ms - 55.75).abs() < 1e-9);
        assert_eq!(
            t.window(1),
            WriteWindow {
                window_ms: 60_000,
                ..WriteWindow::default()
            }
        );
        // A shard added after open (by a migration) gets its slot on its
        // first write; reading a shard never seen is empty, not a panic.
        assert_eq!(t.window(7).writes, 0);
        t.record_write(9, Duration::ZERO, Outcome::Ok);
        assert_eq!(t.window(9).writes, 1);
    }

    #[test]
    fn old_writes_leave_the_window() {
        let t = telemetry(50);
        t.record_write(0, Duration::from_millis(500), Outcome::Failed);
        assert_eq!(t.window(0).writes, 1);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            t.window(0),
            WriteWindow {
                window_ms: 50,
                ..WriteWindow::default()
            }
        );
    }

    #[test]
    fn probes_in_flight_and_done() {
        let t = telemetry(60_000);
        assert_eq!(t.probe(0), ProbeState::default());
        t.probe_started(0);
        std::thread::sleep(Duration::from_millis(5));
        let p = t.probe(0);
        assert!(p.in_flight_ms.unwrap() >= 5.0 && p.last_ms.is_none());
        t.probe_ended(0, Duration::from_millis(7), true);
        let p = t.probe(0);
        assert_eq!(
            (p.last_ms, p.last_ok, p.in_flight_ms),
            (Some(7.0), true, None)
        );
    }
}
