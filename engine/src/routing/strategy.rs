//! The routing strategies as they appear in configuration and in the topology
//! document, and their validation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use std::collections::BTreeMap;

use super::range_rules::{RangeKey, RangeRule, validate_ranges};
use super::time::{Period, PeriodState, TimeSpec};

/// How a partition key (or its hash) is mapped to a shard.
///
/// Serialized internally tagged by `kind`, e.g. `{"kind": "jump_back"}` or,
/// in TOML, `strategy = { kind = "ring", virtual_nodes = 150 }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// `key_hash % shard_count`: seed 004's `hash` strategy (with
    /// [`HashFunction::Fnv1a`](crate::HashFunction::Fnv1a) exactly the seed's).
    /// Even, but going from `n` to `n + 1` shards moves `n/(n + 1)` of the keys.
    /// Seed 004's `tenant` is this strategy over the tenant as partition key
    /// (floe's default partition key, `$namespace`).
    #[serde(alias = "hash", alias = "tenant")]
    Modulo,
    /// Jump consistent hash (Lamping & Veach 2014), the paper's algorithm bit
    /// for bit: even, and `n -> n + 1` moves only the `1/(n + 1)` of the keys
    /// that land on the new shard. `O(ln n)` per key with floating point.
    Jump,
    /// JumpBackHash (Ertl 2024): the balance and minimal movement of jump hash
    /// in expected constant time without division. The default choice for
    /// hash routing.
    JumpBack,
    /// A consistent-hash ring with `virtual_nodes` points per shard (seed 004's
    /// `consistent-hash`). Minimal movement; balance depends on the number of
    /// virtual nodes (relative spread of a shard's share about `1/sqrt(v)`).
    #[serde(
        alias = "consistent_hash",
        alias = "consistent-hash",
        alias = "consistent"
    )]
    Ring {
        /// Points per shard on the ring; more points, better balance, more memory.
        #[serde(default = "default_virtual_nodes")]
        virtual_nodes: u32,
    },
    /// Routes by the partition key itself (not its hash) through explicit
    /// half-open ranges: time series, alphabetic partitioning, tenant tiers.
    Range {
        /// How keys are read and compared.
        #[serde(default)]
        key: RangeKey,
        /// The shard for keys that match no range, including numeric keys that
        /// do not parse.
        #[serde(default)]
        default_shard: u32,
        /// Non-overlapping half-open ranges, in any order.
        ranges: Vec<RangeRule>,
    },
    /// Routes by a time in the partition key (seed 002's time-based and
    /// hybrid team + time sharding): the key, or part `time_part` of a
    /// composite key, is an RFC 3339 date-time or epoch milliseconds; its
    /// period (a calendar month by default) names the shard in `periods`.
    /// With `tenant_part`, tenants listed in `tenants` have a shard of their
    /// own for every period (seed 002's "large team"). A key whose time does
    /// not parse, or whose period has no shard, is refused with
    /// [`Error::Unroutable`]: nothing is written.
    ///
    /// TOML: `strategy = { kind = "time", period = "month", time_part = 1,
    /// tenant_part = 0, periods = { "2024-01" = 0, "2024-02" = 1 } }` with
    /// `[partition_key] fields = ["team_id", "created_at"]`.
    Time {
        /// The length of a period.
        #[serde(default)]
        period: Period,
        /// The fixed UTC offset period boundaries are at (`"+02:00"`);
        /// absent: UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<String>,
        /// The part of a composite partition key that holds the time
        /// (0-based); absent: the whole key is the time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_part: Option<u32>,
        /// The part of a composite partition key that holds the tenant;
        /// needed by `tenants`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant_part: Option<u32>,
        /// Period label (`2024-03`, `2024-03-15`, `2024-W11`, `2024`) ->
        /// the shard that owns the period.
        periods: BTreeMap<String, u32>,
        /// Tenant -> the shard that owns all of its periods.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        tenants: BTreeMap<String, u32>,
        /// Period label -> sealed or archived (seed 002's archive window);
        /// absent periods are active. Every label here has a shard in
        /// `periods`. Changed by archival (`floe migrate archive-period`),
        /// never by hand.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        archived: BTreeMap<String, PeriodState>,
    },
}

fn default_virtual_nodes() -> u32 {
    Strategy::DEFAULT_VIRTUAL_NODES
}

impl std::str::FromStr for Strategy {
    type Err = Error;

    /// A strategy by name alone, with its defaults: floe's names (`modulo`,
    /// `jump`, `jump_back`, `ring`) and the seeds' (`hash`, `tenant`,
    /// `consistent-hash`, `consistent`). `range` needs its ranges and is
    /// refused here.
    fn from_str(name: &str) -> Result<Strategy> {
        Ok(match name.trim() {
            "modulo" | "hash" | "tenant" => Strategy::Modulo,
            "jump" => Strategy::Jump,
            "jump_back" | "jump-back" => Strategy::JumpBack,
            "ring" | "consistent_hash" | "consistent-hash" | "consistent" => Strategy::Ring {
                virtual_nodes: Self::DEFAULT_VIRTUAL_NODES,
            },
            "range" => {
                return Err(Error::InvalidTopology(
                    "the range strategy needs its ranges: strategy = { kind = \"range\", ranges = [...] }".into(),
                ));
            }
            "time" => {
                return Err(Error::InvalidTopology(
                    "the time strategy needs its periods: strategy = { kind = \"time\", periods = { \"2024-01\" = 0 } }".into(),
                ));
            }
            other => {
                return Err(Error::InvalidTopology(format!(
                    "unknown strategy {other:?}: expected modulo (hash, tenant), jump, jump_back, ring (consistent-hash, consistent), range or time"
                )));
            }
        })
    }
}

impl Strategy {
    /// Virtual nodes per shard when a ring's configuration does not say.
    pub const DEFAULT_VIRTUAL_NODES: u32 = 150;

    /// Upper bound on `shard_count * virtual_nodes` for a ring (about 64 MiB
    /// of ring and index).
    pub const MAX_RING_POINTS: u64 = 1 << 22;

    /// The name used in configuration (the serde tag) and in [`ShardInfo`](crate::ShardInfo).
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Modulo => "modulo",
            Strategy::Jump => "jump",
            Strategy::JumpBack => "jump_back",
            Strategy::Ring { .. } => "ring",
            Strategy::Range { .. } => "range",
            Strategy::Time { .. } => "time",
        }
    }

    /// The table parts of a time strategy, `None` for the others.
    pub(crate) fn time_spec(&self) -> Option<TimeSpec<'_>> {
        match self {
            Strategy::Time {
                period,
                offset,
                time_part,
                tenant_part,
                periods,
                tenants,
                archived,
            } => Some(TimeSpec {
                period: *period,
                offset: offset.as_deref(),
                time_part: *time_part,
                tenant_part: *tenant_part,
                periods,
                tenants,
                archived,
            }),
            _ => None,
        }
    }

    /// Whether the strategy names the shard of each key range or period
    /// itself (range and time), so that the shard count alone does not
    /// change routing.
    pub fn names_shards(&self) -> bool {
        matches!(self, Strategy::Range { .. } | Strategy::Time { .. })
    }

    /// Checks the strategy against a shard count: virtual nodes, range
    /// bounds, overlaps and shard ids.
    pub(crate) fn validate(&self, shard_count: u32) -> Result<()> {
        match self {
            Strategy::Modulo | Strategy::Jump | Strategy::JumpBack => Ok(()),
            Strategy::Ring { virtual_nodes } => {
                if *virtual_nodes == 0 {
                    return Err(Error::InvalidTopology(
                        "ring: virtual_nodes must be at least 1".into(),
                    ));
                }
                let points = u64::from(*virtual_nodes) * u64::from(shard_count);
                if points > Self::MAX_RING_POINTS {
                    return Err(Error::InvalidTopology(format!(
                        "ring: {shard_count} shards x {virtual_nodes} virtual nodes = {points} points, more than the limit of {}",
                        Self::MAX_RING_POINTS
                    )));
                }
                Ok(())
            }
            Strategy::Range {
                key,
                default_shard,
                ranges,
            } => validate_ranges(key, *default_shard, ranges, shard_count),
            Strategy::Time { .. } => self
                .time_spec()
                .map_or(Ok(()), |spec| spec.compile(shard_count).map(drop)),
        }
    }
}

/// A range strategy with default shard 0, for tests of this module and
/// `range_rules`.
#[cfg(test)]
pub(crate) fn range(key: RangeKey, ranges: Vec<RangeRule>) -> Strategy {
    Strategy::Range {
        key,
        default_shard: 0,
        ranges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: Error) -> String {
        match err {
            Error::InvalidTopology(m) => m,
            other => panic!("expected InvalidTopology, got {other:?}"),
        }
    }

    #[test]
    fn json_shapes_are_tagged_by_kind() {
        let cases = [
            (Strategy::Modulo, r#"{"kind":"modulo"}"#),
            (Strategy::Jump, r#"{"kind":"jump"}"#),
            (Strategy::JumpBack, r#"{"kind":"jump_back"}"#),
            (
                Strategy::Ring { virtual_nodes: 64 },
                r#"{"kind":"ring","virtual_nodes":64}"#,
            ),
            (
                range(
                    RangeKey::Integer {
                        separator: Some("-".into()),
                        field: 1,
                    },
                    vec![RangeRule::integers(None, Some(10), 1)],
                ),
                r#"{"kind":"range","key":{"kind":"integer","separator":"-","field":1},"default_shard":0,"ranges":[{"end":10,"shard":1}]}"#,
            ),
        ];
        for (strategy, json) in cases {
            assert_eq!(serde_json::to_string(&strategy).unwrap(), json);
            assert_eq!(serde_json::from_str::<Strategy>(json).unwrap(), strategy);
        }
    }

    #[test]
    fn seed_names_and_defaults_are_accepted() {
        let s: Strategy = serde_json::from_str(r#"{"kind":"consistent_hash"}"#).unwrap();
        assert_eq!(s, Strategy::Ring { virtual_nodes: 150 });
        let s: Strategy = serde_json::from_str(r#"{"kind":"hash"}"#).unwrap();
        assert_eq!(s, Strategy::Modulo);
        let ring = Strategy::Ring { virtual_nodes: 150 };
        for (kind, expected) in [
            ("tenant", Strategy::Modulo),
            ("consistent-hash", ring.clone()),
            ("consistent", ring.clone()),
        ] {
            let json = format!(r#"{{"kind":"{kind}"}}"#);
            assert_eq!(
                serde_json::from_str::<Strategy>(&json).unwrap(),
                expected,
                "{kind}"
            );
        }
        for (name, expected) in [
            ("hash", Strategy::Modulo),
            ("tenant", Strategy::Modulo),
            ("consistent-hash", ring.clone()),
            ("consistent", ring.clone()),
            ("jump_back", Strategy::JumpBack),
            ("jump", Strategy::Jump),
        ] {
            assert_eq!(name.parse::<Strategy>().unwrap(), expected, "{name}");
        }
        assert!(message("range".parse::<Strategy>().unwrap_err()).contains("ranges"));
        assert!(message("maglev".parse::<Strategy>().unwrap_err()).contains("unknown"));
        let s: Strategy =
            serde_json::from_str(r#"{"kind":"range","ranges":[{"start":"A","shard":0}]}"#).unwrap();
        assert_eq!(
            s,
            range(
                RangeKey::default(),
                vec![RangeRule::strings(Some("A"), None, 0)]
            )
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        for json in [
            r#"{"kind":"ring","virtual_nodes":10,"vnodes":3}"#,
            r#"{"kind":"maglev"}"#,
            r#"{"kind":"range","ranges":[{"start":1,"shard":0,"weight":2}]}"#,
            r#"{"kind":"range","key":{"kind":"float"},"ranges":[]}"#,
            r#"{"kind":"range","ranges":[{"start":1.5,"shard":0}]}"#,
        ] {
            assert!(serde_json::from_str::<Strategy>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn ring_needs_virtual_nodes_and_a_bounded_size() {
        let err = Strategy::Ring { virtual_nodes: 0 }.validate(4).unwrap_err();
        assert!(message(err).contains("virtual_nodes"));
        let err = Strategy::Ring {
            virtual_nodes: 1 << 20,
        }
        .validate(8)
        .unwrap_err();
        assert!(message(err).contains("limit"));
        Strategy::Ring { virtual_nodes: 500 }.validate(64).unwrap();
    }
}
