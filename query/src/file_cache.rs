//! Byte ranges of an object-store warehouse's data files, kept in memory.
//!
//! A query over `s3://` pays one request per column chunk it reads; on a
//! local warehouse the same read is served by the operating system's page
//! cache. [`CachedStore`] wraps the warehouse's object store and keeps what
//! DataFusion's Parquet reader fetched, so the next query over the same
//! files reads memory instead of the network.
//!
//! Caching without invalidation is sound because Iceberg data files are
//! immutable: a writer never rewrites a path (every data file gets a new
//! UUID name), compaction and erase write new files and commit a snapshot
//! that stops referencing the old ones, and a query reads only the files of
//! the snapshot it planned. Bytes cached for a file that was deleted since
//! are the bytes it held; they are dropped as any other entry when space is
//! needed. Writes through the wrapper (which DataFusion never issues) drop
//! what is cached for their path all the same.
//!
//! Only plain range reads are cached: conditional requests, versioned reads,
//! `HEAD`s and open-ended ranges go to the store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// What the cache holds and how often it answered, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataCacheStats {
    /// Byte ranges answered from memory.
    pub hits: u64,
    /// Byte ranges fetched from the store.
    pub misses: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Byte ranges held now.
    pub entries: u64,
    /// Most bytes it may hold.
    pub capacity: u64,
}

/// An object store whose range reads are served from memory when a read
/// of the same bytes was made before.
pub(crate) struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    ranges: Arc<Mutex<RangeCache>>,
}

/// A handle on a [`CachedStore`]'s counters that outlives its registration
/// in DataFusion's runtime.
#[derive(Clone)]
pub(crate) struct CacheHandle(Arc<Mutex<RangeCache>>);

impl CacheHandle {
    pub(crate) fn stats(&self) -> DataCacheStats {
        lock(&self.0).stats()
    }

    /// Drops every cached range (the counters stay).
    pub(crate) fn clear(&self) {
        let mut cache = lock(&self.0);
        cache.files.clear();
        cache.recency.clear();
        cache.bytes = 0;
    }
}

impl CachedStore {
    /// Wraps `inner`, holding at most `capacity` bytes.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, capacity: u64) -> Self {
        CachedStore {
            inner,
            ranges: Arc::new(Mutex::new(RangeCache::new(capacity))),
        }
    }

    pub(crate) fn handle(&self) -> CacheHandle {
        CacheHandle(self.ranges.clone())
    }

    fn cache(&self) -> MutexGuard<'_, RangeCache> {
        lock(&self.ranges)
    }
}

fn lock(cache: &Mutex<RangeCache>) -> MutexGuard<'_, RangeCache> {
    // The cache holds copies of immutable bytes: a panic elsewhere while the
    // lock was held cannot leave it wrong, only incomplete.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A plain read of `range`, the only kind the cache answers.
fn plain_range(options: &GetOptions) -> Option<Range<u64>> {
    let plain = !options.head
        && options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none();
    match &options.range {
        Some(GetRange::Bounded(range)) if plain && range.start < range.end => Some(range.clone()),
        _ => None,
    }
}

fn from_memory(data: Bytes, meta: ObjectMeta, range: Range<u64>) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async { Ok(data) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
    }
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.cache().forget(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.cache().forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let Some(wanted) = plain_range(&options) else {
            return self.inner.get_opts(location, options).await;
        };
        if let Some(Hit {
            data,
            range,
            meta: Some(meta),
        }) = self.cache().read(location, &wanted, true)
        {
            return Ok(from_memory(data, meta, range));
        }
        let result = self.inner.get_opts(location, options).await?;
        let (meta, range) = (result.meta.clone(), result.range.clone());
        let attributes = result.attributes.clone();
        let data = result.bytes().await?;
        self.cache()
            .insert(location, range.start, data.clone(), Some(meta.clone()));
        Ok(GetResult {
            attributes,
            ..from_memory(data, meta, range)
        })
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let mut answers: Vec<Option<Bytes>> = {
            let mut cache = self.cache();
            ranges
                .iter()
                .map(|range| cache.read(location, range, false).map(|hit| hit.data))
                .collect()
        };
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(range, _)| range.clone())
            .collect();
        if !missing.is_empty() {
            // The store coalesces nearby ranges into fewer requests.
            let fetched = self.inner.get_ranges(location, &missing).await?;
            let mut cache = self.cache();
            let mut fetched = missing.into_iter().zip(fetched);
            for answer in answers.iter_mut().filter(|a| a.is_none()) {
                let (range, data) = fetched
                    .next()
                    .expect("the store answers every range it was asked for");
                // A range running past the object's end comes back short;
                // what is kept is what came back.
                cache.insert(location, range.start, data.clone(), None);
                *answer = Some(data);
            }
        }
        Ok(answers.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let ranges = self.ranges.clone();
        let locations = locations
            .map(move |location| {
                if let Ok(path) = &location {
                    lock(&ranges).forget(path);
                }
                location
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.cache().forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        {
            let mut cache = self.cache();
            cache.forget(from);
            cache.forget(to);
        }
        self.inner.rename_opts(from, to, options).await
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({})", self.inner)
    }
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner.to_string())
            .field("stats", &self.cache().stats())
            .finish()
    }
}

/// The cached ranges of every file, evicted least recently used first.
struct RangeCache {
    capacity: u64,
    bytes: u64,
    files: HashMap<Path, CachedFile>,
    /// Last use -> the range used then; the first entry goes first.
    recency: BTreeMap<u64, (Path, u64)>,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// A read answered from memory.
struct Hit {
    data: Bytes,
    range: Range<u64>,
    meta: Option<ObjectMeta>,
}

#[derive(Default)]
struct CachedFile {
    /// The object's metadata, once a read returned it.
    meta: Option<ObjectMeta>,
    /// Start -> the bytes from there and their last use. Ranges may
    /// overlap.
    ranges: BTreeMap<u64, CachedRange>,
}

struct CachedRange {
    data: Bytes,
    used: u64,
}

impl RangeCache {
    fn new(capacity: u64) -> Self {
        RangeCache {
            capacity,
            bytes: 0,
            files: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    fn stats(&self) -> DataCacheStats {
        DataCacheStats {
            hits: self.hits,
            misses: self.misses,
            bytes: self.bytes,
            entries: self.recency.len() as u64,
            capacity: self.capacity,
        }
    }

    /// The bytes of `wanted` if a cached range holds all of them, with the
    /// range they cover (a read past the object's end is clamped to it once
    /// its size is known) and the object's metadata if known. With
    /// `need_meta`, a range whose object's metadata is unknown is a miss.
    fn read(&mut self, path: &Path, wanted: &Range<u64>, need_meta: bool) -> Option<Hit> {
        let meta = self.files.get(path).and_then(|file| file.meta.clone());
        let wanted = match &meta {
            Some(meta) => wanted.start..wanted.end.min(meta.size),
            None => wanted.clone(),
        };
        let found = if (need_meta && meta.is_none()) || wanted.start >= wanted.end {
            None
        } else {
            self.lookup(path, &wanted)
        };
        match found {
            Some(data) => {
                self.hits += 1;
                Some(Hit {
                    data,
                    range: wanted,
                    meta,
                })
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    fn lookup(&mut self, path: &Path, wanted: &Range<u64>) -> Option<Bytes> {
        let file = self.files.get_mut(path)?;
        // Overlapping entries are few (a footer, a handful of column
        // chunks per file): the newest start at or before the wanted one
        // that reaches its end wins.
        let (&start, range) = file
            .ranges
            .range_mut(..=wanted.start)
            .rev()
            .find(|(start, range)| **start + range.data.len() as u64 >= wanted.end)?;
        let from = (wanted.start - start) as usize;
        let data = range
            .data
            .slice(from..from + (wanted.end - wanted.start) as usize);
        self.recency.remove(&range.used);
        self.clock += 1;
        range.used = self.clock;
        self.recency.insert(self.clock, (path.clone(), start));
        Some(data)
    }

    /// Keeps `data`, the bytes of `path` from `start` on.
    fn insert(&mut self, path: &Path, start: u64, data: Bytes, meta: Option<ObjectMeta>) {
        let len = data.len() as u64;
        // One range larger than an eighth of the cache would push out much
        // of what is held for a single read: such reads are not kept.
        if len == 0 || len > self.capacity / 8 {
            if let (Some(meta), Some(file)) = (meta, self.files.get_mut(path)) {
                file.meta.get_or_insert(meta);
            }
            return;
        }
        self.clock += 1;
        let used = self.clock;
        let file = self.files.entry(path.clone()).or_default();
        if meta.is_some() {
            file.meta = meta;
        }
        let replaced = file.ranges.insert(start, CachedRange { data, used });
        if let Some(old) = replaced {
            self.recency.remove(&old.used);
            self.bytes -= old.data.len() as u64;
        }
        self.recency.insert(used, (path.clone(), start));
        self.bytes += len;
        while self.bytes > self.capacity {
            let Some((_, (path, start))) = self.recency.pop_first() else {
                break;
            };
            self.drop_range(&path, start);
        }
    }

    fn drop_range(&mut self, path: &Path, start: u64) {
        let Some(file) = self.files.get_mut(path) else {
            return;
        };
        if let Some(range) = file.ranges.remove(&start) {
            self.bytes -= range.data.len() as u64;
        }
        if file.ranges.is_empty() {
            self.files.remove(path);
        }
    }

    fn forget(&mut self, path: &Path) {
        if let Some(file) = self.files.remove(path) {
            for range in file.ranges.values() {
                self.recency.remove(&range.used);
                self.bytes -= range.data.len() as u64;
            }
        }
    }
}

#[cfg(test)]
#[path = "file_cache_tests.rs"]
mod tests;
