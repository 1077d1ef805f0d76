//! Live shard migrations of a [`Floe`] ([`Floe::migrations`]): a facade over
//! the coordinator in `floe-migration` ([`floe_migration::Migrator`]) that
//! speaks this crate's error type. `docs/migration.md` describes the
//! protocol.

use std::path::Path;

use floe_migration::{
    BalanceAnalysis, Error as MigrationError, KeyLoad, MigrationJob, MigrationPlan, PlanKind,
    Progress, Validation,
};
use tokio::sync::watch;

#[cfg(feature = "failpoints")]
pub use floe_migration::FailPoint;
pub use floe_migration::{
    ArchivedWrites, JOBS_DIR, MigrationConfig, MigrationOptions, MigrationReport,
};

use crate::cluster::ClusterNode;
use crate::error::{Error, Result};
use crate::floe::Floe;

impl From<MigrationError> for Error {
    fn from(e: MigrationError) -> Self {
        match e {
            MigrationError::InvalidConfig(message) => Error::Config(message),
            e => Error::Migration(e),
        }
    }
}

/// A started migration: its id and progress.
#[derive(Debug, Clone)]
pub struct MigrationHandle {
    /// The migration.
    pub id: String,
    run: Run,
}

#[derive(Debug, Clone)]
enum Run {
    /// Run by this process's coordinator.
    Local(floe_migration::MigrationHandle),
    /// A reshard across the cluster (`crate::cluster::reshard`), followed
    /// through etcd.
    Cluster(std::sync::Arc<ClusterNode>, watch::Receiver<Progress>),
}

impl MigrationHandle {
    /// Progress updates (phase, events and keys processed, elapsed). A
    /// reshard reports its phase only.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        match &self.run {
            Run::Local(inner) => inner.progress(),
            Run::Cluster(_, progress) => progress.clone(),
        }
    }

    /// Waits for the end: the report, or the (typed) error that rolled the
    /// migration back. The error goes to the first waiter; later ones get
    /// its message.
    pub async fn wait(self) -> Result<MigrationReport> {
        match self.run {
            Run::Local(inner) => Ok(inner.wait().await?),
            Run::Cluster(node, _) => {
                let job = node.wait_reshard(&self.id).await?;
                Ok(MigrationReport {
                    id: job.id,
                    kind: job.kind,
                    from_version: job.from.version,
                    to_version: job.to.version,
                    keys_moved: job.moving_keys,
                    // A reshard restores every shard from the lake and the
                    // pipeline on the nodes: no one process counts these.
                    entities_moved: 0,
                    events_replayed: 0,
                    lake_events: 0,
                    bytes_read: 0,
                    rows_scanned: 0,
                    files_read: 0,
                    tail_events_read: 0,
                    buffered_writes: 0,
                    max_write_pause_us: 0,
                    buffer_window_us: job.progress.elapsed_ms * 1000,
                    verified_entities: 0,
                    copy_us: 0,
                    scan_us: 0,
                    duration_us: job.progress.elapsed_ms * 1000,
                })
            }
        }
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
    fn migrator(&self) -> &floe_migration::Migrator {
        self.floe.migrator()
    }

    /// Every known partition key with its shard and load (from the shards'
    /// state, one pass per shard).
    pub async fn inventory(&self) -> Result<Vec<KeyLoad>> {
        Ok(self.migrator().inventory().await?)
    }

    /// How evenly the shards are loaded (`threshold`: 0.2 = a shard 20% above
    /// the mean is hot).
    pub async fn analyze_balance(&self, threshold: f64) -> Result<BalanceAnalysis> {
        Ok(self.migrator().analyze_balance(threshold).await?)
    }

    /// A plan against the topology in force.
    pub async fn plan(&self, request: PlanRequest) -> Result<MigrationPlan> {
        Ok(self.migrator().plan(request).await?)
    }

    /// Time topologies: adds the shard of every period that starts within
    /// `migration.period_lead_time_ms` of `now_ms` (or has started) and has
    /// none, one migration each, in time order; returns their labels. Such
    /// a migration moves no entity (none can be in a period without a
    /// shard), so it only changes the topology. Nothing to do on other
    /// topologies, or when every due period has its shard: calling it again
    /// is harmless.
    pub async fn ensure_periods(&self, now_ms: i64) -> Result<Vec<String>> {
        let lead =
            i64::try_from(self.floe.config().migration.period_lead_time_ms).unwrap_or(i64::MAX);
        let mut added = Vec::new();
        for period in floe_migration::due_periods(&self.floe.topology(), now_ms, lead) {
            self.plan_and_run(PlanKind::AddPeriod {
                period: period.clone(),
                shard: None,
            })
            .await?;
            added.push(period);
        }
        Ok(added)
    }

    /// Time topologies: archives every period older than the
    /// `migration.active_periods` most recent ones (and finishes any sealed
    /// one), then drops archived ones older than `migration.retain_periods`,
    /// one migration each, oldest first; returns their labels. Off (nothing
    /// to do) when both are 0, on other topologies, or without a lake.
    /// Calling it again is harmless.
    pub async fn ensure_archived(&self, now_ms: i64) -> Result<Vec<String>> {
        let config = &self.floe.config().migration;
        if !self.floe.config().lake.enabled {
            return Ok(Vec::new());
        }
        let mut changed = Vec::new();
        for period in
            floe_migration::due_archival(&self.floe.topology(), now_ms, config.active_periods)
        {
            self.plan_and_run(PlanKind::ArchivePeriod {
                period: period.clone(),
            })
            .await?;
            changed.push(period);
        }
        // Retention: archived periods past `retain_periods` are dropped.
        for period in
            floe_migration::due_drops(&self.floe.topology(), now_ms, config.retain_periods)
        {
            self.plan_and_run(PlanKind::DropPeriod {
                period: period.clone(),
            })
            .await?;
            changed.push(format!("{period} (dropped)"));
        }
        Ok(changed)
    }

    /// Plans `kind` against the topology in force and runs it to its end.
    pub(crate) async fn plan_and_run(&self, kind: PlanKind) -> Result<MigrationReport> {
        let plan = self.plan(kind).await?;
        self.run(plan, MigrationOptions::default()).await
    }

    /// Errors and warnings about a plan now.
    pub fn validate(&self, plan: &MigrationPlan) -> Validation {
        self.migrator().validate(plan)
    }

    /// Starts a migration in the background; fails at once if the plan is
    /// invalid or another migration runs ([`floe_migration::Error::AlreadyMigrating`]).
    pub async fn start(
        &self,
        plan: MigrationPlan,
        options: MigrationOptions,
    ) -> Result<MigrationHandle> {
        if let Some(node) = self.floe.cluster_node() {
            return self.start_reshard(node.clone(), plan).await;
        }
        let inner = self.migrator().start(plan, options)?;
        Ok(MigrationHandle {
            id: inner.id.clone(),
            run: Run::Local(inner),
        })
    }

    /// Cluster mode: the plan becomes a reshard (docs/cluster.md): every
    /// node pauses, the topology is replaced at once and every shard is
    /// restored under it from the lake and the pipeline.
    async fn start_reshard(
        &self,
        node: std::sync::Arc<ClusterNode>,
        plan: MigrationPlan,
    ) -> Result<MigrationHandle> {
        if matches!(
            plan.kind,
            PlanKind::ArchivePeriod { .. }
                | PlanKind::ReactivatePeriod { .. }
                | PlanKind::DropPeriod { .. }
        ) {
            return Err(crate::Error::ClusterUnsupported {
                what: "archiving, reactivating and dropping periods",
            });
        }
        let validation = self.validate(&plan);
        if !validation.is_valid() {
            return Err(MigrationError::InvalidPlan(validation.errors.join("; ")).into());
        }
        // `[migration]` and the options bound a single node's copy; a
        // reshard's pause has its own bound.
        let pause_timeout_ms = node.config().reshard_pause_timeout_ms;
        let id = node.request_reshard(&plan, pause_timeout_ms).await?;
        let (tx, progress) = watch::channel(Progress {
            phase: Some(floe_migration::Phase::Buffer),
            ..Progress::default()
        });
        let (follow, waited) = (node.clone(), id.clone());
        tokio::spawn(async move {
            // The phase as etcd has it, until the reshard ends.
            while !tx.is_closed() {
                let Some(job) = follow.reshard_job().filter(|j| j.id == waited) else {
                    break;
                };
                tx.send_replace(job.progress.clone());
                if job.status != floe_migration::JobStatus::Running {
                    break;
                }
                tokio::time::sleep(follow.config().handover_poll()).await;
            }
        });
        Ok(MigrationHandle {
            id,
            run: Run::Cluster(node, progress),
        })
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
        if let Some(job) = self.reshard_job().filter(|j| j.id == id) {
            return Ok(job);
        }
        Ok(self.migrator().status(id)?)
    }

    /// Cluster mode: the cluster's last reshard, as last seen.
    fn reshard_job(&self) -> Option<MigrationJob> {
        self.floe.cluster_node()?.reshard_job()
    }

    /// Every migration recorded in the data directory, oldest first.
    pub fn list(&self) -> Result<Vec<MigrationJob>> {
        let mut jobs = self.migrator().list()?;
        // Cluster mode: the cluster's last reshard (etcd keeps only that one).
        jobs.extend(self.reshard_job());
        Ok(jobs)
    }

    /// The id of the running migration, if any.
    pub fn running(&self) -> Option<String> {
        self.reshard_job()
            .filter(|j| j.status == floe_migration::JobStatus::Running)
            .map(|j| j.id)
            .or_else(|| self.migrator().running())
    }

    /// Progress of the running migration `id`.
    pub fn subscribe(&self, id: &str) -> Result<watch::Receiver<Progress>> {
        Ok(self.migrator().subscribe(id)?)
    }

    /// Asks the running migration `id` to stop; it rolls back (unless it has
    /// already cut over, in which case it finishes).
    pub fn cancel(&self, id: &str) -> Result<()> {
        Ok(self.migrator().cancel(id)?)
    }

    /// [`Migrations::cancel`] for a reshard too (cluster mode: aborts it in
    /// etcd while it is still pausing).
    pub async fn cancel_any(&self, id: &str) -> Result<()> {
        if let Some(node) = self.floe.cluster_node()
            && self.reshard_job().is_some_and(|j| j.id == id)
        {
            return node.cancel_reshard(id).await;
        }
        self.cancel(id)
    }

    /// Waits for a migration started by this instance.
    pub async fn wait(&self, id: &str) -> Result<MigrationReport> {
        Ok(self.migrator().wait(id).await?)
    }
}

/// Jobs of a data directory without opening it (no lock needed): what
/// `floe migrate status` shows from another process.
pub fn list_jobs(data_dir: &Path) -> Result<Vec<MigrationJob>> {
    Ok(floe_migration::list_jobs(data_dir)?)
}

/// Asks the process running migration `id` on `data_dir` to cancel it (it
/// polls for the request between batches): `floe migrate cancel`.
pub fn request_cancel(data_dir: &Path, id: &str) -> Result<()> {
    Ok(floe_migration::request_cancel(data_dir, id)?)
}
