//! floe-client against a real `floe serve` process: every call kind, the
//! typed errors, a write retried across a SIGKILL and a restart, and the
//! shard map following a shard-count migration under writes.

#[path = "../../tests/support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use floe_client::{
    Client, ClusterMap, EntityKey, Error, JobStatus, MigrationKind, Mode, RetryPolicy, ShardState,
    SqlQuery, Write,
};
use serde_json::json;
use server::{ADMIN, FloeServer, OPERATOR, VIEWER};

fn client(server: &FloeServer, token: &str) -> Client {
    Client::builder(server.base.as_str())
        .token(token)
        .build()
        .unwrap()
}

fn key(tenant: &str, id: &str) -> EntityKey {
    EntityKey::new(tenant, "Order", id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    let floe = client(&server, ADMIN);

    let map: ClusterMap = floe.cluster_map().await.unwrap();
    assert_eq!(map.mode, Mode::Single);
    assert_eq!(map.cluster_id, None);
    assert_eq!(map.node_id, "local");
    assert_eq!(map.topology.shard_count, 4);
    assert_eq!(map.nodes.len(), 1);
    assert_eq!(map.nodes[0].advertised_addr, server.base);
    assert!(map.nodes[0].live && map.nodes[0].leader);
    let shards: Vec<(u32, &str, u64, ShardState)> = map
        .shards
        .iter()
        .map(|s| (s.shard, s.node_id.as_str(), s.owner_epoch, s.state))
        .collect();
    assert_eq!(
        shards,
        (0..4)
            .map(|s| (s, "local", 0, ShardState::Serving))
            .collect::<Vec<_>>()
    );

    // Writes: put, create, update (merge patch), delete.
    let ada = key("acme", "o-1");
    let ack = floe
        .put(ada.clone(), json!({"item": "tea", "qty": 1}))
        .await
        .unwrap();
    assert_eq!((ack.version, ack.key.clone()), (1, ada.clone()));
    assert_eq!(Some(ack.shard), floe.shard_of(&ada, None));
    assert!(!ack.idempotency_key.is_empty());
    let created = floe
        .create(key("acme", "o/2 with space"), json!({"item": "cake"}))
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    let updated = floe
        .write(Write::update(ada.clone(), json!({"qty": 2})).expected_version(1))
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    let got = floe.get(&ada).await.unwrap().expect("written");
    assert_eq!(got.version, 2);
    assert_eq!(
        got.data.to_value().unwrap(),
        json!({"item": "tea", "qty": 2})
    );
    let odd = floe
        .get(&key("acme", "o/2 with space"))
        .await
        .unwrap()
        .expect("an id with a slash is one path segment");
    assert_eq!(odd.data.to_value().unwrap(), json!({"item": "cake"}));
    let routed = floe.get_routed(&ada, "acme").await.unwrap().unwrap();
    assert_eq!(routed.version, 2);

    // A non-ASCII idempotency key travels as written: the retry is answered
    // by the first write.
    let retried =
        || Write::put(key("unicode", "o-ключ"), json!({"n": 1})).idempotency_key("ключ-7");
    let first = floe.write(retried()).await.unwrap();
    let again = floe.write(retried()).await.unwrap();
    assert_eq!(first.idempotency_key, "ключ-7");
    assert_eq!((first.version, again.version), (1, 1));
    assert_eq!(first.event_id, again.event_id);

    // Lists page in id order.
    for i in 3..8 {
        floe.put(key("acme", &format!("o-{i}")), json!({"i": i}))
            .await
            .unwrap();
    }
    let first = floe.list("acme", "Order", None, Some(4)).await.unwrap();
    assert_eq!(first.entities.len(), 4);
    let after = first.next_after.clone().expect("a full page has more");
    let rest = floe
        .list("acme", "Order", Some(&after), Some(100))
        .await
        .unwrap();
    assert_eq!(rest.next_after, None);
    let ids: Vec<String> = first
        .entities
        .iter()
        .chain(&rest.entities)
        .map(|e| e.key.id.clone())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 7);

    let deleted = floe.delete(key("acme", "o-7")).await.unwrap();
    assert_eq!(deleted.version, 2);
    assert_eq!(floe.get(&key("acme", "o-7")).await.unwrap(), None);

    // SQL over the lake, fresh: the writes the sink has not landed yet too.
    let result = floe
        .sql_with(&SqlQuery {
            fresh: true,
            ..SqlQuery::new(
                "SELECT entity_id FROM events WHERE namespace = 'acme' ORDER BY entity_id",
            )
        })
        .await
        .unwrap();
    assert_eq!(result.columns[0].name, "entity_id");
    // 8 puts/creates, 1 update, 1 delete.
    assert_eq!(result.rows.len(), 9, "{:?}", result.rows);

    // Migrations: plan, list, start, status.
    let planned = floe.plan_migration(&MigrationKind::AddShard).await.unwrap();
    assert_eq!(planned.plan["to"]["shard_count"], json!(5));
    assert!(floe.migrations().await.unwrap().migrations.is_empty());
    let started = floe
        .start_migration(&MigrationKind::AddShard)
        .await
        .unwrap();
    let job = wait_for_migration(&floe, &started.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!((job.from.shard_count, job.to.shard_count), (4, 5));
    let listed = floe.migrations().await.unwrap();
    assert_eq!(listed.running, None);
    assert_eq!(listed.migrations[0].id, started.id);
    // Cancelling one that does not run: a typed not-found.
    match floe.cancel_migration(&started.id).await {
        Err(Error::NotFound { code, .. }) => assert_eq!(code, "migration_not_found"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Every entity survived the move.
    assert_eq!(floe.get(&ada).await.unwrap().unwrap().version, 2);
}

async fn wait_for_migration(floe: &Client, id: &str) -> floe_client::MigrationJob {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = floe.migration(id).await.unwrap();
        if status.progress.is_none() && status.job.status != JobStatus::Running {
            return status.job;
        }
        assert!(
            Instant::now() < deadline,
            "migration never ended: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_class_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    let floe = client(&server, OPERATOR);
    let k = key("acme", "o-1");
    floe.put(k.clone(), json!({"n": 1})).await.unwrap();

    let e = floe.delete(key("acme", "nobody")).await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { code, .. } if code == "not_found"),
        "{e}"
    );
    let e = floe
        .write(Write::put(k.clone(), json!({"n": 2})).expected_version(7))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::VersionConflict { .. }), "{e}");
    let e = floe.create(k.clone(), json!({"n": 3})).await.unwrap_err();
    assert!(
        matches!(&e, Error::Conflict { code, .. } if code == "already_exists"),
        "{e}"
    );
    let e = floe.put(k.clone(), json!([1, 2])).await.unwrap_err();
    assert!(
        matches!(&e, Error::BadRequest { status: 400, code, .. } if code == "invalid_entity"),
        "{e}"
    );
    let e = floe.sql("SELECT nope FROM nowhere").await.unwrap_err();
    assert!(
        matches!(&e, Error::BadRequest { code, .. } if code == "bad_sql"),
        "{e}"
    );
    // One idempotency key for two different writes.
    floe.write(Write::put(key("acme", "o-2"), json!({"a": 1})).idempotency_key("k-1"))
        .await
        .unwrap();
    let e = floe
        .write(Write::put(key("acme", "o-2"), json!({"a": 2})).idempotency_key("k-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadRequest { status: 422, code, .. } if code == "idempotency_key_reused"),
        "{e}"
    );
    // An operator may not run migrations; a viewer may not write.
    let e = floe
        .start_migration(&MigrationKind::AddShard)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    let e = client(&server, VIEWER)
        .put(k.clone(), json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    let e = client(&server, "not-a-token-at-all-0000")
        .get(&k)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Unauthorized { .. }) && !e.is_retryable(),
        "{e}"
    );
    // Nothing of the refused writes was applied.
    let entity = floe.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (entity.version, entity.data.to_value().unwrap()),
        (1, json!({"n": 1}))
    );

    // Nobody listens: retried until the deadline, then the connect error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = Client::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            deadline: Duration::from_millis(400),
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let e = nowhere.get(&k).await.unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. }) && e.is_retryable(),
        "{e}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Something that is not floe: the answer does not decode.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    let e = Client::builder(format!("http://{addr}"))
        .build()
        .unwrap()
        .get(&k)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Decode { .. }) && !e.is_retryable(),
        "{e}"
    );

    let e = Client::builder("localhost:8080").build().unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_across_a_kill_and_restart_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FloeServer::start(dir.path(), "", "fault_injection = true", "");
    let listen = server.base.strip_prefix("http://").unwrap().to_string();
    let floe = Client::builder(server.base.as_str())
        .token(ADMIN)
        .retry(RetryPolicy {
            deadline: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let k = key("acme", "o-1");
    let first = floe
        .write(Write::put(k.clone(), json!({"n": 1})).idempotency_key("put-1"))
        .await
        .unwrap();
    let shard = floe.shard_of(&k, None).unwrap();
    assert_eq!(first.shard, shard);

    // The shard holds the next write back, so it is in flight when the
    // server dies: the client sees its connection reset, then refused.
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/admin/faults/shards/{shard}"),
            Some(ADMIN),
            Some(r#"{"delay_ms": 5000}"#),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let in_flight = {
        let (floe, k) = (floe.clone(), k.clone());
        tokio::spawn(async move {
            floe.write(Write::update(k, json!({"m": 2})).idempotency_key("patch-2"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!in_flight.is_finished());
    server.kill();
    // The map too is read again once the node answers.
    let map = {
        let floe = floe.clone();
        tokio::spawn(async move { floe.cluster_map().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!map.is_finished());
    let server = FloeServer::start_at(dir.path(), &listen, "", "fault_injection = true", "");
    let ack = in_flight
        .await
        .unwrap()
        .expect("the write succeeds once the server is back");
    assert_eq!(ack.version, 2);
    assert_eq!(map.await.unwrap().unwrap().topology.shard_count, 4);

    // The same keys again: the original outcomes, nothing applied twice,
    // also for the write acknowledged before the restart.
    let again = floe
        .write(Write::update(k.clone(), json!({"m": 2})).idempotency_key("patch-2"))
        .await
        .unwrap();
    assert_eq!((again.version, again.event_id), (ack.version, ack.event_id));
    let again = floe
        .write(Write::put(k.clone(), json!({"n": 1})).idempotency_key("put-1"))
        .await
        .unwrap();
    assert_eq!((again.version, again.event_id), (1, first.event_id));
    let entity = floe.get(&k).await.unwrap().unwrap();
    assert_eq!(entity.version, 2);
    assert_eq!(entity.data.to_value().unwrap(), json!({"n": 1, "m": 2}));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_follows_a_shard_count_migration_under_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    let floe = client(&server, ADMIN);
    let tenants: Vec<String> = (0..20).map(|t| format!("t{t}")).collect();
    let before = floe.cluster_map().await.unwrap();
    assert_eq!(before.topology.shard_count, 4);
    // Some tenant changes shard when a fifth shard comes (else this test
    // could not see the map go stale).
    let after = floe_engine::Router::new(before.topology.with_shard_count(5).unwrap()).unwrap();
    let old = floe_engine::Router::new(before.topology.clone()).unwrap();
    assert!(
        tenants
            .iter()
            .any(|t| old.shard_info(t).shard != after.shard_info(t).shard)
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (floe, stop, tenants) = (floe.clone(), stop.clone(), tenants.clone());
        tokio::spawn(async move {
            let mut acked = std::collections::BTreeMap::new();
            let mut n = 0u64;
            // Until told to stop, and at least one round over every tenant
            // after the migration ended.
            while !stop.load(std::sync::atomic::Ordering::Acquire) || !n.is_multiple_of(20) {
                let k = key(&tenants[(n % 20) as usize], &format!("o{}", n % 100));
                let ack = floe
                    .put(k.clone(), json!({"n": n}))
                    .await
                    .unwrap_or_else(|e| panic!("write {n} surfaced an error: {e}"));
                acked.insert(k, (ack.version, n));
                n += 1;
            }
            (acked, n)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = floe
        .start_migration(&MigrationKind::AddShard)
        .await
        .unwrap();
    let job = wait_for_migration(&floe, &started.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (acked, writes) = writer.await.unwrap();
    assert!(writes >= 40, "only {writes} writes");
    // A write acknowledged on another shard than the old map said made the
    // client read the map again.
    floe.get(&key("t0", "o0")).await.unwrap();
    let map = floe.cached_map().unwrap();
    assert_eq!(map.topology.shard_count, 5);
    assert!(map.routing_epoch > before.routing_epoch);
    assert_eq!(map.shards.len(), 5);
    for t in &tenants {
        assert_eq!(
            floe.shard_of(&key(t, "o0"), None),
            Some(after.shard_info(t).shard)
        );
    }
    for (k, (version, n)) in &acked {
        let entity = floe.get(k).await.unwrap().expect("acknowledged");
        assert_eq!(entity.version, *version, "{k:?}");
        assert_eq!(entity.data.to_value().unwrap(), json!({"n": n}));
    }
}
