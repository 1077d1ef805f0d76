//! Shard state snapshots wired into [`Floe`]: loaded when a data directory
//! opens, written in rounds (periodically, on close, after an erase).
//!
//! A round reads the log's high watermarks `H[p]` first, then asks each
//! shard's worker to encode its state between two group commits. Every
//! event of that shard below `H[p]` was appended by a group commit that
//! had started before the round, and a worker applies a batch before it
//! runs the next request, so the state holds all of them: the snapshot may
//! claim `H` (never more than the log holds, since `H` is its durable end).
//! What would break that claim makes the round skip the shard instead:
//! - an append whose outcome is unknown (its events may be durable but
//!   not applied): `ShardStats::append_failures`;
//! - events appended around the shards through [`Floe::pipeline`]: the
//!   handle it returns flags them before they are written;
//! - a topology change during the capture: the round stops.
//!
//! Snapshots are used with the embedded log on one node only (see
//! `floe_config::SnapshotConfig`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use floe_config::SnapshotConfig;
use floe_emitter::SnapshotStore;
use floe_emitter::replay::fences_at;
use floe_engine::{Event, Offset, Pipeline, Record, ShardCluster, SnapshotHeader, now_us};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Floe, replay_error};
use crate::error::{Error, Result};
use floe_config::Config;
use floe_emitter::replay::{self, RecoveryStats};
use floe_emitter::sink::Lake;
use floe_engine::{RecoveredShard, Router};

/// What one snapshot round did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotReport {
    /// Shards whose snapshot was written.
    pub written: Vec<u32>,
    /// Shards skipped, with why.
    pub skipped: Vec<(u32, String)>,
    /// Bytes written.
    pub bytes: u64,
    /// How long the round took.
    pub elapsed_ms: u64,
}

/// The snapshots of one open data directory.
#[derive(Debug)]
pub(crate) struct Snapshots {
    store: SnapshotStore,
    config: SnapshotConfig,
    /// Whether this deployment writes and reads snapshots at all.
    active: bool,
    /// One round at a time (the periodic one, close's, erase's).
    round: tokio::sync::Mutex<()>,
    /// Set once anything appended to the pipeline around the shards.
    foreign: Arc<AtomicBool>,
    periodic: std::sync::Mutex<Option<(JoinHandle<()>, Arc<Notify>)>>,
}

impl Snapshots {
    /// `active` only for the embedded log outside cluster mode.
    pub(crate) fn new(data_dir: &std::path::Path, config: &SnapshotConfig, active: bool) -> Self {
        Snapshots {
            store: SnapshotStore::new(data_dir),
            config: config.clone(),
            active: active && config.enabled,
            round: tokio::sync::Mutex::new(()),
            foreign: Arc::new(AtomicBool::new(false)),
            periodic: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// A pipeline handle that flags its appends (they bypass the shards, so
    /// no later snapshot of this instance may claim to cover them).
    pub(crate) fn watch(&self, pipeline: Arc<dyn Pipeline>) -> Arc<dyn Pipeline> {
        Arc::new(WatchedPipeline {
            inner: pipeline,
            foreign: self.foreign.clone(),
        })
    }

    /// Starts the periodic rounds, if configured.
    pub(crate) fn start(self: &Arc<Self>, cluster: Arc<ShardCluster>, pipeline: Arc<dyn Pipeline>) {
        let Some(interval) = self.config.interval().filter(|_| self.active) else {
            return;
        };
        let stop = Arc::new(Notify::new());
        let (this, stopped) = (self.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopped.notified() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match this.round(&cluster, &*pipeline).await {
                    Ok(report) if !report.skipped.is_empty() => {
                        tracing::warn!(skipped = ?report.skipped, "shard snapshots skipped");
                    }
                    Ok(report) => tracing::debug!(
                        shards = report.written.len(),
                        bytes = report.bytes,
                        elapsed_ms = report.elapsed_ms,
                        "shard snapshots written"
                    ),
                    Err(e) => tracing::warn!(error = %e, "shard snapshot round failed"),
                }
            }
        });
        *self.periodic.lock().unwrap_or_else(|p| p.into_inner()) = Some((task, stop));
    }

    /// Stops the periodic rounds and waits for a round in progress to end
    /// (its files are complete or absent once this returns).
    pub(crate) async fn stop(&self) {
        let periodic = self
            .periodic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((task, stop)) = periodic {
            stop.notify_one();
            let _ = task.await;
        }
        // A round started by someone else (erase) ends before this returns.
        drop(self.round.lock().await);
    }

    /// One round: every shard of the topology in force, one after the other.
    pub(crate) async fn round(
        &self,
        cluster: &ShardCluster,
        pipeline: &dyn Pipeline,
    ) -> Result<SnapshotReport> {
        let _round = self.round.lock().await;
        self.round_locked(cluster, pipeline).await
    }

    /// Removes every snapshot, then writes a fresh round: what an old
    /// snapshot holds must not outlive an erase.
    pub(crate) async fn replace_all(
        &self,
        cluster: &ShardCluster,
        pipeline: &dyn Pipeline,
    ) -> Result<SnapshotReport> {
        let _round = self.round.lock().await;
        let store = self.store.clone();
        let removed = tokio::task::spawn_blocking(move || store.remove_all())
            .await
            .map_err(|e| Error::task("removing shard snapshots", e))?
            .map_err(Error::Snapshot)?;
        tracing::info!(removed, "shard snapshots removed");
        if !self.active {
            return Ok(SnapshotReport::default());
        }
        self.round_locked(cluster, pipeline).await
    }

    async fn round_locked(
        &self,
        cluster: &ShardCluster,
        pipeline: &dyn Pipeline,
    ) -> Result<SnapshotReport> {
        let started = Instant::now();
        let mut report = SnapshotReport::default();
        if !self.active {
            return Ok(report);
        }
        let router = cluster.router();
        let topology = router.topology().clone();
        let skip_all = |report: &mut SnapshotReport, from: u32, why: &str| {
            for shard in from..topology.shard_count {
                report.skipped.push((shard, why.to_string()));
            }
        };
        if self.foreign.load(Ordering::SeqCst) {
            skip_all(&mut report, 0, FOREIGN);
            return Ok(report);
        }
        let mut offsets: Vec<Offset> = Vec::with_capacity(pipeline.partitions() as usize);
        for p in 0..pipeline.partitions() {
            offsets.push(pipeline.high_watermark(p).await?);
        }
        let fences = fences_at(pipeline, &offsets)
            .await
            .map_err(Error::Snapshot)?;
        for shard in 0..topology.shard_count {
            let handle = cluster.shard(shard)?;
            let header = SnapshotHeader {
                shard,
                topology: topology.clone(),
                offsets: offsets.clone(),
                fences: fences.clone(),
                taken_at_us: now_us(),
            };
            let bytes = handle.snapshot((*router).clone(), header).await?;
            // Checked after the capture: each was true before it too.
            if *cluster.router().topology() != topology {
                skip_all(&mut report, shard, "the topology changed during the round");
                break;
            }
            if self.foreign.load(Ordering::SeqCst) {
                skip_all(&mut report, shard, FOREIGN);
                break;
            }
            if handle.stats().await?.append_failures > 0 {
                report.skipped.push((
                    shard,
                    "an append of this shard failed (its outcome is unknown until a restart replays the log)".into(),
                ));
                continue;
            }
            let (store, keep, len) = (self.store.clone(), self.config.keep, bytes.len());
            tokio::task::spawn_blocking(move || store.write(shard, &bytes, keep))
                .await
                .map_err(|e| Error::task("writing a shard snapshot", e))?
                .map_err(Error::Snapshot)?;
            report.written.push(shard);
            report.bytes += len as u64;
        }
        let (store, count) = (self.store.clone(), topology.shard_count);
        tokio::task::spawn_blocking(move || store.remove_shards_from(count))
            .await
            .map_err(|e| Error::task("removing old shards' snapshots", e))?
            .map_err(Error::Snapshot)?;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// Every shard's state when a data directory opens: from its newest valid
/// snapshot plus the log's tail, or the whole log (and the lake) where no
/// snapshot can be used. Each refused snapshot is logged with why.
pub(crate) async fn recover(
    snapshots: &Snapshots,
    pipeline: &Arc<dyn Pipeline>,
    router: &Arc<Router>,
    config: &Config,
    lake: Option<&Lake>,
) -> Result<(Vec<RecoveredShard>, RecoveryStats)> {
    let dedup_window = config.shards.dedup_window;
    if !snapshots.active {
        return replay::recover(pipeline.clone(), router.clone(), dedup_window, lake)
            .await
            .map_err(replay_error);
    }
    let loaded = replay::load_snapshots(
        &snapshots.store,
        &**pipeline,
        router.topology(),
        dedup_window,
    )
    .await
    .map_err(replay_error)?;
    for refused in &loaded.refused {
        tracing::warn!(reason = %refused, "shard snapshot refused: recovery uses an older snapshot or the shard's whole history");
    }
    let found = loaded.starts.iter().filter(|s| s.is_some()).count();
    let (shards, stats, used) = replay::recover_from_snapshots(
        pipeline.clone(),
        router.clone(),
        dedup_window,
        lake,
        loaded.starts,
    )
    .await
    .map_err(replay_error)?;
    if found > 0 && !used {
        tracing::warn!(
            found,
            shards = router.topology().shard_count,
            "shard snapshots not used: retention deleted log history and some shard has no snapshot, so every shard is rebuilt from the lake and the log"
        );
    }
    Ok((shards, stats))
}

const FOREIGN: &str = "events were appended to the pipeline around the shards (Floe::pipeline): snapshots resume after a reopen";

impl Floe {
    /// Writes a snapshot of every shard now (see docs/operations.md,
    /// "Shard snapshots"). With snapshots off (or Kafka, or cluster mode)
    /// nothing is written and the report is empty.
    pub async fn snapshot_now(&self) -> Result<SnapshotReport> {
        self.check_open()?;
        self.inner
            .snapshots
            .round(&self.inner.cluster, &*self.inner.pipeline)
            .await
    }
}

/// The pipeline as [`Floe::pipeline`] hands it out: appends are flagged
/// before they are made.
#[derive(Debug)]
struct WatchedPipeline {
    inner: Arc<dyn Pipeline>,
    foreign: Arc<AtomicBool>,
}

#[async_trait]
impl Pipeline for WatchedPipeline {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn append(&self, events: &[Event]) -> floe_engine::Result<Vec<Offset>> {
        self.foreign.store(true, Ordering::SeqCst);
        self.inner.append(events).await
    }

    async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> floe_engine::Result<Vec<Record>> {
        self.inner.read(partition, from, max, wait).await
    }

    async fn high_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        self.inner.high_watermark(partition).await
    }

    async fn low_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        self.inner.low_watermark(partition).await
    }

    async fn delete_before(&self, partition: u32, offset: Offset) -> floe_engine::Result<Offset> {
        self.inner.delete_before(partition, offset).await
    }

    async fn close(&self) -> floe_engine::Result<()> {
        self.inner.close().await
    }
}
