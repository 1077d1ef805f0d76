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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const LIMITS: PrepareLimits = PrepareLimits {
        max_payload_bytes: 1024,
        max_json_depth: 8,
    };

    fn command(id: &str, op: Operation) -> Command {
        Command {
            key: EntityKey::new("acme", "Order", id),
            op,
            expected_version: None,
            idempotency_key: None,
            partition_key: "acme".into(),
            key_hash: 7,
        }
    }

    fn data(v: serde_json::Value) -> Json {
        Json::from_value(&v).unwrap()
    }

    /// Prepares and applies, as a shard worker does after the append.
    fn run(state: &mut ShardState, cmd: &Command) -> Result<Event> {
        let event = state.prepare(&PendingChanges::new(), cmd, 0, 1, LIMITS, 0)?;
        assert!(state.apply(&event));
        Ok(event)
    }

    #[test]
    fn a_restore_sets_its_version_and_never_goes_back() {
        let mut state = ShardState::new();
        let restore = |v: u64| {
            command(
                "o1",
                Operation::Restore {
                    data: data(json!({ "v": v })),
                    version: v,
                },
            )
        };
        let first = run(&mut state, &restore(4)).unwrap();
        assert_eq!((first.kind, first.version), (EventKind::Created, 4));
        let next = run(&mut state, &restore(6)).unwrap();
        assert_eq!((next.kind, next.version), (EventKind::Updated, 6));
        for v in [2, 6] {
            let refused = state.prepare(&PendingChanges::new(), &restore(v), 0, 1, LIMITS, 0);
            assert!(
                matches!(refused, Err(Error::AlreadyRestored { current: 6, .. })),
                "{refused:?}"
            );
        }
        // A version another shard holds (a tombstone after a move) counts.
        let floor = state.prepare(&PendingChanges::new(), &restore(7), 0, 1, LIMITS, 9);
        assert!(matches!(
            floor,
            Err(Error::AlreadyRestored { current: 9, .. })
        ));
        // The restored entity goes on from its version.
        let update = run(
            &mut state,
            &command("o1", Operation::Update(json!({ "w": 1 }))),
        )
        .unwrap();
        assert_eq!(update.version, 7);
    }

    #[test]
    fn create_update_delete_recreate() {
        let mut state = ShardState::new();
        let key = EntityKey::new("acme", "Order", "o1");
        let e1 = run(
            &mut state,
            &command("o1", Operation::Create(data(json!({"a":1})))),
        )
        .unwrap();
        assert_eq!((e1.kind, e1.version), (EventKind::Created, 1));
        assert_eq!(e1.idempotency_key, "acme/Order/o1@v1");
        let e2 = run(
            &mut state,
            &command("o1", Operation::Update(json!({"b":2}))),
        )
        .unwrap();
        assert_eq!(e2.state.unwrap().as_str(), r#"{"a":1,"b":2}"#);
        let e3 = run(&mut state, &command("o1", Operation::Delete)).unwrap();
        assert_eq!(
            (e3.kind, e3.version, e3.state),
            (EventKind::Deleted, 3, None)
        );
        assert_eq!(state.get(&key), None);
        assert_eq!(state.tombstones(), 1);
        let e4 = run(
            &mut state,
            &command("o1", Operation::Create(data(json!({"c":3})))),
        )
        .unwrap();
        assert_eq!((e4.kind, e4.version), (EventKind::Created, 4));
        assert_eq!(state.get(&key).unwrap().version, 4);
        assert_eq!(state.live_entities(), 1);
    }

    #[test]
    fn bad_writes_are_typed_errors_and_change_nothing() {
        let mut state = ShardState::new();
        run(
            &mut state,
            &command("o1", Operation::Create(data(json!({"a":1})))),
        )
        .unwrap();
        let before = state
            .clone()
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect::<Vec<_>>();
        let pending = PendingChanges::new();
        let err = |cmd: Command| state.prepare(&pending, &cmd, 0, 1, LIMITS, 0).unwrap_err();
        assert!(matches!(
            err(command("o1", Operation::Create(data(json!({}))))),
            Error::AlreadyExists { version: 1, .. }
        ));
        assert!(matches!(
            err(command("o2", Operation::Delete)),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            err(command("o2", Operation::Update(json!({"a":1})))),
            Error::NotFound { .. }
        ));
        let mut stale = command("o1", Operation::Update(json!({"a":2})));
        stale.expected_version = Some(3);
        let message = err(stale).to_string();
        assert_eq!(
            message,
            "version conflict on acme/Order/o1: expected version 3, found 1"
        );
        let big = data(json!({ "blob": "x".repeat(2000) }));
        assert!(matches!(
            err(command("o3", Operation::Upsert(big))),
            Error::PayloadTooLarge { limit: 1024, .. }
        ));
        assert!(matches!(
            err(command("o1", Operation::Update(json!("not an object")))),
            Error::InvalidEntity { .. }
        ));
        let mut moved = command("o1", Operation::Upsert(data(json!({}))));
        moved.partition_key = "globex".into();
        assert!(matches!(
            err(moved),
            Error::PartitionKeyImmutable { attempted, .. } if attempted == "globex"
        ));
        let deep = json!({"a":{"b":{"c":{"d":{"e":{"f":{"g":{}}}}}}}});
        assert!(matches!(
            err(command("o1", Operation::Update(json!({"x": deep})))),
            Error::JsonTooDeep {
                what: "merge patch",
                ..
            }
        ));
        let after = state
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect::<Vec<_>>();
        assert_eq!(before, after);
    }

    /// An entity an older build stored deeper than any parser allows: a
    /// patch is a typed error, a put replaces it.
    #[test]
    fn a_stored_entity_too_deep_to_parse_can_be_replaced_not_patched() {
        let mut state = ShardState::new();
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(500), "]".repeat(500));
        let mut event = run(
            &mut state,
            &command("o1", Operation::Create(data(json!({})))),
        )
        .unwrap();
        event.version = 2;
        event.state = Some(Json::from_trusted(deep));
        assert!(state.apply(&event));
        let pending = PendingChanges::new();
        let patch = command("o1", Operation::Update(json!({"a": 1})));
        assert!(matches!(
            state.prepare(&pending, &patch, 0, 1, LIMITS, 0),
            Err(Error::JsonTooDeep {
                what: "stored entity",
                ..
            })
        ));
        let put = command("o1", Operation::Upsert(data(json!({"a": 1}))));
        assert_eq!(
            state
                .prepare(&pending, &put, 0, 1, LIMITS, 0)
                .unwrap()
                .version,
            3
        );
    }

    /// A re-creation under another key (after a delete) continues past the
    /// floor it is given, and the newest version's key becomes the record's.
    #[test]
    fn versions_continue_past_the_floor_and_the_newest_key_wins() {
        let state = ShardState::new();
        let mut cmd = command("o1", Operation::Create(data(json!({}))));
        cmd.partition_key = "b".into();
        let event = state
            .prepare(&PendingChanges::new(), &cmd, 0, 1, LIMITS, 7)
            .unwrap();
        assert_eq!(event.version, 8);
        // Replayed next to the tombstone under the old key: the newer wins.
        let mut tombstone = event.clone();
        (tombstone.version, tombstone.state, tombstone.partition_key) = (7, None, "a".into());
        tombstone.kind = EventKind::Deleted;
        let mut replayed = ShardState::new();
        replayed.apply(&tombstone);
        replayed.apply(&event);
        let record = replayed.record(&cmd.key).unwrap();
        assert_eq!((record.version, record.partition_key.as_str()), (8, "b"));
        assert!(record.data.is_some());
    }

    #[test]
    fn expected_version_zero_means_absent() {
        let mut state = ShardState::new();
        let mut cmd = command("o1", Operation::Upsert(data(json!({}))));
        cmd.expected_version = Some(0);
        run(&mut state, &cmd).unwrap();
        assert!(matches!(
            state.prepare(&PendingChanges::new(), &cmd, 0, 1, LIMITS, 0),
            Err(Error::VersionConflict {
                expected: 0,
                actual: 1,
                ..
            })
        ));
    }

    #[test]
    fn pending_changes_are_seen_within_a_batch() {
        let state = ShardState::new();
        let mut pending = PendingChanges::new();
        let create = command("o1", Operation::Create(data(json!({"n":1}))));
        let e1 = state.prepare(&pending, &create, 0, 1, LIMITS, 0).unwrap();
        pending.insert(create.key.clone(), (e1.version, e1.state.clone()));
        let update = command("o1", Operation::Update(json!({"n":2})));
        let e2 = state.prepare(&pending, &update, 0, 1, LIMITS, 0).unwrap();
        assert_eq!(e2.version, 2);
        assert!(
            state.get(&create.key).is_none(),
            "nothing visible before apply"
        );
    }

    #[test]
    fn list_is_ordered_filtered_and_paginated() {
        let mut state = ShardState::new();
        for id in ["c", "a", "b", "d"] {
            run(&mut state, &command(id, Operation::Create(data(json!({}))))).unwrap();
        }
        run(&mut state, &command("b", Operation::Delete)).unwrap();
        let mut other = command("z", Operation::Create(data(json!({}))));
        other.key.entity_type = "Menu".into();
        run(&mut state, &other).unwrap();
        let ids = |v: Vec<Entity>| v.into_iter().map(|e| e.key.id).collect::<Vec<_>>();
        assert_eq!(ids(state.list("acme", "Order", None, 10)), ["a", "c", "d"]);
        assert_eq!(ids(state.list("acme", "Order", Some("a"), 1)), ["c"]);
        assert_eq!(ids(state.list("acme", "Menu", None, 10)), ["z"]);
        assert!(state.list("other", "Order", None, 10).is_empty());
    }

    #[test]
    fn tombstone_blocks_resurrection_until_compacted() {
        let mut state = ShardState::new();
        let e1 = run(
            &mut state,
            &command("o1", Operation::Create(data(json!({})))),
        )
        .unwrap();
        run(&mut state, &command("o1", Operation::Delete)).unwrap();
        assert!(!state.apply(&e1), "an older event cannot resurrect");
        assert_eq!(
            state.compact_tombstones(0),
            0,
            "tombstone is newer than the cut"
        );
        assert_eq!(state.compact_tombstones(i64::MAX), 1);
    }

    #[test]
    fn retain_drops_records_and_keeps_the_counters_true() {
        let mut state = ShardState::new();
        for (id, pk) in [("a", "p1"), ("b", "p2"), ("c", "p2")] {
            let mut c = command(id, Operation::Upsert(data(json!({"id": id}))));
            c.partition_key = pk.into();
            let e = state
                .prepare(&PendingChanges::new(), &c, 0, 1, LIMITS, 0)
                .unwrap();
            state.apply(&e);
        }
        let bytes_a = state
            .get(&EntityKey::new("acme", "Order", "a"))
            .unwrap()
            .data
            .len() as u64;
        assert_eq!(state.retain(|_, r| r.partition_key == "p1"), 2);
        assert_eq!(state.live_entities(), 1);
        assert_eq!(state.live_bytes(), bytes_a);
        let listed = state.list_where("acme", "Order", None, 10, |r| r.partition_key == "p2");
        assert!(listed.is_empty());
        assert_eq!(state.list("acme", "Order", None, 10).len(), 1);
    }

    /// Events of a few entities with distinct versions and random kinds.
    fn histories() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec((0..4usize, 1..12usize, any::<u8>()), 1..40).prop_map(|specs| {
            let mut events = Vec::new();
            for (entity, len, seed) in specs {
                for version in 1..=len as u64 {
                    let deleted = (seed as u64 + version).is_multiple_of(5);
                    events.push(Event {
                        event_id: Uuid::nil(),
                        idempotency_key: format!("e{entity}@v{version}"),
                        kind: if deleted {
                            EventKind::Deleted
                        } else {
                            EventKind::Updated
                        },
                        namespace: "ns".into(),
                        entity_type: "T".into(),
                        entity_id: format!("e{entity}"),
                        partition_key: format!("e{entity}"),
                        key_hash: entity as u64,
                        shard: 0,
                        version,
                        timestamp_us: version as i64,
                        request_fingerprint: None,
                        owner_epoch: 0,
                        state: (!deleted)
                            .then(|| Json::from_value(&json!({ "v": version })).unwrap()),
                    });
                }
            }
            // Several specs may name one entity: keep one event per version.
            let mut best: HashMap<String, Vec<Event>> = HashMap::new();
            for event in events {
                best.entry(event.entity_id.clone()).or_default().push(event);
            }
            best.into_values()
                .flat_map(|mut v| {
                    v.sort_by_key(|e| e.version);
                    v.dedup_by_key(|e| e.version);
                    v
                })
                .collect()
        })
    }

    fn snapshot(state: &ShardState) -> Vec<(EntityKey, u64, Option<Json>)> {
        state
            .iter()
            .map(|(k, r)| (k.clone(), r.version, r.data.clone()))
            .collect()
    }

    /// Cluster mode: owner A (epoch 3) wrote up to version 5; owner B (epoch
    /// 8) restored that and wrote version 6; A's late, never acknowledged
    /// events (versions 6 and 7) landed afterwards. In any order, B's event
    /// is the state: the stale ones neither tie with it nor override it.
    #[test]
    fn a_later_owner_epoch_wins_over_a_stale_owners_higher_or_equal_version() {
        let mut state = ShardState::new();
        let put = command("o-1", Operation::Upsert(data(json!({ "by": "a" }))));
        let mut a5 = run(&mut state, &put).unwrap();
        a5.version = 5;
        a5.owner_epoch = 3;
        let stamp = |mut e: Event, version, epoch, by: &str| {
            e.version = version;
            e.owner_epoch = epoch;
            e.state = Some(data(json!({ "by": by })));
            e
        };
        let b6 = stamp(a5.clone(), 6, 8, "b");
        let late6 = stamp(a5.clone(), 6, 3, "a-late");
        let late7 = stamp(a5.clone(), 7, 3, "a-late");
        let events = [a5, b6, late6, late7];
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
            let mut replayed = ShardState::new();
            for i in order {
                replayed.apply(&events[i]);
            }
            let entity = replayed.get(&put.key).unwrap();
            assert_eq!(entity.version, 6, "{order:?}");
            assert_eq!(entity.data.to_value().unwrap(), json!({ "by": "b" }));
        }
    }

    proptest! {
        #[test]
        fn apply_is_order_insensitive_and_idempotent(
            events in histories(),
            seed in any::<u64>(),
        ) {
            let mut in_order = ShardState::new();
            for event in &events {
                in_order.apply(event);
            }
            // A deterministic shuffle, then every event applied twice.
            let mut shuffled = events.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut replayed = ShardState::new();
            for event in shuffled.iter().chain(shuffled.iter()) {
                replayed.apply(event);
            }
            prop_assert_eq!(snapshot(&in_order), snapshot(&replayed));
            prop_assert_eq!(in_order.live_entities(), replayed.live_entities());
            prop_assert_eq!(in_order.live_bytes(), replayed.live_bytes());
        }
    }
}
