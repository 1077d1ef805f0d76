//! `floe repair`: rebuilds damaged partitions of the embedded log from the
//! lake and the log's valid frames (the protocol is in
//! `floe_emitter::LogRepair`; this wires the data directory, the lake and the
//! log together).

use std::collections::HashMap;

use floe_emitter::{LogRepair, PartitionScan, RepairReport};
use floe_engine::{Offset, Record};

use crate::datadir::DirLock;
use crate::error::{Error, Result};
use crate::lake;
use floe_config::{Config, PipelineUrl};

/// Rebuilds the embedded log's damaged partitions (or only `partition`):
/// what the lake holds (its events below its committed offsets, at their
/// original offsets) plus the log's valid frames the lake does not have.
/// Every partition's report says what was rebuilt and exactly which offsets
/// are unrecoverable. With `dry_run` nothing is written.
///
/// Without `partition`, partitions whose files are intact and reach the
/// lake's committed offset are left alone; with it, that partition is
/// compared with the lake frame by frame even when it looks intact.
pub async fn repair(
    config: &Config,
    partition: Option<u32>,
    dry_run: bool,
) -> Result<Vec<RepairReport>> {
    config.validate()?;
    let _lock = DirLock::acquire(&config.data_dir)?;
    let PipelineUrl::File(dir) = config.pipeline_url()? else {
        return Err(Error::Config(format!(
            "floe repair rebuilds the embedded log, and this deployment's pipeline is {:?}",
            config.pipeline
        )));
    };
    let options = config.log.options();
    let partitions = options.partitions;
    let targets: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..partitions).collect(),
    };
    let (log, scans) = tokio::task::spawn_blocking(move || {
        let log = LogRepair::open(&dir, options)?;
        let scans = targets
            .iter()
            .map(|&p| log.scan(p))
            .collect::<floe_emitter::Result<Vec<PartitionScan>>>()?;
        Ok::<_, floe_emitter::Error>((log, scans))
    })
    .await
    .map_err(|e| Error::task("the repair scan", e))??;

    let lake = lake::open(config).await?;
    let committed = match &lake {
        Some(lake) => lake
            .committed_offsets(partitions)
            .await
            .map_err(Error::Lake)?,
        None => floe_emitter::sink::CommittedOffsets {
            snapshot_id: None,
            offsets: vec![0; partitions as usize],
        },
    };
    let needs = |scan: &PartitionScan| {
        partition.is_some()
            || scan.is_damaged()
            || scan.high_bound() < committed.offsets[scan.partition() as usize]
    };
    // The lake's events of the partitions to rebuild, from each one's low
    // offset (retention deleted the log below it; recovery reads those from
    // the lake anyway).
    let lows: HashMap<u32, Offset> = scans
        .iter()
        .filter(|s| needs(s))
        .map(|s| (s.partition(), s.low()))
        .collect();
    let mut landed: HashMap<u32, Vec<Record>> = HashMap::new();
    if let Some(lake) = &lake
        && !lows.is_empty()
    {
        lake.scan_landed(&committed, |records| {
            for record in records {
                if lows
                    .get(&record.partition)
                    .is_some_and(|&low| record.offset >= low)
                {
                    landed.entry(record.partition).or_default().push(record);
                }
            }
            Ok(())
        })
        .await
        .map_err(Error::Lake)?;
    }
    let mut plans = Vec::with_capacity(scans.len());
    let mut reports = Vec::with_capacity(scans.len());
    for scan in &scans {
        let p = scan.partition();
        let lake_committed = committed.offsets[p as usize];
        if !needs(scan) {
            reports.push(scan.healthy_report(lake_committed));
            continue;
        }
        let plan = scan.plan(landed.remove(&p).unwrap_or_default(), lake_committed)?;
        reports.push(plan.report.clone());
        plans.push(plan);
    }
    if !dry_run {
        // Shard snapshots describe the log as it was: a rebuilt partition may
        // hold other events (or fewer) at their offsets, so they all go
        // before anything is rewritten, and the next open replays in full.
        if !plans.is_empty() {
            let store = floe_emitter::SnapshotStore::new(&config.data_dir);
            let removed = tokio::task::spawn_blocking(move || store.remove_all())
                .await
                .map_err(|e| Error::task("removing shard snapshots", e))?
                .map_err(Error::Snapshot)?;
            if removed > 0 {
                tracing::info!(removed, "shard snapshots removed before the repair");
            }
        }
        tokio::task::spawn_blocking(move || plans.iter().try_for_each(|plan| log.apply(plan)))
            .await
            .map_err(|e| Error::task("the repair", e))??;
    }
    Ok(reports)
}
