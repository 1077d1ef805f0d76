//! Live shard migrations inside [`Floe`]: the library API
//! ([`Floe::migrations`]), the registry of running and past jobs, and the
//! coordinator (`run.rs`). `docs/migration.md` describes the protocol.

mod active;
mod run;
mod shards;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use floe_engine::Topology;
use floe_migration::{
    BalanceAnalysis, Error as MigrationError, JobStore, KeyLoad, MigrationJob, MigrationPlan,
    PlanKind, Progress, Validation, analyze_balance, shard_loads,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub(crate) use active::{ActiveMigration, Admit};

use crate::error::{Error, Result};
use crate::floe::Floe;

/// Where a data directory keeps its migration jobs.
pub const JOBS_DIR: &str = "migrations";

/// How migrations run (`[migration]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// A migration that has not cut over after this long rolls back.
    pub timeout_ms: u64,
    /// Events applied to a target shard per step (a shard's other requests
    /// wait at most one step).
    pub batch_size: usize,
    /// Writes to moving keys the buffer holds before callers wait for a slot.
    pub buffer_capacity: usize,
    /// Data files the lake replay reads at once.
    pub lake_concurrency: usize,
    /// Pipeline catch-up rounds before buffering begins; buffering begins
    /// earlier once a round reads fewer than `batch_size` events.
    pub catch_up_rounds: u32,
    /// Compare source and target digests of the moved entities before the
    /// cutover.
    pub verify: bool,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            timeout_ms: 300_000,
            batch_size: 8192,
            buffer_capacity: 65_536,
            lake_concurrency: 4,
            catch_up_rounds: 8,
            verify: true,
        }
    }
}

impl MigrationConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("migration.timeout_ms", self.timeout_ms as usize),
            ("migration.batch_size", self.batch_size),
            ("migration.buffer_capacity", self.buffer_capacity),
            ("migration.lake_concurrency", self.lake_concurrency),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// Where a test makes a migration fail (as a crash or an error would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// An error after the first batch copied from the lake: rolls back.
    MidCopy,
    /// An error after the new topology is persisted and before routing
    /// switches: rolls back (the old topology is persisted again).
    MidCutover,
    /// Stops dead after the first copied batch, as if the process died:
    /// no rollback, the job stays `running` on disk.
    CrashMidCopy,
    /// Stops dead after the new topology is persisted, before routing
    /// switches, as if the process died there.
    CrashMidCutover,
}

/// Options of one migration: the configured ones plus test hooks.
#[derive(Debug, Clone, Default)]
pub struct MigrationOptions {
    /// Overrides of `[migration]` for this run.
    pub config: Option<MigrationConfig>,
    /// A failure to inject.
    pub fail_at: Option<FailPoint>,
}

/// What a finished migration did (seed 004's migration result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The migration.
    pub id: String,
    /// What it did.
    pub kind: PlanKind,
    /// Topology version before and after.
    pub from_version: u64,
    /// The version now in force.
    pub to_version: u64,
    /// Known partition keys that changed owner.
    pub keys_moved: u64,
    /// Entities (live and tombstones) moved.
    pub entities_moved: u64,
    /// Events applied to the new owners (lake and pipeline tail).
    pub events_replayed: u64,
    /// Of those, events read from the lake.
    pub lake_events: u64,
    /// Bytes read from the lake.
    pub bytes_read: u64,
    /// Rows the lake scan decoded (moving or not).
    pub rows_scanned: u64,
    /// Data files the lake scan opened.
    pub files_read: u64,
    /// Events read from the pipeline tail (moving or not).
    pub tail_events_read: u64,
    /// Writes held by the buffer.
    pub buffered_writes: u64,
    /// The longest a write was held, in microseconds.
    pub max_write_pause_us: u64,
    /// From buffering to cutover, in microseconds: the longest any write to
    /// a moving key could wait.
    pub buffer_window_us: u64,
    /// Entities compared by verification.
    pub verified_entities: u64,
    /// Wall-clock time of the copy (lake replay) in microseconds.
    pub copy_us: u64,
    /// Of the copy, the lake scan and apply alone (without the barrier and
    /// the inventory that finds the moving keys' hashes), in microseconds.
    pub scan_us: u64,
    /// Wall-clock time in all, in microseconds.
    pub duration_us: u64,
}

/// The outcome of a migration, kept for its waiters.
type Outcome = Arc<Mutex<Option<std::result::Result<MigrationReport, Error>>>>;

/// A started migration: its id and progress.
#[derive(Debug, Clone)]
pub struct MigrationHandle {
    /// The migration.
    pub id: String,
    progress: watch::Receiver<Progress>,
    done: watch::Receiver<bool>,
    outcome: Outcome,
}

impl MigrationHandle {
    /// Progress updates (phase, events and keys processed, elapsed).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits for the end: the report, or the (typed) error that rolled the
    /// migration back. The error goes to the first waiter; later ones get
    /// its message.
    pub async fn wait(mut self) -> Result<MigrationReport> {
        let _ = self.done.wait_for(|d| *d).await;
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(Ok(report)) => {
                *slot = Some(Ok(report.clone()));
                Ok(report)
            }
            Some(Err(e)) => {
                *slot = Some(Err(Error::MigrationFailed {
                    id: self.id.clone(),
                    message: e.to_string(),
                    retryable: e.is_retryable(),
                }));
                Err(e)
            }
            None => Err(Error::TaskFailed {
                task: "the migration task",
                message: format!("migration {} stopped without an outcome", self.id),
            }),
        }
    }
}

/// The running migration of a `Floe` and the outcomes of its past ones.
#[derive(Debug)]
pub(crate) struct Registry {
    store: JobStore,
    running: Mutex<Option<Running>>,
    handles: Mutex<HashMap<String, MigrationHandle>>,
}

#[derive(Debug, Clone)]
struct Running {
    id: String,
    movement: floe_migration::Movement,
    cancel: Arc<run::Cancel>,
    progress: watch::Receiver<Progress>,
}

impl Registry {
    /// Opens the job store of `data_dir` and settles jobs a stopped process
    /// left running, by the topology now persisted.
    pub(crate) fn open(data_dir: &Path, persisted: &Topology) -> Result<Registry> {
        let store = JobStore::new(data_dir.join(JOBS_DIR));
        for mut job in store.list()? {
            if job.settle_after_restart(persisted) {
                tracing::warn!(id = %job.id, status = ?job.status, "settled a migration left running by a stopped process");
                store.save(&job)?;
                store.clear_cancel(&job.id);
            }
        }
        Ok(Registry {
            store,
            running: Mutex::new(None),
            handles: Mutex::new(HashMap::new()),
        })
    }
}

impl From<MigrationError> for Error {
    fn from(e: MigrationError) -> Self {
        Error::Migration(e)
    }
}

/// The migrations of one [`Floe`] (from [`Floe::migrations`]): plan, start,
/// follow, cancel. One migration runs at a time.
#[derive(Debug, Clone)]
pub struct Migrations {
    floe: Floe,
}

impl Floe {
    /// Plans, starts and follows live shard migrations.
    pub fn migrations(&self) -> Migrations {
        Migrations { floe: self.clone() }
    }
}

/// What to plan.
pub type PlanRequest = PlanKind;

impl Migrations {
    /// Every known partition key with its shard and load (from the shards'
    /// state, one pass per shard).
    pub async fn inventory(&self) -> Result<Vec<KeyLoad>> {
        shards::inventory(&self.floe.routing()).await
    }

    /// How evenly the shards are loaded (`threshold`: 0.2 = a shard 20% above
    /// the mean is hot).
    pub async fn analyze_balance(&self, threshold: f64) -> Result<BalanceAnalysis> {
        let topology = self.floe.topology();
        let keys = self.inventory().await?;
        Ok(analyze_balance(
            &shard_loads(topology.shard_count, &keys),
            threshold,
        ))
    }

    /// A plan against the topology in force.
    pub async fn plan(&self, request: PlanRequest) -> Result<MigrationPlan> {
        let topology = self.floe.topology();
        let keys = self.inventory().await?;
        Ok(match request {
            PlanKind::AddShard => floe_migration::plan_add_shard(&topology, &keys)?,
            PlanKind::RemoveShard { shard } => {
                floe_migration::plan_remove_shard(&topology, &keys, shard)?
            }
            PlanKind::Rebalance { threshold } => {
                floe_migration::plan_rebalance(&topology, &keys, threshold)?
            }
            PlanKind::Split { shard } => floe_migration::plan_split(&topology, &keys, shard)?,
            PlanKind::Merge { from, into } => {
                floe_migration::plan_merge(&topology, &keys, from, into)?
            }
        })
    }

    /// Errors and warnings about a plan now.
    pub fn validate(&self, plan: &MigrationPlan) -> Validation {
        floe_migration::validate(plan, &self.floe.topology())
    }

    /// Starts a migration in the background; fails at once if the plan is
    /// invalid or another migration runs ([`floe_migration::Error::AlreadyMigrating`]).
    pub async fn start(
        &self,
        plan: MigrationPlan,
        options: MigrationOptions,
    ) -> Result<MigrationHandle> {
        let registry = self.floe.migrations_registry();
        let validation = self.validate(&plan);
        let movement = plan.movement()?;
        let id = format!("m-{}", &uuid::Uuid::now_v7().simple().to_string()[..16]);
        let cancel = Arc::new(run::Cancel::default());
        let (progress_tx, progress) = watch::channel(Progress::default());
        {
            let mut running = registry.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = running.as_ref() {
                let key = plan
                    .moves
                    .iter()
                    .find(|m| other.movement.moves(&m.partition_key, m.key_hash))
                    .map_or_else(|| "*".to_string(), |m| m.partition_key.clone());
                return Err(MigrationError::AlreadyMigrating {
                    running: other.id.clone(),
                    key,
                }
                .into());
            }
            if !validation.is_valid() {
                return Err(MigrationError::InvalidPlan(validation.errors.join("; ")).into());
            }
            *running = Some(Running {
                id: id.clone(),
                movement: movement.clone(),
                cancel: cancel.clone(),
                progress: progress.clone(),
            });
        }
        let config = options
            .config
            .clone()
            .unwrap_or_else(|| self.floe.config().migration.clone());
        let coordinator = run::Coordinator::new(
            self.floe.clone(),
            id.clone(),
            plan,
            movement,
            config,
            options.fail_at,
            cancel,
            progress_tx,
            registry.store.clone(),
        );
        let (done_tx, done) = watch::channel(false);
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let handle = MigrationHandle {
            id: id.clone(),
            progress,
            done,
            outcome: outcome.clone(),
        };
        registry
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), handle.clone());
        let floe = self.floe.clone();
        let job_id = id.clone();
        tokio::spawn(async move {
            let result = match coordinator {
                Ok(coordinator) => coordinator.run().await,
                Err(e) => Err(e),
            };
            let registry = floe.migrations_registry();
            registry
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            registry.store.clear_cancel(&job_id);
            *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            let _ = done_tx.send(true);
        });
        Ok(handle)
    }

    /// Starts a migration and waits for its end. The error is the one that
    /// rolled it back (typed: timeout, cancelled, verify mismatch...).
    pub async fn run(
        &self,
        plan: MigrationPlan,
        options: MigrationOptions,
    ) -> Result<MigrationReport> {
        self.start(plan, options).await?.wait().await
    }

    /// The record of one migration (also of past ones and of other
    /// processes' on this data directory).
    pub fn status(&self, id: &str) -> Result<MigrationJob> {
        Ok(self.floe.migrations_registry().store.load(id)?)
    }

    /// Every migration recorded in the data directory, oldest first.
    pub fn list(&self) -> Result<Vec<MigrationJob>> {
        Ok(self.floe.migrations_registry().store.list()?)
    }

    /// The id of the running migration, if any.
    pub fn running(&self) -> Option<String> {
        let registry = self.floe.migrations_registry();
        let running = registry.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.id.clone())
    }

    /// Progress of the running migration `id`.
    pub fn subscribe(&self, id: &str) -> Result<watch::Receiver<Progress>> {
        let registry = self.floe.migrations_registry();
        let running = registry.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(r) if r.id == id => Ok(r.progress.clone()),
            _ => Err(MigrationError::NotFound(id.into()).into()),
        }
    }

    /// Asks the running migration `id` to stop; it rolls back (unless it has
    /// already cut over, in which case it finishes).
    pub fn cancel(&self, id: &str) -> Result<()> {
        let registry = self.floe.migrations_registry();
        let running = registry.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(r) if r.id == id => {
                r.cancel.cancel();
                Ok(())
            }
            _ => Err(MigrationError::NotFound(id.into()).into()),
        }
    }

    /// Waits for a migration started by this instance.
    pub async fn wait(&self, id: &str) -> Result<MigrationReport> {
        let handle = self
            .floe
            .migrations_registry()
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| MigrationError::NotFound(id.into()))?;
        handle.wait().await
    }
}

/// Jobs of a data directory without opening it (no lock needed): what
/// `floe migrate status` shows from another process.
pub fn list_jobs(data_dir: &Path) -> Result<Vec<MigrationJob>> {
    Ok(JobStore::new(data_dir.join(JOBS_DIR)).list()?)
}

/// Asks the process running migration `id` on `data_dir` to cancel it (it
/// polls for the request between batches): `floe migrate cancel`.
pub fn request_cancel(data_dir: &Path, id: &str) -> Result<()> {
    Ok(JobStore::new(data_dir.join(JOBS_DIR)).request_cancel(id)?)
}
