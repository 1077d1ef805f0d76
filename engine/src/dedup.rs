//! The idempotency window: caller keys a shard acknowledged recently, with
//! their outcome and what the request was, so that a retry gets the original
//! acknowledgement and a different request reusing the key is refused.

use std::collections::{HashMap, VecDeque};

use crate::command::{Command, WriteAck};
use crate::entity::EntityKey;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};

/// What the window remembers about one key.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) ack: WriteAck,
    /// Hash of the partition key the request routed by.
    pub(crate) key_hash: u64,
    /// The request's fingerprint, when the event stored one (see
    /// [`Command::fingerprint`]); `None` for events of older builds and
    /// events read back from the lake.
    pub(crate) fingerprint: Option<u64>,
}

/// Caller idempotency keys a shard has acknowledged recently, with their
/// outcomes. Bounded: the oldest key leaves when a new one arrives at capacity.
#[derive(Debug, Default)]
pub struct DedupWindow {
    capacity: usize,
    outcomes: HashMap<String, Outcome>,
    order: VecDeque<String>,
}

impl DedupWindow {
    /// An empty window of `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        DedupWindow {
            capacity,
            outcomes: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The outcome recorded for `key`.
    pub fn get(&self, key: &str) -> Option<&WriteAck> {
        self.outcomes.get(key).map(|o| &o.ack)
    }

    /// What a write carrying a caller key gets from the window: `Ok(None)`
    /// when the key is new, the original ack when the write is a retry of the
    /// request that used the key, and [`Error::IdempotencyKeyReused`] when the
    /// key was used for a different request.
    ///
    /// `fingerprint` is `command.fingerprint()` (the caller computes it once).
    /// Without a stored fingerprint the entity, the partition key and the
    /// kind of change are compared: what every event stores.
    pub fn check(
        &self,
        key: &str,
        command: &Command,
        fingerprint: u64,
    ) -> Result<Option<WriteAck>> {
        let Some(outcome) = self.outcomes.get(key) else {
            return Ok(None);
        };
        let same = match outcome.fingerprint {
            Some(stored) => stored == fingerprint,
            None => {
                command.could_have_written(&outcome.ack.key, outcome.key_hash, outcome.ack.kind)
            }
        };
        if same {
            Ok(Some(outcome.ack.clone()))
        } else {
            Err(reused(key, &outcome.ack))
        }
    }

    /// Remembers the outcome of an event carrying a caller key, evicting the
    /// oldest key at capacity. The first outcome of a key stays.
    fn insert(&mut self, event: &Event) {
        if self.capacity == 0 || self.outcomes.contains_key(&event.idempotency_key) {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.outcomes.remove(&oldest);
        }
        self.order.push_back(event.idempotency_key.clone());
        self.outcomes.insert(
            event.idempotency_key.clone(),
            Outcome {
                ack: ack_for(event),
                key_hash: event.key_hash,
                fingerprint: event.request_fingerprint,
            },
        );
    }

    /// Remembers the outcome of an applied or replayed event when its key
    /// came from a caller (floe's derived keys need no window: they are unique
    /// per version). Live writes and recovery both come through here, so the
    /// window after a restart is the one before it.
    pub fn observe(&mut self, event: &Event) {
        if !event.has_derived_key() {
            self.insert(event);
        }
    }

    /// [`DedupWindow::observe`] for an event the write path of this build
    /// just made: it carries a request fingerprint exactly when its key came
    /// from a caller, so the key needs no parsing.
    pub(crate) fn observe_written(&mut self, event: &Event) {
        if event.request_fingerprint.is_some() {
            self.insert(event);
        }
    }

    /// Every remembered key whose request fingerprint is known.
    pub fn fingerprints(&self) -> impl Iterator<Item = (&str, u64)> {
        self.order.iter().filter_map(|key| {
            let fingerprint = self.outcomes.get(key)?.fingerprint?;
            Some((key.as_str(), fingerprint))
        })
    }

    /// Every remembered key with its outcome, oldest first (what a shard
    /// snapshot stores).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &Outcome)> {
        self.order
            .iter()
            .filter_map(|key| Some((key.as_str(), self.outcomes.get(key)?)))
    }

    /// Appends a key read back from a snapshot (oldest first, as
    /// [`DedupWindow::entries`] gave them), with the same eviction as a live
    /// insert.
    pub(crate) fn push_restored(&mut self, key: String, outcome: Outcome) {
        if self.capacity == 0 || self.outcomes.contains_key(&key) {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.outcomes.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.outcomes.insert(key, outcome);
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// The refusal of a key reused for another request, naming the original.
pub(crate) fn reused(key: &str, original: &WriteAck) -> Error {
    let what = match original.kind {
        EventKind::Created => "created",
        EventKind::Updated => "updated",
        EventKind::Deleted => "deleted",
    };
    Error::IdempotencyKeyReused {
        key: key.to_string(),
        original: format!("{} {what} at version {}", original.key, original.version),
    }
}

/// The acknowledgement of an event.
pub(crate) fn ack_for(event: &Event) -> WriteAck {
    WriteAck {
        key: EntityKey::new(&event.namespace, &event.entity_type, &event.entity_id),
        version: event.version,
        kind: event.kind,
        event_id: event.event_id,
        idempotency_key: event.idempotency_key.clone(),
        shard: event.shard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Operation;
    use crate::json::Json;

    fn command(id: &str, data: &str) -> Command {
        Command {
            key: EntityKey::new("t", "T", id),
            op: Operation::Upsert(Json::parse(data).unwrap()),
            expected_version: None,
            idempotency_key: Some("K".into()),
            partition_key: "t".into(),
            key_hash: 5,
        }
    }

    fn event_of(command: &Command, fingerprint: Option<u64>) -> Event {
        Event {
            event_id: uuid::Uuid::nil(),
            idempotency_key: "K".into(),
            kind: EventKind::Created,
            namespace: command.key.namespace.clone(),
            entity_type: command.key.entity_type.clone(),
            entity_id: command.key.id.clone(),
            partition_key: command.partition_key.clone(),
            key_hash: command.key_hash,
            shard: 0,
            version: 1,
            timestamp_us: 0,
            state: None,
            request_fingerprint: fingerprint,
            owner_epoch: 0,
        }
    }

    #[test]
    fn a_retry_gets_the_ack_and_another_request_an_error() {
        let first = command("k1", r#"{"a":1}"#);
        let mut window = DedupWindow::new(4);
        window.observe(&event_of(&first, Some(first.fingerprint())));
        let ack = window.check("K", &first, first.fingerprint()).unwrap();
        assert_eq!(ack.unwrap().key.id, "k1");
        assert_eq!(window.check("other", &first, 0).unwrap(), None);
        for other in [command("k2", r#"{"a":1}"#), command("k1", r#"{"a":2}"#)] {
            let err = window.check("K", &other, other.fingerprint()).unwrap_err();
            assert!(matches!(err, Error::IdempotencyKeyReused { .. }), "{err}");
            assert!(
                err.to_string().contains("t/T/k1 created at version 1"),
                "{err}"
            );
        }
    }

    /// Events without a fingerprint (older builds, the lake) still refuse a
    /// reuse for another entity, partition key or kind of change.
    #[test]
    fn without_a_fingerprint_what_the_event_stores_is_compared() {
        let first = command("k1", r#"{"a":1}"#);
        let mut window = DedupWindow::new(4);
        window.observe(&event_of(&first, None));
        assert!(window.check("K", &first, 0).unwrap().is_some());
        assert!(
            window
                .check("K", &command("k1", r#"{"a":2}"#), 0)
                .unwrap()
                .is_some(),
            "same entity and kind: indistinguishable without a fingerprint"
        );
        let mut moved = first.clone();
        moved.key_hash = 6;
        let mut delete = first.clone();
        delete.op = Operation::Delete;
        for other in [command("k2", "{}"), moved, delete] {
            assert!(window.check("K", &other, 0).is_err(), "{other:?}");
        }
    }

    #[test]
    fn the_window_is_bounded_and_keeps_the_first_outcome() {
        let mut window = DedupWindow::new(2);
        let c = command("k1", "{}");
        let mut e = event_of(&c, Some(1));
        for key in ["a", "b", "a", "c"] {
            e.idempotency_key = key.into();
            window.observe(&e);
        }
        assert_eq!(window.len(), 2);
        assert!(window.get("a").is_none() && window.get("c").is_some());
    }
}
