//! Cross-shard SQL over floe's Iceberg tables.
//!
//! Not built yet: DataFusion over the landed `floe.events` table arrives with the
//! cross-shard query issue. The crate exists so the workspace already shows the
//! architecture; it exports nothing until it can answer a query.
#![deny(missing_docs)]
