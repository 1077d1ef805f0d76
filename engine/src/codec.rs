//! The binary encoding of an [`Event`], as the embedded log stores it.
//!
//! Layout of format 1 (all integers little-endian, strings as a `u32` byte
//! length followed by UTF-8 bytes):
//!
//! ```text
//! u8   format (1)
//! [16] event_id
//! u8   kind (0 created, 1 updated, 2 deleted)
//! str  idempotency_key, namespace, entity_type, entity_id, partition_key
//! u64  key_hash
//! u32  shard
//! u64  version
//! i64  timestamp_us
//! u8   state present (0 or 1), then, when 1: str state (JSON text)
//! ```
//!
//! Format 2 is format 1 followed by `u64 request_fingerprint`; it is written
//! for events that carry a request fingerprint (caller idempotency keys), and
//! format 1, byte for byte as before, for the others. Both are read.
//!
//! The decoder checks every bound, the UTF-8 of every string, the format, kind
//! and presence bytes, and that nothing trails the event; it never panics. It
//! does not parse the state: the bytes come from a checksummed record that floe
//! wrote itself, so [`Json::from_trusted`] wraps them as they are, which keeps
//! recovery a matter of moving bytes.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::json::Json;

/// The format byte written first; bump it when the layout changes and keep
/// decoding the old ones.
const FORMAT_V1: u8 = 1;
/// Format 1 plus the request fingerprint.
const FORMAT_V2: u8 = 2;

/// The exact number of bytes [`encode_event`] appends for `event`.
pub fn encoded_len(event: &Event) -> usize {
    1 + 16
        + 1
        + 5 * 4
        + event.idempotency_key.len()
        + event.namespace.len()
        + event.entity_type.len()
        + event.entity_id.len()
        + event.partition_key.len()
        + 8
        + 4
        + 8
        + 8
        + 1
        + event.state.as_ref().map_or(0, |s| 4 + s.len())
        + event.request_fingerprint.map_or(0, |_| 8)
}

/// Appends the binary encoding of `event` to `out`.
///
/// # Panics
///
/// If a string of the event is 4 GiB or longer (its length does not fit the
/// `u32` prefix); callers bound payloads far below that.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    out.reserve(encoded_len(event));
    out.push(if event.request_fingerprint.is_some() {
        FORMAT_V2
    } else {
        FORMAT_V1
    });
    out.extend_from_slice(event.event_id.as_bytes());
    out.push(kind_byte(event.kind));
    put_str(out, &event.idempotency_key);
    put_str(out, &event.namespace);
    put_str(out, &event.entity_type);
    put_str(out, &event.entity_id);
    put_str(out, &event.partition_key);
    out.extend_from_slice(&event.key_hash.to_le_bytes());
    out.extend_from_slice(&event.shard.to_le_bytes());
    out.extend_from_slice(&event.version.to_le_bytes());
    out.extend_from_slice(&event.timestamp_us.to_le_bytes());
    match &event.state {
        None => out.push(0),
        Some(state) => {
            out.push(1);
            put_str(out, state.as_str());
        }
    }
    if let Some(fingerprint) = event.request_fingerprint {
        out.extend_from_slice(&fingerprint.to_le_bytes());
    }
}

/// Decodes one event written by [`encode_event`]; `bytes` must hold exactly one.
///
/// Returns [`Error::Codec`] for anything malformed (never panics).
pub fn decode_event(bytes: &[u8]) -> Result<Event> {
    let mut r = Reader {
        bytes,
        pos: 0,
        truncated: false,
    };
    decode_from(&mut r)
}

/// Whether `bytes` are the start of an event's encoding cut short: every
/// byte present is consistent with some event, and decoding fails only
/// because bytes are missing. A whole event, or one with trailing bytes, is
/// not. The embedded log uses this to tell an interrupted write (a prefix of
/// what it wrote) from damage.
pub fn is_truncated_event(bytes: &[u8]) -> bool {
    let mut r = Reader {
        bytes,
        pos: 0,
        truncated: false,
    };
    decode_from(&mut r).is_err() && r.truncated
}

fn decode_from(r: &mut Reader<'_>) -> Result<Event> {
    let bytes = r.bytes;
    let format = r.u8("format")?;
    if format != FORMAT_V1 && format != FORMAT_V2 {
        return Err(Error::Codec(format!(
            "unknown event format {format} (this build reads formats {FORMAT_V1} and {FORMAT_V2})"
        )));
    }
    let event_id = Uuid::from_bytes(r.array::<16>("event_id")?);
    let kind = match r.u8("kind")? {
        0 => EventKind::Created,
        1 => EventKind::Updated,
        2 => EventKind::Deleted,
        other => return Err(Error::Codec(format!("unknown event kind byte {other}"))),
    };
    let idempotency_key = r.str("idempotency_key")?.to_owned();
    let namespace = r.str("namespace")?.to_owned();
    let entity_type = r.str("entity_type")?.to_owned();
    let entity_id = r.str("entity_id")?.to_owned();
    let partition_key = r.str("partition_key")?.to_owned();
    let key_hash = u64::from_le_bytes(r.array("key_hash")?);
    let shard = u32::from_le_bytes(r.array("shard")?);
    let version = u64::from_le_bytes(r.array("version")?);
    let timestamp_us = i64::from_le_bytes(r.array("timestamp_us")?);
    let state = match r.u8("state presence")? {
        0 => None,
        1 => Some(Json::from_trusted(r.str("state")?)),
        other => {
            return Err(Error::Codec(format!(
                "state presence byte must be 0 or 1, got {other}"
            )));
        }
    };
    let request_fingerprint = if format == FORMAT_V2 {
        Some(u64::from_le_bytes(r.array("request_fingerprint")?))
    } else {
        None
    };
    if r.pos != bytes.len() {
        return Err(Error::Codec(format!(
            "{} trailing bytes after the event",
            bytes.len() - r.pos
        )));
    }
    Ok(Event {
        event_id,
        idempotency_key,
        kind,
        namespace,
        entity_type,
        entity_id,
        partition_key,
        key_hash,
        shard,
        version,
        timestamp_us,
        state,
        request_fingerprint,
        owner_epoch: 0,
    })
}

fn kind_byte(kind: EventKind) -> u8 {
    match kind {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("event strings are shorter than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked cursor; every read names the field for the error message.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Set when a read ran out of bytes (rather than finding a bad value).
    truncated: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < n {
            self.truncated = true;
            return Err(Error::Codec(format!(
                "truncated event: {field} needs {n} bytes at byte {}, {} left",
                self.pos,
                rest.len()
            )));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn str(&mut self, field: &str) -> Result<&'a str> {
        let len = u32::from_le_bytes(self.array(field)?) as usize;
        let at = self.pos;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map_err(|e| Error::Codec(format!("{field} at byte {at} is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        let kind = prop_oneof![
            Just(EventKind::Created),
            Just(EventKind::Updated),
            Just(EventKind::Deleted)
        ];
        let strings = (
            ".{0,40}",
            "\\PC{0,12}",
            "[A-Za-z]{0,12}",
            ".{0,24}",
            ".{0,24}",
        );
        let numbers = (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            any::<u128>(),
        );
        let state = proptest::option::of("\\{(\"[a-z]{1,6}\":\\PC{0,20},?){0,4}\\}");
        let fingerprint = proptest::option::of(any::<u64>());
        (kind, strings, numbers, state, fingerprint).prop_map(
            |(kind, (idem, ns, ty, id, pk), (hash, shard, version, ts, uuid), state, fp)| Event {
                event_id: Uuid::from_u128(uuid),
                idempotency_key: idem,
                kind,
                namespace: ns,
                entity_type: ty,
                entity_id: id,
                partition_key: pk,
                key_hash: hash,
                shard,
                version,
                timestamp_us: ts,
                state: state.map(Json::from_trusted),
                request_fingerprint: fp,
                owner_epoch: 0,
            },
        )
    }

    proptest! {
        #[test]
        fn roundtrips(event in arb_event()) {
            let mut buf = vec![0xAA]; // encoding appends: keep what was there
            encode_event(&event, &mut buf);
            prop_assert_eq!(buf[0], 0xAA);
            prop_assert_eq!(buf.len() - 1, encoded_len(&event));
            let back = decode_event(&buf[1..]).unwrap();
            prop_assert_eq!(back, event);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_event(&bytes);
        }

        #[test]
        fn truncated_or_flipped_never_panics(
            event in arb_event(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut buf = Vec::new();
            encode_event(&event, &mut buf);
            let cut = cut.index(buf.len());
            prop_assert!(decode_event(&buf[..cut]).is_err(), "a strict prefix must not decode");
            let mut flipped = buf.clone();
            flipped[flip.index(buf.len())] ^= 1 << bit;
            let _ = decode_event(&flipped);
            let mut longer = buf.clone();
            longer.push(0);
            prop_assert!(decode_event(&longer).is_err(), "trailing bytes must not decode");
            // Every strict prefix is a truncated event; the whole one and one
            // with trailing bytes are not.
            prop_assert!(is_truncated_event(&buf[..cut]));
            prop_assert!(!is_truncated_event(&buf));
            prop_assert!(!is_truncated_event(&longer));
        }

        #[test]
        fn a_prefix_with_a_bad_byte_is_not_a_truncated_event(
            event in arb_event(),
            cut in 2usize..17,
        ) {
            // A wrong format byte before the cut: damage, not a torn write.
            let mut buf = Vec::new();
            encode_event(&event, &mut buf);
            buf[0] = 7;
            prop_assert!(!is_truncated_event(&buf[..cut]));
        }
    }

    #[test]
    fn rejects_bad_format_kind_presence_and_utf8() {
        let event = Event {
            event_id: Uuid::from_u128(7),
            idempotency_key: "k".into(),
            kind: EventKind::Deleted,
            namespace: "ns".into(),
            entity_type: "T".into(),
            entity_id: "1".into(),
            partition_key: "p".into(),
            key_hash: 1,
            shard: 2,
            version: 3,
            timestamp_us: -4,
            state: None,
            request_fingerprint: None,
            owner_epoch: 0,
        };
        let mut buf = Vec::new();
        encode_event(&event, &mut buf);
        assert_eq!(decode_event(&buf).unwrap(), event);

        let msg = |bytes: &[u8]| decode_event(bytes).unwrap_err().to_string();
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(
            msg(&bad).contains("unknown event format 9"),
            "{}",
            msg(&bad)
        );
        let mut bad = buf.clone();
        bad[17] = 3;
        assert!(msg(&bad).contains("unknown event kind byte 3"));
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() = 2;
        assert!(msg(&bad).contains("state presence byte"));
        let mut bad = buf.clone();
        bad[22] = 0xFF; // the idempotency key's only byte
        assert!(msg(&bad).contains("idempotency_key at byte 22 is not UTF-8"));
        assert!(msg(&buf[..5]).contains("truncated event: event_id"));
        assert!(decode_event(&[]).is_err());
    }

    /// The bytes of format 1 are what older builds wrote: an event without a
    /// fingerprint still encodes to exactly them, and they still decode.
    #[test]
    fn format_1_is_unchanged_and_format_2_adds_the_fingerprint() {
        let mut event = Event {
            event_id: Uuid::from_u128(1),
            idempotency_key: "k".into(),
            kind: EventKind::Created,
            namespace: "n".into(),
            entity_type: "T".into(),
            entity_id: "i".into(),
            partition_key: "p".into(),
            key_hash: 2,
            shard: 3,
            version: 4,
            timestamp_us: 5,
            state: Some(Json::from_trusted("{}")),
            request_fingerprint: None,
            owner_epoch: 0,
        };
        let mut v1 = Vec::new();
        encode_event(&event, &mut v1);
        let mut expected = vec![1u8];
        expected.extend_from_slice(&1u128.to_be_bytes());
        expected.push(0);
        for s in ["k", "n", "T", "i", "p"] {
            expected.extend_from_slice(&1u32.to_le_bytes());
            expected.extend_from_slice(s.as_bytes());
        }
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(&4u64.to_le_bytes());
        expected.extend_from_slice(&5i64.to_le_bytes());
        expected.push(1);
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(b"{}");
        assert_eq!(v1, expected);
        assert_eq!(decode_event(&v1).unwrap(), event);
        event.request_fingerprint = Some(0xfeed);
        let mut v2 = Vec::new();
        encode_event(&event, &mut v2);
        assert_eq!(v2[0], 2);
        assert_eq!(&v2[1..v2.len() - 8], &v1[1..]);
        assert_eq!(decode_event(&v2).unwrap(), event);
        assert!(decode_event(&v2[..v2.len() - 1]).is_err());
    }
}
