//! Some shards' state rebuilt from history, kept current by reading on: what a
//! cluster node taking shards over in a planned handover warms up with while
//! the old owner still serves, then catches up to the high watermark once the
//! old owner has let go.
//!
//! Same sources and checks as [`super::recover`] (the lake snapshot when
//! retention trimmed the pipeline, then the pipeline tail); only the events
//! of the wanted shards are kept, and each partition's read position is kept
//! so that [`ShardReplay::catch_up`] reads only what was appended since.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use floe_engine::{Event, Offset, Pipeline, RecoveredShard, Router};
use tokio::sync::mpsc;

use super::{LakeScan, LakeUse, PartitionTail, RecoveryStats, ReplaySource};
use crate::error::{Error, Result};
use crate::sink::Lake;

/// Events read per pipeline call.
const READ_CHUNK: usize = 8192;

/// The wanted shards' state as of `positions` (every event of those shards at
/// offsets below `positions[p]` of each partition `p` applied).
#[derive(Debug)]
pub struct ShardReplay {
    /// Shard -> its state.
    pub shards: BTreeMap<u32, RecoveredShard>,
    /// Where each partition's next read starts.
    pub positions: Vec<Offset>,
    /// What was read so far.
    pub stats: RecoveryStats,
}

impl ShardReplay {
    /// Rebuilds `shards` from the lake and the pipeline up to the high
    /// watermarks read when the call starts.
    pub async fn recover(
        pipeline: Arc<dyn Pipeline>,
        router: Arc<Router>,
        shards: &BTreeSet<u32>,
        dedup_window: usize,
        lake: Option<&Lake>,
    ) -> Result<ShardReplay> {
        let mut replay = ShardReplay {
            shards: shards
                .iter()
                .map(|s| (*s, RecoveredShard::new(dedup_window)))
                .collect(),
            positions: Vec::new(),
            stats: RecoveryStats::default(),
        };
        let source = ReplaySource::resolve(&*pipeline, lake, LakeUse::WhenTrimmed).await?;
        if let (Some(lake), Some(snapshot)) = (lake, &source.snapshot) {
            let (tx, mut rx) = mpsc::channel(4);
            let scan = async move {
                let scanned = LakeScan::default()
                    .run(lake, snapshot, None, None, &tx)
                    .await;
                drop(tx);
                scanned
            };
            let apply = async {
                let mut stats = RecoveryStats::default();
                while let Some(records) = rx.recv().await {
                    let events = records.into_iter().map(|r| r.event);
                    let (read, applied) = replay.apply(&router, events);
                    stats.events += read;
                    stats.from_lake += read;
                    stats.applied += applied;
                }
                stats
            };
            let (scanned, stats) = tokio::join!(scan, apply);
            scanned?;
            replay.stats = stats;
        }
        replay.positions = source.from;
        replay.catch_up(&pipeline, &router).await?;
        Ok(replay)
    }

    /// Reads every partition from its position to the high watermark read
    /// now and applies the wanted shards' events; returns the events read.
    pub async fn catch_up(
        &mut self,
        pipeline: &Arc<dyn Pipeline>,
        router: &Arc<Router>,
    ) -> Result<u64> {
        let wanted: Arc<BTreeSet<u32>> = Arc::new(self.shards.keys().copied().collect());
        let mut tasks = tokio::task::JoinSet::new();
        for (partition, &start) in (0u32..).zip(&self.positions) {
            let (pipeline, router, wanted) = (pipeline.clone(), router.clone(), wanted.clone());
            tasks.spawn(async move {
                let end = pipeline
                    .high_watermark(partition)
                    .await
                    .map_err(|cause| Error::Pipeline { cause })?;
                let mut tail = PartitionTail::new(partition, start, end, READ_CHUNK);
                let mut events: Vec<Event> = Vec::new();
                let mut read = 0u64;
                while let Some(records) = tail
                    .next(&*pipeline)
                    .await
                    .map_err(|cause| Error::Pipeline { cause })?
                {
                    read += records.len() as u64;
                    events.extend(
                        records.into_iter().map(|r| r.event).filter(|e| {
                            wanted.contains(&router.route(&e.partition_key, e.key_hash))
                        }),
                    );
                }
                Ok::<_, Error>((partition, end.max(start), read, events))
            });
        }
        let mut total = 0;
        while let Some(joined) = tasks.join_next().await {
            let (partition, end, read, events) =
                joined.map_err(|e| Error::Task(format!("replay task failed: {e}")))??;
            let (_, applied) = self.apply(router, events.into_iter());
            self.stats.events += read;
            self.stats.applied += applied;
            self.positions[partition as usize] = end;
            total += read;
        }
        Ok(total)
    }

    /// Applies the events of the wanted shards; returns (events seen, applied).
    fn apply(&mut self, router: &Router, events: impl Iterator<Item = Event>) -> (u64, u64) {
        let (mut seen, mut applied) = (0, 0);
        for event in events {
            seen += 1;
            let shard = router.route(&event.partition_key, event.key_hash);
            if let Some(state) = self.shards.get_mut(&shard)
                && state.apply(event)
            {
                applied += 1;
            }
        }
        (seen, applied)
    }
}
