//! Cross-shard SQL over floe's Iceberg tables.
//!
//! [`CrossShardQuery`] answers SQL with DataFusion over `floe.events`, the
//! table the sink lands every event in. Files are planned through Iceberg
//! (partition and min/max pruning from the manifests) and read with
//! DataFusion's parallel Parquet scan (row-group and page pruning), so a
//! query on one tenant reads that tenant's partitions only.
//!
//! - `events`: one row per landed event (see `docs/iceberg.md`).
//! - `things`: the current state of every live entity (highest version per
//!   namespace, type and id; deletions removed), its JSON in `data`.
//! - JSON functions (`json_get_str`, `json_get_int`, ...) read entity fields.
//! - Read-only: DDL and DML are refused with [`Error::ReadOnly`].
//! - Each query reports [`QueryStats`]; results are cached by SQL and
//!   snapshot; [`QueryRequest`] gives time travel, a timeout and fresh mode
//!   (acknowledged events the lake does not hold yet, read from the pipeline).
//!
//! `docs/query.md` describes the consistency of each mode.
#![deny(missing_docs)]

mod cache;
mod cancel;
mod error;
mod file_cache;
mod filter;
mod fresh;
mod options;
mod owner;
mod predicate;
mod provider;
mod query;
mod stats;
mod store;
mod things;

/// The Arrow version results are in (DataFusion's), with its pretty, CSV
/// and JSON writers.
pub use datafusion::arrow;
pub use error::{Error, Result};
pub use file_cache::DataCacheStats;
pub use filter::{
    Compare, Condition, FilterError, JsonPath, MAX_CONDITIONS, MAX_FILTER_LEN, MAX_IN_VALUES,
    MAX_PATH_DEPTH, PathSegment, Scalar, parse_filter,
};
pub use options::{AsOf, QueryOptions, QueryRequest};
pub use owner::RouterSource;
pub use query::{CrossShardQuery, QueryResult, ThingsPage};
pub use stats::QueryStats;
pub use things::{OrderBy, Thing, ThingsQuery};
