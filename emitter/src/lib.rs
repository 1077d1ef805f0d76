//! floe's pipeline backends and the Iceberg sink.
//!
//! [`FileLog`] is the embedded [`floe_engine::Pipeline`]: partitioned segment
//! files with group commit, for a single machine. With the `conformance`
//! feature, [`conformance`] holds the test suite every pipeline backend must
//! pass. [`sink`] lands a pipeline in the Iceberg table `floe.events`
//! exactly once.
#![deny(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod log;
pub mod sink;

pub use error::{Error, Result};
pub use log::{FileLog, FsyncPolicy, LogOptions};
