//! Verification: per-entity version and state digests of the moving keys on
//! their source and on their target must agree before the cutover.

use crate::entity::EntityKey;
use crate::state::{EntityRecord, ShardState};
use serde::{Deserialize, Serialize};

/// One entity's version and a hash of its data (0 for a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityDigest {
    /// The entity.
    pub key: EntityKey,
    /// Its version.
    pub version: u64,
    /// xxh3 of its JSON data; 0 for a tombstone.
    pub data_hash: u64,
}

/// Digests of the records of `state` that pass `keep`, in key order.
pub fn digest_state(state: &ShardState, keep: impl Fn(&EntityRecord) -> bool) -> Vec<EntityDigest> {
    state
        .iter()
        .filter(|(_, r)| keep(r))
        .map(|(key, r)| EntityDigest {
            key: key.clone(),
            version: r.version,
            data_hash: r
                .data
                .as_ref()
                .map_or(0, |d| xxhash_rust::xxh3::xxh3_64(d.as_str().as_bytes())),
        })
        .collect()
}

/// An order-independent summary of many entity digests: their count and the
/// wrapping sum of a hash of each (key, version, data hash). Equal sets give
/// equal summaries whatever shard computed them; comparing summaries first
/// keeps the cutover window short, and only a mismatch needs the lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSummary {
    /// Entities summed.
    pub count: u64,
    /// Wrapping sum of their hashes.
    pub sum: u64,
}

impl DigestSummary {
    /// Adds another summary (from another shard).
    pub fn merge(&mut self, other: DigestSummary) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// The summary of the records of `state` that pass `keep`.
pub fn summarize_state(state: &ShardState, keep: impl Fn(&EntityRecord) -> bool) -> DigestSummary {
    let mut summary = DigestSummary::default();
    let mut buf = Vec::with_capacity(256);
    for (key, r) in state.iter().filter(|(_, r)| keep(r)) {
        buf.clear();
        for part in [&key.namespace, &key.entity_type, &key.id] {
            buf.extend_from_slice(part.as_bytes());
            buf.push(0);
        }
        buf.extend_from_slice(&r.version.to_le_bytes());
        if let Some(data) = &r.data {
            buf.extend_from_slice(data.as_str().as_bytes());
        }
        summary.count += 1;
        summary.sum = summary.sum.wrapping_add(xxhash_rust::xxh3::xxh3_64(&buf));
    }
    summary
}

/// The outcome of comparing source and target digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestComparison {
    /// Entities compared (the union of both sides).
    pub checked: u64,
    /// Entities missing on one side or different.
    pub mismatched: u64,
    /// The first mismatch, described.
    pub first: Option<String>,
}

impl DigestComparison {
    /// Whether both sides agree on every entity.
    pub fn matches(&self) -> bool {
        self.mismatched == 0
    }
}

/// Compares two digest lists (each sorted by key, as [`digest_state`] makes
/// them; lists gathered from several shards are sorted here).
pub fn compare_digests(
    mut source: Vec<EntityDigest>,
    mut target: Vec<EntityDigest>,
) -> DigestComparison {
    source.sort_unstable();
    target.sort_unstable();
    let mut out = DigestComparison::default();
    let (mut s, mut t) = (source.into_iter().peekable(), target.into_iter().peekable());
    let miss = |out: &mut DigestComparison, what: String| {
        out.mismatched += 1;
        if out.first.is_none() {
            out.first = Some(what);
        }
    };
    loop {
        out.checked += 1;
        match (s.peek(), t.peek()) {
            (None, None) => {
                out.checked -= 1;
                return out;
            }
            (Some(a), Some(b)) if a.key == b.key => {
                if a.version != b.version || a.data_hash != b.data_hash {
                    let what = format!(
                        "{}: source v{} vs target v{}{}",
                        a.key,
                        a.version,
                        b.version,
                        if a.version == b.version {
                            " with different data"
                        } else {
                            ""
                        }
                    );
                    miss(&mut out, what);
                }
                s.next();
                t.next();
            }
            (Some(a), b) if b.is_none_or(|b| a.key < b.key) => {
                let what = format!("{} v{} is missing on the target", a.key, a.version);
                miss(&mut out, what);
                s.next();
            }
            (_, Some(b)) => {
                let what = format!("{} v{} is on the target only", b.key, b.version);
                miss(&mut out, what);
                t.next();
            }
            (Some(_), None) => unreachable!("handled by the arm above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, version: u64, data_hash: u64) -> EntityDigest {
        EntityDigest {
            key: EntityKey::new("t", "Thing", id),
            version,
            data_hash,
        }
    }

    #[test]
    fn summaries_ignore_order_and_catch_differences() {
        use crate::{Event, EventKind, Json};
        let event = |id: &str, version: u64, data: &str| Event {
            event_id: uuid::Uuid::now_v7(),
            idempotency_key: format!("k-{id}-{version}"),
            kind: EventKind::Updated,
            namespace: "t".into(),
            entity_type: "Thing".into(),
            entity_id: id.into(),
            partition_key: id.into(),
            key_hash: 1,
            shard: 0,
            version,
            timestamp_us: 0,
            request_fingerprint: None,
            owner_epoch: 0,
            state: Some(Json::from_trusted(data)),
        };
        let (mut a, mut b, mut c) = (ShardState::new(), ShardState::new(), ShardState::new());
        for e in [event("x", 1, "{}"), event("y", 2, "{\"a\":1}")] {
            a.apply(&e);
        }
        b.apply(&event("y", 2, "{\"a\":1}"));
        c.apply(&event("x", 1, "{}"));
        let mut split = summarize_state(&b, |_| true);
        split.merge(summarize_state(&c, |_| true));
        assert_eq!(summarize_state(&a, |_| true), split);
        c.apply(&event("x", 2, "{}"));
        let mut changed = summarize_state(&b, |_| true);
        changed.merge(summarize_state(&c, |_| true));
        assert_ne!(summarize_state(&a, |_| true), changed);
    }

    #[test]
    fn compares_both_ways() {
        let same = compare_digests(
            vec![d("a", 1, 5), d("b", 2, 0)],
            vec![d("b", 2, 0), d("a", 1, 5)],
        );
        assert!(same.matches());
        assert_eq!(same.checked, 2);
        let diff = compare_digests(
            vec![d("a", 1, 5), d("b", 2, 0), d("c", 1, 1)],
            vec![d("a", 1, 6), d("b", 2, 0), d("d", 1, 1)],
        );
        assert_eq!((diff.checked, diff.mismatched), (4, 3));
        assert!(diff.first.unwrap().contains("different data"));
        let missing = compare_digests(vec![d("a", 3, 1)], vec![]);
        assert!(missing.first.unwrap().contains("missing on the target"));
    }
}
