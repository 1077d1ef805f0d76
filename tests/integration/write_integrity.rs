//! Writes that must never conflate, duplicate or wedge an entity, against a
//! real data directory: derived idempotency keys (injective, and the old
//! scheme still read), partition keys of existing entities (immutable),
//! idempotency keys reused for another request (refused), and one set of
//! JSON limits on every write path.

use std::path::Path;
use std::time::Duration;

use floe::{Config, EntityKey, Error, Floe, FsyncMode, Json, PartitionKeySpec, WriteRequest};
use floe_engine::{Event, EventKind, KeyField};
use serde_json::{Value, json};
use uuid::Uuid;

#[path = "../support/writes.rs"]
mod writes_support;

use writes_support::{engine_error, high_watermarks};

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.lake.enabled = false;
    config
}

/// Partition key from the `tenant_id` field, strict: what issue 11 used.
fn tenant_config(dir: &Path) -> Config {
    let mut config = config(dir);
    config.partition_key.default =
        PartitionKeySpec::field(KeyField::Field("tenant_id".into())).with_strict(true);
    config
}

/// An event as a build before this one wrote it: no fingerprint, the given
/// idempotency key, routed by `partition_key`.
fn legacy_event(floe: &Floe, key: &EntityKey, version: u64, idem: &str, state: &str) -> Event {
    let info = floe.shard_for_key(&key.namespace);
    Event {
        event_id: Uuid::now_v7(),
        idempotency_key: idem.into(),
        kind: if version == 1 {
            EventKind::Created
        } else {
            EventKind::Updated
        },
        namespace: key.namespace.clone(),
        entity_type: key.entity_type.clone(),
        entity_id: key.id.clone(),
        partition_key: key.namespace.clone(),
        key_hash: info.key_hash,
        shard: info.shard,
        version,
        timestamp_us: floe_engine::now_us(),
        state: Some(Json::from_trusted(state)),
        request_fingerprint: None,
        owner_epoch: 0,
    }
}

// ---------------------------------------------------------------- item 2

#[tokio::test]
async fn entities_whose_names_hold_separators_get_distinct_derived_keys() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let names = [
        ("p", "q/r", "s"),
        ("p/q", "r", "s"),
        ("p", "q", "r/s"),
        ("p%2Fq", "r", "s"),
        ("p", "q%2Fr", "s"),
        ("p", "q", "s@v1"),
        ("p", "q", "s@v1@v1"),
        ("p", "q", "s"),
        ("p", "q:r", "s t"),
        ("日本", "T", "é/%"),
    ];
    let mut keys = std::collections::BTreeSet::new();
    for (i, (ns, ty, id)) in names.iter().enumerate() {
        let key = EntityKey::new(*ns, *ty, *id);
        let ack = floe.put(key, json!({ "i": i })).await.unwrap();
        assert!(keys.insert(ack.idempotency_key.clone()), "{ack:?}");
    }
    assert!(keys.contains("p/q%2Fr/s@v1") && keys.contains("p%2Fq/r/s@v1"));
    assert!(
        keys.contains("p/q/s@v1"),
        "plain names keep the key they had"
    );
    floe.close().await.unwrap();
    // Both colliding entities of the issue are there after a restart.
    let floe = Floe::open(config(dir.path())).await.unwrap();
    for (i, (ns, ty, id)) in names.iter().enumerate() {
        let entity = floe.get(&EntityKey::new(*ns, *ty, *id)).await.unwrap();
        assert_eq!(entity.unwrap().data.to_value().unwrap(), json!({ "i": i }));
    }
    floe.close().await.unwrap();
}

/// A log written before the escaping and the fingerprints: both colliding
/// entities under the same old key, and a caller key without fingerprint.
/// Recovery, the dedup window and the sink still work on it.
#[tokio::test]
async fn a_directory_written_with_the_old_key_scheme_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.lake.enabled = true;
    cfg.lake.commit_events = 10;
    cfg.lake.commit_interval_ms = 100;
    let floe = Floe::open(cfg.clone()).await.unwrap();
    let a = EntityKey::new("p", "q/r", "s");
    let b = EntityKey::new("p/q", "r", "s");
    let paid = EntityKey::new("p", "Pay", "x");
    let old = vec![
        legacy_event(&floe, &a, 1, "p/q/r/s@v1", r#"{"who":"a"}"#),
        legacy_event(&floe, &b, 1, "p/q/r/s@v1", r#"{"who":"b"}"#),
        legacy_event(&floe, &paid, 1, "pay-1", r#"{"amount":5}"#),
    ];
    floe.pipeline().append(&old).await.unwrap();
    floe.close().await.unwrap();

    let floe = Floe::open(cfg.clone()).await.unwrap();
    assert_eq!(floe.recovery_stats().events, 3);
    for (key, who) in [(&a, "a"), (&b, "b")] {
        let entity = floe.get(key).await.unwrap().unwrap();
        assert_eq!(entity.data.to_value().unwrap(), json!({ "who": who }));
    }
    // A retry of the old caller key gets the old ack; another entity is refused.
    let retry = WriteRequest::create(paid.clone(), json!({"amount": 5})).idempotency_key("pay-1");
    let ack = floe.write(retry).await.unwrap();
    assert_eq!((ack.event_id, ack.version), (old[2].event_id, 1));
    let other = WriteRequest::create(EntityKey::new("p", "Pay", "y"), json!({"amount": 5}))
        .idempotency_key("pay-1");
    assert!(matches!(
        engine_error(floe.write(other).await.unwrap_err()),
        floe_engine::Error::IdempotencyKeyReused { .. }
    ));
    // New writes use the new scheme.
    let ack = floe.put(a.clone(), json!({"who": "a2"})).await.unwrap();
    assert_eq!(ack.idempotency_key, "p/q%2Fr/s@v2");
    // The sink lands old and new events, each once.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lag = floe.sink_lag().await.unwrap();
        if lag.events == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sink lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let landed = floe
        .sql("SELECT idempotency_key, entity_type, version FROM events ORDER BY entity_type, version")
        .await
        .unwrap();
    assert_eq!(landed.num_rows(), 4, "3 old events and the new one");
    floe.close().await.unwrap();
}

// ---------------------------------------------------------------- item 3

/// Two tenants whose keys route to different shards, and one that shares
/// the first one's shard.
fn tenants(floe: &Floe) -> (String, String, String) {
    let shard = |t: &str| floe.shard_for_key(t).shard;
    let a = "tenant-0".to_string();
    let b = (1..)
        .map(|i| format!("tenant-{i}"))
        .find(|t| shard(t) != shard(&a))
        .unwrap();
    let same = (1..)
        .map(|i| format!("tenant-{i}"))
        .find(|t| shard(t) == shard(&a))
        .unwrap();
    (a, b, same)
}

fn assert_immutable(e: Error) {
    let e = engine_error(e);
    assert!(
        matches!(e, floe_engine::Error::PartitionKeyImmutable { .. }),
        "{e}"
    );
}

#[tokio::test]
async fn changing_the_partition_key_of_a_live_entity_is_refused_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(tenant_config(dir.path())).await.unwrap();
    let (a, b, same) = tenants(&floe);
    let key = EntityKey::new("acme", "Order", "o-1");
    floe.put(key.clone(), json!({"tenant_id": a, "n": 1}))
        .await
        .unwrap();
    let before = high_watermarks(&floe).await;
    for other in [&b, &same] {
        let data = json!({"tenant_id": other, "n": 2});
        assert_immutable(floe.put(key.clone(), data.clone()).await.unwrap_err());
        assert_immutable(floe.create(key.clone(), data.clone()).await.unwrap_err());
        let text = Json::from_value(&data).unwrap();
        assert_immutable(floe.put_json(key.clone(), text).await.unwrap_err());
        // A patch that carries the key field routes by it.
        let patch = json!({"tenant_id": other});
        assert_immutable(floe.update(key.clone(), patch.clone()).await.unwrap_err());
        // ... and one sent with the old key may not rewrite the field.
        let explicit = WriteRequest::update(key.clone(), patch).partition_key(&a);
        assert_immutable(floe.write(explicit).await.unwrap_err());
        let delete = WriteRequest::delete(key.clone()).partition_key(other.as_str());
        assert_immutable(floe.write(delete).await.unwrap_err());
    }
    assert_eq!(high_watermarks(&floe).await, before, "nothing was written");
    // One copy, unchanged, still updatable under its key.
    let list = floe.list("acme", "Order", None, 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].data.to_value().unwrap()["n"], 1);
    let patch = WriteRequest::update(key.clone(), json!({"n": 3})).partition_key(&a);
    assert_eq!(floe.write(patch).await.unwrap().version, 2);
    floe.close().await.unwrap();

    // The index is rebuilt on open: still refused after a restart.
    let floe = Floe::open(tenant_config(dir.path())).await.unwrap();
    assert_immutable(
        floe.put(key.clone(), json!({"tenant_id": b}))
            .await
            .unwrap_err(),
    );
    assert_eq!(floe.list("acme", "Order", None, 10).await.unwrap().len(), 1);
    floe.close().await.unwrap();
}

/// The documented way to move an entity: delete it, then create it under
/// the new key. Its versions continue past the tombstone, so whichever shard
/// later replays both the re-creation wins.
#[tokio::test]
async fn a_deleted_entity_may_be_re_created_under_another_partition_key() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(tenant_config(dir.path())).await.unwrap();
    let (a, b, _) = tenants(&floe);
    let key = EntityKey::new("acme", "Order", "o-2");
    floe.create(key.clone(), json!({"tenant_id": a}))
        .await
        .unwrap();
    let delete = WriteRequest::delete(key.clone()).partition_key(&a);
    assert_eq!(floe.write(delete).await.unwrap().version, 2);
    let ack = floe
        .create(key.clone(), json!({"tenant_id": b, "moved": true}))
        .await
        .unwrap();
    assert_eq!(
        ack.version, 3,
        "continues past the tombstone on another shard"
    );
    assert_eq!(ack.shard, floe.shard_for_key(&b).shard);
    assert_eq!(floe.get_routed(&key, &a).await.unwrap(), None);
    // Now live under b: a write under a is refused.
    assert_immutable(
        floe.put(key.clone(), json!({"tenant_id": a}))
            .await
            .unwrap_err(),
    );
    floe.close().await.unwrap();
    let floe = Floe::open(tenant_config(dir.path())).await.unwrap();
    let live = floe.list("acme", "Order", None, 10).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (
            live[0].version,
            &live[0].data.to_value().unwrap()["tenant_id"]
        ),
        (3, &json!(b))
    );
    assert_immutable(
        floe.put(key.clone(), json!({"tenant_id": a}))
            .await
            .unwrap_err(),
    );
    floe.close().await.unwrap();
}

/// Creates of one new entity racing under different keys on different
/// shards: never two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_under_different_keys_make_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(tenant_config(dir.path())).await.unwrap();
    let tenants: Vec<String> = (0..8).map(|i| format!("tenant-{i}")).collect();
    for round in 0..30 {
        let key = EntityKey::new("acme", "Order", format!("race-{round}"));
        let writes = tenants.iter().map(|t| {
            let (floe, key) = (floe.clone(), key.clone());
            let data = json!({"tenant_id": t});
            tokio::spawn(async move {
                if round % 2 == 0 {
                    floe.create(key, data).await
                } else {
                    floe.put(key, data).await
                }
            })
        });
        let results = futures::future::join_all(writes).await;
        let mut owners = std::collections::BTreeSet::new();
        for result in results {
            match result.unwrap() {
                Ok(ack) => {
                    owners.insert(ack.shard);
                }
                Err(e) => match engine_error(e) {
                    floe_engine::Error::PartitionKeyImmutable { .. }
                    | floe_engine::Error::AlreadyExists { .. } => {}
                    other => panic!("{other}"),
                },
            }
        }
        assert_eq!(owners.len(), 1, "round {round}: acknowledged on {owners:?}");
    }
    let all = floe.list("acme", "Order", None, 1000).await.unwrap().len();
    assert_eq!(all, 30);
    floe.close().await.unwrap();
}

// ---------------------------------------------------------------- item 4

fn reused(e: Error) {
    let e = engine_error(e);
    assert!(
        matches!(e, floe_engine::Error::IdempotencyKeyReused { .. }),
        "{e}"
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let k1 = EntityKey::new("acme", "Order", "k1");
    let k2 = EntityKey::new("acme", "Order", "k2");
    let first = WriteRequest::upsert(k1.clone(), json!({"a": 1, "b": 2})).idempotency_key("K");
    let ack = floe.write(first.clone()).await.unwrap();
    let before = high_watermarks(&floe).await;
    // The issue's case: the key of k1 on a write of k2.
    let k2_write = WriteRequest::upsert(k2.clone(), json!({"a": 1, "b": 2})).idempotency_key("K");
    reused(floe.write(k2_write.clone()).await.unwrap_err());
    assert_eq!(floe.get(&k2).await.unwrap(), None, "k2 was not stored");
    // Same entity, anything else different.
    let variants = [
        WriteRequest::upsert(k1.clone(), json!({"a": 2, "b": 2})),
        WriteRequest::create(k1.clone(), json!({"a": 1, "b": 2})),
        WriteRequest::update(k1.clone(), json!({"a": 1, "b": 2})),
        WriteRequest::delete(k1.clone()),
        WriteRequest::upsert(k1.clone(), json!({"a": 1, "b": 2})).expected_version(1),
        WriteRequest::upsert(k1.clone(), json!({"a": 1, "b": 2})).partition_key("globex"),
    ];
    for v in variants {
        reused(floe.write(v.idempotency_key("K")).await.unwrap_err());
    }
    // A true retry (also re-serialized differently) gets the original ack.
    assert_eq!(floe.write(first.clone()).await.unwrap(), ack);
    let respelled = Json::parse(r#"{ "b": 2, "a": 1 }"#).unwrap();
    let respelled = WriteRequest::upsert_json(k1.clone(), respelled).idempotency_key("K");
    assert_eq!(floe.write(respelled).await.unwrap(), ack);
    assert_eq!(high_watermarks(&floe).await, before, "nothing was written");
    floe.close().await.unwrap();

    // Across a restart: the window is rebuilt with the fingerprints.
    let floe = Floe::open(config(dir.path())).await.unwrap();
    reused(floe.write(k2_write).await.unwrap_err());
    let patch = WriteRequest::upsert(k1.clone(), json!({"a": 9})).idempotency_key("K");
    reused(floe.write(patch).await.unwrap_err());
    assert_eq!(floe.write(first).await.unwrap(), ack);
    assert_eq!(floe.get(&k2).await.unwrap(), None);
    floe.close().await.unwrap();
}

/// The windows are per shard: a key reused for an entity that routes to
/// another shard is refused too, also when both race, and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_across_shards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.partition_key.default = PartitionKeySpec::id();
    let floe = Floe::open(cfg.clone()).await.unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("e-{i}")).collect();
    let shard = |id: &str| floe.shard_for_key(id).shard;
    let other = ids.iter().find(|id| shard(id) != shard(&ids[0])).unwrap();
    let put = |id: &str, idem: &str| {
        WriteRequest::upsert(EntityKey::new("acme", "Order", id), json!({"n": 1}))
            .idempotency_key(idem)
    };
    floe.write(put(&ids[0], "X")).await.unwrap();
    reused(floe.write(put(other, "X")).await.unwrap_err());
    // Racing: per key, one entity of many on all shards is written.
    for round in 0..20 {
        let idem = format!("race-{round}");
        let writes = ids
            .iter()
            .map(|id| floe.write(put(&format!("{id}-{round}"), &idem)));
        let results = futures::future::join_all(writes).await;
        let acked = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(acked, 1, "round {round}");
        for e in results.into_iter().filter_map(Result::err) {
            reused(e);
        }
    }
    let stored = floe
        .list("acme", "Order", None, 10_000)
        .await
        .unwrap()
        .len();
    assert_eq!(stored, 1 + 20);
    floe.close().await.unwrap();
    let floe = Floe::open(cfg).await.unwrap();
    reused(floe.write(put(other, "X")).await.unwrap_err());
    floe.write(put(&ids[0], "X")).await.unwrap();
    floe.close().await.unwrap();
}

/// A retry and a reuse that arrive in the same group commit as the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_in_the_same_batch_is_refused_and_a_retry_shares_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let shard = floe.shard_for_key("acme").shard;
    for round in 0..4 {
        // Slow the shard so the writes below queue up behind a first batch
        // and are taken together into the next one.
        floe.inject_shard_delay(shard, Duration::from_millis(150))
            .unwrap();
        let blocker = tokio::spawn({
            let floe = floe.clone();
            async move {
                floe.put(EntityKey::new("acme", "Order", "blocker"), json!({}))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
        let idem = format!("batch-{round}");
        let request = |id: &str, n: u64| {
            WriteRequest::upsert(EntityKey::new("acme", "Order", id), json!({ "n": n }))
                .idempotency_key(&idem)
        };
        let original = request("k1", 1);
        let (first, retry, other) = tokio::join!(
            floe.write(original.clone()),
            floe.write(original.clone()),
            floe.write(request("k2", 1)),
        );
        floe.inject_shard_delay(shard, Duration::ZERO).unwrap();
        blocker.await.unwrap().unwrap();
        let first = first.unwrap();
        assert_eq!(retry.unwrap(), first, "round {round}");
        reused(other.unwrap_err());
        assert_eq!(
            floe.get(&EntityKey::new("acme", "Order", "k2"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(floe.write(original).await.unwrap(), first);
        floe.delete(EntityKey::new("acme", "Order", "k1"))
            .await
            .unwrap();
    }
    floe.close().await.unwrap();
}

// ---------------------------------------------------------------- item 5

/// `{"a":{"a":...{}}}` nested `depth` levels.
fn nested(depth: usize) -> String {
    "{\"a\":".repeat(depth - 1) + "{" + &"}".repeat(depth)
}

#[tokio::test]
async fn one_set_of_json_limits_on_every_write_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards.max_payload_bytes = 256 * 1024;
    cfg.shards.max_json_depth = 16;
    let floe = Floe::open(cfg.clone()).await.unwrap();
    let key = EntityKey::new("acme", "Order", "deep");
    floe.put(key.clone(), json!({"n": 0})).await.unwrap();
    let before = high_watermarks(&floe).await;
    // The issue's body: far deeper than any parser's recursion limit.
    let hundred_k = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let too_deep = nested(17);
    let too_large = format!("{{\"pad\":\"{}\"}}", "x".repeat(256 * 1024));
    let duplicate = r#"{"a":1,"a":2}"#.to_string();
    let nested_duplicate = r#"{"a":{"b":1,"c":[{"d":1,"d":1}]}}"#.to_string();
    type Check = fn(&floe_engine::Error) -> bool;
    let cases: [(&str, Check); 5] = [
        (&hundred_k, |e| {
            matches!(e, floe_engine::Error::JsonTooDeep { limit: 16, .. })
        }),
        (&too_deep, |e| {
            matches!(e, floe_engine::Error::JsonTooDeep { .. })
        }),
        (&too_large, |e| {
            matches!(e, floe_engine::Error::PayloadTooLarge { .. })
        }),
        (&duplicate, |e| {
            matches!(e, floe_engine::Error::DuplicateJsonKey { .. })
        }),
        (&nested_duplicate, |e| {
            matches!(e, floe_engine::Error::DuplicateJsonKey { .. })
        }),
    ];
    for (text, check) in cases {
        let json = || Json::parse(text).unwrap();
        let requests = [
            WriteRequest::upsert_json(key.clone(), json()),
            WriteRequest::create_json(EntityKey::new("acme", "Order", "new"), json()),
        ];
        for request in requests {
            let e = engine_error(floe.write(request).await.unwrap_err());
            assert!(check(&e), "{e}");
        }
        // Trees from a library caller: depth and size (a tree cannot hold a
        // duplicate key; the text of one parses to its last value).
        let duplicated = *text == duplicate || *text == nested_duplicate;
        if let Ok(value) = serde_json::from_str::<Value>(text)
            && !duplicated
        {
            for request in [
                WriteRequest::upsert(key.clone(), value.clone()),
                WriteRequest::create(EntityKey::new("acme", "Order", "new"), value.clone()),
                WriteRequest::update(key.clone(), value),
            ] {
                let e = engine_error(floe.write(request).await.unwrap_err());
                assert!(check(&e), "{e}");
            }
        }
    }
    // A patch deeper than the limit, and one that makes the entity too large.
    let deep_patch = json!({"p": serde_json::from_str::<Value>(&nested(16)).unwrap()});
    let e = engine_error(floe.update(key.clone(), deep_patch).await.unwrap_err());
    assert!(
        matches!(
            e,
            floe_engine::Error::JsonTooDeep {
                what: "merge patch",
                ..
            }
        ),
        "{e}"
    );
    let grow = json!({"pad": "y".repeat(256 * 1024)});
    let e = engine_error(floe.update(key.clone(), grow).await.unwrap_err());
    assert!(
        matches!(e, floe_engine::Error::PayloadTooLarge { .. }),
        "{e}"
    );
    assert_eq!(high_watermarks(&floe).await, before, "nothing was written");
    assert_eq!(
        floe.get(&EntityKey::new("acme", "Order", "new"))
            .await
            .unwrap(),
        None
    );

    // At the limit: accepted, patchable, and replayed after a restart.
    let at_limit: Value = serde_json::from_str(&nested(16)).unwrap();
    floe.put(key.clone(), at_limit.clone()).await.unwrap();
    let ack = floe.update(key.clone(), json!({"n": 1})).await.unwrap();
    floe.close().await.unwrap();
    let floe = Floe::open(cfg.clone()).await.unwrap();
    let entity = floe.get(&key).await.unwrap().unwrap();
    assert_eq!(entity.version, ack.version);
    assert_eq!(entity.data.to_value().unwrap()["a"], at_limit["a"]);
    floe.update(key.clone(), json!({"n": 2})).await.unwrap();
    floe.close().await.unwrap();

    // The limit is capped where stored entities stay parseable.
    cfg.shards.max_json_depth = 101;
    let err = Floe::open(cfg).await.unwrap_err().to_string();
    assert!(err.contains("shards.max_json_depth"), "{err}");
}

/// An entity an older build accepted before the limit existed (nested far
/// deeper than any parser allows): recovery replays it, a patch is refused
/// with a typed error, and a put replaces it so it is updatable again.
#[tokio::test]
async fn an_entity_stored_too_deep_by_an_older_build_stays_replaceable() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let key = EntityKey::new("acme", "Order", "old-deep");
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let event = legacy_event(&floe, &key, 1, "acme/Order/old-deep@v1", &deep);
    floe.pipeline().append(&[event]).await.unwrap();
    floe.close().await.unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    assert_eq!(
        floe.get(&key).await.unwrap().unwrap().data.len(),
        deep.len()
    );
    let e = engine_error(floe.update(key.clone(), json!({"n": 1})).await.unwrap_err());
    assert!(
        matches!(
            e,
            floe_engine::Error::JsonTooDeep {
                what: "stored entity",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        floe.put(key.clone(), json!({"n": 1}))
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        floe.update(key.clone(), json!({"m": 2}))
            .await
            .unwrap()
            .version,
        3
    );
    floe.close().await.unwrap();
}
