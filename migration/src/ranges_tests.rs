use super::*;
use floe_engine::{HashFunction, Router};
use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

/// Integer keys `0..n` step `step`, with their shard under `t`.
fn keys(t: &Topology, n: i64, step: i64) -> Vec<KeyLoad> {
    let router = Router::new(t.clone()).unwrap();
    (0..n)
        .map(|i| {
            let key = (i * step).to_string();
            let key_hash = router.key_hash(&key);
            KeyLoad {
                shard: router.route(&key, key_hash),
                partition_key: key,
                key_hash,
                entities: 1,
                events: 2,
                bytes: 10,
            }
        })
        .collect()
}

fn integer_ranges(bounds: &[i64], shard_count: u32, open_end: bool) -> Topology {
    let mut ranges: Vec<RangeRule> = bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| RangeRule::integers(Some(w[0]), Some(w[1]), i as u32 % shard_count))
        .collect();
    if open_end && let Some(&last) = bounds.last() {
        ranges.push(RangeRule::integers(Some(last), None, 0));
    }
    let strategy = Strategy::Range {
        key: RangeKey::Integer {
            separator: None,
            field: 0,
        },
        default_shard: 0,
        ranges,
    };
    Topology::new(shard_count, HashFunction::Xxh3, strategy).unwrap()
}

/// The keys whose owner changes from `from` to `to`, sorted.
fn changed(plan: &MigrationPlan, keys: &[KeyLoad]) -> Vec<String> {
    let (a, b) = (
        Router::new(plan.from.clone()).unwrap(),
        Router::new(plan.to.clone()).unwrap(),
    );
    let mut out: Vec<String> = keys
        .iter()
        .filter(|k| a.route(&k.partition_key, k.key_hash) != b.route(&k.partition_key, k.key_hash))
        .map(|k| k.partition_key.clone())
        .collect();
    out.sort();
    out
}

fn int(v: i64) -> RangeBound {
    RangeBound::Integer(v)
}

fn route(t: &Topology, key: i64) -> u32 {
    let r = Router::new(t.clone()).unwrap();
    let key = key.to_string();
    r.route(&key, r.key_hash(&key))
}

proptest! {
    /// A split sends exactly the keys of the split range at or above the
    /// split point to the new shard; every other key stays.
    #[test]
    fn split_moves_exactly_the_upper_part(
        bounds in proptest::collection::btree_set(0i64..1000, 2..8),
        shards in 1u32..5,
        pick in 0usize..8,
        offset in 1i64..50,
        open_end in proptest::bool::ANY,
    ) {
        let bounds: Vec<i64> = bounds.into_iter().collect();
        let t = integer_ranges(&bounds, shards, open_end);
        let keys = keys(&t, 600, 2);
        let i = pick % (bounds.len() - 1);
        let at = bounds[i] + offset;
        if at >= bounds[i + 1] {
            return Ok(());
        }
        let plan = plan_split_range(&t, &keys, int(at), None).unwrap();
        prop_assert_eq!(plan.to.shard_count, shards + 1);
        prop_assert_eq!(plan.to.version, t.version + 1);
        for k in &keys {
            let v: i64 = k.partition_key.parse().unwrap();
            let expect = if v >= at && v < bounds[i + 1] { shards } else { k.shard };
            prop_assert_eq!(route(&plan.to, v), expect, "key {}", v);
        }
        let listed: Vec<String> = plan.moves.iter().map(|m| m.partition_key.clone()).collect();
        prop_assert_eq!(listed, changed(&plan, &keys));
        prop_assert!(crate::plan::validate(&plan, &t).is_valid());
    }

    /// Split then merge at the same point routes every key as before (on
    /// the topology's shards; the new shard is left empty).
    #[test]
    fn merge_undoes_a_split(
        bounds in proptest::collection::btree_set(0i64..1000, 2..8),
        shards in 1u32..5,
        pick in 0usize..8,
        offset in 1i64..50,
    ) {
        let bounds: Vec<i64> = bounds.into_iter().collect();
        let t = integer_ranges(&bounds, shards, true);
        let keys = keys(&t, 600, 2);
        let i = pick % (bounds.len() - 1);
        let at = bounds[i] + offset;
        if at >= bounds[i + 1] {
            return Ok(());
        }
        let split = plan_split_range(&t, &keys, int(at), None).unwrap();
        let merge = plan_merge_ranges(&split.to, &keys, int(at), None).unwrap();
        for k in &keys {
            let v: i64 = k.partition_key.parse().unwrap();
            prop_assert_eq!(route(&merge.to, v), k.shard);
        }
    }

    /// A range added inside another or in uncovered space takes exactly
    /// the keys it covers; moving a range moves exactly its keys.
    #[test]
    fn add_and_move_take_exactly_the_covered_keys(
        bounds in proptest::collection::btree_set(0i64..1000, 2..8),
        shards in 1u32..5,
        lo in 0i64..1300,
        len in 1i64..200,
        target in 0u32..5,
    ) {
        let bounds: Vec<i64> = bounds.into_iter().collect();
        let t = integer_ranges(&bounds, shards, false);
        let keys = keys(&t, 700, 2);
        let hi = lo + len;
        match plan_add_range(&t, &keys, Some(int(lo)), Some(int(hi)), None) {
            Ok(plan) => {
                for k in &keys {
                    let v: i64 = k.partition_key.parse().unwrap();
                    let expect = if (lo..hi).contains(&v) { shards } else { k.shard };
                    prop_assert_eq!(route(&plan.to, v), expect, "key {}", v);
                }
                prop_assert_eq!(plan.moves.len(), changed(&plan, &keys).len());
            }
            Err(Error::RangeOverlap(_)) => {
                // It really crosses a range boundary.
                prop_assert!(bounds.iter().any(|&b| lo < b && b < hi)
                    || (lo < bounds[0] && hi > bounds[0]));
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
        let target = target % shards;
        let at = bounds[0];
        let owner = route(&t, at);
        match plan_move_range(&t, &keys, int(at), target) {
            Ok(plan) => {
                for k in &keys {
                    let v: i64 = k.partition_key.parse().unwrap();
                    let expect = if (bounds[0]..bounds[1]).contains(&v) { target } else { k.shard };
                    prop_assert_eq!(route(&plan.to, v), expect);
                }
            }
            Err(Error::InvalidPlan(m)) => prop_assert!(owner == target, "{}", m),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

#[test]
fn add_range_cuts_an_open_ended_range() {
    // Time windows: [0, 100) on 0, [100, ..) on 1; next window from 200.
    let t = integer_ranges(&[0, 100], 2, true);
    let keys = keys(&t, 150, 2);
    let plan = plan_add_range(&t, &keys, Some(int(200)), None, None).unwrap();
    let Strategy::Range { ranges, .. } = &plan.to.strategy else {
        panic!("not ranges");
    };
    assert_eq!(
        ranges,
        &vec![
            RangeRule::integers(Some(0), Some(100), 0),
            RangeRule::integers(Some(100), Some(200), 0),
            RangeRule::integers(Some(200), None, 2),
        ]
    );
    assert!(plan.moves.iter().all(|m| m.to == 2));
    assert_eq!(plan.moves.len(), 50); // keys 200..300 step 2
    // Bounds from the CLI arrive as text and are read as integers.
    let text = plan_add_range(&t, &keys, Some("200".into()), None, None).unwrap();
    assert_eq!(text.to, plan.to);
}

#[test]
fn bad_range_plans_are_typed_errors() {
    let t = integer_ranges(&[0, 100, 200], 2, false);
    let keys = keys(&t, 50, 5);
    // Overlapping: crosses the boundary at 100.
    let err = plan_add_range(&t, &keys, Some(int(50)), Some(int(150)), None).unwrap_err();
    assert!(matches!(err, Error::RangeOverlap(_)), "{err}");
    assert!(err.to_string().contains("overlaps"), "{err}");
    // Unbounded ends over existing ranges.
    let err = plan_add_range(&t, &keys, None, Some(int(10)), None).unwrap_err();
    assert!(matches!(err, Error::RangeOverlap(_)), "{err}");
    // Empty.
    let err = plan_add_range(&t, &keys, Some(int(5)), Some(int(5)), None).unwrap_err();
    assert!(matches!(err, Error::RangeBound(_)), "{err}");
    // A merge across a gap: [0, 100) and [150, 200) do not touch.
    let mut gap = integer_ranges(&[0, 100], 2, false);
    if let Strategy::Range { ranges, .. } = &mut gap.strategy {
        ranges.push(RangeRule::integers(Some(150), Some(200), 1));
    }
    gap.validate().unwrap();
    let err = plan_merge_ranges(&gap, &keys, int(100), None).unwrap_err();
    assert!(matches!(err, Error::RangeGap(_)), "{err}");
    assert!(err.to_string().contains("no range starts at 100"), "{err}");
    let err = plan_merge_ranges(&gap, &keys, int(150), None).unwrap_err();
    assert!(err.to_string().contains("no range ends at 150"), "{err}");
    // Split or move outside every range.
    for err in [
        plan_split_range(&gap, &keys, int(120), None).unwrap_err(),
        plan_move_range(&gap, &keys, int(120), 0).unwrap_err(),
        plan_split_range(&gap, &keys, int(-5), None).unwrap_err(),
    ] {
        assert!(matches!(err, Error::RangeGap(_)), "{err}");
    }
    // Split at a range's own start: nothing to split.
    let err = plan_split_range(&t, &keys, int(100), None).unwrap_err();
    assert!(matches!(err, Error::RangeBound(_)), "{err}");
    // Text that is no integer for an integer key.
    let err = plan_split_range(&t, &keys, "abc".into(), None).unwrap_err();
    assert!(matches!(err, Error::RangeBound(_)), "{err}");
    // Unknown shards.
    for err in [
        plan_move_range(&t, &keys, int(10), 7).unwrap_err(),
        plan_split_range(&t, &keys, int(10), Some(2)).unwrap_err(),
        plan_add_range(&t, &keys, Some(int(300)), None, Some(9)).unwrap_err(),
    ] {
        assert!(matches!(err, Error::UnknownShard { .. }), "{err}");
    }
    // Range plans on a hash topology, and hash plans on ranges.
    let hash = Topology::new(2, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    assert!(matches!(
        plan_split_range(&hash, &[], int(1), None),
        Err(Error::InvalidPlan(_))
    ));
    assert!(matches!(
        crate::plan::plan_add_shard(&t, &keys),
        Err(Error::InvalidPlan(_))
    ));
}

#[test]
fn string_ranges_split_and_merge() {
    let strategy = Strategy::Range {
        key: RangeKey::String {
            transform: floe_engine::KeyTransform::FirstCharUppercase,
        },
        default_shard: 0,
        ranges: vec![
            RangeRule::strings(Some("A"), Some("M"), 0),
            RangeRule::strings(Some("M"), None, 1),
        ],
    };
    let t = Topology::new(2, HashFunction::Xxh3, strategy).unwrap();
    let router = Router::new(t.clone()).unwrap();
    let keys: Vec<KeyLoad> = ["alice", "fred", "harry", "mike", "tom", "zoe"]
        .iter()
        .map(|k| KeyLoad {
            partition_key: (*k).into(),
            key_hash: router.key_hash(k),
            shard: router.route(k, router.key_hash(k)),
            entities: 1,
            events: 1,
            bytes: 1,
        })
        .collect();
    let split = plan_split_range(&t, &keys, "H".into(), None).unwrap();
    let moved: Vec<&str> = split
        .moves
        .iter()
        .map(|m| m.partition_key.as_str())
        .collect();
    assert_eq!(moved, ["harry"]);
    assert_eq!(split.moves[0].to, 2);
    let merged = plan_merge_ranges(&split.to, &keys, "M".into(), Some(2)).unwrap();
    let moved: Vec<&str> = merged
        .moves
        .iter()
        .map(|m| m.partition_key.as_str())
        .collect();
    assert_eq!(moved, ["mike", "tom", "zoe"]);
}
