//! `GET /api/v1/cluster`: the shard map a client routes by (viewer, not
//! audited: clients read it whenever their cached copy goes stale).
//!
//! The map names every node, which node owns each shard under which owner
//! epoch, and the topology the shards come from, so that a client computes a
//! key's shard itself and sends the call straight to its owner. A single
//! `floe serve` is a cluster of one: the node `local` owns every shard with
//! owner epoch 0, at the address it listens on. The shape is documented in
//! `docs/client.md`; the `floe-client` crate reads it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json as AxumJson, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::errors::ApiError;
use super::routes::{guarded, policy};
use crate::{ClusterNode, Topology};

/// The node id of a single `floe serve`.
pub(crate) const LOCAL_NODE_ID: &str = "local";

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/v1/cluster",
            guarded(state, policy::data_read("cluster.map"), get(cluster_map)),
        )
        .route(
            "/api/v1/cluster/nodes/{node}/drain",
            guarded(state, policy::admin("cluster.drain"), post(drain))
                .merge(guarded(
                    state,
                    policy::admin("cluster.undrain"),
                    delete(undrain),
                ))
                .merge(guarded(
                    state,
                    policy::control_read("cluster.drain_status"),
                    get(drain_status),
                )),
        )
}

/// The cluster node of this process, or `409 cluster_unsupported`.
fn node_of(state: &AppState) -> Result<Arc<ClusterNode>, ApiError> {
    state
        .floe()?
        .cluster_node()
        .cloned()
        .ok_or_else(|| ApiError::from(crate::Error::ClusterUnsupported { what: "drain" }))
}

/// `POST /api/v1/cluster/nodes/{node}/drain`: marks the node draining (the
/// controller moves its shards off with planned handovers) and answers its
/// drain status; `drained: true` once it holds no shard. Idempotent: call it
/// again (or `GET`) to follow the drain.
async fn drain(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> Result<AxumJson<floe_cluster::DrainStatus>, ApiError> {
    let status = node_of(&state)?.drain(&node).await?;
    Ok(AxumJson(status))
}

/// `GET /api/v1/cluster/nodes/{node}/drain`: whether it drains, what it holds.
async fn drain_status(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> Result<AxumJson<floe_cluster::DrainStatus>, ApiError> {
    let status = node_of(&state)?.drain_status(&node).await?;
    Ok(AxumJson(status))
}

/// `DELETE /api/v1/cluster/nodes/{node}/drain`: takes the mark off.
async fn undrain(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> Result<AxumJson<serde_json::Value>, ApiError> {
    node_of(&state)?.undrain(&node).await?;
    Ok(AxumJson(
        serde_json::json!({ "node_id": node, "draining": false }),
    ))
}

/// The answer of `GET /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterMap {
    pub(crate) mode: Mode,
    /// `None` in single-node mode.
    pub(crate) cluster_id: Option<String>,
    /// The node that answered.
    pub(crate) node_id: String,
    /// Single node: one more at every change of the routing table (a
    /// topology change, a migration starting or ending). Cluster: the largest
    /// owner epoch of any grant (an etcd revision, larger at every ownership
    /// change). A client compares it to see whether its copy is current.
    pub(crate) routing_epoch: u64,
    /// The document `GET /api/v1/topology` returns.
    pub(crate) topology: Topology,
    pub(crate) nodes: Vec<NodeEntry>,
    /// One entry per shard of the topology, in shard order.
    pub(crate) shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    Single,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeEntry {
    pub(crate) node_id: String,
    /// Where clients reach the node: `http://host:port`.
    pub(crate) advertised_addr: String,
    pub(crate) live: bool,
    /// Whether it runs the placement controller.
    pub(crate) leader: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardEntry {
    pub(crate) shard: u32,
    pub(crate) node_id: String,
    /// The epoch of the owner's grant; 0 on a single node.
    pub(crate) owner_epoch: u64,
    pub(crate) state: ShardState,
    /// Cluster mode: the owner's `http://host:port` while it is live with
    /// its grant's lease (absent on a single node: clients use the address
    /// they were given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShardState {
    /// The owner acknowledges writes.
    Serving,
    /// The owner is rebuilding it (lake + pipeline tail); calls wait.
    Restoring,
    /// No live owner yet.
    Waiting,
}

impl ClusterMap {
    /// The map of a single node: `node_id` owns every shard of `topology`.
    pub(crate) fn single(
        node_id: &str,
        advertised_addr: String,
        routing_epoch: u64,
        topology: Topology,
    ) -> ClusterMap {
        let shards = (0..topology.shard_count)
            .map(|shard| ShardEntry {
                shard,
                node_id: node_id.to_string(),
                owner_epoch: 0,
                state: ShardState::Serving,
                addr: None,
            })
            .collect();
        ClusterMap {
            mode: Mode::Single,
            cluster_id: None,
            node_id: node_id.to_string(),
            routing_epoch,
            topology,
            nodes: vec![NodeEntry {
                node_id: node_id.to_string(),
                advertised_addr,
                live: true,
                leader: true,
            }],
            shards,
        }
    }
}

impl ClusterMap {
    /// The map of a cluster node, from what it follows in etcd.
    pub(crate) fn cluster(node: &ClusterNode, topology: Topology) -> ClusterMap {
        let view = node.routing_view(topology.shard_count);
        let http = |addr: &str| format!("http://{addr}");
        ClusterMap {
            mode: Mode::Cluster,
            cluster_id: Some(node.config().cluster_id.clone()),
            node_id: node.record().node_id.clone(),
            routing_epoch: view.epoch,
            topology,
            nodes: view
                .nodes
                .into_iter()
                .map(|n| NodeEntry {
                    advertised_addr: if n.advertised_addr.is_empty() {
                        String::new()
                    } else {
                        http(&n.advertised_addr)
                    },
                    node_id: n.node_id,
                    live: n.live,
                    leader: n.leader,
                })
                .collect(),
            shards: view
                .shards
                .into_iter()
                .map(|s| ShardEntry {
                    shard: s.shard,
                    node_id: s.owner.unwrap_or_default(),
                    owner_epoch: s.epoch,
                    state: match s.state {
                        floe_cluster::RouteState::Serving => ShardState::Serving,
                        floe_cluster::RouteState::Restoring => ShardState::Restoring,
                        floe_cluster::RouteState::Waiting => ShardState::Waiting,
                    },
                    addr: s.addr.as_deref().map(http),
                })
                .collect(),
        }
    }
}

/// `http://host:port` for a listen address. A wildcard address (`0.0.0.0`,
/// `::`) names no host a client can dial: loopback stands in for it, which
/// reaches the node from its own machine (clients of a single node use the
/// address they were given; see docs/client.md).
pub(crate) fn advertised_addr(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

async fn cluster_map(State(state): State<Arc<AppState>>) -> Result<AxumJson<ClusterMap>, ApiError> {
    // The router and the epoch come from one routing table, so the map never
    // pairs a topology with another table's epoch.
    let floe = state.floe()?;
    let routing = floe.routing();
    if let Some(node) = floe.cluster_node() {
        return Ok(AxumJson(ClusterMap::cluster(
            node,
            routing.router().topology().clone(),
        )));
    }
    Ok(AxumJson(ClusterMap::single(
        LOCAL_NODE_ID,
        advertised_addr(state.listen),
        routing.epoch(),
        routing.router().topology().clone(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::{HashFunction, Strategy};
    use serde_json::json;

    #[test]
    fn a_single_node_owns_every_shard_at_epoch_zero() {
        let topology = Topology::new(3, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
        let map = ClusterMap::single("local", "http://127.0.0.1:8080".into(), 7, topology.clone());
        let value = serde_json::to_value(&map).unwrap();
        assert_eq!(value["mode"], json!("single"));
        assert_eq!(value["cluster_id"], json!(null));
        assert_eq!(value["routing_epoch"], json!(7));
        assert_eq!(value["topology"], serde_json::to_value(&topology).unwrap());
        assert_eq!(
            value["nodes"],
            json!([{"node_id": "local", "advertised_addr": "http://127.0.0.1:8080", "live": true, "leader": true}])
        );
        assert_eq!(
            value["shards"][2],
            json!({"shard": 2, "node_id": "local", "owner_epoch": 0, "state": "serving"})
        );
        assert_eq!(value["shards"].as_array().unwrap().len(), 3);
        let back: ClusterMap = serde_json::from_value(value).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn wildcard_listen_addresses_advertise_loopback() {
        let at = |s: &str| advertised_addr(s.parse().unwrap());
        assert_eq!(at("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(at("[::]:9000"), "http://[::1]:9000");
        assert_eq!(at("10.1.2.3:81"), "http://10.1.2.3:81");
    }
}
