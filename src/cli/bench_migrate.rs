//! `floe bench migrate`: add a 17th shard to 16 shards holding millions of
//! events while writers keep writing, and report replay speed, bytes read
//! against the moving keys' share of the lake, write latency for moving keys
//! during the cutover, and refused writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use floe::{Config, EntityKey, Floe, FsyncMode, MigrationOptions, Phase, PlanKind, SinkMode};
use floe_emitter::sink::Lake;
use floe_emitter::{FileLog, FsyncPolicy, LogOptions};
use floe_engine::Event;
use serde_json::json;

use super::report;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Events loaded before the migration (landed in the lake).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events per entity (versions 1..=N); entities = events / versions.
    #[arg(long, default_value_t = 10)]
    versions: u64,
    /// Tenants (partition keys); entities are spread evenly over them.
    #[arg(long, default_value_t = 1000)]
    tenants: u64,
    /// Shards before the migration (it adds one).
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Concurrent writers during the migration.
    #[arg(long, default_value_t = 64)]
    writers: u32,
    /// Approximate bytes of each event's JSON state.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
}

fn event(seq: u64, entity: u64, version: u64, tenants: u64, payload: &str) -> Event {
    let tenant = format!("tenant-{:04}", entity % tenants);
    let id = format!("order-{:07}", entity / tenants);
    let timestamp_us = 1_763_683_200_000_000 + seq as i64;
    super::bench_land::order_event(seq, tenant, id, version, 0, timestamp_us, payload)
}

pub(crate) async fn migrate(mut config: Config, args: MigrateArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    config.data_dir = dir.path().to_path_buf();
    config.topology.shards = args.shards;
    config.log.partitions = args.shards;
    config.log.fsync = FsyncMode::Never;
    let entities = (args.events / args.versions).max(1);

    // Load: the pipeline directly (no shards), then the sink lands it all.
    let fill = Instant::now();
    {
        let log = FileLog::open(
            &dir.path().join("log"),
            LogOptions {
                partitions: args.shards,
                segment_bytes: 256 << 20,
                fsync: FsyncPolicy::Never,
            },
        )?;
        let payload = "x".repeat(args.payload_bytes.saturating_sub(60));
        let mut seq = 0;
        let mut batch = Vec::with_capacity(20_000);
        for version in 1..=args.versions {
            for entity in 0..entities {
                batch.push(event(seq, entity, version, args.tenants, &payload));
                seq += 1;
                if batch.len() == 20_000 {
                    log.append(&std::mem::take(&mut batch)).await?;
                }
            }
        }
        if !batch.is_empty() {
            log.append(&batch).await?;
        }
        log.close().await?;
    }
    let filled = fill.elapsed();
    let land = Instant::now();
    let landed = floe::run_sink(
        &config,
        SinkMode::Once,
        tokio::sync::watch::channel(false).1,
    )
    .await?;
    println!(
        "loaded {} events ({} entities, {} tenants) into the log in {:.1} s and landed them in {:.1} s ({} files)",
        landed.events,
        entities,
        args.tenants,
        filled.as_secs_f64(),
        land.elapsed().as_secs_f64(),
        landed.files
    );

    config.log.fsync = FsyncMode::Always;
    let open = Instant::now();
    let floe = Floe::open(config.clone()).await?;
    println!(
        "opened {} shards in {:.1} s (recovered {} events)",
        args.shards,
        open.elapsed().as_secs_f64(),
        floe.recovery_stats().events
    );
    let lake = Lake::open(config.lake.location(&config.data_dir)?).await?;
    let committed = lake.committed_offsets(args.shards).await?;
    let size = floe_migration::lake_size(&lake, &committed).await?;

    let plan = floe.migrations().plan(PlanKind::AddShard {}).await?;
    let moving: std::collections::HashSet<String> =
        plan.moves.iter().map(|m| m.partition_key.clone()).collect();
    println!(
        "plan: {} of {} tenants move to shard {} ({} events)",
        plan.moves.len(),
        plan.keys_total,
        args.shards,
        plan.estimated_events
    );

    // Writers: updates of random orders of random tenants, timed.
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.writers {
        let (floe, stop, refused, moving) =
            (floe.clone(), stop.clone(), refused.clone(), moving.clone());
        let (tenants, per_tenant) = (args.tenants, (entities / args.tenants).max(1));
        tasks.spawn(async move {
            let mut samples: Vec<(Duration, Duration, bool)> = Vec::new();
            let mut n = u64::from(w) * 7919;
            while !stop.load(Ordering::Acquire) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let tenant = format!("tenant-{:04}", (n >> 33) % tenants);
                let id = format!("order-{:07}", (n >> 13) % per_tenant);
                let is_moving = moving.contains(&tenant);
                let t0 = Instant::now();
                let result = floe
                    .update(
                        EntityKey::new(&tenant, "Order", id),
                        json!({ "status": "refunded", "by": w }),
                    )
                    .await;
                if result.is_err() {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                samples.push((t0 - started, t0.elapsed(), is_moving));
            }
            samples
        });
    }
    // Follow the phases to know when the cutover window opens and closes.
    let handle = floe
        .migrations()
        .start(plan.clone(), MigrationOptions::default())
        .await?;
    let mut progress = handle.progress();
    let phases = tokio::spawn(async move {
        let mut marks: Vec<(Phase, Duration)> = Vec::new();
        while progress.changed().await.is_ok() {
            let phase = progress.borrow_and_update().phase;
            if let Some(phase) = phase
                && marks.last().is_none_or(|(p, _)| *p != phase)
            {
                marks.push((phase, started.elapsed()));
            }
        }
        marks
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = handle.wait().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let mut samples = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined?);
    }
    let marks = phases.await.unwrap_or_default();
    floe.close().await?;

    super::migrate::print_report(&report);
    let at = |phase: Phase| marks.iter().find(|(p, _)| *p == phase).map(|(_, t)| *t);
    let window_start = at(Phase::Buffer).unwrap_or_default();
    let window_end = at(Phase::Cleanup).unwrap_or(Duration::MAX);
    let (mut cutover, mut moving_all, mut others) = (
        report::latency_histogram(),
        report::latency_histogram(),
        report::latency_histogram(),
    );
    for &(start, latency, is_moving) in &samples {
        let h = if !is_moving {
            &mut others
        } else if start + latency >= window_start && start <= window_end {
            &mut cutover
        } else {
            &mut moving_all
        };
        report::record(h, latency);
    }
    let copy_s = report.scan_us as f64 / 1e6;
    let replay_rate = report.lake_events as f64 / copy_s.max(1e-9);
    let moving_bytes = size.bytes as f64 * report.lake_events as f64 / size.rows.max(1) as f64;
    let ratio = report.bytes_read as f64 / moving_bytes.max(1.0);
    println!(
        "lake: {} files, {:.1} MB, {} rows; the moving keys' {} events are ~{:.1} MB of it",
        size.files,
        size.bytes as f64 / 1e6,
        size.rows,
        report.lake_events,
        moving_bytes / 1e6
    );
    println!(
        "writes during the run: {} ({} refused)",
        samples.len(),
        refused.load(Ordering::Relaxed)
    );
    println!(
        "  moving keys, overlapping buffer..cleanup ({} writes): {}",
        cutover.len(),
        report::latency_summary(&cutover)
    );
    println!(
        "  moving keys, other times ({} writes): {}",
        moving_all.len(),
        report::latency_summary(&moving_all)
    );
    println!(
        "  other keys ({} writes): {}",
        others.len(),
        report::latency_summary(&others)
    );
    println!(
        "copy {:.2} s = finding the moving keys' hashes {:.2} s + lake scan and apply {:.2} s",
        report.copy_us as f64 / 1e6,
        (report.copy_us - report.scan_us) as f64 / 1e6,
        copy_s
    );
    println!(
        "phases: {}",
        marks
            .iter()
            .map(|(p, t)| format!("{p}@{:.2}s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "bench migrate: replay {:.0} events/s (goal >= 1,000,000), bytes read / moving bytes {:.2} (goal <= 2), moving-key write p99 {:.1} ms max {:.1} ms during cutover (goal p99 <= 50 ms), {} refused writes (goal 0); Vitess stops writes during its switch (30 s default timeout)",
        replay_rate,
        ratio,
        cutover.value_at_quantile(0.99) as f64 / 1000.0,
        cutover.max() as f64 / 1000.0,
        refused.load(Ordering::Relaxed)
    );
    Ok(())
}
