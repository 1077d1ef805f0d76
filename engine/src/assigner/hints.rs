//! Shard limits, utilization and rebalance hints: pure functions of the
//! shards' published totals.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::assigner::load::ShardTotals;
use crate::error::{Error, Result};

/// Capacity limits per shard (seed 004's `maxEntitiesPerShard`,
/// `maxBytesPerShard`, `minEntitiesPerShard`); each is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardLimits {
    /// Above this many entities a shard should be split.
    pub max_entities_per_shard: Option<u64>,
    /// Above this many bytes of state a shard should be split.
    pub max_bytes_per_shard: Option<u64>,
    /// Below this many entities a shard should be merged into another.
    pub min_entities_per_shard: Option<u64>,
}

impl ShardLimits {
    /// Checks the limits: maxima are positive, and the minimum is at most half
    /// the entity maximum (a split leaves two halves of about `max / 2`; a
    /// higher minimum would ask to merge them straight back).
    pub fn validate(&self) -> Result<()> {
        if self.max_entities_per_shard == Some(0) || self.max_bytes_per_shard == Some(0) {
            return Err(Error::InvalidConfig(
                "shard limits: a maximum of 0 leaves no room for any entity".into(),
            ));
        }
        if let (Some(min), Some(max)) = (self.min_entities_per_shard, self.max_entities_per_shard)
            && min.saturating_mul(2) > max
        {
            return Err(Error::InvalidConfig(format!(
                "shard limits: min_entities_per_shard {min} is above half of max_entities_per_shard {max}, so split shards would be merged back"
            )));
        }
        Ok(())
    }
}

/// One shard's totals against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShardUtilization {
    /// The shard.
    pub shard: u32,
    /// Live entities.
    pub entities: u64,
    /// Bytes of entity state.
    pub bytes: u64,
    /// `entities / max_entities_per_shard` (1.0 = full), when that limit is set.
    pub entity_utilization: Option<f64>,
    /// `bytes / max_bytes_per_shard` (1.0 = full), when that limit is set.
    pub byte_utilization: Option<f64>,
}

/// What a [`RebalanceHint`] recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintKind {
    /// Move about half of the source shard's entities to a new shard.
    Split,
    /// Move all of the source shard's entities to the target and retire the source.
    Merge,
}

/// How urgent a [`RebalanceHint`] is; orders `High < Medium < Low`, so an
/// ascending sort puts the most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Over a limit.
    High,
    /// Close to a limit.
    Medium,
    /// Worth doing, nothing breaks without it.
    Low,
}

/// A recommended topology change, computed from the shards' published totals.
/// Advisory only: the migration layer decides what to run.
///
/// # Rules
///
/// - **Split** when a shard's entities or bytes exceed
///   [`SPLIT_WARN_RATIO`](Self::SPLIT_WARN_RATIO) (80%) of the maximum:
///   [`Priority::High`] above 100%, [`Priority::Medium`] above 80%. No target
///   (a new shard takes half the entities); `entities_to_move` is half.
/// - **Merge** when a shard holds fewer entities than the minimum (and there
///   are at least two shards): [`Priority::Low`], the target is the
///   least-loaded other shard (by entities, then bytes, then id) that is not
///   itself being split, not already part of a merge hint, and would stay
///   within the maxima after the merge; with no such shard there is no hint.
///   Candidates are paired smallest first, so two small shards merge into each
///   other once, not twice. `entities_to_move` is all of the source's.
/// - `estimated_duration_ms` is the time to replay what moves at
///   [`REPLAY_ENTITIES_PER_SEC`](Self::REPLAY_ENTITIES_PER_SEC) or
///   [`REPLAY_BYTES_PER_SEC`](Self::REPLAY_BYTES_PER_SEC), whichever is slower
///   (bytes are assumed spread evenly over a shard's entities).
/// - Hints come most urgent first, then splits before merges, then by shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceHint {
    /// Split or merge.
    pub kind: HintKind,
    /// The shard to split, or to merge away.
    pub source_shard: u32,
    /// The shard a merge moves into; `None` for a split (a new shard).
    pub target_shard: Option<u32>,
    /// Why, with the numbers.
    pub reason: String,
    /// How urgent.
    pub priority: Priority,
    /// Entities that would move.
    pub entities_to_move: u64,
    /// Estimated migration time.
    pub estimated_duration_ms: u64,
}

impl RebalanceHint {
    /// Fraction of a maximum above which a split is recommended.
    pub const SPLIT_WARN_RATIO: f64 = 0.8;
    /// Entities per second a migration replays, for estimates: a conservative
    /// figure for replaying from Iceberg into a shard worker on one core.
    pub const REPLAY_ENTITIES_PER_SEC: u64 = 20_000;
    /// Bytes of state per second a migration replays, for estimates.
    pub const REPLAY_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

    /// Replay time of `entities` entities totalling `bytes` bytes, in ms.
    pub fn estimate_duration_ms(entities: u64, bytes: u64) -> u64 {
        let ms = |amount: u64, rate: u64| {
            u64::try_from((u128::from(amount) * 1000).div_ceil(u128::from(rate)))
                .unwrap_or(u64::MAX)
        };
        ms(entities, Self::REPLAY_ENTITIES_PER_SEC).max(ms(bytes, Self::REPLAY_BYTES_PER_SEC))
    }
}

fn ratio(value: u64, limit: Option<u64>) -> Option<f64> {
    limit.filter(|&l| l > 0).map(|l| value as f64 / l as f64)
}

pub(crate) fn utilization(stats: &[ShardTotals], limits: &ShardLimits) -> Vec<ShardUtilization> {
    stats
        .iter()
        .map(|s| ShardUtilization {
            shard: s.shard,
            entities: s.entities,
            bytes: s.bytes,
            entity_utilization: ratio(s.entities, limits.max_entities_per_shard),
            byte_utilization: ratio(s.bytes, limits.max_bytes_per_shard),
        })
        .collect()
}

pub(crate) fn rebalance_hints(stats: &[ShardTotals], limits: &ShardLimits) -> Vec<RebalanceHint> {
    let mut hints = Vec::new();
    // Shards already named by a hint: not merge targets or sources.
    let mut taken = vec![false; stats.len()];

    for (i, s) in stats.iter().enumerate() {
        let mut reason = String::new();
        let mut worst = 0.0_f64;
        for (what, value, limit) in [
            ("entities", s.entities, limits.max_entities_per_shard),
            ("bytes", s.bytes, limits.max_bytes_per_shard),
        ] {
            if let (Some(r), Some(limit)) = (ratio(value, limit), limit)
                && r > RebalanceHint::SPLIT_WARN_RATIO
            {
                if !reason.is_empty() {
                    reason.push_str("; ");
                }
                let _ = write!(
                    reason,
                    "shard {} holds {value} {what}, {:.0}% of the maximum {limit}",
                    s.shard,
                    r * 100.0
                );
                worst = worst.max(r);
            }
        }
        if reason.is_empty() {
            continue;
        }
        taken[i] = true;
        hints.push(RebalanceHint {
            kind: HintKind::Split,
            source_shard: s.shard,
            target_shard: None,
            reason,
            priority: if worst > 1.0 {
                Priority::High
            } else {
                Priority::Medium
            },
            entities_to_move: s.entities / 2,
            estimated_duration_ms: RebalanceHint::estimate_duration_ms(s.entities / 2, s.bytes / 2),
        });
    }

    if let Some(min) = limits.min_entities_per_shard
        && stats.len() >= 2
    {
        let load_order = |&i: &usize| (stats[i].entities, stats[i].bytes, stats[i].shard);
        let mut by_load: Vec<usize> = (0..stats.len()).collect();
        by_load.sort_by_key(load_order);
        for &i in &by_load {
            let source = &stats[i];
            if taken[i] || source.entities >= min {
                continue;
            }
            let fits = |t: &ShardTotals| {
                limits
                    .max_entities_per_shard
                    .is_none_or(|max| t.entities.saturating_add(source.entities) <= max)
                    && limits
                        .max_bytes_per_shard
                        .is_none_or(|max| t.bytes.saturating_add(source.bytes) <= max)
            };
            let Some(&j) = by_load
                .iter()
                .find(|&&j| j != i && !taken[j] && fits(&stats[j]))
            else {
                continue;
            };
            let target = &stats[j];
            taken[i] = true;
            taken[j] = true;
            hints.push(RebalanceHint {
                kind: HintKind::Merge,
                source_shard: source.shard,
                target_shard: Some(target.shard),
                reason: format!(
                    "shard {} holds {} entities, under the minimum {min}; shard {} is the least loaded ({} entities)",
                    source.shard, source.entities, target.shard, target.entities
                ),
                priority: Priority::Low,
                entities_to_move: source.entities,
                estimated_duration_ms: RebalanceHint::estimate_duration_ms(
                    source.entities,
                    source.bytes,
                ),
            });
        }
    }

    hints.sort_by_key(|h| (h.priority, h.kind == HintKind::Merge, h.source_shard));
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assigner::LoadTracker;

    fn stats(loads: &[(u64, u64)]) -> Vec<ShardTotals> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &(entities, bytes))| ShardTotals {
                shard: i as u32,
                entities,
                bytes,
            })
            .collect()
    }

    fn limits(max_e: Option<u64>, max_b: Option<u64>, min_e: Option<u64>) -> ShardLimits {
        ShardLimits {
            max_entities_per_shard: max_e,
            max_bytes_per_shard: max_b,
            min_entities_per_shard: min_e,
        }
    }

    #[test]
    fn utilization_against_each_limit() {
        let t = LoadTracker::new(3);
        t.set_entity_stats(0, 5_000, 50 << 20);
        t.set_entity_stats(2, 12_000, 1 << 20);
        let u = t.utilization(&limits(Some(10_000), Some(100 << 20), None));
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].entity_utilization, Some(0.5));
        assert_eq!(u[0].byte_utilization, Some(0.5));
        assert_eq!(u[1].entity_utilization, Some(0.0));
        assert_eq!(u[2].entity_utilization, Some(1.2));
        assert_eq!((u[2].entities, u[2].bytes), (12_000, 1 << 20));
        let u = t.utilization(&ShardLimits::default());
        assert_eq!(
            (u[0].entity_utilization, u[0].byte_utilization),
            (None, None)
        );
    }

    #[test]
    fn split_hints_by_entities_and_bytes_with_priorities() {
        let l = limits(Some(10_000), Some(1_000_000), None);
        let hints = rebalance_hints(
            &stats(&[
                (12_000, 10),
                (8_500, 10),
                (8_000, 10),
                (100, 1_500_000),
                (9_000, 900_000),
            ]),
            &l,
        );
        let summary: Vec<_> = hints
            .iter()
            .map(|h| (h.source_shard, h.kind, h.priority))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, HintKind::Split, Priority::High),
                (3, HintKind::Split, Priority::High),
                (1, HintKind::Split, Priority::Medium),
                (4, HintKind::Split, Priority::Medium),
            ]
        );
        let h0 = &hints[0];
        assert_eq!((h0.target_shard, h0.entities_to_move), (None, 6_000));
        assert_eq!(h0.estimated_duration_ms, 300); // 6 000 entities at 20 000/s
        assert!(
            h0.reason
                .contains("12000 entities, 120% of the maximum 10000"),
            "{}",
            h0.reason
        );
        assert!(
            hints[1].reason.contains("1500000 bytes, 150%"),
            "{}",
            hints[1].reason
        );
        // Both limits near: both named.
        assert!(hints[3].reason.contains("entities") && hints[3].reason.contains("bytes"));
        // Byte-heavy moves are estimated by bytes.
        assert_eq!(
            RebalanceHint::estimate_duration_ms(10, 64 * 1024 * 1024),
            2_000
        );
    }

    #[test]
    fn merge_hints_pair_with_the_least_loaded_shard() {
        let l = limits(Some(10_000), None, Some(100));
        let hints = rebalance_hints(
            &stats(&[(5_000, 0), (40, 0), (3_000, 0), (70, 0), (9_990, 0)]),
            &l,
        );
        // Shard 1 (smallest) merges into shard 3, the least loaded other one;
        // shard 3 is then taken, and shard 4 is being split.
        assert_eq!(hints.len(), 2, "{hints:?}");
        let merge = &hints[1];
        assert_eq!(
            (
                merge.kind,
                merge.source_shard,
                merge.target_shard,
                merge.priority
            ),
            (HintKind::Merge, 1, Some(3), Priority::Low)
        );
        assert_eq!(merge.entities_to_move, 40);
        assert!(
            merge.reason.contains("under the minimum 100"),
            "{}",
            merge.reason
        );
        assert_eq!(hints[0].kind, HintKind::Split); // shard 4 at 99.9%

        // A lone small shard goes to the least loaded shard that has room:
        // shard 2 has fewer entities but its bytes would overflow.
        let l = limits(Some(10_000), Some(1_000), Some(100));
        let hints = rebalance_hints(&stats(&[(5_000, 100), (50, 300), (3_000, 790)]), &l);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert_eq!((hints[0].source_shard, hints[0].target_shard), (1, Some(0)));
        // One shard cannot merge, and no minimum means no merges.
        assert!(rebalance_hints(&stats(&[(5, 0)]), &l).is_empty());
        assert!(rebalance_hints(&stats(&[(5, 0), (6, 0)]), &ShardLimits::default()).is_empty());
    }

    #[test]
    fn tracker_hints_and_serialized_shape() {
        let t = LoadTracker::new(3);
        t.set_entity_stats(0, 20_000, 0);
        t.set_entity_stats(1, 10, 0);
        t.set_entity_stats(2, 500, 0);
        let hints = t.rebalance_hints(&limits(Some(10_000), None, Some(100)));
        let summary: Vec<_> = hints
            .iter()
            .map(|h| (h.kind, h.source_shard, h.target_shard))
            .collect();
        assert_eq!(
            summary,
            vec![(HintKind::Split, 0, None), (HintKind::Merge, 1, Some(2))]
        );
        // The shard being split is never a merge target.
        t.set_entity_stats(2, 20_000, 0);
        let hints = t.rebalance_hints(&limits(Some(10_000), None, Some(100)));
        assert!(hints.iter().all(|h| h.kind == HintKind::Split), "{hints:?}");

        let json = serde_json::to_value(&hints[0]).unwrap();
        assert_eq!(json["kind"], "split");
        assert_eq!(json["priority"], "high");
        assert_eq!(json["target_shard"], serde_json::Value::Null);
        assert_eq!(json["entities_to_move"], 10_000);
    }

    #[test]
    fn limits_validate_and_deserialize() {
        assert!(ShardLimits::default().validate().is_ok());
        assert!(
            limits(Some(10_000), Some(1), Some(5_000))
                .validate()
                .is_ok()
        );
        assert!(limits(Some(0), None, None).validate().is_err());
        assert!(limits(None, Some(0), None).validate().is_err());
        assert!(limits(Some(10_000), None, Some(5_001)).validate().is_err());
        let l: ShardLimits = serde_json::from_str(r#"{"max_entities_per_shard": 10}"#).unwrap();
        assert_eq!(l, limits(Some(10), None, None));
        assert!(serde_json::from_str::<ShardLimits>(r#"{"max": 1}"#).is_err());
    }
}
