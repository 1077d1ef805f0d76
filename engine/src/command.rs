use serde_json::Value;

use crate::entity::EntityKey;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::json::Json;

/// Longest idempotency key a caller may give, in bytes. Keys live in every
/// shard's window, the cross-shard index and each event in the lake.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 1024;

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
    /// Set the entity to this state at exactly this version, unless it is
    /// already there or past it: how an export of another deployment is
    /// imported (`floe export` / `floe import`), so versions carry over and
    /// importing twice changes nothing.
    Restore {
        /// The state.
        data: Json,
        /// The version it had where it was exported.
        version: u64,
    },
}

impl Operation {
    /// The operation's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create(_) => "create",
            Operation::Update(_) => "update",
            Operation::Upsert(_) => "upsert",
            Operation::Delete => "delete",
            Operation::Restore { .. } => "restore",
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

impl Command {
    /// Refuses a caller's idempotency key that cannot serve as one: empty
    /// (every such write would claim the same key), longer than
    /// [`MAX_IDEMPOTENCY_KEY_BYTES`], or holding a control character (as an
    /// [`EntityKey`] may not). Shards check it before anything else.
    pub fn check_idempotency_key(&self) -> Result<()> {
        let Some(key) = &self.idempotency_key else {
            return Ok(());
        };
        let reason = if key.is_empty() {
            "it is empty (leave it out to have floe derive one)".to_string()
        } else if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            format!(
                "it is {} bytes, more than {MAX_IDEMPOTENCY_KEY_BYTES}",
                key.len()
            )
        } else if key.chars().any(char::is_control) {
            "it contains a control character".to_string()
        } else {
            return Ok(());
        };
        Err(Error::InvalidIdempotencyKey {
            entity: self.key.display(),
            reason,
        })
    }

    /// A fingerprint of the request, stored with its idempotency key: a
    /// second request with the key is a retry only if its fingerprint is the
    /// same. It covers the operation, the entity, the data or patch, the
    /// expected version and the partition key.
    ///
    /// Data and patches count by content, not spelling: they are hashed in a
    /// canonical form (keys sorted, whitespace gone), so a retry that
    /// re-serializes the same object is still a retry. The hash
    /// (XXH3-64 over length-prefixed fields) is stable across builds and
    /// processes, since fingerprints are persisted in events.
    pub fn fingerprint(&self) -> u64 {
        let mut buf = Vec::with_capacity(128);
        let (tag, body) = match &self.op {
            Operation::Create(data) => (0u8, Some(canonical(data.as_str()))),
            Operation::Update(patch) => (1, Some(canonical_value(patch))),
            Operation::Upsert(data) => (2, Some(canonical(data.as_str()))),
            Operation::Delete => (3, None),
            Operation::Restore { data, version } => {
                let mut body = version.to_le_bytes().to_vec();
                body.extend_from_slice(&canonical(data.as_str()));
                (4, Some(body))
            }
        };
        buf.push(tag);
        for part in [
            &self.key.namespace,
            &self.key.entity_type,
            &self.key.id,
            &self.partition_key,
        ] {
            put(&mut buf, part.as_bytes());
        }
        match self.expected_version {
            Some(v) => {
                buf.push(1);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            None => buf.push(0),
        }
        if let Some(body) = body {
            put(&mut buf, &body);
        }
        xxhash_rust::xxh3::xxh3_64(&buf)
    }

    /// Whether an event could have been written by this command, judged from
    /// what every event stores (entity, partition key and kind): the check
    /// left for events without a fingerprint (written by older builds, or read
    /// back from the lake, which does not store fingerprints).
    pub fn could_have_written(
        &self,
        event_key: &EntityKey,
        key_hash: u64,
        kind: EventKind,
    ) -> bool {
        let kind_fits = match self.op {
            Operation::Create(_) => kind == EventKind::Created,
            Operation::Update(_) => kind == EventKind::Updated,
            Operation::Upsert(_) => kind != EventKind::Deleted,
            Operation::Delete => kind == EventKind::Deleted,
            Operation::Restore { .. } => kind != EventKind::Deleted,
        };
        kind_fits && *event_key == self.key && key_hash == self.key_hash
    }
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// The canonical bytes of a JSON text: the parsed value with object keys in
/// sorted order (see [`canonical_value`]); the text itself when it does not
/// parse (floe checked it before, so that does not happen on the write path).
fn canonical(text: &str) -> Vec<u8> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => canonical_value(&value),
        Err(_) => text.as_bytes().to_vec(),
    }
}

/// A tagged, length-prefixed encoding of a JSON value with object keys
/// sorted, independent of how serde_json orders maps (its `preserve_order`
/// feature may be on in some builds). Iterative: any depth is safe.
fn canonical_value(value: &Value) -> Vec<u8> {
    enum Item<'a> {
        Value(&'a Value),
        Key(&'a str),
        End,
    }
    let mut out = Vec::new();
    let mut stack = vec![Item::Value(value)];
    while let Some(item) = stack.pop() {
        match item {
            Item::End => out.push(b')'),
            Item::Key(k) => {
                out.push(b'k');
                put(&mut out, k.as_bytes());
            }
            Item::Value(Value::Null) => out.push(b'n'),
            Item::Value(Value::Bool(b)) => out.push(if *b { b't' } else { b'f' }),
            Item::Value(Value::Number(n)) => {
                out.push(b'#');
                put(&mut out, n.to_string().as_bytes());
            }
            Item::Value(Value::String(s)) => {
                out.push(b's');
                put(&mut out, s.as_bytes());
            }
            Item::Value(Value::Array(items)) => {
                out.push(b'[');
                stack.push(Item::End);
                stack.extend(items.iter().rev().map(Item::Value));
            }
            Item::Value(Value::Object(map)) => {
                out.push(b'{');
                stack.push(Item::End);
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| b.0.cmp(a.0));
                for (k, v) in entries {
                    stack.push(Item::Value(v));
                    stack.push(Item::Key(k));
                }
            }
        }
    }
    out
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

    /// The fingerprint of `upsert(r#"{"a":1,"b":[1,2]}"#)`, as events store it.
    const GOLDEN: u64 = 0xe072_e4d7_485e_b165;

    fn upsert(text: &str) -> Command {
        Command {
            key: EntityKey::new("t", "T", "1"),
            op: Operation::Upsert(Json::parse(text).unwrap()),
            expected_version: None,
            idempotency_key: Some("k".into()),
            partition_key: "t".into(),
            key_hash: 9,
        }
    }

    #[test]
    fn idempotency_keys_that_cannot_serve_are_refused() {
        let with = |key: Option<String>| Command {
            idempotency_key: key,
            ..upsert("{}")
        };
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
        for good in [
            None,
            Some("k".to_string()),
            Some("ключ-1".into()),
            Some(longest.clone()),
        ] {
            with(good).check_idempotency_key().unwrap();
        }
        for (bad, reason) in [
            (String::new(), "empty"),
            (format!("{longest}k"), "1025 bytes"),
            ("a\nb".into(), "control character"),
            ("\u{7f}".into(), "control character"),
        ] {
            let err = with(Some(bad)).check_idempotency_key().unwrap_err();
            assert!(
                matches!(err, Error::InvalidIdempotencyKey { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains(reason), "{err}");
            assert!(err.to_string().contains("t/T/1"), "{err}");
        }
    }

    #[test]
    fn fingerprints_tell_requests_apart_and_retries_not() {
        let base = upsert(r#"{"a":1,"b":[1,2]}"#);
        assert_eq!(
            base.fingerprint(),
            upsert(r#"{ "b": [1, 2], "a": 1 }"#).fingerprint(),
            "same content, other spelling: a retry"
        );
        let mut variants = vec![upsert(r#"{"a":2,"b":[1,2]}"#)];
        let mut other = base.clone();
        other.key.id = "2".into();
        variants.push(other);
        let mut other = base.clone();
        other.partition_key = "u".into();
        variants.push(other);
        let mut other = base.clone();
        other.expected_version = Some(0);
        variants.push(other);
        let mut other = base.clone();
        other.op = Operation::Create(Json::parse(r#"{"a":1,"b":[1,2]}"#).unwrap());
        variants.push(other);
        let mut other = base.clone();
        other.op = Operation::Update(json!({"a":1,"b":[1,2]}));
        variants.push(other);
        let mut other = base.clone();
        other.op = Operation::Delete;
        variants.push(other);
        // Length prefixes: moving a byte between parts changes the fingerprint.
        let mut other = base.clone();
        other.key = EntityKey::new("tT", "", "1");
        variants.push(other);
        for v in &variants {
            assert_ne!(base.fingerprint(), v.fingerprint(), "{v:?}");
        }
        // Persisted in events: it must never change between builds.
        assert_eq!(base.fingerprint(), GOLDEN, "{:#x}", base.fingerprint());
    }

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
