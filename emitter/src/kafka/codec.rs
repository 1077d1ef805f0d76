//! Events as Kafka records that any Kafka client can read.
//!
//! - key: the partition key (UTF-8), so compaction and other tools group an
//!   entity's events the way floe does;
//! - value: the event as one JSON object (`serde_json`), entity state inline;
//! - headers: `floe.idempotency_key`, `floe.kind` and `floe.version` (decimal
//!   text), so a consumer can deduplicate or filter without parsing the value;
//! - partition: `partition_for(key_hash, partitions)`, set on every record.

use floe_engine::{Event, Offset};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};

use crate::error::{Error, Result};

/// Header holding the event's idempotency key.
pub const HEADER_IDEMPOTENCY_KEY: &str = "floe.idempotency_key";
/// Header holding the event's kind (`created`, `updated`, `deleted`).
pub const HEADER_KIND: &str = "floe.kind";
/// Header holding the entity version after the change, as decimal text.
pub const HEADER_VERSION: &str = "floe.version";

/// The JSON value of an event's record.
pub(crate) fn encode_value(event: &Event) -> Result<Vec<u8>> {
    serde_json::to_vec(event).map_err(|e| Error::UnencodableEvent {
        event_id: event.event_id,
        reason: e.to_string(),
    })
}

/// The headers of an event's record.
pub(crate) fn encode_headers(event: &Event) -> OwnedHeaders {
    let version = event.version.to_string();
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: HEADER_IDEMPOTENCY_KEY,
            value: Some(event.idempotency_key.as_bytes()),
        })
        .insert(Header {
            key: HEADER_KIND,
            value: Some(event.kind.as_str().as_bytes()),
        })
        .insert(Header {
            key: HEADER_VERSION,
            value: Some(version.as_bytes()),
        })
}

/// The event in a record floe wrote; anything else is
/// [`Error::UndecodableRecord`].
pub(crate) fn decode(topic: &str, message: &BorrowedMessage<'_>) -> Result<(Offset, Event)> {
    let partition = message.partition() as u32;
    let offset = message.offset() as Offset;
    let undecodable = |reason: String| Error::UndecodableRecord {
        topic: topic.to_string(),
        partition,
        offset,
        reason,
    };
    let payload = message
        .payload()
        .ok_or_else(|| undecodable("the record has no value".into()))?;
    let event: Event = serde_json::from_slice(payload)
        .map_err(|e| undecodable(format!("its value is not a floe event as JSON: {e}")))?;
    if let Some(headers) = message.headers() {
        let key = headers
            .iter()
            .find(|h| h.key == HEADER_IDEMPOTENCY_KEY)
            .and_then(|h| h.value);
        if key.is_some_and(|k| k != event.idempotency_key.as_bytes()) {
            return Err(undecodable(
                "its idempotency key header differs from the event's".into(),
            ));
        }
    }
    Ok((offset, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::{EventKind, Json};

    fn event() -> Event {
        Event {
            event_id: uuid::Uuid::nil(),
            idempotency_key: "acme/Order/o-1@v2".into(),
            kind: EventKind::Updated,
            namespace: "acme".into(),
            entity_type: "Order".into(),
            entity_id: "o-1".into(),
            partition_key: "acme".into(),
            key_hash: u64::MAX,
            shard: 3,
            version: 2,
            timestamp_us: 1_700_000_000_000_000,
            request_fingerprint: None,
            owner_epoch: 0,
            state: Some(Json::from_trusted(r#"{"total":1.5e300,"s":"Zoë"}"#)),
        }
    }

    #[test]
    fn value_is_plain_json_with_state_inline() {
        let value = encode_value(&event()).unwrap();
        let tree: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(tree["idempotency_key"], "acme/Order/o-1@v2");
        assert_eq!(tree["kind"], "updated");
        assert_eq!(tree["key_hash"], u64::MAX);
        assert_eq!(tree["state"]["s"], "Zoë");
        let back: Event = serde_json::from_slice(&value).unwrap();
        assert_eq!(back, event());
    }

    #[test]
    fn headers_name_key_kind_and_version() {
        let headers = encode_headers(&event());
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|h| (h.key, h.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            pairs,
            [
                (HEADER_IDEMPOTENCY_KEY, &b"acme/Order/o-1@v2"[..]),
                (HEADER_KIND, b"updated"),
                (HEADER_VERSION, b"2"),
            ]
        );
    }
}
