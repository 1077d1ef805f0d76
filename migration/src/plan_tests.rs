use super::*;
use crate::shrink::{plan_merge, plan_remove_shard};
use floe_engine::HashFunction;
use std::collections::BTreeSet;

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;

fn keys(topology: &Topology, n: usize, bytes: impl Fn(usize) -> u64) -> Vec<KeyLoad> {
    let router = Router::new(topology.clone()).unwrap();
    (0..n)
        .map(|i| {
            let key = format!("tenant-{i}");
            let key_hash = router.key_hash(&key);
            KeyLoad {
                shard: router.route(&key, key_hash),
                partition_key: key,
                key_hash,
                entities: 2,
                events: 5,
                bytes: bytes(i),
            }
        })
        .collect()
}

fn changed(from: &Topology, to: &Topology, keys: &[KeyLoad]) -> Vec<String> {
    let (a, b) = (
        Router::new(from.clone()).unwrap(),
        Router::new(to.clone()).unwrap(),
    );
    let mut out: Vec<String> = keys
        .iter()
        .filter(|k| a.route(&k.partition_key, k.key_hash) != b.route(&k.partition_key, k.key_hash))
        .map(|k| k.partition_key.clone())
        .collect();
    out.sort();
    out
}

fn strategy() -> impl Gen<Value = Strategy> {
    prop_oneof![
        Just(Strategy::JumpBack),
        Just(Strategy::Jump),
        Just(Strategy::Modulo),
        (1u32..64).prop_map(|virtual_nodes| Strategy::Ring { virtual_nodes }),
    ]
}

proptest! {
    /// Adding a shard lists exactly the keys whose routing changed, each
    /// with its old and new owner, and the estimates add up.
    #[test]
    fn add_shard_moves_exactly_the_rerouted_keys(shards in 1u32..40, n in 0usize..400, s in strategy()) {
        let t = Topology::new(shards, HashFunction::Xxh3, s.clone()).unwrap();
        let keys = keys(&t, n, |i| i as u64 % 97);
        let plan = plan_add_shard(&t, &keys).unwrap();
        let listed: Vec<String> = plan.moves.iter().map(|m| m.partition_key.clone()).collect();
        prop_assert_eq!(&listed, &changed(&t, &plan.to, &keys));
        prop_assert_eq!(plan.to.shard_count, shards + 1);
        prop_assert_eq!(plan.to.version, t.version + 1);
        if s != Strategy::Modulo {
            // Minimal movement: every moving key goes to the new shard.
            prop_assert!(plan.moves.iter().all(|m| m.to == shards));
        }
        prop_assert_eq!(plan.estimated_events, plan.moves.len() as u64 * 5);
        prop_assert!(validate(&plan, &t).is_valid());
    }

    /// Removing the highest shard moves exactly its keys (minimal-movement
    /// strategies) and every moving key leaves it.
    #[test]
    fn remove_shard_moves_exactly_its_keys(shards in 2u32..40, n in 0usize..400, s in strategy()) {
        let t = Topology::new(shards, HashFunction::Xxh3, s.clone()).unwrap();
        let keys = keys(&t, n, |_| 10);
        let plan = plan_remove_shard(&t, &keys, shards - 1).unwrap();
        let listed: Vec<String> = plan.moves.iter().map(|m| m.partition_key.clone()).collect();
        prop_assert_eq!(&listed, &changed(&t, &plan.to, &keys));
        if s != Strategy::Modulo {
            let mut on_last: Vec<String> = keys.iter().filter(|k| k.shard == shards - 1).map(|k| k.partition_key.clone()).collect();
            on_last.sort();
            prop_assert_eq!(listed, on_last);
        }
        prop_assert!(plan.moves.iter().all(|m| m.to < shards - 1));
    }

    /// A rebalance moves keys off the most loaded shard and never makes the
    /// peak worse; split and merge move only the named shard's keys.
    #[test]
    fn rebalance_split_merge_move_only_what_they_name(shards in 2u32..12, n in 20usize..300, hot in 0u32..12) {
        let hot = hot % shards;
        let base = Topology::new(shards, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
        let mut t = base.clone();
        // Pin a third of the keys to `hot`.
        for i in (0..n).step_by(3) {
            t.overrides.insert(format!("tenant-{i}"), hot);
        }
        let keys = keys(&t, n, |i| 10 + (i as u64 % 7));
        match plan_rebalance(&t, &keys, 0.1) {
            Ok(plan) => {
                // The most loaded shard gives keys away, never receives.
                let before = shard_loads(shards, &keys);
                let peak_shard = before.iter().max_by_key(|l| (l.bytes, std::cmp::Reverse(l.shard))).unwrap().shard;
                prop_assert!(plan.moves.iter().any(|m| m.from == peak_shard));
                let mut after = keys.clone();
                for k in &mut after {
                    if let Some(m) = plan.moves.iter().find(|m| m.partition_key == k.partition_key) {
                        k.shard = m.to;
                    }
                }
                let peak = |l: &[ShardLoad]| l.iter().map(|s| s.bytes).max().unwrap_or(0);
                let after = shard_loads(shards, &after);
                prop_assert!(peak(&after) <= peak(&before));
                prop_assert!(after[peak_shard as usize].bytes < before[peak_shard as usize].bytes);
                prop_assert_eq!(plan.moves.len(), changed(&t, &plan.to, &keys).len());
            }
            Err(Error::InvalidPlan(_)) => {}
            Err(e) => prop_assert!(false, "{e}"),
        }
        if keys.iter().filter(|k| k.shard == hot).count() >= 2 {
            let split = plan_split(&t, &keys, hot).unwrap();
            prop_assert!(split.moves.iter().all(|m| m.from == hot && m.to == shards));
            prop_assert!(!split.moves.is_empty());
            prop_assert_eq!(split.moves.len(), changed(&t, &split.to, &keys).len());
        }
        let last = shards - 1;
        let into = (hot + 1) % last.max(1);
        let merge = plan_merge(&t, &keys, last, into).unwrap();
        prop_assert!(merge.moves.iter().all(|m| m.from == last && m.to == into));
        prop_assert_eq!(merge.moves.len(), keys.iter().filter(|k| k.shard == last).count());
    }
}

#[test]
fn invalid_requests_are_typed() {
    let t = Topology::new(4, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    let keys = keys(&t, 50, |_| 1);
    assert!(
        matches!(
            plan_merge(&t, &keys, 3, 3),
            Err(Error::MergeWithItself { shard: 3 })
        ),
        "merge with itself"
    );
    for threshold in [-1.0, f64::NAN] {
        assert!(
            matches!(
                plan_rebalance(&t, &keys, threshold),
                Err(Error::InvalidThreshold { .. })
            ),
            "rebalance with threshold {threshold}"
        );
    }
    for result in [
        plan_split(&t, &keys, 9),
        plan_remove_shard(&t, &keys, 4),
        plan_merge(&t, &keys, 4, 1),
        plan_merge(&t, &keys, 1, 4),
    ] {
        assert!(
            matches!(result, Err(Error::UnknownShard { shard_count: 4, .. })),
            "{result:?}"
        );
    }
    let one = Topology::new(1, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    let err = plan_remove_shard(&one, &[], 0).unwrap_err();
    assert!(matches!(err, Error::LastShard { shard: 0 }), "{err}");
    assert!(err.to_string().contains("last one"), "{err}");
    // Balanced: nothing to move.
    let err = plan_rebalance(&t, &keys, 10.0).unwrap_err();
    assert!(err.to_string().contains("balanced"), "{err}");
    // A stale plan is an error, a wasteful one a warning.
    let plan = plan_add_shard(&t, &keys).unwrap();
    let newer = t.with_override("x", 1).unwrap();
    let v = validate(&plan, &newer);
    assert!(!v.is_valid() && v.errors[0].contains("plan again"), "{v:?}");
    let modulo = Topology::new(4, HashFunction::Xxh3, Strategy::Modulo).unwrap();
    let mk = self::keys(&modulo, 200, |_| 1);
    let v = validate(&plan_add_shard(&modulo, &mk).unwrap(), &modulo);
    assert!(
        v.is_valid() && v.warnings.iter().any(|w| w.contains("minimally")),
        "{v:?}"
    );
    // A tampered plan is caught.
    let mut tampered = plan_add_shard(&t, &keys).unwrap();
    tampered.moves[0].to = 0;
    assert!(!validate(&tampered, &t).is_valid());
}

proptest! {
    /// Pinning a list of keys moves exactly the listed keys that were
    /// elsewhere, each to its chosen shard; every other key stays.
    #[test]
    fn key_list_moves_move_exactly_the_listed_keys(
        shards in 2u32..20,
        n in 1usize..200,
        picks in proptest::collection::btree_map(0usize..200, 0u32..20, 1..12),
        s in strategy(),
    ) {
        let t = Topology::new(shards, HashFunction::Xxh3, s).unwrap();
        let keys = keys(&t, n, |i| i as u64);
        let moves: BTreeMap<String, u32> = picks
            .iter()
            .map(|(&i, &shard)| (format!("tenant-{i}"), shard % shards))
            .collect();
        let kind = PlanKind::MoveKeys { moves: moves.clone() };
        let plan = plan_move_keys(&t, &keys, kind, &moves).unwrap();
        let router = Router::new(plan.to.clone()).unwrap();
        for k in &keys {
            let to = router.route(&k.partition_key, k.key_hash);
            match moves.get(&k.partition_key) {
                Some(&target) => prop_assert_eq!(to, target),
                None => prop_assert_eq!(to, k.shard),
            }
        }
        for m in &plan.moves {
            prop_assert!(moves.contains_key(&m.partition_key));
            prop_assert_eq!(m.to, moves[&m.partition_key]);
        }
        prop_assert_eq!(plan.to.version, t.version + 1);
    }
}

#[test]
fn pins_and_unpins_refuse_what_cannot_be_done() {
    let t = Topology::new(4, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    let keys = keys(&t, 20, |_| 1);
    let one = |key: &str, shard| BTreeMap::from([(key.to_string(), shard)]);
    let invalid = |r: Result<MigrationPlan>| match r {
        Err(Error::InvalidPlan(m)) => m,
        other => panic!("expected InvalidPlan, got {other:?}"),
    };
    let kind = PlanKind::MoveKeys {
        moves: BTreeMap::new(),
    };
    assert!(
        invalid(plan_move_keys(&t, &keys, kind.clone(), &BTreeMap::new()))
            .contains("no partition keys")
    );
    assert!(matches!(
        plan_move_keys(&t, &keys, kind.clone(), &one("tenant-1", 4)),
        Err(Error::UnknownShard {
            shard: 4,
            shard_count: 4
        })
    ));
    assert!(invalid(plan_move_keys(&t, &keys, kind.clone(), &one("", 1))).contains("empty"));
    let pinned = plan_move_keys(&t, &keys, kind.clone(), &one("tenant-1", 2))
        .unwrap()
        .to;
    assert_eq!(pinned.overrides.get("tenant-1"), Some(&2));
    assert!(
        invalid(plan_move_keys(&pinned, &keys, kind, &one("tenant-1", 2)))
            .contains("nothing to change")
    );
    assert!(invalid(plan_unpin(&pinned, &keys, &["tenant-9".into()])).contains("no override"));
    let unpinned = plan_unpin(&pinned, &keys, &["tenant-1".into()]).unwrap();
    assert!(unpinned.to.overrides.is_empty());
    assert_eq!(unpinned.to.version, pinned.version + 1);
    // Pins work on range topologies too: overrides come first.
    let ranges = Strategy::Range {
        key: floe_engine::RangeKey::default(),
        default_shard: 0,
        ranges: vec![floe_engine::RangeRule::strings(Some("a"), None, 1)],
    };
    let r = Topology::new(3, HashFunction::Xxh3, ranges).unwrap();
    let rkeys = keys_for(&r);
    let plan = plan_move_keys(
        &r,
        &rkeys,
        PlanKind::Pin {
            key: "tenant-3".into(),
            shard: 2,
        },
        &one("tenant-3", 2),
    )
    .unwrap();
    assert_eq!(plan.moves.len(), 1);
    assert_eq!((plan.moves[0].from, plan.moves[0].to), (1, 2));
}

fn keys_for(t: &Topology) -> Vec<KeyLoad> {
    keys(t, 10, |_| 1)
}

proptest! {
    /// Removing any shard: its keys leave it for the other shards (the
    /// highest takes its id), only its keys and the highest shard's move,
    /// every other key stays, and overrides pinning keys to it are gone.
    #[test]
    fn remove_any_shard_moves_only_it_and_the_highest(
        shards in 2u32..12,
        n in 0usize..300,
        leaving in 0u32..12,
        s in strategy(),
    ) {
        let leaving = leaving % shards;
        let last = shards - 1;
        let mut t = Topology::new(shards, HashFunction::Xxh3, s.clone()).unwrap();
        t.overrides.insert("pinned-to-leaving".into(), leaving);
        t.overrides.insert("pinned-to-last".into(), last);
        let keys = keys(&t, n, |i| 1 + i as u64 % 13);
        let plan = plan_remove_shard(&t, &keys, leaving).unwrap();
        prop_assert_eq!(plan.to.shard_count, last);
        prop_assert!(!plan.to.overrides.contains_key("pinned-to-leaving"));
        if leaving != last {
            prop_assert_eq!(plan.to.overrides.get("pinned-to-last"), Some(&leaving));
        }
        let router = Router::new(plan.to.clone()).unwrap();
        for k in &keys {
            let to = router.route(&k.partition_key, k.key_hash);
            if k.shard == last && leaving != last {
                // The highest shard's keys take the freed id, together.
                prop_assert_eq!(to, leaving);
            } else if k.shard != leaving && s != Strategy::Modulo {
                prop_assert_eq!(to, k.shard, "{} moved", &k.partition_key);
            }
        }
        // Modulo re-places every key by the smaller count, so only the
        // other strategies leave the balance to the greedy placement.
        if leaving != last && !keys.is_empty() && s != Strategy::Modulo {
            // Greedy placement: no shard ends up heavier than the heaviest
            // one it could have been given to plus one key.
            let mut after = vec![0u64; last as usize];
            for k in &keys {
                after[router.route(&k.partition_key, k.key_hash) as usize] += k.bytes;
            }
            let mut kept = vec![0u64; shards as usize];
            for k in keys.iter().filter(|k| k.shard != leaving) {
                kept[k.shard as usize] += k.bytes;
            }
            let heaviest_key = keys.iter().map(|k| k.bytes).max().unwrap_or(0);
            // LPT: at most the heaviest kept shard, or the mean plus one key.
            let total: u64 = keys.iter().map(|k| k.bytes).sum();
            let bound = kept.iter().max().copied().unwrap_or(0).max(total / u64::from(last) + heaviest_key);
            prop_assert!(after.iter().all(|&l| l <= bound), "{:?} > {}", after, bound);
        }
        let listed: Vec<String> = plan.moves.iter().map(|m| m.partition_key.clone()).collect();
        prop_assert_eq!(&listed, &changed(&t, &plan.to, &keys));
        prop_assert!(validate(&plan, &t).is_valid());
    }

    /// Merging any two shards puts the union of their keys on one shard
    /// and leaves every other key where it is.
    #[test]
    fn merge_any_two_shards_joins_exactly_them(
        shards in 2u32..12,
        n in 0usize..300,
        a in 0u32..12,
        b in 0u32..12,
        s in strategy(),
    ) {
        let (from, into) = (a % shards, b % shards);
        if from == into {
            return Ok(());
        }
        let last = shards - 1;
        let t = Topology::new(shards, HashFunction::Xxh3, s.clone()).unwrap();
        let keys = keys(&t, n, |_| 3);
        let plan = plan_merge(&t, &keys, from, into).unwrap();
        prop_assert_eq!(plan.to.shard_count, last);
        let router = Router::new(plan.to.clone()).unwrap();
        let merged: BTreeSet<u32> = keys
            .iter()
            .filter(|k| k.shard == from || k.shard == into)
            .map(|k| router.route(&k.partition_key, k.key_hash))
            .collect();
        prop_assert!(merged.len() <= 1, "{:?}", merged);
        for k in &keys {
            let to = router.route(&k.partition_key, k.key_hash);
            if k.shard == last && from != last && into != last {
                prop_assert_eq!(to, from);
            } else if k.shard != from && k.shard != into && s != Strategy::Modulo {
                prop_assert_eq!(to, k.shard);
            }
        }
        // The merged keys share no shard with anyone else.
        if let Some(&m) = merged.iter().next() {
            for k in keys.iter().filter(|k| k.shard != from && k.shard != into) {
                prop_assert!(router.route(&k.partition_key, k.key_hash) != m || s == Strategy::Modulo);
            }
        }
        prop_assert!(validate(&plan, &t).is_valid());
    }
}

#[test]
fn plan_kinds_refuse_fields_they_do_not_take() {
    let parse = |text: &str| serde_json::from_str::<PlanKind>(text);
    assert_eq!(
        parse(r#"{"kind":"add_shard"}"#).unwrap(),
        PlanKind::AddShard {}
    );
    assert_eq!(
        parse(r#"{"kind":"remove_shard","shard":3}"#).unwrap(),
        PlanKind::RemoveShard { shard: 3 }
    );
    for bad in [
        r#"{"kind":"add_shard","shard":3}"#,
        r#"{"kind":"remove_shard","shard":3,"into":1}"#,
        r#"{"kind":"merge","from":1,"into":2,"threshold":0.5}"#,
    ] {
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{bad}: {err}");
    }
}
