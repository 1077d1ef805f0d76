//! The controller's reconcile with planned handovers: a shard whose owner is live moves
//! only once its new owner is warm (`handover`); shards without a live owner are granted
//! at once; draining nodes get nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::ShardId;
use crate::drain::read_planned;
use crate::error::{Error, Result};
use crate::grants::{Controller, Grant, read_grants};
use crate::handover::{HandoverIntent, MoveStep, move_step, placeable};
use crate::membership::NodeRecord;
use crate::placement::{Assignment, place};
use crate::watch::{list, timed};

/// What one planned reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Grants written (moves, first placements, failovers).
    pub granted: Vec<Grant>,
    /// Shards whose new owner was asked to warm up.
    pub proposed: Vec<ShardId>,
    /// Shards waiting for their new owner to be warm.
    pub waiting: Vec<ShardId>,
    /// Of `granted`, the planned moves granted before the target was warm (timeout).
    pub unwarmed: Vec<ShardId>,
}

impl Reconciled {
    /// Whether a planned move is still under way (the controller should look again soon).
    pub fn pending(&self) -> bool {
        !self.proposed.is_empty() || !self.waiting.is_empty()
    }
}

impl Controller {
    /// Places shards `0..shard_count` over the live `nodes` that are not draining, with
    /// planned handovers: a shard whose owner is live and must move gets an intent
    /// (`handover/<shard>`), and its grant only once the target recorded that it is warm
    /// (`ready/<shard>/<epoch>`) or `handover_timeout` passed. Every write is fenced by
    /// the term.
    pub async fn reconcile_planned(
        &self,
        shard_count: u32,
        nodes: &BTreeMap<String, NodeRecord>,
    ) -> Result<Reconciled> {
        let grants = read_grants(&self.client, &self.config).await?;
        let planned = read_planned(&self.client, &self.config).await?;
        let current: Assignment = grants
            .iter()
            .map(|(s, g)| (*s, g.node_id.clone()))
            .collect();
        let open = placeable(nodes, &planned.draining);
        let target = place(0..shard_count, &open, &current);
        let timeout = self.config.handover_timeout();
        let mut done = Reconciled::default();
        let mut withdraw: Vec<ShardId> = Vec::new();
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut still_pending = BTreeMap::new();
        for (shard, node_id) in &target {
            let to = &nodes[node_id];
            let grant = grants.get(shard);
            let owner_lease = grant
                .and_then(|g| nodes.get(&g.node_id))
                .map(|n| n.lease_id);
            let intent = planned.intents.get(shard);
            let ready = grant.and_then(|g| planned.readies.get(&(*shard, g.epoch)));
            let waited = match (grant, pending.remove(shard)) {
                (Some(g), Some((epoch, node, lease, since)))
                    if epoch == g.epoch && node == to.node_id && lease == to.lease_id =>
                {
                    still_pending.insert(*shard, (epoch, node, lease, since));
                    since.elapsed()
                }
                _ => std::time::Duration::ZERO,
            };
            match move_step(grant, to, owner_lease, intent, ready, waited, timeout) {
                MoveStep::Stay => {
                    still_pending.remove(shard);
                    if intent.is_some() {
                        withdraw.push(*shard);
                    }
                }
                MoveStep::GrantCold => {
                    still_pending.remove(shard);
                    done.granted.push(self.grant(*shard, to, grant).await?);
                    if intent.is_some() {
                        withdraw.push(*shard);
                    }
                }
                MoveStep::Propose => {
                    let g = grant.expect("a planned move has a grant");
                    self.propose(&HandoverIntent {
                        shard: *shard,
                        from_epoch: g.epoch,
                        from_node: g.node_id.clone(),
                        to_node: to.node_id.clone(),
                        to_lease: to.lease_id,
                    })
                    .await?;
                    still_pending.insert(
                        *shard,
                        (g.epoch, to.node_id.clone(), to.lease_id, Instant::now()),
                    );
                    done.proposed.push(*shard);
                }
                MoveStep::Wait => {
                    let g = grant.expect("a planned move has a grant");
                    still_pending.entry(*shard).or_insert((
                        g.epoch,
                        to.node_id.clone(),
                        to.lease_id,
                        Instant::now(),
                    ));
                    done.waiting.push(*shard);
                }
                step @ (MoveStep::Cutover | MoveStep::CutoverUnwarmed) => {
                    still_pending.remove(shard);
                    let written = self.grant(*shard, to, grant).await?;
                    if step == MoveStep::CutoverUnwarmed {
                        tracing::warn!(
                            shard,
                            to = %to.node_id,
                            waited_ms = waited.as_millis() as u64,
                            "the new owner did not warm up within handover_timeout_ms; moving the shard anyway"
                        );
                        done.unwarmed.push(*shard);
                    }
                    done.granted.push(written);
                    withdraw.push(*shard);
                }
            }
        }
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = still_pending;
        // Intents of shards beyond the shard count go too.
        withdraw.extend(planned.intents.keys().filter(|s| **s >= shard_count));
        let mut deletes: Vec<TxnOp> = withdraw
            .iter()
            .map(|s| TxnOp::delete(self.keys.handover(*s), None))
            .collect();
        deletes.extend(self.prunable(&planned.readies).await?);
        if !deletes.is_empty() {
            self.fenced("withdraw handovers", deletes).await?;
        }
        Ok(done)
    }

    /// Writes (or replaces) a shard's intent.
    async fn propose(&self, intent: &HandoverIntent) -> Result<()> {
        let value = serde_json::to_vec(intent).expect("an intent serializes");
        self.fenced(
            "propose handover",
            vec![TxnOp::put(self.keys.handover(intent.shard), value, None)],
        )
        .await?;
        tracing::info!(
            shard = intent.shard,
            from = %intent.from_node,
            to = %intent.to_node,
            "asked the new owner to warm the shard up"
        );
        Ok(())
    }

    /// Records nobody needs any more: ready records of grants since replaced, and
    /// release records of epochs no grant lists (a grant only ever lists its
    /// predecessor and that one's unconfirmed previous owners, so these are never read
    /// again). Safety never depends on a record's absence: a missing release only makes
    /// a new owner wait for the old lease instead.
    async fn prunable(
        &self,
        readies: &BTreeMap<(ShardId, crate::grants::OwnerEpoch), crate::handover::ReadyRecord>,
    ) -> Result<Vec<TxnOp>> {
        let grants = read_grants(&self.client, &self.config).await?;
        let mut ops = Vec::new();
        for (shard, epoch) in readies.keys() {
            if grants.get(shard).is_none_or(|g| g.epoch != *epoch) {
                ops.push(TxnOp::delete(self.keys.ready(*shard, *epoch), None));
            }
        }
        let mut client = self.client.clone();
        let released = list(
            &mut client,
            &self.keys.releases(),
            true,
            self.config.etcd_timeout(),
        )
        .await?;
        let listed: BTreeSet<(ShardId, u64)> = grants
            .values()
            .flat_map(|g| {
                std::iter::once((g.shard, g.epoch.0))
                    .chain(g.previous.iter().map(move |p| (g.shard, p.epoch.0)))
            })
            .collect();
        let prefix = self.keys.releases();
        for key in released.entries.keys() {
            let Some((shard, epoch)) = key.strip_prefix(&prefix).and_then(|t| t.split_once('/'))
            else {
                continue;
            };
            let (Ok(shard), Ok(epoch)) = (shard.parse::<ShardId>(), epoch.parse::<u64>()) else {
                continue;
            };
            if !listed.contains(&(shard, epoch)) {
                ops.push(TxnOp::delete(key.as_str(), None));
            }
        }
        // One transaction stays small.
        ops.truncate(64);
        Ok(ops)
    }

    /// Runs `ops` only while this controller's term holds.
    async fn fenced(&self, op: &'static str, ops: Vec<TxnOp>) -> Result<()> {
        let leader_key = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.as_str(),
                CompareOp::Equal,
                self.term.term,
            )])
            .and_then(ops);
        let mut client = self.client.clone();
        let resp = timed(op, self.config.etcd_timeout(), client.txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(Error::NotLeader {
                node_id: self.term.node_id.clone(),
                term: self.term.term,
            })
        }
    }
}
