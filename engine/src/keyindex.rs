//! Which partition key every entity of the deployment has: what stops a write
//! from routing an existing entity by another key to another shard, where
//! the shard would not know the entity and create a second copy.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::entity::EntityKey;
use crate::event::Event;
use crate::state::ShardState;

/// Stripes of the map: shard workers claim entities concurrently.
const STRIPES: usize = 64;

/// The partition key (as its routing hash) of every entity floe remembers,
/// live or tombstone, shared by all shard workers of a deployment.
///
/// Rules (docs/architecture.md, *Partition keys*):
/// - a write for a live entity must carry the partition key the entity has;
/// - a deleted entity may be re-created under another partition key; its
///   versions continue past the tombstone (the index hands the tombstone's
///   version to the new shard), so that whichever shard replays both events
///   the re-creation wins;
/// - two writes in flight for one entity with different partition keys
///   cannot both pass: the second is refused until the first is settled.
///
/// Shard workers [`claim`](Self::claim) an entity before they validate a
/// write, and [`settle`](Self::settle) or [`release`](Self::release) the
/// claim once its outcome is known; recovery rebuilds the index from the
/// recovered shard states ([`rebuild`](Self::rebuild)). Entities are keyed by
/// a 128-bit hash of their key: about 60 bytes per entity, whatever the
/// length of its names. A deployment whose shards live on several nodes
/// needs the same answers from the entity's owner; this type is the one
/// place that would change.
#[derive(Debug)]
pub struct PartitionKeyIndex {
    stripes: Vec<Mutex<HashMap<u128, Slot>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// Routing hash of the partition key of the latest durable version.
    key_hash: u64,
    /// The latest durable version (0: none yet, only claims).
    version: u64,
    /// Whether that version is live (not a tombstone).
    live: bool,
    /// Writes validated but not settled, all with `pending_hash`.
    inflight: u32,
    pending_hash: u64,
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The entity is live under another partition key.
    Live {
        /// Its version.
        version: u64,
    },
    /// A write with another partition key is in flight for the entity.
    InFlight,
}

impl Default for PartitionKeyIndex {
    fn default() -> Self {
        PartitionKeyIndex {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl PartitionKeyIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entity of `states` (the recovered shards), with the partition key
    /// of its highest version.
    pub fn rebuild<'a>(states: impl IntoIterator<Item = &'a ShardState>) -> Self {
        let index = Self::new();
        for state in states {
            for (key, record) in state.iter() {
                index.observe(key, record.key_hash, record.version, record.data.is_some());
            }
        }
        index
    }

    /// Records a durable version of an entity (recovery, migration copies);
    /// the highest version wins.
    pub fn observe(&self, key: &EntityKey, key_hash: u64, version: u64, live: bool) {
        let id = entity_hash(key);
        let mut map = self.stripe(id);
        let slot = map.entry(id).or_insert(Slot {
            key_hash,
            version: 0,
            live,
            inflight: 0,
            pending_hash: key_hash,
        });
        if version > slot.version {
            (slot.key_hash, slot.version, slot.live) = (key_hash, version, live);
        }
    }

    /// Claims `key` for a write routed by `key_hash`. On success returns the
    /// version the entity's next event must exceed (its latest version
    /// anywhere; for a re-creation under a new key, the tombstone's).
    pub fn claim(&self, key: &EntityKey, key_hash: u64) -> Result<u64, ClaimRefused> {
        let id = entity_hash(key);
        let mut map = self.stripe(id);
        let slot = map.entry(id).or_insert(Slot {
            key_hash,
            version: 0,
            live: false,
            inflight: 0,
            pending_hash: key_hash,
        });
        if slot.inflight > 0 && slot.pending_hash != key_hash {
            return Err(ClaimRefused::InFlight);
        }
        if slot.version > 0 && slot.live && slot.key_hash != key_hash {
            return Err(ClaimRefused::Live {
                version: slot.version,
            });
        }
        slot.inflight += 1;
        slot.pending_hash = key_hash;
        Ok(slot.version)
    }

    /// Gives back a claim whose write emitted nothing (it was refused).
    pub fn release(&self, key: &EntityKey) {
        let id = entity_hash(key);
        let mut map = self.stripe(id);
        if let Some(slot) = map.get_mut(&id) {
            slot.inflight = slot.inflight.saturating_sub(1);
            if slot.inflight == 0 && slot.version == 0 {
                map.remove(&id);
            }
        }
    }

    /// [`observe`](Self::observe) of the entity, key and version of `event`.
    pub fn observe_event(&self, event: &Event) {
        let id = hash_parts(&event.namespace, &event.entity_type, &event.entity_id);
        let mut map = self.stripe(id);
        let slot = map.entry(id).or_insert(Slot {
            key_hash: event.key_hash,
            version: 0,
            live: event.state.is_some(),
            inflight: 0,
            pending_hash: event.key_hash,
        });
        if event.version > slot.version {
            (slot.key_hash, slot.version, slot.live) =
                (event.key_hash, event.version, event.state.is_some());
        }
    }

    /// Forgets `key` when the index has it under `key_hash` and no write
    /// for it is in flight: its entity left shard memory (its period was
    /// archived), so the index would only hold memory for it.
    pub fn forget(&self, key: &EntityKey, key_hash: u64) {
        let id = entity_hash(key);
        let mut map = self.stripe(id);
        if map
            .get(&id)
            .is_some_and(|slot| slot.inflight == 0 && slot.key_hash == key_hash)
        {
            map.remove(&id);
        }
    }

    /// Settles a claim whose event reached the pipeline: `durable` when the
    /// append succeeded. After a failed append the outcome is unknown (the
    /// event may be durable and come back on restart), so the entity is then
    /// taken as live under the claimed key: a later write may not move it
    /// until a restart has rebuilt the index from what is really durable.
    pub fn settle(&self, key: &EntityKey, key_hash: u64, version: u64, live: bool, durable: bool) {
        self.settle_parts(entity_hash(key), key_hash, version, live, durable);
    }

    /// [`settle`](Self::settle) for the entity, key and version of `event`.
    pub fn settle_event(&self, event: &Event, durable: bool) {
        self.settle_parts(
            hash_parts(&event.namespace, &event.entity_type, &event.entity_id),
            event.key_hash,
            event.version,
            event.state.is_some(),
            durable,
        );
    }

    fn settle_parts(&self, id: u128, key_hash: u64, version: u64, live: bool, durable: bool) {
        let mut map = self.stripe(id);
        let Some(slot) = map.get_mut(&id) else {
            return;
        };
        slot.inflight = slot.inflight.saturating_sub(1);
        if version > slot.version {
            (slot.key_hash, slot.version) = (key_hash, version);
            slot.live = live || !durable;
        } else if !durable && slot.key_hash == key_hash {
            slot.live = true;
        }
    }

    /// Entities remembered.
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no entity is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives back the table space of forgotten entities: a map keeps its
    /// capacity when entries leave, so after an archival forgot most of the
    /// index it would otherwise hold memory for every entity it ever had.
    /// Stripes at least a quarter full keep their table (a shrink rehashes
    /// the stripe under its lock, and writes grow it again).
    pub fn shrink(&self) {
        for stripe in &self.stripes {
            let mut map = stripe.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
    }

    /// Table slots held over every stripe (for tests of [`Self::shrink`]).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).capacity())
            .sum()
    }

    fn stripe(&self, id: u128) -> std::sync::MutexGuard<'_, HashMap<u128, Slot>> {
        // The low bits of XXH3-128 are well mixed.
        self.stripes[(id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// A 128-bit hash of an entity key (XXH3-128 over length-prefixed parts):
/// distinct keys collide with probability 2^-128, far below any hardware
/// error rate, so the index treats it as the key.
fn entity_hash(key: &EntityKey) -> u128 {
    hash_parts(&key.namespace, &key.entity_type, &key.id)
}

fn hash_parts(namespace: &str, entity_type: &str, id: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [namespace, entity_type, id] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> EntityKey {
        EntityKey::new("t", "T", id)
    }

    #[test]
    fn a_live_entity_keeps_its_key_and_a_tombstone_may_move() {
        let index = PartitionKeyIndex::new();
        assert_eq!(index.claim(&key("a"), 1), Ok(0));
        index.settle(&key("a"), 1, 1, true, true);
        assert_eq!(index.claim(&key("a"), 1), Ok(1), "same key: fine");
        index.settle(&key("a"), 1, 2, true, true);
        assert_eq!(
            index.claim(&key("a"), 2),
            Err(ClaimRefused::Live { version: 2 })
        );
        // Deleted at version 3: a re-creation under key 2 continues at 4.
        assert_eq!(index.claim(&key("a"), 1), Ok(2));
        index.settle(&key("a"), 1, 3, false, true);
        assert_eq!(index.claim(&key("a"), 2), Ok(3));
        index.settle(&key("a"), 2, 4, true, true);
        assert_eq!(
            index.claim(&key("a"), 1),
            Err(ClaimRefused::Live { version: 4 })
        );
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn claims_in_flight_exclude_other_keys_until_settled_or_released() {
        let index = PartitionKeyIndex::new();
        assert_eq!(index.claim(&key("b"), 1), Ok(0));
        assert_eq!(index.claim(&key("b"), 1), Ok(0));
        assert_eq!(index.claim(&key("b"), 2), Err(ClaimRefused::InFlight));
        index.release(&key("b"));
        index.release(&key("b"));
        assert!(index.is_empty(), "a refused first write leaves nothing");
        assert_eq!(index.claim(&key("b"), 2), Ok(0));
        // The append failed: the create may be durable, so it counts as live.
        index.settle(&key("b"), 2, 1, true, false);
        assert_eq!(
            index.claim(&key("b"), 1),
            Err(ClaimRefused::Live { version: 1 })
        );
    }

    #[test]
    fn shrink_gives_back_the_space_of_forgotten_entities_only() {
        let index = PartitionKeyIndex::new();
        for i in 0..20_000 {
            index.observe(&key(&format!("e{i}")), 7, 1, true);
        }
        let full = index.capacity();
        for i in 0..19_000 {
            index.forget(&key(&format!("e{i}")), 7);
        }
        assert!(
            index.capacity() * 8 > full * 7,
            "forgetting keeps the tables"
        );
        index.shrink();
        assert!(
            index.capacity() * 8 < full,
            "{} of {full}",
            index.capacity()
        );
        assert_eq!(index.len(), 1000);
        assert_eq!(
            index.claim(&key("e19999"), 8),
            Err(ClaimRefused::Live { version: 1 }),
            "the survivors keep their keys"
        );
    }

    #[test]
    fn rebuild_takes_the_highest_version() {
        let index = PartitionKeyIndex::new();
        index.observe(&key("c"), 1, 3, false);
        index.observe(&key("c"), 2, 4, true);
        index.observe(&key("c"), 1, 2, true);
        assert_eq!(
            index.claim(&key("c"), 1),
            Err(ClaimRefused::Live { version: 4 })
        );
        assert_eq!(index.claim(&key("c"), 2), Ok(4));
    }
}
