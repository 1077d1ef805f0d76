//! Caller idempotency keys across every shard of a deployment, with the
//! fingerprint of the request that used each: what refuses a key reused for
//! a request that routes to another shard (whose [`DedupWindow`] has never
//! seen it).
//!
//! [`DedupWindow`]: crate::DedupWindow

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::dedup::DedupWindow;

const STRIPES: usize = 16;

/// Caller keys -> request fingerprints, bounded like the shards' windows
/// together (oldest key leaves first), shared by every shard worker.
///
/// Workers [`claim`](Self::claim) a key before they validate a write that
/// carries it, then [`settle`](Self::settle) (the event reached the
/// pipeline) or [`release`](Self::release) (the write was refused). Two
/// different requests racing with one key on two shards cannot both pass:
/// the second finds the first's claim. Recovery rebuilds the index from the
/// recovered windows. Keys are held as 128-bit hashes (about 40 bytes each).
#[derive(Debug)]
pub struct IdempotencyIndex {
    stripes: Vec<Mutex<Stripe>>,
    capacity_per_stripe: usize,
}

#[derive(Debug, Default)]
struct Stripe {
    entries: HashMap<u128, Entry>,
    order: VecDeque<u128>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    fingerprint: u64,
    /// The shard that holds (or is writing) the key's outcome.
    shard: u32,
    inflight: u32,
    settled: bool,
}

impl IdempotencyIndex {
    /// An empty index of about `capacity` keys (0: remember none).
    pub fn new(capacity: usize) -> Self {
        IdempotencyIndex {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            capacity_per_stripe: capacity.div_ceil(STRIPES),
        }
    }

    /// The keys of the recovered windows, with their fingerprints (keys of
    /// events without one, written by older builds, are left to the windows).
    pub fn rebuild<'a>(
        capacity: usize,
        windows: impl IntoIterator<Item = (u32, &'a DedupWindow)>,
    ) -> Self {
        let index = Self::new(capacity);
        for (shard, window) in windows {
            for (key, fingerprint) in window.fingerprints() {
                index.insert(key, fingerprint, shard, 0, true);
            }
        }
        index
    }

    /// Claims `key` for a request with `fingerprint` on `shard`. Refused
    /// with the shard that holds the key when another request used it.
    pub fn claim(&self, key: &str, fingerprint: u64, shard: u32) -> Result<(), u32> {
        if self.capacity_per_stripe == 0 {
            return Ok(());
        }
        let id = key_hash(key);
        let mut stripe = self.stripe(id);
        match stripe.entries.get_mut(&id) {
            Some(entry) if entry.fingerprint != fingerprint => Err(entry.shard),
            Some(entry) => {
                entry.inflight += 1;
                Ok(())
            }
            None => {
                drop(stripe);
                self.insert(key, fingerprint, shard, 1, false);
                Ok(())
            }
        }
    }

    /// Gives back a claim whose write emitted nothing.
    pub fn release(&self, key: &str) {
        let id = key_hash(key);
        let mut stripe = self.stripe(id);
        if let Some(entry) = stripe.entries.get_mut(&id) {
            entry.inflight = entry.inflight.saturating_sub(1);
            if entry.inflight == 0 && !entry.settled {
                stripe.entries.remove(&id);
            }
        }
    }

    /// Settles a claim whose event reached the pipeline. After a failed
    /// append too: the event may be durable, so the key stays taken by its
    /// request (a retry of that request still passes).
    pub fn settle(&self, key: &str) {
        let id = key_hash(key);
        if let Some(entry) = self.stripe(id).entries.get_mut(&id) {
            entry.inflight = entry.inflight.saturating_sub(1);
            entry.settled = true;
        }
    }

    fn insert(&self, key: &str, fingerprint: u64, shard: u32, inflight: u32, settled: bool) {
        let id = key_hash(key);
        let mut stripe = self.stripe(id);
        if stripe.entries.contains_key(&id) {
            return;
        }
        // The oldest settled keys leave first; a key whose id was re-inserted
        // may leave a little early, which only shortens its window.
        // Keys in flight go to the back: their outcome is not known yet.
        let mut budget = stripe.order.len();
        while stripe.entries.len() >= self.capacity_per_stripe && budget > 0 {
            budget -= 1;
            let Some(oldest) = stripe.order.pop_front() else {
                break;
            };
            match stripe.entries.get(&oldest) {
                Some(e) if e.inflight > 0 => stripe.order.push_back(oldest),
                Some(_) => {
                    stripe.entries.remove(&oldest);
                }
                None => {}
            }
        }
        stripe.order.push_back(id);
        stripe.entries.insert(
            id,
            Entry {
                fingerprint,
                shard,
                inflight,
                settled,
            },
        );
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stripe(&self, id: u128) -> std::sync::MutexGuard<'_, Stripe> {
        self.stripes[(id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_belongs_to_one_request_across_shards() {
        let index = IdempotencyIndex::new(64);
        assert_eq!(index.claim("K", 1, 0), Ok(()));
        assert_eq!(index.claim("K", 2, 3), Err(0), "in flight on shard 0");
        assert_eq!(index.claim("K", 1, 0), Ok(()), "the same request");
        index.settle("K");
        index.settle("K");
        assert_eq!(index.claim("K", 2, 3), Err(0), "settled on shard 0");
        // A refused first request leaves the key free.
        assert_eq!(index.claim("L", 1, 1), Ok(()));
        index.release("L");
        assert_eq!(index.claim("L", 2, 2), Ok(()));
    }

    #[test]
    fn bounded_oldest_first() {
        let index = IdempotencyIndex::new(STRIPES);
        for i in 0..10 * STRIPES {
            index.claim(&format!("k{i}"), 1, 0).unwrap();
            index.settle(&format!("k{i}"));
        }
        assert!(index.len() <= STRIPES, "{}", index.len());
        assert_eq!(
            index.claim(&format!("k{}", 10 * STRIPES - 1), 2, 0),
            Err(0),
            "the newest key is still there"
        );
        assert!(IdempotencyIndex::new(0).claim("x", 1, 0).is_ok());
    }
}
