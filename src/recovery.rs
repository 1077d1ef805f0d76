//! Rebuilding every shard's state when a data directory opens: from the
//! pipeline, and from the Iceberg lake for what retention deleted there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_emitter::sink::Lake;
use floe_engine::{DedupWindow, Event, Offset, Pipeline, Router, ShardState};

use crate::error::{Error, Result};

/// Events read per pipeline call during recovery.
const READ_CHUNK: usize = 8192;

/// What recovery hands to each shard worker.
#[derive(Debug, Default)]
pub(crate) struct RecoveredShard {
    pub(crate) state: ShardState,
    pub(crate) dedup: DedupWindow,
}

/// Figures about a recovery, for logs and the reopen benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryStats {
    /// Events read from the pipeline.
    pub events: u64,
    /// Events that changed state (the rest were older versions).
    pub applied: u64,
    /// Of `events`, those read from the Iceberg lake rather than the pipeline.
    pub from_lake: u64,
}

/// Replays every event into the shards the *current* topology names.
///
/// While every partition still starts at offset 0 (no retention), the
/// pipeline alone is replayed. Otherwise, in this order:
/// 1. read the lake's committed offsets `C[p]` (one snapshot);
/// 2. check `low_watermark[p] <= C[p]`: retention never deletes past `C`;
/// 3. apply the events of that snapshot (exactly the offsets below `C[p]`);
/// 4. replay the pipeline from `C[p]` to its high watermark.
///
/// Every offset below the head is then read exactly once, from one source.
/// Partitions are read concurrently; each chunk is grouped by shard so a
/// shard's lock is taken once per chunk. Replay order does not matter:
/// `apply` keeps the highest version per entity.
pub(crate) async fn recover(
    pipeline: Arc<dyn Pipeline>,
    router: Arc<Router>,
    dedup_window: usize,
    lake: Option<&Lake>,
) -> Result<(Vec<RecoveredShard>, RecoveryStats)> {
    let shard_count = router.topology().shard_count as usize;
    let shards: Arc<Vec<Mutex<RecoveredShard>>> = Arc::new(
        (0..shard_count)
            .map(|_| {
                Mutex::new(RecoveredShard {
                    state: ShardState::new(),
                    dedup: DedupWindow::new(dedup_window),
                })
            })
            .collect(),
    );
    let mut stats = RecoveryStats::default();
    let starts = replay_lake(&*pipeline, lake, &router, &shards, &mut stats).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..pipeline.partitions() {
        let (pipeline, router, shards) = (pipeline.clone(), router.clone(), shards.clone());
        let start = starts.as_ref().map(|s| s[partition as usize]);
        tasks.spawn(async move {
            replay_partition(&*pipeline, partition, start, &router, &shards).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let partition_stats =
            joined.map_err(|e| Error::task("a partition's recovery task", e))??;
        stats.events += partition_stats.events;
        stats.applied += partition_stats.applied;
    }
    let shards = Arc::into_inner(shards)
        .expect("every recovery task has finished")
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    Ok((shards, stats))
}

/// Steps 1-3 of [`recover`]: applies the landed events when retention has
/// deleted part of the pipeline; returns where each partition's replay
/// starts (`None`: at its low watermark, the lake is not needed).
async fn replay_lake(
    pipeline: &dyn Pipeline,
    lake: Option<&Lake>,
    router: &Router,
    shards: &[Mutex<RecoveredShard>],
    stats: &mut RecoveryStats,
) -> Result<Option<Vec<Offset>>> {
    let partitions = pipeline.partitions();
    let mut lows = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        lows.push(pipeline.low_watermark(p).await?);
    }
    if lows.iter().all(|&low| low == 0) {
        return Ok(None);
    }
    let Some(lake) = lake else {
        return Err(Error::LakeDisabled {
            needs: "recovering the landed events that the pipeline's retention deleted",
        });
    };
    let committed = lake
        .committed_offsets(partitions)
        .await
        .map_err(Error::Lake)?;
    for (p, (&low, &landed)) in lows.iter().zip(&committed.offsets).enumerate() {
        if low > landed {
            return Err(Error::EventsLost {
                partition: p as u32,
                low_watermark: low,
                landed,
            });
        }
    }
    let mut by_shard: Vec<Vec<Event>> = vec![Vec::new(); shards.len()];
    let mut applied = 0;
    let rows = lake
        .scan_landed(&committed, |records| {
            for record in records {
                let event = record.event;
                let shard = router.route(&event.partition_key, event.key_hash) as usize;
                by_shard[shard].push(event);
            }
            applied += apply_grouped(&mut by_shard, shards);
            Ok(())
        })
        .await
        .map_err(Error::Lake)?;
    stats.events += rows;
    stats.from_lake += rows;
    stats.applied += applied;
    Ok(Some(committed.offsets))
}

fn apply_grouped(by_shard: &mut [Vec<Event>], shards: &[Mutex<RecoveredShard>]) -> u64 {
    let mut applied = 0;
    for (shard, events) in by_shard.iter_mut().enumerate() {
        if events.is_empty() {
            continue;
        }
        let mut guard = shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let recovered = &mut *guard;
        for event in events.drain(..) {
            recovered.dedup.observe(&event);
            if recovered.state.apply_owned(event) {
                applied += 1;
            }
        }
    }
    applied
}

async fn replay_partition(
    pipeline: &dyn Pipeline,
    partition: u32,
    start: Option<Offset>,
    router: &Router,
    shards: &[Mutex<RecoveredShard>],
) -> Result<RecoveryStats> {
    let mut stats = RecoveryStats::default();
    let mut offset = match start {
        Some(start) => start,
        None => pipeline.low_watermark(partition).await?,
    };
    let end = pipeline.high_watermark(partition).await?;
    let mut by_shard: Vec<Vec<Event>> = vec![Vec::new(); shards.len()];
    while offset < end {
        let records = pipeline
            .read(partition, offset, READ_CHUNK, Duration::ZERO)
            .await?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        stats.events += records.len() as u64;
        for record in records {
            let event = record.event;
            let shard = router.route(&event.partition_key, event.key_hash) as usize;
            by_shard[shard].push(event);
        }
        stats.applied += apply_grouped(&mut by_shard, shards);
    }
    Ok(stats)
}
