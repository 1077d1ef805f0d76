//! Shard ownership grants: `shards/<shard>` -> the owning node and its lease, written
//! only by the elected controller, each write a compare-and-swap.
//!
//! The **owner epoch** of a grant is the etcd revision that wrote it. Revisions only
//! grow, so every new grant of a shard has a larger epoch than all earlier ones; events
//! carry it so that replay can tell a stale owner's writes from the current owner's.
//!
//! A grant also lists the **previous owners** that may still be serving the shard (the
//! grant it replaced, and that grant's own unconfirmed predecessors). The new owner
//! serves only once each of them has released the shard (`released/<shard>/<epoch>`,
//! written by that owner after it stopped) or its lease is gone from etcd: see
//! `ownership` for the node side.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use crate::ShardId;
use crate::config::ClusterConfig;
use crate::election::LeaderTerm;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::membership::NodeRecord;
use crate::placement::{Assignment, place};
use crate::watch::{Entry, Snapshot, list, timed};

/// The etcd revision of a shard's ownership grant; larger is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerEpoch(pub u64);

impl std::fmt::Display for OwnerEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An owner that may still serve a shard until it releases it or its lease expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousOwner {
    /// The node.
    pub node_id: String,
    /// The lease its grant was bound to.
    pub lease_id: i64,
    /// The epoch of its grant.
    pub epoch: OwnerEpoch,
}

/// One shard's ownership grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The shard.
    pub shard: ShardId,
    /// The owning node.
    pub node_id: String,
    /// The owner's membership lease: the grant is void once it is gone.
    pub lease_id: i64,
    /// The revision of this grant.
    pub epoch: OwnerEpoch,
    /// Owners that may still be serving, newest first.
    pub previous: Vec<PreviousOwner>,
}

impl Grant {
    fn as_previous(&self) -> PreviousOwner {
        PreviousOwner {
            node_id: self.node_id.clone(),
            lease_id: self.lease_id,
            epoch: self.epoch,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantValue {
    node_id: String,
    lease_id: i64,
    #[serde(default)]
    previous: Vec<PreviousOwner>,
}

/// What a previous owner writes once it has stopped serving a shard at an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReleaseValue {
    pub(crate) node_id: String,
    pub(crate) lease_id: i64,
}

pub(crate) fn decode_grant(shard: ShardId, key: &str, entry: &Entry) -> Result<Grant> {
    let v: GrantValue = serde_json::from_slice(&entry.value).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Grant {
        shard,
        node_id: v.node_id,
        lease_id: v.lease_id,
        epoch: OwnerEpoch(entry.mod_revision as u64),
        previous: v.previous,
    })
}

/// Decodes the grants of a `shards/` snapshot, skipping (and logging) unreadable ones.
pub(crate) fn grants_of(keys: &Keys, snapshot: &Snapshot) -> BTreeMap<ShardId, Grant> {
    let prefix = keys.shards();
    snapshot
        .entries
        .iter()
        .filter_map(|(k, e)| {
            let shard = Keys::shard_of(&prefix, k)?;
            decode_grant(shard, k, e)
                .inspect_err(|err| tracing::warn!(error = %err, "ignoring an unreadable grant"))
                .ok()
                .map(|g| (shard, g))
        })
        .collect()
}

/// Every grant of the cluster, now.
pub async fn read_grants(
    client: &Client,
    config: &ClusterConfig,
) -> Result<BTreeMap<ShardId, Grant>> {
    let keys = config.keys();
    let snapshot = list(
        &mut client.clone(),
        &keys.shards(),
        true,
        config.etcd_timeout(),
    )
    .await?;
    Ok(grants_of(&keys, &snapshot))
}

/// Whether `owner` is confirmed to have stopped serving `shard`: it released that epoch,
/// or its lease no longer exists in etcd.
pub(crate) async fn has_let_go(
    client: &mut Client,
    keys: &Keys,
    shard: ShardId,
    owner: &PreviousOwner,
    timeout: std::time::Duration,
) -> Result<bool> {
    let key = keys.released(shard, owner.epoch);
    let resp = timed("get release", timeout, client.get(key.as_str(), None)).await?;
    if let Some(kv) = resp.kvs().first() {
        let release: ReleaseValue =
            serde_json::from_slice(kv.value()).map_err(|e| Error::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        if release.node_id == owner.node_id && release.lease_id == owner.lease_id {
            return Ok(true);
        }
    }
    let ttl = timed(
        "lease time-to-live",
        timeout,
        client.lease_time_to_live(owner.lease_id, None),
    )
    .await?;
    // -1: etcd does not know the lease (expired or revoked).
    Ok(ttl.ttl() == -1)
}

/// The elected placement controller's write side. Every write compares the leader key
/// with the controller's term, so a deposed controller writes nothing.
#[derive(Clone)]
pub struct Controller {
    pub(crate) client: Client,
    pub(crate) config: ClusterConfig,
    pub(crate) keys: Keys,
    pub(crate) term: LeaderTerm,
    /// Planned moves this controller waits on, for the handover timeout.
    pub(crate) pending: std::sync::Arc<std::sync::Mutex<BTreeMap<ShardId, PendingMove>>>,
}

/// A planned move a controller waits on: (epoch of the grant replaced, target node,
/// its lease, since when).
pub(crate) type PendingMove = (OwnerEpoch, String, i64, std::time::Instant);

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller acting under `term`.
    pub fn new(client: &Client, config: &ClusterConfig, term: LeaderTerm) -> Controller {
        Controller {
            client: client.clone(),
            keys: config.keys(),
            config: config.clone(),
            term,
            pending: Default::default(),
        }
    }

    /// The term it acts under.
    pub fn term(&self) -> &LeaderTerm {
        &self.term
    }

    /// Grants `shard` to `to`, replacing `expected` (`None`: the shard has no grant).
    /// Fails with [`Error::NotLeader`] if the term is over, [`Error::NodeNotLive`] if
    /// `to` is not registered with that lease, [`Error::Conflict`] if the grant changed.
    pub async fn grant(
        &self,
        shard: ShardId,
        to: &NodeRecord,
        expected: Option<&Grant>,
    ) -> Result<Grant> {
        let mut client = self.client.clone();
        let timeout = self.config.etcd_timeout();
        // Owners that may still serve: the grant replaced, and its predecessors not yet
        // confirmed gone (it may never have started serving, and then they still might).
        let mut previous = Vec::new();
        if let Some(g) = expected {
            for p in std::iter::once(g.as_previous()).chain(g.previous.iter().cloned()) {
                let same_owner = p.node_id == to.node_id && p.lease_id == to.lease_id;
                if same_owner || !has_let_go(&mut client, &self.keys, shard, &p, timeout).await? {
                    previous.push(p);
                }
            }
        }
        let key = self.keys.shard(shard);
        let leader_key = self.keys.leader();
        let node_key = self.keys.node(&to.node_id);
        let shard_cmp = match expected {
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Some(g) => Compare::mod_revision(key.as_str(), CompareOp::Equal, g.epoch.0 as i64),
        };
        let value = serde_json::to_vec(&GrantValue {
            node_id: to.node_id.clone(),
            lease_id: to.lease_id,
            previous: previous.clone(),
        })
        .expect("a grant serializes");
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader_key.as_str(), CompareOp::Equal, self.term.term),
                Compare::lease(node_key.as_str(), CompareOp::Equal, to.lease_id),
                shard_cmp,
            ])
            .and_then([TxnOp::put(key.as_str(), value, None)])
            .or_else([
                TxnOp::get(leader_key.as_str(), None),
                TxnOp::get(node_key.as_str(), None),
                TxnOp::get(key.as_str(), None),
            ]);
        let resp = timed("write grant", timeout, client.txn(txn)).await?;
        if resp.succeeded() {
            let epoch = resp.header().map_or(0, |h| h.revision());
            return Ok(Grant {
                shard,
                node_id: to.node_id.clone(),
                lease_id: to.lease_id,
                epoch: OwnerEpoch(epoch as u64),
                previous,
            });
        }
        let found: Vec<Option<Entry>> = resp
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(Entry::from),
                _ => None,
            })
            .collect();
        let (leader, node, grant) = match found.as_slice() {
            [l, n, g] => (l.clone(), n.clone(), g.clone()),
            _ => (None, None, None),
        };
        Err(
            if leader.map(|l| l.create_revision) != Some(self.term.term) {
                Error::NotLeader {
                    node_id: self.term.node_id.clone(),
                    term: self.term.term,
                }
            } else if node.map(|n| n.lease) != Some(to.lease_id) {
                Error::NodeNotLive {
                    node_id: to.node_id.clone(),
                    lease_id: to.lease_id,
                }
            } else {
                Error::Conflict {
                    key,
                    expected: expected.map(|g| g.epoch.0 as i64),
                    found: grant.map(|g| g.mod_revision),
                }
            },
        )
    }

    /// Computes the placement of shards `0..shard_count` over `nodes` from the current
    /// grants and writes every grant that changes. Returns the grants written.
    ///
    /// A grant whose node is live but registered under another lease (it restarted)
    /// counts as held by that node for stickiness and is rewritten with the new lease.
    pub async fn reconcile(
        &self,
        shard_count: u32,
        nodes: &BTreeMap<String, NodeRecord>,
    ) -> Result<Vec<Grant>> {
        let grants = read_grants(&self.client, &self.config).await?;
        let current: Assignment = grants
            .iter()
            .map(|(s, g)| (*s, g.node_id.clone()))
            .collect();
        let live = nodes.keys().cloned().collect();
        let target = place(0..shard_count, &live, &current);
        let mut written = Vec::new();
        for (shard, node_id) in &target {
            let to = &nodes[node_id];
            let existing = grants.get(shard);
            if existing.is_some_and(|g| g.node_id == to.node_id && g.lease_id == to.lease_id) {
                continue;
            }
            written.push(self.grant(*shard, to, existing).await?);
        }
        // Grants of shards beyond the shard count are removed (shards retired by a
        // migration, coordinated elsewhere).
        let beyond: Vec<ShardId> = grants
            .keys()
            .copied()
            .filter(|s| *s >= shard_count)
            .collect();
        if !beyond.is_empty() {
            let mut client = self.client.clone();
            let leader_key = self.keys.leader();
            let txn = Txn::new()
                .when([Compare::create_revision(
                    leader_key.as_str(),
                    CompareOp::Equal,
                    self.term.term,
                )])
                .and_then(
                    beyond
                        .iter()
                        .map(|s| TxnOp::delete(self.keys.shard(*s), None))
                        .collect::<Vec<_>>(),
                );
            let resp = timed("retire grants", self.config.etcd_timeout(), client.txn(txn)).await?;
            if !resp.succeeded() {
                return Err(Error::NotLeader {
                    node_id: self.term.node_id.clone(),
                    term: self.term.term,
                });
            }
        }
        Ok(written)
    }
}
