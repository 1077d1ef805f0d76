//! Planned handovers and drains on this node (the rules are in
//! `floe_cluster::handover`): the barrier an old owner waits on before it
//! releases a shard, the new owner's follow-up of the leader's intents (warm
//! up, record ready, take the warm state over at cutover), and the drain a
//! stopping node runs before it leaves.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use floe_cluster::{DrainStatus, Held, OwnerEpoch, StopBarrier};
use floe_engine::ShardCluster;

use super::ClusterNode;
use super::warm::Sources;
use crate::error::{Error, Result};

/// [`StopBarrier`] over the shard workers: a shard's in-flight group commit
/// settles before its release is written (none before the cluster starts).
#[derive(Debug, Default)]
pub(super) struct ShardBarrier {
    cluster: OnceLock<Arc<ShardCluster>>,
}

impl ShardBarrier {
    pub(super) fn set(&self, cluster: Arc<ShardCluster>) {
        let _ = self.cluster.set(cluster);
    }
}

#[async_trait::async_trait]
impl StopBarrier for ShardBarrier {
    async fn stopped(&self, shard: u32) {
        if let Some(cluster) = self.cluster.get()
            && let Err(e) = cluster.quiesce(shard).await
        {
            tracing::debug!(shard, error = %e, "waiting for the shard's writes in flight");
        }
    }
}

impl ClusterNode {
    /// Follows the leader's intents: warms up what is asked of this node and
    /// records each warm shard as ready in etcd (the leader then moves it).
    pub(super) async fn follow_handovers(&self, held: &BTreeMap<u32, Held>, sources: &Sources) {
        let intents = self.handovers.current();
        let standby = self.standby_shards();
        let ready = self
            .warmer
            .sync(self.record(), &intents, held, &standby, sources);
        for intent in ready {
            let written = floe_cluster::record_ready(
                self.member.client(),
                self.config(),
                &self.record().node_id,
                self.record().lease_id,
                intent.shard,
                intent.from_epoch,
            )
            .await;
            match written {
                Ok(()) => {
                    tracing::info!(shard = intent.shard, from = %intent.from_node, "warm: ready to take the shard over");
                    self.warmer.recorded(&intent);
                }
                Err(e) => {
                    tracing::debug!(shard = intent.shard, error = %e, "recording ready failed")
                }
            }
        }
    }

    /// Serves the due shards that have a warm state: each reads the rest of
    /// the tail (to the high watermark read now, after its grant became
    /// active) and replaces the worker's state. Returns the shards left to
    /// restore in full.
    pub(super) async fn take_warm(
        &self,
        cluster: &ShardCluster,
        sources: &Sources,
        due: Vec<(u32, OwnerEpoch)>,
    ) -> Vec<(u32, OwnerEpoch)> {
        let mut cold = Vec::new();
        for (shard, epoch) in due {
            let started = Instant::now();
            match self.warmer.take(shard, epoch, sources).await {
                None => cold.push((shard, epoch)),
                Some(Err(e)) => {
                    tracing::warn!(shard, error = %e, "catching a warm shard up failed; restoring it in full");
                    cold.push((shard, epoch));
                }
                Some(Ok(state)) => {
                    if let Err(e) = cluster.restore(shard, state).await {
                        tracing::warn!(shard, error = %e, "installing a warm shard failed; restoring it in full");
                        cold.push((shard, epoch));
                        continue;
                    }
                    self.gate.mark_restored(shard, epoch);
                    tracing::info!(
                        shard,
                        epoch = %epoch,
                        catch_up_ms = started.elapsed().as_millis() as u64,
                        "took a warm shard over; serving it"
                    );
                }
            }
        }
        cold
    }

    /// Marks `node_id` draining (placement moves its shards off with planned
    /// handovers); see [`floe_cluster::drain`] for the refusals.
    pub async fn drain(&self, node_id: &str) -> Result<DrainStatus> {
        floe_cluster::drain(self.member.client(), self.config(), node_id)
            .await
            .map_err(Error::Cluster)
    }

    /// Whether `node_id` drains and which shards are still granted to it.
    pub async fn drain_status(&self, node_id: &str) -> Result<DrainStatus> {
        floe_cluster::drain_status(self.member.client(), self.config(), node_id)
            .await
            .map_err(Error::Cluster)
    }

    /// Takes the draining mark off `node_id`.
    pub async fn undrain(&self, node_id: &str) -> Result<()> {
        floe_cluster::undrain(self.member.client(), self.config(), node_id)
            .await
            .map_err(Error::Cluster)
    }

    /// Before a stopping node leaves: drains it and waits until it holds no
    /// shard and has released every one it held (so their new owners warmed
    /// up while it served), at most `cluster.drain_timeout_ms`. A node alone
    /// in the cluster, or one etcd cannot be reached for, leaves at once.
    pub async fn drain_before_leaving(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        let timeout = self.config().drain_timeout();
        let started = Instant::now();
        let me = self.record().node_id.clone();
        match self.drain(&me).await {
            Ok(_) => {}
            Err(Error::Cluster(floe_cluster::Error::LastLiveNode { .. })) => {
                tracing::info!("the last live node leaves without a drain");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "draining before leaving failed; leaving at once");
                return;
            }
        }
        tracing::info!(
            timeout_ms = timeout.as_millis() as u64,
            "draining: waiting for this node's shards to move off"
        );
        loop {
            let held = self.ownership.held();
            if held.is_empty() && !self.ownership.releases_pending() {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "drained: this node holds no shard"
                );
                return;
            }
            if started.elapsed() >= timeout || self.lease_lost() {
                tracing::warn!(
                    shards = ?held.keys().collect::<Vec<_>>(),
                    "the drain did not finish within cluster.drain_timeout_ms; leaving anyway"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
