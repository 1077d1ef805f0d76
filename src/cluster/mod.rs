//! Cluster mode wiring: this node's membership on etcd, the placement
//! controller it campaigns for, the gate its shard workers ask before serving,
//! and the task that restores each shard granted to it before it serves it.
//!
//! The protocols live in `floe-cluster` (membership, election, grants,
//! ownership leases) and `floe-engine` (the [`OwnershipGate`] hook); this
//! module only connects them to a [`ShardCluster`] and the pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use floe_cluster::{
    ClusterConfig, EtcdDocStore, HandoverWatch, LeaderWatch, Member, NodeRecord, NodeWatch,
    OwnerEpoch, OwnershipLease, RoutingView,
};
use floe_emitter::sink::Lake;
use floe_engine::{OwnerRefusal, OwnershipGate, Pipeline, Router, ShardCluster, Topology};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

mod handover;
mod reshard;
mod sink;
mod warm;

/// This node's place in the cluster: joined (registered under a lease) and
/// following its grants. Built by [`ClusterNode::join`] before `floe serve`
/// listens, so a refused node never serves anything.
#[derive(Debug)]
pub struct ClusterNode {
    member: Member,
    ownership: OwnershipLease,
    nodes: Arc<NodeWatch>,
    leader: LeaderWatch,
    gate: Arc<Gate>,
    /// The leader's handover intents (planned moves) and this node's warm-ups.
    handovers: HandoverWatch,
    warmer: warm::Warmer,
    /// What a release waits for: the shard's in-flight writes (set at start).
    barrier: Arc<handover::ShardBarrier>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The sink's election and the sink, on a candidate (`sink.rs`).
    sink: Mutex<Option<sink::SinkSeat>>,
    /// Set once the node drains to leave: it takes no shard over any more,
    /// so it keeps no standby warm.
    leaving: AtomicBool,
    /// Reshards: the topology revision this node routes by, its pauses.
    reshard: reshard::NodeReshard,
}

impl ClusterNode {
    /// Connects to etcd and registers this node. Refuses a wrong cluster id
    /// or a node id already live ([`floe_cluster::Error::ClusterIdMismatch`],
    /// [`floe_cluster::Error::DuplicateNode`]); nothing stays registered then.
    pub async fn join(config: &ClusterConfig) -> Result<ClusterNode> {
        let client = floe_cluster::connect(config)
            .await
            .map_err(Error::Cluster)?;
        let member = Member::join(&client, config)
            .await
            .map_err(Error::Cluster)?;
        let barrier = Arc::new(handover::ShardBarrier::default());
        let ownership = OwnershipLease::start_with(&member, Some(barrier.clone()));
        let handovers = HandoverWatch::start(&client, config);
        let nodes = Arc::new(NodeWatch::start(&client, config));
        let leader = LeaderWatch::start(&client, config);
        let reshard =
            reshard::NodeReshard::new(floe_cluster::reshard_store(&client, config).watch());
        let gate = Arc::new(Gate {
            ownership: ownership.clone(),
            nodes: nodes.clone(),
            restored: Mutex::new(BTreeMap::new()),
            served: Arc::new(tokio::sync::Notify::new()),
            reshard: reshard::ReshardGate::default(),
        });
        Ok(ClusterNode {
            member,
            ownership,
            nodes,
            leader,
            gate,
            handovers,
            warmer: warm::Warmer::default(),
            barrier,
            tasks: Mutex::new(Vec::new()),
            sink: Mutex::new(None),
            leaving: AtomicBool::new(false),
            reshard,
        })
    }

    /// This node's registration.
    pub fn record(&self) -> &NodeRecord {
        self.member.record()
    }

    /// The cluster configuration it joined with.
    pub fn config(&self) -> &ClusterConfig {
        self.member.config()
    }

    /// The live nodes as last seen.
    pub fn nodes(&self) -> BTreeMap<String, NodeRecord> {
        self.nodes.current()
    }

    /// Every shard's latest grant as last seen, of the topology this node
    /// routes by: a lagging view may still show, for a moment after a
    /// reshard's cutover, grants of the topology before, whose shard ids
    /// name other keys.
    pub fn grants(&self) -> BTreeMap<u32, floe_cluster::Grant> {
        let floor = self.gate.reshard.floor();
        let mut grants = self.ownership.grants();
        grants.retain(|_, grant| grant.epoch.0 > floor);
        grants
    }

    /// The shards this node serves now (granted, handed over and restored),
    /// with their owner epochs.
    pub fn serving(&self) -> BTreeMap<u32, OwnerEpoch> {
        let held = self.ownership.held();
        let floor = self.gate.reshard.floor();
        if self.gate.reshard.paused() {
            return BTreeMap::new();
        }
        self.gate
            .restored()
            .into_iter()
            .filter(|(shard, epoch)| {
                epoch.0 > floor
                    && held
                        .get(shard)
                        .is_some_and(|h| h.active && h.grant.epoch == *epoch)
            })
            .collect()
    }

    /// The shard map as this node sees it (`GET /api/v1/cluster`): the live
    /// nodes, every shard's owner and whether it serves, from what this node
    /// follows in etcd (no etcd call).
    pub fn routing_view(&self, shard_count: u32) -> RoutingView {
        let serving = self.serving().into_keys().collect();
        let leader = self.leader.current();
        floe_cluster::routing_view(
            &self.record().node_id,
            shard_count,
            &self.nodes(),
            &self.grants(),
            &serving,
            leader.as_deref(),
        )
    }

    /// The shards this node stands by for: [`floe_cluster::standbys`] over
    /// the live nodes and the grants as last seen (no etcd call); none when
    /// `cluster.warm_standbys` is off or the node is leaving. Draining marks
    /// of other nodes are not followed here:
    /// while a node drains, a standby may be kept warm in vain (the drain's
    /// own handovers warm what actually moves).
    pub(crate) fn standby_shards(&self) -> BTreeSet<u32> {
        if !self.config().warm_standbys || self.leaving.load(Ordering::Acquire) {
            return BTreeSet::new();
        }
        let nodes: BTreeSet<String> = self.nodes().into_keys().collect();
        let current: floe_cluster::Assignment = self
            .grants()
            .into_iter()
            .map(|(shard, grant)| (shard, grant.node_id))
            .collect();
        let me = &self.record().node_id;
        floe_cluster::standbys(current.keys().copied(), &nodes, &current)
            .into_iter()
            .filter(|(_, node)| node == me)
            .map(|(shard, _)| shard)
            .collect()
    }

    /// Whether this node's lease is gone from etcd: it owns nothing and is out
    /// of the cluster until it restarts (so it forwards nothing either).
    pub fn lease_lost(&self) -> bool {
        self.member.lease().state() == floe_cluster::LeaseState::Lost
    }

    /// Woken each time a shard starts serving on this node (restored under
    /// its grant). A waiter registers (`notified().enable()`) before it
    /// checks, so a shard served in between is not missed.
    pub fn shard_served(&self) -> Arc<tokio::sync::Notify> {
        self.gate.served.clone()
    }

    /// The gate every shard worker of this node asks.
    pub(crate) fn gate(&self) -> Arc<dyn OwnershipGate> {
        self.gate.clone()
    }

    /// The topology every node routes by: the one stored in etcd, or, for
    /// the first node of a new cluster, `configured` (stored then).
    pub(crate) async fn topology(&self, configured: Topology) -> Result<Topology> {
        let store: EtcdDocStore<Topology> = EtcdDocStore::new(
            self.member.client(),
            self.config(),
            floe_cluster::TOPOLOGY_DOC,
        );
        loop {
            if let Some(doc) = store.load_versioned().await.map_err(Error::Cluster)? {
                self.reshard.set_topology_revision(doc.revision);
                self.gate.adopt(doc.revision as u64);
                if doc.value != configured {
                    tracing::info!(
                        stored = doc.value.shard_count,
                        configured = configured.shard_count,
                        "the cluster keeps the topology stored in etcd; [topology] applies only to a new cluster"
                    );
                }
                return Ok(doc.value);
            }
            match store.compare_and_swap(None, &configured).await {
                Ok(revision) => {
                    self.reshard.set_topology_revision(revision);
                    self.gate.adopt(revision as u64);
                    return Ok(configured);
                }
                // Another node created it first: read theirs.
                Err(floe_cluster::Error::Conflict { .. }) => continue,
                Err(e) => return Err(Error::Cluster(e)),
            }
        }
    }

    /// Starts the placement controller's campaign and the restore task.
    pub(crate) fn start(
        self: &Arc<Self>,
        cluster: Arc<ShardCluster>,
        pipeline: Arc<dyn Pipeline>,
        lake: Option<Lake>,
        dedup_window: usize,
    ) {
        let shard_count = cluster.topology().shard_count;
        self.barrier.set(cluster.clone());
        let node = self.clone();
        let controller = tokio::spawn(async move {
            let resync = node.config().lease_ttl();
            if let Err(e) = floe_cluster::run_controller(&node.member, shard_count, resync).await {
                tracing::error!(error = %e, "this node left the placement election");
            }
        });
        let node = self.clone();
        let pauser_cluster = cluster.clone();
        let restorer = tokio::spawn(async move {
            node.restore_loop(cluster, pipeline, lake, dedup_window)
                .await;
        });
        let node = self.clone();
        let pauser = tokio::spawn(async move { node.pause_loop(pauser_cluster).await });
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push(controller);
        tasks.push(restorer);
        tasks.push(pauser);
    }

    /// Restores every shard whose grant became active here, before it is
    /// served: its state is rebuilt from the lake and the pipeline read to
    /// its high watermark *after* the grant became active (so after the
    /// previous owner stopped acknowledging), so it holds every write the
    /// previous owner acknowledged.
    async fn restore_loop(
        &self,
        cluster: Arc<ShardCluster>,
        pipeline: Arc<dyn Pipeline>,
        lake: Option<Lake>,
        dedup_window: usize,
    ) {
        let poll = self.config().handover_poll();
        let mut changes = self.ownership.subscribe();
        let mut intents = self.handovers.subscribe();
        let mut reshards = self.reshard.docs.subscribe();
        let warmed = self.warmer.warmed();
        let mut settled = false;
        loop {
            // A reshard first: nothing is restored under a topology this node
            // is leaving, and nothing is served while it pauses.
            if let Err(e) = self.follow_reshard(&cluster).await {
                tracing::warn!(error = %e, "following the reshard failed; retrying");
                tokio::time::sleep(poll).await;
                continue;
            }
            let router = cluster.router();
            let sources = warm::Sources {
                pipeline: pipeline.clone(),
                router: router.clone(),
                lake: lake.clone(),
                dedup_window,
            };
            let floor = self.gate.reshard.floor();
            let held: BTreeMap<u32, floe_cluster::Held> = self
                .ownership
                .held()
                .into_iter()
                .filter(|(_, h)| h.grant.epoch.0 > floor)
                .collect();
            self.gate.forget_unless_held(&held);
            self.follow_handovers(&held, &sources).await;
            let restored = self.gate.restored();
            let due: Vec<(u32, OwnerEpoch)> = held
                .iter()
                .filter(|(shard, h)| h.active && restored.get(shard) != Some(&h.grant.epoch))
                .map(|(shard, h)| (*shard, h.grant.epoch))
                .collect();
            // Planned handovers first: their warm state needs only the rest of the tail.
            let due = self.take_warm(&cluster, &sources, due).await;
            // The grants of one placement round (a failover, a reshard) are
            // one transaction each: gather them, so one read of the history
            // restores them all.
            if !due.is_empty() && !settled {
                settled = true;
                settle(&mut changes).await;
                continue;
            }
            settled = false;
            if !due.is_empty()
                && let Err(e) = self
                    .restore(
                        &cluster,
                        &pipeline,
                        &router,
                        lake.as_ref(),
                        dedup_window,
                        &due,
                    )
                    .await
            {
                tracing::warn!(error = %e, "restoring granted shards failed; retrying");
                tokio::time::sleep(poll).await;
                continue;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = intents.changed() => {}
                _ = reshards.changed() => {}
                _ = warmed.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn restore(
        &self,
        cluster: &ShardCluster,
        pipeline: &Arc<dyn Pipeline>,
        router: &Arc<Router>,
        lake: Option<&Lake>,
        dedup_window: usize,
        due: &[(u32, OwnerEpoch)],
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let _reading = self.warmer.reading();
        // Only the granted shards, from the lake's snapshot and the pipeline
        // after it (`restore_shards`), read after the grants became active.
        let wanted: Vec<u32> = due.iter().map(|&(shard, _)| shard).collect();
        let (mut recovered, stats) = floe_emitter::replay::restore_shards(
            pipeline.clone(),
            router.clone(),
            &wanted,
            dedup_window,
            lake,
        )
        .await
        .map_err(Error::from)?;
        for &(shard, epoch) in due {
            let Some(slot) = recovered.remove(&shard) else {
                continue;
            };
            cluster.restore(shard, slot).await.map_err(Error::Engine)?;
            self.gate.mark_restored(shard, epoch);
            tracing::info!(
                shard,
                epoch = %epoch,
                events = stats.events,
                from_lake = stats.from_lake,
                tail_events = stats.tail_events,
                key_scan_ms = stats.key_scan_us / 1000,
                lake_ms = stats.lake_us / 1000,
                tail_ms = stats.tail_us / 1000,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "restored shard; serving it"
            );
        }
        Ok(())
    }

    /// Stops the tasks and leaves the cluster (the lease is revoked, so the
    /// controller re-places this node's shards at once instead of after the
    /// TTL). The shards must have stopped acknowledging before: the lease
    /// handle reports itself lost first.
    pub(crate) async fn leave(&self) -> Result<()> {
        self.leaving.store(true, Ordering::Release);
        // The sink lands what the stopped shards wrote while its term holds.
        self.stop_sink().await;
        self.warmer.quiesce(LEAVE_READS_WAIT).await;
        for task in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner())) {
            task.abort();
        }
        self.member.leave().await.map_err(Error::Cluster)
    }
}

/// How long a leaving node waits for the reads of the history under way.
const LEAVE_READS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the grants must stay unchanged before shards are restored: the
/// controller writes a placement round's grants a few milliseconds apart.
const GRANT_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest the restore loop waits for the grants to settle.
const GRANT_SETTLE_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// Returns once `changes` has seen no change for [`GRANT_SETTLE`] (or after
/// [`GRANT_SETTLE_MAX`], or when the ownership ended).
async fn settle(changes: &mut tokio::sync::watch::Receiver<BTreeMap<u32, floe_cluster::Held>>) {
    let until = tokio::time::Instant::now() + GRANT_SETTLE_MAX;
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(GRANT_SETTLE, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// [`OwnershipGate`] over the ownership lease: a shard is served only while
/// its grant is active here ([`OwnershipLease::may_acknowledge`]) and it has
/// been restored under that very grant.
#[derive(Debug)]
struct Gate {
    ownership: OwnershipLease,
    nodes: Arc<NodeWatch>,
    /// Shard -> the epoch of the grant it was last restored under.
    restored: Mutex<BTreeMap<u32, OwnerEpoch>>,
    /// Woken each time a shard starts serving here: calls waiting for a
    /// shard this node is taking over try again at once.
    served: Arc<tokio::sync::Notify>,
    /// Reshards: paused, and the epoch floor of the topology in force.
    reshard: reshard::ReshardGate,
}

impl Gate {
    fn restored(&self) -> BTreeMap<u32, OwnerEpoch> {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Routes by a topology that took effect at `revision`: every shard is
    /// restored again, under a grant newer than it.
    fn adopt(&self, revision: u64) {
        self.reshard
            .floor
            .store(revision, std::sync::atomic::Ordering::Release);
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn mark_restored(&self, shard: u32, epoch: OwnerEpoch) {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, epoch);
        self.served.notify_waiters();
    }

    /// A shard no longer held must be restored again if it comes back.
    fn forget_unless_held(&self, held: &BTreeMap<u32, floe_cluster::Held>) {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|shard, epoch| held.get(shard).is_some_and(|h| h.grant.epoch == *epoch));
    }

    fn refusal(&self, shard: u32, reason: String) -> OwnerRefusal {
        let owner = self.ownership.grant_of(shard).map(|g| g.node_id);
        let owner_addr = owner.as_ref().and_then(|o| {
            self.nodes
                .current()
                .get(o)
                .map(|n| n.advertised_addr.clone())
        });
        OwnerRefusal {
            reason,
            owner,
            owner_addr,
        }
    }
}

impl OwnershipGate for Gate {
    fn check(&self, shard: u32) -> std::result::Result<u64, OwnerRefusal> {
        if self.reshard.paused() {
            return Err(self.refusal(
                shard,
                "a reshard (shard-count migration) is cutting over; writes resume on the new topology".into(),
            ));
        }
        match self.ownership.may_acknowledge(shard) {
            Ok(epoch) if epoch.0 <= self.reshard.floor() => Err(self.refusal(
                shard,
                "the grant predates the topology this node routes by".into(),
            )),
            Ok(epoch) => {
                let restored = self
                    .restored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&shard)
                    .copied();
                if restored == Some(epoch) {
                    Ok(epoch.0)
                } else {
                    Err(self.refusal(
                        shard,
                        "this node is restoring the shard it was just granted".into(),
                    ))
                }
            }
            Err(floe_cluster::Error::NotOwner { reason, .. }) => {
                Err(self.refusal(shard, reason.to_string()))
            }
            Err(e) => Err(self.refusal(shard, e.to_string())),
        }
    }

    /// Serve the shard again only after restoring it: the restore reads the
    /// pipeline to its high watermark, so a write whose append outcome was
    /// unknown is then either in the state (a retry finds its idempotency
    /// key) or certainly not durable.
    fn outcome_unknown(&self, shard: u32, epoch: u64) {
        let mut restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        if restored.get(&shard).is_some_and(|e| e.0 == epoch) {
            restored.remove(&shard);
        }
    }
}
