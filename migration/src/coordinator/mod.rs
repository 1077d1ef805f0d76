//! The migration coordinator: [`Migrator`] plans, starts and follows live
//! migrations of one deployment (one at a time), each run by a
//! `Coordinator` task through its phases (see `run.rs`) against a
//! [`Deployment`]: the shard cluster, the lake, the topology store.
//!
//! Progress that matters for undoing is an explicit [`Stage`]; a failure
//! before the cutover rolls back exactly what its stage says was done, and a
//! restart settles a job left running by the topology the store holds.

mod active;
mod run;
mod stage;
#[cfg(all(test, feature = "failpoints"))]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use floe_emitter::sink::Lake;
use floe_engine::{KeyLoad, RoutingTable, ShardCluster, Topology, TopologyStore};
use tokio::sync::watch;

pub use stage::{Settle, Stage, Unblock};

use crate::balance::{BalanceAnalysis, analyze_balance, check_threshold};
use crate::config::{MigrationConfig, MigrationOptions, MigrationReport};
use crate::error::{Error, Result};
use crate::job::{JobStore, MigrationJob, Progress};
use crate::periods::{
    plan_add_period, plan_archive_period, plan_drop_period, plan_isolate, plan_move_period,
    plan_reactivate_period,
};
use crate::plan::{
    MigrationPlan, Movement, PlanKind, Validation, plan_add_shard, plan_move_keys, plan_rebalance,
    plan_split, plan_unpin, shard_loads, validate,
};
use crate::ranges::{plan_add_range, plan_merge_ranges, plan_move_range, plan_split_range};
use crate::shrink::{plan_merge, plan_remove_shard};

/// Where a data directory keeps its migration jobs.
pub const JOBS_DIR: &str = "migrations";

/// What a migration changes: the shard cluster (routing and shards, and
/// through it the pipeline), the lake it copies history from, and the store
/// of the topology in force.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The shards and their routing table.
    pub cluster: Arc<ShardCluster>,
    /// The lake, when the deployment lands its pipeline in one.
    pub lake: Option<Lake>,
    /// Where the topology in force is persisted.
    pub topology: Arc<dyn TopologyStore>,
}

/// The outcome of a migration, kept for its waiters.
type Outcome = Arc<Mutex<Option<Result<MigrationReport>>>>;

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
    /// [`Error::Failed`] with its message.
    pub async fn wait(mut self) -> Result<MigrationReport> {
        let _ = self.done.wait_for(|d| *d).await;
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(Ok(report)) => {
                *slot = Some(Ok(report.clone()));
                Ok(report)
            }
            Some(Err(e)) => {
                *slot = Some(Err(Error::Failed {
                    id: self.id.clone(),
                    message: e.to_string(),
                }));
                Err(e)
            }
            None => Err(Error::NoOutcome(self.id.clone())),
        }
    }
}

#[derive(Debug, Clone)]
struct Running {
    id: String,
    movement: Movement,
    cancel: Arc<run::Cancel>,
    progress: watch::Receiver<Progress>,
}

/// The migrations of one deployment: plan, start, follow, cancel. One runs
/// at a time. Cloning is cheap; clones share the running migration.
#[derive(Debug, Clone)]
pub struct Migrator {
    inner: Arc<MigratorInner>,
}

#[derive(Debug)]
struct MigratorInner {
    deployment: Deployment,
    config: MigrationConfig,
    store: JobStore,
    running: Mutex<Option<Running>>,
    handles: Mutex<HashMap<String, MigrationHandle>>,
}

impl Migrator {
    /// The migrator of `deployment`, keeping its jobs in `store`. Jobs a
    /// stopped process left running are settled first, by `persisted` (the
    /// topology the deployment came up with): completed if it is their
    /// target, rolled back otherwise.
    pub fn open(
        deployment: Deployment,
        store: JobStore,
        persisted: &Topology,
        config: MigrationConfig,
    ) -> Result<Migrator> {
        for mut job in store.list()? {
            if job.settle_after_restart(persisted) {
                tracing::warn!(id = %job.id, status = ?job.status, "settled a migration left running by a stopped process");
                store.save(&job)?;
                store.clear_cancel(&job.id);
            }
        }
        Ok(Migrator {
            inner: Arc::new(MigratorInner {
                deployment,
                config,
                store,
                running: Mutex::new(None),
                handles: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Every known partition key with its shard and load (from the shards'
    /// state, one pass per shard).
    pub async fn inventory(&self) -> Result<Vec<KeyLoad>> {
        inventory(&self.inner.deployment.cluster.routing()).await
    }

    /// How evenly the shards are loaded (`threshold`: 0.2 = a shard 20% above
    /// the mean is hot).
    pub async fn analyze_balance(&self, threshold: f64) -> Result<BalanceAnalysis> {
        check_threshold(threshold)?;
        let topology = self.inner.deployment.cluster.topology();
        let keys = self.inventory().await?;
        Ok(analyze_balance(
            &shard_loads(topology.shard_count, &keys),
            threshold,
        ))
    }

    /// A plan against the topology in force.
    pub async fn plan(&self, request: PlanKind) -> Result<MigrationPlan> {
        let topology = self.inner.deployment.cluster.topology();
        let keys = self.inventory().await?;
        match request {
            PlanKind::AddShard {} => plan_add_shard(&topology, &keys),
            PlanKind::RemoveShard { shard } => plan_remove_shard(&topology, &keys, shard),
            PlanKind::Rebalance { threshold } => plan_rebalance(&topology, &keys, threshold),
            PlanKind::Split { shard } => plan_split(&topology, &keys, shard),
            PlanKind::Pin { ref key, shard } => {
                let moves = std::collections::BTreeMap::from([(key.clone(), shard)]);
                plan_move_keys(&topology, &keys, request.clone(), &moves)
            }
            PlanKind::MoveKeys { ref moves } => {
                plan_move_keys(&topology, &keys, request.clone(), moves)
            }
            PlanKind::Unpin { keys: ref unpin } => plan_unpin(&topology, &keys, unpin),
            PlanKind::Merge { from, into } => plan_merge(&topology, &keys, from, into),
            PlanKind::AddRange { start, end, shard } => {
                plan_add_range(&topology, &keys, start, end, shard)
            }
            PlanKind::SplitRange { at, shard } => plan_split_range(&topology, &keys, at, shard),
            PlanKind::MergeRanges { at, shard } => plan_merge_ranges(&topology, &keys, at, shard),
            PlanKind::MoveRange { at, shard } => plan_move_range(&topology, &keys, at, shard),
            PlanKind::AddPeriod { ref period, shard } => {
                plan_add_period(&topology, &keys, period, shard)
            }
            PlanKind::MovePeriod { ref period, shard } => {
                plan_move_period(&topology, &keys, period, shard)
            }
            PlanKind::Isolate { ref tenant } => plan_isolate(&topology, &keys, tenant),
            PlanKind::ArchivePeriod { ref period } => {
                if self.inner.deployment.lake.is_none() {
                    return Err(Error::InvalidPlan(
                        "archival needs a lake ([lake]): archived entities are read from it".into(),
                    ));
                }
                plan_archive_period(&topology, &keys, period, crate::job::now_ms() as i64)
            }
            PlanKind::ReactivatePeriod { ref period } => {
                plan_reactivate_period(&topology, &keys, period)
            }
            PlanKind::DropPeriod { ref period } => {
                if self.inner.deployment.lake.is_none() {
                    return Err(Error::InvalidPlan(
                        "dropping a period erases its rows from the lake: configure [lake]".into(),
                    ));
                }
                plan_drop_period(&topology, &keys, period)
            }
        }
    }

    /// Errors and warnings about a plan now.
    pub fn validate(&self, plan: &MigrationPlan) -> Validation {
        validate(plan, &self.inner.deployment.cluster.topology())
    }

    /// Starts a migration in the background; fails at once if the plan is
    /// invalid or another migration runs ([`Error::AlreadyMigrating`]).
    pub fn start(&self, plan: MigrationPlan, options: MigrationOptions) -> Result<MigrationHandle> {
        let inner = &self.inner;
        let validation = self.validate(&plan);
        let movement = plan.movement()?;
        let id = format!("m-{}", &uuid::Uuid::now_v7().simple().to_string()[..16]);
        let cancel = Arc::new(run::Cancel::default());
        let (progress_tx, progress) = watch::channel(Progress::default());
        {
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = running.as_ref() {
                let key = plan
                    .moves
                    .iter()
                    .find(|m| other.movement.moves(&m.partition_key, m.key_hash))
                    .map_or_else(|| "*".to_string(), |m| m.partition_key.clone());
                return Err(Error::AlreadyMigrating {
                    running: other.id.clone(),
                    key,
                });
            }
            if !validation.is_valid() {
                return Err(Error::InvalidPlan(validation.errors.join("; ")));
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
            .unwrap_or_else(|| inner.config.clone());
        let coordinator = run::Coordinator::new(
            inner.deployment.clone(),
            id.clone(),
            plan,
            movement,
            config,
            #[cfg(feature = "failpoints")]
            options.fail_at,
            cancel,
            progress_tx,
            inner.store.clone(),
        );
        let (done_tx, done) = watch::channel(false);
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let handle = MigrationHandle {
            id: id.clone(),
            progress,
            done,
            outcome: outcome.clone(),
        };
        inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), handle.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let result = match coordinator {
                Ok(coordinator) => coordinator.run().await,
                Err(e) => Err(e),
            };
            let inner = &this.inner;
            inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            inner.store.clear_cancel(&id);
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
        self.start(plan, options)?.wait().await
    }

    /// The record of one migration (also of past ones and of other
    /// processes' on the same job store).
    pub fn status(&self, id: &str) -> Result<MigrationJob> {
        self.inner.store.load(id)
    }

    /// Every migration recorded, oldest first.
    pub fn list(&self) -> Result<Vec<MigrationJob>> {
        self.inner.store.list()
    }

    /// The id of the running migration, if any.
    pub fn running(&self) -> Option<String> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.id.clone())
    }

    /// Progress of the running migration `id`.
    pub fn subscribe(&self, id: &str) -> Result<watch::Receiver<Progress>> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(r) if r.id == id => Ok(r.progress.clone()),
            _ => Err(Error::NotFound(id.into())),
        }
    }

    /// Asks the running migration `id` to stop; it rolls back (unless it has
    /// already cut over, in which case it finishes).
    pub fn cancel(&self, id: &str) -> Result<()> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(r) if r.id == id => {
                r.cancel.cancel();
                Ok(())
            }
            _ => Err(Error::NotFound(id.into())),
        }
    }

    /// Waits for a migration started by this migrator.
    pub async fn wait(&self, id: &str) -> Result<MigrationReport> {
        let handle = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.into()))?;
        handle.wait().await
    }
}

/// Every partition key each shard of `routing` owns, with its load, sorted
/// by key.
pub async fn inventory(routing: &RoutingTable) -> Result<Vec<KeyLoad>> {
    let router = (**routing.router()).clone();
    let shard_count = router.topology().shard_count as usize;
    let tasks = routing
        .shards()
        .iter()
        .take(shard_count)
        .map(|shard| shard.key_loads(router.clone()));
    let mut all = Vec::new();
    for keys in futures::future::join_all(tasks).await {
        all.extend(keys?);
    }
    all.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    Ok(all)
}

/// Jobs of a data directory without opening it (no lock needed): what
/// `floe migrate status` shows from another process.
pub fn list_jobs(data_dir: &Path) -> Result<Vec<MigrationJob>> {
    JobStore::new(data_dir.join(JOBS_DIR)).list()
}

/// Asks the process running migration `id` on `data_dir` to cancel it (it
/// polls for the request between batches).
pub fn request_cancel(data_dir: &Path, id: &str) -> Result<()> {
    JobStore::new(data_dir.join(JOBS_DIR)).request_cancel(id)
}
