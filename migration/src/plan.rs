//! Plans: which partition keys move where, for adding, removing, merging
//! and splitting shards and for rebalancing, with estimates; and their
//! validation.
//!
//! A plan is a pair of topologies. The keys that move are, by definition,
//! exactly those the two route differently ([`Movement`]): the listed
//! [`KeyMove`]s are the known keys (those with history) among them, and the
//! live migration uses the same routing predicate for keys that appear
//! while it runs, so nothing depends on the listing being complete.

use std::collections::{BTreeMap, HashSet};

use floe_engine::{RangeBound, Router, Strategy, Topology};
use serde::{Deserialize, Serialize};

use crate::balance::{ShardLoad, analyze_balance, check_threshold, measure};
use crate::error::{Error, Result};

pub use floe_engine::KeyLoad;

/// The kind of topology change.
///
/// A field a kind does not take is refused, so a misspelled parameter is an
/// error rather than a plan made without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanKind {
    /// One more shard; the strategy hands it its share of keys. (A struct
    /// variant with no fields, not a unit one: serde refuses unknown fields
    /// only of struct variants.)
    AddShard {},
    /// A shard leaves (any one: the highest takes its id, so ids stay
    /// `0..n`); its keys go to the least loaded remaining shards.
    RemoveShard {
        /// The shard that leaves.
        shard: u32,
    },
    /// Keys move from hot to cold shards (pinned by overrides).
    Rebalance {
        /// The tolerance of the balance analysis.
        threshold: f64,
    },
    /// A new shard takes about half of one shard's keys; no other key moves.
    Split {
        /// The shard split.
        shard: u32,
    },
    /// Two shards become one (any two: the highest takes the freed id).
    Merge {
        /// The shard that leaves.
        from: u32,
        /// The shard that takes its keys.
        into: u32,
    },
    /// One partition key (a tenant) is pinned to a chosen shard by an
    /// override: `floe migrate pin KEY SHARD`.
    Pin {
        /// The partition key.
        key: String,
        /// Its shard from now on.
        shard: u32,
    },
    /// Partition keys are pinned to given shards (seed 004's
    /// `rebalance({partitionKeys, targetShards})`).
    MoveKeys {
        /// Partition key -> its shard from now on.
        moves: BTreeMap<String, u32>,
    },
    /// The overrides of these keys are dropped: they follow the strategy
    /// again.
    Unpin {
        /// The partition keys.
        keys: Vec<String>,
    },
    /// Range topologies: the range `[start, end)` on `shard`, or on a new
    /// shard when `shard` is absent.
    AddRange {
        /// Inclusive lower bound; absent: unbounded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<RangeBound>,
        /// Exclusive upper bound; absent: unbounded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<RangeBound>,
        /// The owner; absent: a new shard.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    },
    /// Range topologies: the range holding `at` is cut there; the upper
    /// part goes to `shard`, or to a new shard when `shard` is absent.
    SplitRange {
        /// The first key of the upper part.
        at: RangeBound,
        /// The upper part's owner; absent: a new shard.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    },
    /// Range topologies: the ranges ending and starting at `at` become one,
    /// owned by `shard` (absent: the lower range's shard).
    MergeRanges {
        /// Where the two ranges touch.
        at: RangeBound,
        /// The merged range's owner; absent: the lower range's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    },
    /// Range topologies: the range holding `at` goes to `shard`.
    MoveRange {
        /// A key of the range.
        at: RangeBound,
        /// Its owner from now on.
        shard: u32,
    },
    /// Time topologies: period `period` (its label, `2024-03`) gets `shard`,
    /// or a new shard when `shard` is absent. What the background task runs
    /// before a period starts.
    AddPeriod {
        /// The period's label.
        period: String,
        /// The owner; absent: a new shard.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    },
    /// Time topologies: period `period` goes to `shard`.
    MovePeriod {
        /// The period's label.
        period: String,
        /// Its owner from now on.
        shard: u32,
    },
    /// A tenant gets a new shard of its own and all its keys move there, in
    /// one migration (seed 002's "large team"): `floe migrate isolate TENANT`.
    Isolate {
        /// The tenant (a time topology's tenant part, else a partition key).
        tenant: String,
    },
    /// Time topologies: period `period`, which has ended, leaves shard
    /// memory (seed 002's archive window): writes to it are refused, the
    /// sink lands its last events, then its entities are evicted and reads
    /// are answered from the lake. `floe migrate archive-period 2024-03`.
    ArchivePeriod {
        /// The period's label.
        period: String,
    },
    /// Time topologies: a sealed or archived period takes writes again; an
    /// archived one's entities are replayed from the lake into its shard
    /// first. `floe migrate reactivate-period 2024-03`, or a write to the
    /// period under `migration.archived_writes = "reactivate"`.
    ReactivatePeriod {
        /// The period's label.
        period: String,
    },
    /// Time topologies: an archived period past its retention is dropped
    /// (seed 002's `drop_old_partitions`): its rows are erased from the lake
    /// (an overwrite commit, then the history that held them expired and
    /// deleted), and it stays refused for writes. `floe migrate
    /// drop-period 2022-03`, or `migration.retain_periods`.
    DropPeriod {
        /// The period's label.
        period: String,
    },
}

impl PlanKind {
    /// A short name for logs and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            PlanKind::AddShard {} => "add-shard",
            PlanKind::RemoveShard { .. } => "remove-shard",
            PlanKind::Rebalance { .. } => "rebalance",
            PlanKind::Split { .. } => "split",
            PlanKind::Merge { .. } => "merge",
            PlanKind::Pin { .. } => "pin",
            PlanKind::MoveKeys { .. } => "move-keys",
            PlanKind::Unpin { .. } => "unpin",
            PlanKind::AddRange { .. } => "add-range",
            PlanKind::SplitRange { .. } => "split-range",
            PlanKind::MergeRanges { .. } => "merge-ranges",
            PlanKind::MoveRange { .. } => "move-range",
            PlanKind::AddPeriod { .. } => "add-period",
            PlanKind::MovePeriod { .. } => "move-period",
            PlanKind::Isolate { .. } => "isolate",
            PlanKind::ArchivePeriod { .. } => "archive-period",
            PlanKind::ReactivatePeriod { .. } => "reactivate-period",
            PlanKind::DropPeriod { .. } => "drop-period",
        }
    }
}

/// One known partition key that changes owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMove {
    /// The key.
    pub partition_key: String,
    /// Its hash.
    pub key_hash: u64,
    /// Its owner now.
    pub from: u32,
    /// Its owner after the cutover.
    pub to: u32,
    /// Entities under it.
    pub entities: u64,
    /// Events to replay.
    pub events: u64,
    /// Bytes of its current data.
    pub bytes: u64,
}

/// A migration plan (seed 004's `planAddShard` & co.).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationPlan {
    /// What changes.
    pub kind: PlanKind,
    /// The topology in force when the plan was made.
    pub from: Topology,
    /// The topology after the cutover (version `from.version + 1`).
    pub to: Topology,
    /// The known keys that change owner, by key.
    pub moves: Vec<KeyMove>,
    /// Known partition keys in all.
    pub keys_total: u64,
    /// Events to replay for the moving keys.
    pub estimated_events: u64,
    /// Bytes of the moving keys' current data.
    pub estimated_bytes: u64,
    /// Bytes of all keys' current data.
    pub total_bytes: u64,
    /// Rough duration at [`REPLAY_EVENTS_PER_SEC`].
    pub estimated_duration_ms: u64,
}

/// Replay speed assumed by estimates (events/s); `docs/benchmarks.md`
/// has the measured figure.
pub const REPLAY_EVENTS_PER_SEC: u64 = 500_000;

impl MigrationPlan {
    /// Destination of every moving known key (seed 004's `dataDestinations`).
    pub fn destinations(&self) -> BTreeMap<&str, u32> {
        self.moves
            .iter()
            .map(|m| (m.partition_key.as_str(), m.to))
            .collect()
    }

    /// Shards that exist only after the cutover.
    pub fn added_shards(&self) -> std::ops::Range<u32> {
        self.from.shard_count..self.to.shard_count.max(self.from.shard_count)
    }

    /// Shards that exist only before the cutover.
    pub fn removed_shards(&self) -> std::ops::Range<u32> {
        self.to.shard_count..self.from.shard_count.max(self.to.shard_count)
    }

    /// The routing predicate of this plan.
    pub fn movement(&self) -> Result<Movement> {
        Movement::new(self.from.clone(), self.to.clone())
    }

    /// The topology an archival persists first, with the period sealed
    /// (version `from + 1`; `to`, with it archived, is `from + 2`), or
    /// `None` for other plans and for a period sealed already (an archival
    /// that stopped before its end, finished by running it again).
    pub fn sealed_step(&self) -> Option<Topology> {
        let PlanKind::ArchivePeriod { period } = &self.kind else {
            return None;
        };
        crate::periods::sealed(&self.from, period)
    }

    /// The version `to` must have: one past `from`, two for an archival
    /// that seals first.
    pub fn target_version(&self) -> u64 {
        self.from.version + 1 + u64::from(self.sealed_step().is_some())
    }
}

/// The routing difference between two topologies: a key moves exactly when
/// the two route it to different shards.
#[derive(Debug, Clone)]
pub struct Movement {
    from: Router,
    to: Router,
}

impl Movement {
    /// The movement from one topology to the next.
    pub fn new(from: Topology, to: Topology) -> Result<Movement> {
        if from.hash != to.hash {
            return Err(Error::InvalidPlan(
                "the hash function of a deployment never changes".into(),
            ));
        }
        Ok(Movement {
            from: Router::new(from)?,
            to: Router::new(to)?,
        })
    }

    /// `(old owner, new owner)` of a key that moves, `None` for one that stays.
    #[inline]
    pub fn route(&self, partition_key: &str, key_hash: u64) -> Option<(u32, u32)> {
        let from = self.from.route(partition_key, key_hash);
        let to = self.to.route(partition_key, key_hash);
        (from != to).then_some((from, to))
    }

    /// Whether the key changes owner.
    #[inline]
    pub fn moves(&self, partition_key: &str, key_hash: u64) -> bool {
        self.route(partition_key, key_hash).is_some()
    }

    /// The router before the cutover.
    pub fn from(&self) -> &Router {
        &self.from
    }

    /// The router after the cutover.
    pub fn to(&self) -> &Router {
        &self.to
    }
}

/// The loads of shards `0..shard_count` from the keys they hold.
pub fn shard_loads(shard_count: u32, keys: &[KeyLoad]) -> Vec<ShardLoad> {
    let mut loads: Vec<ShardLoad> = (0..shard_count)
        .map(|shard| ShardLoad {
            shard,
            ..ShardLoad::default()
        })
        .collect();
    for key in keys {
        if let Some(load) = loads.get_mut(key.shard as usize) {
            load.entities += key.entities;
            load.bytes += key.bytes;
        }
    }
    loads
}

/// Adds shard `shard_count`; the strategy decides which keys it takes (with
/// `jump_back`, `jump` and `ring` about `1/(n+1)` of them, all to the new
/// shard).
pub fn plan_add_shard(topology: &Topology, keys: &[KeyLoad]) -> Result<MigrationPlan> {
    no_ranges(topology, "add a shard")?;
    let to = topology.with_shard_count(topology.shard_count + 1)?;
    finish(PlanKind::AddShard {}, topology, to, keys)
}

/// Splits `shard`: a new shard takes about half of its bytes (largest keys
/// first), pinned by overrides, and the keys of other shards that the larger
/// shard count would move are pinned where they are, so nothing else moves.
pub fn plan_split(topology: &Topology, keys: &[KeyLoad], shard: u32) -> Result<MigrationPlan> {
    no_ranges(topology, "split a shard")?;
    check_shard(topology, shard)?;
    let new_shard = topology.shard_count;
    let mut to = topology.clone();
    to.shard_count += 1;
    let (before, grown) = (Router::new(topology.clone())?, Router::new(to.clone())?);
    for key in keys {
        let now = before.route(&key.partition_key, key.key_hash);
        if grown.route(&key.partition_key, key.key_hash) != now {
            to.overrides.insert(key.partition_key.clone(), now);
        }
    }
    let mut mine: Vec<&KeyLoad> = keys.iter().filter(|k| k.shard == shard).collect();
    if mine.len() < 2 {
        return Err(Error::InvalidPlan(format!(
            "shard {shard} holds {} partition key(s): nothing to split",
            mine.len()
        )));
    }
    let weight = |k: &KeyLoad| k.bytes.max(k.entities);
    mine.sort_by(|a, b| {
        weight(b)
            .cmp(&weight(a))
            .then(a.partition_key.cmp(&b.partition_key))
    });
    let half = mine.iter().map(|k| weight(k)).sum::<u64>() / 2;
    let mut moved = 0;
    for key in &mine[..mine.len() - 1] {
        if moved >= half {
            break;
        }
        to.overrides.insert(key.partition_key.clone(), new_shard);
        moved += weight(key);
    }
    let to = next(topology, to)?;
    finish(PlanKind::Split { shard }, topology, to, keys)
}

/// Moves keys from hot shards to cold ones (pinned by overrides) until the
/// most loaded shard is within `threshold` of the mean, or no single key
/// move helps any more. Greedy: the largest key of the hottest shard that
/// weighs at most half the gap to the coldest shard goes there.
pub fn plan_rebalance(
    topology: &Topology,
    keys: &[KeyLoad],
    threshold: f64,
) -> Result<MigrationPlan> {
    check_threshold(threshold)?;
    let loads = shard_loads(topology.shard_count, keys);
    let weigh = measure(&loads);
    let key_weight = |k: &KeyLoad| {
        weigh(&ShardLoad {
            shard: k.shard,
            entities: k.entities,
            bytes: k.bytes,
        })
    };
    let mut load: Vec<u64> = loads.iter().map(&weigh).collect();
    let mean = load.iter().sum::<u64>() as f64 / load.len().max(1) as f64;
    let mut by_shard: Vec<Vec<&KeyLoad>> = vec![Vec::new(); load.len()];
    for key in keys {
        if let Some(list) = by_shard.get_mut(key.shard as usize) {
            list.push(key);
        }
    }
    for list in &mut by_shard {
        list.sort_by(|a, b| {
            key_weight(a)
                .cmp(&key_weight(b))
                .then(b.partition_key.cmp(&a.partition_key))
        });
    }
    let mut to = topology.clone();
    let mut pinned = HashSet::new();
    // Each round moves one key; a key moves at most once.
    for _ in 0..keys.len() {
        let hot = (0..load.len())
            .max_by_key(|&s| (load[s], std::cmp::Reverse(s)))
            .unwrap_or(0);
        let cold = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        if hot == cold || (load[hot] as f64) <= mean * (1.0 + threshold) {
            break;
        }
        // The largest key that narrows the gap without overshooting it
        // (weight at most half the gap), so shards converge, never swap.
        let gap = load[hot] - load[cold];
        let Some(index) = by_shard[hot].iter().rposition(|k| {
            key_weight(k) > 0 && key_weight(k) * 2 <= gap && !pinned.contains(&k.partition_key)
        }) else {
            break;
        };
        let key = by_shard[hot].remove(index);
        let w = key_weight(key);
        load[hot] -= w;
        load[cold] += w;
        pinned.insert(key.partition_key.clone());
        to.overrides.insert(key.partition_key.clone(), cold as u32);
    }
    let analysis = analyze_balance(&loads, threshold);
    if to.overrides == topology.overrides {
        return Err(Error::InvalidPlan(if analysis.is_balanced {
            format!(
                "the shards are balanced (imbalance {:.1}% <= {:.1}%): nothing to move",
                analysis.imbalance_ratio * 100.0,
                threshold * 100.0
            )
        } else {
            "no single key move lowers the most loaded shard (one key dominates it: split the key's entities instead)".into()
        }));
    }
    let to = next(topology, to)?;
    finish(PlanKind::Rebalance { threshold }, topology, to, keys)
}

/// Pins each key of `moves` to its shard by an override (replacing an
/// earlier override of the key). Works on every strategy, ranges too:
/// overrides are read before the strategy. Only the listed keys move.
pub fn plan_move_keys(
    topology: &Topology,
    keys: &[KeyLoad],
    kind: PlanKind,
    moves: &BTreeMap<String, u32>,
) -> Result<MigrationPlan> {
    if moves.is_empty() {
        return Err(Error::InvalidPlan("no partition keys to move".into()));
    }
    let mut to = topology.clone();
    for (key, &shard) in moves {
        if key.is_empty() {
            return Err(Error::InvalidPlan(
                "an empty partition key cannot be pinned".into(),
            ));
        }
        check_shard(topology, shard)?;
        to.overrides.insert(key.clone(), shard);
    }
    if to.overrides == topology.overrides {
        return Err(Error::InvalidPlan(
            "every key is already pinned to that shard: nothing to change".into(),
        ));
    }
    let to = next(topology, to)?;
    finish(kind, topology, to, keys)
}

/// Drops the overrides of `unpin`; those keys follow the strategy again.
pub fn plan_unpin(
    topology: &Topology,
    keys: &[KeyLoad],
    unpin: &[String],
) -> Result<MigrationPlan> {
    if unpin.is_empty() {
        return Err(Error::InvalidPlan("no partition keys to unpin".into()));
    }
    let mut to = topology.clone();
    for key in unpin {
        if to.overrides.remove(key).is_none() {
            return Err(Error::InvalidPlan(format!(
                "partition key {key:?} has no override to drop"
            )));
        }
    }
    let to = next(topology, to)?;
    finish(
        PlanKind::Unpin {
            keys: unpin.to_vec(),
        },
        topology,
        to,
        keys,
    )
}

/// Errors and warnings about a plan (seed 004's `validatePlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// Reasons the plan cannot run.
    pub errors: Vec<String>,
    /// Things worth knowing before it runs.
    pub warnings: Vec<String>,
}

impl Validation {
    /// Whether the plan can run.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks `plan` against the topology in force now.
pub fn validate(plan: &MigrationPlan, current: &Topology) -> Validation {
    let mut v = Validation::default();
    if plan.from != *current {
        v.errors.push(format!(
            "the plan was made for topology version {} but version {} is in force: plan again",
            plan.from.version, current.version
        ));
    }
    if plan.to.version != plan.target_version() {
        v.errors.push(format!(
            "the target topology must be version {}, not {}",
            plan.target_version(),
            plan.to.version
        ));
    }
    if let Err(e) = plan.to.validate() {
        v.errors
            .push(format!("the target topology is invalid: {e}"));
    }
    if plan.to.hash != plan.from.hash {
        v.errors
            .push("the hash function of a deployment never changes".into());
    }
    if let Ok(movement) = plan.movement()
        && let Some(m) = plan
            .moves
            .iter()
            .find(|m| movement.route(&m.partition_key, m.key_hash) != Some((m.from, m.to)))
    {
        v.errors.push(format!(
            "key {:?} is listed as moving {} -> {} but the topologies route it otherwise",
            m.partition_key, m.from, m.to
        ));
    }
    if plan.moves.is_empty()
        && !matches!(
            plan.kind,
            PlanKind::ArchivePeriod { .. }
                | PlanKind::ReactivatePeriod { .. }
                | PlanKind::DropPeriod { .. }
        )
    {
        v.warnings
            .push("no known key changes owner: only the topology changes".into());
    }
    if plan.keys_total > 0 && plan.moves.len() as f64 > 0.5 * plan.keys_total as f64 {
        v.warnings.push(format!(
            "{} of {} keys move ({:.0}%): the strategy does not move keys minimally (modulo?)",
            plan.moves.len(),
            plan.keys_total,
            100.0 * plan.moves.len() as f64 / plan.keys_total as f64
        ));
    }
    if plan.to.overrides.len() > 10_000 {
        v.warnings.push(format!(
            "the target topology pins {} keys by override: every router holds them",
            plan.to.overrides.len()
        ));
    }
    let leaving = match plan.kind {
        PlanKind::RemoveShard { shard } => Some(shard),
        PlanKind::Merge { from, .. } => Some(from),
        _ => None,
    };
    for shard in plan.removed_shards() {
        v.warnings.push(match leaving {
            Some(leaving) if leaving != shard => format!(
                "shard {leaving} leaves; shard {shard} takes its id (its keys move there, pinned by overrides)"
            ),
            _ => format!("shard {shard} leaves; its keys are copied to the remaining shards"),
        });
    }
    if plan.estimated_duration_ms > 60_000 {
        v.warnings.push(format!(
            "estimated {:.0} s of replay: raise the timeout above it",
            plan.estimated_duration_ms as f64 / 1000.0
        ));
    }
    v
}

pub(crate) fn no_ranges(topology: &Topology, what: &str) -> Result<()> {
    if matches!(topology.strategy, Strategy::Range { .. }) {
        return Err(Error::InvalidPlan(format!(
            "cannot {what} of a range topology: ranges name their shards (use add-range, split-range, merge-ranges or move-range)"
        )));
    }
    if matches!(topology.strategy, Strategy::Time { .. }) {
        return Err(Error::InvalidPlan(format!(
            "cannot {what} of a time topology: periods name their shards (use add-period, move-period or isolate)"
        )));
    }
    Ok(())
}

/// [`Error::UnknownShard`] unless `shard` is one of the topology's.
pub(crate) fn check_shard(topology: &Topology, shard: u32) -> Result<()> {
    if shard >= topology.shard_count {
        return Err(Error::UnknownShard {
            shard,
            shard_count: topology.shard_count,
        });
    }
    Ok(())
}

/// `to` as the version after `from`, validated.
pub(crate) fn next(from: &Topology, mut to: Topology) -> Result<Topology> {
    to.version = from
        .version
        .checked_add(1)
        .ok_or_else(|| Error::InvalidPlan("topology version overflow".into()))?;
    to.validate()?;
    Ok(to)
}

pub(crate) fn finish(
    kind: PlanKind,
    from: &Topology,
    to: Topology,
    keys: &[KeyLoad],
) -> Result<MigrationPlan> {
    let movement = Movement::new(from.clone(), to.clone())?;
    let mut moves: Vec<KeyMove> = keys
        .iter()
        .filter_map(|k| {
            let (from, to) = movement.route(&k.partition_key, k.key_hash)?;
            Some(KeyMove {
                partition_key: k.partition_key.clone(),
                key_hash: k.key_hash,
                from,
                to,
                entities: k.entities,
                events: k.events,
                bytes: k.bytes,
            })
        })
        .collect();
    moves.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    let estimated_events: u64 = moves.iter().map(|m| m.events).sum();
    Ok(MigrationPlan {
        kind,
        from: from.clone(),
        to,
        estimated_bytes: moves.iter().map(|m| m.bytes).sum(),
        total_bytes: keys.iter().map(|k| k.bytes).sum(),
        keys_total: keys.len() as u64,
        estimated_duration_ms: 200 + estimated_events * 1000 / REPLAY_EVENTS_PER_SEC,
        estimated_events,
        moves,
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
