//! Verification: per-entity version and state digests of the moving keys on
//! their source and on their target must agree before the cutover.

use floe_engine::{EntityKey, EntityRecord, ShardState};
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
