//! The result cache: query results keyed by the SQL text and the snapshot it
//! read, bounded by age, entry count and bytes.
//!
//! A new snapshot changes the key, so new data is never hidden by an old
//! entry; the TTL bounds how long entries of a superseded snapshot linger, and
//! time-travel results (which never change) are cached like any other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;

/// What identifies a result: the statement and the data it read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub(crate) sql: String,
    /// The snapshot the query read (`None`: the table was empty).
    pub(crate) snapshot: Option<i64>,
    /// The topology version `things.shard` was routed by, if it was.
    pub(crate) topology: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    batches: Arc<Vec<RecordBatch>>,
    bytes: usize,
    inserted: Instant,
    last_used: u64,
}

/// LRU within TTL, entry and byte bounds. Pure: the caller passes the time.
#[derive(Debug)]
pub(crate) struct ResultCache {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<CacheKey, Entry>,
}

/// Bytes a result holds in memory.
pub(crate) fn result_bytes(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::get_array_memory_size).sum()
}

impl ResultCache {
    pub(crate) fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        ResultCache {
            ttl,
            max_entries,
            max_bytes,
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The cached result, if present and younger than the TTL.
    pub(crate) fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Arc<Vec<RecordBatch>>> {
        let expired = match self.entries.get(key) {
            None => return None,
            Some(entry) => now.saturating_duration_since(entry.inserted) >= self.ttl,
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let entry = self.entries.get_mut(key)?;
        entry.last_used = self.tick;
        Some(entry.batches.clone())
    }

    /// Stores a result; one larger than the whole byte bound is not stored.
    /// Evicts expired entries first, then the least recently used.
    pub(crate) fn put(&mut self, key: CacheKey, batches: Arc<Vec<RecordBatch>>, now: Instant) {
        let bytes = result_bytes(&batches);
        if self.max_entries == 0 || bytes > self.max_bytes {
            return;
        }
        self.remove(&key);
        let ttl = self.ttl;
        let expired: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.inserted) >= ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
        while self.entries.len() >= self.max_entries || self.bytes + bytes > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.tick += 1;
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                batches,
                bytes,
                inserted: now,
                last_used: self.tick,
            },
        );
    }

    /// Drops every result.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.bytes;
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::Int64Array;

    use super::*;

    fn key(sql: &str, snapshot: i64) -> CacheKey {
        CacheKey {
            sql: sql.into(),
            snapshot: Some(snapshot),
            topology: None,
        }
    }

    fn result(rows: usize) -> Arc<Vec<RecordBatch>> {
        let array = Int64Array::from_iter_values(0..rows as i64);
        Arc::new(vec![
            RecordBatch::try_from_iter([("n", Arc::new(array) as _)]).unwrap(),
        ])
    }

    #[test]
    fn clearing_forgets_every_result() {
        let mut cache = ResultCache::new(Duration::from_secs(10), 10, 1 << 20);
        let t0 = Instant::now();
        cache.put(key("q", 1), result(3), t0);
        cache.put(key("r", 1), result(3), t0);
        cache.clear();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        assert!(cache.get(&key("q", 1), t0).is_none());
    }

    #[test]
    fn hit_within_ttl_miss_after_it_and_for_another_snapshot() {
        let mut cache = ResultCache::new(Duration::from_secs(10), 10, 1 << 20);
        let t0 = Instant::now();
        cache.put(key("q", 1), result(3), t0);
        assert!(
            cache
                .get(&key("q", 1), t0 + Duration::from_secs(9))
                .is_some()
        );
        assert!(cache.get(&key("q", 2), t0).is_none());
        assert!(
            cache
                .get(&key("q", 1), t0 + Duration::from_secs(10))
                .is_none()
        );
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn evicts_least_recently_used_past_the_entry_bound() {
        let mut cache = ResultCache::new(Duration::from_secs(60), 2, 1 << 20);
        let t = Instant::now();
        cache.put(key("a", 1), result(1), t);
        cache.put(key("b", 1), result(1), t);
        assert!(cache.get(&key("a", 1), t).is_some());
        cache.put(key("c", 1), result(1), t);
        assert!(cache.get(&key("a", 1), t).is_some());
        assert!(cache.get(&key("b", 1), t).is_none());
        assert!(cache.get(&key("c", 1), t).is_some());
    }

    #[test]
    fn keeps_within_the_byte_bound() {
        let one = result_bytes(&result(1000));
        let mut cache = ResultCache::new(Duration::from_secs(60), 100, one * 2 + one / 2);
        let t = Instant::now();
        for i in 0..5 {
            cache.put(key(&format!("q{i}"), 1), result(1000), t);
            assert!(cache.bytes() <= one * 2 + one / 2);
        }
        assert_eq!(cache.len(), 2);
        // Larger than the whole bound: not stored at all.
        cache.put(key("huge", 1), result(100_000), t);
        assert!(cache.get(&key("huge", 1), t).is_none());
    }
}
