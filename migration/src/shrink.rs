//! Plans that take a shard out: removing any shard, merging any two.
//!
//! Shard ids stay `0..n` (workers, placement and metrics are indexed by
//! them), so when a shard other than the highest leaves, the highest takes
//! its id: its keys are pinned there by overrides and its worker leaves.
//! Only the leaving shard's keys and the highest shard's keys move; the
//! strategy over `n - 1` shards routes every key that has no history yet,
//! and the live migration's routing predicate covers keys first written
//! while it runs. On minimal-movement strategies no other key moves;
//! `modulo` moves almost everything, as it does for every shard-count
//! change.

use std::collections::HashMap;

use floe_engine::{Router, Topology};

use crate::balance::measure;
use crate::error::{Error, Result};
use crate::plan::{KeyLoad, MigrationPlan, PlanKind, finish, next, no_ranges, shard_loads};

/// Removes `shard` (any one). Its known keys go to the least loaded
/// remaining shards, largest first; when it is the highest, they go where
/// the strategy over `n - 1` shards puts them instead (no override needed).
/// Overrides that pinned keys to it are dropped.
pub fn plan_remove_shard(
    topology: &Topology,
    keys: &[KeyLoad],
    shard: u32,
) -> Result<MigrationPlan> {
    no_ranges(topology, "remove a shard")?;
    check_leaving(topology, shard)?;
    let last = topology.shard_count - 1;
    let mut dest: HashMap<&str, u32> = HashMap::new();
    if shard != last {
        let loads = shard_loads(topology.shard_count, keys);
        let weigh = measure(&loads);
        let mut load: Vec<u64> = loads.iter().map(&weigh).collect();
        let weight = |k: &KeyLoad| {
            weigh(&crate::balance::ShardLoad {
                shard: k.shard,
                entities: k.entities,
                bytes: k.bytes,
            })
        };
        let mut leaving: Vec<&KeyLoad> = keys.iter().filter(|k| k.shard == shard).collect();
        leaving.sort_by(|a, b| {
            weight(b)
                .cmp(&weight(a))
                .then(a.partition_key.cmp(&b.partition_key))
        });
        for key in leaving {
            // The least loaded survivor, lowest id first on a tie.
            let target = (0..topology.shard_count)
                .filter(|&s| s != shard)
                .min_by_key(|&s| (load[s as usize], s))
                .expect("check_leaving: at least two shards");
            load[target as usize] += weight(key);
            dest.insert(key.partition_key.as_str(), target);
        }
    }
    // The highest shard's keys take the freed id (unless it is the one
    // leaving); every other key follows the strategy.
    let leaving_keys = |k: &KeyLoad| match k.shard {
        s if s == shard => dest.get(k.partition_key.as_str()).copied(),
        s if s == last => Some(last),
        _ => None,
    };
    shrink(
        topology,
        keys,
        PlanKind::RemoveShard { shard },
        shard,
        leaving_keys,
        |s| (s != shard).then_some(s),
    )
}

/// Merges `from` into `into` (any two shards): every known key of `from`
/// is pinned to `into`, and `from` leaves. When `into` is the highest shard
/// the merged keys take `from`'s id instead, so `from`'s keys stay put and
/// only the highest shard's keys move.
pub fn plan_merge(
    topology: &Topology,
    keys: &[KeyLoad],
    from: u32,
    into: u32,
) -> Result<MigrationPlan> {
    no_ranges(topology, "merge shards")?;
    check_leaving(topology, from)?;
    crate::plan::check_shard(topology, into)?;
    if from == into {
        return Err(Error::MergeWithItself { shard: from });
    }
    let last = topology.shard_count - 1;
    let merged = |s: u32| if s == from { into } else { s };
    shrink(
        topology,
        keys,
        PlanKind::Merge { from, into },
        from,
        // `into`'s own keys are named too: a strategy that moves keys when
        // the shard count falls (modulo) would scatter them otherwise.
        |k| (k.shard == from || k.shard == into || k.shard == last).then(|| merged(k.shard)),
        |s| Some(merged(s)),
    )
}

/// The plan in which `leaving` leaves: each known key goes to `dest(key)`
/// (an old shard id other than `leaving`; `None`: wherever the strategy over
/// `n - 1` shards puts it), each existing override to `remap(shard)`
/// (`None` drops it), and then the highest shard is renamed `leaving`.
/// Known keys the shrunk topology would route elsewhere are pinned.
fn shrink(
    topology: &Topology,
    keys: &[KeyLoad],
    kind: PlanKind,
    leaving: u32,
    dest: impl Fn(&KeyLoad) -> Option<u32>,
    remap: impl Fn(u32) -> Option<u32>,
) -> Result<MigrationPlan> {
    let last = topology.shard_count - 1;
    let rename = |s: u32| if s == last { leaving } else { s };
    let mut to = topology.clone();
    to.shard_count = last;
    to.overrides = topology
        .overrides
        .iter()
        .filter_map(|(key, &s)| Some((key.clone(), rename(remap(s)?))))
        .collect();
    let router = Router::new(next(topology, to.clone())?)?;
    for key in keys {
        let Some(want) = dest(key).map(rename) else {
            continue;
        };
        if router.route(&key.partition_key, key.key_hash) != want {
            to.overrides.insert(key.partition_key.clone(), want);
        }
    }
    let to = next(topology, to)?;
    finish(kind, topology, to, keys)
}

/// A shard can leave when it exists and is not the only one.
fn check_leaving(topology: &Topology, shard: u32) -> Result<()> {
    crate::plan::check_shard(topology, shard)?;
    if topology.shard_count <= 1 {
        return Err(Error::LastShard { shard });
    }
    Ok(())
}
