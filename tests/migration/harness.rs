//! What the migration tests share: a deployment on the embedded log with the lake, seeded
//! entities, writers that keep an oracle, and one migration run under that load.
#![allow(dead_code, reason = "each migration test binary uses a part")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floe::{
    Config, EntityKey, Floe, FsyncMode, JobStatus, MigrationOptions, PartitionKeySpec, PlanKind,
};
use serde_json::{Value, json};

use crate::support::{Oracle, live, state_of};

pub(crate) fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.partition_key.default = PartitionKeySpec::id();
    config.lake.commit_events = 400;
    config.lake.commit_interval_ms = 100;
    config
}

pub(crate) fn key(i: u64) -> EntityKey {
    EntityKey::new("t", "Thing", format!("k-{i:05}"))
}

/// Writes every entity of `ids` once, then waits until the lake holds them
/// (so that the copy phase has history to read from Iceberg).
pub(crate) async fn seed(floe: &Floe, ids: std::ops::Range<u64>) -> Oracle {
    let mut oracle = Oracle::new();
    for i in ids {
        let data = json!({ "i": i, "pad": "x".repeat((i % 50) as usize) });
        let ack = floe.put(key(i), data.clone()).await.unwrap();
        oracle.insert(key(i), (ack.version, data));
    }
    for _ in 0..200 {
        if floe.sink_lag().await.unwrap().events == 0 {
            return oracle;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the sink did not land the seed");
}

/// `writers` tasks, each owning the ids `i` with `i % writers == w`, write
/// (upsert, merge-patch, delete, re-create) until `stop`; every acknowledged
/// write goes into the task's oracle, and any refused write fails the test.
pub(crate) fn start_writers(
    floe: &Floe,
    writers: u64,
    ids: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Oracle, u64)>> {
    (0..writers)
        .map(|w| {
            let (floe, stop) = (floe.clone(), stop.clone());
            tokio::spawn(async move {
                let mut oracle = Oracle::new();
                let mut n = 0u64;
                let mine: Vec<u64> = (0..ids).filter(|i| i % writers == w).collect();
                while !stop.load(Ordering::Acquire) {
                    let i = mine[(n as usize * 7 + 3) % mine.len()];
                    n += 1;
                    let k = key(i);
                    let result = match n % 9 {
                        0 => match floe.delete(k.clone()).await {
                            Ok(a) => Ok((a.version, Value::Null)),
                            // Deleting what is already deleted (or never
                            // written) is a correct refusal.
                            Err(e)
                                if matches!(
                                    e.as_engine(),
                                    Some(floe_engine::Error::NotFound { .. })
                                ) =>
                            {
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                        4 => {
                            // A merge patch of an entity that may be deleted:
                            // not found is a correct refusal, not a lost write.
                            match floe.update(k.clone(), json!({ "n": n })).await {
                                Ok(a) => Ok((
                                    a.version,
                                    floe.get(&k)
                                        .await
                                        .unwrap()
                                        .unwrap()
                                        .data
                                        .to_value()
                                        .unwrap(),
                                )),
                                Err(e)
                                    if matches!(
                                        e.as_engine(),
                                        Some(floe_engine::Error::NotFound { .. })
                                    ) =>
                                {
                                    continue;
                                }
                                Err(e) => Err(e),
                            }
                        }
                        _ => {
                            let data = json!({ "w": w, "n": n });
                            floe.put(k.clone(), data.clone())
                                .await
                                .map(|a| (a.version, data))
                        }
                    };
                    let (version, data) = result
                        .unwrap_or_else(|e| panic!("write {n} of writer {w} to {k} refused: {e}"));
                    oracle.insert(k, (version, data));
                }
                (oracle, n)
            })
        })
        .collect()
}

pub(crate) async fn stop_writers(
    stop: &AtomicBool,
    writers: Vec<tokio::task::JoinHandle<(Oracle, u64)>>,
    oracle: &mut Oracle,
) -> u64 {
    stop.store(true, Ordering::Release);
    let mut writes = 0;
    for w in writers {
        let (o, n) = w.await.unwrap();
        writes += n;
        oracle.extend(o);
    }
    writes
}

/// Every live entity is listed exactly once, by the shard the topology
/// names, and the whole equals the oracle.
pub(crate) async fn check_placement(floe: &Floe, oracle: &Oracle) {
    let topology = floe.topology();
    let mut seen: BTreeMap<EntityKey, u32> = BTreeMap::new();
    for shard in 0..topology.shard_count {
        for entity in floe
            .list_shard(shard, "t", "Thing", None, usize::MAX)
            .await
            .unwrap()
        {
            let owner = floe.shard_for_key(&entity.key.id).shard;
            assert_eq!(
                owner, shard,
                "{} is on shard {shard} but routes to {owner}",
                entity.key
            );
            assert!(
                seen.insert(entity.key.clone(), shard).is_none(),
                "{} is on two shards",
                entity.key
            );
        }
    }
    let expected = live(oracle);
    assert_eq!(seen.len(), expected.len(), "entity count");
    assert_eq!(
        state_of(floe).await,
        expected,
        "state differs from the oracle"
    );
    // Reads route to the owner too.
    for (k, (version, _)) in expected.iter().take(50) {
        assert_eq!(floe.get(k).await.unwrap().unwrap().version, *version);
    }
}

pub(crate) async fn under_load(kind: PlanKind, shards: u32) -> floe::MigrationReport {
    under_load_with(|_| kind, shards).await
}

/// [`under_load`] with the plan chosen once the deployment is up.
pub(crate) async fn under_load_with(
    kind: impl FnOnce(&Floe) -> PlanKind,
    shards: u32,
) -> floe::MigrationReport {
    under_load_in(|c| c.topology.shards = shards, kind).await.0
}

/// [`under_load_with`] on a configuration `configure` changes; also returns
/// the plan.
pub(crate) async fn under_load_in(
    configure: impl FnOnce(&mut Config),
    kind: impl FnOnce(&Floe) -> PlanKind,
) -> (floe::MigrationReport, floe::MigrationPlan) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    configure(&mut config);
    let floe = Floe::open(config.clone()).await.unwrap();
    let mut oracle = seed(&floe, 0..1500).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&floe, 6, 1600, stop.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let migrations = floe.migrations();
    let plan = migrations.plan(kind(&floe)).await.unwrap();
    assert!(!plan.moves.is_empty(), "the plan moves keys");
    let report = migrations
        .run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let writes = stop_writers(&stop, writers, &mut oracle).await;
    assert!(writes > 100, "the writers kept writing ({writes})");
    assert_eq!(floe.topology(), plan.to);
    assert!(
        report.events_replayed > 0 && report.lake_events > 0,
        "{report:?}"
    );
    check_placement(&floe, &oracle).await;
    // The job is recorded as completed.
    let job = migrations.status(&report.id).unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    // A restart keeps the new topology and the same state.
    floe.close().await.unwrap();
    let floe = Floe::open(config).await.unwrap();
    assert_eq!(floe.topology(), plan.to);
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
    (report, plan)
}
