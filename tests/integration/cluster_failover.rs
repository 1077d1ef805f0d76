//! Three real `floe serve` nodes on one etcd and one broker: writers spread
//! over all three while one node is killed (SIGKILL) or paused (SIGSTOP) past
//! its lease. Its shards serve again on the survivors, every acknowledged
//! write reads back as acknowledged, and a paused owner acknowledges nothing
//! once it has lost its lease. Without etcd or the broker these tests fail.

#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/cluster_lake.rs"]
mod cluster_lake;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{Caller, Harness};
use reqwest::Method;
use serde_json::{Value, json};

/// Writers, keys per writer, writes per writer.
const WRITERS: usize = 3;
const KEYS: usize = 40;
const WRITES: usize = 400;

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Acked {
    key: String,
    version: u64,
    data: Value,
    shard: u32,
    addr: String,
    /// The owner the node called forwarded the write to, if it did.
    forwarded_to: Option<String>,
    at: Instant,
}

impl Acked {
    /// Whether node `id` at `addr` acknowledged it (directly or forwarded to).
    fn served_by(&self, id: &str, addr: &str) -> bool {
        match &self.forwarded_to {
            Some(owner) => owner == id,
            None => self.addr == addr,
        }
    }
}

/// Runs the writers; `on_progress(total acknowledged)` runs after every ack
/// (the test kills or pauses a node from it). Returns every ack in order.
async fn write_load(
    addrs: Vec<String>,
    on_progress: Arc<dyn Fn(usize) + Send + Sync>,
) -> Vec<Acked> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (addrs, acked, total, on_progress) = (
            addrs.clone(),
            acked.clone(),
            total.clone(),
            on_progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let caller = Caller::new();
            // Each writer starts at its own node and follows not_owner.
            let mut order = addrs.clone();
            order.rotate_left(w % addrs.len());
            for i in 0..WRITES {
                let key = format!("w{w}-k{}", i % KEYS);
                let data = json!({ "writer": w, "i": i });
                let answer = caller
                    .call(
                        Method::PUT,
                        &order,
                        &format!("/api/v1/entities/t/Thing/{key}"),
                        Some(&data),
                        Some(&format!("w{w}-{i}")),
                        Duration::from_secs(60),
                    )
                    .await;
                assert_eq!(answer.status, 200, "PUT {key}: {}", answer.body);
                acked.lock().unwrap().push(Acked {
                    key,
                    version: answer.body["version"].as_u64().unwrap(),
                    data,
                    shard: answer.body["shard"].as_u64().unwrap() as u32,
                    addr: answer.addr,
                    forwarded_to: answer.forwarded_to,
                    at: Instant::now(),
                });
                on_progress(total.fetch_add(1, Ordering::SeqCst) + 1);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

/// Every key's last acknowledged write reads back equal (version and data)
/// from the survivors.
async fn check_oracle(acked: &[Acked], addrs: &[String]) {
    let mut oracle: BTreeMap<&str, &Acked> = BTreeMap::new();
    for a in acked {
        let previous = oracle.insert(&a.key, a);
        if let Some(p) = previous {
            assert!(a.version > p.version, "versions grow: {p:?} then {a:?}");
        }
    }
    let caller = Caller::new();
    for (key, expected) in oracle {
        let answer = caller
            .call(
                Method::GET,
                addrs,
                &format!("/api/v1/entities/t/Thing/{key}"),
                None,
                None,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(answer.status, 200, "GET {key}: {}", answer.body);
        assert_eq!(answer.body["data"], expected.data, "{key}: {}", answer.body);
        assert_eq!(
            answer.body["version"].as_u64(),
            Some(expected.version),
            "{key}: {}",
            answer.body
        );
    }
}

/// The lake every node shares holds each acknowledged write exactly once,
/// and its replay equals the oracle (pyiceberg, `cluster_lake`).
async fn check_lake(harness: &Harness, acked: &[Acked]) {
    let writes: Vec<cluster_lake::AckedWrite<'_>> = acked
        .iter()
        .map(|a| cluster_lake::AckedWrite {
            key: &a.key,
            version: a.version,
            data: &a.data,
        })
        .collect();
    let lake = harness.lake.as_ref().expect("the harness shares a lake");
    cluster_lake::assert_lake_holds_exactly(lake, &writes, Duration::from_secs(90)).await;
}

/// The time from `since` until every shard in `shards` acknowledged a write
/// again (from a node other than `gone`).
fn failover(acked: &[Acked], shards: &BTreeSet<u32>, gone: &str, since: Instant) -> Duration {
    shards
        .iter()
        .map(|shard| {
            acked
                .iter()
                .find(|a| a.shard == *shard && a.at > since + Duration::from_millis(300))
                .map(|a| {
                    assert!(
                        !a.served_by("n3", gone),
                        "shard {shard} acknowledged by the dead node"
                    );
                    a.at - since
                })
                .unwrap_or_else(|| panic!("shard {shard} never acknowledged after the kill"))
        })
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_s_shards_serve_again_on_the_survivors_with_every_acknowledged_write() {
    let harness = Harness::start().await.with_lake();
    let nodes = Arc::new(Mutex::new(vec![
        harness.node("n1"),
        harness.node("n2"),
        harness.node("n3"),
    ]));
    let addrs: Vec<String> = nodes.lock().unwrap().iter().map(|n| n.addr()).collect();
    let victim = addrs[2].clone();
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    // How much each survivor had logged before the kill.
    let logged_before = Arc::new(Mutex::new(Vec::<usize>::new()));
    let kill = {
        let (nodes, killed_at) = (nodes.clone(), killed_at.clone());
        let logged_before = logged_before.clone();
        Arc::new(move |total: usize| {
            if total == WRITERS * WRITES / 3 {
                let mut nodes = nodes.lock().unwrap();
                nodes[2].kill();
                *killed_at.lock().unwrap() = Some(Instant::now());
                *logged_before.lock().unwrap() =
                    nodes[..2].iter().map(|n| n.output().len()).collect();
            }
        })
    };
    let acked = write_load(addrs.clone(), kill).await;
    let killed_at = killed_at.lock().unwrap().expect("the node was killed");

    let victim_shards: BTreeSet<u32> = acked
        .iter()
        .filter(|a| a.served_by("n3", &victim) && a.at < killed_at)
        .map(|a| a.shard)
        .collect();
    assert!(
        !victim_shards.is_empty(),
        "the killed node served shards before"
    );
    assert!(
        acked
            .iter()
            .all(|a| !a.served_by("n3", &victim) || a.at < killed_at + Duration::from_millis(300)),
        "nothing acknowledged by the killed node after the kill"
    );
    let took = failover(&acked, &victim_shards, &victim, killed_at);
    println!(
        "failover: shards {victim_shards:?} of the killed node acknowledged again within {took:?}"
    );
    check_oracle(&acked, &addrs[..2]).await;

    // The survivors stood by for the killed node's shards (warm standbys):
    // each was taken over warm after the kill, not restored from the lake.
    let after_kill: String = {
        let nodes = nodes.lock().unwrap();
        let before = logged_before.lock().unwrap();
        nodes[..2]
            .iter()
            .zip(before.iter())
            .map(|(n, &from)| n.output()[from..].to_string())
            .collect()
    };
    for shard in &victim_shards {
        assert!(
            after_kill
                .lines()
                .any(|l| l.contains("took a warm shard over; serving it")
                    && l.contains(&format!("shard={shard} "))),
            "a standby took shard {shard} over warm: {after_kill}"
        );
    }

    // `floe cluster status` shows the survivors holding every shard.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("--config")
        .arg(harness.dir.path().join("n1.toml"))
        .args(["cluster", "status"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    let live: BTreeSet<&str> = status["nodes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(live, BTreeSet::from(["n1", "n2"]), "{status}");
    let shards = status["shards"].as_array().unwrap();
    assert_eq!(shards.len(), cluster::SHARDS as usize, "{status}");
    assert!(
        shards
            .iter()
            .all(|s| s["owner_live"] == true && s["owner"] != "n3"),
        "{status}"
    );
    let held: usize = status["nodes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["shards"].as_array().unwrap().len())
        .sum();
    assert_eq!(held, cluster::SHARDS as usize, "{status}");
    check_lake(&harness, &acked).await;

    for node in nodes.lock().unwrap().iter().take(2) {
        assert!(
            !node.output().contains("panicked"),
            "{}: {}",
            node.id,
            node.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_acknowledges_nothing_after_losing_its_lease() {
    let harness = Harness::start().await.with_lake();
    let nodes = Arc::new(Mutex::new(vec![
        harness.node("n1"),
        harness.node("n2"),
        harness.node("n3"),
    ]));
    let addrs: Vec<String> = nodes.lock().unwrap().iter().map(|n| n.addr()).collect();
    let victim = addrs[2].clone();
    let paused_at = Arc::new(Mutex::new(None::<Instant>));
    let (pause_tx, pause_rx) = tokio::sync::oneshot::channel::<()>();
    let pause_tx = Mutex::new(Some(pause_tx));
    let pause = {
        let (nodes, paused_at) = (nodes.clone(), paused_at.clone());
        Arc::new(move |total: usize| {
            if total == WRITERS * WRITES / 3 {
                nodes.lock().unwrap()[2].pause();
                *paused_at.lock().unwrap() = Some(Instant::now());
                if let Some(tx) = pause_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        })
    };
    // While the load runs: once n3 is paused, wait until etcd names other
    // owners for every shard, then resume it.
    let client = harness.etcd.client().await.unwrap();
    let config = harness.cluster_config("probe", 1);
    let resumer = {
        let nodes = nodes.clone();
        tokio::spawn(async move {
            pause_rx.await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let grants = floe_cluster::read_grants(&client, &config).await.unwrap();
                if grants.len() == cluster::SHARDS as usize
                    && grants.values().all(|g| g.node_id != "n3")
                {
                    break;
                }
                assert!(Instant::now() < deadline, "n3's shards never moved");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Let the new owners restore and serve for a moment first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            nodes.lock().unwrap()[2].resume();
            Instant::now()
        })
    };
    let acked = write_load(addrs.clone(), pause).await;
    let resumed_at = resumer.await.unwrap();
    let paused_at = paused_at.lock().unwrap().expect("the node was paused");

    // An answer n3 sent just before the pause may arrive a little later;
    // nothing it acknowledged can come after that. (Once resumed it may
    // forward calls to the new owners: those are theirs.)
    let late: Vec<&Acked> = acked
        .iter()
        .filter(|a| a.served_by("n3", &victim) && a.at > paused_at + Duration::from_millis(300))
        .collect();
    assert!(late.is_empty(), "acknowledged by the paused node: {late:?}");
    assert!(
        acked.iter().any(|a| a.at > resumed_at),
        "writes went on after the resume"
    );

    // Resumed, n3 refuses: its lease is gone.
    let caller = Caller::new();
    let answer = caller
        .once(
            Method::PUT,
            &victim,
            "/api/v1/entities/t/Thing/after-resume",
            Some(&json!({ "late": true })),
            None,
        )
        .await
        .expect("n3 answers");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "not_owner", "{}", answer.body);
    assert!(
        nodes.lock().unwrap()[2]
            .output()
            .contains("the node's lease is gone from etcd"),
        "n3 learnt it lost its lease"
    );

    check_oracle(&acked, &addrs[..2]).await;
    check_lake(&harness, &acked).await;

    // Live state equals a replay: with n1 and n3 gone, n2 restores every
    // shard from the pipeline and serves the same answers.
    {
        let mut nodes = nodes.lock().unwrap();
        nodes[2].kill();
        nodes[0].kill();
    }
    check_oracle(&acked, &addrs[1..2]).await;
}

/// The node etcd names as the sink's, with its index among `nodes`.
async fn sink_node(harness: &Harness, within: Duration, not: Option<&str>) -> String {
    let client = harness.etcd.client().await.unwrap();
    let config = harness.cluster_config("probe", 1);
    let until = Instant::now() + within;
    loop {
        if let Ok(Some(term)) = floe_cluster::current_sink(&client, &config).await
            && Some(term.node_id.as_str()) != not
        {
            return term.node_id;
        }
        assert!(Instant::now() < until, "no sink elected within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_moves_when_its_node_is_killed_and_the_lake_holds_every_write_once() {
    let harness = Harness::start().await.with_lake();
    let ids = ["n1", "n2", "n3"];
    let nodes = Arc::new(Mutex::new(
        ids.iter().map(|id| harness.node(id)).collect::<Vec<_>>(),
    ));
    let addrs: Vec<String> = nodes.lock().unwrap().iter().map(|n| n.addr()).collect();
    let sink = sink_node(&harness, Duration::from_secs(30), None).await;
    let victim = ids.iter().position(|id| *id == sink).unwrap();
    let survivors: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, a)| a.clone())
        .collect();
    let kill = {
        let nodes = nodes.clone();
        Arc::new(move |total: usize| {
            if total == WRITERS * WRITES / 2 {
                nodes.lock().unwrap()[victim].kill();
            }
        })
    };
    let acked = write_load(addrs.clone(), kill).await;
    let output = nodes.lock().unwrap()[victim].output();
    assert!(
        output.contains("this node runs the cluster's sink"),
        "the killed node ran the sink: {output}"
    );
    let successor = sink_node(&harness, Duration::from_secs(30), Some(&sink)).await;
    check_oracle(&acked, &survivors).await;
    check_lake(&harness, &acked).await;
    let index = ids.iter().position(|id| *id == successor).unwrap();
    let output = nodes.lock().unwrap()[index].output();
    assert!(
        output.contains("this node runs the cluster's sink"),
        "{successor} took the sink over: {output}"
    );
}

/// What is restarted under load.
#[derive(Debug, Clone, Copy)]
enum Restart {
    Etcd,
    Broker,
}

/// Runs the load on three nodes and restarts etcd or the broker (down for
/// 3 s) once a third of it is acknowledged: every write either waits or is
/// retried by the caller on a retryable 503, none fails; afterwards every
/// acknowledged write reads back and the lake holds each exactly once.
async fn load_through(harness: &mut Harness, restart: Restart) {
    let nodes = vec![harness.node("n1"), harness.node("n2"), harness.node("n3")];
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let progress = Arc::new(move |total: usize| {
        if total == WRITERS * WRITES / 3
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    });
    let down = Duration::from_secs(3);
    let (acked, ()) = tokio::join!(write_load(addrs.clone(), progress), async {
        rx.await.unwrap();
        match restart {
            Restart::Etcd => {
                harness.etcd.stop();
                tokio::time::sleep(down).await;
                harness.etcd.restart().await.unwrap();
            }
            Restart::Broker => {
                harness.broker.kill().unwrap();
                tokio::time::sleep(down).await;
                let broker = &mut harness.broker;
                tokio::task::block_in_place(|| broker.restart()).unwrap();
            }
        }
    });
    assert_eq!(acked.len(), WRITERS * WRITES, "every write acknowledged");
    check_oracle(&acked, &addrs).await;
    check_lake(harness, &acked).await;
    for node in &nodes {
        assert!(
            !node.output().contains("panicked"),
            "{}: {}",
            node.id,
            node.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_restarted_under_load_loses_and_doubles_nothing() {
    let mut harness = Harness::start().await.with_lake();
    load_through(&mut harness, Restart::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_restarted_under_load_loses_and_doubles_nothing() {
    let mut harness = Harness::start().await.with_lake();
    load_through(&mut harness, Restart::Broker).await;
}
