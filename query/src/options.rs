//! How a [`crate::CrossShardQuery`] runs, and what one query asks for.

use std::time::Duration;

/// Settings of a [`crate::CrossShardQuery`] (`[query]` in floe's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    /// A query running longer is cancelled with [`crate::Error::Timeout`].
    pub timeout: Duration,
    /// Cache results by SQL text and snapshot.
    pub cache_enabled: bool,
    /// How long a cached result is served.
    pub cache_ttl: Duration,
    /// Most results kept.
    pub cache_max_entries: usize,
    /// Most bytes of results kept (Arrow memory).
    pub cache_max_bytes: usize,
    /// Parallel scan partitions (0: one per core).
    pub target_partitions: usize,
    /// Files read at once from an object store (`s3://`): the scan is
    /// spread over at least this many file groups. A remote read spends
    /// its time waiting on the network, so one group per core leaves the
    /// cores idle between requests; local files use `target_partitions`.
    pub remote_read_concurrency: usize,
    /// Most bytes of an object-store warehouse's data files kept in memory
    /// for later queries (0: none). Data files are immutable, so what is
    /// kept never goes stale; local files rely on the page cache instead.
    pub data_cache_bytes: u64,
    /// Every event's partition key is its namespace (floe's default
    /// `$namespace` partition key with no per-type override), so a namespace
    /// filter can prune the `bucket(partition_key)` partitions. Wrong
    /// answers follow if this is set while some type is keyed otherwise.
    pub namespace_is_partition_key: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            timeout: Duration::from_secs(30),
            cache_enabled: true,
            cache_ttl: Duration::from_secs(60),
            cache_max_entries: 100,
            cache_max_bytes: 64 << 20,
            target_partitions: 0,
            remote_read_concurrency: 16,
            data_cache_bytes: 256 << 20,
            namespace_is_partition_key: false,
        }
    }
}

/// Which snapshot a query reads (time travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// This snapshot id.
    Snapshot(i64),
    /// The snapshot that was current at this time (ms since the epoch).
    TimestampMs(i64),
}

/// Options of one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRequest {
    /// Read an older snapshot instead of the current one.
    pub as_of: Option<AsOf>,
    /// Also read acknowledged events the lake does not hold yet (needs a
    /// pipeline, see [`crate::CrossShardQuery::with_pipeline`]).
    pub fresh: bool,
    /// Overrides [`QueryOptions::timeout`] for this query.
    pub timeout: Option<Duration>,
    /// Skip the result cache (neither read nor fill it).
    pub no_cache: bool,
}

impl QueryRequest {
    /// The current snapshot, cached, default timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the snapshot as of `as_of`.
    pub fn as_of(mut self, as_of: AsOf) -> Self {
        self.as_of = Some(as_of);
        self
    }

    /// Includes acknowledged events not landed yet.
    pub fn fresh(mut self) -> Self {
        self.fresh = true;
        self
    }

    /// Cancels the query after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bypasses the result cache.
    pub fn no_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }
}
