//! [`Shard`]: how the cluster reaches one shard, wherever it runs.
//!
//! Every operation a caller needs is a method with plain data in and out
//! (commands, events, routers, digests), never a closure over the state: a
//! shard on another node answers the same requests over the network. Today
//! the one kind of link is `Local` (the worker task in this process); a
//! `Remote` link is one more arm of [`Link`], and no caller changes.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::digest::{DigestSummary, EntityDigest, digest_state, summarize_state};
use crate::entity::{Entity, EntityKey};
use crate::error::Result;
use crate::event::Event;
use crate::routing::Router;
use crate::worker::{Outcome, ShardHandle, ShardStats};

/// What one partition key holds on its shard (from the shard's state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLoad {
    /// The partition key.
    pub partition_key: String,
    /// Its routing hash.
    pub key_hash: u64,
    /// The shard that owns it now.
    pub shard: u32,
    /// Entities (live and tombstones) under the key.
    pub entities: u64,
    /// Events in their history (the sum of their versions: every change
    /// adds one version).
    pub events: u64,
    /// Bytes of their current data.
    pub bytes: u64,
}

/// The moving entities a shard holds, by side: those it owns under the old
/// routing (`source`) and those it will own under the new one (`target`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovingDigests<T> {
    /// Entities this shard owns before the change and not after.
    pub source: T,
    /// Entities this shard owns after the change and not before.
    pub target: T,
}

/// A handle to one shard. Cloning is cheap; every clone reaches the same
/// shard.
#[derive(Debug, Clone)]
pub struct Shard {
    id: u32,
    link: Link,
}

/// How a shard is reached.
#[derive(Debug, Clone)]
enum Link {
    /// A worker task in this process.
    Local(ShardHandle),
}

impl Shard {
    pub(crate) fn local(handle: ShardHandle) -> Shard {
        Shard {
            id: handle.shard(),
            link: Link::Local(handle),
        }
    }

    /// The shard's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether the shard runs in this process.
    pub fn is_local(&self) -> bool {
        matches!(self.link, Link::Local(_))
    }

    /// Sends a write routed under routing epoch `epoch`; the ack comes only
    /// once its event is durable and applied. A shard whose epoch is another
    /// hands it back as [`Outcome::Stale`].
    pub(crate) async fn write(&self, command: Command, epoch: u64) -> Outcome {
        match &self.link {
            Link::Local(h) => h.write_routed(command, epoch).await,
        }
    }

    /// Sends writes routed under routing epoch `epoch`, up to `max_batch` per
    /// group commit; one outcome per command, in order (see
    /// [`ShardHandle::write_many`]).
    pub(crate) async fn write_many(
        &self,
        commands: Vec<Command>,
        epoch: u64,
        max_batch: usize,
    ) -> Vec<Outcome> {
        match &self.link {
            Link::Local(h) => h.write_many(commands, epoch, max_batch).await,
        }
    }

    /// Reads one live entity.
    pub async fn get(&self, key: EntityKey) -> Result<Option<Entity>> {
        match &self.link {
            Link::Local(h) => h.get(key).await,
        }
    }

    /// Live entities of a namespace and type the shard holds, in id order,
    /// after `after`, at most `limit` (copies a migration made included).
    pub async fn list(
        &self,
        namespace: String,
        entity_type: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        match &self.link {
            Link::Local(h) => h.list(namespace, entity_type, after, limit).await,
        }
    }

    /// Live entities of a namespace and type in id order, after `after`, at
    /// most `limit`, among those `router` routes to this shard (so copies a
    /// migration made are not listed by their future owner).
    pub async fn list_owned(
        &self,
        router: Router,
        namespace: String,
        entity_type: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        let shard = self.id;
        self.read_owned(move |state| {
            state.list_where(&namespace, &entity_type, after.as_deref(), limit, |r| {
                router.owns(shard, &r.partition_key, r.key_hash)
            })
        })
        .await
    }

    /// [`crate::ShardState::list_namespace_where`] of the entities the router gives
    /// this shard.
    pub async fn list_namespace_owned(
        &self,
        router: Router,
        namespace: String,
        after: Option<EntityKey>,
        limit: usize,
    ) -> Result<Vec<(Entity, String)>> {
        let shard = self.id;
        self.read_owned(move |state| {
            state.list_namespace_where(&namespace, after.as_ref(), limit, |r| {
                router.owns(shard, &r.partition_key, r.key_hash)
            })
        })
        .await
    }

    /// The live entity `key` and its partition key, if this shard holds it
    /// and `router` routes it here (a copy a migration made for its future
    /// owner is not answered).
    pub async fn locate_owned(
        &self,
        router: Router,
        key: EntityKey,
    ) -> Result<Option<(Entity, String)>> {
        let shard = self.id;
        self.run(move |state, _| {
            let record = state.record(&key)?;
            if !router.owns(shard, &record.partition_key, record.key_hash) {
                return None;
            }
            let partition_key = record.partition_key.clone();
            state.get(&key).map(|entity| (entity, partition_key))
        })
        .await
    }

    /// The shard's counters.
    pub async fn stats(&self) -> Result<ShardStats> {
        match &self.link {
            Link::Local(h) => h.stats().await,
        }
    }

    /// Waits until every request sent to the shard before this one has been
    /// answered (writes durable and applied).
    pub async fn barrier(&self) -> Result<()> {
        self.run(|_, _| ()).await
    }

    /// Applies replayed events (highest version wins, so a repeated or older
    /// event is a no-op) and remembers their caller idempotency keys;
    /// returns how many changed state.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<u64> {
        self.run(move |state, dedup| {
            let mut applied = 0;
            for event in events {
                dedup.observe(&event);
                if state.apply_owned(event) {
                    applied += 1;
                }
            }
            applied
        })
        .await
    }

    /// Drops every record `router` does not route to this shard; returns how
    /// many (entities, live or tombstones) were dropped.
    pub async fn retain_owned(&self, router: Router) -> Result<u64> {
        let shard = self.id;
        self.run(move |state, _| {
            state.retain(|_, r| router.owns(shard, &r.partition_key, r.key_hash)) as u64
        })
        .await
    }

    /// Encodes a snapshot of the records `router` routes to this shard, with
    /// their idempotency keys, under `header` (see
    /// [`crate::encode_snapshot`]). It runs on the worker between group
    /// commits, so every write the shard applied before this call is in it.
    pub async fn snapshot(&self, router: Router, header: crate::SnapshotHeader) -> Result<Vec<u8>> {
        let shard = self.id;
        self.run(move |state, window| {
            crate::encode_snapshot(&header, state, window, |r| {
                router.owns(shard, &r.partition_key, r.key_hash)
            })
        })
        .await
    }

    /// Drops everything the shard holds; returns how many records.
    pub async fn clear(&self) -> Result<u64> {
        self.run(|state, _| state.retain(|_, _| false) as u64).await
    }

    /// Every partition key `router` routes to this shard, with its load.
    pub async fn key_loads(&self, router: Router) -> Result<Vec<KeyLoad>> {
        let shard = self.id;
        self.run(move |state, _| {
            let mut keys: HashMap<&str, KeyLoad> = HashMap::new();
            for (_, record) in state.iter() {
                if !router.owns(shard, &record.partition_key, record.key_hash) {
                    continue;
                }
                let load = keys
                    .entry(record.partition_key.as_str())
                    .or_insert_with(|| KeyLoad {
                        partition_key: record.partition_key.clone(),
                        key_hash: record.key_hash,
                        shard,
                        entities: 0,
                        events: 0,
                        bytes: 0,
                    });
                load.entities += 1;
                load.events += record.version;
                load.bytes += record.data.as_ref().map_or(0, |d| d.len() as u64);
            }
            keys.into_values().collect::<Vec<_>>()
        })
        .await
    }

    /// Digests of the entities whose owner differs between `from` and `to`
    /// that this shard holds, by side.
    pub async fn moving_digests(
        &self,
        from: Router,
        to: Router,
    ) -> Result<MovingDigests<Vec<EntityDigest>>> {
        let shard = self.id;
        self.run(move |state, _| {
            let side = Side::new(&from, &to, shard);
            MovingDigests {
                source: digest_state(state, |r| side.source(&r.partition_key, r.key_hash)),
                target: digest_state(state, |r| side.target(&r.partition_key, r.key_hash)),
            }
        })
        .await
    }

    /// [`Shard::moving_digests`] as order-independent summaries (cheap: no
    /// key is copied).
    pub async fn moving_summaries(
        &self,
        from: Router,
        to: Router,
    ) -> Result<MovingDigests<DigestSummary>> {
        let shard = self.id;
        self.run(move |state, _| {
            let side = Side::new(&from, &to, shard);
            MovingDigests {
                source: summarize_state(state, |r| side.source(&r.partition_key, r.key_hash)),
                target: summarize_state(state, |r| side.target(&r.partition_key, r.key_hash)),
            }
        })
        .await
    }

    /// Asks the shard to stop once the requests queued before are done.
    pub async fn stop(&self) {
        match &self.link {
            Link::Local(h) => h.stop().await,
        }
    }

    /// Requests queued for the shard right now.
    pub fn inbox_depth(&self) -> usize {
        match &self.link {
            Link::Local(h) => h.inbox_depth(),
        }
    }

    /// How long the group commit now in the pipeline has been waiting for
    /// durability (zero when none is).
    pub fn pipeline_wait(&self) -> Duration {
        match &self.link {
            Link::Local(h) => h.pipeline_wait(),
        }
    }

    /// How long the last completed pipeline append took.
    pub fn last_append(&self) -> Duration {
        match &self.link {
            Link::Local(h) => h.last_append(),
        }
    }

    /// Fault injection: the worker sleeps this long before every batch, as a
    /// shard on a failing disk would; `Duration::ZERO` heals it.
    #[cfg(feature = "failpoints")]
    pub fn set_fault_delay(&self, delay: Duration) {
        match &self.link {
            Link::Local(h) => h.set_fault_delay(delay),
        }
    }

    /// The injected delay in force (always zero without the `failpoints`
    /// feature).
    pub fn fault_delay(&self) -> Duration {
        match &self.link {
            Link::Local(h) => h.fault_delay(),
        }
    }

    /// Runs `task` on a local worker with its state. Crate-private: the
    /// methods above are the protocol, each of which a remote link would carry.
    /// Reads the state if this node serves the shard now (see
    /// `ShardHandle::read_owned`).
    async fn read_owned<R: Send + 'static>(
        &self,
        read: impl FnOnce(&crate::ShardState) -> R + Send + 'static,
    ) -> Result<R> {
        match &self.link {
            Link::Local(h) => h.read_owned(read).await,
        }
    }

    pub(super) async fn run<R: Send + 'static>(
        &self,
        task: impl FnOnce(&mut crate::ShardState, &mut crate::dedup::DedupWindow) -> R + Send + 'static,
    ) -> Result<R> {
        match &self.link {
            Link::Local(h) => h.with_state(task).await,
        }
    }
}

/// Which side of a routing change a record is on, for one shard.
struct Side<'a> {
    from: &'a Router,
    to: &'a Router,
    shard: u32,
}

impl<'a> Side<'a> {
    fn new(from: &'a Router, to: &'a Router, shard: u32) -> Self {
        Side { from, to, shard }
    }

    fn route(&self, key: &str, hash: u64) -> Option<(u32, u32)> {
        let (a, b) = (self.from.route(key, hash), self.to.route(key, hash));
        (a != b).then_some((a, b))
    }

    fn source(&self, key: &str, hash: u64) -> bool {
        self.route(key, hash).is_some_and(|(a, _)| a == self.shard)
    }

    fn target(&self, key: &str, hash: u64) -> bool {
        self.route(key, hash).is_some_and(|(_, b)| b == self.shard)
    }
}
