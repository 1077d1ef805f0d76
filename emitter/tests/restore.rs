//! The per-shard restore (`replay::restore_shards`) against a full
//! `replay::recover` over the same history: an in-memory pipeline, a real
//! Iceberg lake (SQLite catalog, local warehouse) landed by the real sink up
//! to some point, the rest only in the pipeline, sometimes with retention
//! having deleted what the lake holds. Every restored shard must equal that
//! shard of the full recovery: entities, versions, data, tombstones and the
//! idempotency window.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use floe_emitter::MemPipeline;
use floe_emitter::replay::{recover, restore_shards};
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink, SinkOptions};
use floe_engine::{
    EntityKey, Event, EventKind, HashFunction, Json, Pipeline, RecoveredShard, Router,
    Strategy as Routing, Topology,
};
use proptest::prelude::*;

const WINDOW: usize = 10_000;

fn location(dir: &Path) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: format!("file://{}", dir.join("warehouse").display()),
        properties: HashMap::new(),
    }
}

/// One change: entity `entity` (of partition key `entity % keys`), deleted
/// or written, with a caller idempotency key or floe's derived one.
#[derive(Debug, Clone)]
struct Change {
    entity: u8,
    delete: bool,
    caller_key: bool,
    /// The owner epoch it was written under: epochs do not follow the
    /// versions, so a lower epoch at a higher version (a stale owner's late
    /// event) loses to a higher one, wherever each was read from.
    epoch: u8,
}

/// The events of `changes`, each entity's versions counting up.
fn events(changes: &[Change], keys: u8, router: &Router) -> Vec<Event> {
    let mut versions: HashMap<u8, u64> = HashMap::new();
    let mut live: HashMap<u8, bool> = HashMap::new();
    changes
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let version = versions.entry(c.entity).or_default();
            *version += 1;
            let was_live = live.get(&c.entity).copied().unwrap_or(false);
            let kind = match (c.delete, was_live) {
                (true, _) => EventKind::Deleted,
                (false, true) => EventKind::Updated,
                (false, false) => EventKind::Created,
            };
            live.insert(c.entity, !c.delete);
            let key = EntityKey::new("t", "Thing", format!("e{}", c.entity));
            let partition_key = format!("pk{}", c.entity % keys);
            let key_hash = router.key_hash(&partition_key);
            Event {
                event_id: uuid::Uuid::from_u128(n as u128 + 1),
                idempotency_key: if c.caller_key {
                    format!("caller-{n}")
                } else {
                    Event::derived_idempotency_key(&key, *version)
                },
                kind,
                namespace: key.namespace.clone(),
                entity_type: key.entity_type.clone(),
                entity_id: key.id.clone(),
                shard: router.route(&partition_key, key_hash),
                partition_key,
                key_hash,
                version: *version,
                timestamp_us: 1_700_000_000_000_000 + n as i64,
                state: (!c.delete).then(|| Json::from_trusted(format!(r#"{{"n":{n}}}"#))),
                request_fingerprint: c.caller_key.then_some((n as u64).wrapping_mul(0x9E37_79B9)),
                owner_epoch: u64::from(c.epoch),
            }
        })
        .collect()
}

/// Everything a restored shard holds, comparable.
fn contents(shard: &RecoveredShard, keys: &BTreeSet<String>) -> impl PartialEq + std::fmt::Debug {
    let entities: Vec<_> = shard
        .state()
        .iter()
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    let window: Vec<_> = keys
        .iter()
        .map(|k| (k.clone(), shard.dedup().get(k).cloned()))
        .collect();
    (entities, shard.dedup().len(), window)
}

struct Case {
    shards: u32,
    partitions: u32,
    keys: u8,
    changes: Vec<Change>,
    /// Events landed in the lake before the rest are appended.
    landed: usize,
    /// Whether retention deleted what the lake holds.
    trimmed: bool,
    /// Whether there is a lake at all.
    with_lake: bool,
    /// Bit `s`: shard `s` is restored.
    wanted: u32,
}

async fn check(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::new(case.shards, HashFunction::Xxh3, Routing::JumpBack).unwrap();
    let router = Arc::new(Router::new(topology).unwrap());
    let all = events(&case.changes, case.keys, &router);
    let store = MemPipeline::new(case.partitions);
    let pipeline: Arc<dyn Pipeline> = Arc::new(store.reopen());
    let landed = case.landed.min(all.len());
    let lake = if case.with_lake {
        Some(Lake::open(location(dir.path())).await.unwrap())
    } else {
        None
    };
    if !all[..landed].is_empty() {
        pipeline.append(&all[..landed]).await.unwrap();
    }
    if let Some(lake) = &lake {
        let options = SinkOptions {
            commit_events: 7,
            instance: "restore-test".into(),
            ..SinkOptions::default()
        };
        let mut sink = Sink::start(lake.clone(), pipeline.clone(), options)
            .await
            .unwrap();
        sink.land_to_head().await.unwrap();
        sink.release().await.unwrap();
    }
    if !all[landed..].is_empty() {
        pipeline.append(&all[landed..]).await.unwrap();
    }
    if case.trimmed
        && let Some(lake) = &lake
    {
        let committed = lake.committed_offsets(case.partitions).await.unwrap();
        for (p, &offset) in (0u32..).zip(&committed.offsets) {
            pipeline.delete_before(p, offset).await.unwrap();
        }
    }
    let wanted: Vec<u32> = (0..case.shards)
        .filter(|s| case.wanted & (1 << s) != 0)
        .collect();

    let (full, _) = recover(pipeline.clone(), router.clone(), WINDOW, lake.as_ref())
        .await
        .unwrap();
    // The pipeline alone, when retention left all of it: what the lake holds
    // must read back as the events it landed (owner epochs and fingerprints
    // included), so a restore from the lake equals a replay of the log.
    let log_only = if case.trimmed {
        None
    } else {
        Some(
            recover(pipeline.clone(), router.clone(), WINDOW, None)
                .await
                .unwrap()
                .0,
        )
    };
    let (restored, stats) = restore_shards(
        pipeline.clone(),
        router.clone(),
        &wanted,
        WINDOW,
        lake.as_ref(),
    )
    .await
    .unwrap();

    let caller_keys: BTreeSet<String> = all.iter().map(|e| e.idempotency_key.clone()).collect();
    assert_eq!(
        restored.keys().copied().collect::<Vec<_>>(),
        wanted,
        "exactly the wanted shards come back"
    );
    for (&shard, recovered) in &restored {
        assert_eq!(
            contents(recovered, &caller_keys),
            contents(&full[shard as usize], &caller_keys),
            "shard {shard} restored alone differs from the full recovery"
        );
        if let Some(log_only) = &log_only {
            assert_eq!(
                contents(recovered, &caller_keys),
                contents(&log_only[shard as usize], &caller_keys),
                "shard {shard} restored from the lake differs from a replay of the pipeline alone"
            );
        }
    }
    // Only events routed to the wanted shards were applied; the lake's rows
    // came from the lake and the pipeline was read only after them.
    let routed = |events: &[Event]| {
        events
            .iter()
            .filter(|e| wanted.contains(&router.route(&e.partition_key, e.key_hash)))
            .count() as u64
    };
    assert_eq!(stats.events, routed(&all), "{stats:?}");
    let (from_lake, tail) = if lake.is_some() {
        (routed(&all[..landed]), all.len() - landed)
    } else {
        (0, all.len())
    };
    assert_eq!(stats.from_lake, from_lake, "{stats:?}");
    assert_eq!(stats.tail_events, tail as u64, "{stats:?}");
}

fn change() -> impl Strategy<Value = Change> {
    (0u8..24, prop::bool::weighted(0.15), any::<bool>(), 0u8..4).prop_map(
        |(entity, delete, caller_key, epoch)| Change {
            entity,
            delete,
            caller_key,
            epoch,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn restoring_some_shards_equals_those_shards_of_a_full_recovery(
        shards in 1u32..6,
        partitions in 1u32..4,
        keys in 1u8..12,
        changes in prop::collection::vec(change(), 0..120),
        landed_fraction in 0.0f64..1.0,
        trimmed in any::<bool>(),
        with_lake in prop::bool::weighted(0.8),
        wanted in any::<u32>(),
    ) {
        let landed = (changes.len() as f64 * landed_fraction) as usize;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(Case {
            shards,
            partitions,
            keys,
            changes,
            landed,
            trimmed: trimmed && with_lake,
            with_lake,
            wanted: wanted & ((1 << shards) - 1),
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_the_topology_does_not_have_is_refused() {
    let topology = Topology::new(3, HashFunction::Xxh3, Routing::JumpBack).unwrap();
    let router = Arc::new(Router::new(topology).unwrap());
    let pipeline: Arc<dyn Pipeline> = Arc::new(MemPipeline::new(2));
    let err = restore_shards(pipeline, router, &[1, 3], 16, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            floe_emitter::Error::UnknownShard {
                shard: 3,
                shard_count: 3
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lake_deleted_history_is_refused() {
    let topology = Topology::new(2, HashFunction::Xxh3, Routing::JumpBack).unwrap();
    let router = Arc::new(Router::new(topology).unwrap());
    let store = MemPipeline::new(1);
    let pipeline: Arc<dyn Pipeline> = Arc::new(store.reopen());
    let changes: Vec<Change> = (0..4)
        .map(|entity| Change {
            entity,
            delete: false,
            caller_key: true,
            epoch: 0,
        })
        .collect();
    pipeline
        .append(&events(&changes, 4, &router))
        .await
        .unwrap();
    pipeline.delete_before(0, 2).await.unwrap();
    let err = restore_shards(pipeline, router, &[0], 16, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            floe_emitter::Error::HistoryNeedsLake {
                partition: 0,
                low_watermark: 2
            }
        ),
        "{err}"
    );
}

/// The case the lake's `owner_epoch` column is for: the current owner's
/// write (epoch 20, version 6) is landed in the lake; a stale owner's late
/// event (epoch 10, version 7, never acknowledged) sits in the pipeline
/// after it. Restored from the lake plus the tail, the current owner's write
/// must win, as it does in a replay of the pipeline alone: epoch first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_tail_event_loses_to_the_current_owners_write_read_back_from_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::new(1, HashFunction::Xxh3, Routing::JumpBack).unwrap();
    let router = Arc::new(Router::new(topology).unwrap());
    let pipeline: Arc<dyn Pipeline> = Arc::new(MemPipeline::new(1));
    let changes: Vec<Change> = (0..7)
        .map(|_| Change {
            entity: 1,
            delete: false,
            caller_key: false,
            epoch: 20,
        })
        .collect();
    let mut history = events(&changes, 1, &router);
    let current = history[5].clone();
    history[6].owner_epoch = 10;
    let stale = history.pop().unwrap();
    history.truncate(6);
    pipeline.append(&history).await.unwrap();
    let lake = Lake::open(location(dir.path())).await.unwrap();
    let mut sink = Sink::start(
        lake.clone(),
        pipeline.clone(),
        SinkOptions {
            instance: "restore-test".into(),
            ..SinkOptions::default()
        },
    )
    .await
    .unwrap();
    sink.land_to_head().await.unwrap();
    sink.release().await.unwrap();
    pipeline.append(std::slice::from_ref(&stale)).await.unwrap();

    let (restored, stats) = restore_shards(pipeline.clone(), router, &[0], WINDOW, Some(&lake))
        .await
        .unwrap();
    assert_eq!((stats.from_lake, stats.tail_events), (6, 1), "{stats:?}");
    let key = EntityKey::new("t", "Thing", "e1");
    let record = restored[&0]
        .state()
        .record(&key)
        .expect("the entity is restored");
    assert_eq!(
        (record.owner_epoch, record.version),
        (20, 6),
        "the current owner's write wins: {record:?}"
    );
    assert_eq!(record.data.as_ref(), current.state.as_ref());
}
