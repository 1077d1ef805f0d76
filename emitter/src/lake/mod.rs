//! Lake maintenance: the commits the sink does not make.
//!
//! - [`RewriteFiles`]: one atomic snapshot that removes data files and adds
//!   others (`replace`, `overwrite`), safe beside the committing sink.
//! - [`compact`]: small files of a partition merged into files of about the
//!   target size, sorted by `key_hash` ([`plan_compaction`] is the pure plan).
//! - [`expire`]: old snapshots removed and every file no live snapshot
//!   references deleted, orphans of crashed writers included.
//! - [`erase_entity`]: every row of one entity removed (an `overwrite`)
//!   and the history that held it expired and deleted (GDPR erase).
//! - [`Maintenance`]: both on a timer beside the sink.
//!
//! All of them swap the table's metadata with a compare-and-swap on the
//! catalog, retrying against the new metadata when the sink (or anyone)
//! committed in between. `docs/iceberg.md` gives the protocol.

mod compact;
mod erase;
mod expire;
mod files;
mod policy;
mod rewrite;
mod summary;
pub(crate) mod swap;

pub use compact::{CompactOptions, CompactReport, PartitionFiles, compact, plan_compaction};
pub use erase::{EntityRows, EraseOptions, LakeErasure, erase_entity, erase_rows, find_entity};
pub use expire::{DeletedFiles, EXPIRED_BEFORE_PROPERTY, ExpireOptions, ExpireReport, expire};
pub use policy::{Maintenance, MaintenanceOptions, MaintenanceStats, run_round};
pub use rewrite::{MAINTENANCE_PROPERTY, RewriteFiles, RewriteReport};
