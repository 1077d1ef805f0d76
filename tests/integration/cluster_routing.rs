//! Request routing in a real cluster (etcd, tansu, three `floe serve`
//! processes): every node accepts every call and forwards it to the shard's
//! owner once, authenticated with the cluster token; `GET /api/v1/cluster`
//! is the map etcd holds, and floe-client routes by it straight to the
//! owners; a writer that talks to one node only loses nothing across a
//! SIGKILL of another. Without etcd or the broker these tests fail.

#[path = "../support/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{CLUSTER_TOKEN, Caller, Harness, Node, SHARDS};
use floe_client::{Client, EntityKey, KeyExtractor, Mode, PartitionKeySpec, ShardState};
use reqwest::Method;
use serde_json::{Value, json};

/// `GET /api/v1/cluster` of a node.
async fn map_of(caller: &Caller, node: &Node) -> Value {
    let answer = caller
        .call(
            Method::GET,
            &[node.addr()],
            "/api/v1/cluster",
            None,
            None,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// Waits until every node's map has every shard granted to a live node, and
/// each node serves (restored) the shards granted to it. Returns n1's map.
async fn settled(caller: &Caller, nodes: &[&Node]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut maps = Vec::new();
        for node in nodes {
            maps.push(map_of(caller, node).await);
        }
        let live: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let done = maps.iter().zip(nodes).all(|(map, node)| {
            let shards = map["shards"].as_array().unwrap();
            shards.len() == SHARDS as usize
                && shards.iter().all(|s| {
                    let owner = s["node_id"].as_str().unwrap_or_default();
                    live.contains(owner)
                        && s["state"] == "serving"
                        && (owner != node.id || s["addr"] == format!("http://{}", node.addr()))
                })
                // Every node sees the same owners.
                && shards
                    .iter()
                    .zip(maps[0]["shards"].as_array().unwrap())
                    .all(|(a, b)| a["node_id"] == b["node_id"] && a["owner_epoch"] == b["owner_epoch"])
                // Every node holds its share: a node that joined after the
                // others takes it with planned handovers, so the shards all
                // serve (on the others) before it has any.
                && live.iter().all(|id| {
                    shards.iter().filter(|s| s["node_id"] == id.as_str()).count()
                        >= SHARDS as usize / live.len()
                })
        });
        if done {
            return maps.swap_remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle: {maps:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of `floe_forwarded_calls_total{outcome}` on a node (0 if absent).
async fn forwards(caller: &Caller, node: &Node, outcome: &str) -> u64 {
    let text = caller
        .http
        .get(format!("{}/metrics", node.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("floe_forwarded_calls_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The shard -> owner node id table of a map.
fn owners(map: &Value) -> BTreeMap<u32, String> {
    map["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard"].as_u64().unwrap() as u32,
                s["node_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_accepts_every_call_and_forwards_it_to_the_owner_once_with_the_cluster_token() {
    let harness = Harness::start().await;
    let nodes = [harness.node("n1"), harness.node("n2"), harness.node("n3")];
    let caller = Caller::new();
    let map = settled(&caller, &nodes.iter().collect::<Vec<_>>()).await;

    // The map is etcd's: cluster mode, three live nodes with their
    // addresses, one leader, every shard's owner with its epoch and address.
    assert_eq!(map["mode"], "cluster", "{map}");
    assert_eq!(map["cluster_id"], "test", "{map}");
    assert_eq!(map["node_id"], "n1", "{map}");
    assert_eq!(map["topology"]["shard_count"], SHARDS, "{map}");
    let listed: Vec<(String, String, bool)> = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["advertised_addr"].as_str().unwrap().to_string(),
                n["live"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, bool)> = nodes
        .iter()
        .map(|n| (n.id.clone(), format!("http://{}", n.addr()), true))
        .collect();
    assert_eq!(listed, expected, "{map}");
    let leaders = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["leader"] == true)
        .count();
    assert_eq!(leaders, 1, "{map}");
    let epochs: Vec<u64> = map["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["owner_epoch"].as_u64().unwrap())
        .collect();
    assert!(epochs.iter().all(|e| *e > 0), "{map}");
    assert_eq!(
        map["routing_epoch"].as_u64(),
        epochs.iter().max().copied(),
        "{map}"
    );
    let owner_of = owners(&map);
    let addr_of: BTreeMap<String, String> =
        nodes.iter().map(|n| (n.id.clone(), n.addr())).collect();
    for s in map["shards"].as_array().unwrap() {
        let owner = s["node_id"].as_str().unwrap();
        assert_eq!(s["addr"], format!("http://{}", addr_of[owner]), "{map}");
    }
    let per_node: BTreeSet<&String> = owner_of.values().collect();
    assert_eq!(per_node.len(), 3, "every node owns shards: {map}");

    // Writes sent to n1 only: put, then patch and delete through n2, then a
    // batch through n3. Each is acknowledged, by the owner when it is
    // another node (the answer says which).
    let mut oracle: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    let mut forwarded = 0;
    for i in 0..36 {
        let key = format!("k{i}");
        let data = json!({ "i": i });
        let answer = caller
            .once(
                Method::PUT,
                &nodes[0].addr(),
                &format!("/api/v1/entities/t/Thing/{key}"),
                Some(&data),
                None,
            )
            .await
            .expect("n1 answers");
        assert_eq!(answer.status, 200, "PUT {key}: {}", answer.body);
        let shard = answer.body["shard"].as_u64().unwrap() as u32;
        let owner = &owner_of[&shard];
        if owner == "n1" {
            assert_eq!(answer.forwarded_to, None, "{key}");
        } else {
            assert_eq!(answer.forwarded_to.as_ref(), Some(owner), "{key}");
            forwarded += 1;
        }
        oracle.insert(key, (answer.body["version"].as_u64().unwrap(), data));
    }
    assert!(forwarded > 0, "some keys belong to n2 and n3");
    for i in 0..12 {
        let key = format!("k{i}");
        let answer = caller
            .once(
                Method::PATCH,
                &nodes[1].addr(),
                &format!("/api/v1/entities/t/Thing/{key}"),
                Some(&json!({ "patched": true })),
                None,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "PATCH {key}: {}", answer.body);
        oracle.insert(
            key,
            (
                answer.body["version"].as_u64().unwrap(),
                json!({ "i": i, "patched": true }),
            ),
        );
    }
    for i in 12..18 {
        let key = format!("k{i}");
        let answer = caller
            .once(
                Method::DELETE,
                &nodes[1].addr(),
                &format!("/api/v1/entities/t/Thing/{key}"),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "DELETE {key}: {}", answer.body);
        oracle.remove(&key);
    }
    let items: Vec<Value> = (100..130)
        .map(|i| json!({ "namespace": "t", "entity_type": "Thing", "id": format!("k{i}"), "data": { "i": i } }))
        .collect();
    let answer = caller
        .once(
            Method::POST,
            &nodes[2].addr(),
            "/api/v1/entities:batch",
            Some(&Value::Array(items.clone())),
            None,
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["ok"], 30, "{}", answer.body);
    let mut batch_shards = BTreeSet::new();
    for (i, result) in (100..130).zip(answer.body["results"].as_array().unwrap()) {
        assert_eq!(result["status"], 200, "{result}");
        batch_shards.insert(result["ack"]["shard"].as_u64().unwrap() as u32);
        oracle.insert(
            format!("k{i}"),
            (
                result["ack"]["version"].as_u64().unwrap(),
                json!({ "i": i }),
            ),
        );
    }
    assert_eq!(
        batch_shards.len(),
        SHARDS as usize,
        "the batch spans every owner"
    );

    // Every node reads every write back (forwarding its reads too).
    for node in &nodes {
        for i in (0..36).chain(100..130) {
            let key = format!("k{i}");
            let answer = caller
                .once(
                    Method::GET,
                    &node.addr(),
                    &format!("/api/v1/entities/t/Thing/{key}"),
                    None,
                    None,
                )
                .await
                .unwrap();
            match oracle.get(&key) {
                Some((version, data)) => {
                    assert_eq!(answer.status, 200, "{} GET {key}: {}", node.id, answer.body);
                    assert_eq!(answer.body["version"].as_u64(), Some(*version), "{key}");
                    assert_eq!(&answer.body["data"], data, "{key}");
                }
                None => assert_eq!(answer.status, 404, "{key} was deleted: {}", answer.body),
            }
        }
    }
    let sent = forwards(&caller, &nodes[0], "forwarded").await;
    assert!(sent >= forwarded, "n1 counted {sent} forwards");
    let received: u64 =
        futures::future::join_all(nodes[1..].iter().map(|n| forwards(&caller, n, "received")))
            .await
            .into_iter()
            .sum();
    assert!(
        received >= forwarded,
        "the owners served {received} forwarded calls"
    );

    // A node that owns shards n1 does not.
    let foreign_owner = owner_of.values().find(|o| *o != "n1").unwrap().clone();

    // Forged forwarded calls: no token, a wrong one. 401, nothing written.
    let forged = |token: Option<&'static str>| {
        let mut request = caller
            .http
            .put(format!(
                "{}/api/v1/entities/t/Thing/forged",
                nodes[0].base()
            ))
            .header(floe_cluster::FORWARDED_BY, "n2")
            .json(&json!({ "forged": true }));
        if let Some(token) = token {
            request = request.header(floe_cluster::CLUSTER_TOKEN_HEADER, token);
        }
        request.send()
    };
    for token in [None, Some("not-the-cluster-token-at-all"), Some("")] {
        let response = forged(token).await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "token {token:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    for node in &nodes {
        let answer = caller
            .once(
                Method::GET,
                &node.addr(),
                "/api/v1/entities/t/Thing/forged",
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 404, "nothing written: {}", answer.body);
    }

    // One hop at most: a genuine forwarded call for a shard the receiving
    // node does not own is answered there (not_owner), not sent on.
    let before = forwards(&caller, &nodes[0], "forwarded").await;
    let mut refused = 0;
    for i in 0..12 {
        let response = caller
            .http
            .put(format!(
                "{}/api/v1/entities/t/Thing/hop{i}",
                nodes[0].base()
            ))
            .header(floe_cluster::FORWARDED_BY, "n2")
            .header(floe_cluster::CLUSTER_TOKEN_HEADER, CLUSTER_TOKEN)
            .json(&json!({ "hop": i }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        match status {
            200 => assert_eq!(owner_of[&(body["shard"].as_u64().unwrap() as u32)], "n1"),
            503 => {
                assert_eq!(body["error"]["code"], "not_owner", "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(refused > 0, "some hop keys belong to n2 or n3");
    assert_eq!(
        forwards(&caller, &nodes[0], "forwarded").await,
        before,
        "n1 forwarded none of the forwarded calls"
    );

    // The cost of a forwarded call against a direct one: sequential PUTs of
    // the keys `foreign_owner` owns, sent to it, then sent to n1.
    let owner_node = nodes.iter().find(|n| n.id == foreign_owner).unwrap();
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for round in 0..2 {
        for i in 0..300 {
            let key = format!("cost{i}");
            for (target, samples) in [(owner_node, &mut direct), (&nodes[0], &mut via)] {
                let started = Instant::now();
                let answer = caller
                    .once(
                        Method::PUT,
                        &target.addr(),
                        &format!("/api/v1/entities/t/Thing/{key}"),
                        Some(&json!({ "round": round })),
                        None,
                    )
                    .await
                    .unwrap();
                let elapsed = started.elapsed();
                assert_eq!(answer.status, 200, "{}", answer.body);
                // Round 0 warms connections up; keys on other shards do not count.
                let shard = answer.body["shard"].as_u64().unwrap() as u32;
                if round == 1 && owner_of[&shard] == foreign_owner {
                    samples.push(elapsed);
                }
            }
        }
    }
    direct.sort();
    via.sort();
    assert!(!direct.is_empty() && direct.len() == via.len());
    println!(
        "forward cost over {} PUTs (debug build): direct p50 {:?} p99 {:?}; forwarded p50 {:?} p99 {:?}",
        direct.len(),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        percentile(&via, 0.5),
        percentile(&via, 0.99),
    );

    for node in &nodes {
        assert!(
            !node.output().contains("panicked"),
            "{}: {}",
            node.id,
            node.output()
        );
        assert!(
            !node.output().contains(CLUSTER_TOKEN),
            "{} logged the cluster token",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_library_routes_every_call_straight_to_the_owner_by_the_etcd_map() {
    let harness = Harness::start().await;
    let nodes = [harness.node("n1"), harness.node("n2"), harness.node("n3")];
    let caller = Caller::new();
    settled(&caller, &nodes.iter().collect::<Vec<_>>()).await;

    let client = Client::builder(nodes[1].base())
        .partition_keys(KeyExtractor::new(PartitionKeySpec::id()))
        .build()
        .unwrap();
    let map = client.cluster_map().await.unwrap();
    assert_eq!(map.mode, Mode::Cluster);
    assert_eq!(map.cluster_id.as_deref(), Some("test"));
    assert_eq!(map.nodes.iter().filter(|n| n.live).count(), 3);
    assert!(
        map.shards
            .iter()
            .all(|s| s.state == ShardState::Serving && s.owner_epoch > 0 && s.addr.is_some())
    );

    let mut acks = Vec::new();
    for i in 0..60 {
        let key = EntityKey::new("t", "Thing", format!("c{i}"));
        let ack = client.put(key.clone(), json!({ "i": i })).await.unwrap();
        assert_eq!(Some(ack.shard), client.shard_of(&key, None), "{key}");
        acks.push((key, ack));
    }
    for (key, ack) in &acks {
        let entity = client.get(key).await.unwrap().expect("read back");
        assert_eq!(entity.version, ack.version);
    }
    // Every call went straight to its owner: no node forwarded one.
    for node in &nodes {
        for outcome in ["forwarded", "received", "retried", "gave_up"] {
            assert_eq!(
                forwards(&caller, node, outcome).await,
                0,
                "{} counted {outcome} calls",
                node.id
            );
        }
    }
    // The owners served them: each node acknowledged the writes of its shards.
    let owner_of: BTreeMap<u32, String> = map
        .shards
        .iter()
        .map(|s| (s.shard, s.node_id.clone()))
        .collect();
    let written: BTreeSet<&String> = acks.iter().map(|(_, a)| &owner_of[&a.shard]).collect();
    assert_eq!(written.len(), 3, "the keys spread over every owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_talking_to_one_node_loses_no_acknowledged_write_when_another_is_killed() {
    let harness = Harness::start().await;
    let nodes = Arc::new(Mutex::new(vec![
        harness.node("n1"),
        harness.node("n2"),
        harness.node("n3"),
    ]));
    let caller = Caller::new();
    let (n1_addr, victim_addr) = {
        let guard = nodes.lock().unwrap();
        (guard[0].addr(), guard[2].addr())
    };
    // Wait until n1 serves a write on every shard (via forwarding).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut shards = BTreeSet::new();
        for i in 0..40 {
            if let Some(a) = caller
                .once(
                    Method::PUT,
                    &n1_addr,
                    &format!("/api/v1/entities/t/Warm/w{i}"),
                    Some(&json!({})),
                    None,
                )
                .await
                && a.status == 200
            {
                shards.insert(a.body["shard"].as_u64().unwrap());
            }
        }
        if shards.len() == SHARDS as usize {
            break;
        }
        assert!(Instant::now() < deadline, "n1 never served every shard");
    }

    const WRITERS: usize = 2;
    const WRITES: usize = 300;
    let acked = Arc::new(Mutex::new(
        Vec::<(String, u64, Value, Option<String>)>::new(),
    ));
    let retries = Arc::new(Mutex::new(0usize));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (caller, n1_addr, acked, retries, nodes, killed_at) = (
            caller.clone(),
            n1_addr.clone(),
            acked.clone(),
            retries.clone(),
            nodes.clone(),
            killed_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES {
                if w == 0 && i == WRITES / 3 {
                    nodes.lock().unwrap()[2].kill();
                    *killed_at.lock().unwrap() = Some(Instant::now());
                }
                let key = format!("w{w}-k{}", i % 40);
                let data = json!({ "writer": w, "i": i });
                let idempotency_key = format!("w{w}-{i}");
                let until = Instant::now() + Duration::from_secs(60);
                // Only n1: retried there (same idempotency key) until acknowledged.
                loop {
                    let answer = caller
                        .once(
                            Method::PUT,
                            &n1_addr,
                            &format!("/api/v1/entities/t/Thing/{key}"),
                            Some(&data),
                            Some(&idempotency_key),
                        )
                        .await;
                    match answer {
                        Some(a) if a.status == 200 => {
                            acked.lock().unwrap().push((
                                key.clone(),
                                a.body["version"].as_u64().unwrap(),
                                data.clone(),
                                a.forwarded_to.clone(),
                            ));
                            break;
                        }
                        Some(a) if a.status == 503 => {
                            assert_eq!(a.body["error"]["code"], "not_owner", "{}", a.body);
                            *retries.lock().unwrap() += 1;
                        }
                        other => panic!("PUT {key}: {other:?}"),
                    }
                    assert!(Instant::now() < until, "PUT {key} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(killed_at.lock().unwrap().is_some(), "n3 was killed");
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), WRITERS * WRITES);
    println!(
        "writes acknowledged through n1: {}, forwarded to n3: {}, 503 not_owner answers retried: {}",
        acked.len(),
        acked
            .iter()
            .filter(|a| a.3.as_deref() == Some("n3"))
            .count(),
        retries.lock().unwrap()
    );

    // The oracle: every key's last acknowledged write, from both survivors.
    let mut oracle: BTreeMap<&str, (u64, &Value)> = BTreeMap::new();
    for (key, version, data, _) in &acked {
        if let Some((previous, _)) = oracle.insert(key, (*version, data)) {
            assert!(*version > previous, "{key}: versions grow");
        }
    }
    let survivors = {
        let guard = nodes.lock().unwrap();
        vec![guard[0].addr(), guard[1].addr()]
    };
    assert_ne!(survivors[1], victim_addr);
    for addr in &survivors {
        for (key, (version, data)) in &oracle {
            let answer = caller
                .call(
                    Method::GET,
                    std::slice::from_ref(addr),
                    &format!("/api/v1/entities/t/Thing/{key}"),
                    None,
                    None,
                    Duration::from_secs(30),
                )
                .await;
            assert_eq!(answer.status, 200, "{addr} GET {key}: {}", answer.body);
            assert_eq!(answer.body["version"].as_u64(), Some(*version), "{key}");
            assert_eq!(&answer.body["data"], *data, "{key}");
        }
    }
    for node in nodes.lock().unwrap().iter().take(2) {
        assert!(
            !node.output().contains("panicked"),
            "{}: {}",
            node.id,
            node.output()
        );
    }
}

/// Every entity of a type, listed page by page through `node`.
async fn listed_through(caller: &Caller, node: &Node, page: usize) -> Vec<(String, u64, Value)> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/entities/t/Listed?limit={page}&after={a}"),
            None => format!("/api/v1/entities/t/Listed?limit={page}"),
        };
        let answer = caller
            .once(Method::GET, &node.addr(), &path, None, None)
            .await
            .expect("the node answers");
        assert_eq!(
            answer.status, 200,
            "GET {path} on {}: {}",
            node.id, answer.body
        );
        for e in answer.body["entities"].as_array().unwrap() {
            all.push((
                e["id"].as_str().unwrap().to_string(),
                e["version"].as_u64().unwrap(),
                e["data"].clone(),
            ));
        }
        match answer.body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return all,
        }
    }
}

/// A list is a read of every shard: in cluster mode the shards live on
/// different nodes, and a node answering from its own memory alone would
/// leave out (or, for a shard it once owned, serve stale copies of) the
/// entities other nodes own. Each node's list, page by page, equals the
/// oracle of what was acknowledged, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_on_any_node_returns_every_entity_wherever_its_shard_lives() {
    let harness = Harness::start().await;
    let nodes = [harness.node("n1"), harness.node("n2"), harness.node("n3")];
    let caller = Caller::new();
    let map = settled(&caller, &nodes.iter().collect::<Vec<_>>()).await;
    let per_node: BTreeSet<String> = owners(&map).into_values().collect();
    assert_eq!(per_node.len(), 3, "every node owns shards: {map}");

    let mut oracle: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
    for i in 0..40 {
        let key = format!("e{i:02}");
        let data = json!({ "i": i });
        let answer = caller
            .call(
                Method::PUT,
                &addrs,
                &format!("/api/v1/entities/t/Listed/{key}"),
                Some(&data),
                None,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(answer.status, 200, "PUT {key}: {}", answer.body);
        oracle.insert(key, (answer.body["version"].as_u64().unwrap(), data));
    }
    // A delete through another node: the list leaves it out.
    let answer = caller
        .call(
            Method::DELETE,
            &addrs[1..],
            "/api/v1/entities/t/Listed/e07",
            None,
            None,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(answer.status, 200, "DELETE e07: {}", answer.body);
    oracle.remove("e07");
    let expected: Vec<(String, u64, Value)> = oracle
        .iter()
        .map(|(k, (v, d))| (k.clone(), *v, d.clone()))
        .collect();
    for node in &nodes {
        for page in [7, 100] {
            assert_eq!(
                listed_through(&caller, node, page).await,
                expected,
                "the list through {} in pages of {page}",
                node.id
            );
        }
    }
    // Bad input is refused on every node before anything is asked of the
    // others.
    let bad = caller
        .once(
            Method::GET,
            &nodes[2].addr(),
            "/api/v1/entities/t/Listed?limit=0",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
}
