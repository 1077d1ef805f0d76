use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::btree_map::Entry;
use std::ops::Bound;

use uuid::Uuid;

use crate::command::{Command, Operation, merge_patch};
use crate::entity::{Entity, EntityKey};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::json::Json;
use crate::limits::{JsonLimits, JsonRole, depth_exceeds};

/// What a shard remembers about one entity, live or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    /// Version after the last applied event.
    pub version: u64,
    /// The entity's data; `None` is a tombstone: the entity was deleted at
    /// `version`, and events at or below it can no longer bring it back.
    pub data: Option<Json>,
    /// The partition key the entity is routed by (immutable).
    pub partition_key: String,
    /// Hash of the partition key.
    pub key_hash: u64,
    /// Timestamp of the last applied event, microseconds since the epoch.
    pub updated_at_us: i64,
    /// Owner epoch of the last applied event (0 on a single node).
    pub owner_epoch: u64,
}

impl EntityRecord {
    fn is_live(&self) -> bool {
        self.data.is_some()
    }
}

/// The entities one shard owns, and the pure functions that change them.
///
/// Ordered by key so that listing a namespace and type is a range scan and
/// pagination is stable.
#[derive(Debug, Default, Clone)]
pub struct ShardState {
    entities: BTreeMap<EntityKey, EntityRecord>,
    live: u64,
    live_bytes: u64,
}

/// Changes validated within the current batch but not yet durable: later
/// commands of the same batch must see them, readers must not.
pub type PendingChanges = HashMap<EntityKey, (u64, Option<Json>)>;

/// Limits a shard enforces while preparing events.
#[derive(Debug, Clone, Copy)]
pub struct PrepareLimits {
    /// Largest serialized entity accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Deepest nesting of the entity a merge patch produces.
    pub max_json_depth: usize,
}

impl PrepareLimits {
    fn json(&self) -> JsonLimits {
        JsonLimits {
            max_bytes: self.max_payload_bytes,
            max_depth: self.max_json_depth,
        }
    }
}

impl ShardState {
    /// An empty shard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an event: the highest version wins. Returns whether the state
    /// changed; an event at or below the stored version is a no-op, which makes
    /// replay idempotent and order-insensitive per entity.
    pub fn apply(&mut self, event: &Event) -> bool {
        self.apply_owned(event.clone())
    }

    /// [`ShardState::apply`] taking the event by value, so that its strings and
    /// state move into the map instead of being copied (recovery and the write
    /// path own their events).
    pub fn apply_owned(&mut self, event: Event) -> bool {
        let live = event.kind != EventKind::Deleted && event.state.is_some();
        let data = if live { event.state } else { None };
        let new_bytes = data.as_ref().map_or(0, |s| s.len() as u64);
        let key = EntityKey {
            namespace: event.namespace,
            entity_type: event.entity_type,
            id: event.entity_id,
        };
        match self.entities.entry(key) {
            Entry::Occupied(entry) => {
                let record = entry.into_mut();
                // Owner epoch first, then version: an event written under a
                // later ownership grant of the shard wins over every event
                // of an earlier one, whatever their versions, so a stale
                // owner's late event never overrides nor ties with the
                // current owner's (docs/cluster.md). On one node every epoch
                // is 0 and this is "highest version wins".
                if (record.owner_epoch, record.version) >= (event.owner_epoch, event.version) {
                    return false;
                }
                record.owner_epoch = event.owner_epoch;
                if let Some(old) = &record.data {
                    self.live -= 1;
                    self.live_bytes -= old.len() as u64;
                }
                record.version = event.version;
                record.data = data;
                record.updated_at_us = event.timestamp_us;
                // Equal while the entity is live (prepare refuses a change);
                // a re-creation after a delete may carry another key, and
                // the newest version's key is the entity's.
                if record.partition_key != event.partition_key {
                    record.partition_key = event.partition_key;
                    record.key_hash = event.key_hash;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(EntityRecord {
                    version: event.version,
                    data,
                    partition_key: event.partition_key,
                    key_hash: event.key_hash,
                    updated_at_us: event.timestamp_us,
                    owner_epoch: event.owner_epoch,
                });
            }
        }
        if live {
            self.live += 1;
            self.live_bytes += new_bytes;
        }
        true
    }

    /// Validates `command` against the state plus `pending` and builds the event
    /// it would emit. Changes nothing: the caller appends the event durably,
    /// then applies it.
    ///
    /// `version_floor` is the entity's latest version on any shard (from the
    /// [`crate::PartitionKeyIndex`]): the new event's version exceeds it, so
    /// that an entity re-created on another shard outranks its tombstone.
    pub fn prepare(
        &self,
        pending: &PendingChanges,
        command: &Command,
        shard: u32,
        now_us: i64,
        limits: PrepareLimits,
        version_floor: u64,
    ) -> Result<Event> {
        let key = &command.key;
        let record = self.entities.get(key);
        let (stored_version, current) = match pending.get(key) {
            Some((version, data)) => (*version, data.as_ref()),
            None => match record {
                Some(record) => (record.version, record.data.as_ref()),
                None => (0, None),
            },
        };
        let live_version = if current.is_some() { stored_version } else { 0 };
        if let Some(record) = record
            && record.is_live()
            && record.partition_key != command.partition_key
        {
            return Err(Error::PartitionKeyImmutable {
                entity: key.display(),
                attempted: command.partition_key.clone(),
                reason: format!(
                    "it is stored under {:?} at version {}, this {} carries {:?} (delete it first to re-create it under another key)",
                    record.partition_key,
                    record.version,
                    command.op.name(),
                    command.partition_key
                ),
            });
        }
        if let Some(expected) = command.expected_version
            && expected != live_version
        {
            return Err(Error::VersionConflict {
                entity: key.display(),
                expected,
                actual: live_version,
            });
        }
        let (kind, state) = match &command.op {
            Operation::Create(data) => {
                if current.is_some() {
                    return Err(Error::AlreadyExists {
                        entity: key.display(),
                        version: live_version,
                    });
                }
                (EventKind::Created, Some(data.clone()))
            }
            Operation::Upsert(data) => {
                let kind = if current.is_some() {
                    EventKind::Updated
                } else {
                    EventKind::Created
                };
                (kind, Some(data.clone()))
            }
            Operation::Update(patch) => {
                let Some(current) = current else {
                    return Err(Error::NotFound {
                        entity: key.display(),
                    });
                };
                let json = limits.json();
                let Ok(mut value) = current.to_value() else {
                    // Written before the depth limit (or deeper than any
                    // parser allows): a put replaces it without parsing it.
                    json.check_text(key, JsonRole::Stored, current.as_str())?;
                    return Err(json.too_deep(key, JsonRole::Stored));
                };
                if depth_exceeds(patch, limits.max_json_depth) {
                    return Err(json.too_deep(key, JsonRole::Patch));
                }
                merge_patch(&mut value, patch);
                if depth_exceeds(&value, limits.max_json_depth) {
                    return Err(json.too_deep(key, JsonRole::Patched));
                }
                let merged = Json::from_value(&value).map_err(|_| Error::InvalidEntity {
                    entity: key.display(),
                    reason:
                        "the merge patch would make the entity something other than a JSON object"
                            .into(),
                })?;
                (EventKind::Updated, Some(merged))
            }
            Operation::Delete => {
                if current.is_none() {
                    return Err(Error::NotFound {
                        entity: key.display(),
                    });
                }
                (EventKind::Deleted, None)
            }
            Operation::Restore { data, version } => {
                // At or past the version here (or on another shard, a
                // tombstone included): this deployment's history already
                // covers it, so the restore changes nothing.
                let current_version = stored_version.max(version_floor);
                if *version <= current_version {
                    return Err(Error::AlreadyRestored {
                        entity: key.display(),
                        version: *version,
                        current: current_version,
                    });
                }
                let kind = if current.is_some() {
                    EventKind::Updated
                } else {
                    EventKind::Created
                };
                (kind, Some(data.clone()))
            }
        };
        if let Some(state) = &state
            && state.len() > limits.max_payload_bytes
        {
            return Err(Error::PayloadTooLarge {
                entity: key.display(),
                size: state.len(),
                limit: limits.max_payload_bytes,
            });
        }
        // Versions continue past a tombstone so that a re-created entity
        // outranks its own deletion on replay, on this shard or another.
        let version = match &command.op {
            Operation::Restore { version, .. } => *version,
            _ => stored_version.max(version_floor) + 1,
        };
        Ok(Event {
            event_id: Uuid::now_v7(),
            idempotency_key: command
                .idempotency_key
                .clone()
                .unwrap_or_else(|| Event::derived_idempotency_key(key, version)),
            kind,
            namespace: key.namespace.clone(),
            entity_type: key.entity_type.clone(),
            entity_id: key.id.clone(),
            partition_key: command.partition_key.clone(),
            key_hash: command.key_hash,
            shard,
            version,
            timestamp_us: now_us,
            state,
            request_fingerprint: None,
            owner_epoch: 0,
        })
    }

    /// The live entity, if any.
    pub fn get(&self, key: &EntityKey) -> Option<Entity> {
        let record = self.entities.get(key)?;
        Some(Entity {
            key: key.clone(),
            version: record.version,
            data: record.data.clone()?,
            updated_at_us: record.updated_at_us,
        })
    }

    /// The record of an entity, live or tombstone.
    pub fn record(&self, key: &EntityKey) -> Option<&EntityRecord> {
        self.entities.get(key)
    }

    /// Live entities of one namespace and type with ids after `after`, in id
    /// order, at most `limit`.
    pub fn list(
        &self,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Entity> {
        self.list_where(namespace, entity_type, after, limit, |_| true)
    }

    /// [`ShardState::list`] of the entities whose record passes `keep` (a
    /// shard lists only the entities it owns while a migration has copies
    /// of them on two shards).
    pub fn list_where(
        &self,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&EntityRecord) -> bool,
    ) -> Vec<Entity> {
        let start = EntityKey::new(namespace, entity_type, after.unwrap_or(""));
        let lower = if after.is_some() {
            Bound::Excluded(start)
        } else {
            Bound::Included(start)
        };
        self.entities
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.namespace == namespace && k.entity_type == entity_type)
            .filter(|(_, r)| keep(r))
            .filter_map(|(k, r)| {
                Some(Entity {
                    key: k.clone(),
                    version: r.version,
                    data: r.data.clone()?,
                    updated_at_us: r.updated_at_us,
                })
            })
            .take(limit)
            .collect()
    }

    /// Live entities of one namespace, every type, in (type, id) order after
    /// the key `after`, at most `limit`, each with its partition key, whose
    /// record passes `keep`: a tenant's export, page by page.
    pub fn list_namespace_where(
        &self,
        namespace: &str,
        after: Option<&EntityKey>,
        limit: usize,
        keep: impl Fn(&EntityRecord) -> bool,
    ) -> Vec<(Entity, String)> {
        let lower = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Included(EntityKey::new(namespace, "", "")),
        };
        self.entities
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.namespace == namespace)
            .filter(|(_, r)| keep(r))
            .filter_map(|(k, r)| {
                let entity = Entity {
                    key: k.clone(),
                    version: r.version,
                    data: r.data.clone()?,
                    updated_at_us: r.updated_at_us,
                };
                Some((entity, r.partition_key.clone()))
            })
            .take(limit)
            .collect()
    }

    /// Every record, live and tombstone, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&EntityKey, &EntityRecord)> {
        self.entities.iter()
    }

    /// Number of live entities.
    pub fn live_entities(&self) -> u64 {
        self.live
    }

    /// Bytes of live entity data.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Number of tombstones.
    pub fn tombstones(&self) -> u64 {
        self.entities.len() as u64 - self.live
    }

    /// Keeps only the records (live and tombstones) for which `keep` holds;
    /// returns how many were removed. A migration's clean-up drops the
    /// entities that moved to another shard.
    pub fn retain(&mut self, mut keep: impl FnMut(&EntityKey, &EntityRecord) -> bool) -> usize {
        let before = self.entities.len();
        let (mut live, mut live_bytes) = (self.live, self.live_bytes);
        self.entities.retain(|key, record| {
            let kept = keep(key, record);
            if !kept && let Some(data) = &record.data {
                live -= 1;
                live_bytes -= data.len() as u64;
            }
            kept
        });
        self.live = live;
        self.live_bytes = live_bytes;
        before - self.entities.len()
    }

    /// A state from records in strictly ascending key order (a snapshot's),
    /// or `None` when they are not in that order.
    pub(crate) fn from_sorted(records: Vec<(EntityKey, EntityRecord)>) -> Option<Self> {
        if records.windows(2).any(|w| w[0].0 >= w[1].0) {
            return None;
        }
        let (mut live, mut live_bytes) = (0, 0);
        for (_, record) in &records {
            if let Some(data) = &record.data {
                live += 1;
                live_bytes += data.len() as u64;
            }
        }
        // Sorted input: the map is built in bulk, without a search per key.
        Some(ShardState {
            entities: records.into_iter().collect(),
            live,
            live_bytes,
        })
    }

    /// Drops tombstones older than `before_us`. Safe once no event older than
    /// the tombstone can be replayed into this state any more (the events below
    /// it have been landed and compacted); floe calls it only then.
    pub fn compact_tombstones(&mut self, before_us: i64) -> usize {
        let before = self.entities.len();
        self.entities
            .retain(|_, r| r.is_live() || r.updated_at_us >= before_us);
        before - self.entities.len()
    }
}

#[cfg(test)]
mod tests;
