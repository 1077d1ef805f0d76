//! Range topologies changed live under load: a range split, added, merged and moved, each
//! moving exactly the keys whose range changed owner; plans that overlap or leave gaps are
//! typed errors.

use floe::{Config, Floe, MigrationError, PlanKind};

#[path = "../migration/harness.rs"]
mod harness;
use harness::*;

/// Ids `k-NNNNN` routed by their number: `[0, 400)` on 0, `[400, 800)` on
/// 1, `[800, ..)` on 2.
fn by_ranges(config: &mut Config) {
    use floe::{RangeKey, RangeRule, Strategy};
    config.topology.shards = 3;
    config.topology.strategy = Strategy::Range {
        key: RangeKey::Integer {
            separator: Some("-".into()),
            field: 1,
        },
        default_shard: 0,
        ranges: vec![
            RangeRule::integers(Some(0), Some(400), 0),
            RangeRule::integers(Some(400), Some(800), 1),
            RangeRule::integers(Some(800), None, 2),
        ],
    };
}

/// A range change under load moves exactly the keys whose range changed
/// owner, to the shard `expect` names for a key number.
async fn range_change(kind: PlanKind, expect: impl Fn(u64) -> u32) -> floe::MigrationPlan {
    let (_, plan) = under_load_in(by_ranges, |_| kind).await;
    let router = floe_engine::Router::new(plan.to.clone()).unwrap();
    for i in 0..1600u64 {
        let key = format!("k-{i:05}");
        assert_eq!(
            router.route(&key, router.key_hash(&key)),
            expect(i),
            "{key}"
        );
    }
    plan
}

fn initial(i: u64) -> u32 {
    match i {
        0..400 => 0,
        400..800 => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_split_under_load() {
    let plan = range_change(
        PlanKind::SplitRange {
            at: floe::RangeBound::Integer(1200),
            shard: None,
        },
        |i| if i >= 1200 { 3 } else { initial(i) },
    )
    .await;
    assert_eq!(plan.to.shard_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_add_under_load() {
    // A window inside [400, 800) on a new shard; the CLI passes text.
    range_change(
        PlanKind::AddRange {
            start: Some("500".into()),
            end: Some("600".into()),
            shard: None,
        },
        |i| {
            if (500..600).contains(&i) {
                3
            } else {
                initial(i)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_merge_under_load() {
    range_change(
        PlanKind::MergeRanges {
            at: floe::RangeBound::Integer(800),
            shard: None,
        },
        |i| if i >= 400 { 1 } else { 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_move_under_load() {
    range_change(
        PlanKind::MoveRange {
            at: floe::RangeBound::Integer(10),
            shard: 2,
        },
        |i| if i < 400 { 2 } else { initial(i) },
    )
    .await;
}

#[tokio::test]
async fn range_plans_that_overlap_or_leave_gaps_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    by_ranges(&mut config);
    let floe = Floe::open(config).await.unwrap();
    seed(&floe, 0..50).await;
    let m = floe.migrations();
    let err = m
        .plan(PlanKind::AddRange {
            start: Some(floe::RangeBound::Integer(300)),
            end: Some(floe::RangeBound::Integer(500)),
            shard: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::RangeOverlap(_))),
        "{err}"
    );
    let err = m
        .plan(PlanKind::MergeRanges {
            at: floe::RangeBound::Integer(500),
            shard: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::RangeGap(_))),
        "{err}"
    );
    let err = m.plan(PlanKind::AddShard {}).await.unwrap_err();
    assert!(err.to_string().contains("split-range"), "{err}");
    assert_eq!(floe.topology().version, 1, "nothing changed");
    floe.close().await.unwrap();
}
