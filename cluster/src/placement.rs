//! Placement: which live node owns which shard. Pure and synchronous: the elected
//! controller calls it with what it read from etcd and writes the difference as grants.
//!
//! The result is
//! - **balanced**: node shard counts differ by at most one;
//! - **sticky**: a shard stays on its current owner whenever balance allows, and the
//!   number of shards that move is the smallest any balanced assignment allows (a joining
//!   node takes only its share; a leaving node's shards spread over the survivors and
//!   nothing else moves);
//! - **deterministic**: a function of its inputs alone, so a new leader recomputes the
//!   same answer from the same state.

use std::collections::{BTreeMap, BTreeSet};

use crate::ShardId;

/// Shard -> owning node id.
pub type Assignment = BTreeMap<ShardId, String>;

/// Places `shards` on `nodes`, keeping as much of `current` as balance allows.
///
/// Entries of `current` for shards not in `shards` or for nodes not in `nodes` are
/// ignored. With no node, nothing is placed.
///
/// ```
/// use std::collections::BTreeSet;
/// use floe_cluster::{Assignment, place};
///
/// let two: BTreeSet<String> = ["a".into(), "b".into()].into();
/// let first = place(0..4, &two, &Assignment::new());
/// let three: BTreeSet<String> = ["a".into(), "b".into(), "c".into()].into();
/// let next = place(0..4, &three, &first);
/// // The joining node takes one shard; the other three stay where they were.
/// assert_eq!(next.values().filter(|n| *n == "c").count(), 1);
/// assert_eq!(next.iter().filter(|(s, n)| first[s] != **n).count(), 1);
/// ```
pub fn place(
    shards: impl IntoIterator<Item = ShardId>,
    nodes: &BTreeSet<String>,
    current: &Assignment,
) -> Assignment {
    let shards: BTreeSet<ShardId> = shards.into_iter().collect();
    if nodes.is_empty() {
        return Assignment::new();
    }
    let (base, extra) = (shards.len() / nodes.len(), shards.len() % nodes.len());

    // What each live node keeps before rebalancing, in shard order.
    let mut kept: BTreeMap<&str, Vec<ShardId>> =
        nodes.iter().map(|n| (n.as_str(), Vec::new())).collect();
    let mut pool: Vec<ShardId> = Vec::new();
    for &shard in &shards {
        match current.get(&shard).and_then(|n| kept.get_mut(n.as_str())) {
            Some(list) => list.push(shard),
            None => pool.push(shard),
        }
    }

    // `extra` nodes may hold base + 1. Giving that room to the nodes that hold the most
    // already means the fewest shards have to leave; ties go to the smaller node id.
    let mut by_load: Vec<&str> = kept.keys().copied().collect();
    by_load.sort_by(|a, b| kept[b].len().cmp(&kept[a].len()).then(a.cmp(b)));
    let capacity: BTreeMap<&str, usize> = by_load
        .iter()
        .enumerate()
        .map(|(rank, &n)| (n, base + usize::from(rank < extra)))
        .collect();

    // Over-full nodes give up their highest shards.
    for (node, list) in kept.iter_mut() {
        let cap = capacity[node];
        if list.len() > cap {
            pool.extend(list.drain(cap..));
        }
    }
    pool.sort_unstable();

    // Each free shard goes to the node with the most room left (ties: smaller id), so a
    // leaving node's shards spread over all survivors.
    let mut result = Assignment::new();
    for (node, list) in &kept {
        result.extend(list.iter().map(|&s| (s, (*node).to_owned())));
    }
    let mut room: BTreeMap<&str, usize> = kept
        .iter()
        .map(|(n, list)| (*n, capacity[n] - list.len()))
        .collect();
    for shard in pool {
        let (&node, _) = room
            .iter()
            .max_by(|(a, ra), (b, rb)| ra.cmp(rb).then(b.cmp(a)))
            .expect("nodes is not empty");
        *room.get_mut(node).expect("node has room") -= 1;
        result.insert(shard, node.to_owned());
    }
    result
}

/// The shards whose owner differs between `from` and `to` (including shards only in `to`).
pub fn moves(from: &Assignment, to: &Assignment) -> BTreeSet<ShardId> {
    to.iter()
        .filter(|(s, n)| from.get(s) != Some(n))
        .map(|(s, _)| *s)
        .collect()
}

/// The warm standby of every shard: the node the shard goes to if its owner leaves and
/// nothing else changes, which is what [`place`] answers with that owner gone. A shard
/// whose owner is not in `nodes` (it just left: its grant has not moved yet) has the node
/// [`place`] gives it now, so a standby stays one until the grant arrives. A node keeps
/// its standby shards warm (read from the lake and following the pipeline), so a
/// failover needs only the last of the tail, not a restore. A shard whose owner is the
/// only node has none.
///
/// ```
/// use std::collections::BTreeSet;
/// use floe_cluster::{Assignment, place, standbys};
///
/// let nodes: BTreeSet<String> = ["a".into(), "b".into(), "c".into()].into();
/// let owners = place(0..6, &nodes, &Assignment::new());
/// let standby = standbys(0..6, &nodes, &owners);
/// let mut without_a = nodes.clone();
/// without_a.remove("a");
/// let after = place(0..6, &without_a, &owners);
/// for (shard, owner) in &owners {
///     assert_ne!(&standby[shard], owner);
///     if owner == "a" {
///         assert_eq!(standby[shard], after[shard]);
///     }
/// }
/// ```
pub fn standbys(
    shards: impl IntoIterator<Item = ShardId>,
    nodes: &BTreeSet<String>,
    current: &Assignment,
) -> Assignment {
    let shards: BTreeSet<ShardId> = shards.into_iter().collect();
    let mut result = Assignment::new();
    let orphans: Vec<ShardId> = shards
        .iter()
        .copied()
        .filter(|s| !current.get(s).is_some_and(|owner| nodes.contains(owner)))
        .collect();
    if !orphans.is_empty() {
        let now = place(shards.iter().copied(), nodes, current);
        for shard in orphans {
            if let Some(node) = now.get(&shard) {
                result.insert(shard, node.clone());
            }
        }
    }
    for owner in nodes {
        let owned: Vec<ShardId> = shards
            .iter()
            .copied()
            .filter(|s| current.get(s) == Some(owner))
            .collect();
        if owned.is_empty() {
            continue;
        }
        let mut survivors = nodes.clone();
        survivors.remove(owner);
        let after = place(shards.iter().copied(), &survivors, current);
        for shard in owned {
            if let Some(node) = after.get(&shard) {
                result.insert(shard, node.clone());
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn nodes(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn counts(a: &Assignment, nodes: &BTreeSet<String>) -> Vec<usize> {
        nodes
            .iter()
            .map(|n| a.values().filter(|m| *m == n).count())
            .collect()
    }

    #[test]
    fn spreads_a_fresh_cluster_evenly() {
        let n = nodes(&["a", "b", "c"]);
        let a = place(0..8, &n, &Assignment::new());
        assert_eq!(a.len(), 8);
        assert_eq!(counts(&a, &n), vec![3, 3, 2]);
        assert_eq!(place(0..8, &nodes(&[]), &a), Assignment::new());
    }

    #[test]
    fn three_nodes_each_stand_by_for_one_shard_of_each_other_node() {
        let n = nodes(&["a", "b", "c"]);
        let owners = place(0..6, &n, &Assignment::new());
        let standby = standbys(0..6, &n, &owners);
        assert_eq!(standby.len(), 6);
        for node in &n {
            let covered: BTreeSet<&String> = standby
                .iter()
                .filter(|(_, s)| *s == node)
                .map(|(shard, _)| &owners[shard])
                .collect();
            assert_eq!(covered.len(), 2, "{node} stands by for both other nodes");
            assert!(!covered.contains(node));
        }
        let alone = nodes(&["a"]);
        let owners = place(0..6, &alone, &Assignment::new());
        assert_eq!(standbys(0..6, &alone, &owners), Assignment::new());
    }

    #[test]
    fn a_leaving_node_spreads_and_nothing_else_moves() {
        let n4 = nodes(&["a", "b", "c", "d"]);
        let before = place(0..12, &n4, &Assignment::new());
        let n3 = nodes(&["a", "b", "c"]);
        let after = place(0..12, &n3, &before);
        let moved = moves(&before, &after);
        assert!(moved.iter().all(|s| before[s] == "d"));
        assert_eq!(moved.len(), 3);
        assert_eq!(counts(&after, &n3), vec![4, 4, 4]);
    }

    /// Any assignment of `shards` over some (possibly dead) owners.
    fn scenario() -> impl Strategy<Value = (u32, BTreeSet<String>, Assignment)> {
        (0u32..64, prop::collection::btree_set(0u8..8, 0..7)).prop_flat_map(|(count, live)| {
            let live: BTreeSet<String> = live.into_iter().map(|i| format!("n{i}")).collect();
            let owners = prop::collection::vec(prop::option::of(0u8..8), count as usize);
            (Just(count), Just(live), owners).prop_map(|(count, live, owners)| {
                let current = owners
                    .into_iter()
                    .enumerate()
                    .filter_map(|(s, o)| o.map(|o| (s as ShardId, format!("n{o}"))))
                    .collect();
                (count, live, current)
            })
        })
    }

    proptest! {
        #[test]
        fn balanced_complete_and_only_on_live_nodes((count, live, current) in scenario()) {
            let a = place(0..count, &live, &current);
            if live.is_empty() {
                prop_assert!(a.is_empty());
            } else {
                prop_assert_eq!(a.len(), count as usize);
                prop_assert!(a.values().all(|n| live.contains(n)));
                let c = counts(&a, &live);
                prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
            }
        }

        #[test]
        fn deterministic_and_stable((count, live, current) in scenario()) {
            let a = place(0..count, &live, &current);
            prop_assert_eq!(&a, &place(0..count, &live, &current));
            // Shard order of the input does not matter.
            prop_assert_eq!(&a, &place((0..count).rev(), &live, &current));
            // A balanced assignment is a fixed point: nothing moves without a reason.
            prop_assert_eq!(&place(0..count, &live, &a), &a);
        }

        #[test]
        fn moves_the_fewest_shards_balance_allows((count, live, current) in scenario()) {
            prop_assume!(!live.is_empty());
            let a = place(0..count, &live, &current);
            let (base, extra) = (count as usize / live.len(), count as usize % live.len());
            // Shards each live node holds now; a balanced result leaves each node at most
            // base + 1, and only `extra` nodes at base + 1.
            let held: Vec<usize> = live.iter()
                .map(|n| current.iter().filter(|(s, m)| **s < count && *m == n).count())
                .collect();
            let over_base: usize = held.iter().map(|h| h.saturating_sub(base)).sum();
            let may_keep_one_more = held.iter().filter(|h| **h > base).count().min(extra);
            let lower_bound = over_base - may_keep_one_more;
            let moved_from_live = a.iter()
                .filter(|(s, n)| current.get(s).is_some_and(|o| live.contains(o) && o != *n))
                .count();
            prop_assert_eq!(moved_from_live, lower_bound);
        }

        #[test]
        fn a_standby_is_where_the_shard_goes_when_its_owner_leaves((count, live, current) in scenario()) {
            let owners = place(0..count, &live, &current);
            let standby = standbys(0..count, &live, &owners);
            for (shard, owner) in &owners {
                let mut survivors = live.clone();
                survivors.remove(owner);
                match standby.get(shard) {
                    None => prop_assert!(survivors.is_empty()),
                    Some(node) => {
                        prop_assert_ne!(node, owner);
                        prop_assert!(survivors.contains(node));
                        prop_assert_eq!(node, &place(0..count, &survivors, &owners)[shard]);
                    }
                }
            }
            prop_assert_eq!(&standby, &standbys(0..count, &live, &owners));
            // A shard whose owner is gone has the node placement gives it now.
            let raw = standbys(0..count, &live, &current);
            let now = place(0..count, &live, &current);
            for shard in 0..count {
                if !current.get(&shard).is_some_and(|o| live.contains(o)) {
                    prop_assert_eq!(raw.get(&shard), now.get(&shard));
                }
            }
        }

        #[test]
        fn a_joining_node_takes_only_its_share(count in 0u32..64, n in 1usize..7) {
            let before_nodes: BTreeSet<String> = (0..n).map(|i| format!("n{i}")).collect();
            let before = place(0..count, &before_nodes, &Assignment::new());
            let mut after_nodes = before_nodes.clone();
            after_nodes.insert("new".into());
            let after = place(0..count, &after_nodes, &before);
            let moved = moves(&before, &after);
            prop_assert!(moved.iter().all(|s| after[s] == "new"));
            let share = count as usize / (n + 1);
            prop_assert!(moved.len() == share || moved.len() == share + 1);
        }
    }
}
