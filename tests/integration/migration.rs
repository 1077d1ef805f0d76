//! Live shard migrations end to end: under a concurrent write load (add,
//! remove, rebalance, split, merge), injected failures and rollback, cancel,
//! timeouts, concurrent migrations, and restarts around the cutover.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support;
use support::Oracle;

#[cfg(feature = "failpoints")]
use floe::FailPoint;
use floe::{
    Floe, JobStatus, MigrationConfig, MigrationError, MigrationOptions, PlanKind, WriteRequest,
};
use serde_json::json;

#[path = "../migration/harness.rs"]
mod harness;
use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_shard_under_load() {
    let report = under_load(PlanKind::AddShard {}, 4).await;
    assert_eq!(report.to_version, 2);
}

/// Writers sending `Floe::write_many` batches of 20 upserts while a shard
/// is added: batches whose keys the migration holds go through its
/// admission one by one, stale ones are re-routed, and every item is
/// acknowledged exactly once on the right shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_shard_under_batched_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let floe = Floe::open(config).await.unwrap();
    let mut oracle = seed(&floe, 0..1500).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (floe, stop) = (floe.clone(), stop.clone());
            tokio::spawn(async move {
                let mut oracle = Oracle::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let ids: Vec<u64> = (0..20).map(|j| ((n * 20 + j) * 4 + w) % 1600).collect();
                    n += 1;
                    let requests = ids
                        .iter()
                        .map(|&i| WriteRequest::upsert(key(i), json!({ "w": w, "n": n })))
                        .collect();
                    let outcomes = floe.write_many(requests).await;
                    for (&i, outcome) in ids.iter().zip(outcomes) {
                        let ack = outcome.unwrap_or_else(|e| panic!("batch {n} of {w}: {e}"));
                        oracle.insert(key(i), (ack.version, json!({ "w": w, "n": n })));
                    }
                }
                (oracle, n)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let migrations = floe.migrations();
    let plan = migrations.plan(PlanKind::AddShard {}).await.unwrap();
    migrations
        .run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let batches = stop_writers(&stop, writers, &mut oracle).await;
    assert!(batches > 10, "the writers kept writing ({batches} batches)");
    assert_eq!(floe.topology(), plan.to);
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_shard_under_load() {
    under_load(PlanKind::RemoveShard { shard: 4 }, 5).await;
}

/// A shard other than the one `key` routes to now.
fn elsewhere(floe: &Floe, key: &str) -> u32 {
    (floe.shard_for_key(key).shard + 1) % floe.topology().shard_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pin_under_load() {
    let report = under_load_with(
        |floe| PlanKind::Pin {
            key: "k-00042".into(),
            shard: elsewhere(floe, "k-00042"),
        },
        4,
    )
    .await;
    assert_eq!(report.keys_moved, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_list_moves_under_load() {
    let report = under_load_with(
        |floe| PlanKind::MoveKeys {
            moves: (0..40u64)
                .map(|i| {
                    let key = format!("k-{:05}", i * 37);
                    let shard = elsewhere(floe, &key);
                    (key, shard)
                })
                .collect(),
        },
        5,
    )
    .await;
    assert_eq!(report.keys_moved, 40, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_under_load() {
    // Pin many keys to shard 0 first so that it is hot, then rebalance.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let mut pinned = BTreeMap::new();
    for i in 0..300u64 {
        pinned.insert(format!("k-{i:05}"), 0);
    }
    config.topology.overrides = pinned;
    let floe = Floe::open(config.clone()).await.unwrap();
    let mut oracle = seed(&floe, 0..1200).await;
    let before = floe.migrations().analyze_balance(0.2).await.unwrap();
    assert_eq!(before.hot_shards, vec![0], "{before:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&floe, 6, 1200, stop.clone());
    let plan = floe
        .migrations()
        .plan(PlanKind::Rebalance { threshold: 0.1 })
        .await
        .unwrap();
    assert!(
        plan.moves.iter().all(|m| m.from == 0),
        "{:?}",
        plan.moves.first()
    );
    floe.migrations()
        .run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    stop_writers(&stop, writers, &mut oracle).await;
    check_placement(&floe, &oracle).await;
    let after = floe.migrations().analyze_balance(0.2).await.unwrap();
    assert!(
        after.imbalance_ratio < before.imbalance_ratio,
        "{before:?} -> {after:?}"
    );
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_and_merge_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let mut oracle = seed(&floe, 0..800).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&floe, 4, 900, stop.clone());
    let migrations = floe.migrations();
    let split = migrations.plan(PlanKind::Split { shard: 1 }).await.unwrap();
    assert!(split.moves.iter().all(|m| m.from == 1 && m.to == 4));
    migrations
        .run(split, MigrationOptions::default())
        .await
        .unwrap();
    let merge = migrations
        .plan(PlanKind::Merge { from: 4, into: 2 })
        .await
        .unwrap();
    assert!(merge.moves.iter().all(|m| m.from == 4 && m.to == 2));
    migrations
        .run(merge, MigrationOptions::default())
        .await
        .unwrap();
    stop_writers(&stop, writers, &mut oracle).await;
    assert_eq!(floe.topology().shard_count, 4);
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

/// Keys the plan lists are exactly the keys whose routing changed, and after
/// the migration exactly those keys' entities live on another shard.
#[tokio::test]
async fn add_shard_moves_exactly_the_keys_whose_routing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let oracle = seed(&floe, 0..600).await;
    let before: BTreeMap<String, u32> = (0..600u64)
        .map(|i| {
            (
                format!("k-{i:05}"),
                floe.shard_for_key(&format!("k-{i:05}")).shard,
            )
        })
        .collect();
    let plan = floe.migrations().plan(PlanKind::AddShard {}).await.unwrap();
    floe.migrations()
        .run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    let changed: BTreeSet<String> = before
        .iter()
        .filter(|(k, s)| floe.shard_for_key(k).shard != **s)
        .map(|(k, _)| k.clone())
        .collect();
    let listed: BTreeSet<String> = plan.moves.iter().map(|m| m.partition_key.clone()).collect();
    assert_eq!(listed, changed);
    assert!(plan.moves.iter().all(|m| m.to == 4));
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

// Injects failures: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
async fn failing(fail: FailPoint) {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let mut oracle = seed(&floe, 0..1000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&floe, 4, 1000, stop.clone());
    let before = floe.topology();
    let plan = floe.migrations().plan(PlanKind::AddShard {}).await.unwrap();
    let options = MigrationOptions {
        fail_at: Some(fail),
        ..Default::default()
    };
    let err = floe.migrations().run(plan, options).await.unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::Injected(_))),
        "{err}"
    );
    // The source keeps serving: writes go on after the rollback.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_writers(&stop, writers, &mut oracle).await;
    assert_eq!(floe.topology(), before);
    check_placement(&floe, &oracle).await;
    let jobs = floe.migrations().list().unwrap();
    assert_eq!(jobs.last().unwrap().status, JobStatus::RolledBack);
    floe.close().await.unwrap();
    // The old topology is the persisted one.
    let floe = Floe::open(config(dir.path())).await.unwrap();
    assert_eq!(floe.topology(), before);
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

// Injects failures: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_mid_copy_rolls_back() {
    failing(FailPoint::MidCopy).await;
}

// Injects failures: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_mid_cutover_rolls_back() {
    failing(FailPoint::MidCutover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let mut oracle = seed(&floe, 0..1000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&floe, 4, 1000, stop.clone());
    let plan = floe.migrations().plan(PlanKind::AddShard {}).await.unwrap();
    // Small batches so that the copy takes several steps; the cancel comes
    // from another process's way: the cancel file.
    let options = MigrationOptions {
        config: Some(MigrationConfig {
            batch_size: 16,
            ..MigrationConfig::default()
        }),
        ..Default::default()
    };
    let handle = floe
        .migrations()
        .start(plan.clone(), options)
        .await
        .unwrap();
    // A second migration is refused while this one runs.
    let second = floe
        .migrations()
        .start(plan, MigrationOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            second.as_migration(),
            Some(MigrationError::AlreadyMigrating { .. })
        ),
        "{second}"
    );
    floe::request_cancel(dir.path(), &handle.id).unwrap();
    let err = handle.clone().wait().await.unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::Cancelled { .. })),
        "{err}"
    );
    stop_writers(&stop, writers, &mut oracle).await;
    assert_eq!(floe.topology().version, 1);
    check_placement(&floe, &oracle).await;
    let job = floe::list_jobs(dir.path()).unwrap().pop().unwrap();
    assert_eq!(
        (job.id.as_str(), job.status),
        (handle.id.as_str(), JobStatus::RolledBack)
    );
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let oracle = seed(&floe, 0..1000).await;
    let plan = floe.migrations().plan(PlanKind::AddShard {}).await.unwrap();
    let options = MigrationOptions {
        config: Some(MigrationConfig {
            timeout_ms: 1,
            ..MigrationConfig::default()
        }),
        ..Default::default()
    };
    let err = floe.migrations().run(plan, options).await.unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::Timeout { .. })),
        "{err}"
    );
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

// Injects failures: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
async fn crash(fail: FailPoint, expect_new: bool) {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let oracle = seed(&floe, 0..800).await;
    let plan = floe.migrations().plan(PlanKind::AddShard {}).await.unwrap();
    let options = MigrationOptions {
        fail_at: Some(fail),
        ..Default::default()
    };
    let err = floe
        .migrations()
        .run(plan.clone(), options)
        .await
        .unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::Injected(_))),
        "{err}"
    );
    assert_eq!(
        floe::list_jobs(dir.path()).unwrap()[0].status,
        JobStatus::Running,
        "the crash left the job running"
    );
    floe.close().await.unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let job = floe.migrations().list().unwrap().pop().unwrap();
    assert!(job.settled_after_restart);
    if expect_new {
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(floe.topology(), plan.to);
    } else {
        assert_eq!(job.status, JobStatus::RolledBack);
        assert_eq!(floe.topology(), plan.from);
    }
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

// Injects failures: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn restart_mid_copy_rolls_back() {
    crash(FailPoint::CrashMidCopy, false).await;
}

// Injects failures: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn restart_after_the_topology_is_persisted_completes() {
    crash(FailPoint::CrashMidCutover, true).await;
}

#[tokio::test]
async fn invalid_plans_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    seed(&floe, 0..50).await;
    let m = floe.migrations();
    let err = m
        .plan(PlanKind::RemoveShard { shard: 4 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.as_migration(),
            Some(MigrationError::UnknownShard {
                shard: 4,
                shard_count: 4
            })
        ),
        "{err}"
    );
    let err = m
        .plan(PlanKind::Merge { from: 2, into: 2 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.as_migration(),
            Some(MigrationError::MergeWithItself { shard: 2 })
        ),
        "{err}"
    );
    // Range plans need a range topology.
    let err = m
        .plan(PlanKind::SplitRange {
            at: floe::RangeBound::Integer(5),
            shard: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.as_migration(), Some(MigrationError::InvalidPlan(_))),
        "{err}"
    );
    // A stale plan is refused.
    let plan = m.plan(PlanKind::AddShard {}).await.unwrap();
    m.run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    let err = m.run(plan, MigrationOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("plan again"), "{err}");
    floe.close().await.unwrap();
}

/// The shards that own the given keys now.
fn owners(floe: &Floe, ids: impl Iterator<Item = u64>) -> BTreeMap<String, u32> {
    ids.map(|i| {
        let key = format!("k-{i:05}");
        let shard = floe.shard_for_key(&key).shard;
        (key, shard)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_a_middle_shard_under_load() {
    let (report, plan) = under_load_in(
        |c| c.topology.shards = 5,
        |_| PlanKind::RemoveShard { shard: 2 },
    )
    .await;
    assert_eq!(plan.to.shard_count, 4);
    // Shard 2's keys left it; shard 4's keys took its id; nothing else moved.
    assert!(plan.moves.iter().all(|m| m.from == 2 || m.from == 4));
    assert!(plan.moves.iter().any(|m| m.from == 2 && m.to != 2));
    assert!(plan.moves.iter().any(|m| m.from == 4 && m.to == 2));
    assert!(report.keys_moved > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merge_two_non_adjacent_shards_under_load() {
    let before = std::sync::Mutex::new(BTreeMap::new());
    let (_, plan) = under_load_in(
        |c| c.topology.shards = 5,
        |floe| {
            *before.lock().unwrap() = owners(floe, 0..1500);
            PlanKind::Merge { from: 1, into: 3 }
        },
    )
    .await;
    assert_eq!(plan.to.shard_count, 4);
    let router = floe_engine::Router::new(plan.to.clone()).unwrap();
    let before = before.into_inner().unwrap();
    let now = |key: &str| router.route(key, router.key_hash(key));
    let merged: BTreeSet<u32> = before
        .iter()
        .filter(|(_, s)| **s == 1 || **s == 3)
        .map(|(k, _)| now(k))
        .collect();
    assert_eq!(merged, BTreeSet::from([3]), "shards 1 and 3 became one");
    for (key, &shard) in &before {
        match shard {
            4 => assert_eq!(now(key), 1, "{key}: the highest shard takes id 1"),
            0 | 2 => assert_eq!(now(key), shard, "{key} moved"),
            _ => {}
        }
    }
}
