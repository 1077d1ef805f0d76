//! The exactly-once Iceberg sink: pipeline partitions -> Arrow -> Parquet ->
//! one fast-append snapshot per commit carrying the consumed offsets.
//!
//! - [`layout`]: the `floe.events` table (schema, partition spec, sort order).
//! - [`Lake`]: a catalog opened by URL with the table in it.
//! - [`Sink`]: the single committer, fenced by a lease in table properties.
//! - [`LagHandle`] / [`SinkLag`]: how far the lake is behind the pipeline.
//!
//! `docs/iceberg.md` describes the protocol and why it cannot lose or double
//! an event.

mod batch;
mod catalog;
mod commit;
mod fence;
mod history;
mod lag;
pub mod layout;
mod options;
mod pinned;
mod run;
mod writer;

pub use batch::{arrow_schema, batch_to_records, records_to_batch, table_arrow_schema};
pub use catalog::{CATALOG_NAME, CatalogUrl, Lake, LakeLocation, check_warehouse, store_endpoint};
pub use commit::CommittedOffsets;
pub use fence::CommitFence;
pub use lag::{LagHandle, SinkLag};
pub use options::SinkOptions;
pub use run::{LandStats, Sink};
#[cfg(feature = "failpoints")]
pub use run::{SinkHook, SinkPhase};
pub(crate) use writer::DataWriter;
