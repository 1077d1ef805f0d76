//! `[query]`: how cross-shard SQL runs, and the query options a
//! configuration gives.

use std::time::Duration;

use floe_engine::PartitionKeySpec;
use serde::{Deserialize, Serialize};

use crate::Config;

/// Cross-shard SQL (`[query]`): how `Floe::sql` and `floe sql` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// A query running longer is cancelled with a timeout error.
    pub timeout_ms: u64,
    /// Cache results by SQL text and snapshot.
    pub cache: bool,
    /// How long a cached result is served.
    pub cache_ttl_ms: u64,
    /// Most results cached.
    pub cache_max_entries: usize,
    /// Most bytes of cached results.
    pub cache_max_bytes: u64,
    /// Parallel scan partitions; 0 = one per core.
    pub target_partitions: usize,
    /// Files read at once from an object store (`s3://` warehouses): the
    /// scan is spread over at least this many groups, since remote reads
    /// wait on the network rather than a core. At least 1.
    pub remote_read_concurrency: usize,
    /// Most bytes of an object-store warehouse's data files kept in memory
    /// for later queries; 0 = no cache. Local files use the page cache.
    pub data_cache_bytes: u64,
    /// Let a namespace filter prune the `bucket(partition_key)` partitions
    /// when the configured partition key is the namespace for every type.
    /// Turn off if writes pass explicit partition keys other than the namespace.
    pub namespace_pruning: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let options = floe_query::QueryOptions::default();
        QueryConfig {
            timeout_ms: options.timeout.as_millis() as u64,
            cache: options.cache_enabled,
            cache_ttl_ms: options.cache_ttl.as_millis() as u64,
            cache_max_entries: options.cache_max_entries,
            cache_max_bytes: options.cache_max_bytes as u64,
            target_partitions: options.target_partitions,
            remote_read_concurrency: options.remote_read_concurrency,
            data_cache_bytes: options.data_cache_bytes,
            namespace_pruning: true,
        }
    }
}

impl Config {
    /// The query settings this configuration describes; namespace pruning
    /// only when every type's partition key is its namespace.
    pub fn query_options(&self) -> floe_query::QueryOptions {
        let q = &self.query;
        floe_query::QueryOptions {
            timeout: Duration::from_millis(q.timeout_ms),
            cache_enabled: q.cache,
            cache_ttl: Duration::from_millis(q.cache_ttl_ms),
            cache_max_entries: q.cache_max_entries,
            cache_max_bytes: q.cache_max_bytes as usize,
            target_partitions: q.target_partitions,
            remote_read_concurrency: q.remote_read_concurrency,
            data_cache_bytes: q.data_cache_bytes,
            namespace_is_partition_key: q.namespace_pruning
                && self.partition_key.default == PartitionKeySpec::tenant()
                && self.partition_key.types.is_empty(),
        }
    }
}
