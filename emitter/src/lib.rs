//! floe's pipeline backends and the Iceberg sink.
//!
//! [`FileLog`] is the embedded [`floe_engine::Pipeline`]: partitioned segment
//! files with group commit, for a single machine. With the `conformance`
//! feature, [`conformance`] holds the test suite every pipeline backend must
//! pass. With the `kafka` feature, [`KafkaPipeline`] keeps the events in a
//! Kafka topic instead, and [`TansuBroker`] starts a local broker for tests
//! and benchmarks.
//! With the `sink` feature (on by default), [`sink`] lands a pipeline in the
//! Iceberg table `floe.events` exactly once.
#![deny(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
mod log;
#[cfg(feature = "sink")]
pub mod sink;

pub use error::{Error, Result};
#[cfg(feature = "kafka")]
pub use kafka::{BrokerError, KafkaOptions, KafkaPipeline, TansuBroker};
pub use log::{
    DamagedRegion, FileLog, FsyncPolicy, LogOptions, LogRepair, LostRange, PartitionScan,
    RepairPlan, RepairReport, SegmentCheck, SegmentVerdict, TornTail, check_segment,
};
