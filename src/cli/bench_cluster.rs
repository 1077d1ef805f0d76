//! `floe bench cluster`: failover time of a cluster on this machine.
//!
//! It starts etcd, a tansu broker and N `floe serve` nodes (this binary) on
//! 127.0.0.1, sharing one Kafka topic and one lake (SQLite catalog, local
//! warehouse; the sink runs on the node elected for it). It loads the shards
//! with `--entities` entities through floe-client, then, `--kills` times:
//! SIGKILLs a node, measures how long until every shard it owned acknowledges
//! a write again (probes write to each of those shards without pause from
//! the kill on), restarts the node and waits until the cluster is balanced
//! and every shard serves. The restarted node joins with planned handovers
//! (it warms its share up while the survivors serve), so each restart also
//! measures the write pause of a join: one writer per shard writes without
//! pause from the restart until the cluster is balanced, and the latency of
//! each write on a shard that moved is its pause. Then, `--reshards` times,
//! it changes the shard count (a shard added, then removed, in turn) with the
//! same writers on, and the latency of every write is its reshard pause (a
//! reshard pauses every shard). Last, it reads back every acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use floe_client::{Client, EntityKey, JobStatus, MigrationKind, RetryPolicy};
use floe_cluster::testing::EtcdServer;
use floe_emitter::TansuBroker;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Args)]
pub(super) struct ClusterArgs {
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards.
    #[arg(long, default_value_t = 6)]
    shards: u32,
    /// Pipeline partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Entities loaded before the first kill (spread over all shards).
    #[arg(long, default_value_t = 100_000)]
    entities: u64,
    /// Kills (each followed by a restart of the killed node, which joins
    /// again). 0: only the load, for its writes/s (`--nodes 1` then works).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Shard-count changes after the kills (a shard added, then removed,
    /// in turn), each with writers on every shard.
    #[arg(long, default_value_t = 0)]
    reshards: usize,
    /// Lease TTL of every node, seconds (failover takes at least this).
    #[arg(long, default_value_t = 2)]
    lease_ttl_secs: u64,
    /// Concurrent callers of the load.
    #[arg(long, default_value_t = 64)]
    callers: u64,
    /// Whether the nodes keep warm standbys (`cluster.warm_standbys`): a
    /// failover then takes a warm state over instead of restoring.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    warm_standbys: bool,
    /// `RUST_LOG` of the nodes (`info` logs each restore's breakdown:
    /// events from the lake and the tail, and the time of each part).
    #[arg(long, default_value = "warn")]
    node_log: String,
    /// Keep the run's directory (node configs and logs, the lake) and
    /// print its path, instead of deleting it at the end.
    #[arg(long)]
    keep_dir: bool,
}

/// Every write acknowledged so far: key -> (version, data).
type Oracle = Arc<Mutex<BTreeMap<String, (u64, Value)>>>;

pub(super) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || (args.kills > 0 && args.nodes < 2) {
        bail!("--nodes must be at least 1, and at least 2 with --kills above 0");
    }
    println!(
        "cluster: {} nodes, {} shards, {} partitions, {} entities, {} kills, lease TTL {} s, warm standbys {}",
        args.nodes,
        args.shards,
        args.partitions,
        args.entities,
        args.kills,
        args.lease_ttl_secs,
        if args.warm_standbys { "on" } else { "off" }
    );
    let dir = tempfile::Builder::new()
        .prefix("floe-bench-cluster-")
        .disable_cleanup(args.keep_dir)
        .tempdir()
        .context("creating a temporary directory")?;
    if args.keep_dir {
        // Kept also when the run fails: its node logs say why.
        println!("run directory (kept): {}", dir.path().display());
    }
    let etcd = EtcdServer::start().await.context("starting etcd")?;
    let broker = tokio::task::spawn_blocking(TansuBroker::start)
        .await?
        .context("starting the tansu broker")?;
    let bench = Arc::new(Bench::new(&args, dir.path(), &etcd, &broker)?);
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        nodes.push(bench.spawn(i).await?);
    }
    let clients: Vec<Client> = (0..args.nodes)
        .map(|i| bench.client(i))
        .collect::<Result<_, _>>()?;
    bench
        .wait_balanced(&clients[0], args.shards, Duration::from_secs(120))
        .await?;

    // Load.
    let oracle: Oracle = Arc::new(Mutex::new(BTreeMap::new()));
    let started = Instant::now();
    let shard_keys = load(&clients, &args, &oracle).await?;
    let load_secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {} entities in {:.1} s: {:.0} acknowledged writes/s through floe-client, {} callers over {} node(s)",
        args.entities,
        load_secs,
        args.entities as f64 / load_secs,
        args.callers,
        args.nodes
    );

    // Kills.
    let mut took = Vec::with_capacity(args.kills);
    let mut regrants = Vec::with_capacity(args.kills);
    // Latencies of the writes on shards that moved to a joining node, and
    // of those on shards that stayed, over every join.
    let (mut join_moved, mut join_stayed) = (Vec::new(), Vec::new());
    for k in 0..args.kills {
        let victim = k % args.nodes;
        let grants = bench.grants().await?;
        let shards: BTreeSet<u32> = grants
            .iter()
            .filter(|(_, node)| **node == bench.node_id(victim))
            .map(|(s, _)| *s)
            .collect();
        if shards.is_empty() {
            bail!(
                "node {} owns no shard before kill {k}",
                bench.node_id(victim)
            );
        }
        let survivor = clients[(victim + 1) % args.nodes].clone();
        nodes[victim].kill();
        let killed = Instant::now();
        // Detection and placement: until etcd names other owners for all
        // the killed node's shards (the lease expired, the controller
        // granted them anew).
        let regranted = {
            let (bench, shards, victim) = (bench.clone(), shards.clone(), bench.node_id(victim));
            tokio::spawn(async move { bench.regranted(&shards, &victim, killed).await })
        };
        let mut probes = Vec::new();
        for &shard in &shards {
            let key = shard_keys[&shard].clone();
            let (client, oracle) = (survivor.clone(), oracle.clone());
            probes.push(tokio::spawn(async move {
                probe(&client, &key, &oracle, k as u64)
                    .await
                    .map(|_| killed.elapsed())
            }));
        }
        let mut worst = Duration::ZERO;
        for p in probes {
            worst = worst.max(p.await??);
        }
        let regrant = regranted.await??;
        println!(
            "kill {:>2}: {} (shards {shards:?}) -> granted to others after {:.2} s, acknowledging again after {:.2} s",
            k + 1,
            bench.node_id(victim),
            regrant.as_secs_f64(),
            worst.as_secs_f64()
        );
        took.push(worst);
        regrants.push(regrant);

        // The join: the killed node comes back and takes its share.
        let before = bench.grants().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let writers = steady_writers(&survivor, &shard_keys, &oracle, &stop);
        nodes[victim] = bench.spawn(victim).await?;
        bench
            .wait_balanced(&survivor, args.shards, Duration::from_secs(120))
            .await?;
        // The last moved shard's first writes after its cutover.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Release);
        let after = bench.grants().await?;
        let moved: BTreeSet<u32> = after
            .iter()
            .filter(|(s, node)| before.get(s) != Some(node))
            .map(|(s, _)| *s)
            .collect();
        let mut worst = Duration::ZERO;
        for (shard, latencies) in writers.await? {
            if moved.contains(&shard) {
                worst = worst.max(latencies.iter().copied().max().unwrap_or_default());
                join_moved.extend(latencies);
            } else {
                join_stayed.extend(latencies);
            }
        }
        println!(
            "join {:>2}: {} took shards {moved:?} back; longest write on them {:.0} ms",
            k + 1,
            bench.node_id(victim),
            worst.as_secs_f64() * 1000.0
        );
    }

    let reshards = reshard(&bench, &clients, &args, &shard_keys, &oracle).await?;

    // Read back every acknowledged write.
    let oracle = oracle.lock().await.clone();
    let lost = Arc::new(AtomicU64::new(0));
    let entries: Vec<(String, (u64, Value))> = oracle.into_iter().collect();
    let chunk = entries.len().div_ceil(args.callers as usize).max(1);
    let mut readers = Vec::new();
    for part in entries.chunks(chunk) {
        let (part, client, lost) = (part.to_vec(), clients[0].clone(), lost.clone());
        readers.push(tokio::spawn(async move {
            for (key, (version, data)) in part {
                let entity = client.get(&entity_key(&key)).await?;
                let same = entity.is_some_and(|e| {
                    e.version == version
                        && serde_json::from_str::<Value>(e.data.as_str()).ok() == Some(data.clone())
                });
                if !same {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for r in readers {
        r.await??;
    }
    drop(nodes);
    took.sort();
    regrants.sort();
    join_moved.sort();
    join_stayed.sort();
    let ms = |sorted: &[Duration], p: f64| {
        sorted
            .get(((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let lost = lost.load(Ordering::Relaxed);
    if let Some(reshards) = &reshards {
        println!("{reshards}, lost {lost} acknowledged writes");
    }
    if took.is_empty() {
        println!(
            "load {:.0} acknowledged writes/s through floe-client over {} node(s), lost {lost} acknowledged writes ({} shards, {} entities, {} callers)",
            args.entities as f64 / load_secs,
            args.nodes,
            args.shards,
            args.entities,
            args.callers
        );
        return Ok(());
    }
    println!(
        "of which until etcd granted the shards to survivors (lease TTL + controller): p50 {:.2} s p99 {:.2} s; the rest is the handover, the restore and the first write",
        ms(&regrants, 0.50) / 1000.0,
        ms(&regrants, 0.99) / 1000.0
    );
    println!(
        "joins: writes on the shards that stayed: p50 {:.0} ms p99 {:.0} ms over {} writes",
        ms(&join_stayed, 0.50),
        ms(&join_stayed, 0.99),
        join_stayed.len()
    );
    println!(
        "failover p50 {:.1} s p99 {:.1} s over {} kills, join write pause p50 {:.0} ms p99 {:.0} ms max {:.0} ms over {} writes on moved shards, lost {lost} acknowledged writes ({} nodes, {} shards, {} entities, lease TTL {} s, warm standbys {}, load {:.0} writes/s)",
        ms(&took, 0.50) / 1000.0,
        ms(&took, 0.99) / 1000.0,
        took.len(),
        ms(&join_moved, 0.50),
        ms(&join_moved, 0.99),
        ms(&join_moved, 1.0),
        join_moved.len(),
        args.nodes,
        args.shards,
        args.entities,
        args.lease_ttl_secs,
        if args.warm_standbys { "on" } else { "off" },
        args.entities as f64 / load_secs
    );
    Ok(())
}

/// `--reshards` shard-count changes, in turn a shard added and removed, each
/// asked of another node while one writer per shard writes without pause
/// until the cluster has balanced on the new count; returns the summary line.
async fn reshard(
    bench: &Bench,
    clients: &[Client],
    args: &ClusterArgs,
    shard_keys: &BTreeMap<u32, String>,
    oracle: &Oracle,
) -> anyhow::Result<Option<String>> {
    if args.reshards == 0 {
        return Ok(None);
    }
    let (mut pauses, mut completed) = (Vec::new(), Vec::new());
    let mut shards = args.shards;
    for r in 0..args.reshards {
        let client = &clients[r % clients.len()];
        let (kind, next) = if r % 2 == 0 {
            (MigrationKind::AddShard, shards + 1)
        } else {
            (MigrationKind::RemoveShard { shard: shards - 1 }, shards - 1)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writers = steady_writers(client, shard_keys, oracle, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let id = client.start_migration(&kind).await?.id;
        let done = loop {
            let status = client.migration(&id).await?;
            match status.job.status {
                JobStatus::Completed => break started.elapsed(),
                JobStatus::RolledBack => bail!("reshard {id} rolled back: {:?}", status.job.error),
                JobStatus::Running => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        bench
            .wait_balanced(client, next, Duration::from_secs(120))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Release);
        let mut worst = Duration::ZERO;
        for (_, latencies) in writers.await? {
            worst = worst.max(latencies.iter().copied().max().unwrap_or_default());
            pauses.extend(latencies);
        }
        println!(
            "reshard {:>2}: {shards} -> {next} shards completed after {:.0} ms; longest write {:.0} ms",
            r + 1,
            done.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0
        );
        completed.push(done);
        shards = next;
    }
    pauses.sort();
    completed.sort();
    let ms = |sorted: &[Duration], p: f64| {
        sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1].as_secs_f64()
            * 1000.0
    };
    Ok(Some(format!(
        "reshards: completed p50 {:.0} ms over {} reshards, write pause p50 {:.0} ms p99 {:.0} ms max {:.0} ms over {} writes",
        ms(&completed, 0.5),
        completed.len(),
        ms(&pauses, 0.5),
        ms(&pauses, 0.99),
        ms(&pauses, 1.0),
        pauses.len()
    )))
}

/// `client.put`, sent again after any retryable or stale-routing answer
/// until it is acknowledged (or a minute passes), with a short pause.
async fn put(
    client: &Client,
    key: EntityKey,
    data: Value,
) -> anyhow::Result<floe_client::WriteAck> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match client.put(key.clone(), data.clone()).await {
            Ok(ack) => return Ok(ack),
            Err(e) if (e.is_retryable() || e.is_stale_routing()) && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn entity_key(key: &str) -> EntityKey {
    // Namespaces spread the entities over the shards (the default partition
    // key is the namespace).
    let (ns, id) = key.split_once('/').expect("ns/id");
    EntityKey::new(ns, "Thing", id)
}

/// Puts `entities` entities; returns one key per shard for the probes.
async fn load(
    clients: &[Client],
    args: &ClusterArgs,
    oracle: &Oracle,
) -> anyhow::Result<BTreeMap<u32, String>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.callers {
        let client = clients[c as usize % clients.len()].clone();
        let (next, oracle, total) = (next.clone(), oracle.clone(), args.entities);
        tasks.push(tokio::spawn(async move {
            let mut per_shard = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(per_shard);
                }
                let key = format!("ns{}/e{i}", i % 1024);
                let data = json!({ "i": i, "pad": "x".repeat(64) });
                let ack = put(&client, entity_key(&key), data.clone()).await?;
                per_shard.entry(ack.shard).or_insert_with(|| key.clone());
                oracle.lock().await.insert(key, (ack.version, data));
            }
        }));
    }
    let mut keys = BTreeMap::new();
    for t in tasks {
        for (shard, key) in t.await?? {
            keys.entry(shard).or_insert(key);
        }
    }
    if keys.len() != args.shards as usize {
        bail!("the load reached {} of {} shards", keys.len(), args.shards);
    }
    Ok(keys)
}

/// Writes to `key` until a write is acknowledged (the client retries
/// retryable answers with short pauses, following the shard map).
async fn probe(client: &Client, key: &str, oracle: &Oracle, round: u64) -> anyhow::Result<()> {
    let data = json!({ "probe": round });
    let ack = put(client, entity_key(key), data.clone())
        .await
        .with_context(|| format!("probe of {key} after kill {round}"))?;
    oracle
        .lock()
        .await
        .insert(key.to_string(), (ack.version, data));
    Ok(())
}

/// One writer per shard, each writing its shard's probe key again as soon
/// as the last write is acknowledged, until `stop`; yields each shard's
/// write latencies (sent to acknowledged, retries included).
fn steady_writers(
    client: &Client,
    shard_keys: &BTreeMap<u32, String>,
    oracle: &Oracle,
    stop: &Arc<AtomicBool>,
) -> impl std::future::Future<Output = anyhow::Result<Vec<(u32, Vec<Duration>)>>> + use<> {
    let tasks: Vec<_> = shard_keys
        .iter()
        .map(|(&shard, key)| {
            let (client, key, oracle, stop) =
                (client.clone(), key.clone(), oracle.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let data = json!({ "steady": n });
                    let sent = Instant::now();
                    let ack = put(&client, entity_key(&key), data.clone()).await?;
                    latencies.push(sent.elapsed());
                    oracle.lock().await.insert(key.clone(), (ack.version, data));
                }
                anyhow::Ok((shard, latencies))
            })
        })
        .collect();
    async move {
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await??);
        }
        Ok(out)
    }
}

/// The processes' shared settings.
struct Bench {
    dir: PathBuf,
    ports: Vec<u16>,
    etcd: String,
    pipeline: String,
    cluster: floe_cluster::ClusterConfig,
    shards: u32,
    etcd_config: Vec<floe_cluster::ClusterConfig>,
    node_log: String,
}

/// One `floe serve` child; killed (SIGKILL) when dropped.
struct NodeProcess(Option<Child>);

impl NodeProcess {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Bench {
    fn new(
        args: &ClusterArgs,
        dir: &Path,
        etcd: &EtcdServer,
        broker: &TansuBroker,
    ) -> anyhow::Result<Bench> {
        let ports: Vec<u16> = (0..args.nodes)
            .map(|_| free_port())
            .collect::<Result<_, _>>()?;
        // Every node of the run shares one token for its forwarded calls;
        // a node refuses to start without one.
        let token =
            floe_cluster::ClusterToken::new(format!("bench-{}", uuid::Uuid::new_v4().simple()));
        let etcd_config = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let mut c = etcd.node_config("bench", &format!("n{}", i + 1), *port);
                c.lease_ttl_secs = args.lease_ttl_secs;
                c.warm_standbys = args.warm_standbys;
                c.token = Some(token.clone());
                c
            })
            .collect();
        Ok(Bench {
            dir: dir.to_path_buf(),
            etcd: etcd.endpoint(),
            pipeline: format!(
                "kafka://{}/bench-cluster?partitions={}",
                broker.bootstrap(),
                args.partitions
            ),
            cluster: etcd.node_config("bench", "probe", 1),
            shards: args.shards,
            ports,
            etcd_config,
            node_log: args.node_log.clone(),
        })
    }

    fn node_id(&self, i: usize) -> String {
        self.etcd_config[i].node_id.clone()
    }

    fn client(&self, i: usize) -> anyhow::Result<Client> {
        Ok(
            Client::builder(format!("http://127.0.0.1:{}", self.ports[i]))
                .retry(RetryPolicy {
                    initial_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(50),
                    deadline: Duration::from_secs(60),
                })
                .request_timeout(Duration::from_secs(5))
                .map_max_age(Duration::from_secs(1))
                .build()?,
        )
    }

    /// Starts node `i` and waits until it listens; while its previous
    /// registration is still live (a restart right after a kill), the node
    /// exits refused and is started again.
    async fn spawn(&self, i: usize) -> anyhow::Result<NodeProcess> {
        let id = self.node_id(i);
        let lake = self.dir.join("lake");
        std::fs::create_dir_all(&lake)?;
        let config = format!(
            "data_dir = \"{data}\"\npipeline = \"{pipeline}\"\n\n[topology]\nshards = {shards}\n\n\
             [kafka]\nrequest_timeout_ms = 5000\n\n[lake]\nenabled = true\nsink = true\n\
             catalog = \"sqlite://{catalog}\"\nwarehouse = \"file://{warehouse}\"\n\
             commit_interval_ms = 1000\n\n[serve]\nauth = \"disabled\"\n\n[cluster]\n{cluster}",
            data = self.dir.join(&id).join("data").display(),
            pipeline = self.pipeline,
            shards = self.shards,
            catalog = lake.join("catalog.db").display(),
            warehouse = lake.join("warehouse").display(),
            cluster = toml::to_string(&self.etcd_config[i])?,
        );
        let path = self.dir.join(format!("{id}.toml"));
        std::fs::write(&path, config)?;
        let exe = std::env::current_exe()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("{id}.log")))?;
            let mut child = Command::new(&exe)
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.ports[i]))
                .env("RUST_LOG", &self.node_log)
                .stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .context("starting floe serve")?;
            loop {
                if let Some(status) = child.try_wait()? {
                    if Instant::now() > deadline {
                        bail!(
                            "node {id} keeps exiting ({status}); see {}",
                            self.dir.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                if ready(self.ports[i]).await {
                    return Ok(NodeProcess(Some(child)));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// shard -> owning node, from etcd.
    async fn grants(&self) -> anyhow::Result<BTreeMap<u32, String>> {
        let client = floe_cluster::connect(&self.cluster).await?;
        Ok(floe_cluster::read_grants(&client, &self.cluster)
            .await?
            .into_iter()
            .map(|(s, g)| (s, g.node_id))
            .collect())
    }

    /// How long after `since` etcd named a node other than `victim` as
    /// the owner of every one of `shards` (polled every 20 ms).
    async fn regranted(
        &self,
        shards: &BTreeSet<u32>,
        victim: &str,
        since: Instant,
    ) -> anyhow::Result<Duration> {
        let client = floe_cluster::connect(&self.cluster).await?;
        let until = since + Duration::from_secs(120);
        loop {
            let now = floe_cluster::read_grants(&client, &self.cluster).await?;
            let moved = shards
                .iter()
                .all(|s| now.get(s).is_some_and(|g| g.node_id != victim));
            if moved {
                return Ok(since.elapsed());
            }
            if Instant::now() > until {
                bail!("shards {shards:?} were not granted anew within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every node holds its share of the shards and a write to
    /// every shard is acknowledged.
    async fn wait_balanced(
        &self,
        client: &Client,
        shards: u32,
        within: Duration,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        let nodes = self.ports.len();
        loop {
            let grants = self.grants().await?;
            let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
            for node in grants.values() {
                *per_node.entry(node.as_str()).or_default() += 1;
            }
            let floor = shards as usize / nodes;
            if grants.len() == shards as usize
                && per_node.len() == nodes
                && per_node.values().all(|n| *n >= floor)
            {
                break;
            }
            if Instant::now() > until {
                bail!(
                    "the cluster did not balance within {within:?}: {grants:?} (etcd {})",
                    self.etcd
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every shard serves: one write per namespace reaches all of them.
        for ns in 0..64 {
            put(
                client,
                EntityKey::new(format!("ns{ns}"), "Warmup", "w"),
                json!({}),
            )
            .await?;
        }
        Ok(())
    }
}

async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head)).await,
        Ok(Ok(_))
    ) && &head[9..12] == b"200"
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
