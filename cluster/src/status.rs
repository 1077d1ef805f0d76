//! A point-in-time view of a cluster as etcd holds it, for operators
//! (`floe cluster status`) and the HTTP API.

use std::collections::BTreeMap;

use etcd_client::Client;
use serde::Serialize;

use crate::ShardId;
use crate::config::ClusterConfig;
use crate::election::{current_leader, current_sink};
use crate::error::Result;
use crate::grants::read_grants;
use crate::membership::live_nodes;

/// The cluster now: live nodes with their shards, the placement leader, the sink's node,
/// every grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The cluster id.
    pub cluster_id: String,
    /// The node leading placement, if any.
    pub leader: Option<String>,
    /// Its term (the revision that created its leader key).
    pub leader_term: Option<i64>,
    /// The node elected to run the lake's sink, if any (none while the sink's election is
    /// open, or when no node runs a sink).
    pub sink: Option<String>,
    /// Its term (the revision that created its `sink` key).
    pub sink_term: Option<i64>,
    /// Live nodes by id.
    pub nodes: BTreeMap<String, NodeStatus>,
    /// Every shard's grant.
    pub shards: Vec<ShardStatus>,
}

/// One live node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Where its API listens.
    pub advertised_addr: String,
    /// Its lease (hex), the one its grants are bound to.
    pub lease: String,
    /// The shards granted to it under that lease.
    pub shards: Vec<ShardId>,
    /// Whether it is being drained (placement puts nothing on it).
    pub draining: bool,
}

/// One shard's grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard: ShardId,
    /// The node the grant names.
    pub owner: String,
    /// The owner epoch (the grant's revision).
    pub epoch: u64,
    /// Whether the owner is live with the lease the grant names (else the grant waits to be
    /// re-placed).
    pub owner_live: bool,
    /// Previous owners it still waits for (or has not been confirmed gone).
    pub previous: Vec<String>,
}

/// Reads the cluster's state from etcd.
pub async fn status(client: &Client, config: &ClusterConfig) -> Result<ClusterStatus> {
    let nodes = live_nodes(client, config).await?;
    let grants = read_grants(client, config).await?;
    let leader = current_leader(client, config).await?;
    let sink = current_sink(client, config).await?;
    let draining = crate::drain::draining_nodes(client, config).await?;
    let mut view: BTreeMap<String, NodeStatus> = nodes
        .values()
        .map(|n| {
            (
                n.node_id.clone(),
                NodeStatus {
                    advertised_addr: n.advertised_addr.clone(),
                    lease: format!("{:x}", n.lease_id),
                    shards: Vec::new(),
                    draining: draining.contains(&n.node_id),
                },
            )
        })
        .collect();
    let mut shards = Vec::with_capacity(grants.len());
    for (shard, g) in &grants {
        let owner_live = nodes
            .get(&g.node_id)
            .is_some_and(|n| n.lease_id == g.lease_id);
        if owner_live && let Some(n) = view.get_mut(&g.node_id) {
            n.shards.push(*shard);
        }
        shards.push(ShardStatus {
            shard: *shard,
            owner: g.node_id.clone(),
            epoch: g.epoch.0,
            owner_live,
            previous: g.previous.iter().map(|p| p.node_id.clone()).collect(),
        });
    }
    Ok(ClusterStatus {
        cluster_id: config.cluster_id.clone(),
        leader: leader.as_ref().map(|l| l.node_id.clone()),
        leader_term: leader.map(|l| l.term),
        sink: sink.as_ref().map(|s| s.node_id.clone()),
        sink_term: sink.map(|s| s.term),
        nodes: view,
        shards,
    })
}
