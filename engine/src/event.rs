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
    /// Fingerprint of the request that made the change when it carried a
    /// caller idempotency key (see [`crate::Command::fingerprint`]): a reuse of
    /// the key for another request is refused, also after a restart. `None`
    /// for derived keys and for events written before fingerprints existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<u64>,
    /// Cluster mode: the owner epoch (the etcd revision of the ownership
    /// grant) the shard was served under when the event was written; 0 on a
    /// single node. Among events of one entity the larger epoch wins before
    /// the version is compared, so a stale owner's late event never
    /// overrides or ties with a later owner's (docs/cluster.md, "Fencing").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub owner_epoch: u64,
}

fn is_zero(epoch: &u64) -> bool {
    *epoch == 0
}

impl Event {
    /// The entity this event is about.
    pub fn entity_key(&self) -> EntityKey {
        EntityKey::new(&self.namespace, &self.entity_type, &self.entity_id)
    }

    /// Whether the idempotency key is the one floe derives (no caller key),
    /// checked without allocating: this runs for every replayed event.
    ///
    /// An event with a request fingerprint carries a caller key (floe stores
    /// fingerprints only for those). Otherwise the key is compared with the
    /// derived key of the event's own entity and version, in the current
    /// scheme and in the one before it (`namespace/type/id@vN` unescaped),
    /// which logs and lakes written by older builds still hold.
    pub fn has_derived_key(&self) -> bool {
        if self.request_fingerprint.is_some() {
            return false;
        }
        let parts = [
            self.namespace.as_str(),
            self.entity_type.as_str(),
            self.entity_id.as_str(),
        ];
        let key = self.idempotency_key.as_str();
        let escaped = strip_parts(key, parts, strip_escaped);
        let legacy = || strip_parts(key, parts, |rest, part| rest.strip_prefix(part));
        escaped
            .or_else(legacy)
            .is_some_and(|rest| is_version_suffix(rest, self.version))
    }

    /// The idempotency key floe derives when the caller gives none: the same
    /// logical change (this entity reaching this version) always gets the same
    /// key, and distinct (namespace, type, id, version) always get distinct keys.
    ///
    /// The scheme is `namespace/type/id@vN` with `%` written `%25` and `/`
    /// written `%2F` inside each part, so the parts stay readable and the two
    /// `/` separators are the only ones: `p/q%2Fr/s@v1` and `p%2Fq/r/s@v1` are
    /// two entities. `@` needs no escape: the version after the last `@v` is
    /// all digits. Names without `%` or `/` get the same key as before the
    /// escaping was introduced.
    pub fn derived_idempotency_key(key: &EntityKey, version: u64) -> String {
        use std::fmt::Write;
        let mut out =
            String::with_capacity(key.namespace.len() + key.entity_type.len() + key.id.len() + 24);
        push_escaped(&mut out, &key.namespace);
        out.push('/');
        push_escaped(&mut out, &key.entity_type);
        out.push('/');
        push_escaped(&mut out, &key.id);
        let _ = write!(out, "@v{version}");
        out
    }
}

fn push_escaped(out: &mut String, part: &str) {
    if !part.contains(['%', '/']) {
        out.push_str(part);
        return;
    }
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// `rest` without the escaped form of `part` at its start.
fn strip_escaped<'a>(rest: &'a str, part: &str) -> Option<&'a str> {
    let mut rest = rest;
    let mut plain = part;
    while let Some(at) = plain.find(['%', '/']) {
        rest = rest.strip_prefix(&plain[..at])?;
        let escape = if plain.as_bytes()[at] == b'%' {
            "%25"
        } else {
            "%2F"
        };
        rest = rest.strip_prefix(escape)?;
        plain = &plain[at + 1..];
    }
    rest.strip_prefix(plain)
}

/// `key` without `part0/part1/part2` at its start, each part stripped by `strip`.
fn strip_parts<'a>(
    key: &'a str,
    parts: [&str; 3],
    strip: impl Fn(&'a str, &str) -> Option<&'a str>,
) -> Option<&'a str> {
    let rest = strip(key, parts[0])?.strip_prefix('/')?;
    let rest = strip(rest, parts[1])?.strip_prefix('/')?;
    strip(rest, parts[2])
}

/// Whether `rest` is exactly `@v` followed by `version` in canonical decimal.
fn is_version_suffix(rest: &str, version: u64) -> bool {
    let Some(digits) = rest.strip_prefix("@v") else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'))
        && digits.parse::<u64>() == Ok(version)
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
    use proptest::prelude::*;

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
            request_fingerprint: None,
            owner_epoch: 0,
        }
    }

    #[test]
    fn derived_keys_are_recognised_exactly() {
        let derived = Event::derived_idempotency_key(&EntityKey::new("ns", "T", "a/b"), 12);
        assert_eq!(derived, "ns/T/a%2Fb@v12");
        assert!(event(&derived, 12).has_derived_key());
        // Logs written before the escaping hold the unescaped form.
        assert!(event("ns/T/a/b@v12", 12).has_derived_key(), "legacy scheme");
        for other in [
            "ns/T/a%2Fb@v13",
            "ns/T/a%2fb@v12",
            "ns/T/a/b@v13",
            "ns/T/a/b@v012",
            "ns/T/a/b@v+12",
            "ns/T/a/b@v12x",
            "ns/T/a/b@v",
            "pay-1",
            "ns/T/a@v12",
            "",
        ] {
            assert!(!event(other, 12).has_derived_key(), "{other}");
        }
        let mut keyed = event(&derived, 12);
        keyed.request_fingerprint = Some(1);
        assert!(!keyed.has_derived_key(), "a fingerprint marks a caller key");
    }

    #[test]
    fn the_colliding_pair_of_the_old_scheme_gets_two_keys() {
        let a = Event::derived_idempotency_key(&EntityKey::new("p", "q/r", "s"), 1);
        let b = Event::derived_idempotency_key(&EntityKey::new("p/q", "r", "s"), 1);
        assert_eq!(a, "p/q%2Fr/s@v1");
        assert_eq!(b, "p%2Fq/r/s@v1");
        // Plain names keep the key they always had.
        let plain = Event::derived_idempotency_key(&EntityKey::new("acme", "Order", "o-1"), 7);
        assert_eq!(plain, "acme/Order/o-1@v7");
        let percent = Event::derived_idempotency_key(&EntityKey::new("a%2F", "@", "x@v1"), 2);
        assert_eq!(percent, "a%252F/@/x@v1@v2");
    }

    /// Names made of the characters that matter to the scheme, plus spaces,
    /// colons and unicode.
    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("/".to_string()),
                Just("%".to_string()),
                Just("%2F".to_string()),
                Just("%25".to_string()),
                Just("@".to_string()),
                Just("@v1".to_string()),
                Just(":".to_string()),
                Just(" ".to_string()),
                Just("é".to_string()),
                Just("日本".to_string()),
                Just("a".to_string()),
                "\\PC{1,3}",
            ],
            1..6,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn derived_keys_are_injective(
            a in (name(), name(), name(), 1u64..1000),
            b in (name(), name(), name(), 1u64..1000),
        ) {
            let key = |(ns, ty, id, v): &(String, String, String, u64)| {
                Event::derived_idempotency_key(&EntityKey::new(ns, ty, id), *v)
            };
            prop_assert_eq!(a == b, key(&a) == key(&b), "{:?} {:?}", a, b);
        }

        #[test]
        fn derived_keys_are_recognised_for_their_own_event_only(
            (ns, ty, id, v) in (name(), name(), name(), 1u64..1000),
            other in name(),
        ) {
            let mut e = event("", v);
            (e.namespace, e.entity_type, e.entity_id) = (ns.clone(), ty.clone(), id.clone());
            e.idempotency_key = Event::derived_idempotency_key(&EntityKey::new(&ns, &ty, &id), v);
            prop_assert!(e.has_derived_key());
            // The key of another id (or version) is not this event's.
            let other_key = Event::derived_idempotency_key(&EntityKey::new(&ns, &ty, &other), v);
            e.idempotency_key = other_key;
            let legacy = format!("{ns}/{ty}/{id}@v{v}");
            prop_assert_eq!(e.has_derived_key(), other == id || e.idempotency_key == legacy);
        }
    }
}
