//! `floe bench`: routing, ingest and reopen measurements.
//!
//! Each benchmark prints its details and ends with one headline line.
//! Timings on a shared 2-core machine are noisy: compare figures from the
//! same run (fsync on vs off, strategy vs strategy), not across runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use floe::{Config, EntityKey, Floe, FsyncMode, HashFunction, Strategy, Topology, WriteRequest};
use floe_engine::Router;
use serde_json::{Value, json};

use super::report;

#[cfg(feature = "kafka")]
#[path = "bench_kafka.rs"]
mod kafka;

#[path = "bench_http.rs"]
mod http;

#[path = "bench_client.rs"]
mod client;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Route lookup ns/key per strategy.
    Route(RouteArgs),
    /// Acknowledged writes/s through Floe with the embedded log, fsync on and off.
    Ingest(IngestArgs),
    /// Time to reopen a data directory (recovery from the log).
    Reopen(ReopenArgs),
    /// Events/s landed in Iceberg from a pre-filled pipeline, vs pyiceberg.
    Land(super::bench_land::LandArgs),
    /// Acknowledged writes/s through `floe serve` over HTTP vs the library.
    Http(http::HttpArgs),
    /// Acknowledged writes/s through floe-client against one node.
    Client(client::ClientArgs),
    /// Add a 17th shard to 16 holding 10M events while writers run.
    Migrate(super::bench_migrate::MigrateArgs),
    /// Cross-shard SQL over 10M landed events, vs DuckDB on the same files.
    Query(super::bench_query::QueryArgs),
    /// Memory and reads before and after archiving 11 of 12 monthly periods.
    Archive(super::bench_archive::ArchiveArgs),
    /// Failover time of a cluster (etcd, a broker and N nodes, started here).
    #[cfg(feature = "kafka")]
    Cluster(super::bench_cluster::ClusterArgs),
}

#[derive(Debug, Args)]
struct RouteArgs {
    /// Shards.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Distinct keys looked up per round.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Rounds over the keys.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Acknowledged writes per run.
    #[arg(long, default_value_t = 1_000_000)]
    writes: u64,
    /// Concurrent callers, each writing one entity at a time.
    #[arg(long, default_value_t = 512)]
    callers: u64,
    /// Writes per `Floe::write_many` call in the batched run; 0 skips it.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent callers of the batched run, each with one batch in flight.
    #[arg(long, default_value_t = 64)]
    batch_callers: u64,
    /// Shards.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Approximate size of each entity's JSON.
    #[arg(long, default_value_t = 500)]
    payload_bytes: usize,
    /// Which fsync modes to run: always, never or both (always first).
    #[arg(long, default_value = "both")]
    fsync: String,
    /// Measure on this Kafka pipeline (`kafka://host:port/topic?partitions=N`)
    /// against a raw rdkafka producer, instead of the embedded log. Each run
    /// gets a fresh topic named after this one.
    #[arg(long)]
    pipeline: Option<String>,
    /// Start a temporary local broker (tansu, see scripts/install-tansu.sh)
    /// for a Kafka run; `--pipeline` then only gives the topic and options.
    #[arg(long)]
    start_broker: bool,
}

#[derive(Debug, Args)]
struct ReopenArgs {
    /// Entities written before the reopen.
    #[arg(long, default_value_t = 1_000_000)]
    entities: u64,
    /// Approximate size of each entity's JSON.
    #[arg(long, default_value_t = 500)]
    payload_bytes: usize,
}

pub(crate) async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Route(args) => route(args),
        Which::Ingest(args) => ingest(config, args).await,
        Which::Reopen(args) => reopen(config, args).await,
        Which::Land(args) => super::bench_land::land(config, args).await,
        Which::Http(args) => http::run(config, args).await,
        Which::Client(args) => client::run(config, args).await,
        Which::Migrate(args) => super::bench_migrate::migrate(config, args).await,
        Which::Query(args) => super::bench_query::run(config, args).await,
        Which::Archive(args) => super::bench_archive::archive(config, args).await,
        #[cfg(feature = "kafka")]
        Which::Cluster(args) => super::bench_cluster::run(args).await,
    }
}

fn route(args: RouteArgs) -> anyhow::Result<()> {
    let keys: Vec<String> = (0..args.keys).map(|i| format!("tenant-{i:07}")).collect();
    let strategies = [
        ("modulo (fnv1a)", HashFunction::Fnv1a, Strategy::Modulo),
        ("jump (Lamping-Veach)", HashFunction::Xxh3, Strategy::Jump),
        ("jump_back (Ertl)", HashFunction::Xxh3, Strategy::JumpBack),
        (
            "ring 150 vnodes",
            HashFunction::Xxh3,
            Strategy::Ring { virtual_nodes: 150 },
        ),
    ];
    println!(
        "route lookup at {} shards, {} keys x {} rounds (key hash included)",
        args.shards, args.keys, args.rounds
    );
    println!(
        "  {:<22} {:>14} {:>16}",
        "strategy", "from key hash", "incl. hashing"
    );
    let mut figures = Vec::new();
    for (name, hash, strategy) in strategies {
        let router = Router::new(Topology::new(args.shards, hash, strategy)?)?;
        let hashes: Vec<u64> = keys.iter().map(|k| router.key_hash(k)).collect();
        let lookup = route_from_hash_ns(&router, &keys, &hashes, args.rounds);
        let with_hash = floe_engine::measure_route_ns(&router, &keys, args.rounds);
        println!("  {name:<22} {lookup:>8.1} ns/key {with_hash:>10.1} ns/key");
        figures.push((name, lookup, with_hash));
    }
    let find = |prefix: &str| {
        figures
            .iter()
            .find(|(n, _, _)| n.starts_with(prefix))
            .map_or((f64::NAN, f64::NAN), |(_, a, b)| (*a, *b))
    };
    let line = ["jump_back", "jump (", "ring", "modulo"]
        .iter()
        .map(|p| {
            let (lookup, with_hash) = find(p);
            format!(
                "{} {lookup:.1} ns ({with_hash:.1} with hashing)",
                p.trim_end_matches(" (")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!("route at {} shards: {line}", args.shards);
    Ok(())
}

/// ns per lookup when the key hash is already known, as on the write path
/// (the hash is computed once and travels with the event).
fn route_from_hash_ns(router: &Router, keys: &[String], hashes: &[u64], rounds: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..rounds {
        for (key, hash) in keys.iter().zip(hashes) {
            std::hint::black_box(
                router.route(std::hint::black_box(key), std::hint::black_box(*hash)),
            );
        }
    }
    started.elapsed().as_nanos() as f64 / (keys.len() * rounds).max(1) as f64
}

/// A JSON object of roughly `bytes` bytes, different per seed.
fn payload(seed: u64, bytes: usize) -> Value {
    let filler = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(bytes / 36 + 1);
    let base = json!({
        "customer": format!("customer-{}", seed % 100_000),
        "status": "placed",
        "total_cents": seed % 100_000,
        "items": [{"sku": format!("sku-{}", seed % 977), "qty": 1 + seed % 4}],
        "note": "",
    });
    let used = base.to_string().len();
    let mut value = base;
    value["note"] =
        Value::String(filler[..bytes.saturating_sub(used).min(filler.len())].to_string());
    value
}

struct IngestFigures {
    writes_per_s: f64,
    histogram: hdrhistogram::Histogram<u64>,
    writes_per_batch: f64,
}

/// One run: `callers` callers, each with one call of `batch` writes in
/// flight (`batch` 1: `Floe::put_json`, else `Floe::write_many`). The
/// latency recorded is each call's, from sending to the ack of its last
/// write.
async fn ingest_once(
    config: Config,
    args: &IngestArgs,
    callers: u64,
    batch: u64,
) -> anyhow::Result<IngestFigures> {
    let floe = Floe::open(config).await?;
    // A pool of JSON bodies: each write copies one and floe checks it, as a
    // server receiving JSON requests would.
    let pool: Arc<Vec<String>> = Arc::new(
        (0..1024)
            .map(|i| payload(i, args.payload_bytes).to_string())
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let batch = batch.max(1);
    for _ in 0..callers {
        let (floe, pool, next) = (floe.clone(), pool.clone(), next.clone());
        let total = args.writes;
        tasks.spawn(async move {
            let mut histogram = report::latency_histogram();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let t = Instant::now();
                // The body as text, as a server receives it: floe checks
                // it once, with its limits.
                let request = |i: u64| {
                    let key =
                        EntityKey::new(format!("tenant-{}", i % 10_000), "Order", format!("o-{i}"));
                    WriteRequest::upsert_text(key, pool[(i % 1024) as usize].as_str())
                };
                if batch == 1 {
                    floe.write(request(first)).await?;
                } else {
                    let mut requests = Vec::with_capacity(batch as usize);
                    for i in first..(first + batch).min(total) {
                        requests.push(request(i));
                    }
                    for outcome in floe.write_many(requests).await {
                        outcome?;
                    }
                }
                report::record(&mut histogram, t.elapsed());
            }
            anyhow::Ok(histogram)
        });
    }
    let mut histogram = report::latency_histogram();
    while let Some(joined) = tasks.join_next().await {
        histogram.add(joined??)?;
    }
    let elapsed = started.elapsed();
    let batches: u64 = floe.shard_stats().await?.iter().map(|s| s.batches).sum();
    floe.close().await?;
    Ok(IngestFigures {
        writes_per_s: report::per_second(args.writes, elapsed),
        histogram,
        writes_per_batch: args.writes as f64 / batches.max(1) as f64,
    })
}

async fn ingest(config: Config, args: IngestArgs) -> anyhow::Result<()> {
    if args.start_broker
        || args
            .pipeline
            .as_deref()
            .is_some_and(|p| p.starts_with("kafka://"))
    {
        #[cfg(feature = "kafka")]
        return kafka::ingest(config, args).await;
        #[cfg(not(feature = "kafka"))]
        anyhow::bail!("this floe was built without the `kafka` feature");
    }
    if let Some(pipeline) = &args.pipeline {
        anyhow::ensure!(
            pipeline.starts_with("file://"),
            "--pipeline must be a kafka:// URL (or file:// for the embedded log), not {pipeline:?}"
        );
    }
    let modes: Vec<FsyncMode> = match args.fsync.as_str() {
        "always" => vec![FsyncMode::Always],
        "never" => vec![FsyncMode::Never],
        "both" => vec![FsyncMode::Always, FsyncMode::Never],
        other => anyhow::bail!("--fsync must be always, never or both, not {other:?}"),
    };
    println!(
        "ingest: {} puts of ~{} B JSON, {} shards, embedded log; batches of {} from {} callers (write_many), single writes from {} callers",
        args.writes, args.payload_bytes, args.shards, args.batch, args.batch_callers, args.callers
    );
    let mut runs = Vec::new();
    for mode in modes {
        let mut config = config.clone();
        config.pipeline = "file://".into();
        config.topology.shards = args.shards;
        config.log.fsync = mode;
        // The write path alone: landing in Iceberg is `floe bench land`.
        config.lake.enabled = false;
        let kinds: &[(&str, u64, u64)] = if args.batch > 0 {
            &[
                ("batches", args.batch_callers, args.batch),
                ("single", args.callers, 1),
            ]
        } else {
            &[("single", args.callers, 1)]
        };
        for &(kind, callers, batch) in kinds {
            let dir = tempfile::tempdir().context("creating a temporary data directory")?;
            config.data_dir = dir.path().to_path_buf();
            let figures = ingest_once(config.clone(), &args, callers, batch).await?;
            let mode = format!("{mode:?}").to_lowercase();
            println!(
                "  fsync {mode:<6} {kind:<7} {:>10.0} acked writes/s  {} per call  ({:.0} writes per group commit)",
                figures.writes_per_s,
                report::latency_summary(&figures.histogram),
                figures.writes_per_batch
            );
            runs.push((mode, kind, figures));
        }
    }
    // The last line: per fsync mode, the batched figure first.
    let mut parts: Vec<String> = Vec::new();
    for (mode, kind, f) in &runs {
        let label = if *kind == "single" && args.batch > 0 {
            String::new()
        } else {
            format!("fsync {mode} ")
        };
        parts.push(format!(
            "{label}{kind} {} writes/s p99 {:.1} ms",
            group_thousands(f.writes_per_s),
            f.histogram.value_at_quantile(0.99) as f64 / 1000.0
        ));
    }
    let per_mode: Vec<String> = parts
        .chunks(if args.batch > 0 { 2 } else { 1 })
        .map(|c| c.join(", "))
        .collect();
    println!("ingest: {}", per_mode.join("; "));
    Ok(())
}

/// 1234567.8 -> "1,234,568".
fn group_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn reopen(config: Config, args: ReopenArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let mut config = config;
    config.data_dir = dir.path().to_path_buf();
    config.pipeline = "file://".into();
    config.log.fsync = FsyncMode::Never;
    // Recovery from the log alone (nothing landed).
    config.lake.enabled = false;
    let fill = IngestArgs {
        writes: args.entities,
        callers: 256,
        batch: 0,
        batch_callers: 0,
        shards: config.topology.shards,
        payload_bytes: args.payload_bytes,
        fsync: "never".into(),
        pipeline: None,
        start_broker: false,
    };
    println!(
        "reopen: filling {} entities of ~{} B",
        args.entities, args.payload_bytes
    );
    // Snapshots on (the default): the fill's close writes every shard's.
    config.snapshots.enabled = true;
    config.snapshots.on_close = true;
    ingest_once(config.clone(), &fill, 256, 1).await?;
    let log_bytes = dir_size(&dir.path().join("log"));
    let snapshot_bytes = dir_size(&dir.path().join(floe_emitter::SNAPSHOTS_DIR));
    // The same directory replayed from the whole log, for comparison (with
    // snapshots off nothing is written on close).
    let mut full = config.clone();
    full.snapshots.enabled = false;
    let started = Instant::now();
    let floe = Floe::open(full).await?;
    let full_elapsed = started.elapsed();
    let replayed = floe.recovery_stats().events;
    floe.close().await?;
    println!(
        "reopen: full replay of the log: {replayed} events in {:.2} s",
        full_elapsed.as_secs_f64()
    );
    // Nothing is written on this close either: the measured open loads
    // what the fill's close wrote.
    config.snapshots.on_close = false;
    let started = Instant::now();
    let floe = Floe::open(config).await?;
    let elapsed = started.elapsed();
    let recovery = floe.recovery_stats();
    let entities: u64 = floe.shard_stats().await?.iter().map(|s| s.entities).sum();
    let shards = floe.topology().shard_count;
    floe.close().await?;
    anyhow::ensure!(
        entities == args.entities,
        "reopened {entities} entities, wrote {}",
        args.entities
    );
    anyhow::ensure!(
        recovery.snapshot_shards == shards,
        "only {} shards started from a snapshot",
        recovery.snapshot_shards
    );
    println!(
        "reopen: from snapshots ({:.0} MB): {} records loaded, {} tail events replayed",
        snapshot_bytes as f64 / 1e6,
        recovery.from_snapshots,
        recovery.events
    );
    println!(
        "reopen: {entities} entities ({:.0} MB of log) reopened in {:.2} s ({:.0} events/s)",
        log_bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        report::per_second(entities, elapsed)
    );
    Ok(())
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
