//! Recovery: every shard's state rebuilt from history when a deployment
//! opens, under the topology in force.

use std::sync::{Arc, Mutex};

use floe_engine::{Event, Offset, Pipeline, RecoveredShard, Router};
use tokio::sync::mpsc;

use super::{LakeScan, LakeUse, PartitionTail, ReplaySource, ShardStart};
use crate::error::{Error, Result};
use crate::sink::Lake;

/// Events read per pipeline call during recovery.
pub(super) const READ_CHUNK: usize = 8192;

/// Figures about a recovery, for logs and the reopen benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryStats {
    /// Events read from the pipeline.
    pub events: u64,
    /// Events that changed state (the rest were older versions).
    pub applied: u64,
    /// Of `events`, those read from the Iceberg lake rather than the pipeline.
    pub from_lake: u64,
    /// Shards that started from a snapshot (their tail alone was replayed).
    pub snapshot_shards: u32,
    /// Records (entities and tombstones) loaded from those snapshots.
    pub from_snapshots: u64,
}

/// Replays every event into the shards `router` names (shard `i` of the
/// result is shard `i`).
///
/// While every partition still starts at offset 0 (no retention), the
/// pipeline alone is replayed. Otherwise the lake's snapshot comes first
/// (see [`ReplaySource::resolve`] for the checks), then the pipeline from
/// its committed offsets to the head. Partitions are read concurrently;
/// each chunk is grouped by shard so a shard's lock is taken once per chunk.
/// Replay order does not matter: `apply` keeps the highest version per
/// entity.
pub async fn recover(
    pipeline: Arc<dyn Pipeline>,
    router: Arc<Router>,
    dedup_window: usize,
    lake: Option<&Lake>,
) -> Result<(Vec<RecoveredShard>, RecoveryStats)> {
    let shard_count = router.topology().shard_count as usize;
    let shards: Arc<Vec<Mutex<RecoveredShard>>> = Arc::new(
        (0..shard_count)
            .map(|_| Mutex::new(RecoveredShard::new(dedup_window)))
            .collect(),
    );
    let mut stats = RecoveryStats::default();
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
            let mut by_shard: Vec<Vec<Event>> = vec![Vec::new(); shard_count];
            let mut applied = 0;
            while let Some(records) = rx.recv().await {
                group(records, &router, &mut by_shard);
                applied += apply_grouped(&mut by_shard, &shards);
            }
            applied
        };
        let (scanned, applied) = tokio::join!(scan, apply);
        let rows = scanned?.events;
        stats.events += rows;
        stats.from_lake += rows;
        stats.applied += applied;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..pipeline.partitions() {
        let (pipeline, router, shards) = (pipeline.clone(), router.clone(), shards.clone());
        let start = source.from[partition as usize];
        tasks.spawn(async move {
            let tail = tail_to_head(&*pipeline, partition, start).await?;
            apply_tail(&*pipeline, tail, &router, &shards, |_, _| true).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let tail = joined.map_err(|e| Error::Task(format!("recovery task failed: {e}")))??;
        stats.events += tail.routed;
        stats.applied += tail.applied;
    }
    Ok((into_shards(shards), stats))
}

pub(super) fn group(
    records: Vec<floe_engine::Record>,
    router: &Router,
    by_shard: &mut [Vec<Event>],
) {
    for record in records {
        let event = record.event;
        // Archived periods live in the lake only (ShardCluster::start drops
        // any that a snapshot brings back).
        if router.is_archived(&event.partition_key) {
            continue;
        }
        let shard = router.route(&event.partition_key, event.key_hash) as usize;
        by_shard[shard].push(event);
    }
}

pub(super) fn apply_grouped(by_shard: &mut [Vec<Event>], shards: &[Mutex<RecoveredShard>]) -> u64 {
    let mut applied = 0;
    for (shard, events) in by_shard.iter_mut().enumerate() {
        if events.is_empty() {
            continue;
        }
        let mut recovered = shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        for event in events.drain(..) {
            if recovered.apply(event) {
                applied += 1;
            }
        }
    }
    applied
}

/// What one partition's replay read and applied.
#[derive(Debug, Default)]
pub(super) struct TailCount {
    /// Events read from the partition.
    pub(super) read: u64,
    /// Of those, the events handed to their shard.
    pub(super) routed: u64,
    /// Of those, the events that changed state.
    pub(super) applied: u64,
}

/// Partition `partition` from `start` to its high watermark, read now.
pub(super) async fn tail_to_head(
    pipeline: &dyn Pipeline,
    partition: u32,
    start: Offset,
) -> Result<PartitionTail> {
    let end = pipeline
        .high_watermark(partition)
        .await
        .map_err(|cause| Error::Pipeline { cause })?;
    Ok(PartitionTail::new(partition, start, end, READ_CHUNK))
}

/// Reads `tail` to its end and applies each event to the shard `router`
/// gives it if `wanted(shard, offset)`: the one pipeline replay of
/// recovery, recovery from snapshots and the per-shard restore. Each chunk
/// is grouped by shard so a shard's lock is taken once per chunk.
pub(super) async fn apply_tail(
    pipeline: &dyn Pipeline,
    mut tail: PartitionTail,
    router: &Router,
    shards: &[Mutex<RecoveredShard>],
    wanted: impl Fn(usize, Offset) -> bool,
) -> Result<TailCount> {
    let mut count = TailCount::default();
    let mut by_shard: Vec<Vec<Event>> = vec![Vec::new(); shards.len()];
    while let Some(records) = tail
        .next(pipeline)
        .await
        .map_err(|cause| Error::Pipeline { cause })?
    {
        count.read += records.len() as u64;
        for record in records {
            let event = record.event;
            if router.is_archived(&event.partition_key) {
                continue;
            }
            let shard = router.route(&event.partition_key, event.key_hash) as usize;
            if wanted(shard, record.offset) {
                count.routed += 1;
                by_shard[shard].push(event);
            }
        }
        count.applied += apply_grouped(&mut by_shard, shards);
    }
    Ok(count)
}

/// The shards a replay filled, once every task using them has finished.
pub(super) fn into_shards(shards: Arc<Vec<Mutex<RecoveredShard>>>) -> Vec<RecoveredShard> {
    Arc::into_inner(shards)
        .expect("every replay task has finished")
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

/// [`recover`] starting from shard snapshots where `starts` has one (see
/// [`super::load_snapshots`]): those shards take the snapshot's state and
/// replay only their events at or above its offsets; the others replay in
/// full. When the pipeline alone no longer holds all history (retention)
/// and some shard has no snapshot, the snapshots are not used and this is
/// [`recover`] (the lake path rebuilds every shard); the second value says
/// whether the snapshots were used.
pub async fn recover_from_snapshots(
    pipeline: Arc<dyn Pipeline>,
    router: Arc<Router>,
    dedup_window: usize,
    lake: Option<&Lake>,
    starts: Vec<Option<ShardStart>>,
) -> Result<(Vec<RecoveredShard>, RecoveryStats, bool)> {
    let shard_count = router.topology().shard_count as usize;
    let partitions = pipeline.partitions() as usize;
    let usable = starts.len() == shard_count && starts.iter().any(Option::is_some);
    let complete = starts.iter().all(Option::is_some);
    if !usable
        || (!complete
            && ReplaySource::resolve(&*pipeline, lake, LakeUse::WhenTrimmed)
                .await?
                .snapshot
                .is_some())
    {
        let (shards, stats) = recover(pipeline, router, dedup_window, lake).await?;
        return Ok((shards, stats, false));
    }
    if !complete {
        // Shards without a snapshot replay from 0: the pipeline holds all
        // history (no lake snapshot was needed above).
        super::check_history_complete(
            &super::low_watermarks(&*pipeline)
                .await
                .map_err(|cause| Error::Pipeline { cause })?,
        )?;
    }
    let mut stats = RecoveryStats::default();
    let mut floors: Vec<Vec<u64>> = Vec::with_capacity(shard_count);
    let mut recovered = Vec::with_capacity(shard_count);
    for start in starts {
        match start {
            Some(start) => {
                stats.snapshot_shards += 1;
                stats.from_snapshots += start.shard.state().iter().count() as u64;
                floors.push(start.from);
                recovered.push(Mutex::new(start.shard));
            }
            None => {
                floors.push(vec![0; partitions]);
                recovered.push(Mutex::new(RecoveredShard::new(dedup_window)));
            }
        }
    }
    let (shards, floors) = (Arc::new(recovered), Arc::new(floors));
    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..pipeline.partitions() {
        let (pipeline, router) = (pipeline.clone(), router.clone());
        let (shards, floors) = (shards.clone(), floors.clone());
        // From the lowest floor of any shard; an event goes to its shard only
        // at or above that shard's floor (below it, the snapshot holds it).
        let p = partition as usize;
        let start = floors.iter().map(|f| f[p]).min().unwrap_or(0);
        tasks.spawn(async move {
            let tail = tail_to_head(&*pipeline, partition, start).await?;
            apply_tail(&*pipeline, tail, &router, &shards, |shard, offset| {
                offset >= floors[shard][p]
            })
            .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let tail = joined.map_err(|e| Error::Task(format!("recovery task failed: {e}")))??;
        stats.events += tail.routed;
        stats.applied += tail.applied;
    }
    Ok((into_shards(shards), stats, true))
}
