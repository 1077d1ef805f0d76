//! The shard map (`GET /api/v1/cluster`) and the routes built from it:
//! which shard a key is on (floe-engine's router over the map's topology)
//! and where that shard's owner listens. Pure: fetching is the client's.

use std::collections::HashMap;

use floe_engine::{EntityKey, KeyExtractor, Router, Topology};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Which shards each node owns, as `GET /api/v1/cluster` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// One `floe serve`, or a cluster of nodes.
    pub mode: Mode,
    /// The cluster's id; `None` for a single node.
    pub cluster_id: Option<String>,
    /// The node that answered.
    pub node_id: String,
    /// One more at every change of the answering node's routing table.
    pub routing_epoch: u64,
    /// The topology the shards come from (`GET /api/v1/topology`).
    pub topology: Topology,
    /// Every known node.
    pub nodes: Vec<Node>,
    /// Every shard's owner.
    pub shards: Vec<ShardOwner>,
}

/// Whether the server runs alone or in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One node owns every shard.
    Single,
    /// Shards are placed on several nodes.
    Cluster,
}

/// A node of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its id.
    pub node_id: String,
    /// Where it listens: `http://host:port`.
    pub advertised_addr: String,
    /// Whether it holds its membership lease.
    pub live: bool,
    /// Whether it runs the placement controller.
    pub leader: bool,
}

/// The owner of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwner {
    /// The shard.
    pub shard: u32,
    /// The node that owns it.
    pub node_id: String,
    /// The epoch of the owner's grant (0 on a single node).
    pub owner_epoch: u64,
    /// `serving`, `restoring` or `waiting`.
    pub state: ShardState,
    /// Cluster mode: the owner's `http://host:port` while it is live (absent
    /// on a single node, and while the shard waits for a live owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// Whether a shard's owner serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// The owner acknowledges writes.
    Serving,
    /// The owner is rebuilding it; calls wait.
    Restoring,
    /// No live owner yet.
    Waiting,
}

/// Where calls go under one map.
#[derive(Debug)]
pub(crate) struct Routes {
    map: ClusterMap,
    router: Router,
    /// Base URL of each shard's owner, indexed by shard.
    owners: Vec<Url>,
    /// Where calls for no shard in particular go (lists, SQL, migrations).
    any: Url,
}

impl Routes {
    /// Routes from `map`. A single node is reached at `seed`, the address
    /// the caller gave (it may be a proxy's or a port forward's; the node's
    /// own listen address may not be reachable from here). In a cluster a
    /// shard goes to its owner's advertised address while the owner is live,
    /// otherwise to any live node, which forwards it.
    pub(crate) fn new(map: ClusterMap, seed: &Url) -> Result<Routes> {
        let router = Router::new(map.topology.clone()).map_err(|e| Error::Decode {
            url: seed.to_string(),
            message: format!("the cluster map's topology: {e}"),
        })?;
        let (owners, any) = match map.mode {
            Mode::Single => (
                vec![seed.clone(); map.topology.shard_count as usize],
                seed.clone(),
            ),
            Mode::Cluster => {
                let live: HashMap<&str, Url> = map
                    .nodes
                    .iter()
                    .filter(|n| n.live)
                    .filter_map(|n| {
                        Some((n.node_id.as_str(), parse_base(&n.advertised_addr).ok()?))
                    })
                    .collect();
                // The first live node in id order: every client picks the
                // same one, which keeps its connection pool warm.
                let any = map
                    .nodes
                    .iter()
                    .filter_map(|n| live.get(n.node_id.as_str()))
                    .min_by(|a, b| a.as_str().cmp(b.as_str()))
                    .cloned()
                    .unwrap_or_else(|| seed.clone());
                let mut owners = vec![any.clone(); map.topology.shard_count as usize];
                for owner in &map.shards {
                    if let (Some(slot), Some(url)) = (
                        owners.get_mut(owner.shard as usize),
                        live.get(owner.node_id.as_str()),
                    ) {
                        *slot = url.clone();
                    }
                }
                (owners, any)
            }
        };
        Ok(Routes {
            map,
            router,
            owners,
            any,
        })
    }

    pub(crate) fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// Every live node's base URL but `except`: where to read the map again
    /// when the node it came from does not answer.
    pub(crate) fn other_nodes(&self, except: &Url) -> Vec<Url> {
        let mut urls: Vec<Url> = self
            .map
            .nodes
            .iter()
            .filter(|n| n.live)
            .filter_map(|n| parse_base(&n.advertised_addr).ok())
            .filter(|url| url != except)
            .collect();
        urls.dedup();
        urls
    }

    /// The shard of a partition key under the map's topology.
    pub(crate) fn shard(&self, partition_key: &str) -> u32 {
        self.router
            .route(partition_key, self.router.key_hash(partition_key))
    }

    /// The shard of an entity: by `partition_key` when the call names one,
    /// else by `extractor` (which may need `data`). `None` when the key
    /// cannot be known here; the server then decides.
    pub(crate) fn shard_of(
        &self,
        extractor: &KeyExtractor,
        key: &EntityKey,
        partition_key: Option<&str>,
        data: Option<&Value>,
    ) -> Option<u32> {
        match partition_key {
            Some(pk) => Some(self.shard(pk)),
            None => extractor.extract(key, data).ok().map(|pk| self.shard(&pk)),
        }
    }

    /// The base URL of `shard`'s owner, or of any node for `None`.
    pub(crate) fn node_for(&self, shard: Option<u32>) -> &Url {
        shard
            .and_then(|s| self.owners.get(s as usize))
            .unwrap_or(&self.any)
    }
}

/// A node's base URL: `http://host:port` (with an optional path prefix).
pub(crate) fn parse_base(text: &str) -> Result<Url> {
    let url = Url::parse(text).map_err(|e| Error::Config(format!("base URL {text:?}: {e}")))?;
    if url.scheme() != "http" || url.host().is_none() || url.cannot_be_a_base() {
        return Err(Error::Config(format!(
            "base URL {text:?}: expected http://host:port"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::{HashFunction, Strategy};

    fn map(mode: Mode, shards: &[(u32, &str)], nodes: &[(&str, bool)]) -> ClusterMap {
        ClusterMap {
            mode,
            cluster_id: None,
            node_id: "a".into(),
            routing_epoch: 1,
            topology: Topology::new(shards.len() as u32, HashFunction::Xxh3, Strategy::JumpBack)
                .unwrap(),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, (id, live))| Node {
                    node_id: id.to_string(),
                    advertised_addr: format!("http://10.0.0.{}:8080", i + 1),
                    live: *live,
                    leader: i == 0,
                })
                .collect(),
            shards: shards
                .iter()
                .map(|(shard, node)| ShardOwner {
                    shard: *shard,
                    node_id: node.to_string(),
                    owner_epoch: 5,
                    state: ShardState::Serving,
                    addr: None,
                })
                .collect(),
        }
    }

    fn seed() -> Url {
        parse_base("http://proxy.example:9000").unwrap()
    }

    #[test]
    fn a_key_routes_like_the_server_routes_it() {
        let routes = Routes::new(
            map(
                Mode::Single,
                &[(0, "a"), (1, "a"), (2, "a")],
                &[("a", true)],
            ),
            &seed(),
        )
        .unwrap();
        let server = Router::new(routes.map().topology.clone()).unwrap();
        let extractor = KeyExtractor::tenant();
        for i in 0..100 {
            let tenant = format!("tenant-{i}");
            let key = EntityKey::new(&tenant, "Order", "o-1");
            assert_eq!(
                routes.shard_of(&extractor, &key, None, None),
                Some(server.shard_info(&tenant).shard)
            );
        }
    }

    #[test]
    fn a_single_node_is_reached_at_the_address_the_caller_gave() {
        let routes = Routes::new(
            map(
                Mode::Single,
                &[(0, "local"), (1, "local")],
                &[("local", true)],
            ),
            &seed(),
        )
        .unwrap();
        assert_eq!(routes.node_for(Some(1)), &seed());
        assert_eq!(routes.node_for(None), &seed());
    }

    #[test]
    fn cluster_shards_go_to_live_owners_and_dead_owners_to_a_live_node() {
        let routes = Routes::new(
            map(
                Mode::Cluster,
                &[(0, "a"), (1, "b"), (2, "c")],
                &[("a", true), ("b", true), ("c", false)],
            ),
            &seed(),
        )
        .unwrap();
        assert_eq!(routes.node_for(Some(0)).as_str(), "http://10.0.0.1:8080/");
        assert_eq!(routes.node_for(Some(1)).as_str(), "http://10.0.0.2:8080/");
        // c is down: a live node takes the call and forwards it.
        assert_eq!(routes.node_for(Some(2)).as_str(), "http://10.0.0.1:8080/");
        // A shard the map does not know (a newer topology) too.
        assert_eq!(routes.node_for(Some(7)).as_str(), "http://10.0.0.1:8080/");
    }

    #[test]
    fn base_urls_must_be_http() {
        assert!(parse_base("http://127.0.0.1:8080").is_ok());
        for bad in ["127.0.0.1:8080", "https://x:1", "mailto:a@b", "http://"] {
            assert!(matches!(parse_base(bad), Err(Error::Config(_))), "{bad}");
        }
    }
}
