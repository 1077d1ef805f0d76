//! `floe bench land`: events/s landed in Iceberg from a pre-filled pipeline,
//! side by side with pyiceberg appending the same rows from memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use floe::Config;
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink};
use floe_emitter::{FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, EventKind, Json, Pipeline};
use uuid::Uuid;

use super::report::per_second;

#[derive(Debug, Args)]
pub(crate) struct LandArgs {
    /// Events pre-filled and landed.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Pipeline partitions.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Approximate size of each event's JSON state.
    #[arg(long, default_value_t = 300)]
    payload_bytes: usize,
    /// Also land the same events in the lake of the configuration (`[lake]`:
    /// e.g. `rest://` over `s3://`; it must not hold `floe.events` events
    /// yet) and report its rate next to the local one.
    #[arg(long)]
    configured_lake: bool,
    /// Python with pyiceberg for the comparison (default: $FLOE_PYTHON).
    #[arg(long, env = "FLOE_PYTHON")]
    python: Option<PathBuf>,
}

/// The benchmark's event `seq`: 1,000 tenants, 100,000 orders, realistic JSON.
fn event(seq: u64, payload: &str) -> Event {
    let tenant = format!("tenant-{:04}", seq % 1000);
    let id = format!("order-{:06}", seq % 100_000);
    let timestamp_us = 1_763_683_200_000_000 + (seq as i64) * 1000;
    order_event(
        seq,
        tenant,
        id,
        seq / 100_000 + 1,
        (seq % 16) as u32,
        timestamp_us,
        payload,
    )
}

/// An `Order` event of `tenant` (its partition key) as the landing and
/// migration benchmarks write them: `seq` makes ids and the JSON unique.
pub(super) fn order_event(
    seq: u64,
    tenant: String,
    id: String,
    version: u64,
    shard: u32,
    timestamp_us: i64,
    payload: &str,
) -> Event {
    Event {
        event_id: Uuid::from_u128(u128::from(seq) + (1 << 100)),
        idempotency_key: format!("{tenant}/Order/{id}@v{version}"),
        kind: if version == 1 {
            EventKind::Created
        } else {
            EventKind::Updated
        },
        key_hash: xxhash_rust::xxh3::xxh3_64(tenant.as_bytes()),
        partition_key: tenant.clone(),
        namespace: tenant,
        entity_type: "Order".into(),
        entity_id: id,
        shard,
        version,
        timestamp_us,
        request_fingerprint: None,
        owner_epoch: 0,
        state: Some(Json::from_trusted(format!(
            r#"{{"seq":{seq},"status":"paid","total_cents":{},"note":"{payload}"}}"#,
            seq % 10_000
        ))),
    }
}

pub(crate) async fn land(config: Config, args: LandArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Arc::new(FileLog::open(
        &dir.path().join("log"),
        LogOptions {
            partitions: args.partitions,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Never,
        },
    )?);
    let payload = "x".repeat(args.payload_bytes.saturating_sub(60));
    let fill = Instant::now();
    let mut seq = 0;
    while seq < args.events {
        let n = (args.events - seq).min(20_000);
        let events: Vec<Event> = (seq..seq + n).map(|s| event(s, &payload)).collect();
        log.append(&events).await?;
        seq += n;
    }
    println!(
        "pre-filled {} events ({} partitions, ~{} B state) in {:.1} s",
        args.events,
        args.partitions,
        args.payload_bytes,
        fill.elapsed().as_secs_f64()
    );

    let lake = Lake::open(LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.path().join("catalog.db")),
        warehouse: format!("file://{}", dir.path().join("warehouse").display()),
        properties: HashMap::new(),
    })
    .await?;
    let options = config.lake.sink_options();
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut sink = Sink::start(lake, pipeline, options.clone()).await?;
    let stats = sink.land_to_head().await?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    sink.release().await?;
    anyhow::ensure!(
        stats.events == args.events,
        "landed {} events",
        stats.events
    );
    let rate = per_second(stats.events, elapsed);
    println!(
        "floe sink: {} events in {:.2} s = {:.0} events/s ({:.2} CPU s, {:.1} cores busy); {} commits, {:.1} files/commit, avg file {:.1} MiB (commit every {} events / {} MiB, zstd {})",
        stats.events,
        elapsed.as_secs_f64(),
        rate,
        cpu,
        cpu / elapsed.as_secs_f64(),
        stats.commits,
        stats.files as f64 / stats.commits.max(1) as f64,
        stats.bytes as f64 / stats.files.max(1) as f64 / (1 << 20) as f64,
        options.commit_events,
        options.commit_bytes >> 20,
        options.zstd_level,
    );

    if args.configured_lake {
        let location = config.lake.location(&config.data_dir)?;
        let label = format!("{} over {}", location.catalog, location.warehouse);
        let lake = Lake::open(location).await?;
        let started = Instant::now();
        let mut sink = Sink::start(lake, log.clone(), options.clone()).await?;
        let landed = sink.land_to_head().await?;
        let elapsed = started.elapsed();
        sink.release().await?;
        anyhow::ensure!(
            landed.events == args.events,
            "the configured lake landed {} of {} events: it must start empty",
            landed.events,
            args.events
        );
        let remote = per_second(landed.events, elapsed);
        println!(
            "configured lake ({label}): {} events in {:.2} s = {remote:.0} events/s, {:.2}x the local lake; {} commits",
            landed.events,
            elapsed.as_secs_f64(),
            remote / rate,
            landed.commits,
        );
    }

    let Some(python) = args.python else {
        println!(
            "land: {rate:.0} events/s (pyiceberg comparison skipped: no --python / FLOE_PYTHON)"
        );
        return Ok(());
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pyiceberg_append.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(args.events.to_string())
        .arg(args.payload_bytes.to_string())
        .arg(dir.path().join("py"))
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "pyiceberg append failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let py_rate = figures["events_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "pyiceberg append (in-memory Arrow table, unpartitioned, zstd): {} events in {:.2} s = {py_rate:.0} events/s",
        figures["events"],
        figures["seconds"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "land: {rate:.0} events/s, {:.2}x pyiceberg ({py_rate:.0} events/s)",
        rate / py_rate
    );
    Ok(())
}

/// User + system CPU seconds this process has used (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime is the
    // 12th and stime the 13th of them, in clock ticks (100 per second).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
