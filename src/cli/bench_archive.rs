//! `floe bench archive`: entities over twelve monthly periods, then eleven
//! of them archived (seed 002's archive window). Reports resident memory
//! and in-memory entities before and after, and the latency of reads of an
//! archived entity (from the lake) next to an active one (from memory).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use floe::{
    Config, EntityKey, Floe, FsyncMode, MigrationOptions, PartitionKeySpec, Period, PlanKind,
    ReadSource, Strategy, WriteRequest,
};

use super::report;

#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    /// Entities written, spread evenly over the periods.
    #[arg(long, default_value_t = 1_000_000)]
    entities: u64,
    /// Monthly periods (from 2024-01), one shard each.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(2..=120))]
    periods: u32,
    /// Periods archived, oldest first (at most periods - 1).
    #[arg(long, default_value_t = 11)]
    archive: u32,
    /// Approximate bytes of each entity's JSON.
    #[arg(long, default_value_t = 500)]
    payload_bytes: usize,
    /// Reads timed per kind (active, archived).
    #[arg(long, default_value_t = 200)]
    reads: u64,
    /// Write the periods' entities interleaved (entity `e` in period `e %
    /// periods`) instead of in time order, one period after the other as
    /// they would arrive: the allocator's worst case, where every page
    /// keeps a surviving entity after the archival.
    #[arg(long)]
    interleaved: bool,
}

impl ArchiveArgs {
    /// The period of entity `entity`.
    fn period_of(&self, entity: u64) -> u32 {
        let periods = u64::from(self.periods);
        match self.interleaved {
            true => (entity % periods) as u32,
            false => (entity * periods / self.entities.max(1)) as u32,
        }
    }
}

fn label(period: u32) -> String {
    format!("{:04}-{:02}", 2024 + period / 12, period % 12 + 1)
}

fn key(entity: u64) -> EntityKey {
    EntityKey::new("acme", "Incident", format!("inc-{entity:08}"))
}

/// The entity's JSON: its team, its time in period `period`, and filler up
/// to about `payload` bytes.
fn body(entity: u64, period: u32, filler: &str) -> String {
    format!(
        r#"{{"team_id":"team-{:03}","created_at":"{}-{:02}T{:02}:00:00Z","title":"disk full","notes":"{filler}"}}"#,
        entity % 100,
        label(period),
        entity % 28 + 1,
        entity % 24,
    )
}

/// Resident memory of this process in bytes (Linux `/proc/self/status`).
fn resident_bytes() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

async fn in_memory(floe: &Floe) -> anyhow::Result<(u64, u64)> {
    let stats = floe.shard_stats().await?;
    Ok((
        stats.iter().map(|s| s.entities).sum(),
        stats.iter().map(|s| s.bytes).sum(),
    ))
}

/// Resident memory once the allocator has had time to give freed pages back.
async fn settled_resident() -> anyhow::Result<u64> {
    let mut last = resident_bytes()?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = resident_bytes()?;
        if now >= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

const MIB: f64 = 1024.0 * 1024.0;

pub(crate) async fn archive(mut config: Config, args: ArchiveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.archive < args.periods,
        "--archive must leave at least one period active (at most {})",
        args.periods - 1
    );
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    config.data_dir = dir.path().to_path_buf();
    config.pipeline = "file://".into();
    config.log.fsync = FsyncMode::Never;
    config.log.partitions = args.periods.min(16);
    config.lake.enabled = true;
    config.lake.sink = true;
    config.snapshots.enabled = false;
    config.migration.period_lead_time_ms = 0;
    config.migration.active_periods = 0;
    config.topology.shards = args.periods;
    config.topology.strategy = Strategy::Time {
        period: Period::Month,
        offset: None,
        time_part: Some(1),
        tenant_part: Some(0),
        periods: (0..args.periods).map(|p| (label(p), p)).collect(),
        tenants: BTreeMap::new(),
        archived: BTreeMap::new(),
    };
    config.partition_key.default = PartitionKeySpec::parse(&["team_id", "created_at"])?;
    let filler = "x".repeat(args.payload_bytes.saturating_sub(110));

    let baseline = resident_bytes()?;
    let floe = Floe::open(config).await?;
    let started = Instant::now();
    const BATCH: u64 = 1000;
    let mut next = 0;
    while next < args.entities {
        let end = (next + BATCH).min(args.entities);
        let requests = (next..end)
            .map(|e| WriteRequest::create_text(key(e), body(e, args.period_of(e), &filler)))
            .collect();
        for (i, result) in floe.write_many(requests).await.into_iter().enumerate() {
            result.with_context(|| format!("writing entity {}", next + i as u64))?;
        }
        next = end;
    }
    let fill = started.elapsed();
    println!(
        "archive: wrote {} entities of ~{} B over {} periods ({}) in {:.1} s ({:.0}/s)",
        args.entities,
        args.payload_bytes,
        args.periods,
        if args.interleaved {
            "interleaved"
        } else {
            "in time order"
        },
        fill.as_secs_f64(),
        report::per_second(args.entities, fill)
    );
    // The steady state before: the sink has landed the backlog of the fill
    // (its buffers are freed), as it has in a deployment before any period
    // is old enough to archive.
    let landing = Instant::now();
    while floe.sink_lag().await?.events > 0 {
        anyhow::ensure!(
            landing.elapsed() < Duration::from_secs(600),
            "the sink did not land the fill within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (before_entities, before_bytes) = in_memory(&floe).await?;
    let before = settled_resident().await?;

    let started = Instant::now();
    let mut evicted = 0;
    for period in 0..args.archive {
        let migrations = floe.migrations();
        let plan = migrations
            .plan(PlanKind::ArchivePeriod {
                period: label(period),
            })
            .await?;
        evicted += migrations
            .run(plan, MigrationOptions::default())
            .await?
            .entities_moved;
    }
    let archiving = started.elapsed();
    let (after_entities, after_bytes) = in_memory(&floe).await?;
    let after = settled_resident().await?;
    println!(
        "archive: archived {} periods in {:.1} s ({evicted} entities evicted)",
        args.archive,
        archiving.as_secs_f64()
    );

    // Reads: entities of the newest period (memory) and of the archived
    // ones (the lake, with the partition key: one key's files).
    let periods = u64::from(args.periods);
    let active: Vec<u64> = (0..args.entities)
        .filter(|&e| args.period_of(e) == args.periods - 1)
        .step_by(((args.entities / periods) / args.reads.max(1)).max(1) as usize)
        .take(args.reads as usize)
        .collect();
    let archived: Vec<u64> = (0..args.entities)
        .filter(|&e| args.period_of(e) < args.archive)
        .step_by(((args.entities / periods) / args.reads.max(1)).max(1) as usize)
        .take(args.reads as usize)
        .collect();
    let mut latency = Vec::new();
    for (what, entities, lake) in [("active", &active, false), ("archived", &archived, true)] {
        let mut histogram = report::latency_histogram();
        for &e in entities {
            let text = body(e, args.period_of(e), &filler);
            let data: serde_json::Value = serde_json::from_str(&text)?;
            let pk = floe.partition_key_of(&key(e), Some(&data))?;
            let started = Instant::now();
            let read = floe
                .read(&key(e), Some(&pk))
                .await?
                .with_context(|| format!("{what} entity {e} not found"))?;
            report::record(&mut histogram, started.elapsed());
            anyhow::ensure!(
                matches!(read.source, ReadSource::Lake { .. }) == lake,
                "{what} entity {e} read from {:?}",
                read.source
            );
            anyhow::ensure!(read.entity.version == 1, "{what} entity {e}: wrong version");
        }
        println!(
            "archive: {what} reads ({}): {}",
            entities.len(),
            report::latency_summary(&histogram)
        );
        latency.push(histogram);
    }
    floe.close().await?;

    let (base_before, base_after) = (
        before.saturating_sub(baseline),
        after.saturating_sub(baseline),
    );
    let fallen = 100.0 * (1.0 - base_after as f64 / base_before.max(1) as f64);
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "archive: entities in memory {before_entities} -> {after_entities}, data {:.0} -> {:.0} MiB; resident above the empty process {:.0} -> {:.0} MiB",
        before_bytes as f64 / MIB,
        after_bytes as f64 / MIB,
        base_before as f64 / MIB,
        base_after as f64 / MIB,
    );
    println!(
        "archive: memory -{fallen:.0}% ({:.0} -> {:.0} MiB resident) after archiving {} of {} periods; reads active p50 {:.2} ms p99 {:.2} ms, archived p50 {:.2} ms p99 {:.2} ms",
        before as f64 / MIB,
        after as f64 / MIB,
        args.archive,
        args.periods,
        ms(&latency[0], 0.5),
        ms(&latency[0], 0.99),
        ms(&latency[1], 0.5),
        ms(&latency[1], 0.99),
    );
    Ok(())
}
