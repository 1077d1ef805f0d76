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

use floe_engine::{Event, Offset, Record, ShardHandle};
use floe_migration::{
    DigestSummary, Error as MigrationError, JobStatus, JobStore, LakeReplay, MigrationJob,
    MigrationPlan, Movement, Phase, Progress, ReplayStats, compare_digests, now_ms, replay_tail,
};
use tokio::sync::{mpsc, watch};

use super::active::ActiveMigration;
use super::{FailPoint, MigrationConfig, MigrationReport, shards};
use crate::datadir;
use crate::error::{Error, Result};
use crate::floe::{Floe, Routing};

/// A cancel request from this process ([`super::Migrations::cancel`]).
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

pub(crate) struct Coordinator {
    floe: Floe,
    plan: MigrationPlan,
    movement: Movement,
    config: MigrationConfig,
    fail_at: Option<FailPoint>,
    cancel: Arc<Cancel>,
    progress_tx: watch::Sender<Progress>,
    store: JobStore,
    job: MigrationJob,
    active: Arc<ActiveMigration>,
    started: Instant,
    deadline: Instant,
    last_save: Instant,
    installed: bool,
    topology_persisted: bool,
    cut_over: bool,
    crashed: bool,
    seen_keys: HashSet<String>,
    lake: ReplayStats,
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
        floe: Floe,
        id: String,
        plan: MigrationPlan,
        movement: Movement,
        config: MigrationConfig,
        fail_at: Option<FailPoint>,
        cancel: Arc<Cancel>,
        progress_tx: watch::Sender<Progress>,
        store: JobStore,
    ) -> Result<Coordinator> {
        let job = MigrationJob {
            id: id.clone(),
            kind: plan.kind.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            status: JobStatus::Running,
            phase: Phase::Planned,
            progress: Progress {
                phase: Some(Phase::Planned),
                events_total: plan.estimated_events,
                keys_total: plan.moves.len() as u64,
                ..Progress::default()
            },
            error: None,
            moving_keys: plan.moves.len() as u64,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            settled_after_restart: false,
        };
        store.save(&job)?;
        let started = Instant::now();
        Ok(Coordinator {
            active: Arc::new(ActiveMigration::new(
                id,
                movement.clone(),
                config.buffer_capacity,
            )),
            deadline: started + Duration::from_millis(config.timeout_ms),
            floe,
            plan,
            movement,
            config,
            fail_at,
            cancel,
            progress_tx,
            store,
            job,
            started,
            last_save: started,
            installed: false,
            topology_persisted: false,
            cut_over: false,
            crashed: false,
            seen_keys: HashSet::new(),
            lake: ReplayStats::default(),
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
        match self.forward().await {
            Ok(report) => {
                tracing::info!(%id, ?report, "migration done");
                Ok(report)
            }
            Err(e) if self.crashed => {
                // A simulated process death: leave the job and the topology
                // file as they are; only unblock this process's writers.
                self.uninstall();
                Err(e)
            }
            Err(e) if self.cut_over => {
                // After the cutover a migration finishes forward: the new
                // topology is in force and persisted; only the clean-up of
                // old owners failed (their copies are invisible to reads).
                tracing::error!(%id, error = %e, "migration clean-up failed after the cutover");
                self.job.status = JobStatus::Completed;
                self.job.error = Some(format!("clean-up after the cutover failed: {e}"));
                self.finish();
                Err(e)
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, phase = %self.job.phase, "migration failed; rolling back");
                if let Err(rollback) = self.rollback().await {
                    tracing::error!(%id, error = %rollback, "rollback failed");
                }
                self.job.status = JobStatus::RolledBack;
                self.job.error = Some(e.to_string());
                self.finish();
                Err(e)
            }
        }
    }

    async fn forward(&mut self) -> Result<MigrationReport> {
        let floe = self.floe.clone();
        self.enter(Phase::Copy)?;
        let added: Vec<ShardHandle> = self
            .plan
            .added_shards()
            .map(|s| floe.spawn_shard(s))
            .collect();
        let current = floe.routing();
        if let Some(other) = &current.migration {
            return Err(MigrationError::AlreadyMigrating {
                running: other.id.clone(),
                key: "*".into(),
            }
            .into());
        }
        if current.router.topology() != &self.plan.from {
            return Err(MigrationError::InvalidPlan(
                "the topology changed since the plan was made".into(),
            )
            .into());
        }
        let active = self.active.clone();
        let routing = floe.swap_routing(|r| Routing {
            router: r.router.clone(),
            shards: Arc::new(r.shards.iter().chain(&added).cloned().collect()),
            epoch: 0,
            migration: Some(active),
        });
        self.installed = true;
        // Every write routed before the install is refused as stale from now
        // on; this barrier waits for those a worker accepted before it.
        barrier(&routing).await?;

        // Copy: the lake snapshot.
        let copy_started = Instant::now();
        let pipeline = floe.pipeline();
        let partitions = pipeline.partitions();
        let mut lows = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            lows.push(pipeline.low_watermark(p).await?);
        }
        let mut from: Vec<Offset> = vec![0; partitions as usize];
        if let Some(lake) = floe.lake().cloned() {
            let committed = lake
                .committed_offsets(partitions)
                .await
                .map_err(Error::Lake)?;
            if committed.snapshot_id.is_some() {
                from = committed.offsets.clone();
            }
            check_lows(&lows, &from)?;
            // Every event below the committed offsets was appended before
            // they were read, so after this barrier it is applied to its
            // shard: the inventory then names every key with history in the
            // snapshot, and the scan can be limited to their hashes.
            barrier(&routing).await?;
            let movement = self.movement.clone();
            let mut hashes: Vec<u64> = shards::inventory(&routing)
                .await?
                .iter()
                .filter(|k| movement.moves(&k.partition_key, k.key_hash))
                .map(|k| k.key_hash)
                .collect();
            hashes.sort_unstable();
            hashes.dedup();
            let known = (hashes.len() <= floe_migration::MAX_PUSHED_KEYS).then_some(hashes);
            let (tx, rx) = mpsc::channel(4);
            let scan_started = Instant::now();
            let replay = LakeReplay {
                batch_size: self.config.batch_size,
                concurrency: self.config.lake_concurrency,
            };
            let reader = tokio::spawn(async move {
                replay
                    .run(&lake, &committed, &movement, known.as_deref(), &tx)
                    .await
            });
            let consumed = self.consume(rx, &routing, true).await;
            if consumed.is_err() {
                reader.abort();
            }
            consumed?;
            self.lake = reader
                .await
                .map_err(|e| Error::task("the lake replay task", e))??;
            self.scan_us = scan_started.elapsed().as_micros() as u64;
        } else {
            check_lows(&lows, &from)?;
        }
        self.copy_us = copy_started.elapsed().as_micros() as u64;

        // Catch-up: the pipeline after the snapshot, until it is short.
        self.enter(Phase::CatchUp)?;
        for _ in 0..self.config.catch_up_rounds.max(1) {
            let head = heads(&*pipeline).await?;
            let read = self.tail(&routing, &from, &head).await?;
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
        self.tail(&routing, &from, &head).await?;

        if self.config.verify {
            self.enter(Phase::Verify)?;
            self.verify(&routing).await?;
        }

        // Cutover: persist, then switch.
        self.enter(Phase::Cutover)?;
        datadir::store_topology(&floe.config().data_dir, &self.plan.to)?;
        self.topology_persisted = true;
        match self.fail_at {
            Some(FailPoint::MidCutover) => {
                return Err(MigrationError::Injected("cutover".into()).into());
            }
            Some(FailPoint::CrashMidCutover) => {
                self.crashed = true;
                return Err(MigrationError::Injected("crash in cutover".into()).into());
            }
            _ => {}
        }
        let to = Arc::new(self.movement.to().clone());
        floe.swap_routing(|r| Routing {
            router: to,
            shards: r.shards.clone(),
            epoch: 0,
            migration: None,
        });
        self.cut_over = true;
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
            .shards
            .iter()
            .take(self.plan.to.shard_count as usize)
        {
            entities_moved += shards::keep_owned(handle, self.movement.to().clone()).await?;
        }
        let removed: Vec<ShardHandle> = self
            .plan
            .removed_shards()
            .filter_map(|s| routing.shards.get(s as usize).cloned())
            .collect();
        for handle in &removed {
            entities_moved += shards::clear(handle).await?;
        }
        if !removed.is_empty() {
            let keep = self.plan.to.shard_count as usize;
            floe.swap_routing(|r| Routing {
                router: r.router.clone(),
                shards: Arc::new(r.shards[..keep].to_vec()),
                epoch: 0,
                migration: None,
            });
            for handle in removed {
                floe.retire(handle);
            }
            floe.resize_load(self.plan.to.shard_count);
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

    /// Applies replayed batches to their new owners until the channel closes.
    async fn consume(
        &mut self,
        mut rx: mpsc::Receiver<Vec<Record>>,
        routing: &Routing,
        copy: bool,
    ) -> Result<()> {
        let mut first = true;
        while let Some(records) = rx.recv().await {
            self.apply(routing, records).await?;
            if copy && first {
                first = false;
                match self.fail_at {
                    Some(FailPoint::MidCopy) => {
                        return Err(MigrationError::Injected("copy".into()).into());
                    }
                    Some(FailPoint::CrashMidCopy) => {
                        self.crashed = true;
                        return Err(MigrationError::Injected("crash in copy".into()).into());
                    }
                    _ => {}
                }
            }
            self.check_stop()?;
        }
        Ok(())
    }

    /// Replays the pipeline between two offset vectors; returns events read.
    async fn tail(&mut self, routing: &Routing, from: &[Offset], to: &[Offset]) -> Result<u64> {
        let (tx, rx) = mpsc::channel(4);
        let pipeline = self.floe.pipeline();
        let (from, to, movement) = (from.to_vec(), to.to_vec(), self.movement.clone());
        let chunk = self.config.batch_size;
        let reader =
            tokio::spawn(
                async move { replay_tail(&pipeline, &from, &to, &movement, chunk, &tx).await },
            );
        let consumed = self.consume(rx, routing, false).await;
        if consumed.is_err() {
            reader.abort();
        }
        consumed?;
        let (read, _) = reader
            .await
            .map_err(|e| Error::task("the pipeline replay task", e))??;
        self.tail_read += read;
        self.job.progress.tail_events += read;
        Ok(read)
    }

    async fn apply(&mut self, routing: &Routing, records: Vec<Record>) -> Result<()> {
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
            shards::ingest(routing.handle(target)?, events).await?;
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
    async fn verify(&mut self, routing: &Routing) -> Result<()> {
        let tasks = routing
            .shards
            .iter()
            .map(|h| shards::summaries(h, self.movement.clone()));
        let (mut source, mut target) = (DigestSummary::default(), DigestSummary::default());
        for summaries in futures::future::join_all(tasks).await {
            let (s, t) = summaries?;
            source.merge(s);
            target.merge(t);
        }
        self.verified = source.count.max(target.count);
        if source == target {
            return Ok(());
        }
        let tasks = routing
            .shards
            .iter()
            .map(|h| shards::digests(h, self.movement.clone()));
        let (mut source, mut target) = (Vec::new(), Vec::new());
        for digests in futures::future::join_all(tasks).await {
            let (s, t) = digests?;
            source.extend(s);
            target.extend(t);
        }
        let comparison = compare_digests(source, target);
        Err(MigrationError::VerifyMismatch {
            checked: comparison.checked,
            mismatched: comparison.mismatched.max(1),
            first: comparison.first.unwrap_or_else(|| {
                "the summaries differ but the lists agree (a hash collision)".into()
            }),
        }
        .into())
    }

    async fn rollback(&mut self) -> Result<()> {
        self.job.phase = Phase::RollingBack;
        self.job.progress.phase = Some(Phase::RollingBack);
        self.publish(true)?;
        let floe = self.floe.clone();
        if self.topology_persisted {
            datadir::store_topology(&floe.config().data_dir, &self.plan.from)?;
        }
        if !self.installed {
            return Ok(());
        }
        let old = self.plan.from.shard_count as usize;
        let routing = floe.routing();
        floe.swap_routing(|r| Routing {
            router: Arc::new(self.movement.from().clone()),
            shards: Arc::new(r.shards[..old.min(r.shards.len())].to_vec()),
            epoch: 0,
            migration: None,
        });
        // Held writes route again: to their old owners.
        self.active.buffer.release();
        for handle in routing.shards.iter().take(old) {
            shards::keep_owned(handle, self.movement.from().clone()).await?;
        }
        for handle in routing.shards.iter().skip(old) {
            shards::clear(handle).await?;
            floe.retire(handle.clone());
        }
        Ok(())
    }

    fn uninstall(&mut self) {
        if self.installed {
            let old = self.plan.from.shard_count as usize;
            let from = Arc::new(self.movement.from().clone());
            self.floe.swap_routing(|r| Routing {
                router: from,
                shards: Arc::new(r.shards[..old.min(r.shards.len())].to_vec()),
                epoch: 0,
                migration: None,
            });
            self.active.buffer.release();
        }
    }

    fn enter(&mut self, phase: Phase) -> Result<()> {
        if !self.job.phase.can_go_to(phase) {
            return Err(MigrationError::InvalidPlan(format!(
                "phase {} cannot follow {}",
                phase, self.job.phase
            ))
            .into());
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
        MigrationError::Timeout {
            id: self.job.id.clone(),
            phase: self.job.phase.to_string(),
            seconds: self.config.timeout_ms as f64 / 1000.0,
        }
        .into()
    }

    /// Cancel and timeout are checked between batches and phases.
    fn check_stop(&self) -> Result<()> {
        if self.cancel.is_cancelled() || self.store.cancel_requested(&self.job.id) {
            return Err(MigrationError::Cancelled {
                id: self.job.id.clone(),
                phase: self.job.phase.to_string(),
            }
            .into());
        }
        if Instant::now() >= self.deadline {
            return Err(self.timeout());
        }
        Ok(())
    }
}

fn check_lows(lows: &[Offset], from: &[Offset]) -> Result<()> {
    for (p, (&low, &start)) in lows.iter().zip(from).enumerate() {
        if low > start {
            return Err(MigrationError::InvalidPlan(format!(
                "partition {p} starts at offset {low}, after {start} where the replay must begin: the history between is only in a lake this floe does not read (lake.enabled)"
            ))
            .into());
        }
    }
    Ok(())
}

async fn heads(pipeline: &dyn floe_engine::Pipeline) -> Result<Vec<Offset>> {
    let mut heads = Vec::with_capacity(pipeline.partitions() as usize);
    for p in 0..pipeline.partitions() {
        heads.push(pipeline.high_watermark(p).await?);
    }
    Ok(heads)
}

async fn barrier(routing: &Routing) -> Result<()> {
    for done in
        futures::future::join_all(routing.shards.iter().map(|h| h.with_state(|_, _| ()))).await
    {
        done?;
    }
    Ok(())
}
