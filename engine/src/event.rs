use crate::json::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::entity::EntityKey;

/// What an event did to its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The entity came into existence (or came back after a delete).
    Created,
    /// The entity's data changed.
    Updated,
    /// The entity was deleted; the event carries no state.
    Deleted,
}

impl EventKind {
    /// The name used in logs, headers and Iceberg.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
        }
    }

    /// Parses [`EventKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(EventKind::Created),
            "updated" => Some(EventKind::Updated),
            "deleted" => Some(EventKind::Deleted),
            _ => None,
        }
    }
}

/// One change to one entity: self-describing and idempotent.
///
/// Invariants: `version` is the entity's version after the change (>= 1);
/// `state` is `Some` for created/updated and `None` for deleted; `key_hash` is
/// the routing hash of `partition_key` under the deployment's hash function.
/// Replaying events of one entity in any order converges because the highest
/// version wins (see [`crate::ShardState::apply`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// Stable across retries: the same logical change always has the same key.
    pub idempotency_key: String,
    /// Created, updated or deleted.
    pub kind: EventKind,
    /// Namespace of the entity.
    pub namespace: String,
    /// Type of the entity.
    pub entity_type: String,
    /// Id of the entity.
    pub entity_id: String,
    /// The partition key the entity was routed by.
    pub partition_key: String,
    /// 64-bit hash of `partition_key`, the input of routing.
    pub key_hash: u64,
    /// The shard that emitted the event.
    pub shard: u32,
    /// Entity version after the change.
    pub version: u64,
    /// When the change was made, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// The entity's data after the change; `None` on delete.
    pub state: Option<Json>,
}

impl Event {
    /// The entity this event is about.
    pub fn entity_key(&self) -> EntityKey {
        EntityKey::new(&self.namespace, &self.entity_type, &self.entity_id)
    }

    /// Whether the idempotency key is the one floe derives (no caller key),
    /// checked without allocating: this runs for every replayed event.
    pub fn has_derived_key(&self) -> bool {
        let rest = self.idempotency_key.as_str();
        let Some(rest) = rest.strip_prefix(self.namespace.as_str()) else {
            return false;
        };
        let Some(rest) = rest.strip_prefix('/') else {
            return false;
        };
        let Some(rest) = rest.strip_prefix(self.entity_type.as_str()) else {
            return false;
        };
        let Some(rest) = rest.strip_prefix('/') else {
            return false;
        };
        let Some(rest) = rest.strip_prefix(self.entity_id.as_str()) else {
            return false;
        };
        rest.strip_prefix("@v")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| {
                v == self.version && !rest[2..].starts_with('+') && !rest[2..].starts_with('0')
            })
    }

    /// The idempotency key floe derives when the caller gives none: the same
    /// logical change (this entity reaching this version) always gets the same key.
    pub fn derived_idempotency_key(key: &EntityKey, version: u64) -> String {
        format!("{key}@v{version}")
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, version: u64) -> Event {
        Event {
            event_id: Uuid::nil(),
            idempotency_key: key.into(),
            kind: EventKind::Updated,
            namespace: "ns".into(),
            entity_type: "T".into(),
            entity_id: "a/b".into(),
            partition_key: "ns".into(),
            key_hash: 0,
            shard: 0,
            version,
            timestamp_us: 0,
            state: None,
        }
    }

    #[test]
    fn derived_keys_are_recognised_exactly() {
        let derived = Event::derived_idempotency_key(&EntityKey::new("ns", "T", "a/b"), 12);
        assert_eq!(derived, "ns/T/a/b@v12");
        assert!(event(&derived, 12).has_derived_key());
        for other in [
            "ns/T/a/b@v13",
            "ns/T/a/b@v012",
            "ns/T/a/b@v+12",
            "ns/T/a/b@v12x",
            "pay-1",
            "ns/T/a@v12",
            "",
        ] {
            assert!(!event(other, 12).has_derived_key(), "{other}");
        }
    }
}
