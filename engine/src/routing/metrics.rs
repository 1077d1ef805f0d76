//! Routing counters, kept apart from the router so that the hot path stays free
//! of shared writes; callers that want metrics record after routing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::slots::ShardSlots;
use crate::topology::MAX_SHARDS;

/// Routing counters: operations, errors and per-shard distribution.
///
/// `Send + Sync` and lock-free: every counter is an atomic, and the
/// per-shard counters live in segments of doubling size that are allocated on
/// first use and never move, so the distribution grows when a topology
/// change adds shards without a lock and without losing counts. Share it
/// behind an `Arc`.
#[derive(Debug)]
pub struct RoutingMetrics {
    operations: AtomicU64,
    errors: AtomicU64,
    /// Shards the distribution covers: the initial shard count, or more once
    /// a higher shard was recorded.
    shards: AtomicU32,
    counters: ShardSlots<AtomicU64>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingMetricsSnapshot {
    /// Routing operations recorded (one per [`RoutingMetrics::record`]).
    pub operations: u64,
    /// Routing errors recorded.
    pub errors: u64,
    /// Operations per shard, indexed by shard id.
    pub distribution: Vec<u64>,
}

impl RoutingMetrics {
    /// Counters for `shard_count` shards, all zero.
    pub fn new(shard_count: u32) -> Self {
        let metrics = RoutingMetrics {
            operations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            shards: AtomicU32::new(shard_count.min(MAX_SHARDS)),
            counters: ShardSlots::new(),
        };
        if let Some(last) = shard_count.min(MAX_SHARDS).checked_sub(1) {
            for shard in 0..=last {
                metrics.counter(shard);
            }
        }
        metrics
    }

    /// Records one routing operation to `shard`. A shard beyond the current
    /// size grows the distribution; one at or beyond [`MAX_SHARDS`] cannot be
    /// a real shard and is counted as an error instead.
    #[inline]
    pub fn record(&self, shard: u32) {
        if shard >= MAX_SHARDS {
            self.record_error();
            return;
        }
        self.operations.fetch_add(1, Relaxed);
        self.counter(shard).fetch_add(1, Relaxed);
        if shard >= self.shards.load(Relaxed) {
            self.shards.fetch_max(shard + 1, Relaxed);
        }
    }

    /// Records a routing error (a key that could not be routed).
    #[inline]
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// The counters now. Counters are read one by one while others may be
    /// recording, so `operations` and the sum of `distribution` can differ
    /// by the records in flight.
    pub fn snapshot(&self) -> RoutingMetricsSnapshot {
        let shards = self.shards.load(Relaxed);
        RoutingMetricsSnapshot {
            operations: self.operations.load(Relaxed),
            errors: self.errors.load(Relaxed),
            distribution: (0..shards)
                .map(|s| self.counters.get(s).map_or(0, |c| c.load(Relaxed)))
                .collect(),
        }
    }

    fn counter(&self, shard: u32) -> &AtomicU64 {
        self.counters.get_or_init(shard)
    }
}

impl Default for RoutingMetrics {
    fn default() -> Self {
        RoutingMetrics::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_operations_errors_and_distribution() {
        let m = RoutingMetrics::new(4);
        assert_eq!(m.snapshot().distribution, vec![0; 4]);
        for s in [0, 1, 1, 3, 3, 3] {
            m.record(s);
        }
        m.record_error();
        let snap = m.snapshot();
        assert_eq!(snap.operations, 6);
        assert_eq!(snap.errors, 1);
        assert_eq!(snap.distribution, vec![1, 2, 0, 3]);
    }

    #[test]
    fn grows_when_shards_are_added_and_keeps_counts() {
        let m = RoutingMetrics::new(2);
        m.record(1);
        m.record(9);
        let snap = m.snapshot();
        assert_eq!(snap.distribution.len(), 10);
        assert_eq!(snap.distribution[1], 1);
        assert_eq!(snap.distribution[9], 1);
        assert_eq!(snap.distribution.iter().sum::<u64>(), 2);
        // Shards beyond the limit are errors, not allocations.
        m.record(u32::MAX);
        assert_eq!(m.snapshot().errors, 1);
        assert_eq!(m.snapshot().distribution.len(), 10);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let m = Arc::new(RoutingMetrics::new(1));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        m.record((i + t) % 40);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = m.snapshot();
        assert_eq!(snap.operations, 40_000);
        assert_eq!(snap.distribution.len(), 40);
        assert_eq!(snap.distribution.iter().sum::<u64>(), 40_000);
        assert!(snap.distribution.iter().all(|&c| c == 1_000));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RoutingMetrics>();
    }
}
