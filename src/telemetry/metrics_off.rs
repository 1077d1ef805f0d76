//! Builds without the `server` feature keep no Prometheus series: nothing
//! could read them. Same interface as `prometheus.rs`, recording nothing.

use std::time::Duration;

use super::Outcome;

#[derive(Debug)]
pub(crate) struct WriteMetrics;

#[derive(Debug)]
pub(crate) struct ShardMetrics;

impl WriteMetrics {
    pub(crate) fn new() -> Self {
        WriteMetrics
    }

    pub(crate) fn shard(&self, _shard: u32) -> ShardMetrics {
        ShardMetrics
    }
}

impl ShardMetrics {
    pub(crate) fn record(&self, _outcome: Outcome, _latency: Duration) {}
}
