//! What `floe serve` reads about the shards' health, and the fault hook its
//! drills use.

use std::time::{Duration, Instant};

use super::Floe;
use crate::error::Result;
use crate::health::{self, ShardHealth, ShardSignals, SystemHealth};

impl Floe {
    /// Sends a health probe (a stats request through the shard's inbox) and
    /// records its round trip; health reads it together with the writes.
    /// A shard that does not answer within `timeout` counts as unreachable.
    pub async fn probe_shard(&self, shard: u32, timeout: Duration) -> Result<Duration> {
        let handle = self.handle(shard)?;
        let telemetry = &self.inner.telemetry;
        telemetry.probe_started(shard);
        let started = Instant::now();
        let answered = matches!(
            tokio::time::timeout(timeout, handle.stats()).await,
            Ok(Ok(_))
        );
        let took = started.elapsed();
        telemetry.probe_ended(shard, took, answered);
        Ok(took)
    }

    /// One shard's health from its recent writes, its last probe and its
    /// pipeline wait (see docs/operations.md for the thresholds).
    pub fn shard_health(&self, shard: u32) -> Result<ShardHealth> {
        let handle = self.handle(shard)?;
        let telemetry = &self.inner.telemetry;
        let signals = ShardSignals {
            writes: telemetry.window(shard),
            probe: telemetry.probe(shard),
            pipeline_wait_ms: handle.pipeline_wait().as_secs_f64() * 1000.0,
        };
        let (status, reasons) = health::judge(&signals, &self.inner.config.health);
        let fault = handle.fault_delay();
        Ok(ShardHealth {
            shard,
            status,
            reasons,
            error_rate: health::error_rate(&signals.writes),
            writes: signals.writes,
            probe: signals.probe,
            inbox_depth: handle.inbox_depth() as u64,
            pipeline_wait_ms: signals.pipeline_wait_ms,
            last_append_ms: handle.last_append().as_secs_f64() * 1000.0,
            fault_delay_ms: (!fault.is_zero()).then_some(fault.as_secs_f64() * 1000.0),
        })
    }

    /// The system's health: every shard's, and the sink's lag when the sink
    /// runs in this process.
    pub async fn system_health(&self) -> SystemHealth {
        let shards = (0..self.routing().shards.len() as u32)
            .filter_map(|shard| self.shard_health(shard).ok())
            .collect();
        let sink = match &self.inner.sink {
            Some(_) => self.sink_lag().await.ok().map(Into::into),
            None => None,
        };
        health::system(
            shards,
            sink,
            self.inner.started.elapsed().as_secs_f64(),
            &self.inner.config.health,
        )
    }

    /// Requests waiting in each shard's inbox, by shard.
    pub fn inbox_depths(&self) -> Vec<u64> {
        self.routing()
            .shards
            .iter()
            .map(|s| s.inbox_depth() as u64)
            .collect()
    }

    /// Fault injection for tests and drills: makes the shard's worker sleep
    /// `delay` before every batch it processes, as a shard on a failing
    /// disk would; `Duration::ZERO` heals it. Never use it in production.
    pub fn inject_shard_delay(&self, shard: u32, delay: Duration) -> Result<()> {
        self.handle(shard)?.set_fault_delay(delay);
        if !delay.is_zero() {
            tracing::warn!(
                shard,
                delay_ms = delay.as_millis() as u64,
                "fault injection: shard slowed down"
            );
        }
        Ok(())
    }

    /// Adds floe's write counters and latency histograms to a Prometheus registry.
    #[cfg(feature = "server")]
    pub(crate) fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.telemetry.register(registry);
    }
}
