//! Rebuilding every shard's state from the pipeline when a data directory opens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_engine::{DedupWindow, Event, Pipeline, Router, ShardState};

use crate::error::Result;

/// Events read per pipeline call during recovery.
const READ_CHUNK: usize = 8192;

/// What recovery hands to each shard worker.
#[derive(Debug, Default)]
pub(crate) struct RecoveredShard {
    pub(crate) state: ShardState,
    pub(crate) dedup: DedupWindow,
}

/// Figures about a recovery, for logs and the reopen benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Events read from the pipeline.
    pub events: u64,
    /// Events that changed state (the rest were older versions).
    pub applied: u64,
}

/// Replays every partition from its low watermark to its high watermark into
/// the shards the *current* topology names. Partitions are read concurrently;
/// each chunk is grouped by shard so a shard's lock is taken once per chunk.
/// Replay order across partitions does not matter: `apply` keeps the highest
/// version per entity.
pub(crate) async fn recover(
    pipeline: Arc<dyn Pipeline>,
    router: Arc<Router>,
    dedup_window: usize,
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
    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..pipeline.partitions() {
        let (pipeline, router, shards) = (pipeline.clone(), router.clone(), shards.clone());
        tasks.spawn(async move { replay_partition(&*pipeline, partition, &router, &shards).await });
    }
    let mut stats = RecoveryStats::default();
    while let Some(joined) = tasks.join_next().await {
        let partition_stats = joined
            .map_err(|e| floe_engine::Error::Closed(format!("recovery task failed: {e}")))??;
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

async fn replay_partition(
    pipeline: &dyn Pipeline,
    partition: u32,
    router: &Router,
    shards: &[Mutex<RecoveredShard>],
) -> Result<RecoveryStats> {
    let mut stats = RecoveryStats::default();
    let mut offset = pipeline.low_watermark(partition).await?;
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
        for (shard, events) in by_shard.iter_mut().enumerate() {
            if events.is_empty() {
                continue;
            }
            let mut guard = shards[shard].lock().unwrap_or_else(|p| p.into_inner());
            let recovered = &mut *guard;
            for event in events.drain(..) {
                recovered.dedup.observe(&event);
                if recovered.state.apply_owned(event) {
                    stats.applied += 1;
                }
            }
        }
    }
    Ok(stats)
}
