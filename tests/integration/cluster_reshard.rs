//! Shard-count migrations across a cluster of real processes (etcd, tansu,
//! `floe serve` nodes, the shared lake): `POST /api/v1/migrations` on one
//! node asks for a reshard, every node pauses, the leader cuts the topology
//! over in etcd, and every shard is restored under the new topology on the
//! node the controller places it on. Writers using floe-client see a pause
//! and never an error; every acknowledged write reads back from every node
//! and lands in the lake exactly once. Without etcd or the broker these
//! tests fail.

#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/cluster_lake.rs"]
mod cluster_lake;
#[path = "../support/cluster_load.rs"]
mod cluster_load;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster::{Caller, Harness, Node, SHARDS};
use cluster_load::{balanced, check, start_load};
use reqwest::Method;
use serde_json::{Value, json};

/// Starts a migration of `kind` through `node` and waits until `other`
/// reports it completed; returns its id and how long it took.
async fn reshard(node: &Node, other: &Node, kind: Value) -> (String, Duration) {
    let caller = Caller::new();
    let started = Instant::now();
    let answer = caller
        .once(
            Method::POST,
            &node.addr(),
            "/api/v1/migrations",
            Some(&kind),
            None,
        )
        .await
        .expect("the node answers");
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let status = caller
            .once(
                Method::GET,
                &other.addr(),
                &format!("/api/v1/migrations/{id}"),
                None,
                None,
            )
            .await;
        if let Some(status) = status.filter(|s| s.status == 200) {
            let job = &status.body["job"];
            match job["status"].as_str() {
                Some("completed") => return (id, started.elapsed()),
                Some("running") => {}
                _ => panic!("reshard {id}: {}", status.body),
            }
        }
        assert!(Instant::now() < until, "reshard {id} never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shard count each node's cluster map shows.
async fn map_shard_count(node: &Node) -> u64 {
    let answer = Caller::new()
        .once(Method::GET, &node.addr(), "/api/v1/cluster", None, None)
        .await
        .expect("the node answers");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["topology"]["shard_count"].as_u64().unwrap()
}

/// Latencies (first send to acknowledgement) of the writes in flight during
/// `[from, to]`, every shard: (p99, max).
fn pause(acked: &[cluster_load::Acked], from: Instant, to: Instant) -> (Duration, Duration) {
    let mut waits: Vec<Duration> = acked
        .iter()
        .filter(|a| a.at >= from && a.sent <= to)
        .map(|a| a.at - a.sent)
        .collect();
    assert!(!waits.is_empty(), "no write in flight during the reshard");
    waits.sort();
    let p99 = waits[((waits.len() - 1) as f64 * 0.99).round() as usize];
    (p99, *waits.last().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_then_removing_a_shard_across_the_cluster_under_load_loses_and_fails_nothing() {
    let harness = Harness::start().await.with_lake();
    let n1 = harness.node("n1");
    let n2 = harness.node("n2");
    balanced(&harness, &[&n1, &n2], SHARDS, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(vec![n1.base(), n2.base()], stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A second request while one runs, or one planned against an older
    // topology, is refused; neither changes anything (the etcd tests in
    // floe-cluster cover both; here only the successful path over HTTP).
    let grow_from = Instant::now();
    let (grown, grow_took) = reshard(&n1, &n2, json!({ "kind": "add_shard" })).await;
    balanced(&harness, &[&n1, &n2], SHARDS + 1, Duration::from_secs(60)).await;
    let grown_at = Instant::now();
    assert_eq!(map_shard_count(&n1).await, u64::from(SHARDS) + 1);
    assert_eq!(map_shard_count(&n2).await, u64::from(SHARDS) + 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Shrinking goes through the same path, asked on the other node.
    let shrink_from = Instant::now();
    let (shrunk, shrink_took) =
        reshard(&n2, &n1, json!({ "kind": "remove_shard", "shard": SHARDS })).await;
    balanced(&harness, &[&n1, &n2], SHARDS, Duration::from_secs(60)).await;
    let shrunk_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    let load = load.await.unwrap();

    // Writes acknowledged on the added shard while it existed: the routing
    // really changed, the writers followed it.
    let on_new_shard = load
        .acked
        .iter()
        .filter(|a| a.shard == SHARDS && a.at >= grown_at)
        .count();
    let (grow_p99, grow_max) = pause(&load.acked, grow_from, grown_at);
    let (shrink_p99, shrink_max) = pause(&load.acked, shrink_from, shrunk_at);
    println!(
        "reshard: {grown} (add_shard) completed in {grow_took:?}, write pause p99 {grow_p99:?} max {grow_max:?}; \
         {shrunk} (remove_shard) completed in {shrink_took:?}, write pause p99 {shrink_p99:?} max {shrink_max:?}; \
         {} writes acknowledged, {on_new_shard} on the added shard, {} failed",
        load.acked.len(),
        load.failed.len()
    );
    assert!(on_new_shard > 0, "no write reached the added shard");
    check(&harness, &load, &[n1.base(), n2.base()]).await;

    // The last reshard is listed with its outcome (etcd keeps the last
    // one), and none runs.
    let list = Caller::new()
        .once(Method::GET, &n1.addr(), "/api/v1/migrations", None, None)
        .await
        .unwrap();
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["running"], Value::Null, "{}", list.body);
    assert!(
        list.body["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == shrunk.as_str() && j["status"] == "completed"),
        "{}",
        list.body
    );
    for node in [&n1, &n2] {
        let out = node.output();
        assert!(!out.contains("panicked"), "{}: {out}", node.id);
        assert!(
            out.contains("reshard: routing by the new topology"),
            "{} adopted the new topology: {out}",
            node.id
        );
    }
}

/// `POST` of `body` to `path` on `node`.
async fn post(node: &Node, path: &str, body: Option<&Value>) -> cluster::Answer {
    Caller::new()
        .once(Method::POST, &node.addr(), path, body, None)
        .await
        .expect("the node answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshard_a_live_node_never_pauses_for_is_refused_twice_then_cancelled_and_nothing_changes()
 {
    let harness = Harness::start().await.with_lake();
    let n1 = harness.node("n1");
    let n2 = harness.node("n2");
    balanced(&harness, &[&n1, &n2], SHARDS, Duration::from_secs(60)).await;
    // A live member that runs no floe (so never pauses), draining so that
    // nothing is placed on it: the reshard waits for it until cancelled.
    let client = harness.etcd.client().await.unwrap();
    let phantom_config = harness.cluster_config("n9", cluster::free_port());
    let phantom = floe_cluster::Member::join(&client, &phantom_config)
        .await
        .unwrap();
    floe_cluster::drain(&client, &phantom_config, "n9")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(vec![n1.base(), n2.base()], stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let paused_from = Instant::now();
    let answer = post(
        &n1,
        "/api/v1/migrations",
        Some(&json!({ "kind": "add_shard" })),
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    // One reshard at a time, whichever node is asked.
    let second = post(
        &n2,
        "/api/v1/migrations",
        Some(&json!({ "kind": "add_shard" })),
    )
    .await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(
        second.body["error"]["code"], "already_migrating",
        "{}",
        second.body
    );
    // Both nodes pause; the cutover waits for n9.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let paused = floe_cluster::paused_nodes(&client, &phantom_config)
            .await
            .unwrap();
        if ["n1", "n2"].iter().all(|n| paused.get(*n) == Some(&id)) {
            break;
        }
        assert!(Instant::now() < until, "the nodes never paused: {paused:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_paused_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = Caller::new()
        .once(
            Method::GET,
            &n2.addr(),
            &format!("/api/v1/migrations/{id}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status.body["job"]["status"], "running", "{}", status.body);

    let cancelled_at = Instant::now();
    let cancel = post(&n2, &format!("/api/v1/migrations/{id}/cancel"), None).await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = Caller::new()
            .once(
                Method::GET,
                &n1.addr(),
                &format!("/api/v1/migrations/{id}"),
                None,
                None,
            )
            .await
            .unwrap();
        if status.body["job"]["status"] == "rolled_back" {
            assert_eq!(status.body["job"]["error"], "cancelled", "{}", status.body);
            break;
        }
        assert!(Instant::now() < until, "never rolled back: {}", status.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A finished reshard cannot be cancelled again.
    let again = post(&n1, &format!("/api/v1/migrations/{id}/cancel"), None).await;
    assert_eq!(again.status, 409, "{}", again.body);
    balanced(&harness, &[&n1, &n2], SHARDS, Duration::from_secs(60)).await;
    let resumed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    let load = load.await.unwrap();
    drop(phantom);

    let (p99, max) = pause(&load.acked, paused_from, resumed_at);
    println!(
        "cancelled reshard: write pause p99 {p99:?} max {max:?}; {} writes acknowledged, {} failed",
        load.acked.len(),
        load.failed.len()
    );
    // Nothing is acknowledged while every node has paused.
    let during: Vec<_> = load
        .acked
        .iter()
        .filter(|a| a.at > all_paused_at && a.at < cancelled_at)
        .collect();
    assert!(during.is_empty(), "acknowledged while paused: {during:?}");
    assert_eq!(map_shard_count(&n1).await, u64::from(SHARDS));
    assert_eq!(map_shard_count(&n2).await, u64::from(SHARDS));
    assert!(
        load.acked.iter().all(|a| a.shard < SHARDS),
        "a write landed on a shard of the cancelled topology"
    );
    check(&harness, &load, &[n1.base(), n2.base()]).await;
    for node in [&n1, &n2] {
        let out = node.output();
        assert!(!out.contains("panicked"), "{}: {out}", node.id);
        assert!(
            !out.contains("reshard: routing by the new topology"),
            "{} adopted a cancelled topology: {out}",
            node.id
        );
    }
}
