//! Membership: a node registers under `nodes/<node>` with a lease and keeps it alive.
//!
//! Registration is one etcd transaction, "create the node key only if absent, and only
//! if the cluster record is still the one checked", so two nodes with the same id can
//! never both be members, and a node configured for another cluster id never joins.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::lease::{LeaseClock, LeaseState};
use crate::watch::{self as mirror, Snapshot, TaskGuard, WatchTiming, timed};

/// Connects to the configured etcd endpoints. The connection is lazy and reconnects by
/// itself: a call made while etcd is down fails (retryably) and later calls succeed again.
pub async fn connect(config: &ClusterConfig) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(config.etcd_timeout())
        // HTTP/2 pings find a dead connection even when no call is in flight.
        .with_keep_alive(config.keepalive_interval(), config.etcd_timeout())
        .with_keep_alive_while_idle(true);
    Client::connect(&config.etcd_endpoints, Some(options))
        .await
        .map_err(Error::etcd("connect"))
}

/// The cluster record under `meta`, written by the first node that joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// The cluster id every node must be configured with.
    pub cluster_id: String,
    /// When the cluster was created (milliseconds since the Unix epoch, for operators).
    pub created_at_ms: u64,
}

/// What a node publishes under `nodes/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeValue {
    node_id: String,
    advertised_addr: String,
}

/// A live node as listed from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's id.
    pub node_id: String,
    /// Where its API listens.
    pub advertised_addr: String,
    /// The lease its registration is attached to: grants bind to it.
    pub lease_id: i64,
    /// etcd revision of its registration.
    pub registered_revision: i64,
}

impl NodeRecord {
    fn decode(key: &str, entry: &mirror::Entry) -> Result<NodeRecord> {
        let value: NodeValue =
            serde_json::from_slice(&entry.value).map_err(|e| Error::Corrupt {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(NodeRecord {
            node_id: value.node_id,
            advertised_addr: value.advertised_addr,
            lease_id: entry.lease,
            registered_revision: entry.create_revision,
        })
    }
}

/// Decodes the nodes of a `nodes/` snapshot, skipping (and logging) unreadable ones.
pub(crate) fn nodes_of(keys: &Keys, snapshot: &Snapshot) -> BTreeMap<String, NodeRecord> {
    let prefix = keys.nodes();
    snapshot
        .entries
        .iter()
        .filter(|(k, _)| Keys::tail(&prefix, k).is_some())
        .filter_map(|(k, e)| match NodeRecord::decode(k, e) {
            Ok(node) => Some((node.node_id.clone(), node)),
            Err(err) => {
                tracing::warn!(error = %err, "ignoring an unreadable node record");
                None
            }
        })
        .collect()
}

/// The live nodes of the cluster, now.
pub async fn live_nodes(
    client: &Client,
    config: &ClusterConfig,
) -> Result<BTreeMap<String, NodeRecord>> {
    let keys = config.keys();
    let snapshot = mirror::list(
        &mut client.clone(),
        &keys.nodes(),
        true,
        config.etcd_timeout(),
    )
    .await?;
    Ok(nodes_of(&keys, &snapshot))
}

/// The live nodes, kept current from an etcd watch.
#[derive(Debug)]
pub struct NodeWatch {
    keys: Keys,
    rx: watch::Receiver<Snapshot>,
    _task: TaskGuard,
}

impl NodeWatch {
    /// Starts watching the cluster's nodes.
    pub fn start(client: &Client, config: &ClusterConfig) -> NodeWatch {
        let keys = config.keys();
        let (rx, task) = mirror::spawn(client.clone(), keys.nodes(), true, timing(config));
        NodeWatch {
            keys,
            rx,
            _task: task,
        }
    }

    /// The live nodes as last seen.
    pub fn current(&self) -> BTreeMap<String, NodeRecord> {
        nodes_of(&self.keys, &self.rx.borrow())
    }

    /// Waits until the set of nodes changes, then returns it.
    pub async fn changed(&mut self) -> BTreeMap<String, NodeRecord> {
        // The sender lives as long as the task, which lives as long as `self`.
        let _ = self.rx.changed().await;
        self.current()
    }

    /// Waits until `pred` holds for the live nodes (or `timeout` passes) and returns them.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&BTreeMap<String, NodeRecord>) -> bool,
    ) -> Option<BTreeMap<String, NodeRecord>> {
        let keys = self.keys.clone();
        tokio::time::timeout(timeout, self.rx.wait_for(|s| pred(&nodes_of(&keys, s))))
            .await
            .ok()?
            .ok()
            .map(|s| nodes_of(&keys, &s))
    }
}

pub(crate) fn timing(config: &ClusterConfig) -> WatchTiming {
    WatchTiming {
        timeout: config.etcd_timeout(),
        retry: config.keepalive_interval().min(Duration::from_millis(500)),
        resync: config.lease_ttl(),
    }
}

/// A clonable view of this node's lease: the question every acknowledgement asks.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    lease_id: i64,
    clock: Arc<Mutex<LeaseClock>>,
}

impl LeaseHandle {
    /// The etcd lease id.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// The lease's state now (monotonic clock).
    pub fn state(&self) -> LeaseState {
        self.state_at(Instant::now())
    }

    /// The lease's state at `now`.
    pub fn state_at(&self, now: Instant) -> LeaseState {
        self.lock().state_at(now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseClock> {
        // The clock has no invariant a panicking holder could break half-way.
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// This node's membership: registered with a lease that a background task keeps alive.
///
/// Dropping a `Member` stops the keepalives without revoking the lease (as a crash
/// would): the registration disappears from etcd after the TTL. [`Member::leave`]
/// revokes it at once.
pub struct Member {
    client: Client,
    config: ClusterConfig,
    record: NodeRecord,
    lease: LeaseHandle,
    _keepalive: TaskGuard,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("record", &self.record)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// Validates `config`, checks (or creates) the cluster record, and registers this
    /// node. Refuses a node id already live ([`Error::DuplicateNode`]) and a cluster id
    /// other than the recorded one ([`Error::ClusterIdMismatch`]); nothing is left in
    /// etcd when it refuses.
    pub async fn join(client: &Client, config: &ClusterConfig) -> Result<Member> {
        config.validate()?;
        let mut client = client.clone();
        let keys = config.keys();
        let timeout = config.etcd_timeout();
        let meta_revision = ensure_meta(&mut client, config, &keys).await?;

        let sent = Instant::now();
        let ttl_secs = config.lease_ttl_secs as i64;
        let grant = timed("lease grant", timeout, client.lease_grant(ttl_secs, None)).await?;
        let lease_id = grant.id();
        let granted = Duration::from_secs(grant.ttl().max(0) as u64);
        let clock = LeaseClock::new(sent, granted, config.safety_margin());

        let node_key = keys.node(&config.node_id);
        let value = serde_json::to_vec(&NodeValue {
            node_id: config.node_id.clone(),
            advertised_addr: config.advertised_addr.clone(),
        })
        .expect("a node record serializes");
        let txn = Txn::new()
            .when([
                Compare::create_revision(node_key.as_str(), CompareOp::Equal, 0),
                Compare::mod_revision(keys.meta(), CompareOp::Equal, meta_revision),
            ])
            .and_then([TxnOp::put(
                node_key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease_id)),
            )])
            .or_else([TxnOp::get(node_key.as_str(), None)]);
        let resp = match timed("register node", timeout, client.txn(txn)).await {
            Ok(resp) => resp,
            Err(e) => {
                revoke_quietly(&mut client, lease_id, timeout).await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            revoke_quietly(&mut client, lease_id, timeout).await;
            let holder = first_kv(&resp);
            return Err(match holder {
                Some((key, entry)) => {
                    let holder = NodeRecord::decode(&key, &entry)?;
                    Error::DuplicateNode {
                        cluster_id: config.cluster_id.clone(),
                        node_id: config.node_id.clone(),
                        holder_addr: holder.advertised_addr,
                    }
                }
                None => Error::Conflict {
                    key: keys.meta(),
                    expected: Some(meta_revision),
                    found: None,
                },
            });
        }
        let registered_revision = resp.header().map_or(0, |h| h.revision());
        let lease = LeaseHandle {
            lease_id,
            clock: Arc::new(Mutex::new(clock)),
        };
        let keepalive = tokio::spawn(keep_alive(
            client.clone(),
            lease.clone(),
            config.keepalive_interval(),
            timeout,
        ));
        tracing::info!(node = %config.node_id, lease = format!("{lease_id:x}"), "joined the cluster");
        Ok(Member {
            client,
            config: config.clone(),
            record: NodeRecord {
                node_id: config.node_id.clone(),
                advertised_addr: config.advertised_addr.clone(),
                lease_id,
                registered_revision,
            },
            lease,
            _keepalive: TaskGuard(keepalive),
        })
    }

    /// This node as registered.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// The node's lease view.
    pub fn lease(&self) -> &LeaseHandle {
        &self.lease
    }

    /// The etcd client the node joined with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration the node joined with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Leaves the cluster: revokes the lease, which deletes the registration and every
    /// key attached to it (a leader key included) in one step.
    pub async fn leave(&self) -> Result<()> {
        let mut client = self.client.clone();
        // Stop acknowledging before etcd forgets us.
        self.lease.lock().lost();
        timed(
            "lease revoke",
            self.config.etcd_timeout(),
            client.lease_revoke(self.lease.lease_id),
        )
        .await?;
        Ok(())
    }
}

/// Creates the cluster record if absent; returns its revision after checking its id.
async fn ensure_meta(client: &mut Client, config: &ClusterConfig, keys: &Keys) -> Result<i64> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let meta = ClusterMeta {
        cluster_id: config.cluster_id.clone(),
        created_at_ms: now_ms,
    };
    let txn = Txn::new()
        .when([Compare::create_revision(keys.meta(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            keys.meta(),
            serde_json::to_vec(&meta).expect("meta serializes"),
            None,
        )])
        .or_else([TxnOp::get(keys.meta(), None)]);
    let resp = timed(
        "create cluster record",
        config.etcd_timeout(),
        client.txn(txn),
    )
    .await?;
    if resp.succeeded() {
        return Ok(resp.header().map_or(0, |h| h.revision()));
    }
    let (key, entry) = first_kv(&resp).ok_or_else(|| Error::Corrupt {
        key: keys.meta(),
        reason: "the cluster record vanished while being read".into(),
    })?;
    let recorded: ClusterMeta =
        serde_json::from_slice(&entry.value).map_err(|e| Error::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    if recorded.cluster_id != config.cluster_id {
        return Err(Error::ClusterIdMismatch {
            key,
            recorded: recorded.cluster_id,
            configured: config.cluster_id.clone(),
        });
    }
    Ok(entry.mod_revision)
}

/// The first key-value of the first `get` in a transaction's answer.
pub(crate) fn first_kv(resp: &etcd_client::TxnResponse) -> Option<(String, mirror::Entry)> {
    resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .and_then(|kv| Some((kv.key_str().ok()?.to_owned(), mirror::Entry::from(kv)))),
        _ => None,
    })
}

async fn revoke_quietly(client: &mut Client, lease_id: i64, timeout: Duration) {
    if let Err(e) = timed("lease revoke", timeout, client.lease_revoke(lease_id)).await {
        // The lease expires by itself after its TTL; nothing is attached to it.
        tracing::warn!(error = %e, "could not revoke an unused lease");
    }
}

/// Renews the lease every `interval` until etcd says it is gone. A failed stream is
/// reopened; meanwhile the clock runs out and the node stops acknowledging by itself.
async fn keep_alive(mut client: Client, lease: LeaseHandle, interval: Duration, timeout: Duration) {
    let id = lease.lease_id;
    loop {
        let (mut keeper, mut stream) =
            match timed("lease keepalive", timeout, client.lease_keep_alive(id)).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "opening the keepalive stream failed");
                    tokio::time::sleep(interval).await;
                    continue;
                }
            };
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(timeout, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    lease
                        .lock()
                        .renewed(sent, Duration::from_secs(resp.ttl() as u64));
                }
                Ok(Ok(Some(_))) => {
                    // TTL 0: etcd no longer knows the lease (expired or revoked).
                    lease.lock().lost();
                    tracing::warn!(
                        lease = format!("{id:x}"),
                        "the node's lease is gone from etcd"
                    );
                    return;
                }
                _ => break,
            }
            tokio::time::sleep(interval).await;
        }
        tokio::time::sleep(interval).await;
    }
}
