//! The placement controller's loop: campaign, then keep the grants placed over the
//! live nodes until the term ends, then campaign again.
//!
//! Only the elected node writes grants, and every write is fenced by its term (see
//! `grants`), so running this on every node is safe: the losers wait on the leader key.

use std::time::Duration;

use crate::election::Election;
use crate::error::{Error, Result};
use crate::grants::Controller;
use crate::lease::LeaseState;
use crate::membership::{Member, NodeWatch, timing};
use crate::reshard::ReshardStep;
use crate::watch as mirror;

/// Runs the controller for `member` over shards `0..shard_count` (or the count a later
/// reshard put in force) until the member's lease is lost (then returns
/// [`Error::LeaseLost`]). A reshard that is pausing holds placement until every live node
/// has paused, then the controller cuts it over ([`crate::Controller::step_reshard`]). On every change of the live
/// nodes, of the draining marks and of the ready records, and at least every `resync`
/// (every `handover_poll` while a planned move is under way), the leader reconciles the
/// grants with planned handovers ([`Controller::reconcile_planned`]).
pub async fn run_controller(member: &Member, shard_count: u32, resync: Duration) -> Result<()> {
    let mut shard_count = shard_count;
    let election = Election::new(member);
    let config = member.config().clone();
    let keys = config.keys();
    loop {
        let term = election.campaign().await?;
        let controller = Controller::new(member.client(), &config, term);
        let mut nodes = NodeWatch::start(member.client(), &config);
        let (mut readies, _readies_task) = mirror::spawn(
            member.client().clone(),
            keys.readies(),
            true,
            timing(&config),
        );
        let (mut draining, _draining_task) = mirror::spawn(
            member.client().clone(),
            keys.drainings(),
            true,
            timing(&config),
        );
        // A reshard request wakes the loop at once (its pause records are
        // then polled every `handover_poll`).
        let reshards = crate::reshard_store(member.client(), &config).watch();
        let mut reshard_changes = reshards.subscribe();
        // The watch lists asynchronously: wait until it shows at least this node.
        let own = config.node_id.clone();
        if nodes
            .wait_for(config.lease_ttl(), |n| n.contains_key(&own))
            .await
            .is_none()
        {
            continue;
        }
        loop {
            if member.lease().state() == LeaseState::Lost {
                return Err(Error::LeaseLost {
                    node_id: own,
                    lease_id: member.lease().lease_id(),
                });
            }
            let live = nodes.current();
            let mut next = resync;
            // A reshard in progress holds placement; once cut over, its shard count is
            // the one in force (the count this node started with may be older).
            match controller.step_reshard(&live).await {
                Ok(ReshardStep::Idle {
                    shard_count: Some(n),
                }) => shard_count = n,
                Ok(ReshardStep::Idle { shard_count: None }) => {}
                Ok(ReshardStep::Waiting { nodes }) => {
                    tracing::debug!(waiting = ?nodes, "reshard: waiting for nodes to pause");
                    tokio::time::sleep(config.handover_poll()).await;
                    continue;
                }
                Ok(ReshardStep::CutOver { shard_count: n, .. }) => shard_count = n,
                Ok(ReshardStep::Aborted {
                    reason,
                    shard_count: n,
                }) => {
                    tracing::warn!(%reason, "reshard aborted: the old topology stays");
                    shard_count = n;
                }
                Err(Error::NotLeader { .. }) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the reshard request failed; retrying");
                    tokio::time::sleep(config.handover_poll()).await;
                    continue;
                }
            }
            if !live.is_empty() {
                match controller.reconcile_planned(shard_count, &live).await {
                    Ok(done) => {
                        if !done.granted.is_empty() {
                            let moved: Vec<String> = done
                                .granted
                                .iter()
                                .map(|g| format!("{}->{}@{}", g.shard, g.node_id, g.epoch))
                                .collect();
                            tracing::info!(grants = ?moved, "placed shards");
                        }
                        if done.pending() {
                            next = config.handover_poll();
                        }
                    }
                    Err(Error::NotLeader { .. }) => break,
                    Err(e) => {
                        // A node that left between listing and granting, a lost race,
                        // etcd unreachable: try again shortly.
                        tracing::debug!(error = %e, "reconciling the grants failed; retrying");
                        tokio::time::sleep(config.handover_poll()).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = nodes.changed() => {}
                _ = readies.changed() => {}
                _ = draining.changed() => {}
                _ = reshard_changes.changed() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }
}
