//! Shard migrations: plans, replay from Iceberg, write buffer, cutover, rollback.
//!
//! Not built yet: it arrives with the live-migration issue and exports nothing
//! until a migration can run end to end.
#![deny(missing_docs)]
