//! The one error type of the crate.

use std::time::Duration;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while coordinating a floe cluster.
///
/// Configuration variants come out of [`crate::ClusterConfig::validate`] before anything
/// touches etcd. [`Error::is_retryable`] tells the caller whether the same call may
/// succeed later (etcd unreachable, a lost race) or never will as given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier in the configuration is empty, too long or has a character
    /// that cannot appear in an etcd key segment.
    #[error("cluster config: {field} {value:?} is invalid: {reason}")]
    InvalidId {
        /// `cluster_id` or `node_id`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No etcd endpoint, or one that is not an `http://host:port` URL.
    #[error("cluster config: etcd endpoint {endpoint:?} is invalid: {reason}")]
    InvalidEndpoint {
        /// The endpoint given (empty when the list is empty).
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The advertised address is not `host:port`.
    #[error("cluster config: advertised address {addr:?} is not host:port")]
    InvalidAdvertisedAddr {
        /// The address given.
        addr: String,
    },
    /// The etcd key prefix does not start with `/` or ends with one.
    #[error("cluster config: etcd prefix {prefix:?} must start with '/' and not end with one")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// A duration in the configuration is zero, or the lease TTL is not whole seconds.
    #[error("cluster config: {field} = {value:?} is invalid: {reason}")]
    InvalidDuration {
        /// The field name.
        field: &'static str,
        /// The value given.
        value: Duration,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The lease TTL leaves no room for the safety margin and a missed keepalive.
    #[error(
        "cluster config: lease_ttl {ttl:?} is too short: the safety margin {margin:?} plus two \
         keepalive intervals of {keepalive:?} need at least {needed:?}"
    )]
    LeaseTtlTooShort {
        /// The configured TTL.
        ttl: Duration,
        /// The configured safety margin.
        margin: Duration,
        /// The configured keepalive interval.
        keepalive: Duration,
        /// The smallest TTL these allow.
        needed: Duration,
    },
    /// A pipeline write may outlive the safety margin, so a write started under a
    /// valid lease could still land after the lease expired in etcd.
    #[error(
        "cluster config: write_timeout {write_timeout:?} must be shorter than the safety margin \
         {margin:?}"
    )]
    WriteTimeoutNotUnderMargin {
        /// The configured pipeline write timeout.
        write_timeout: Duration,
        /// The configured safety margin.
        margin: Duration,
    },
    /// The cluster token (`cluster.token` or `FLOE_CLUSTER_TOKEN`) cannot be used.
    #[error("cluster config: the cluster token is invalid: {reason}")]
    InvalidClusterToken {
        /// What is wrong with it (never the token itself).
        reason: &'static str,
    },
    /// `floe serve` in cluster mode without a cluster token: nodes could not
    /// authenticate the calls they forward to each other.
    #[error(
        "cluster config: no cluster token; set cluster.token or FLOE_CLUSTER_TOKEN (the same \
         secret on every node, at least 16 characters) so nodes can forward calls to each other"
    )]
    ClusterTokenMissing,
    /// An etcd call failed (unreachable, timed out, or refused by the server).
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd call did not answer within the configured timeout.
    #[error("etcd {op} did not answer within {timeout:?}")]
    EtcdTimeout {
        /// What was being done.
        op: &'static str,
        /// The configured timeout.
        timeout: Duration,
    },
    /// A value stored in etcd is not what floe writes there.
    #[error("etcd key {key} holds a value floe cannot read: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// Another live node is registered with the same node id.
    #[error(
        "node id {node_id:?} is already registered in cluster {cluster_id:?} (by {holder_addr})"
    )]
    DuplicateNode {
        /// The cluster.
        cluster_id: String,
        /// The node id asked for.
        node_id: String,
        /// The advertised address of the node holding it.
        holder_addr: String,
    },
    /// The key prefix belongs to a cluster recorded under another id.
    #[error(
        "cluster id mismatch under {key}: the cluster there is {recorded:?}, this node is \
         configured for {configured:?}"
    )]
    ClusterIdMismatch {
        /// The meta key.
        key: String,
        /// The cluster id recorded in etcd.
        recorded: String,
        /// The cluster id in this node's configuration.
        configured: String,
    },
    /// The node's lease expired in etcd (or was revoked): it is no longer a member and
    /// must rejoin with a new lease before it may own anything.
    #[error("the lease {lease_id:x} of node {node_id:?} is gone from etcd")]
    LeaseLost {
        /// The node.
        node_id: String,
        /// Its former lease.
        lease_id: i64,
    },
    /// This node is not (or no longer) the elected placement controller.
    #[error("node {node_id:?} is not the leader of term {term}")]
    NotLeader {
        /// The node.
        node_id: String,
        /// The term it believed it held.
        term: i64,
    },
    /// A compare-and-swap lost: the key changed since the revision the caller read.
    #[error("{key} changed: expected revision {expected:?}, found {found:?}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected (`None`: expected absent).
        expected: Option<i64>,
        /// The revision found (`None`: absent).
        found: Option<i64>,
    },
    /// A grant names a node that is not registered with that lease any more.
    #[error("node {node_id:?} is not a live member with lease {lease_id:x}")]
    NodeNotLive {
        /// The node.
        node_id: String,
        /// The lease the grant would bind.
        lease_id: i64,
    },
    /// This node may not acknowledge a write on the shard.
    #[error("shard {shard} is not writable on this node: {reason}")]
    NotOwner {
        /// The shard.
        shard: crate::ShardId,
        /// Why.
        reason: crate::Refusal,
    },
    /// A drain named a node that is not a live member of the cluster.
    #[error("node {node_id:?} is not a live member of cluster {cluster_id:?} (live: {live:?})")]
    UnknownNode {
        /// The cluster.
        cluster_id: String,
        /// The node asked for.
        node_id: String,
        /// The live nodes.
        live: Vec<String>,
    },
    /// Draining this node would leave no live node to place shards on.
    #[error(
        "node {node_id:?} is the last live node that is not draining: draining it would leave \
         its shards nowhere to go (start another node first)"
    )]
    LastLiveNode {
        /// The node asked for.
        node_id: String,
    },
    /// The drained node still held shards when the wait ended.
    #[error("node {node_id:?} still holds shards {shards:?} after {waited:?} of draining")]
    DrainTimeout {
        /// The node.
        node_id: String,
        /// The shards granted to it still.
        shards: Vec<crate::ShardId>,
        /// How long was waited.
        waited: Duration,
    },
    /// A reshard (shard-count migration) is already under way in the cluster.
    #[error("reshard {id} is under way in the cluster; one runs at a time")]
    ReshardRunning {
        /// The running one.
        id: String,
    },
    /// The reshard was already cut over or aborted.
    #[error("reshard {id} is over (cut over or aborted)")]
    ReshardFinished {
        /// The reshard.
        id: String,
    },
    /// The topology document changed since the reshard was planned against it.
    #[error(
        "the cluster's topology changed since the plan (planned against revision {planned},          found {found:?}): plan again"
    )]
    TopologyMoved {
        /// The revision planned against.
        planned: i64,
        /// The revision found (`None`: no topology stored).
        found: Option<i64>,
    },
    /// The etcd harness could not start or stop etcd.
    #[error("etcd test server: {0}")]
    Harness(String),
}

impl Error {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Etcd { .. }
                | Error::EtcdTimeout { .. }
                | Error::Conflict { .. }
                | Error::NotOwner { .. }
        )
    }

    pub(crate) fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
        move |source| Error::Etcd { op, source }
    }
}
