//! Shard state snapshots: the bytes of one shard's state and idempotency
//! window, with the pipeline offsets they cover (pure encoding; the files
//! and the checks against the log live in `floe-emitter`).
//!
//! Layout, little-endian:
//!
//! ```text
//! "FLOESNP1" | header length u32 | header (JSON) | body | xxh3-64 of all before it
//! body: entity count u64, entities in key order, window count u64, window keys oldest first
//! ```
//!
//! The checksum covers every byte before it, so a truncated file, a torn
//! write or a flipped bit is refused before anything in it is believed.
//! Entity data is trusted JSON text once the checksum holds (floe wrote it).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::cluster::RecoveredShard;
use crate::command::WriteAck;
use crate::dedup::{DedupWindow, Outcome};
use crate::entity::EntityKey;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::json::Json;
use crate::pipeline::Offset;
use crate::state::{EntityRecord, ShardState};
use crate::topology::Topology;

const MAGIC: &[u8; 8] = b"FLOESNP1";
const CHECKSUM_BYTES: usize = 8;

/// What a snapshot claims: whose state, under which topology, covering
/// which offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeader {
    /// The shard.
    pub shard: u32,
    /// The topology the state was captured under: a snapshot is used only
    /// under exactly this topology (another one routes keys elsewhere).
    pub topology: Topology,
    /// Every event of this shard at an offset below `offsets[p]` of
    /// partition `p` is in the snapshot (some later ones may be too: replay
    /// is idempotent). One entry per pipeline partition.
    pub offsets: Vec<Offset>,
    /// The event id at `offsets[p] - 1` of each partition (`None` where
    /// `offsets[p]` is 0): proof that the log read back is the one the
    /// snapshot was taken against, not a rebuilt or replaced one.
    pub fences: Vec<Option<uuid::Uuid>>,
    /// When it was taken, microseconds since the epoch.
    pub taken_at_us: i64,
}

/// Encodes a shard's records for which `keep` holds, and the window keys
/// of those records.
pub fn encode_snapshot(
    header: &SnapshotHeader,
    state: &ShardState,
    window: &DedupWindow,
    keep: impl Fn(&EntityRecord) -> bool,
) -> Vec<u8> {
    let header_json = serde_json::to_vec(header).expect("a snapshot header serializes");
    let mut out = Vec::with_capacity(64 + header_json.len() + state.live_bytes() as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_json);
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for (key, record) in state.iter().filter(|(_, r)| keep(r)) {
        count += 1;
        put_key(&mut out, key);
        put_str(&mut out, &record.partition_key);
        put_u64(&mut out, record.key_hash);
        put_u64(&mut out, record.version);
        put_u64(&mut out, record.updated_at_us as u64);
        put_u64(&mut out, record.owner_epoch);
        match &record.data {
            Some(data) => {
                out.push(1);
                put_str(&mut out, data.as_str());
            }
            None => out.push(0),
        }
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for (key, outcome) in window.entries() {
        // A window key of a record not kept (it routes elsewhere) is not
        // this shard's under the snapshot's topology.
        if !state.record(&outcome.ack.key).is_some_and(&keep) {
            continue;
        }
        count += 1;
        put_str(&mut out, key);
        let ack = &outcome.ack;
        put_key(&mut out, &ack.key);
        put_u64(&mut out, ack.version);
        out.push(kind_byte(ack.kind));
        out.extend_from_slice(ack.event_id.as_bytes());
        put_str(&mut out, &ack.idempotency_key);
        put_u64(&mut out, u64::from(ack.shard));
        put_u64(&mut out, outcome.key_hash);
        match outcome.fingerprint {
            Some(f) => {
                out.push(1);
                put_u64(&mut out, f);
            }
            None => out.push(0),
        }
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A snapshot whose checksum holds, its header read and its body not yet
/// decoded (so a caller can refuse it on the header alone).
#[derive(Debug)]
pub struct VerifiedSnapshot<'a> {
    /// What the snapshot claims.
    pub header: SnapshotHeader,
    body: &'a [u8],
}

/// Checks a snapshot's checksum and reads its header. Any damage is
/// [`Error::CorruptSnapshot`].
pub fn verify_snapshot(bytes: &[u8]) -> Result<VerifiedSnapshot<'_>> {
    let (header, body) = checked(bytes)?;
    Ok(VerifiedSnapshot {
        header,
        body: body.bytes,
    })
}

/// Decodes a snapshot into its header and the shard it holds (a window of
/// `dedup_window` keys). Any damage is [`Error::CorruptSnapshot`].
pub fn decode_snapshot(
    bytes: &[u8],
    dedup_window: usize,
) -> Result<(SnapshotHeader, RecoveredShard)> {
    let verified = verify_snapshot(bytes)?;
    let header = verified.header.clone();
    Ok((header, verified.decode(dedup_window)?))
}

impl VerifiedSnapshot<'_> {
    /// The shard the snapshot holds, with a window of `dedup_window` keys.
    pub fn decode(self, dedup_window: usize) -> Result<RecoveredShard> {
        decode_body(Reader { bytes: self.body }, dedup_window)
    }
}

fn decode_body(mut body: Reader<'_>, dedup_window: usize) -> Result<RecoveredShard> {
    let entities = body.u64()?;
    let mut records = Vec::with_capacity(entities.min(body.remaining() as u64 / 40) as usize);
    for _ in 0..entities {
        let key = body.key()?;
        let partition_key = body.string()?;
        let key_hash = body.u64()?;
        let version = body.u64()?;
        let updated_at_us = body.u64()? as i64;
        let owner_epoch = body.u64()?;
        let data = match body.byte()? {
            0 => None,
            1 => Some(Json::from_trusted(body.str()?)),
            b => return Err(corrupt(format!("entity data flag {b}"))),
        };
        records.push((
            key,
            EntityRecord {
                version,
                data,
                partition_key,
                key_hash,
                updated_at_us,
                owner_epoch,
            },
        ));
    }
    let state = ShardState::from_sorted(records)
        .ok_or_else(|| corrupt("entities are not in strictly ascending key order".into()))?;
    let mut window = DedupWindow::new(dedup_window);
    for _ in 0..body.u64()? {
        let key = body.string()?;
        let ack_key = body.key()?;
        let version = body.u64()?;
        let kind = match body.byte()? {
            0 => EventKind::Created,
            1 => EventKind::Updated,
            2 => EventKind::Deleted,
            b => return Err(corrupt(format!("event kind {b}"))),
        };
        let event_id = uuid::Uuid::from_bytes(body.take(16)?.try_into().expect("16 bytes"));
        let idempotency_key = body.string()?;
        let shard = u32::try_from(body.u64()?).map_err(|_| corrupt("shard id".into()))?;
        let key_hash = body.u64()?;
        let fingerprint = match body.byte()? {
            0 => None,
            1 => Some(body.u64()?),
            b => return Err(corrupt(format!("fingerprint flag {b}"))),
        };
        window.push_restored(
            key,
            Outcome {
                ack: WriteAck {
                    key: ack_key,
                    version,
                    kind,
                    event_id,
                    idempotency_key,
                    shard,
                },
                key_hash,
                fingerprint,
            },
        );
    }
    if body.remaining() != 0 {
        return Err(corrupt(format!(
            "{} bytes after the window",
            body.remaining()
        )));
    }
    Ok(RecoveredShard::from_parts(state, window))
}

/// The header and the body of a snapshot whose checksum holds.
fn checked(bytes: &[u8]) -> Result<(SnapshotHeader, Reader<'_>)> {
    if bytes.len() < MAGIC.len() + 4 + CHECKSUM_BYTES {
        return Err(corrupt(format!("{} bytes: too short", bytes.len())));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a floe shard snapshot (bad magic)".into()));
    }
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let stored = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
    let actual = xxh3_64(content);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:016x}, computed {actual:016x}): truncated or damaged"
        )));
    }
    let mut reader = Reader {
        bytes: &content[MAGIC.len()..],
    };
    let header_len = reader.u32()? as usize;
    let header = serde_json::from_slice(reader.take(header_len)?)
        .map_err(|e| corrupt(format!("header: {e}")))?;
    Ok((header, reader))
}

fn corrupt(reason: String) -> Error {
    Error::CorruptSnapshot { reason }
}

fn kind_byte(kind: EventKind) -> u8 {
    match kind {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_key(out: &mut Vec<u8>, key: &EntityKey) {
    put_str(out, &key.namespace);
    put_str(out, &key.entity_type);
    put_str(out, &key.id);
}

/// Bounds-checked reads over a snapshot body.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(corrupt(format!(
                "{n} bytes wanted, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn str(&mut self) -> Result<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|e| corrupt(format!("text: {e}")))
    }

    fn string(&mut self) -> Result<String> {
        Ok(self.str()?.to_owned())
    }

    fn key(&mut self) -> Result<EntityKey> {
        Ok(EntityKey {
            namespace: self.string()?,
            entity_type: self.string()?,
            id: self.string()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::{HashFunction, Strategy};

    fn event(id: &str, version: u64, kind: EventKind, caller_key: Option<&str>) -> Event {
        let key = EntityKey::new("t", "T", id);
        Event {
            event_id: uuid::Uuid::now_v7(),
            idempotency_key: caller_key
                .map_or_else(|| format!("t/T/{id}@v{version}"), str::to_owned),
            kind,
            namespace: key.namespace,
            entity_type: key.entity_type,
            entity_id: key.id,
            partition_key: format!("pk-{id}"),
            key_hash: 7,
            shard: 0,
            version,
            timestamp_us: 5,
            state: (kind != EventKind::Deleted)
                .then(|| Json::from_trusted(format!(r#"{{"v":{version}}}"#))),
            request_fingerprint: caller_key.map(|_| 42),
            owner_epoch: 0,
        }
    }

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            shard: 3,
            topology: Topology::new(4, HashFunction::Xxh3, Strategy::JumpBack).unwrap(),
            offsets: vec![10, 0],
            fences: vec![Some(uuid::Uuid::now_v7()), None],
            taken_at_us: 1,
        }
    }

    fn shard() -> RecoveredShard {
        let mut shard = RecoveredShard::new(8);
        shard.apply(event("a", 1, EventKind::Created, Some("caller-1")));
        shard.apply(event("b", 1, EventKind::Created, None));
        shard.apply(event("b", 2, EventKind::Deleted, Some("caller-2")));
        shard.apply(event("c", 4, EventKind::Updated, None));
        shard
    }

    #[test]
    fn a_snapshot_round_trips_state_and_window() {
        let shard = shard();
        let bytes = encode_snapshot(&header(), shard.state(), shard.dedup(), |_| true);
        let (read, back) = decode_snapshot(&bytes, 8).unwrap();
        assert_eq!(read.shard, 3);
        assert_eq!(read.offsets, vec![10, 0]);
        let all = |s: &RecoveredShard| {
            s.state()
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&back), all(&shard));
        assert_eq!(back.state().live_entities(), 2);
        assert_eq!(back.state().tombstones(), 1);
        assert_eq!(back.state().live_bytes(), shard.state().live_bytes());
        let keys = |s: &RecoveredShard| {
            s.dedup()
                .entries()
                .map(|(k, o)| (k.to_owned(), o.ack.clone(), o.fingerprint))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&back), keys(&shard));
        assert_eq!(back.dedup().len(), 2);
    }

    #[test]
    fn records_not_kept_leave_with_their_window_keys() {
        let shard = shard();
        let bytes = encode_snapshot(&header(), shard.state(), shard.dedup(), |r| {
            r.partition_key != "pk-b"
        });
        let (_, back) = decode_snapshot(&bytes, 8).unwrap();
        assert_eq!(back.state().iter().count(), 2);
        assert!(back.dedup().get("caller-1").is_some());
        assert!(back.dedup().get("caller-2").is_none());
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_refused() {
        let shard = shard();
        let bytes = encode_snapshot(&header(), shard.state(), shard.dedup(), |_| true);
        for len in 0..bytes.len() {
            let err = decode_snapshot(&bytes[..len], 8).unwrap_err();
            assert!(matches!(err, Error::CorruptSnapshot { .. }), "{len}: {err}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let err = decode_snapshot(&damaged, 8).unwrap_err();
            assert!(
                matches!(err, Error::CorruptSnapshot { .. }),
                "bit {bit}: {err}"
            );
        }
        let err = decode_snapshot(b"not a snapshot at all", 8).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
    }
}
