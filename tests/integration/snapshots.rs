//! Shard state snapshots: a reopen from snapshots plus the log's tail
//! serves exactly what a full replay of the log serves, damaged snapshots
//! are refused (an older one or the whole log is used instead), and an
//! erase leaves no snapshot holding the erased data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support;
use support::{Oracle, live, state_of};

use floe::{Config, EntityKey, Floe, FsyncMode, PartitionKeySpec, WriteRequest};
use proptest::prelude::*;
use serde_json::json;

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.log.segment_bytes = 16 * 1024;
    config.partition_key.default = PartitionKeySpec::id();
    config.lake.enabled = false;
    // Rounds only when a test asks (and, where it says so, on close).
    config.snapshots.interval_ms = 0;
    config.snapshots.on_close = false;
    config
}

/// The same directory without snapshots: every reopen replays the log.
fn full_replay(dir: &Path) -> Config {
    let mut config = config(dir);
    config.snapshots.enabled = false;
    config
}

fn snapshot_files(dir: &Path) -> BTreeMap<u32, Vec<PathBuf>> {
    let store = floe_emitter::SnapshotStore::new(dir);
    (0..4)
        .map(|s| {
            (
                s,
                store.list(s).unwrap().into_iter().map(|f| f.path).collect(),
            )
        })
        .collect()
}

/// Everything a reopened floe serves that snapshots could get wrong: live
/// entities with versions and data, per-shard live and tombstone counts.
async fn observed(floe: &Floe) -> (Oracle, Vec<(u64, u64)>) {
    let shards = floe
        .shard_stats()
        .await
        .unwrap()
        .iter()
        .map(|s| (s.entities, s.tombstones))
        .collect();
    (state_of(floe).await, shards)
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Patch(u8, u16),
    Delete(u8),
    /// A write with a caller idempotency key (retried later).
    Keyed(u8, u16),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, any::<u16>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..24, any::<u16>()).prop_map(|(k, v)| Op::Patch(k, v)),
        2 => (0u8..24).prop_map(Op::Delete),
        2 => (0u8..24, any::<u16>()).prop_map(|(k, v)| Op::Keyed(k, v)),
        1 => Just(Op::Snapshot),
    ]
}

fn key(k: u8) -> EntityKey {
    EntityKey::new("t", "Thing", format!("k-{k}"))
}

/// Applies `ops` (closing and reopening after every `reopen_every`), and
/// returns the oracle of acknowledged writes and the caller-keyed acks.
async fn run(
    dir: &Path,
    ops: &[Op],
    reopen_every: usize,
) -> (Oracle, Vec<(String, WriteRequest, floe::WriteAck)>) {
    let mut oracle = Oracle::new();
    let mut keyed = Vec::new();
    let mut floe = Floe::open(config(dir)).await.unwrap();
    for (i, op) in ops.iter().enumerate() {
        if i > 0 && i % reopen_every == 0 {
            floe.close().await.unwrap();
            floe = Floe::open(config(dir)).await.unwrap();
        }
        let (k, request, data) = match *op {
            Op::Put(k, v) => {
                let data = json!({"v": v, "k": k});
                (k, WriteRequest::upsert(key(k), data.clone()), Some(data))
            }
            Op::Patch(k, v) => {
                let Some((_, current)) = oracle.get(&key(k)).filter(|(_, d)| !d.is_null()) else {
                    continue;
                };
                let mut data = current.clone();
                data["p"] = json!(v);
                (k, WriteRequest::update(key(k), json!({"p": v})), Some(data))
            }
            Op::Delete(k) => {
                if oracle.get(&key(k)).is_none_or(|(_, d)| d.is_null()) {
                    continue;
                }
                (k, WriteRequest::delete(key(k)), None)
            }
            Op::Keyed(k, v) => {
                let data = json!({"v": v, "keyed": true});
                let caller = format!("caller-{i}");
                let request =
                    WriteRequest::upsert(key(k), data.clone()).idempotency_key(caller.clone());
                let ack = floe.write(request.clone()).await.unwrap();
                oracle.insert(key(k), (ack.version, data));
                keyed.push((caller, request, ack));
                continue;
            }
            Op::Snapshot => {
                let report = floe.snapshot_now().await.unwrap();
                assert_eq!(report.written.len(), 4, "{report:?}");
                continue;
            }
        };
        let ack = floe.write(request).await.unwrap();
        oracle.insert(
            key(k),
            (ack.version, data.unwrap_or(serde_json::Value::Null)),
        );
    }
    floe.close().await.unwrap();
    (oracle, keyed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Reopen from snapshots + tail == reopen from the whole log == the
    /// oracle, for random write sequences with snapshots at random points
    /// (and reopens in between, which load snapshots and write on top);
    /// retries of caller keys get their original acks on both.
    #[test]
    fn reopening_from_snapshots_equals_replaying_the_whole_log(
        ops in prop::collection::vec(op(), 1..80),
        reopen_every in 5usize..40,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (oracle, keyed) = run(dir.path(), &ops, reopen_every).await;
            let snapshotted = ops.iter().any(|o| matches!(o, Op::Snapshot));

            let floe = Floe::open(config(dir.path())).await.unwrap();
            let stats = floe.recovery_stats();
            if snapshotted {
                assert_eq!(stats.snapshot_shards, 4, "{stats:?}");
            }
            let from_snapshots = observed(&floe).await;
            for (caller, request, ack) in &keyed {
                let again = floe.write(request.clone()).await.unwrap();
                assert_eq!(&again, ack, "retry of {caller}");
            }
            floe.close().await.unwrap();

            let floe = Floe::open(full_replay(dir.path())).await.unwrap();
            assert_eq!(floe.recovery_stats().snapshot_shards, 0);
            let replayed = observed(&floe).await;
            for (caller, request, ack) in &keyed {
                let again = floe.write(request.clone()).await.unwrap();
                assert_eq!(&again, ack, "retry of {caller} after a full replay");
            }
            floe.close().await.unwrap();

            assert_eq!(from_snapshots, replayed);
            assert_eq!(from_snapshots.0, live(&oracle));
        });
    }
}

/// Writes `n` entities (ids `from..from+n`), returns their acks as an oracle.
async fn fill(floe: &Floe, from: u32, n: u32, oracle: &mut Oracle) {
    for i in from..from + n {
        let data = json!({"i": i, "pad": "x".repeat((i % 40) as usize)});
        let ack = floe
            .put(EntityKey::new("t", "Thing", format!("e-{i}")), data.clone())
            .await
            .unwrap();
        oracle.insert(ack.key, (ack.version, data));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_bit_flipped_snapshots_are_refused_and_recovery_is_still_right() {
    let dir = tempfile::tempdir().unwrap();
    let mut oracle = Oracle::new();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    fill(&floe, 0, 300, &mut oracle).await;
    floe.snapshot_now().await.unwrap();
    fill(&floe, 300, 300, &mut oracle).await;
    floe.snapshot_now().await.unwrap();
    // Deletes and re-puts after the last snapshot: the tail matters.
    for i in 0..50 {
        let ack = floe
            .delete(EntityKey::new("t", "Thing", format!("e-{i}")))
            .await
            .unwrap();
        oracle.insert(ack.key, (ack.version, serde_json::Value::Null));
    }
    fill(&floe, 600, 100, &mut oracle).await;
    floe.close().await.unwrap();

    let files = snapshot_files(dir.path());
    assert!(files.values().all(|f| f.len() == 2), "{files:?}");
    // Shard 0: newest truncated. Shard 1: newest with one bit flipped.
    // Shard 2: both damaged (full replay). Shard 3: intact.
    let truncate = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    };
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() * 2 / 3;
        bytes[at] ^= 0x10;
        std::fs::write(path, &bytes).unwrap();
    };
    truncate(&files[&0][0]);
    flip(&files[&1][0]);
    flip(&files[&2][0]);
    truncate(&files[&2][1]);

    let floe = Floe::open(config(dir.path())).await.unwrap();
    let stats = floe.recovery_stats();
    assert_eq!(stats.snapshot_shards, 3, "{stats:?}");
    let recovered = observed(&floe).await;
    floe.close().await.unwrap();
    assert_eq!(recovered.0, live(&oracle));

    let floe = Floe::open(full_replay(dir.path())).await.unwrap();
    assert_eq!(observed(&floe).await, recovered);
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_claiming_more_than_the_log_holds_is_refused() {
    // Snapshots of one directory copied next to another directory's log:
    // their offsets or fences do not match that log.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut oracle_a, mut oracle_b) = (Oracle::new(), Oracle::new());
    let floe = Floe::open(config(a.path())).await.unwrap();
    fill(&floe, 0, 400, &mut oracle_a).await;
    floe.snapshot_now().await.unwrap();
    floe.close().await.unwrap();
    let floe = Floe::open(config(b.path())).await.unwrap();
    // Same entities, other data, more events per partition than in a.
    for round in 0..2 {
        for i in 0..300 {
            let data = json!({"other": i, "round": round});
            let ack = floe
                .put(EntityKey::new("t", "Thing", format!("e-{i}")), data.clone())
                .await
                .unwrap();
            oracle_b.insert(ack.key, (ack.version, data));
        }
    }
    floe.close().await.unwrap();
    let from = a.path().join(floe_emitter::SNAPSHOTS_DIR);
    let to = b.path().join(floe_emitter::SNAPSHOTS_DIR);
    copy_dir(&from, &to);

    let floe = Floe::open(config(b.path())).await.unwrap();
    assert_eq!(floe.recovery_stats().snapshot_shards, 0);
    assert_eq!(state_of(&floe).await, live(&oracle_b));
    floe.close().await.unwrap();
    // a's own snapshots still serve a.
    let floe = Floe::open(config(a.path())).await.unwrap();
    assert_eq!(floe.recovery_stats().snapshot_shards, 4);
    assert_eq!(state_of(&floe).await, live(&oracle_a));
    floe.close().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Events appended around the shards (through `Floe::pipeline`) are not in
/// any shard's state: no snapshot may claim them afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_around_the_shards_stop_snapshots_until_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.snapshots.on_close = true;
    let mut oracle = Oracle::new();
    let floe = Floe::open(cfg.clone()).await.unwrap();
    fill(&floe, 0, 50, &mut oracle).await;
    let event = floe_engine::Event {
        event_id: uuid::Uuid::now_v7(),
        idempotency_key: "direct@v1".into(),
        kind: floe::EventKind::Created,
        namespace: "t".into(),
        entity_type: "Thing".into(),
        entity_id: "direct".into(),
        partition_key: "direct".into(),
        key_hash: floe.shard_for_key("direct").key_hash,
        shard: 0,
        version: 1,
        timestamp_us: floe_engine::now_us(),
        state: Some(floe::Json::parse(r#"{"direct":true}"#).unwrap()),
        request_fingerprint: None,
        owner_epoch: 0,
    };
    floe.pipeline().append(&[event]).await.unwrap();
    oracle.insert(
        EntityKey::new("t", "Thing", "direct"),
        (1, json!({"direct": true})),
    );
    let report = floe.snapshot_now().await.unwrap();
    assert!(report.written.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 4);
    floe.close().await.unwrap();
    assert!(snapshot_files(dir.path()).values().all(Vec::is_empty));

    // The reopen replays the log (with the direct event); its close snapshots again.
    let floe = Floe::open(cfg.clone()).await.unwrap();
    assert_eq!(floe.recovery_stats().snapshot_shards, 0);
    assert_eq!(state_of(&floe).await, live(&oracle));
    floe.close().await.unwrap();
    let floe = Floe::open(cfg).await.unwrap();
    assert_eq!(floe.recovery_stats().snapshot_shards, 4);
    assert_eq!(floe.recovery_stats().events, 0);
    assert_eq!(state_of(&floe).await, live(&oracle));
    floe.close().await.unwrap();
}

/// `close` finishes its snapshot round before it releases the directory:
/// reopening right away in the same process works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_writes_its_snapshots_before_the_directory_can_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.snapshots.on_close = true;
    cfg.snapshots.interval_ms = 100;
    let mut oracle = Oracle::new();
    for round in 0..3 {
        let floe = Floe::open(cfg.clone()).await.unwrap();
        if round > 0 {
            assert_eq!(floe.recovery_stats().snapshot_shards, 4);
            assert_eq!(floe.recovery_stats().events, 0);
        }
        fill(&floe, round * 200, 200, &mut oracle).await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        floe.close().await.unwrap();
    }
    let floe = Floe::open(cfg).await.unwrap();
    assert_eq!(state_of(&floe).await, live(&oracle));
    floe.close().await.unwrap();
}

#[test]
fn snapshot_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.snapshots.interval_ms = 10;
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("snapshots.interval_ms"), "{err}");
    let mut cfg = config(dir.path());
    cfg.snapshots.keep = 0;
    assert!(cfg.validate().is_err());
    let parsed = Config::from_toml("[snapshots]\nenabled = false\n").unwrap();
    assert!(!parsed.snapshots.enabled);
    assert_eq!(parsed.snapshots.keep, 2);
}

/// GDPR erase: a snapshot taken before it holds the entity's data; after
/// it no snapshot file does, and reopening (from the fresh snapshots)
/// does not bring the entity back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_leaves_no_snapshot_holding_the_entity_and_no_reopen_undoes_it() {
    const MARKER: &str = "SNAPSHOT-ERASE-ME-41c2";
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.lake.enabled = true;
    cfg.lake.commit_events = 10;
    cfg.lake.commit_interval_ms = 100;
    cfg.snapshots.on_close = true;
    let holds_marker = |dir: &Path| {
        snapshot_files(dir).values().flatten().any(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
        })
    };
    let mut oracle = Oracle::new();
    let floe = Floe::open(cfg.clone()).await.unwrap();
    fill(&floe, 0, 40, &mut oracle).await;
    let victim = EntityKey::new("t", "Thing", "victim");
    floe.put(victim.clone(), json!({"secret": MARKER}))
        .await
        .unwrap();
    floe.snapshot_now().await.unwrap();
    assert!(
        holds_marker(dir.path()),
        "the test's snapshot lacks the marker"
    );
    let report = floe.erase(victim.clone(), None).await.unwrap();
    assert!(report.tombstone_version.is_some());
    assert!(
        !holds_marker(dir.path()),
        "a snapshot still holds the erased data"
    );
    assert!(snapshot_files(dir.path()).values().all(|f| f.len() == 1));
    floe.close().await.unwrap();
    assert!(!holds_marker(dir.path()));

    let floe = Floe::open(cfg.clone()).await.unwrap();
    assert_eq!(floe.recovery_stats().snapshot_shards, 4);
    assert!(floe.get(&victim).await.unwrap().is_none());
    assert_eq!(state_of(&floe).await, live(&oracle));
    floe.close().await.unwrap();
}

/// A migration changes which shard owns which key: a snapshot taken under
/// the old topology is never used under the new one (the shards replay
/// their history), and snapshots taken under the new one are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_another_topology_are_not_used_after_a_migration() {
    let dir = tempfile::tempdir().unwrap();
    let mut oracle = Oracle::new();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    fill(&floe, 0, 400, &mut oracle).await;
    assert_eq!(floe.snapshot_now().await.unwrap().written.len(), 4);
    let migrations = floe.migrations();
    let plan = migrations.plan(floe::PlanKind::AddShard {}).await.unwrap();
    migrations
        .run(plan.clone(), floe::MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(floe.topology(), plan.to);
    fill(&floe, 400, 100, &mut oracle).await;
    floe.close().await.unwrap();

    let floe = Floe::open(config(dir.path())).await.unwrap();
    assert_eq!(floe.topology().shard_count, 5);
    let stats = floe.recovery_stats();
    assert_eq!(stats.snapshot_shards, 0, "{stats:?}");
    assert_eq!(state_of(&floe).await, live(&oracle));
    assert_eq!(floe.snapshot_now().await.unwrap().written.len(), 5);
    fill(&floe, 500, 50, &mut oracle).await;
    floe.close().await.unwrap();

    let floe = Floe::open(config(dir.path())).await.unwrap();
    assert_eq!(floe.recovery_stats().snapshot_shards, 5);
    let from_snapshots = observed(&floe).await;
    floe.close().await.unwrap();
    assert_eq!(from_snapshots.0, live(&oracle));
    let floe = Floe::open(full_replay(dir.path())).await.unwrap();
    assert_eq!(observed(&floe).await, from_snapshots);
    floe.close().await.unwrap();
}
