//! floe's integration tests, one module per area, in one test binary:
//! each `tests/*.rs` linked on its own was a ~300 MB executable of the whole
//! stack (DataFusion, Iceberg, rdkafka, axum), and linking two dozen of them
//! dominated the test build's time and disk. nextest still runs every test
//! in its own process, so the modules share nothing at run time.
//!
//! The helpers are in `tests/support/` (each module includes what it uses
//! by `#[path]`; `support` itself is shared here). A module needing more
//! than the default features is compiled only with them.

// Each module includes the helpers it uses as its own copy, as it did when
// it was a binary of its own (so it sees only what it asked for); the
// `cluster` module includes the cluster harness under the same name.
#![allow(clippy::duplicate_mod, clippy::module_inception)]

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "failpoints")]
mod archival;
#[cfg(all(feature = "cli", feature = "server"))]
mod catalog_rest;
#[cfg(feature = "cli")]
mod cli;
mod cluster;
mod cluster_failover;
mod cluster_nodes;
mod cluster_reshard;
mod cluster_routing;
mod corruption;
mod erase;
mod export;
#[cfg(feature = "cli")]
mod import;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "cli")]
mod lake;
#[cfg(all(feature = "cli", feature = "failpoints"))]
mod lake_backends;
mod migration;
mod migration_ranges;
mod recovery;
mod routing_config;
#[cfg(all(feature = "server", feature = "cli"))]
mod serve;
#[cfg(all(feature = "server", feature = "cli"))]
mod serve_archival;
#[cfg(all(feature = "server", feature = "cli"))]
mod serve_batch;
#[cfg(all(feature = "server", feature = "cli"))]
mod serve_input;
#[cfg(all(feature = "server", feature = "cli"))]
mod serve_ops;
mod serve_things;
mod serve_writes;
mod snapshots;
#[cfg(all(feature = "server", feature = "cli"))]
mod snapshots_crash;
#[cfg(feature = "cli")]
mod sql;
mod time_sharding;
mod write_integrity;
mod write_many;
mod writes;
