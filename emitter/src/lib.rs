//! floe's pipeline backends and the Iceberg sink.
//!
//! [`FileLog`] is the embedded [`floe_engine::Pipeline`]: partitioned segment
//! files with group commit, for a single machine. With the `conformance`
//! feature, [`conformance`] holds the test suite every pipeline backend must
//! pass. With the `kafka` feature, [`KafkaPipeline`] keeps the events in a
//! Kafka topic instead, and [`TansuBroker`] starts a local broker for tests
//! and benchmarks. With the `test-util` feature, [`MemPipeline`] is the
//! contract in memory, for tests that need a pipeline in milliseconds, and
//! [`S3Server`] starts a local S3-compatible object store (floe-s3-server, over s3s-fs's store).
//! With the `sink` feature (on by default), [`sink`] lands a pipeline in the
//! Iceberg table `floe.events` exactly once, and [`replay`] reads history
//! back (the lake snapshot, then the pipeline after it) for recovery,
//! migrations and fresh-mode SQL.
#![deny(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "sink")]
pub mod lake;
mod log;
#[cfg(feature = "test-util")]
mod mem;
#[cfg(feature = "sink")]
mod outage;
// The server processes the test harnesses start (tansu, floe-s3-server).
#[cfg(any(feature = "kafka", feature = "test-util"))]
mod process;
#[cfg(feature = "sink")]
pub mod replay;
#[cfg(feature = "test-util")]
mod s3server;
#[cfg(feature = "sink")]
pub mod sink;
mod snapshot;

pub use error::{Error, Result};
#[cfg(feature = "kafka")]
pub use kafka::{BrokerError, KafkaOptions, KafkaPipeline, TansuBroker};
pub use log::{
    DamagedRegion, FileLog, FsyncPolicy, LogOptions, LogRepair, LostRange, PartitionScan,
    RepairPlan, RepairReport, SegmentCheck, SegmentVerdict, TornTail, check_segment,
};
#[cfg(feature = "test-util")]
pub use mem::MemPipeline;
#[cfg(feature = "sink")]
pub use outage::{Outage, outage};
#[cfg(feature = "test-util")]
pub use s3server::{S3Server, S3ServerError};
pub use snapshot::{SNAPSHOTS_DIR, SnapshotFile, SnapshotStore};
