//! The etcd records of planned moves: draining marks (`draining/<node>`), the leader's
//! handover intents (`handover/<shard>`) and the new owners' ready records
//! (`ready/<shard>/<epoch>`). The rules are in `handover`; this is their I/O.
//!
//! A draining mark and a ready record are attached to the lease of the node they are
//! about, so both end with that node's membership: a drained node that restarts is a
//! fresh member placement may use again, and a new owner that dies mid-warm-up leaves
//! no "ready" behind.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ShardId;
use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::grants::{OwnerEpoch, read_grants};
use crate::handover::{HandoverIntent, ReadyRecord};
use crate::keys::Keys;
use crate::membership::{live_nodes, timing};
use crate::watch::{self as mirror, Snapshot, TaskGuard, list, timed};

#[derive(Debug, Serialize, Deserialize)]
struct DrainValue {
    node_id: String,
    since_ms: u64,
}

/// A drain as etcd shows it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainStatus {
    /// The node.
    pub node_id: String,
    /// Whether it is marked draining.
    pub draining: bool,
    /// The shards still granted to it.
    pub shards: Vec<ShardId>,
    /// Whether it holds no shard any more (it may be stopped).
    pub drained: bool,
}

/// The nodes of a `draining/` snapshot.
pub(crate) fn draining_of(keys: &Keys, snapshot: &Snapshot) -> BTreeSet<String> {
    let prefix = keys.drainings();
    snapshot
        .entries
        .keys()
        .filter_map(|k| Keys::tail(&prefix, k).map(str::to_owned))
        .collect()
}

/// The intents of a `handover/` snapshot, by shard.
pub(crate) fn intents_of(keys: &Keys, snapshot: &Snapshot) -> BTreeMap<ShardId, HandoverIntent> {
    let prefix = keys.handovers();
    snapshot
        .entries
        .iter()
        .filter_map(|(k, e)| {
            let shard = Keys::shard_of(&prefix, k)?;
            match serde_json::from_slice::<HandoverIntent>(&e.value) {
                Ok(intent) => Some((shard, HandoverIntent { shard, ..intent })),
                Err(err) => {
                    tracing::warn!(key = %k, error = %err, "ignoring an unreadable handover intent");
                    None
                }
            }
        })
        .collect()
}

/// The ready records of a `ready/` snapshot, by (shard, epoch of the grant replaced).
pub(crate) fn readies_of(
    keys: &Keys,
    snapshot: &Snapshot,
) -> BTreeMap<(ShardId, OwnerEpoch), ReadyRecord> {
    let prefix = keys.readies();
    snapshot
        .entries
        .iter()
        .filter_map(|(k, e)| {
            let (shard, epoch) = k.strip_prefix(&prefix)?.split_once('/')?;
            let key = (shard.parse().ok()?, OwnerEpoch(epoch.parse().ok()?));
            serde_json::from_slice::<ReadyRecord>(&e.value)
                .ok()
                .map(|r| (key, r))
        })
        .collect()
}

/// Everything the planned reconcile reads besides grants and nodes.
pub(crate) struct PlannedMoves {
    pub(crate) draining: BTreeSet<String>,
    pub(crate) intents: BTreeMap<ShardId, HandoverIntent>,
    pub(crate) readies: BTreeMap<(ShardId, OwnerEpoch), ReadyRecord>,
}

pub(crate) async fn read_planned(client: &Client, config: &ClusterConfig) -> Result<PlannedMoves> {
    let keys = config.keys();
    let timeout = config.etcd_timeout();
    let mut client = client.clone();
    let draining = draining_of(
        &keys,
        &list(&mut client, &keys.drainings(), true, timeout).await?,
    );
    let intents = intents_of(
        &keys,
        &list(&mut client, &keys.handovers(), true, timeout).await?,
    );
    let readies = readies_of(
        &keys,
        &list(&mut client, &keys.readies(), true, timeout).await?,
    );
    Ok(PlannedMoves {
        draining,
        intents,
        readies,
    })
}

/// The nodes marked draining now.
pub async fn draining_nodes(client: &Client, config: &ClusterConfig) -> Result<BTreeSet<String>> {
    let keys = config.keys();
    let snapshot = list(
        &mut client.clone(),
        &keys.drainings(),
        true,
        config.etcd_timeout(),
    )
    .await?;
    Ok(draining_of(&keys, &snapshot))
}

/// Marks live node `node_id` as draining: the controller places nothing on it and moves
/// its shards off with planned handovers. The mark is attached to the node's lease, so
/// it ends when the node leaves. Refuses a node that is not live
/// ([`Error::UnknownNode`]) and the last live node that is not draining
/// ([`Error::LastLiveNode`]). Marking a draining node again changes nothing.
pub async fn drain(client: &Client, config: &ClusterConfig, node_id: &str) -> Result<DrainStatus> {
    let nodes = live_nodes(client, config).await?;
    let Some(node) = nodes.get(node_id) else {
        return Err(Error::UnknownNode {
            cluster_id: config.cluster_id.clone(),
            node_id: node_id.to_owned(),
            live: nodes.keys().cloned().collect(),
        });
    };
    let draining = draining_nodes(client, config).await?;
    if !draining.contains(node_id) && !nodes.keys().any(|n| n != node_id && !draining.contains(n)) {
        return Err(Error::LastLiveNode {
            node_id: node_id.to_owned(),
        });
    }
    let since_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let value = serde_json::to_vec(&DrainValue {
        node_id: node_id.to_owned(),
        since_ms,
    })
    .expect("a drain mark serializes");
    if !draining.contains(node_id) {
        let mut c = client.clone();
        timed(
            "mark draining",
            config.etcd_timeout(),
            c.put(
                config.keys().draining(node_id),
                value,
                Some(PutOptions::new().with_lease(node.lease_id)),
            ),
        )
        .await?;
        tracing::info!(node = node_id, "marked draining");
    }
    drain_status(client, config, node_id).await
}

/// Takes the draining mark off `node_id` (placement may use it again).
pub async fn undrain(client: &Client, config: &ClusterConfig, node_id: &str) -> Result<()> {
    let mut c = client.clone();
    timed(
        "unmark draining",
        config.etcd_timeout(),
        c.delete(config.keys().draining(node_id), None),
    )
    .await?;
    Ok(())
}

/// Whether `node_id` drains and which shards are still granted to it.
pub async fn drain_status(
    client: &Client,
    config: &ClusterConfig,
    node_id: &str,
) -> Result<DrainStatus> {
    let draining = draining_nodes(client, config).await?.contains(node_id);
    let shards: Vec<ShardId> = read_grants(client, config)
        .await?
        .values()
        .filter(|g| g.node_id == node_id)
        .map(|g| g.shard)
        .collect();
    Ok(DrainStatus {
        node_id: node_id.to_owned(),
        draining,
        drained: shards.is_empty(),
        shards,
    })
}

/// Marks `node_id` draining and waits (polling every `poll`) until no grant names it,
/// at most `timeout` ([`Error::DrainTimeout`] then, with the shards still held).
pub async fn drain_and_wait(
    client: &Client,
    config: &ClusterConfig,
    node_id: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<DrainStatus> {
    let started = Instant::now();
    let mut status = drain(client, config, node_id).await?;
    while !status.drained {
        if started.elapsed() >= timeout {
            return Err(Error::DrainTimeout {
                node_id: node_id.to_owned(),
                shards: status.shards,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(poll).await;
        status = match drain_status(client, config, node_id).await {
            Ok(s) => s,
            Err(e) if e.is_retryable() => continue,
            Err(e) => return Err(e),
        };
    }
    Ok(status)
}

/// Records that this node (`node_id` under `lease_id`) has warmed shard `shard` up and
/// caught up with the pipeline, to take it over from the grant at `from`.
pub async fn record_ready(
    client: &Client,
    config: &ClusterConfig,
    node_id: &str,
    lease_id: i64,
    shard: ShardId,
    from: OwnerEpoch,
) -> Result<()> {
    let value = serde_json::to_vec(&ReadyRecord {
        node_id: node_id.to_owned(),
        lease_id,
    })
    .expect("a ready record serializes");
    let mut c = client.clone();
    timed(
        "record ready",
        config.etcd_timeout(),
        c.put(
            config.keys().ready(shard, from),
            value,
            Some(PutOptions::new().with_lease(lease_id)),
        ),
    )
    .await?;
    Ok(())
}

/// The leader's handover intents, kept current from an etcd watch.
#[derive(Debug)]
pub struct HandoverWatch {
    keys: Keys,
    rx: watch::Receiver<Snapshot>,
    _task: TaskGuard,
}

impl HandoverWatch {
    /// Starts watching the cluster's handover intents.
    pub fn start(client: &Client, config: &ClusterConfig) -> HandoverWatch {
        let keys = config.keys();
        let (rx, task) = mirror::spawn(client.clone(), keys.handovers(), true, timing(config));
        HandoverWatch {
            keys,
            rx,
            _task: task,
        }
    }

    /// The intents as last seen, by shard.
    pub fn current(&self) -> BTreeMap<ShardId, HandoverIntent> {
        intents_of(&self.keys, &self.rx.borrow())
    }

    /// A receiver that changes whenever the intents change.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }
}
