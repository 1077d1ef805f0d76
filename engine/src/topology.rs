//! The topology: one versioned document that says where every key lives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::routing::{HashFunction, Strategy};

/// Upper bound on the shard count of a topology.
pub const MAX_SHARDS: u32 = 1 << 16;

/// Shard count, hash function, strategy (with its virtual nodes or ranges)
/// and key overrides: everything routing depends on, as one versioned
/// document that the caller persists (as JSON) and that survives restarts.
///
/// A topology is never changed in place: `with_*` return the next version,
/// validated, and a request routed with an older version is re-routed.
/// [`HashFunction`] cannot change (events carry the hash); a strategy change
/// or a shard count change moves keys and goes through a migration.
///
/// ```
/// use floe_engine::{HashFunction, Strategy, Topology};
///
/// let t = Topology::new(16, HashFunction::Xxh3, Strategy::JumpBack)?;
/// let t = t.with_override("tenant-big", 3)?.with_shard_count(17)?;
/// assert_eq!(t.version, 3);
/// assert_eq!(Topology::from_json(&t.to_json())?, t);
/// # Ok::<(), floe_engine::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Starts at 1, one more per change.
    pub version: u64,
    /// Shards `0..shard_count`, at least 1 and at most [`MAX_SHARDS`].
    pub shard_count: u32,
    /// The deployment-wide key hash, fixed at creation.
    pub hash: HashFunction,
    /// How keys map to shards.
    pub strategy: Strategy,
    /// Partition key -> shard, checked before the strategy (tenant pinning,
    /// keys held back during a migration).
    #[serde(default)]
    pub overrides: BTreeMap<String, u32>,
}

impl Topology {
    /// Version 1 of a topology, validated.
    pub fn new(shard_count: u32, hash: HashFunction, strategy: Strategy) -> Result<Self> {
        let topology = Topology {
            version: 1,
            shard_count,
            hash,
            strategy,
            overrides: BTreeMap::new(),
        };
        topology.validate()?;
        Ok(topology)
    }

    /// Checks every invariant: version at least 1, shard count in
    /// `1..=MAX_SHARDS`, the strategy (virtual nodes, ranges), and overrides
    /// naming existing shards. Shard ids out of range are
    /// [`Error::UnknownShard`], everything else [`Error::InvalidTopology`].
    pub fn validate(&self) -> Result<()> {
        if self.version == 0 {
            return Err(Error::InvalidTopology("version must be at least 1".into()));
        }
        if self.shard_count == 0 || self.shard_count > MAX_SHARDS {
            return Err(Error::InvalidTopology(format!(
                "shard_count must be between 1 and {MAX_SHARDS}, got {}",
                self.shard_count
            )));
        }
        self.strategy.validate(self.shard_count)?;
        for (key, &shard) in &self.overrides {
            if key.is_empty() {
                return Err(Error::InvalidTopology(
                    "override for an empty partition key".into(),
                ));
            }
            if shard >= self.shard_count {
                return Err(Error::UnknownShard {
                    shard,
                    shard_count: self.shard_count,
                });
            }
        }
        Ok(())
    }

    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings, integers, maps and enums always serializes.
        serde_json::to_string_pretty(self).expect("a topology always serializes to JSON")
    }

    /// Reads and validates a document written by [`Topology::to_json`].
    /// Unknown fields are rejected: an older floe must not route with a
    /// document it only partly understands.
    pub fn from_json(json: &str) -> Result<Self> {
        let topology: Topology = serde_json::from_str(json)?;
        topology.validate()?;
        Ok(topology)
    }

    /// The next version with `shard_count` shards and the same strategy.
    ///
    /// Errors for a range strategy (ranges name their shards: change them
    /// with [`Topology::with_strategy`]), for an unchanged count, and when an
    /// override points at a shard that would no longer exist (move or remove
    /// it first).
    pub fn with_shard_count(&self, shard_count: u32) -> Result<Topology> {
        if matches!(self.strategy, Strategy::Range { .. }) {
            return Err(Error::InvalidTopology(
                "range strategy: the shard count changes only with new ranges (with_strategy)"
                    .into(),
            ));
        }
        if matches!(self.strategy, Strategy::Time { .. }) {
            return Err(Error::InvalidTopology(
                "time strategy: the shard count changes only with new periods (with_strategy)"
                    .into(),
            ));
        }
        if shard_count == self.shard_count {
            return Err(Error::InvalidTopology(format!(
                "the topology already has {shard_count} shards"
            )));
        }
        self.next(|t| t.shard_count = shard_count)
    }

    /// The next version with another strategy and shard count: new ranges, a
    /// new number of virtual nodes, or a switch between strategies. The hash
    /// function stays.
    pub fn with_strategy(&self, shard_count: u32, strategy: Strategy) -> Result<Topology> {
        self.next(|t| {
            t.shard_count = shard_count;
            t.strategy = strategy;
        })
    }

    /// The next version with `key` pinned to `shard` (replacing any earlier
    /// override of that key).
    pub fn with_override(&self, key: impl Into<String>, shard: u32) -> Result<Topology> {
        let key = key.into();
        self.next(|t| {
            t.overrides.insert(key, shard);
        })
    }

    /// The next version without the override of `key`; an error if `key` has
    /// none.
    pub fn without_override(&self, key: &str) -> Result<Topology> {
        if !self.overrides.contains_key(key) {
            return Err(Error::InvalidTopology(format!(
                "no override for partition key {key:?}"
            )));
        }
        self.next(|t| {
            t.overrides.remove(key);
        })
    }

    fn next(&self, change: impl FnOnce(&mut Topology)) -> Result<Topology> {
        let mut next = self.clone();
        next.version = self.version.checked_add(1).ok_or_else(|| {
            Error::InvalidTopology("version overflow: no version after u64::MAX".into())
        })?;
        change(&mut next);
        next.validate()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{KeyTransform, RangeKey, RangeRule};
    use proptest::prelude::{Just, any, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as Gen;

    fn invalid(result: Result<Topology>) -> String {
        match result {
            Err(Error::InvalidTopology(m)) => m,
            other => panic!("expected InvalidTopology, got {other:?}"),
        }
    }

    #[test]
    fn new_starts_at_version_one_and_changes_bump_it() {
        let t = Topology::new(4, HashFunction::Xxh3, Strategy::Jump).unwrap();
        assert_eq!(t.version, 1);
        let t2 = t.with_shard_count(5).unwrap();
        assert_eq!((t2.version, t2.shard_count), (2, 5));
        let t3 = t2.with_override("acme", 4).unwrap();
        assert_eq!(t3.version, 3);
        assert_eq!(t3.overrides.get("acme"), Some(&4));
        let t4 = t3.without_override("acme").unwrap();
        assert_eq!(t4.version, 4);
        assert!(t4.overrides.is_empty());
        // The original is untouched.
        assert_eq!(t.version, 1);
        assert_eq!(t.shard_count, 4);
    }

    #[test]
    fn validation_errors_are_typed() {
        let m = invalid(Topology::new(0, HashFunction::Xxh3, Strategy::Modulo));
        assert!(m.contains("shard_count"), "{m}");
        let m = invalid(Topology::new(
            MAX_SHARDS + 1,
            HashFunction::Xxh3,
            Strategy::Modulo,
        ));
        assert!(m.contains("shard_count"), "{m}");
        let m = invalid(Topology::new(
            4,
            HashFunction::Xxh3,
            Strategy::Ring { virtual_nodes: 0 },
        ));
        assert!(m.contains("virtual_nodes"), "{m}");

        let t = Topology::new(4, HashFunction::Fnv1a, Strategy::JumpBack).unwrap();
        assert!(matches!(
            t.with_override("acme", 4),
            Err(Error::UnknownShard {
                shard: 4,
                shard_count: 4
            })
        ));
        assert!(invalid(t.with_override("", 1)).contains("empty"));
        assert!(invalid(t.without_override("nobody")).contains("no override"));
        assert!(invalid(t.with_shard_count(4)).contains("already"));
        assert!(invalid(t.with_shard_count(0)).contains("shard_count"));

        // Shrinking below an override's shard is refused until it is moved.
        let pinned = t.with_override("acme", 3).unwrap();
        assert!(matches!(
            pinned.with_shard_count(3),
            Err(Error::UnknownShard { shard: 3, .. })
        ));

        let mut zero = t.clone();
        zero.version = 0;
        assert!(zero.validate().is_err());
        let mut max = t.clone();
        max.version = u64::MAX;
        assert!(invalid(max.with_shard_count(5)).contains("overflow"));
    }

    #[test]
    fn range_topologies_change_through_with_strategy() {
        let ranges = Strategy::Range {
            key: RangeKey::String {
                transform: KeyTransform::FirstCharUppercase,
            },
            default_shard: 0,
            ranges: vec![
                RangeRule::strings(Some("A"), Some("M"), 0),
                RangeRule::strings(Some("M"), None, 1),
            ],
        };
        let t = Topology::new(2, HashFunction::Xxh3, ranges).unwrap();
        assert!(invalid(t.with_shard_count(3)).contains("range"));
        let split = Strategy::Range {
            key: RangeKey::String {
                transform: KeyTransform::FirstCharUppercase,
            },
            default_shard: 0,
            ranges: vec![
                RangeRule::strings(Some("A"), Some("M"), 0),
                RangeRule::strings(Some("M"), Some("T"), 1),
                RangeRule::strings(Some("T"), None, 2),
            ],
        };
        let t2 = t.with_strategy(3, split.clone()).unwrap();
        assert_eq!((t2.version, t2.shard_count), (2, 3));
        assert_eq!(t2.strategy, split);
        // A rule naming shard 2 needs 3 shards.
        assert!(matches!(
            t.with_strategy(2, split),
            Err(Error::UnknownShard { shard: 2, .. })
        ));
    }

    #[test]
    fn json_is_readable_and_strict() {
        let t = Topology::new(
            16,
            HashFunction::Xxh3,
            Strategy::Ring { virtual_nodes: 150 },
        )
        .unwrap()
        .with_override("tenant-big", 7)
        .unwrap();
        let json = t.to_json();
        let expected = r#"{
  "version": 2,
  "shard_count": 16,
  "hash": "xxh3",
  "strategy": {
    "kind": "ring",
    "virtual_nodes": 150
  },
  "overrides": {
    "tenant-big": 7
  }
}"#;
        assert_eq!(json, expected);
        assert_eq!(Topology::from_json(&json).unwrap(), t);

        // Overrides may be left out; everything else is required.
        let minimal =
            r#"{"version":1,"shard_count":2,"hash":"fnv1a","strategy":{"kind":"modulo"}}"#;
        assert!(Topology::from_json(minimal).unwrap().overrides.is_empty());
        let no_hash = r#"{"version":1,"shard_count":2,"strategy":{"kind":"modulo"}}"#;
        assert!(matches!(
            Topology::from_json(no_hash),
            Err(Error::MalformedJson(_))
        ));
        let extra = r#"{"version":1,"shard_count":2,"hash":"xxh3","strategy":{"kind":"jump"},"replicas":3}"#;
        assert!(matches!(
            Topology::from_json(extra),
            Err(Error::MalformedJson(_))
        ));
        // Well-formed but invalid: validation runs on load.
        let bad = r#"{"version":1,"shard_count":2,"hash":"xxh3","strategy":{"kind":"jump"},"overrides":{"a":2}}"#;
        assert!(matches!(
            Topology::from_json(bad),
            Err(Error::UnknownShard { shard: 2, .. })
        ));
        assert!(matches!(
            Topology::from_json("{"),
            Err(Error::MalformedJson(_))
        ));
    }

    fn arb_range_strategy(shard_count: u32) -> impl Gen<Value = Strategy> {
        let shard = 0..shard_count;
        let integers = (
            proptest::collection::btree_set(any::<i64>(), 0..8),
            proptest::collection::vec(shard.clone(), 8),
            any::<bool>(),
            proptest::option::of("[-,:/]"),
            0u32..3,
        )
            .prop_map(|(bounds, shards, open_end, separator, field)| {
                let bounds: Vec<i64> = bounds.into_iter().collect();
                let mut ranges: Vec<RangeRule> = bounds
                    .windows(2)
                    .zip(&shards)
                    .map(|(w, &s)| RangeRule::integers(Some(w[0]), Some(w[1]), s))
                    .collect();
                if open_end && let Some(&last) = bounds.last() {
                    ranges.push(RangeRule::integers(Some(last), None, shards[7]));
                }
                let field = if separator.is_some() { field } else { 0 };
                Strategy::Range {
                    key: RangeKey::Integer { separator, field },
                    default_shard: shards[0],
                    ranges,
                }
            });
        let strings = (
            proptest::collection::btree_set("[a-zA-Z0-9]{0,6}", 0..8),
            proptest::collection::vec(shard, 8),
            prop_oneof![
                Just(KeyTransform::None),
                Just(KeyTransform::FirstCharUppercase),
                Just(KeyTransform::Uppercase),
                Just(KeyTransform::Lowercase),
            ],
        )
            .prop_map(|(bounds, shards, transform)| {
                let bounds: Vec<String> = bounds.into_iter().collect();
                let mut ranges: Vec<RangeRule> = bounds
                    .windows(2)
                    .zip(&shards)
                    .map(|(w, &s)| RangeRule::strings(Some(&w[0]), Some(&w[1]), s))
                    .collect();
                if let Some(first) = bounds.first() {
                    ranges.push(RangeRule::strings(None, Some(first), shards[7]));
                }
                Strategy::Range {
                    key: RangeKey::String { transform },
                    default_shard: shards[1],
                    ranges,
                }
            });
        prop_oneof![integers, strings]
    }

    fn arb_topology() -> impl Gen<Value = Topology> {
        (1u32..=256).prop_flat_map(|shard_count| {
            let strategy = prop_oneof![
                Just(Strategy::Modulo),
                Just(Strategy::Jump),
                Just(Strategy::JumpBack),
                (1u32..=1000).prop_map(|virtual_nodes| Strategy::Ring { virtual_nodes }),
                arb_range_strategy(shard_count),
            ];
            (
                1u64..=u64::MAX,
                prop_oneof![
                    Just(HashFunction::Fnv1a),
                    Just(HashFunction::Murmur3),
                    Just(HashFunction::Xxh3),
                ],
                strategy,
                proptest::collection::btree_map(".{1,12}", 0..shard_count, 0..6),
            )
                .prop_map(move |(version, hash, strategy, overrides)| Topology {
                    version,
                    shard_count,
                    hash,
                    strategy,
                    overrides,
                })
        })
    }

    proptest! {
        #[test]
        fn json_roundtrip(t in arb_topology()) {
            t.validate().unwrap();
            let json = t.to_json();
            prop_assert_eq!(Topology::from_json(&json).unwrap(), t.clone());
            // Compact JSON reads back the same too.
            let compact = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(Topology::from_json(&compact).unwrap(), t);
        }
    }
}
