//! Routing: partition key -> key hash -> shard, under one [`Topology`].
//!
//! A [`Router`] is built once per topology version and never changes; routing
//! is a pure function of the topology, the partition key and its hash, so the
//! live path, recovery and migration planning all agree on where a key lives.

mod hash;
mod jump;
mod metrics;
mod range;
mod range_rules;
mod ring;
mod strategy;
mod time;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod properties;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topology::Topology;

pub use hash::HashFunction;
pub(crate) use hash::fmix64;
pub use metrics::{RoutingMetrics, RoutingMetricsSnapshot};
pub use range_rules::{KeyTransform, RangeBound, RangeKey, RangeRule};
pub use strategy::Strategy;
pub use time::{Period, PeriodState, TimeMiss, cmp_labels, parse_instant, parse_offset};

use range::RangeTable;
use ring::Ring;
use time::{TimeRoute, TimeTable};

/// Routes partition keys to shards under one topology version.
///
/// Immutable once built; clones share the built tables (an `Arc` inside), so
/// it is cheap to hand to every task. [`Router::route`] allocates nothing,
/// takes no lock and records no metrics.
///
/// ```
/// use floe_engine::{HashFunction, Router, Strategy, Topology};
///
/// let topology = Topology::new(16, HashFunction::Xxh3, Strategy::JumpBack)?;
/// let router = Router::new(topology)?;
/// let hash = router.key_hash("tenant-42");
/// let shard = router.route("tenant-42", hash);
/// assert!(shard < 16);
/// assert_eq!(router.shard_info("tenant-42").shard, shard);
/// # Ok::<(), floe_engine::Error>(())
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    // The topology says it all; the built tables (thousands of ring points)
    // would only flood logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("topology", &self.inner.topology)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    topology: Topology,
    overrides: Overrides,
    algorithm: Algorithm,
}

#[derive(Debug)]
enum Algorithm {
    Modulo(u64),
    Jump(u32),
    JumpBack { buckets: u32, mask: u32 },
    Ring(Ring),
    Range(RangeTable),
    Time(TimeTable),
}

/// Where a key was routed and why, for logs, the admin API and debugging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The partition key asked about.
    pub partition_key: String,
    /// Its hash under the topology's hash function.
    pub key_hash: u64,
    /// The shard it routes to.
    pub shard: u32,
    /// The shard's name, `shard-{shard}`.
    pub shard_name: String,
    /// The topology version the answer holds for.
    pub topology_version: u64,
    /// The strategy's name (`modulo`, `jump`, `jump_back`, `ring`, `range`,
    /// `time`).
    pub strategy: String,
    /// What decided the shard.
    pub routed_by: RoutedBy,
}

/// What decided a key's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutedBy {
    /// An entry of the topology's overrides.
    Override,
    /// The strategy (for ranges: a range that holds the key).
    Strategy,
    /// A range strategy's default shard: no range holds the key, or a numeric
    /// key did not parse.
    DefaultShard,
    /// A time strategy's isolated tenant.
    Tenant,
    /// A time strategy found no shard (no time, or a period without a
    /// shard): writes are refused ([`Router::check`]); `shard` is the
    /// fallback that only replayed history can reach.
    Unroutable,
}

/// The name of shard `shard`: `shard-{shard}`.
pub fn shard_name(shard: u32) -> String {
    format!("shard-{shard}")
}

impl Router {
    /// Validates `topology` and builds the lookup tables (the ring, the sorted
    /// ranges, the override index).
    pub fn new(topology: Topology) -> Result<Router> {
        topology.validate()?;
        let n = topology.shard_count;
        let algorithm = match &topology.strategy {
            Strategy::Modulo => Algorithm::Modulo(u64::from(n)),
            Strategy::Jump => Algorithm::Jump(n),
            Strategy::JumpBack => Algorithm::JumpBack {
                buckets: n,
                mask: jump::jump_back_mask(n),
            },
            Strategy::Ring { virtual_nodes } => {
                Algorithm::Ring(Ring::new(n, *virtual_nodes, topology.hash))
            }
            Strategy::Range {
                key,
                default_shard,
                ranges,
            } => Algorithm::Range(RangeTable::new(key, *default_shard, ranges)),
            Strategy::Time { .. } => {
                let spec = topology.strategy.time_spec().ok_or_else(|| {
                    Error::InvalidTopology("time: the strategy has no period table".into())
                })?;
                Algorithm::Time(spec.compile(n)?)
            }
        };
        let overrides = Overrides::new(&topology);
        Ok(Router {
            inner: Arc::new(Inner {
                topology,
                overrides,
                algorithm,
            }),
        })
    }

    /// The topology this router routes by.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The hash of `partition_key` under the topology's hash function: the
    /// `key_hash` that events carry and [`Router::route`] takes.
    #[inline]
    pub fn key_hash(&self, partition_key: &str) -> u64 {
        self.inner.topology.hash.hash(partition_key.as_bytes())
    }

    /// The shard of `partition_key`. `key_hash` must be
    /// [`Router::key_hash`]`(partition_key)` (events carry it, so replay does
    /// not hash again): the hash strategies and the override index use it,
    /// the range strategy uses the key.
    ///
    /// The hot path: no allocation, no lock, no metrics.
    #[inline]
    pub fn route(&self, partition_key: &str, key_hash: u64) -> u32 {
        self.route_with_reason(partition_key, key_hash).0
    }

    /// Where `partition_key` goes and why.
    pub fn shard_info(&self, partition_key: &str) -> ShardInfo {
        let key_hash = self.key_hash(partition_key);
        let (shard, routed_by) = self.route_with_reason(partition_key, key_hash);
        ShardInfo {
            partition_key: partition_key.to_owned(),
            key_hash,
            shard,
            shard_name: shard_name(shard),
            topology_version: self.inner.topology.version,
            strategy: self.inner.topology.strategy.name().to_owned(),
            routed_by,
        }
    }

    #[inline]
    fn route_with_reason(&self, partition_key: &str, key_hash: u64) -> (u32, RoutedBy) {
        let inner = &*self.inner;
        if let Some(shard) = inner.overrides.get(partition_key, key_hash) {
            return (shard, RoutedBy::Override);
        }
        let shard = match &inner.algorithm {
            Algorithm::Modulo(n) => (key_hash % n) as u32,
            Algorithm::Jump(n) => jump::jump_hash(key_hash, *n),
            Algorithm::JumpBack { buckets, mask } => {
                jump::jump_back_hash_masked(key_hash, *buckets, *mask)
            }
            Algorithm::Ring(ring) => ring.lookup(key_hash),
            Algorithm::Range(table) => {
                return match table.lookup(partition_key) {
                    Some(shard) => (shard, RoutedBy::Strategy),
                    None => (table.default_shard(), RoutedBy::DefaultShard),
                };
            }
            Algorithm::Time(table) => {
                return match table.lookup(partition_key) {
                    TimeRoute::Period(shard) => (shard, RoutedBy::Strategy),
                    TimeRoute::Tenant(shard) => (shard, RoutedBy::Tenant),
                    TimeRoute::Miss(_) => (table.fallback(), RoutedBy::Unroutable),
                };
            }
        };
        (shard, RoutedBy::Strategy)
    }

    /// Whether a write may be routed by `partition_key`: always for the hash
    /// and range strategies (a range key that does not parse has the default
    /// shard); for a time strategy the key must carry a time whose period
    /// has a shard, else [`Error::Unroutable`] (an override counts as a
    /// shard). Callers check before a write so that a refused key changes
    /// nothing.
    pub fn check(&self, partition_key: &str) -> Result<()> {
        self.check_routable(partition_key)
    }

    /// [`Router::check`], and the key's period must be active: a write to a
    /// sealed or archived period is [`Error::PeriodArchived`] (nothing is
    /// written).
    pub fn check_write(&self, partition_key: &str) -> Result<()> {
        self.check_routable(partition_key)?;
        match self.period_state(partition_key) {
            None => Ok(()),
            Some(ArchivedPeriod { period, state }) => Err(Error::PeriodArchived {
                partition_key: partition_key.to_owned(),
                period,
                state,
            }),
        }
    }

    /// The sealed or archived period `partition_key` is in; `None` when it
    /// is active (or the strategy is not by time). One branch when no
    /// period is sealed or archived.
    #[inline]
    pub fn period_state(&self, partition_key: &str) -> Option<ArchivedPeriod> {
        let Algorithm::Time(table) = &self.inner.algorithm else {
            return None;
        };
        table
            .period_state(partition_key)
            .map(|(state, index)| ArchivedPeriod {
                period: table.label(index),
                state,
            })
    }

    /// Whether some period is archived (or dropped): its entities are in no
    /// shard, so a read that finds nothing in the shards may find it in the
    /// lake.
    pub fn has_archived(&self) -> bool {
        matches!(&self.inner.algorithm, Algorithm::Time(table) if table.has_archived())
    }

    /// Whether shard `shard` holds the key's entities under this router: it
    /// routes there and its period (if any) is not archived. What every
    /// "owned by this shard" filter (lists, snapshots, clean-ups) asks.
    #[inline]
    pub fn owns(&self, shard: u32, partition_key: &str, key_hash: u64) -> bool {
        self.route(partition_key, key_hash) == shard && !self.is_archived(partition_key)
    }

    /// Whether the key's period is archived or dropped (not only sealed):
    /// its entities are in no shard's memory.
    #[inline]
    pub fn is_archived(&self, partition_key: &str) -> bool {
        match &self.inner.algorithm {
            Algorithm::Time(table) => matches!(
                table.period_state(partition_key),
                Some((PeriodState::Archived | PeriodState::Dropped, _))
            ),
            _ => false,
        }
    }

    fn check_routable(&self, partition_key: &str) -> Result<()> {
        let Algorithm::Time(table) = &self.inner.algorithm else {
            return Ok(());
        };
        let hash = self.key_hash(partition_key);
        if self.inner.overrides.get(partition_key, hash).is_some() {
            return Ok(());
        }
        match table.lookup(partition_key) {
            TimeRoute::Miss(miss) => Err(Error::Unroutable {
                partition_key: partition_key.to_owned(),
                reason: miss.to_string(),
                miss,
            }),
            _ => Ok(()),
        }
    }
}

/// The sealed or archived period a partition key is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedPeriod {
    /// The period's label (`2024-03`).
    pub period: String,
    /// Sealed (entities still in memory) or archived (in the lake only).
    pub state: PeriodState,
}

/// The topology's overrides indexed by key hash: with none (the common case)
/// a lookup is one branch; with some, a binary search over hashes and a string
/// comparison to rule out collisions.
#[derive(Debug)]
struct Overrides {
    /// `(hash, key, shard)`, sorted by hash then key.
    entries: Vec<(u64, Box<str>, u32)>,
}

impl Overrides {
    fn new(topology: &Topology) -> Self {
        let mut entries: Vec<(u64, Box<str>, u32)> = topology
            .overrides
            .iter()
            .map(|(key, &shard)| {
                (
                    topology.hash.hash(key.as_bytes()),
                    key.as_str().into(),
                    shard,
                )
            })
            .collect();
        entries.sort_unstable();
        Overrides { entries }
    }

    #[inline]
    fn get(&self, key: &str, key_hash: u64) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let from = self.entries.partition_point(|e| e.0 < key_hash);
        self.entries[from..]
            .iter()
            .take_while(|e| e.0 == key_hash)
            .find(|e| &*e.1 == key)
            .map(|e| e.2)
    }
}

/// Measurement helper for `floe bench route`: the mean wall-clock time in
/// nanoseconds to route one key, hashing included (what a request pays),
/// over `rounds` passes through `keys`. Results go through
/// [`std::hint::black_box`] so the work is not optimized away. Returns 0.0
/// when there is nothing to measure. Run it in a release build.
pub fn measure_route_ns(router: &Router, keys: &[String], rounds: usize) -> f64 {
    let operations = keys.len().saturating_mul(rounds);
    if operations == 0 {
        return 0.0;
    }
    let start = Instant::now();
    for _ in 0..rounds {
        for key in keys {
            let key = std::hint::black_box(key.as_str());
            let hash = router.key_hash(key);
            std::hint::black_box(router.route(key, hash));
        }
    }
    start.elapsed().as_nanos() as f64 / operations as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn router(strategy: Strategy) -> Router {
        Router::new(Topology::new(16, HashFunction::Xxh3, strategy).unwrap()).unwrap()
    }

    #[test]
    fn shard_info_describes_the_route() {
        let r = router(Strategy::JumpBack);
        let info = r.shard_info("tenant-42");
        assert_eq!(info.partition_key, "tenant-42");
        assert_eq!(info.key_hash, HashFunction::Xxh3.hash(b"tenant-42"));
        assert_eq!(info.shard, r.route("tenant-42", info.key_hash));
        assert_eq!(info.shard_name, format!("shard-{}", info.shard));
        assert_eq!(info.topology_version, 1);
        assert_eq!(info.strategy, "jump_back");
        assert_eq!(info.routed_by, RoutedBy::Strategy);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["routed_by"], "strategy");
    }

    #[test]
    fn overrides_come_before_the_strategy() {
        let t = Topology::new(8, HashFunction::Murmur3, Strategy::Modulo).unwrap();
        let natural = Router::new(t.clone()).unwrap().shard_info("acme").shard;
        let pinned_to = (natural + 1) % 8;
        let t = t.with_override("acme", pinned_to).unwrap();
        let r = Router::new(t).unwrap();
        let info = r.shard_info("acme");
        assert_eq!(
            (info.shard, info.routed_by),
            (pinned_to, RoutedBy::Override)
        );
        assert_eq!(info.topology_version, 2);
        // Other keys are untouched, including ones that share nothing but a prefix.
        for key in ["acme2", "acm", "other"] {
            let h = r.key_hash(key);
            assert_eq!(r.route(key, h), (h % 8) as u32, "{key}");
        }
    }

    #[test]
    fn override_lookup_survives_hash_collisions() {
        // Two keys forced onto the same hash: the string decides.
        let o = Overrides {
            entries: vec![(7, "a".into(), 1), (7, "b".into(), 2), (9, "c".into(), 3)],
        };
        assert_eq!(o.get("a", 7), Some(1));
        assert_eq!(o.get("b", 7), Some(2));
        assert_eq!(o.get("c", 9), Some(3));
        assert_eq!(o.get("c", 7), None);
        assert_eq!(o.get("z", 8), None);
        assert_eq!(o.get("z", u64::MAX), None);
    }

    #[test]
    fn range_routing_reports_default_shard() {
        let strategy = Strategy::Range {
            key: RangeKey::Integer {
                separator: Some("-".into()),
                field: 1,
            },
            default_shard: 2,
            ranges: vec![
                RangeRule::integers(None, Some(100), 0),
                RangeRule::integers(Some(100), None, 1),
            ],
        };
        let t = Topology::new(3, HashFunction::Fnv1a, strategy)
            .unwrap()
            .with_override("ts-5", 2)
            .unwrap();
        let r = Router::new(t).unwrap();
        let cases = [
            ("ts-99", 0, RoutedBy::Strategy),
            ("ts-100", 1, RoutedBy::Strategy),
            ("ts-abc", 2, RoutedBy::DefaultShard),
            ("ts", 2, RoutedBy::DefaultShard),
            ("ts-5", 2, RoutedBy::Override),
        ];
        for (key, shard, by) in cases {
            let info = r.shard_info(key);
            assert_eq!((info.shard, info.routed_by), (shard, by), "{key}");
            assert_eq!(r.route(key, r.key_hash(key)), shard);
        }
    }

    #[test]
    fn new_rejects_an_invalid_topology() {
        let mut t = Topology::new(2, HashFunction::Xxh3, Strategy::Jump).unwrap();
        t.overrides.insert("k".into(), 9);
        assert!(matches!(
            Router::new(t),
            Err(Error::UnknownShard { shard: 9, .. })
        ));
    }

    #[test]
    fn debug_shows_the_topology_not_the_tables() {
        let r = router(Strategy::Ring { virtual_nodes: 150 });
        let text = format!("{r:?}");
        assert!(
            text.starts_with("Router { topology: Topology { version: 1"),
            "{text}"
        );
        assert!(text.len() < 300, "{text}");
    }

    #[test]
    fn clones_share_the_tables() {
        let r = router(Strategy::Ring { virtual_nodes: 150 });
        let c = r.clone();
        assert!(Arc::ptr_eq(&r.inner, &c.inner));
        fn check<T: Send + Sync>() {}
        check::<Router>();
    }

    #[test]
    fn measure_route_ns_measures_something() {
        let r = router(Strategy::JumpBack);
        assert_eq!(measure_route_ns(&r, &[], 10), 0.0);
        let keys: Vec<String> = (0..100).map(|i| format!("order-{i:06}")).collect();
        let ns = measure_route_ns(&r, &keys, 3);
        assert!(ns > 0.0 && ns.is_finite());
    }
}
