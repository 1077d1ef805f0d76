//! The coordinator: one task that takes a migration through its phases and
//! rolls it back on any failure before the cutover.
//!
//! copy (lake) -> catch-up (pipeline tail) -> buffer -> last catch-up ->
//! verify -> cutover (persist the topology, switch routing) -> drain (let
//! the held writes go to their new owners) -> clean-up (drop the moved
//! entities from their old owners).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use floe_engine::{
    Admission, DigestSummary, Event, NextRouting, Offset, Record, RoutingTable, Shard,
    ShardCluster, compare_digests,
};
use tokio::sync::{mpsc, watch};

use super::Deployment;
use super::active::ActiveMigration;
#[cfg(feature = "failpoints")]
use super::stage::Unblock;
use super::stage::{Settle, Stage};
#[cfg(feature = "failpoints")]
use crate::config::FailPoint;
use crate::config::{MigrationConfig, MigrationReport};
use crate::error::{Error, Result};
use crate::job::{JobStatus, JobStore, MigrationJob, Phase, Progress, now_ms};
use crate::plan::{MigrationPlan, Movement, PlanKind};
use crate::replay::{copy_from_lake, tail_moving};
use floe_emitter::replay::{
    LakeScan, LakeUse, MAX_PUSHED_KEYS, ReplaySource, ScanStats, heads, low_watermarks,
};

#[path = "archive.rs"]
mod archive;

/// A cancel request from this process ([`super::Migrator::cancel`]).
#[derive(Debug, Default)]
pub(crate) struct Cancel(AtomicBool);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// How often the job file is rewritten while a phase runs.
const SAVE_EVERY: Duration = Duration::from_millis(500);
/// How long the drain waits for held writes to leave the buffer.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// Copies from a newer lake snapshot after retention overtook the tail
/// (see [`Coordinator::tail_or_recopy`]) before the migration gives up.
const RECOPY_ATTEMPTS: u32 = 5;

pub(crate) struct Coordinator {
    deployment: Deployment,
    plan: MigrationPlan,
    movement: Movement,
    config: MigrationConfig,
    #[cfg(feature = "failpoints")]
    fail_at: Option<FailPoint>,
    cancel: Arc<Cancel>,
    progress_tx: watch::Sender<Progress>,
    store: JobStore,
    job: MigrationJob,
    active: Arc<ActiveMigration>,
    started: Instant,
    deadline: Instant,
    last_save: Instant,
    /// What has been changed so far: what a failure undoes.
    stage: Stage,
    /// A simulated process death (`failpoints`): nothing is undone.
    #[cfg(feature = "failpoints")]
    crashed: bool,
    seen_keys: HashSet<String>,
    lake: ScanStats,
    tail_read: u64,
    verified: u64,
    copy_us: u64,
    scan_us: u64,
    buffer_window_us: u64,
}

impl Coordinator {
    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor called from one place"
    )]
    pub(crate) fn new(
        deployment: Deployment,
        id: String,
        plan: MigrationPlan,
        movement: Movement,
        config: MigrationConfig,
        #[cfg(feature = "failpoints")] fail_at: Option<FailPoint>,
        cancel: Arc<Cancel>,
        progress_tx: watch::Sender<Progress>,
        store: JobStore,
    ) -> Result<Coordinator> {
        let job = MigrationJob::start(id.clone(), &plan, Phase::Planned);
        store.save(&job)?;
        let started = Instant::now();
        Ok(Coordinator {
            active: Arc::new(ActiveMigration::new(
                id,
                movement.clone(),
                config.buffer_capacity,
            )),
            deadline: started + Duration::from_millis(config.timeout_ms),
            deployment,
            plan,
            movement,
            config,
            #[cfg(feature = "failpoints")]
            fail_at,
            cancel,
            progress_tx,
            store,
            job,
            started,
            last_save: started,
            stage: Stage::Recorded,
            #[cfg(feature = "failpoints")]
            crashed: false,
            seen_keys: HashSet::new(),
            lake: ScanStats::default(),
            tail_read: 0,
            verified: 0,
            copy_us: 0,
            scan_us: 0,
            buffer_window_us: 0,
        })
    }

    pub(crate) async fn run(mut self) -> Result<MigrationReport> {
        let id = self.job.id.clone();
        tracing::info!(%id, kind = self.plan.kind.name(), keys = self.plan.moves.len(), "migration starts");
        let e = match self.forward().await {
            Ok(report) => {
                tracing::info!(%id, ?report, "migration done");
                return Ok(report);
            }
            Err(e) => e,
        };
        #[cfg(feature = "failpoints")]
        if self.crashed {
            // A simulated process death: leave the job and the topology as
            // they are for the restart; only unblock this process's writers.
            self.unblock(self.stage.on_crash());
            return Err(e);
        }
        match self.stage.on_failure() {
            Settle::FinishForward => {
                // The new topology is in force and persisted; only the
                // clean-up of old owners failed (their copies are invisible
                // to reads).
                tracing::error!(%id, error = %e, "migration clean-up failed after the cutover");
                self.job.status = JobStatus::Completed;
                self.job.error = Some(format!("clean-up after the cutover failed: {e}"));
            }
            settle => {
                tracing::warn!(%id, error = %e, phase = %self.job.phase, "migration failed; rolling back");
                if let Err(rollback) = self.rollback(settle).await {
                    tracing::error!(%id, error = %rollback, "rollback failed");
                }
                self.job.status = JobStatus::RolledBack;
                self.job.error = Some(e.to_string());
            }
        }
        self.finish();
        Err(e)
    }

    async fn forward(&mut self) -> Result<MigrationReport> {
        match &self.plan.kind {
            PlanKind::ArchivePeriod { period } => {
                let period = period.clone();
                return self.archive(&period).await;
            }
            PlanKind::ReactivatePeriod { period } => {
                let period = period.clone();
                return self.reactivate(&period).await;
            }
            PlanKind::DropPeriod { period } => {
                let period = period.clone();
                return self.drop_period(&period).await;
            }
            _ => {}
        }
        let deployment = self.deployment.clone();
        self.enter(Phase::Copy)?;
        let cluster = deployment.cluster.clone();
        let added: Vec<Shard> = self
            .plan
            .added_shards()
            .map(|s| cluster.spawn_shard(s))
            .collect();
        self.check_unchanged()?;
        let active: Arc<dyn Admission> = self.active.clone();
        let routing = cluster.swap_routing(|r| NextRouting {
            router: r.router().clone(),
            shards: Arc::new(r.shards().iter().chain(&added).cloned().collect()),
            admission: Some(active),
        });
        self.stage.advance(Stage::Installed);
        // Every write routed before the install is refused as stale from now
        // on; this barrier waits for those a worker accepted before it.
        ShardCluster::barrier(&routing).await?;

        // Copy: the lake snapshot.
        let copy_started = Instant::now();
        let pipeline = cluster.pipeline().clone();
        let mut from = self.copy(&routing).await?;
        self.copy_us = copy_started.elapsed().as_micros() as u64;

        // Catch-up: the pipeline after the snapshot, until it is short.
        self.enter(Phase::CatchUp)?;
        for _ in 0..self.config.catch_up_rounds.max(1) {
            let head = heads(&*pipeline).await?;
            let read = self.tail_or_recopy(&routing, &mut from, &head).await?;
            from = head;
            if read < self.config.batch_size as u64 {
                break;
            }
        }

        // Buffer: hold new writes to moving keys; read the rest of the tail.
        self.enter(Phase::Buffer)?;
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(remaining, self.active.start_buffering())
            .await
            .map_err(|_| self.timeout())?;
        let buffer_started = Instant::now();
        let head = heads(&*pipeline).await?;
        self.tail_or_recopy(&routing, &mut from, &head).await?;

        if self.config.verify {
            self.enter(Phase::Verify)?;
            self.verify(&routing).await?;
        }

        // Cutover: persist, then switch.
        self.enter(Phase::Cutover)?;
        deployment.topology.store(&self.plan.to).await?;
        self.stage.advance(Stage::Persisted);
        #[cfg(feature = "failpoints")]
        match self.fail_at {
            Some(FailPoint::MidCutover) => {
                return Err(Error::Injected("cutover".into()));
            }
            Some(FailPoint::CrashMidCutover) => {
                self.crashed = true;
                return Err(Error::Injected("crash in cutover".into()));
            }
            _ => {}
        }
        let to = Arc::new(self.movement.to().clone());
        cluster.swap_routing(|r| NextRouting {
            router: to,
            shards: r.shards().clone(),
            admission: None,
        });
        self.stage.advance(Stage::CutOver);
        self.buffer_window_us = buffer_started.elapsed().as_micros() as u64;

        // Drain: held writes route again, now to their new owners (released
        // before anything else is recorded: they have waited long enough).
        self.active.buffer.release();
        self.enter(Phase::Drain)?;
        let drain_started = Instant::now();
        while self.active.buffer.stats().holding > 0 && drain_started.elapsed() < DRAIN_WAIT {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        // Clean-up: old owners drop what moved; removed shards leave.
        self.enter(Phase::Cleanup)?;
        let mut entities_moved = 0;
        for handle in routing
            .shards()
            .iter()
            .take(self.plan.to.shard_count as usize)
        {
            entities_moved += handle.retain_owned(self.movement.to().clone()).await?;
        }
        let removed: Vec<Shard> = self
            .plan
            .removed_shards()
            .filter_map(|s| routing.shards().get(s as usize).cloned())
            .collect();
        for handle in &removed {
            entities_moved += handle.clear().await?;
        }
        if !removed.is_empty() {
            let keep = self.plan.to.shard_count as usize;
            cluster.swap_routing(|r| NextRouting {
                router: r.router().clone(),
                shards: Arc::new(r.shards()[..keep].to_vec()),
                admission: None,
            });
            for handle in removed {
                cluster.retire(handle);
            }
            cluster.resize_load(self.plan.to.shard_count);
        }
        self.enter(Phase::Done)?;
        self.job.status = JobStatus::Completed;
        self.finish();
        let buffer = self.active.buffer.stats();
        Ok(MigrationReport {
            id: self.job.id.clone(),
            kind: self.plan.kind.clone(),
            from_version: self.plan.from.version,
            to_version: self.plan.to.version,
            keys_moved: self.plan.moves.len() as u64,
            entities_moved,
            events_replayed: self.job.progress.events_processed,
            lake_events: self.lake.events,
            bytes_read: self.lake.bytes_read,
            rows_scanned: self.lake.rows_scanned,
            files_read: self.lake.files,
            tail_events_read: self.tail_read,
            buffered_writes: buffer.buffered,
            max_write_pause_us: buffer.max_pause_us,
            buffer_window_us: self.buffer_window_us,
            verified_entities: self.verified,
            copy_us: self.copy_us,
            scan_us: self.scan_us,
            duration_us: self.started.elapsed().as_micros() as u64,
        })
    }

    /// No other migration's hook is in the routing table and the topology
    /// is still the one the plan was made for.
    fn check_unchanged(&self) -> Result<()> {
        let current = self.deployment.cluster.routing();
        if let Some(other) = current.admission() {
            return Err(Error::AlreadyMigrating {
                running: other.owner().to_string(),
                key: "*".into(),
            });
        }
        if current.router().topology() != &self.plan.from {
            return Err(Error::InvalidPlan(
                "the topology changed since the plan was made".into(),
            ));
        }
        Ok(())
    }

    /// Applies replayed batches to their new owners until the channel closes.
    async fn consume(
        &mut self,
        mut rx: mpsc::Receiver<Vec<Record>>,
        routing: &RoutingTable,
        copy: bool,
    ) -> Result<()> {
        let mut first = true;
        while let Some(records) = rx.recv().await {
            self.apply(routing, records).await?;
            #[cfg(feature = "failpoints")]
            if copy && first {
                first = false;
                match self.fail_at {
                    Some(FailPoint::MidCopy) => {
                        return Err(Error::Injected("copy".into()));
                    }
                    Some(FailPoint::CrashMidCopy) => {
                        self.crashed = true;
                        return Err(Error::Injected("crash in copy".into()));
                    }
                    _ => {}
                }
            }
            #[cfg(not(feature = "failpoints"))]
            let _ = (copy, &mut first);
            self.check_stop()?;
        }
        Ok(())
    }

    /// The copy phase: the moving keys' history in the lake's current
    /// snapshot, applied to their new owners. Returns where the pipeline
    /// tail starts (the snapshot's committed offsets, or 0 without one).
    async fn copy(&mut self, routing: &RoutingTable) -> Result<Vec<Offset>> {
        let deployment = self.deployment.clone();
        let pipeline = deployment.cluster.pipeline().clone();
        // Where history comes from: the lake's snapshot below its committed
        // offsets, the pipeline after them (checked to fit together).
        let source =
            ReplaySource::resolve(&*pipeline, deployment.lake.as_ref(), LakeUse::Always).await?;
        let from: Vec<Offset> = source.from.clone();
        if let (Some(lake), Some(committed)) = (deployment.lake.clone(), source.snapshot) {
            // Every event below the committed offsets was appended before
            // they were read, so after this barrier it is applied to its
            // shard: the inventory then names every key with history in the
            // snapshot, and the scan can be limited to their hashes.
            ShardCluster::barrier(routing).await?;
            let movement = self.movement.clone();
            let mut hashes: Vec<u64> = super::inventory(routing)
                .await?
                .iter()
                .filter(|k| movement.moves(&k.partition_key, k.key_hash))
                .map(|k| k.key_hash)
                .collect();
            hashes.sort_unstable();
            hashes.dedup();
            let known = (hashes.len() <= MAX_PUSHED_KEYS).then_some(hashes);
            let (tx, rx) = mpsc::channel(4);
            let scan_started = Instant::now();
            let scan = LakeScan {
                batch_size: self.config.batch_size,
                concurrency: self.config.lake_concurrency,
            };
            let reader = tokio::spawn(async move {
                copy_from_lake(scan, &lake, &committed, &movement, known.as_deref(), &tx).await
            });
            let consumed = self.consume(rx, routing, true).await;
            if consumed.is_err() {
                reader.abort();
            }
            consumed?;
            let stats = reader.await.map_err(|e| Error::TaskFailed {
                task: "lake replay",
                message: e.to_string(),
            })??;
            self.lake.files += stats.files;
            self.lake.bytes_read += stats.bytes_read;
            self.lake.rows_scanned += stats.rows_scanned;
            self.lake.events += stats.events;
            self.scan_us += scan_started.elapsed().as_micros() as u64;
        }
        Ok(from)
    }

    /// [`Coordinator::tail`] from `from`, which retention may have overtaken
    /// since the copy read the lake: the sink landed more and the pipeline
    /// deleted events below its newer committed offsets, so the tail from
    /// the older ones is gone. Those events are in the newer snapshot, so the
    /// copy runs again on it (applying an event twice is a no-op: the
    /// highest version wins) and the tail goes on from its offsets, which
    /// `from` then holds. Retention overtaking every attempt fails the
    /// migration (it rolls back).
    async fn tail_or_recopy(
        &mut self,
        routing: &RoutingTable,
        from: &mut Vec<Offset>,
        to: &[Offset],
    ) -> Result<u64> {
        let pipeline = self.deployment.cluster.pipeline().clone();
        let mut attempt = 0;
        loop {
            let error = match self.tail(routing, from, to).await {
                Ok(read) => return Ok(read),
                Err(e) => e,
            };
            let lows = low_watermarks(&*pipeline).await?;
            let overtaken = from.iter().zip(&lows).any(|(from, low)| from < low);
            attempt += 1;
            if !overtaken || attempt >= RECOPY_ATTEMPTS {
                return Err(error);
            }
            tracing::info!(
                migration = %self.job.id,
                attempt,
                "retention deleted the pipeline tail the copy ended at; copying from the newer lake snapshot"
            );
            *from = self.copy(routing).await?;
        }
    }

    /// Replays the pipeline between two offset vectors; returns events read.
    async fn tail(
        &mut self,
        routing: &RoutingTable,
        from: &[Offset],
        to: &[Offset],
    ) -> Result<u64> {
        let (tx, rx) = mpsc::channel(4);
        let pipeline = self.deployment.cluster.pipeline().clone();
        let (from, to, movement) = (from.to_vec(), to.to_vec(), self.movement.clone());
        let chunk = self.config.batch_size;
        let reader =
            tokio::spawn(
                async move { tail_moving(pipeline, &from, &to, &movement, chunk, &tx).await },
            );
        let consumed = self.consume(rx, routing, false).await;
        if consumed.is_err() {
            reader.abort();
        }
        consumed?;
        let (read, _) = reader.await.map_err(|e| Error::TaskFailed {
            task: "pipeline replay",
            message: e.to_string(),
        })??;
        self.tail_read += read;
        self.job.progress.tail_events += read;
        Ok(read)
    }

    async fn apply(&mut self, routing: &RoutingTable, records: Vec<Record>) -> Result<()> {
        let mut by_target: HashMap<u32, Vec<Event>> = HashMap::new();
        for record in records {
            let event = record.event;
            let target = self
                .movement
                .to()
                .route(&event.partition_key, event.key_hash);
            if !self.seen_keys.contains(&event.partition_key) {
                self.seen_keys.insert(event.partition_key.clone());
            }
            by_target.entry(target).or_default().push(event);
        }
        let mut count = 0;
        for (target, events) in by_target {
            count += events.len() as u64;
            routing.shard(target)?.ingest(events).await?;
        }
        self.job.progress.events_processed += count;
        self.job.progress.events_total = self
            .job
            .progress
            .events_total
            .max(self.job.progress.events_processed);
        self.job.progress.keys_processed = (self.seen_keys.len() as u64).min(
            self.job
                .progress
                .keys_total
                .max(self.seen_keys.len() as u64),
        );
        self.publish(false)
    }

    /// Source and target must hold the same moved entities. Summaries are
    /// compared first (the buffer is closed meanwhile, so this is on the
    /// cutover's critical path); the full lists only explain a mismatch.
    async fn verify(&mut self, routing: &RoutingTable) -> Result<()> {
        let (from, to) = (self.movement.from(), self.movement.to());
        let tasks = routing
            .shards()
            .iter()
            .map(|h| h.moving_summaries(from.clone(), to.clone()));
        let (mut source, mut target) = (DigestSummary::default(), DigestSummary::default());
        for summaries in futures::future::join_all(tasks).await {
            let summaries = summaries?;
            source.merge(summaries.source);
            target.merge(summaries.target);
        }
        self.verified = source.count.max(target.count);
        if source == target {
            return Ok(());
        }
        let tasks = routing
            .shards()
            .iter()
            .map(|h| h.moving_digests(from.clone(), to.clone()));
        let (mut source, mut target) = (Vec::new(), Vec::new());
        for digests in futures::future::join_all(tasks).await {
            let digests = digests?;
            source.extend(digests.source);
            target.extend(digests.target);
        }
        let comparison = compare_digests(source, target);
        Err(Error::VerifyMismatch {
            checked: comparison.checked,
            mismatched: comparison.mismatched.max(1),
            first: comparison.first.unwrap_or_else(|| {
                "the summaries differ but the lists agree (a hash collision)".into()
            }),
        })
    }

    /// Undoes what the stage reached says was done (before the cutover).
    async fn rollback(&mut self, settle: Settle) -> Result<()> {
        self.job.phase = Phase::RollingBack;
        self.job.progress.phase = Some(Phase::RollingBack);
        self.publish(true)?;
        let cluster = self.deployment.cluster.clone();
        match settle {
            Settle::Nothing | Settle::FinishForward => return Ok(()),
            Settle::RestoreAndUninstall => {
                self.deployment.topology.store(&self.plan.from).await?;
            }
            Settle::Uninstall => {}
        }
        let old = self.plan.from.shard_count as usize;
        let routing = cluster.routing();
        cluster.swap_routing(|r| NextRouting {
            router: Arc::new(self.movement.from().clone()),
            shards: Arc::new(r.shards()[..old.min(r.shards().len())].to_vec()),
            admission: None,
        });
        // Held writes route again: to their old owners.
        self.active.buffer.release();
        for handle in routing.shards().iter().take(old) {
            handle.retain_owned(self.movement.from().clone()).await?;
        }
        for handle in routing.shards().iter().skip(old) {
            handle.clear().await?;
            cluster.retire(handle.clone());
        }
        Ok(())
    }

    /// After a simulated crash: unblocks this process's writers only.
    #[cfg(feature = "failpoints")]
    fn unblock(&mut self, unblock: Unblock) {
        match unblock {
            Unblock::Nothing => {}
            Unblock::RemoveHook => {
                let old = self.plan.from.shard_count as usize;
                let from = Arc::new(self.movement.from().clone());
                self.deployment.cluster.swap_routing(|r| NextRouting {
                    router: from,
                    shards: Arc::new(r.shards()[..old.min(r.shards().len())].to_vec()),
                    admission: None,
                });
                self.active.buffer.release();
            }
            Unblock::ReleaseBuffer => self.active.buffer.release(),
        }
    }

    fn enter(&mut self, phase: Phase) -> Result<()> {
        if !self.job.phase.can_go_to(phase) {
            return Err(Error::InvalidPlan(format!(
                "phase {} cannot follow {}",
                phase, self.job.phase
            )));
        }
        #[cfg(feature = "failpoints")]
        match self.fail_at {
            Some(FailPoint::CrashBefore(at)) if at == phase => {
                self.crashed = true;
                return Err(Error::Injected(format!("crash before {phase}")));
            }
            Some(FailPoint::FailBefore(at)) if at == phase => {
                return Err(Error::Injected(format!("failure before {phase}")));
            }
            _ => {}
        }
        if !phase.past_cutover() && phase != Phase::Done {
            self.check_stop()?;
        }
        tracing::info!(id = %self.job.id, %phase, elapsed_ms = self.started.elapsed().as_millis() as u64, "migration phase");
        self.job.phase = phase;
        self.job.progress.phase = Some(phase);
        // Between the buffer and the drain, writes to moving keys wait: the
        // job file (informational; the topology file is what a restart
        // settles by) is written before and after that window, not in it.
        if matches!(phase, Phase::Verify | Phase::Cutover | Phase::Drain) {
            self.last_save = Instant::now();
            return self.publish(false);
        }
        self.publish(true)
    }

    fn publish(&mut self, save: bool) -> Result<()> {
        let buffer = self.active.buffer.stats();
        let progress = &mut self.job.progress;
        progress.elapsed_ms = self.started.elapsed().as_millis() as u64;
        progress.bytes_read = self.lake.bytes_read;
        progress.rows_scanned = self.lake.rows_scanned;
        progress.buffered_writes = buffer.buffered;
        progress.max_write_pause_us = buffer.max_pause_us;
        self.progress_tx.send_replace(progress.clone());
        if save || self.last_save.elapsed() >= SAVE_EVERY {
            self.last_save = Instant::now();
            self.store.save(&self.job)?;
        }
        Ok(())
    }

    fn finish(&mut self) {
        self.job.finished_at_ms = Some(now_ms());
        if let Err(e) = self.publish(true) {
            tracing::error!(id = %self.job.id, error = %e, "cannot record the migration's end");
        }
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            id: self.job.id.clone(),
            phase: self.job.phase.to_string(),
            seconds: self.config.timeout_ms as f64 / 1000.0,
        }
    }

    /// Cancel and timeout are checked between batches and phases.
    fn check_stop(&self) -> Result<()> {
        if self.cancel.is_cancelled() || self.store.cancel_requested(&self.job.id) {
            return Err(Error::Cancelled {
                id: self.job.id.clone(),
                phase: self.job.phase.to_string(),
            });
        }
        if Instant::now() >= self.deadline {
            return Err(self.timeout());
        }
        Ok(())
    }
}
