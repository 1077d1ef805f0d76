//! Restoring some shards: what a cluster node does with the shards it was
//! just granted (the previous owner is gone, its state with it).
//!
//! [`recover`](super::recover) rebuilds every shard of the deployment, and
//! reads the lake only once retention has trimmed the pipeline (a reopen
//! must read everything anyway). A node taking over two shards of twelve
//! needs neither: [`restore_shards`] reads the lake's snapshot whenever
//! there is one, only the rows of keys routed to the wanted shards (their
//! key hashes found first from the two key columns, then pushed down to
//! the scan of the full rows), and the pipeline only from the lake's
//! committed offsets, applying only events routed to the wanted shards.
//! The result equals those shards of a full `recover` over the same
//! history (`emitter/tests/restore.rs` checks it against a real lake).
//! Kept as a [`ShardReplay`], the state can be kept current by reading on
//! ([`ShardReplay::catch_up`]): the warm-up of a planned handover.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use floe_engine::{Event, Offset, Pipeline, RecoveredShard, Router};
use tokio::sync::mpsc;

use super::recover::{READ_CHUNK, apply_grouped, apply_tail, group, into_shards};
use super::{LakeScan, LakeUse, MAX_PUSHED_KEYS, PartitionTail, ReplaySource, heads};
use crate::error::{Error, Result};
use crate::sink::Lake;

/// Figures about one per-shard restore, for logs and the failover
/// benchmark's breakdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreStats {
    /// Events applied to the restored shards or found older (read from the
    /// lake or the pipeline tail and routed to a wanted shard).
    pub events: u64,
    /// Of `events`, those that changed state.
    pub applied: u64,
    /// Of `events`, those read from the lake.
    pub from_lake: u64,
    /// Lake rows decoded in the full-row scan (after the key-hash pushdown).
    pub lake_rows_scanned: u64,
    /// Key hashes pushed down to the full-row scan (`None`: more than
    /// [`MAX_PUSHED_KEYS`], every file read and filtered by routing).
    pub pushed_hashes: Option<u64>,
    /// Pipeline events read after the lake's committed offsets (all shards).
    pub tail_events: u64,
    /// Microseconds spent finding the wanted keys' hashes in the lake.
    pub key_scan_us: u64,
    /// Microseconds spent reading the lake's rows.
    pub lake_us: u64,
    /// Microseconds spent reading the pipeline tail.
    pub tail_us: u64,
}

/// Some shards' state rebuilt from history, and the pipeline position it
/// is current to: what a node restores the shards it was granted from, and
/// what it warms up with in a planned handover while the old owner still
/// serves ([`ShardReplay::catch_up`] then reads only what was appended
/// since).
#[derive(Debug)]
pub struct ShardReplay {
    router: Arc<Router>,
    /// `due[s]`: shard `s` is kept (the others have an empty slot that
    /// nothing is applied to, so the grouping helpers of `recover` index
    /// them as they do there).
    due: Vec<bool>,
    shards: Arc<Vec<Mutex<RecoveredShard>>>,
    /// Where each partition's next read starts: every event of the kept
    /// shards below these offsets is applied.
    positions: Vec<Offset>,
    /// What was read so far.
    pub stats: RestoreStats,
}

impl ShardReplay {
    /// Rebuilds shards `wanted` (and no other) from history under `router`:
    /// the lake's snapshot when it has one, then each pipeline partition
    /// from the lake's committed offset (0 without a snapshot) up to its
    /// high watermark read here, at the start of the call.
    ///
    /// A caller restoring granted shards calls it only once their grant is
    /// active (the previous owner stopped acknowledging), so the watermarks
    /// read here cover every event the previous owner acknowledged. Checked
    /// on the way, each with its own error: retention never deleted past
    /// the lake's committed offsets ([`Error::RetentionAboveCommitted`];
    /// without a lake nothing was deleted, [`Error::HistoryNeedsLake`]), the
    /// committed offsets are within the pipeline
    /// ([`Error::CommittedBeyondHead`]), no lake row is at or beyond them
    /// ([`Error::SnapshotBeyondCommitted`]), and every wanted shard exists
    /// ([`Error::UnknownShard`]).
    pub async fn recover(
        pipeline: Arc<dyn Pipeline>,
        router: Arc<Router>,
        wanted: &[u32],
        dedup_window: usize,
        lake: Option<&Lake>,
    ) -> Result<ShardReplay> {
        let shard_count = router.topology().shard_count;
        if let Some(&shard) = wanted.iter().find(|&&s| s >= shard_count) {
            return Err(Error::UnknownShard { shard, shard_count });
        }
        let mut due = vec![false; shard_count as usize];
        for &shard in wanted {
            due[shard as usize] = true;
        }
        let shards: Arc<Vec<Mutex<RecoveredShard>>> = Arc::new(
            due.iter()
                .map(|&d| Mutex::new(RecoveredShard::new(if d { dedup_window } else { 0 })))
                .collect(),
        );
        let mut stats = RestoreStats::default();
        let source = ReplaySource::resolve(&*pipeline, lake, LakeUse::Always).await?;
        // Read after the committed offsets: every offset the lake covers was
        // appended before, so it is below these unless the pipeline lost events.
        let heads = heads(&*pipeline)
            .await
            .map_err(|cause| Error::Pipeline { cause })?;
        check_committed_within_heads(&source.from, &heads)?;

        if let (Some(lake), Some(snapshot)) = (lake, &source.snapshot) {
            let scan = LakeScan::default();
            let due: Arc<[bool]> = due.clone().into();
            let keep = {
                let router = router.clone();
                move |key: &str, hash: u64| {
                    due[router.route(key, hash) as usize] && !router.is_archived(key)
                }
            };
            let started = Instant::now();
            let (hashes, _) = scan.key_hashes(lake, snapshot, &keep).await?;
            stats.key_scan_us = started.elapsed().as_micros() as u64;
            let pushed = (hashes.len() <= MAX_PUSHED_KEYS).then_some(hashes);
            stats.pushed_hashes = pushed.as_ref().map(|h| h.len() as u64);

            let started = Instant::now();
            let (tx, mut rx) = mpsc::channel(4);
            let read = async {
                let scanned = scan
                    .run(lake, snapshot, Some(&keep), pushed.as_deref(), &tx)
                    .await;
                drop(tx);
                scanned
            };
            let apply = async {
                let mut by_shard: Vec<Vec<Event>> = vec![Vec::new(); shard_count as usize];
                let (mut events, mut applied) = (0, 0);
                while let Some(records) = rx.recv().await {
                    events += records.len() as u64;
                    group(records, &router, &mut by_shard);
                    applied += apply_grouped(&mut by_shard, &shards);
                }
                (events, applied)
            };
            let (scanned, (events, applied)) = tokio::join!(read, apply);
            let scanned = scanned?;
            stats.lake_rows_scanned = scanned.rows_scanned;
            stats.events += events;
            stats.from_lake += events;
            stats.applied += applied;
            stats.lake_us = started.elapsed().as_micros() as u64;
        }

        let mut replay = ShardReplay {
            router,
            due,
            shards,
            positions: source.from,
            stats,
        };
        let started = Instant::now();
        replay.read_to(&pipeline, &heads).await?;
        replay.stats.tail_us = started.elapsed().as_micros() as u64;
        Ok(replay)
    }

    /// Reads every partition from its position to the high watermark read
    /// now and applies the kept shards' events; returns the events read.
    /// After a failure the positions are those of the partitions read in
    /// full; an event read twice is applied once (replay is idempotent).
    pub async fn catch_up(&mut self, pipeline: &Arc<dyn Pipeline>) -> Result<u64> {
        let heads = heads(&**pipeline)
            .await
            .map_err(|cause| Error::Pipeline { cause })?;
        let before = self.stats.tail_events;
        self.read_to(pipeline, &heads).await?;
        Ok(self.stats.tail_events - before)
    }

    /// Reads each partition `p` from its position up to `ends[p]`.
    async fn read_to(&mut self, pipeline: &Arc<dyn Pipeline>, ends: &[Offset]) -> Result<()> {
        let due: Arc<[bool]> = self.due.clone().into();
        let mut tasks = tokio::task::JoinSet::new();
        for (partition, (&start, &end)) in (0u32..).zip(self.positions.iter().zip(ends)) {
            let end = end.max(start);
            let tail = PartitionTail::new(partition, start, end, READ_CHUNK);
            let (pipeline, router, shards, due) = (
                pipeline.clone(),
                self.router.clone(),
                self.shards.clone(),
                due.clone(),
            );
            tasks.spawn(async move {
                let count =
                    apply_tail(&*pipeline, tail, &router, &shards, |shard, _| due[shard]).await?;
                Ok::<_, Error>((partition, end, count))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (partition, end, tail) =
                joined.map_err(|e| Error::Task(format!("restore task failed: {e}")))??;
            self.stats.tail_events += tail.read;
            self.stats.events += tail.routed;
            self.stats.applied += tail.applied;
            self.positions[partition as usize] = end;
        }
        Ok(())
    }

    /// The shards kept, in order.
    pub fn shards(&self) -> impl Iterator<Item = u32> + '_ {
        (0u32..).zip(&self.due).filter(|(_, d)| **d).map(|(s, _)| s)
    }

    /// Where each partition's next read starts.
    pub fn positions(&self) -> &[Offset] {
        &self.positions
    }

    /// Takes shard `shard`'s state out (it is no longer kept current);
    /// `None` when it is not kept.
    pub fn take(&mut self, shard: u32) -> Option<RecoveredShard> {
        let due = self.due.get_mut(shard as usize).filter(|d| **d)?;
        *due = false;
        let mut slot = self.shards[shard as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Some(std::mem::replace(&mut *slot, RecoveredShard::new(0)))
    }

    /// The kept shards' state.
    pub fn into_shards(self) -> BTreeMap<u32, RecoveredShard> {
        let due = self.due;
        into_shards(self.shards)
            .into_iter()
            .enumerate()
            .filter(|(shard, _)| due[*shard])
            .map(|(shard, recovered)| (shard as u32, recovered))
            .collect()
    }
}

/// Rebuilds shards `wanted` (and no other) from history: a
/// [`ShardReplay::recover`] whose state is then taken out, for a node
/// restoring the shards it was just granted.
pub async fn restore_shards(
    pipeline: Arc<dyn Pipeline>,
    router: Arc<Router>,
    wanted: &[u32],
    dedup_window: usize,
    lake: Option<&Lake>,
) -> Result<(BTreeMap<u32, RecoveredShard>, RestoreStats)> {
    let replay = ShardReplay::recover(pipeline, router, wanted, dedup_window, lake).await?;
    let stats = replay.stats;
    Ok((replay.into_shards(), stats))
}

/// The lake's committed offsets must be within the pipeline: `from[p] <=
/// head[p]` for every partition.
pub fn check_committed_within_heads(from: &[Offset], heads: &[Offset]) -> Result<()> {
    for (partition, (&committed, &head)) in (0u32..).zip(from.iter().zip(heads)) {
        if committed > head {
            return Err(Error::CommittedBeyondHead {
                partition,
                committed,
                head,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_offsets_beyond_the_pipeline_are_refused() {
        check_committed_within_heads(&[0, 5, 9], &[0, 5, 10]).unwrap();
        let err = check_committed_within_heads(&[0, 6], &[3, 5]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::CommittedBeyondHead {
                    partition: 1,
                    committed: 6,
                    head: 5
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("lost events the lake has"),
            "{err}"
        );
    }
}
