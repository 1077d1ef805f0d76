//! Shard-count migrations in cluster mode ("reshards"): a change of the topology
//! document, made while every node holds its writes.
//!
//! A reshard replaces the topology (more or fewer shards, moved keys or ranges) at one
//! etcd revision, without a live copy between nodes: every shard of the new topology is
//! restored from the lake and the pipeline, as after a failover. The steps:
//!
//! 1. A node asks: it stores the request (`docs/reshard`, phase [`ReshardPhase::Pausing`])
//!    in a transaction that also checks the topology document is still the one it
//!    planned against and that no other reshard is pausing: one reshard at a time,
//!    cluster-wide.
//! 2. Every node that sees the request stops acknowledging writes on every shard, waits
//!    for its writes in flight (durable or failed), then records `paused/<node>` under
//!    its lease.
//! 3. The leader, once every live node has paused (a node that died stops counting when
//!    etcd expires its lease, by which time it has stopped acknowledging on its own
//!    clock), commits the cutover in one transaction fenced by its term: the topology
//!    document becomes the target, every ownership grant, release, handover intent,
//!    ready record and pause record is deleted, and the request turns
//!    [`ReshardPhase::CutOver`]. Then it places the new shards as usual.
//! 4. A node that sees the cutover (or a topology newer than its own) routes by the new
//!    topology with fresh, empty shards, and serves a shard only under a grant written
//!    after the cutover (epoch above its revision), restored from history read after
//!    that grant became active: so after every old owner stopped.
//!
//! A request whose nodes do not all pause within its timeout, or that is cancelled,
//! turns [`ReshardPhase::Aborted`] instead; nodes resume on the old topology, whose
//! state they never left. The request document stays as the record of the last
//! reshard.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::docs::{EtcdDocStore, Versioned};
use crate::error::{Error, Result};
use crate::grants::Controller;
use crate::keys::Keys;
use crate::membership::NodeRecord;
use crate::watch::{Entry, list, timed};

/// The name of the topology document (`docs/topology`).
pub const TOPOLOGY_DOC: &str = "topology";
/// The name of the reshard request document (`docs/reshard`).
pub const RESHARD_DOC: &str = "reshard";

/// Where a reshard is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ReshardPhase {
    /// Nodes are stopping their writes; the old topology is in force.
    Pausing,
    /// The target topology is in force since the revision of this document.
    CutOver,
    /// Given up before the cutover; the old topology stays in force.
    Aborted {
        /// Why.
        reason: String,
    },
}

/// A reshard request and its outcome, the document `docs/reshard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reshard {
    /// The migration's id.
    pub id: String,
    /// The node that asked.
    pub requested_by: String,
    /// The revision of the topology document it was planned against.
    pub base_revision: i64,
    /// Shards of the topology in force before.
    pub base_shard_count: u32,
    /// Shards of the target topology.
    pub shard_count: u32,
    /// The topology document to store at the cutover (opaque to this crate).
    pub target: serde_json::Value,
    /// Where it is.
    pub phase: ReshardPhase,
    /// When it was asked for, ms since the Unix epoch.
    pub requested_at_ms: u64,
    /// When it was cut over or aborted.
    pub finished_at_ms: Option<u64>,
    /// How long the leader waits for every node to pause before it aborts.
    pub pause_timeout_ms: u64,
    /// The asking node's record of the migration (opaque to this crate).
    #[serde(default)]
    pub record: serde_json::Value,
}

impl Reshard {
    /// Whether it is over (cut over or aborted).
    pub fn is_final(&self) -> bool {
        !matches!(self.phase, ReshardPhase::Pausing)
    }

    /// The shard count in force once the document is in its phase: the target's
    /// after the cutover, the base's otherwise.
    pub fn shard_count_in_force(&self) -> u32 {
        match self.phase {
            ReshardPhase::CutOver => self.shard_count,
            _ => self.base_shard_count,
        }
    }
}

/// What the leader's look at the reshard document found ([`Controller::step_reshard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReshardStep {
    /// No reshard is pausing: place `shard_count` shards (`None`: no reshard was ever
    /// made, the caller's count holds).
    Idle {
        /// The shard count in force by the last reshard.
        shard_count: Option<u32>,
    },
    /// Nodes are still pausing: place nothing.
    Waiting {
        /// Live nodes that have not paused yet.
        nodes: Vec<String>,
    },
    /// The cutover was committed just now.
    CutOver {
        /// The new shard count.
        shard_count: u32,
        /// The revision it took effect at.
        revision: i64,
    },
    /// The reshard was aborted just now.
    Aborted {
        /// Why.
        reason: String,
        /// The shard count in force (the old one).
        shard_count: u32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct PausedValue {
    id: String,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The reshard document's store (for [`EtcdDocStore::watch`] and loads).
pub fn reshard_store(client: &Client, config: &ClusterConfig) -> EtcdDocStore<Reshard> {
    EtcdDocStore::new(client, config, RESHARD_DOC)
}

/// Stores a new reshard request (its phase must be [`ReshardPhase::Pausing`]) if the
/// topology document is still at `request.base_revision` and no other reshard is
/// pausing. Returns the request's revision. Refused with [`Error::ReshardRunning`]
/// while another pauses, [`Error::TopologyMoved`] when the topology changed since the
/// plan (plan again).
pub async fn request_reshard(
    client: &Client,
    config: &ClusterConfig,
    request: &Reshard,
) -> Result<i64> {
    let store = reshard_store(client, config);
    let keys = config.keys();
    let topology_key = keys.doc(TOPOLOGY_DOC);
    let current = store.load_versioned().await?;
    if let Some(doc) = &current
        && !doc.value.is_final()
    {
        return Err(Error::ReshardRunning {
            id: doc.value.id.clone(),
        });
    }
    let bytes = encode(store.key(), request)?;
    let reshard_cmp = match &current {
        None => Compare::create_revision(store.key(), CompareOp::Equal, 0),
        Some(doc) => Compare::mod_revision(store.key(), CompareOp::Equal, doc.revision),
    };
    let txn = Txn::new()
        .when([
            reshard_cmp,
            Compare::mod_revision(
                topology_key.as_str(),
                CompareOp::Equal,
                request.base_revision,
            ),
        ])
        .and_then([TxnOp::put(store.key(), bytes, None)])
        .or_else([
            TxnOp::get(store.key(), None),
            TxnOp::get(topology_key.as_str(), None),
        ]);
    let mut c = client.clone();
    let resp = timed("request reshard", config.etcd_timeout(), c.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(resp.header().map_or(0, |h| h.revision()));
    }
    let found = got(&resp);
    let topology_revision = found
        .get(1)
        .and_then(|e| e.as_ref())
        .map(|e| e.mod_revision);
    if topology_revision != Some(request.base_revision) {
        return Err(Error::TopologyMoved {
            planned: request.base_revision,
            found: topology_revision,
        });
    }
    // Another request was stored between the load and the transaction.
    let running = found
        .first()
        .and_then(|e| e.as_ref())
        .and_then(|e| serde_json::from_slice::<Reshard>(&e.value).ok())
        .map_or_else(|| "?".to_owned(), |r| r.id);
    Err(Error::ReshardRunning { id: running })
}

/// Records that `node` stopped acknowledging writes for reshard `id`; the record dies
/// with the node's lease.
pub async fn record_paused(
    client: &Client,
    config: &ClusterConfig,
    node: &NodeRecord,
    id: &str,
) -> Result<()> {
    let key = config.keys().paused_node(&node.node_id);
    let value =
        serde_json::to_vec(&PausedValue { id: id.to_owned() }).map_err(|e| Error::Corrupt {
            key: key.clone(),
            reason: format!("the pause record does not serialize: {e}"),
        })?;
    let mut c = client.clone();
    timed(
        "record paused",
        config.etcd_timeout(),
        c.put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(node.lease_id)),
        ),
    )
    .await?;
    Ok(())
}

/// Node -> the reshard it has paused for.
pub async fn paused_nodes(
    client: &Client,
    config: &ClusterConfig,
) -> Result<BTreeMap<String, String>> {
    let keys = config.keys();
    let prefix = keys.paused();
    let snapshot = list(&mut client.clone(), &prefix, true, config.etcd_timeout()).await?;
    Ok(snapshot
        .entries
        .iter()
        .filter_map(|(k, e)| {
            let node = Keys::tail(&prefix, k)?;
            let value: PausedValue = serde_json::from_slice(&e.value).ok()?;
            Some((node.to_owned(), value.id))
        })
        .collect())
}

/// Turns the pausing reshard `doc` into [`ReshardPhase::Aborted`] (a cancel, or the
/// leader giving up), if it has not changed since it was read; the pause records go
/// with it. [`Error::Conflict`] when it changed (cut over, or aborted by another).
pub async fn abort_reshard(
    client: &Client,
    config: &ClusterConfig,
    doc: &Versioned<Reshard>,
    reason: &str,
) -> Result<()> {
    let store = reshard_store(client, config);
    let mut aborted = doc.value.clone();
    aborted.phase = ReshardPhase::Aborted {
        reason: reason.to_owned(),
    };
    aborted.finished_at_ms = Some(now_ms());
    let bytes = encode(store.key(), &aborted)?;
    let txn = Txn::new()
        .when([Compare::mod_revision(
            store.key(),
            CompareOp::Equal,
            doc.revision,
        )])
        .and_then([
            TxnOp::put(store.key(), bytes, None),
            TxnOp::delete(
                config.keys().paused(),
                Some(DeleteOptions::new().with_prefix()),
            ),
        ])
        .or_else([TxnOp::get(store.key(), None)]);
    let mut c = client.clone();
    let resp = timed("abort reshard", config.etcd_timeout(), c.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(());
    }
    Err(Error::Conflict {
        key: store.key().to_owned(),
        expected: Some(doc.revision),
        found: got(&resp)
            .first()
            .and_then(|e| e.as_ref())
            .map(|e| e.mod_revision),
    })
}

impl Controller {
    /// The leader's step of a reshard, run before each placement: while one is pausing,
    /// cut it over once every node in `live` has paused, or abort it once its pause
    /// timeout has passed. Says how many shards to place (and whether to place at all).
    pub async fn step_reshard(&self, live: &BTreeMap<String, NodeRecord>) -> Result<ReshardStep> {
        let store = reshard_store(&self.client, &self.config);
        let Some(doc) = store.load_versioned().await? else {
            return Ok(ReshardStep::Idle { shard_count: None });
        };
        if doc.value.is_final() {
            return Ok(ReshardStep::Idle {
                shard_count: Some(doc.value.shard_count_in_force()),
            });
        }
        let paused = paused_nodes(&self.client, &self.config).await?;
        let waiting: Vec<String> = live
            .keys()
            .filter(|n| paused.get(*n) != Some(&doc.value.id))
            .cloned()
            .collect();
        if waiting.is_empty() {
            let revision = self.cut_over(&doc).await?;
            return Ok(ReshardStep::CutOver {
                shard_count: doc.value.shard_count,
                revision,
            });
        }
        let waited = now_ms().saturating_sub(doc.value.requested_at_ms);
        if waited > doc.value.pause_timeout_ms {
            let reason = format!(
                "nodes {waiting:?} did not stop their writes within {} ms",
                doc.value.pause_timeout_ms
            );
            abort_reshard(&self.client, &self.config, &doc, &reason).await?;
            return Ok(ReshardStep::Aborted {
                reason,
                shard_count: doc.value.base_shard_count,
            });
        }
        Ok(ReshardStep::Waiting { nodes: waiting })
    }

    /// Commits the cutover of the pausing reshard `doc` (every node has paused): the
    /// target becomes the topology document and every grant, release, intent, ready and
    /// pause record goes, in one transaction fenced by the term, the topology's
    /// revision and the request's. Returns the cutover's revision.
    pub async fn cut_over(&self, doc: &Versioned<Reshard>) -> Result<i64> {
        if doc.value.is_final() {
            return Err(Error::ReshardFinished {
                id: doc.value.id.clone(),
            });
        }
        let keys = &self.keys;
        let store = reshard_store(&self.client, &self.config);
        let topology_key = keys.doc(TOPOLOGY_DOC);
        let leader_key = keys.leader();
        let target = encode(&topology_key, &doc.value.target)?;
        let mut cut = doc.value.clone();
        cut.phase = ReshardPhase::CutOver;
        cut.finished_at_ms = Some(now_ms());
        let cut = encode(store.key(), &cut)?;
        let prefix = || Some(DeleteOptions::new().with_prefix());
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader_key.as_str(), CompareOp::Equal, self.term.term),
                Compare::mod_revision(
                    topology_key.as_str(),
                    CompareOp::Equal,
                    doc.value.base_revision,
                ),
                Compare::mod_revision(store.key(), CompareOp::Equal, doc.revision),
            ])
            .and_then([
                TxnOp::put(topology_key.as_str(), target, None),
                TxnOp::delete(keys.shards(), prefix()),
                TxnOp::delete(keys.releases(), prefix()),
                TxnOp::delete(keys.handovers(), prefix()),
                TxnOp::delete(keys.readies(), prefix()),
                TxnOp::delete(keys.paused(), prefix()),
                TxnOp::put(store.key(), cut, None),
            ])
            .or_else([
                TxnOp::get(leader_key.as_str(), None),
                TxnOp::get(topology_key.as_str(), None),
                TxnOp::get(store.key(), None),
            ]);
        let mut c = self.client.clone();
        let resp = timed("cut over reshard", self.config.etcd_timeout(), c.txn(txn)).await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            tracing::info!(
                id = %doc.value.id,
                shards = doc.value.shard_count,
                revision,
                "reshard cut over: the new topology is in force"
            );
            return Ok(revision);
        }
        let found = got(&resp);
        let revision_of = |i: usize| found.get(i).and_then(|e| e.as_ref());
        if revision_of(0).map(|e| e.create_revision) != Some(self.term.term) {
            return Err(Error::NotLeader {
                node_id: self.term.node_id.clone(),
                term: self.term.term,
            });
        }
        let topology = revision_of(1).map(|e| e.mod_revision);
        if topology != Some(doc.value.base_revision) {
            return Err(Error::TopologyMoved {
                planned: doc.value.base_revision,
                found: topology,
            });
        }
        Err(Error::Conflict {
            key: store.key().to_owned(),
            expected: Some(doc.revision),
            found: revision_of(2).map(|e| e.mod_revision),
        })
    }
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: format!("the document does not serialize: {e}"),
    })
}

/// The first key of each `get` of a failed transaction's else branch.
fn got(resp: &etcd_client::TxnResponse) -> Vec<Option<Entry>> {
    resp.op_responses()
        .into_iter()
        .map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(Entry::from),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reshard(phase: ReshardPhase) -> Reshard {
        Reshard {
            id: "m-1".into(),
            requested_by: "n1".into(),
            base_revision: 7,
            base_shard_count: 4,
            shard_count: 6,
            target: serde_json::json!({"shard_count": 6}),
            phase,
            requested_at_ms: 1,
            finished_at_ms: None,
            pause_timeout_ms: 1000,
            record: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_shard_count_in_force_follows_the_phase() {
        assert_eq!(reshard(ReshardPhase::Pausing).shard_count_in_force(), 4);
        assert_eq!(reshard(ReshardPhase::CutOver).shard_count_in_force(), 6);
        let aborted = reshard(ReshardPhase::Aborted { reason: "x".into() });
        assert_eq!(aborted.shard_count_in_force(), 4);
        assert!(aborted.is_final());
        assert!(!reshard(ReshardPhase::Pausing).is_final());
    }

    #[test]
    fn the_document_round_trips_with_its_phase_tagged() {
        let doc = reshard(ReshardPhase::Aborted {
            reason: "timeout".into(),
        });
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["phase"]["state"], "aborted");
        assert_eq!(json["phase"]["reason"], "timeout");
        let back: Reshard = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
    }
}
