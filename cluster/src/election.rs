//! Leader election for the placement controller: the `leader` key, created only if
//! absent and attached to the candidate's membership lease.
//!
//! The term of a leader is the revision that created its key: a new leader always has a
//! larger term than every earlier one. Every write a leader makes (grants) is a
//! transaction that also compares the leader key's creation revision with its term, so
//! a deposed leader (its lease expired, or it resigned) can no longer write anything,
//! whatever it still believes. Handover is clean: when the lease expires or the leader
//! resigns, etcd deletes the key, and the candidates watching it race to create it.
//!
//! etcd 3.4 also has an election API (`v3election`); a plain key keeps the term in the
//! same revision space as the grants and needs nothing beyond KV, lease and watch.
//!
//! The same election, on the `sink` key ([`Election::for_sink`]), picks the one node
//! that runs the lake's sink; [`Election::holds`] is its fence before every commit.

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::membership::{Member, first_kv};
use crate::watch::timed;

/// A won election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderTerm {
    /// The leader.
    pub node_id: String,
    /// The revision that created the leader key: increases with every new leader.
    pub term: i64,
    /// The leader's membership lease (the key dies with it).
    pub lease_id: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaderValue {
    node_id: String,
}

/// Campaigns for the placement controller on behalf of a member.
#[derive(Clone)]
pub struct Election {
    client: Client,
    /// The key campaigned for (`leader` or `sink`).
    key: String,
    /// What the winner does, for logs.
    role: &'static str,
    node_id: String,
    lease: crate::membership::LeaseHandle,
    timeout: std::time::Duration,
    retry: std::time::Duration,
    resync: std::time::Duration,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Election {
    /// The placement controller's election for `member`, bound to its lease.
    pub fn new(member: &Member) -> Election {
        Self::on(
            member,
            member.config().keys().leader(),
            "placement controller",
        )
    }

    /// The sink's election for `member` (the `sink` key), bound to its lease.
    pub fn for_sink(member: &Member) -> Election {
        Self::on(member, member.config().keys().sink(), "sink")
    }

    fn on(member: &Member, key: String, role: &'static str) -> Election {
        Election {
            client: member.client().clone(),
            key,
            role,
            node_id: member.record().node_id.clone(),
            lease: member.lease().clone(),
            timeout: member.config().etcd_timeout(),
            retry: member.config().keepalive_interval(),
            resync: member.config().lease_ttl(),
        }
    }

    /// Becomes leader if nobody is; `Ok(None)` when another node leads. If this node
    /// already holds the key with its current lease, returns that term.
    pub async fn try_acquire(&self) -> Result<Option<LeaderTerm>> {
        let (term, _) = self.attempt().await?;
        Ok(term)
    }

    /// Waits until this node is leader. Fails if the node's lease is lost (it is no
    /// longer a member) and retries through etcd outages.
    pub async fn campaign(&self) -> Result<LeaderTerm> {
        loop {
            if self.lease.state() == crate::LeaseState::Lost {
                return Err(Error::LeaseLost {
                    node_id: self.node_id.clone(),
                    lease_id: self.lease.lease_id(),
                });
            }
            match self.attempt().await {
                Ok((Some(term), _)) => return Ok(term),
                Ok((None, revision)) => {
                    if let Err(e) = self.wait_for_vacancy(revision).await {
                        tracing::debug!(error = %e, "watching the leader key failed");
                        tokio::time::sleep(self.retry).await;
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, "campaign attempt failed; retrying");
                    tokio::time::sleep(self.retry).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this node still holds `term` now, read from etcd: the key exists, was
    /// created by that very term under this node's lease, and the lease is valid on
    /// the node's own clock (so it stays alive in etcd for at least the safety margin
    /// after this answer).
    pub async fn holds(&self, term: &LeaderTerm) -> Result<bool> {
        if term.lease_id != self.lease.lease_id() || !self.lease.state().is_valid() {
            return Ok(false);
        }
        let mut client = self.client.clone();
        let resp = timed(
            "read election key",
            self.timeout,
            client.get(self.key.as_str(), None),
        )
        .await?;
        let held = resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == term.term && kv.lease() == term.lease_id);
        Ok(held && self.lease.state().is_valid())
    }

    /// Gives leadership up (only the term given: never a successor's).
    pub async fn resign(&self, term: &LeaderTerm) -> Result<()> {
        let key = self.key.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                term.term,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let mut client = self.client.clone();
        timed("resign", self.timeout, client.txn(txn)).await?;
        Ok(())
    }

    /// One attempt; also returns the revision it observed.
    async fn attempt(&self) -> Result<(Option<LeaderTerm>, i64)> {
        let key = self.key.clone();
        let lease_id = self.lease.lease_id();
        let value = serde_json::to_vec(&LeaderValue {
            node_id: self.node_id.clone(),
        })
        .expect("leader value serializes");
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease_id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut client = self.client.clone();
        let resp = timed("campaign", self.timeout, client.txn(txn)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            tracing::info!(node = %self.node_id, term = revision, role = self.role, "elected");
            let term = LeaderTerm {
                node_id: self.node_id.clone(),
                term: revision,
                lease_id,
            };
            return Ok((Some(term), revision));
        }
        let current = first_kv(&resp).map(|(k, e)| decode(&k, &e)).transpose()?;
        Ok(match current {
            Some(t) if t.node_id == self.node_id && t.lease_id == lease_id => (Some(t), revision),
            _ => (None, revision),
        })
    }

    /// Returns once the leader key is deleted after `revision` (or the watch ends).
    async fn wait_for_vacancy(&self, revision: i64) -> Result<()> {
        let key = self.key.clone();
        let mut client = self.client.clone();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = timed(
            "watch leader",
            self.timeout,
            client.watch(key, Some(options)),
        )
        .await?;
        loop {
            // While the leader lives this waits. A lost connection ends the stream with an
            // error; a hung one is bounded by `resync`, after which the caller tries again.
            let Ok(msg) = tokio::time::timeout(self.resync, stream.message()).await else {
                return Ok(());
            };
            let msg = msg.map_err(Error::etcd("watch leader"))?;
            let Some(resp) = msg else { return Ok(()) };
            if resp.canceled()
                || resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
            {
                return Ok(());
            }
        }
    }
}

/// The current leader, if any.
pub async fn current_leader(
    client: &Client,
    config: &crate::ClusterConfig,
) -> Result<Option<LeaderTerm>> {
    current_holder(client, config, config.keys().leader()).await
}

/// The node elected to run the sink now, if any.
pub async fn current_sink(
    client: &Client,
    config: &crate::ClusterConfig,
) -> Result<Option<LeaderTerm>> {
    current_holder(client, config, config.keys().sink()).await
}

async fn current_holder(
    client: &Client,
    config: &crate::ClusterConfig,
    key: String,
) -> Result<Option<LeaderTerm>> {
    let mut client = client.clone();
    let resp = timed(
        "get leader",
        config.etcd_timeout(),
        client.get(key.as_str(), None),
    )
    .await?;
    resp.kvs()
        .first()
        .map(|kv| decode(&key, &crate::watch::Entry::from(kv)))
        .transpose()
}

pub(crate) fn decode(key: &str, entry: &crate::watch::Entry) -> Result<LeaderTerm> {
    let value: LeaderValue = serde_json::from_slice(&entry.value).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(LeaderTerm {
        node_id: value.node_id,
        term: entry.create_revision,
        lease_id: entry.lease,
    })
}
