use serde_json::Value;

use crate::entity::EntityKey;
use crate::event::EventKind;
use crate::json::Json;

/// What a write does to its entity.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Create an entity that does not exist (or was deleted).
    Create(Json),
    /// Apply a JSON merge patch (RFC 7386) to an existing entity.
    Update(Value),
    /// Create or replace.
    Upsert(Json),
    /// Delete an existing entity, leaving a versioned tombstone.
    Delete,
}

impl Operation {
    /// The operation's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create(_) => "create",
            Operation::Update(_) => "update",
            Operation::Upsert(_) => "upsert",
            Operation::Delete => "delete",
        }
    }
}

/// A routed write: the operation plus everything a shard needs to validate it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The entity written.
    pub key: EntityKey,
    /// What to do.
    pub op: Operation,
    /// Fail with a version conflict unless the live entity has this version
    /// (0 means "must not exist").
    pub expected_version: Option<u64>,
    /// The caller's idempotency key; floe derives one when absent.
    pub idempotency_key: Option<String>,
    /// The partition key the entity was routed by.
    pub partition_key: String,
    /// Hash of `partition_key`.
    pub key_hash: u64,
}

/// The outcome of an acknowledged write. A retry with the same idempotency key
/// gets this same value back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteAck {
    /// The entity written.
    #[serde(flatten)]
    pub key: EntityKey,
    /// Its version after the write.
    pub version: u64,
    /// What the write did.
    pub kind: EventKind,
    /// Id of the event that recorded it.
    pub event_id: uuid::Uuid,
    /// The event's idempotency key.
    pub idempotency_key: String,
    /// The shard that owns the entity.
    pub shard: u32,
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target_map) = target else {
        unreachable!("target was just made an object")
    };
    for (name, value) in patch_map {
        if value.is_null() {
            target_map.remove(name);
        } else {
            merge_patch(target_map.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }
}
