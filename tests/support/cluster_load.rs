//! Load for the cluster tests: floe-client writers seeded at different
//! nodes, the oracle of their acknowledged writes, and the checks that
//! judge a run (every key reads back at its last acknowledged write from
//! every node, the lake holds each acknowledged write exactly once), plus
//! waiting for an even placement.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_client::{Client, EntityKey, KeyExtractor, PartitionKeySpec};
use reqwest::Method;
use serde_json::{Value, json};

use super::cluster::{Caller, Harness, Node};
use super::cluster_lake;

pub(crate) const WRITERS: usize = 3;
pub(crate) const KEYS: usize = 40;

/// One acknowledged write, with when it was first sent and acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    pub(crate) key: String,
    pub(crate) version: u64,
    pub(crate) data: Value,
    pub(crate) shard: u32,
    pub(crate) sent: Instant,
    pub(crate) at: Instant,
}

/// What the writers came to.
#[derive(Debug, Default)]
pub(crate) struct Load {
    pub(crate) acked: Vec<Acked>,
    /// Writes the client library gave up on (after its retries).
    pub(crate) failed: Vec<String>,
}

pub(crate) fn client(base: &str) -> Client {
    Client::builder(base)
        .partition_keys(KeyExtractor::new(PartitionKeySpec::id()))
        .build()
        .unwrap()
}

/// Writers (floe-client, default retry policy), each seeded at another node,
/// writing until `stop`.
pub(crate) fn start_load(
    bases: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Load> {
    tokio::spawn(async move {
        let load = Arc::new(Mutex::new(Load::default()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (load, stop, base) = (load.clone(), stop.clone(), bases[w % bases.len()].clone());
            tasks.push(tokio::spawn(async move {
                let client = client(&base);
                let mut i = 0usize;
                while !stop.load(Ordering::Acquire) {
                    let key = format!("w{w}-k{}", i % KEYS);
                    let data = json!({ "writer": w, "i": i });
                    let sent = Instant::now();
                    match client
                        .put(EntityKey::new("t", "Thing", key.clone()), data.clone())
                        .await
                    {
                        Ok(ack) => load.lock().unwrap().acked.push(Acked {
                            key,
                            version: ack.version,
                            data,
                            shard: ack.shard,
                            sent,
                            at: Instant::now(),
                        }),
                        Err(e) => load.lock().unwrap().failed.push(format!("{key}: {e}")),
                    }
                    i += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(load).unwrap().into_inner().unwrap()
    })
}

/// Every key's last acknowledged write reads back equal from `bases`, and
/// the lake holds each acknowledged write exactly once.
pub(crate) async fn check(harness: &Harness, load: &Load, bases: &[String]) {
    assert!(
        load.failed.is_empty(),
        "writes failed back to the client: {:?}",
        load.failed
    );
    let mut oracle: BTreeMap<&str, &Acked> = BTreeMap::new();
    for a in &load.acked {
        if let Some(p) = oracle.insert(&a.key, a) {
            assert!(a.version > p.version, "versions grow: {p:?} then {a:?}");
        }
    }
    for base in bases {
        let client = client(base);
        for (key, expected) in &oracle {
            let entity = client
                .get(&EntityKey::new("t", "Thing", key.to_string()))
                .await
                .unwrap_or_else(|e| panic!("GET {key} from {base}: {e}"))
                .unwrap_or_else(|| panic!("{key} is missing"));
            assert_eq!(entity.version, expected.version, "{key}");
            assert_eq!(entity.data.to_value().unwrap(), expected.data, "{key}");
        }
    }
    let writes: Vec<cluster_lake::AckedWrite<'_>> = load
        .acked
        .iter()
        .map(|a| cluster_lake::AckedWrite {
            key: &a.key,
            version: a.version,
            data: &a.data,
        })
        .collect();
    let lake = harness.lake.as_ref().expect("the harness shares a lake");
    cluster_lake::assert_lake_holds_exactly(lake, &writes, Duration::from_secs(120)).await;
}

/// Shard -> owner node id, from etcd.
pub(crate) async fn owners(harness: &Harness) -> BTreeMap<u32, String> {
    let client = harness.etcd.client().await.unwrap();
    let config = harness.cluster_config("probe", 1);
    floe_cluster::read_grants(&client, &config)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, g)| (s, g.node_id))
        .collect()
}

/// Waits until each of `shards` shards is granted, the nodes `nodes` hold an even share
/// each, and each serves its own shards (its map says `serving`).
pub(crate) async fn balanced(
    harness: &Harness,
    nodes: &[&Node],
    shards: u32,
    within: Duration,
) -> BTreeMap<u32, String> {
    let caller = Caller::new();
    let until = Instant::now() + within;
    let share = shards as usize / nodes.len();
    loop {
        let owners = owners(harness).await;
        let even = owners.len() == shards as usize
            && nodes.iter().all(|n| {
                let held = owners.values().filter(|o| **o == n.id).count();
                held == share || held == share + 1
            })
            && owners.values().all(|o| nodes.iter().any(|n| n.id == *o));
        let mut serving = even;
        for node in nodes.iter().filter(|_| even) {
            let map = caller
                .once(Method::GET, &node.addr(), "/api/v1/cluster", None, None)
                .await;
            serving &= map.is_some_and(|m| {
                m.status == 200
                    && m.body["shards"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|s| s["node_id"] != node.id.as_str() || s["state"] == "serving")
            });
        }
        if serving {
            return owners;
        }
        if Instant::now() >= until {
            for node in nodes {
                let out = node.output();
                let tail: Vec<&str> = out.lines().rev().take(40).collect();
                eprintln!("--- {} (last 40 lines)", node.id);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
            panic!("not balanced within {within:?}: {owners:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
