//! Configuration that could silently change routing: a per-type partition
//! key section must add to the defaults, and a lost `topology.json` must
//! never make floe start from the configured topology as if the directory
//! were new.

use std::path::Path;
use std::time::Duration;

use floe::{Config, EntityKey, Error, Floe, FsyncMode, MigrationOptions, PlanKind};
use serde_json::json;

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.log.partitions = 4;
    config.topology.shards = 4;
    config
}

fn keys() -> Vec<EntityKey> {
    let mut keys = Vec::new();
    for ty in ["Customer", "Order", "Invoice", "OrderItem"] {
        for n in 0..24 {
            keys.push(EntityKey::new(
                format!("tenant-{n:02}"),
                ty,
                format!("x-{n}"),
            ));
        }
    }
    keys
}

/// The shard of every key after a put, in a new directory with `config`.
async fn shards(config: Config) -> Vec<u32> {
    let floe = Floe::open(config).await.unwrap();
    let mut shards = Vec::new();
    for (i, key) in keys().into_iter().enumerate() {
        let data = json!({"order_id": format!("order-{}", i % 7), "n": i});
        shards.push(floe.put(key, data).await.unwrap().shard);
    }
    floe.close().await.unwrap();
    shards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_type_partition_key_section_leaves_other_types_routed_as_before() {
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = shards(config(plain_dir.path())).await;

    let typed_dir = tempfile::tempdir().unwrap();
    let file = typed_dir.path().join("floe.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\n[log]\nfsync = \"never\"\npartitions = 4\n[topology]\nshards = 4\n[partition_key.types.OrderItem]\nfields = [\"order_id\"]\n",
            typed_dir.path().join("data").display()
        ),
    )
    .unwrap();
    let typed = shards(Config::from_toml_file(&file).unwrap()).await;

    let mut moved_items = 0;
    for ((key, a), b) in keys().iter().zip(&plain).zip(&typed) {
        if key.entity_type == "OrderItem" {
            moved_items += usize::from(a != b);
        } else {
            assert_eq!(a, b, "{key:?} routed differently");
        }
    }
    // OrderItem really is keyed by its order (7 orders over 24 tenants).
    assert!(moved_items > 0, "no OrderItem changed shard");
}

fn remove_topology(dir: &Path) {
    std::fs::remove_file(dir.join("topology.json")).unwrap();
}

fn missing(err: Error) -> String {
    let message = err.to_string();
    assert!(
        matches!(err, Error::TopologyMissing { .. }),
        "expected TopologyMissing, got {message}"
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_topology_after_a_migration_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.lake.commit_interval_ms = 50;
    let floe = Floe::open(config.clone()).await.unwrap();
    for i in 0..120 {
        let key = EntityKey::new(format!("tenant-{}", i % 30), "Order", format!("o-{i}"));
        floe.put(key, json!({ "n": i })).await.unwrap();
    }
    // The migration replays from the lake: let it land first.
    for _ in 0..200 {
        if floe.sink_lag().await.unwrap().events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let migrations = floe.migrations();
    let plan = migrations.plan(PlanKind::AddShard {}).await.unwrap();
    let report = migrations
        .run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(floe.topology().shard_count, 5);
    floe.close().await.unwrap();

    remove_topology(dir.path());
    let message = missing(Floe::open(config.clone()).await.unwrap_err());
    assert!(message.contains("topology.json"), "{message}");
    assert!(message.contains(&report.id), "{message}");
    assert!(message.contains("completed"), "{message}");
    assert!(message.contains("pipeline holds 120 events"), "{message}");
    assert!(message.contains("lake"), "{message}");
    // Refused means untouched: no topology was written.
    assert!(!dir.path().join("topology.json").exists());

    // Restoring the migration's topology brings the directory back as it was.
    std::fs::write(dir.path().join("topology.json"), plan.to.to_json()).unwrap();
    let floe = Floe::open(config).await.unwrap();
    assert_eq!(floe.topology(), plan.to);
    for i in 0..120 {
        let key = EntityKey::new(format!("tenant-{}", i % 30), "Order", format!("o-{i}"));
        assert!(floe.get(&key).await.unwrap().is_some());
    }
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_topology_with_events_is_refused_and_a_new_directory_is_created() {
    // Events in the pipeline only (no lake, no migration) are evidence too.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.lake.enabled = false;
    let floe = Floe::open(config.clone()).await.unwrap();
    assert!(dir.path().join("topology.json").exists());
    floe.put(EntityKey::new("t", "Order", "o-1"), json!({}))
        .await
        .unwrap();
    floe.close().await.unwrap();
    remove_topology(dir.path());
    let message = missing(Floe::open(config).await.unwrap_err());
    assert!(message.contains("pipeline holds 1 events"), "{message}");

    // A directory opened once but never written to is still new: it opens
    // and gets the configured topology.
    let empty = tempfile::tempdir().unwrap();
    let floe = Floe::open(self::config(empty.path())).await.unwrap();
    floe.close().await.unwrap();
    remove_topology(empty.path());
    let mut config = self::config(empty.path());
    config.topology.shards = 6;
    let floe = Floe::open(config).await.unwrap();
    assert_eq!(floe.topology().shard_count, 6);
    floe.close().await.unwrap();
    assert!(empty.path().join("topology.json").exists());
}
