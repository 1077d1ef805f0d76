//! The shard map a node answers `GET /api/v1/cluster` with, from what it
//! follows in etcd: the live nodes, every shard's grant, the placement
//! leader, and which shards it serves itself. [`routing_view`] is pure;
//! [`LeaderWatch`] mirrors the leader key.
//!
//! A node knows for certain only whether *it* serves a shard. For a shard
//! granted to another live node the map says `Serving`: the best a client can
//! do is send the call there, and a node still restoring answers `not_owner`
//! (retryable) until it serves.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::Client;
use tokio::sync::watch;

use crate::ShardId;
use crate::config::ClusterConfig;
use crate::election::decode;
use crate::grants::Grant;
use crate::membership::{NodeRecord, timing};
use crate::watch::{self as mirror, Snapshot, TaskGuard};

/// The placement leader, kept current from an etcd watch.
#[derive(Debug)]
pub struct LeaderWatch {
    key: String,
    rx: watch::Receiver<Snapshot>,
    _task: TaskGuard,
}

impl LeaderWatch {
    /// Starts watching the cluster's leader key.
    pub fn start(client: &Client, config: &ClusterConfig) -> LeaderWatch {
        let key = config.keys().leader();
        let (rx, task) = mirror::spawn(client.clone(), key.clone(), false, timing(config));
        LeaderWatch {
            key,
            rx,
            _task: task,
        }
    }

    /// The leader's node id as last seen.
    pub fn current(&self) -> Option<String> {
        let snapshot = self.rx.borrow();
        let entry = snapshot.entries.get(&self.key)?;
        decode(&self.key, entry).ok().map(|term| term.node_id)
    }
}

/// Whether a shard's owner serves it, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteState {
    /// Granted to a live node (this one: restored and serving).
    Serving,
    /// Granted to this node, which is restoring it or waiting for the
    /// previous owner to let go.
    Restoring,
    /// No grant, or granted to a node that is gone: being re-placed.
    Waiting,
}

/// One shard of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRoute {
    /// The shard.
    pub shard: ShardId,
    /// The node its latest grant names (`None`: never granted).
    pub owner: Option<String>,
    /// That node's advertised `host:port` while it is live with the grant's lease.
    pub addr: Option<String>,
    /// The grant's owner epoch (0 without a grant).
    pub epoch: u64,
    /// Whether it is served.
    pub state: RouteState,
}

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// The node.
    pub node_id: String,
    /// Its advertised `host:port` (empty for a node known only from a grant).
    pub advertised_addr: String,
    /// Registered in etcd under a live lease.
    pub live: bool,
    /// Runs the placement controller.
    pub leader: bool,
}

/// The map: every node known, every shard of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingView {
    /// The largest owner epoch of any grant: an etcd revision, so it grows with
    /// every ownership change anywhere (0 before the first grant). A client
    /// whose copy has a smaller one holds an older map.
    pub epoch: u64,
    /// Live nodes, then owners of grants that are gone, by id.
    pub nodes: Vec<NodeRoute>,
    /// Shards `0..shard_count`, in order.
    pub shards: Vec<ShardRoute>,
}

/// The map as node `me` sees it.
pub fn routing_view(
    me: &str,
    shard_count: u32,
    nodes: &BTreeMap<String, NodeRecord>,
    grants: &BTreeMap<ShardId, Grant>,
    serving: &BTreeSet<ShardId>,
    leader: Option<&str>,
) -> RoutingView {
    let shards: Vec<ShardRoute> = (0..shard_count)
        .map(|shard| {
            let Some(grant) = grants.get(&shard) else {
                return ShardRoute {
                    shard,
                    owner: None,
                    addr: None,
                    epoch: 0,
                    state: RouteState::Waiting,
                };
            };
            // The grant is void once its lease is gone, even if the node has
            // come back under a new one.
            let live = nodes
                .get(&grant.node_id)
                .filter(|n| n.lease_id == grant.lease_id);
            let state = match live {
                None => RouteState::Waiting,
                Some(_) if grant.node_id != me => RouteState::Serving,
                Some(_) if serving.contains(&shard) => RouteState::Serving,
                Some(_) => RouteState::Restoring,
            };
            ShardRoute {
                shard,
                owner: Some(grant.node_id.clone()),
                addr: live.map(|n| n.advertised_addr.clone()),
                epoch: grant.epoch.0,
                state,
            }
        })
        .collect();
    let mut known: BTreeMap<&str, NodeRoute> = nodes
        .values()
        .map(|n| {
            (
                n.node_id.as_str(),
                NodeRoute {
                    node_id: n.node_id.clone(),
                    advertised_addr: n.advertised_addr.clone(),
                    live: true,
                    leader: leader == Some(n.node_id.as_str()),
                },
            )
        })
        .collect();
    for grant in grants.values() {
        known
            .entry(grant.node_id.as_str())
            .or_insert_with(|| NodeRoute {
                node_id: grant.node_id.clone(),
                advertised_addr: String::new(),
                live: false,
                leader: false,
            });
    }
    RoutingView {
        epoch: grants.values().map(|g| g.epoch.0).max().unwrap_or(0),
        nodes: known.into_values().collect(),
        shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::OwnerEpoch;

    fn node(id: &str, lease: i64) -> (String, NodeRecord) {
        (
            id.into(),
            NodeRecord {
                node_id: id.into(),
                advertised_addr: format!("10.0.0.{lease}:8080"),
                lease_id: lease,
                registered_revision: 1,
            },
        )
    }

    fn grant(shard: ShardId, id: &str, lease: i64, epoch: u64) -> (ShardId, Grant) {
        (
            shard,
            Grant {
                shard,
                node_id: id.into(),
                lease_id: lease,
                epoch: OwnerEpoch(epoch),
                previous: Vec::new(),
            },
        )
    }

    #[test]
    fn the_map_names_owners_addresses_and_states() {
        let nodes = BTreeMap::from([node("a", 1), node("b", 2)]);
        let grants = BTreeMap::from([
            grant(0, "a", 1, 10),
            grant(1, "a", 1, 11),
            grant(2, "b", 2, 12),
            // c is gone; b restarted under lease 5 since shard 4 was granted.
            grant(3, "c", 3, 13),
            grant(4, "b", 5, 9),
        ]);
        let serving = BTreeSet::from([0]);
        let view = routing_view("a", 6, &nodes, &grants, &serving, Some("b"));
        assert_eq!(view.epoch, 13);
        let states: Vec<(Option<&str>, Option<&str>, u64, RouteState)> = view
            .shards
            .iter()
            .map(|s| (s.owner.as_deref(), s.addr.as_deref(), s.epoch, s.state))
            .collect();
        assert_eq!(
            states,
            [
                (Some("a"), Some("10.0.0.1:8080"), 10, RouteState::Serving),
                (Some("a"), Some("10.0.0.1:8080"), 11, RouteState::Restoring),
                (Some("b"), Some("10.0.0.2:8080"), 12, RouteState::Serving),
                (Some("c"), None, 13, RouteState::Waiting),
                (Some("b"), None, 9, RouteState::Waiting),
                (None, None, 0, RouteState::Waiting),
            ]
        );
        let nodes: Vec<(&str, bool, bool)> = view
            .nodes
            .iter()
            .map(|n| (n.node_id.as_str(), n.live, n.leader))
            .collect();
        assert_eq!(
            nodes,
            [("a", true, false), ("b", true, true), ("c", false, false)]
        );
    }

    #[test]
    fn an_empty_cluster_has_every_shard_waiting() {
        let view = routing_view(
            "a",
            2,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeSet::new(),
            None,
        );
        assert_eq!(view.epoch, 0);
        assert!(view.nodes.is_empty());
        assert!(
            view.shards
                .iter()
                .all(|s| s.state == RouteState::Waiting && s.owner.is_none())
        );
    }
}
