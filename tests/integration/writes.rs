//! The write path end to end: acks, reads, idempotency, conflicts and every
//! bad input, against a real data directory.

use floe::{Config, EntityKey, Error, Floe, FsyncMode, PartitionKeySpec, WriteRequest};
use serde_json::json;

#[path = "../support/writes.rs"]
mod writes_support;

use writes_support::{engine_error, high_watermarks};

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config
}

#[tokio::test]
async fn write_read_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let key = EntityKey::new("acme", "Order", "o-1");
    let ack = floe
        .create(key.clone(), json!({"status": "placed", "total": 12}))
        .await
        .unwrap();
    assert_eq!(ack.version, 1);
    assert_eq!(ack.shard, floe.shard_for_key("acme").shard);
    let ack = floe
        .update(key.clone(), json!({"status": "paid"}))
        .await
        .unwrap();
    assert_eq!(ack.version, 2);
    let entity = floe.get(&key).await.unwrap().unwrap();
    assert_eq!(
        entity.data.to_value().unwrap(),
        json!({"status": "paid", "total": 12})
    );
    assert_eq!(entity.version, 2);
    floe.delete(key.clone()).await.unwrap();
    assert_eq!(floe.get(&key).await.unwrap(), None);
    floe.close().await.unwrap();
}

#[tokio::test]
async fn list_merges_every_shard_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Route by id so one namespace's entities spread over every shard.
    config.partition_key.default = PartitionKeySpec::id();
    let floe = Floe::open(config).await.unwrap();
    for i in (0..40).rev() {
        floe.put(
            EntityKey::new("acme", "Item", format!("i-{i:02}")),
            json!({"i": i}),
        )
        .await
        .unwrap();
    }
    let shards: std::collections::BTreeSet<u32> = (0..40)
        .map(|i| floe.shard_for_key(&format!("i-{i:02}")).shard)
        .collect();
    assert!(
        shards.len() > 1,
        "the test needs entities on several shards"
    );
    let page = floe.list("acme", "Item", None, 5).await.unwrap();
    let ids: Vec<_> = page.iter().map(|e| e.key.id.as_str()).collect();
    assert_eq!(ids, ["i-00", "i-01", "i-02", "i-03", "i-04"]);
    let next = floe.list("acme", "Item", Some("i-04"), 100).await.unwrap();
    assert_eq!(next.len(), 35);
    assert_eq!(next[0].key.id, "i-05");
    floe.close().await.unwrap();
}

#[tokio::test]
async fn idempotent_retry_returns_the_first_ack_and_emits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let key = EntityKey::new("acme", "Payment", "p-1");
    let request = WriteRequest::create(key.clone(), json!({"amount": 5})).idempotency_key("pay-1");
    let first = floe.write(request.clone()).await.unwrap();
    let before = high_watermarks(&floe).await;
    let retry = floe.write(request).await.unwrap();
    assert_eq!(first, retry);
    assert_eq!(
        before,
        high_watermarks(&floe).await,
        "a retry appended an event"
    );
    // The same key on a different change is refused (issue 11): the first
    // outcome stands and nothing else is written.
    let other = WriteRequest::update(key.clone(), json!({"amount": 6})).idempotency_key("pay-1");
    assert!(matches!(
        engine_error(floe.write(other).await.unwrap_err()),
        floe_engine::Error::IdempotencyKeyReused { .. }
    ));
    assert_eq!(
        floe.get(&key)
            .await
            .unwrap()
            .unwrap()
            .data
            .to_value()
            .unwrap(),
        json!({"amount": 5})
    );
    floe.close().await.unwrap();

    // The window survives a restart: it is rebuilt from the log.
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let again = WriteRequest::create(key, json!({"amount": 5})).idempotency_key("pay-1");
    assert_eq!(floe.write(again).await.unwrap(), first);
    floe.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_retries_in_one_batch_get_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let key = EntityKey::new("acme", "Payment", "p-2");
    let writes = (0..20).map(|_| {
        let floe = floe.clone();
        let request =
            WriteRequest::upsert(key.clone(), json!({"amount": 1})).idempotency_key("same");
        tokio::spawn(async move { floe.write(request).await.unwrap() })
    });
    let acks: Vec<_> = futures::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(acks.iter().all(|a| *a == acks[0]));
    assert_eq!(floe.get(&key).await.unwrap().unwrap().version, 1);
    assert_eq!(high_watermarks(&floe).await.iter().sum::<u64>(), 1);
    floe.close().await.unwrap();
}

#[tokio::test]
async fn bad_inputs_are_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.partition_key.default = PartitionKeySpec::parse(&["tenant_id"])
        .unwrap()
        .with_strict(true);
    config.shards.max_payload_bytes = 256;
    let floe = Floe::open(config).await.unwrap();
    let key = EntityKey::new("acme", "Order", "o-1");
    floe.create(key.clone(), json!({"tenant_id": "t1", "n": 1}))
        .await
        .unwrap();

    let err = |e: Error| engine_error(e);
    let missing = err(floe
        .put(EntityKey::new("acme", "Order", "o-2"), json!({"n": 1}))
        .await
        .unwrap_err());
    assert!(
        matches!(missing, floe_engine::Error::MissingPartitionKey { .. }),
        "{missing}"
    );
    let malformed = floe::Json::parse("{\"tenant_id\": \"t1\",").unwrap_err();
    assert!(
        matches!(malformed, floe_engine::Error::MalformedJson(_)),
        "{malformed}"
    );
    let body = floe::Json::parse(r#"{"tenant_id": "t1", "blob": "<300 bytes>"}"#).unwrap();
    let fits = floe
        .put_json(EntityKey::new("acme", "Order", "o-9"), body)
        .await
        .unwrap();
    assert_eq!(fits.version, 1, "JSON text is routed by its fields too");
    let before = high_watermarks(&floe).await;
    let not_object = err(floe.put(key.clone(), json!([1, 2])).await.unwrap_err());
    assert!(
        matches!(not_object, floe_engine::Error::InvalidEntity { .. }),
        "{not_object}"
    );
    let big = json!({"tenant_id": "t1", "blob": "x".repeat(300)});
    let too_big = err(floe.put(key.clone(), big).await.unwrap_err());
    assert!(
        matches!(
            too_big,
            floe_engine::Error::PayloadTooLarge { limit: 256, .. }
        ),
        "{too_big}"
    );
    let conflict = err(floe
        .write(
            WriteRequest::update(key.clone(), json!({"n": 2}))
                .partition_key("t1")
                .expected_version(7),
        )
        .await
        .unwrap_err());
    assert!(matches!(
        conflict,
        floe_engine::Error::VersionConflict {
            expected: 7,
            actual: 1,
            ..
        }
    ));
    let exists = err(floe
        .create(key.clone(), json!({"tenant_id": "t1"}))
        .await
        .unwrap_err());
    assert!(matches!(exists, floe_engine::Error::AlreadyExists { .. }));
    let no_such = err(floe
        .write(WriteRequest::delete(EntityKey::new("acme", "Order", "nope")).partition_key("t1"))
        .await
        .unwrap_err());
    assert!(matches!(no_such, floe_engine::Error::NotFound { .. }));
    let empty_id = err(floe
        .put(
            EntityKey::new("acme", "Order", ""),
            json!({"tenant_id": "t1"}),
        )
        .await
        .unwrap_err());
    assert!(
        empty_id.to_string().contains("id must not be empty"),
        "{empty_id}"
    );
    let moved = err(floe
        .put(key.clone(), json!({"tenant_id": "t2"}))
        .await
        .unwrap_err());
    // Routed by the new key it lands on another shard (not found there) or on the
    // same one (immutable key): either way nothing is written.
    assert!(!moved.is_retryable());
    let unknown = err(floe.shard(99).await.unwrap_err());
    assert!(matches!(
        unknown,
        floe_engine::Error::UnknownShard {
            shard: 99,
            shard_count: 4
        }
    ));

    assert_eq!(
        before,
        high_watermarks(&floe).await,
        "a refused write reached the log"
    );
    let entity = floe.get_routed(&key, "t1").await.unwrap().unwrap();
    assert_eq!(
        (entity.version, entity.data.to_value().unwrap()),
        (1, json!({"tenant_id": "t1", "n": 1}))
    );
    floe.close().await.unwrap();
}

#[tokio::test]
async fn a_data_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let second = Floe::open(config(dir.path())).await.unwrap_err();
    assert!(matches!(second, Error::Locked { .. }), "{second}");
    assert!(
        second
            .to_string()
            .contains("in use by another floe process")
    );
    floe.close().await.unwrap();
    let closed = floe
        .put(EntityKey::new("a", "b", "c"), json!({}))
        .await
        .unwrap_err();
    assert!(closed.to_string().contains("closed"), "{closed}");
    drop(floe);
    Floe::open(config(dir.path()))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn topology_is_persisted_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let topology = floe.topology();
    assert_eq!((topology.version, topology.shard_count), (1, 4));
    floe.close().await.unwrap();
    drop(floe);
    let mut other = config(dir.path());
    other.topology.shards = 9;
    let floe = Floe::open(other).await.unwrap();
    assert_eq!(
        floe.topology(),
        topology,
        "an existing directory keeps its topology"
    );
    floe.close().await.unwrap();
}

#[tokio::test]
async fn a_custom_extractor_routes_children_with_their_parent() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.topology.shards = 8;
    // Orders route by id; an OrderItem routes by the order it belongs to.
    let extractor = floe::KeyExtractor::new(PartitionKeySpec::id()).with_custom(Arc::new(
        |key: &EntityKey, data: Option<&serde_json::Value>| {
            (key.entity_type == "OrderItem")
                .then(|| data?.get("order_id")?.as_str().map(str::to_string))
                .flatten()
        },
    ));
    let floe = Floe::open_with_extractor(config, extractor).await.unwrap();
    for order in 0..20 {
        let order_id = format!("order-{order}");
        let parent = floe
            .put(EntityKey::new("acme", "Order", &order_id), json!({}))
            .await
            .unwrap();
        for line in 0..3 {
            let item = EntityKey::new("acme", "OrderItem", format!("{order_id}-{line}"));
            let ack = floe
                .put(item, json!({ "order_id": order_id }))
                .await
                .unwrap();
            assert_eq!(
                ack.shard, parent.shard,
                "item of {order_id} left its order's shard"
            );
        }
    }
    floe.close().await.unwrap();
}
