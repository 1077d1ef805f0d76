//! [`LoadTracker`]: per-shard entity totals and access counts, shared by all
//! shard workers.

use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::assigner::hints::{self, RebalanceHint, ShardLimits, ShardUtilization};
use crate::slots::ShardSlots;

/// Whether an access read or changed an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    /// A get or a query served by the shard.
    Read,
    /// A create, update or delete.
    Write,
}

/// Accesses to one shard within a time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAccess {
    /// The shard.
    pub shard: u32,
    /// Reads in the window.
    pub reads: u64,
    /// Writes in the window.
    pub writes: u64,
}

impl ShardAccess {
    /// Reads plus writes.
    pub fn total(&self) -> u64 {
        self.reads.saturating_add(self.writes)
    }
}

/// What a shard holds, as its worker last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTotals {
    /// The shard.
    pub shard: u32,
    /// Live entities.
    pub entities: u64,
    /// Bytes of entity state.
    pub bytes: u64,
}

/// Per-shard load, shared by every shard worker through an `Arc`.
///
/// - **Entity totals** (seed 004's `trackMetadata`): each worker owns its
///   shard's state, so it publishes its current totals with
///   [`set_entity_stats`](Self::set_entity_stats); the tracker never counts
///   writes itself. The two numbers are stored separately, so a reader racing a
///   publish may pair the new entity count with the old byte count.
/// - **Access counts** (`trackAccess`): a ring of per-second buckets per shard
///   and kind covering the last [`MAX_WINDOW_SECS`](Self::MAX_WINDOW_SECS)
///   seconds. A bucket is one `AtomicU64` holding the second it counts (high
///   32 bits) and the count (low 32 bits, saturating); recording is a load and
///   usually one compare-and-swap, with no lock and no allocation. A bucket
///   still holding an older second is reset by the first access of the new
///   one, so old accesses age out without any sweeper. Windows are whole
///   seconds: a window of `w` ms covers the current second and the
///   `ceil(w / 1000) - 1` before it.
/// - Access is tracked per shard only. Seed 004 also counts accesses per
///   partition key (`recordAccess('customer-123', 'read')`); floe does not,
///   since a map of every key ever seen grows without bound. Find hot keys in
///   the landed events instead (SQL over Iceberg).
///
/// Time is an argument (`now_ms`, milliseconds of any clock, preferably a
/// monotonic one such as the time since the process started), never read
/// here. Seconds are kept as `u32`, so a clock must stay below 2^32 seconds
/// (136 years; Unix time until 2106).
///
/// Shards are the dense ids `0..shard_count`. Records for a shard outside
/// that range are ignored: load tracking is advisory and never fails a write.
/// [`resize`](Self::resize) follows the topology; storage grows in
/// power-of-two segments, so growing never moves a slot another thread is
/// writing to.
pub(crate) struct LoadTracker {
    /// Each shard's load is allocated when the shard count first reaches it.
    slots: ShardSlots<Slot>,
    shard_count: AtomicU32,
    /// Serializes resizes (never taken on the recording path).
    resize: Mutex<()>,
}

/// A shard's load, allocated when the shard first joins.
type Slot = OnceLock<Box<ShardLoad>>;

struct ShardLoad {
    entities: AtomicU64,
    bytes: AtomicU64,
    reads: Box<[AtomicU64]>,
    writes: Box<[AtomicU64]>,
}

impl ShardLoad {
    fn new() -> Self {
        let ring = || {
            (0..LoadTracker::MAX_WINDOW_SECS)
                .map(|_| AtomicU64::new(0))
                .collect()
        };
        ShardLoad {
            entities: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            reads: ring(),
            writes: ring(),
        }
    }

    fn reset(&self) {
        self.entities.store(0, Relaxed);
        self.bytes.store(0, Relaxed);
        for bucket in self.reads.iter().chain(self.writes.iter()) {
            bucket.store(0, Relaxed);
        }
    }
}

/// Adds `count` accesses in second `sec` to the bucket of that second.
fn bump(bucket: &AtomicU64, sec: u32, count: u32) {
    let mut current = bucket.load(Relaxed);
    loop {
        let (stamp, n) = ((current >> 32) as u32, current as u32);
        let next = if stamp == sec {
            if n == u32::MAX {
                return;
            }
            current + u64::from(n.saturating_add(count) - n)
        } else if n == 0 || (sec.wrapping_sub(stamp) as i32) > 0 {
            (u64::from(sec) << 32) | u64::from(count)
        } else {
            // The bucket already counts a later second, so `sec` left the ring
            // (a sample that arrived more than a whole ring late): drop it.
            return;
        };
        match bucket.compare_exchange_weak(current, next, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// Sum of the buckets of the `window` seconds ending with `now`.
fn sum(ring: &[AtomicU64], now: u32, window: u32) -> u64 {
    (0..window)
        .map(|back| {
            let sec = now.wrapping_sub(back);
            let v = ring[(sec % LoadTracker::MAX_WINDOW_SECS) as usize].load(Relaxed);
            if (v >> 32) as u32 == sec {
                u64::from(v as u32)
            } else {
                0
            }
        })
        .sum()
}

impl LoadTracker {
    /// Length of the access ring: the longest window, in seconds.
    pub(crate) const MAX_WINDOW_SECS: u32 = 300;

    /// Ratio to the mean above which [`skewed_shards`](Self::skewed_shards)
    /// reports a shard, from the seeds' runbooks.
    pub(crate) const DEFAULT_SKEW_RATIO: f64 = 1.5;

    /// A tracker for shards `0..shard_count`, all empty.
    pub(crate) fn new(shard_count: u32) -> Self {
        let tracker = LoadTracker {
            slots: ShardSlots::new(),
            shard_count: AtomicU32::new(0),
            resize: Mutex::new(()),
        };
        tracker.resize(shard_count);
        tracker
    }

    /// The number of shards tracked.
    pub(crate) fn shard_count(&self) -> u32 {
        self.shard_count.load(Relaxed)
    }

    /// Follows a topology change to `shard_count` shards. Shards that join
    /// start empty (also ids that were tracked before a shrink); shards that
    /// leave stop being reported and their records are ignored.
    pub(crate) fn resize(&self, shard_count: u32) {
        let _guard = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.shard_count.load(Relaxed);
        for shard in old..shard_count {
            let mut fresh = false;
            let load = self.slots.get_or_init(shard).get_or_init(|| {
                fresh = true;
                Box::new(ShardLoad::new())
            });
            if !fresh {
                load.reset();
            }
        }
        // Publishing the count after the slots exist is only for readers'
        // benefit: `slot` checks the `OnceLock`s anyway.
        self.shard_count.store(shard_count, Release);
    }

    fn slot(&self, shard: u32) -> Option<&ShardLoad> {
        if shard >= self.shard_count.load(Acquire) {
            return None;
        }
        self.slots.get(shard)?.get().map(|b| &**b)
    }

    fn slots(&self) -> impl Iterator<Item = (u32, &ShardLoad)> {
        (0..self.shard_count()).filter_map(|shard| Some((shard, self.slot(shard)?)))
    }

    /// Publishes a shard's current totals: live entities and bytes of state.
    pub(crate) fn set_entity_stats(&self, shard: u32, entities: u64, bytes: u64) {
        if let Some(load) = self.slot(shard) {
            load.entities.store(entities, Relaxed);
            load.bytes.store(bytes, Relaxed);
        }
    }

    /// Records one access to `shard` at `now_ms`.
    pub(crate) fn record_access(&self, shard: u32, kind: AccessKind, now_ms: u64) {
        self.record_accesses(shard, kind, 1, now_ms);
    }

    /// Records `count` accesses to `shard` at `now_ms` (a batch applied at once).
    pub(crate) fn record_accesses(&self, shard: u32, kind: AccessKind, count: u32, now_ms: u64) {
        let Some(load) = self.slot(shard) else { return };
        if count == 0 {
            return;
        }
        let sec = (now_ms / 1000) as u32;
        let ring = match kind {
            AccessKind::Read => &load.reads,
            AccessKind::Write => &load.writes,
        };
        bump(&ring[(sec % Self::MAX_WINDOW_SECS) as usize], sec, count);
    }

    /// Reads and writes per shard in the `window_ms` ending at `now_ms`
    /// (clamped to 1 s ..= [`MAX_WINDOW_SECS`](Self::MAX_WINDOW_SECS)), in shard order.
    pub(crate) fn access_counts(&self, window_ms: u64, now_ms: u64) -> Vec<ShardAccess> {
        let now = (now_ms / 1000) as u32;
        let window = window_ms
            .div_ceil(1000)
            .clamp(1, u64::from(Self::MAX_WINDOW_SECS)) as u32;
        self.slots()
            .map(|(shard, load)| ShardAccess {
                shard,
                reads: sum(&load.reads, now, window),
                writes: sum(&load.writes, now, window),
            })
            .collect()
    }

    /// Shards with at least `threshold` accesses (reads plus writes) in the
    /// window, hottest first (ties by shard id). Seed 004's example is 1000
    /// accesses in 60 000 ms.
    pub(crate) fn hot_shards(&self, threshold: u64, window_ms: u64, now_ms: u64) -> Vec<u32> {
        let mut hot: Vec<ShardAccess> = self
            .access_counts(window_ms, now_ms)
            .into_iter()
            .filter(|a| a.total() >= threshold)
            .collect();
        hot.sort_by(|a, b| b.total().cmp(&a.total()).then(a.shard.cmp(&b.shard)));
        hot.into_iter().map(|a| a.shard).collect()
    }

    /// Shards with more than `ratio` times the mean accesses per shard in the
    /// window, hottest first: a relative test that needs no tuning to the
    /// traffic. The seeds flag a shard at 1.5 times its expected share
    /// ([`DEFAULT_SKEW_RATIO`](Self::DEFAULT_SKEW_RATIO)).
    pub(crate) fn skewed_shards(&self, ratio: f64, window_ms: u64, now_ms: u64) -> Vec<u32> {
        let counts = self.access_counts(window_ms, now_ms);
        let total: u64 = counts.iter().map(ShardAccess::total).sum();
        if total == 0 {
            return Vec::new();
        }
        let limit = ratio * total as f64 / counts.len() as f64;
        let mut hot: Vec<ShardAccess> = counts
            .into_iter()
            .filter(|a| a.total() as f64 > limit)
            .collect();
        hot.sort_by(|a, b| b.total().cmp(&a.total()).then(a.shard.cmp(&b.shard)));
        hot.into_iter().map(|a| a.shard).collect()
    }

    /// Every shard's published totals, in shard order.
    pub(crate) fn stats(&self) -> Vec<ShardTotals> {
        self.slots()
            .map(|(shard, load)| ShardTotals {
                shard,
                entities: load.entities.load(Relaxed),
                bytes: load.bytes.load(Relaxed),
            })
            .collect()
    }

    /// Every shard's totals against `limits`, in shard order.
    pub(crate) fn utilization(&self, limits: &ShardLimits) -> Vec<ShardUtilization> {
        hints::utilization(&self.stats(), limits)
    }

    /// Split and merge recommendations; see [`RebalanceHint`] for the rules.
    pub(crate) fn rebalance_hints(&self, limits: &ShardLimits) -> Vec<RebalanceHint> {
        hints::rebalance_hints(&self.stats(), limits)
    }
}

impl fmt::Debug for LoadTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadTracker")
            .field("shard_count", &self.shard_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use AccessKind::{Read, Write};

    /// What the module's example showed before the tracker became
    /// crate-private (it is read through `ShardCluster` now).
    #[test]
    fn one_write_makes_a_shard_hot() {
        let load = LoadTracker::new(4);
        load.record_access(2, AccessKind::Write, 1_000);
        assert_eq!(load.hot_shards(1, 60_000, 1_500), vec![2]);
    }

    #[test]
    fn access_counts_by_kind_within_the_window() {
        let t = LoadTracker::new(3);
        t.record_access(0, Read, 10_000);
        t.record_access(0, Write, 10_500);
        t.record_accesses(1, Write, 5, 10_999);
        t.record_access(2, Read, 11_000);
        let counts = t.access_counts(1_000, 10_999);
        assert_eq!(
            counts[0],
            ShardAccess {
                shard: 0,
                reads: 1,
                writes: 1
            }
        );
        assert_eq!(
            counts[1],
            ShardAccess {
                shard: 1,
                reads: 0,
                writes: 5
            }
        );
        // Second 11 is in the future of that window.
        assert_eq!(counts[2].total(), 0);
        assert_eq!(t.access_counts(2_000, 11_000)[2].reads, 1);
        assert_eq!(t.access_counts(2_000, 11_000)[1].writes, 5);
    }

    #[test]
    fn hot_shards_over_a_window_and_old_accesses_age_out() {
        let t = LoadTracker::new(4);
        // Shard 1: 30 accesses long ago; shard 2: 20 recent; shard 3: 25 recent.
        for i in 0..30 {
            t.record_access(1, Write, 100_000 + i);
        }
        for i in 0..20 {
            t.record_access(2, Read, 150_000 + i * 100);
        }
        t.record_accesses(3, Read, 25, 159_999);
        assert_eq!(t.hot_shards(20, 60_000, 159_999), vec![1, 3, 2]);
        assert_eq!(t.hot_shards(21, 60_000, 159_999), vec![1, 3]);
        // 61 s later shard 1's second (100) is outside a 60 s window...
        assert_eq!(t.hot_shards(20, 60_000, 160_999), vec![3, 2]);
        // ...but inside a 5 minute one, until it too has passed.
        assert_eq!(t.hot_shards(20, 300_000, 160_999), vec![1, 3, 2]);
        assert_eq!(t.hot_shards(1, 300_000, 460_000), Vec::<u32>::new());
        // A bucket reused a ring later counts only the new second.
        t.record_access(1, Write, 400_000);
        assert_eq!(t.access_counts(1_000, 400_000)[1].writes, 1);
        // A sample older than the bucket's second is dropped, not miscounted.
        t.record_access(1, Write, 100_000);
        assert_eq!(t.access_counts(1_000, 400_000)[1].writes, 1);
    }

    #[test]
    fn skewed_shards_compare_with_the_mean() {
        let t = LoadTracker::new(4);
        assert!(t.skewed_shards(1.5, 60_000, 0).is_empty());
        for (shard, n) in [(0, 10), (1, 10), (2, 10), (3, 30)] {
            t.record_accesses(shard, Read, n, 5_000);
        }
        // Mean 15: only shard 3 is above 1.5 x 15.
        assert_eq!(
            t.skewed_shards(LoadTracker::DEFAULT_SKEW_RATIO, 60_000, 5_000),
            vec![3]
        );
        assert_eq!(t.skewed_shards(2.0, 60_000, 5_000), Vec::<u32>::new());
    }

    #[test]
    fn counts_saturate_instead_of_corrupting_the_stamp() {
        let t = LoadTracker::new(1);
        t.record_accesses(0, Write, u32::MAX - 1, 2_000);
        t.record_accesses(0, Write, 10, 2_000);
        t.record_access(0, Write, 2_000);
        assert_eq!(t.access_counts(1_000, 2_000)[0].writes, u64::from(u32::MAX));
    }

    #[test]
    fn unknown_shards_are_ignored_and_resize_follows_the_topology() {
        let t = LoadTracker::new(2);
        t.record_access(5, Read, 0);
        t.set_entity_stats(5, 1, 1);
        assert_eq!(t.stats().len(), 2);

        t.set_entity_stats(1, 10, 100);
        t.record_access(1, Read, 0);
        t.resize(9);
        assert_eq!(t.shard_count(), 9);
        t.set_entity_stats(8, 3, 30);
        assert_eq!(
            t.stats()[8],
            ShardTotals {
                shard: 8,
                entities: 3,
                bytes: 30
            }
        );
        assert_eq!(t.stats()[1].entities, 10);

        // Shrink then grow: shard 1 comes back empty.
        t.resize(1);
        assert_eq!(t.stats().len(), 1);
        t.record_access(1, Read, 0);
        t.resize(2);
        assert_eq!(
            t.stats()[1],
            ShardTotals {
                shard: 1,
                entities: 0,
                bytes: 0
            }
        );
        assert_eq!(t.access_counts(1_000, 0)[1].reads, 0);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let t = Arc::new(LoadTracker::new(4));
        let threads: Vec<_> = (0..4u32)
            .map(|i| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        // Every thread writes every shard, crossing a second
                        // boundary so buckets are reset under contention.
                        let shard = (n % 4) as u32;
                        let kind = if (n + u64::from(i)) % 3 == 0 {
                            Write
                        } else {
                            Read
                        };
                        t.record_access(shard, kind, 59_000 + n / 10);
                        if n % 1000 == 0 {
                            t.set_entity_stats(i, n, n * 10);
                        }
                    }
                })
            })
            .collect();
        let grower = {
            let t = Arc::clone(&t);
            std::thread::spawn(move || (5..64).for_each(|n| t.resize(n)))
        };
        for thread in threads {
            thread.join().unwrap();
        }
        grower.join().unwrap();
        let counts = t.access_counts(60_000, 61_000);
        let total: u64 = counts.iter().map(ShardAccess::total).sum();
        assert_eq!(total, 4 * 20_000);
        assert!(counts[..4].iter().all(|a| a.total() == 20_000));
        assert_eq!(t.stats()[2].entities, 19_000);
    }
}
