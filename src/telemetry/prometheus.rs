//! The Prometheus series of the write path: a counter per shard and outcome
//! and an ack latency histogram per shard, read by `/metrics`. Built with the
//! `server` feature only; without it `metrics_off.rs` stands in, so a
//! library user does not compile prometheus-client.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Outcome;

/// Ack latency buckets, in seconds: fine below 10 ms where a healthy group
/// commit lands, and around seed 000's 500 ms / 2 s thresholds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WriteLabels {
    shard: u32,
    /// `ok`, `rejected` or `failed`.
    outcome: &'static str,
}

/// The label of every per-shard series (also `/metrics`' own gauges).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ShardLabel {
    pub(crate) shard: u32,
}

/// The families of every shard's series.
#[derive(Debug)]
pub(crate) struct WriteMetrics {
    writes: Family<WriteLabels, Counter>,
    ack_latency: Family<ShardLabel, Histogram>,
}

/// One shard's series, resolved once so that recording a write is a few
/// atomic adds.
#[derive(Debug)]
pub(crate) struct ShardMetrics {
    ok: Counter,
    rejected: Counter,
    failed: Counter,
    latency: Histogram,
}

impl WriteMetrics {
    pub(crate) fn new() -> Self {
        WriteMetrics {
            writes: Family::<WriteLabels, Counter>::default(),
            ack_latency: Family::<ShardLabel, Histogram>::new_with_constructor(
                (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
            ),
        }
    }

    pub(crate) fn shard(&self, shard: u32) -> ShardMetrics {
        let counter = |outcome: Outcome| {
            self.writes.get_or_create_owned(&WriteLabels {
                shard,
                outcome: outcome.label(),
            })
        };
        ShardMetrics {
            ok: counter(Outcome::Ok),
            rejected: counter(Outcome::Rejected),
            failed: counter(Outcome::Failed),
            latency: self.ack_latency.get_or_create_owned(&ShardLabel { shard }),
        }
    }

    /// Adds the write counters and ack latency histograms to `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "floe_shard_writes",
            "Writes that ended per shard: ok (acknowledged), rejected (bad input, conflict) or failed (floe's side)",
            self.writes.clone(),
        );
        registry.register(
            "floe_shard_ack_latency_seconds",
            "Time from routing a write to its acknowledgement (durable and applied), per shard",
            self.ack_latency.clone(),
        );
    }
}

impl ShardMetrics {
    pub(crate) fn record(&self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => {
                self.ok.inc();
                self.latency.observe(latency.as_secs_f64());
            }
            Outcome::Rejected => {
                self.rejected.inc();
            }
            Outcome::Failed => {
                self.failed.inc();
            }
        }
    }
}
