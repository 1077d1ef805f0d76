//! This node's part in a reshard, a shard-count migration across the cluster
//! (the protocol is in `floe_cluster::reshard`; docs/cluster.md has the
//! argument): pause every shard while a reshard asks it and record the pause,
//! and route by each newer topology the cluster cuts over to, with fresh
//! shards that serve only under grants written after that cutover.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use floe_cluster::{DocWatch, EtcdDocStore, Reshard, ReshardPhase, Versioned};
use floe_engine::{NextRouting, Router, Shard, ShardCluster, Topology};
use floe_migration::{JobStatus, MigrationJob, MigrationPlan, Phase};

use super::ClusterNode;
use crate::error::{Error, Result};

/// What a reshard changes on this node: the topology revision it routes by
/// and the reshard it has paused for.
#[derive(Debug)]
pub(super) struct NodeReshard {
    pub(super) docs: DocWatch<Reshard>,
    /// The revision of the topology document this node routes by.
    topology_revision: AtomicI64,
    /// The reshard whose pause this node has recorded in etcd.
    recorded: Mutex<Option<String>>,
    /// Held through each decision to pause, serve again or adopt (by the
    /// restore loop and the pause loop): a decision made on an older view
    /// of the document must not reopen the gate after a pause was recorded.
    step: tokio::sync::Mutex<()>,
}

/// The gate's side of a reshard: closed while the node pauses, and the
/// epoch below which grants belong to an older topology.
#[derive(Debug)]
pub(super) struct ReshardGate {
    /// Set while a reshard pauses this node, and from the start until the
    /// node has read the reshard document once.
    pub(super) paused: AtomicBool,
    /// Grants at or below this epoch were written before the topology this
    /// node routes by: never served (a lagging view may still show them).
    pub(super) floor: AtomicU64,
}

impl Default for ReshardGate {
    fn default() -> Self {
        ReshardGate {
            paused: AtomicBool::new(true),
            floor: AtomicU64::new(0),
        }
    }
}

impl ReshardGate {
    pub(super) fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(super) fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }
}

impl NodeReshard {
    pub(super) fn new(docs: DocWatch<Reshard>) -> Self {
        NodeReshard {
            docs,
            topology_revision: AtomicI64::new(0),
            recorded: Mutex::new(None),
            step: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn topology_revision(&self) -> i64 {
        self.topology_revision.load(Ordering::Acquire)
    }

    pub(super) fn set_topology_revision(&self, revision: i64) {
        self.topology_revision.store(revision, Ordering::Release);
    }

    /// The reshard document as last seen (`None`: none yet, or not listed).
    pub(super) fn current(&self) -> Option<Versioned<Reshard>> {
        match self.docs.current() {
            Ok(doc) => doc,
            Err(e) => {
                tracing::warn!(error = %e, "the reshard document cannot be read");
                None
            }
        }
    }
}

impl ClusterNode {
    /// Brings this node in line with the reshard document: adopts a topology
    /// the cluster cut over to, pauses (and records it) while a reshard of
    /// the topology it routes by is pausing, serves again otherwise. Run by
    /// the restore loop before it restores anything, so no restore runs
    /// under a topology this node is leaving.
    pub(super) async fn follow_reshard(&self, cluster: &ShardCluster) -> Result<()> {
        if !self.reshard.docs.listed() {
            return Ok(());
        }
        let _step = self.reshard.step.lock().await;
        let doc = self.reshard.current();
        let mine = self.reshard.topology_revision();
        if let Some(doc) = &doc {
            // The topology revision in force according to the document.
            let in_force = match doc.value.phase {
                ReshardPhase::CutOver => doc.revision,
                _ => doc.value.base_revision,
            };
            if in_force > mine {
                return self.adopt_stored_topology(cluster).await;
            }
            if doc.value.phase == ReshardPhase::Pausing && doc.value.base_revision == mine {
                return self.pause_for(cluster, &doc.value.id).await;
            }
        }
        if self.gate.reshard.paused.swap(false, Ordering::AcqRel) {
            tracing::info!("no reshard is pausing: serving again");
            self.gate.served.notify_waiters();
        }
        Ok(())
    }

    /// Pauses as soon as a reshard of the topology this node routes by asks
    /// it, even while the restore loop is busy restoring a shard: the
    /// cutover waits for the slowest node's pause record.
    pub(super) async fn pause_loop(&self, cluster: Arc<ShardCluster>) {
        let mut changes = self.reshard.docs.subscribe();
        loop {
            let pausing = self.reshard.current().filter(|doc| {
                doc.value.phase == ReshardPhase::Pausing
                    && doc.value.base_revision == self.reshard.topology_revision()
            });
            if let Some(doc) = pausing {
                let _step = self.reshard.step.lock().await;
                // Decided again under the lock, on the view as it is now.
                let still = self.reshard.current().is_some_and(|now| {
                    now.revision == doc.revision
                        && now.value.base_revision == self.reshard.topology_revision()
                });
                if still && let Err(e) = self.pause_for(&cluster, &doc.value.id).await {
                    tracing::warn!(error = %e, "pausing for a reshard failed; retrying");
                }
            }
            if tokio::time::timeout(self.config().handover_poll(), changes.changed())
                .await
                .is_ok_and(|changed| changed.is_err())
            {
                return;
            }
        }
    }

    /// Stops acknowledging on every shard, waits for the writes in flight,
    /// then records the pause (once per reshard). Called under `step`.
    async fn pause_for(&self, cluster: &ShardCluster, id: &str) -> Result<()> {
        if !self.gate.reshard.paused.swap(true, Ordering::AcqRel) {
            tracing::info!(id, "reshard: pausing every shard");
        }
        let recorded = self
            .reshard
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if recorded.as_deref() == Some(id) {
            return Ok(());
        }
        // Every write that passed the gate before the pause is answered
        // (durable or failed) before the pause is recorded.
        ShardCluster::barrier(&cluster.routing())
            .await
            .map_err(Error::Engine)?;
        floe_cluster::record_paused(self.member.client(), self.config(), self.record(), id)
            .await
            .map_err(Error::Cluster)?;
        *self
            .reshard
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
        tracing::info!(id, "reshard: paused, recorded in etcd");
        Ok(())
    }

    /// Routes by the topology stored in etcd if it is newer than the one in
    /// force here: every shard starts over empty and is restored under its
    /// next grant.
    async fn adopt_stored_topology(&self, cluster: &ShardCluster) -> Result<()> {
        let store: EtcdDocStore<Topology> = EtcdDocStore::new(
            self.member.client(),
            self.config(),
            floe_cluster::TOPOLOGY_DOC,
        );
        let Some(stored) = store.load_versioned().await.map_err(Error::Cluster)? else {
            return Ok(());
        };
        if stored.revision <= self.reshard.topology_revision() {
            return Ok(());
        }
        self.gate.reshard.paused.store(true, Ordering::Release);
        let router = Arc::new(Router::new(stored.value.clone()).map_err(Error::Engine)?);
        let shard_count = router.topology().shard_count;
        let old = cluster.routing();
        ShardCluster::barrier(&old).await.map_err(Error::Engine)?;
        let shards: Vec<Shard> = (0..shard_count).map(|s| cluster.spawn_shard(s)).collect();
        cluster.swap_routing(|_| NextRouting {
            router,
            shards: Arc::new(shards),
            admission: None,
        });
        for shard in old.shards().iter() {
            // The old state is history now: the new shards are restored
            // from the lake and the pipeline.
            if let Err(e) = shard.clear().await {
                tracing::debug!(shard = shard.id(), error = %e, "clearing a retired shard");
            }
            cluster.retire(shard.clone());
        }
        cluster.resize_load(shard_count);
        self.gate.adopt(stored.revision as u64);
        self.reshard.set_topology_revision(stored.revision);
        tracing::info!(
            revision = stored.revision,
            shards = shard_count,
            version = stored.value.version,
            "reshard: routing by the new topology; restoring shards as they are granted"
        );
        Ok(())
    }
}

/// The record of a reshard as a migration job: the record the asking node
/// stored, with the phase etcd holds now.
fn job_of(doc: &Versioned<Reshard>) -> Option<MigrationJob> {
    let mut job: MigrationJob = serde_json::from_value(doc.value.record.clone()).ok()?;
    job.finished_at_ms = doc.value.finished_at_ms;
    match &doc.value.phase {
        ReshardPhase::Pausing => {
            job.status = JobStatus::Running;
            job.phase = Phase::Buffer;
        }
        ReshardPhase::CutOver => {
            job.status = JobStatus::Completed;
            job.phase = Phase::Done;
        }
        ReshardPhase::Aborted { reason } => {
            job.status = JobStatus::RolledBack;
            job.phase = Phase::RollingBack;
            job.error = Some(reason.clone());
        }
    }
    job.progress.phase = Some(job.phase);
    job.progress.elapsed_ms = doc
        .value
        .finished_at_ms
        .unwrap_or_else(floe_migration::now_ms)
        .saturating_sub(doc.value.requested_at_ms);
    Some(job)
}

impl ClusterNode {
    /// Asks the cluster to reshard to `plan.to`: stored in etcd if no other
    /// reshard runs and the topology is still the one this node routes by
    /// (and planned against). Returns the migration's id.
    pub(crate) async fn request_reshard(
        &self,
        plan: &MigrationPlan,
        pause_timeout_ms: u64,
    ) -> Result<String> {
        let now = floe_migration::now_ms();
        let id = format!("r-{now:x}-{}", self.record().node_id);
        let mut job = MigrationJob::start(id.clone(), plan, Phase::Buffer);
        job.started_at_ms = now;
        let encode = |what: &str, value: serde_json::Result<serde_json::Value>| {
            value
                .map_err(|e| Error::Config(format!("the reshard's {what} does not serialize: {e}")))
        };
        let request = Reshard {
            id: id.clone(),
            requested_by: self.record().node_id.clone(),
            base_revision: self.reshard.topology_revision(),
            base_shard_count: plan.from.shard_count,
            shard_count: plan.to.shard_count,
            target: encode("topology", serde_json::to_value(&plan.to))?,
            phase: ReshardPhase::Pausing,
            requested_at_ms: now,
            finished_at_ms: None,
            pause_timeout_ms,
            record: encode("record", serde_json::to_value(&job))?,
        };
        floe_cluster::request_reshard(self.member.client(), self.config(), &request)
            .await
            .map_err(Error::Cluster)?;
        tracing::info!(%id, from = plan.from.shard_count, to = plan.to.shard_count, "reshard requested");
        Ok(id)
    }

    /// The last reshard of the cluster as a migration job, as last seen.
    pub(crate) fn reshard_job(&self) -> Option<MigrationJob> {
        job_of(&self.reshard.current()?)
    }

    /// Cancels reshard `id` if it is still pausing (it is aborted; every node
    /// serves on the old topology again).
    pub(crate) async fn cancel_reshard(&self, id: &str) -> Result<()> {
        let store = floe_cluster::reshard_store(self.member.client(), self.config());
        match store.load_versioned().await.map_err(Error::Cluster)? {
            Some(doc) if doc.value.id == id && !doc.value.is_final() => {
                floe_cluster::abort_reshard(self.member.client(), self.config(), &doc, "cancelled")
                    .await
                    .map_err(Error::Cluster)
            }
            Some(doc) if doc.value.id == id => {
                Err(Error::Cluster(floe_cluster::Error::ReshardFinished {
                    id: id.to_owned(),
                }))
            }
            _ => Err(Error::Migration(floe_migration::Error::NotFound(
                id.to_owned(),
            ))),
        }
    }

    /// Waits for reshard `id` to end: once cut over, until this node routes
    /// by the new topology (so the caller's next call here sees it).
    pub(crate) async fn wait_reshard(&self, id: &str) -> Result<MigrationJob> {
        let mut changes = self.reshard.docs.subscribe();
        loop {
            changes.borrow_and_update();
            match self.reshard.current() {
                Some(doc) if doc.value.id == id => match &doc.value.phase {
                    ReshardPhase::CutOver if self.reshard.topology_revision() >= doc.revision => {
                        return job_of(&doc).ok_or_else(|| {
                            Error::Config(format!("reshard {id}: its record cannot be read"))
                        });
                    }
                    ReshardPhase::Aborted { reason } => {
                        return Err(Error::ReshardAborted {
                            id: id.to_owned(),
                            reason: reason.clone(),
                        });
                    }
                    _ => {}
                },
                Some(doc) if !doc.value.is_final() => {
                    return Err(Error::Cluster(floe_cluster::Error::ReshardRunning {
                        id: doc.value.id,
                    }));
                }
                Some(_) => {
                    return Err(Error::Migration(floe_migration::Error::NotFound(
                        id.to_owned(),
                    )));
                }
                None => {}
            }
            // The adoption is this node's restore loop's: poll for it too.
            let _ = tokio::time::timeout(self.config().handover_poll(), changes.changed()).await;
        }
    }
}
