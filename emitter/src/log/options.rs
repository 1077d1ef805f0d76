//! How a log is opened: partitions, segment size and the fsync policy.

use std::time::Duration;

use crate::error::{Error, Result};

/// When the log fsyncs, and so what an acknowledged append survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Fsync once per group commit, before any append of the group is
    /// acknowledged or readable: acknowledged records survive power loss.
    #[default]
    Always,
    /// Acknowledge after the write and fsync in the background at this
    /// interval (and when a segment is sealed). Acknowledged records survive a
    /// crash of the process, but NOT power loss or a kernel crash: up to one
    /// interval of acknowledged records can be lost.
    Interval(Duration),
    /// Never fsync, not even on close (tests and benchmarks): acknowledged
    /// records survive a crash of the process only.
    Never,
}

/// How a [`FileLog`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Number of partitions; fixed when the log is created.
    pub partitions: u32,
    /// A segment is sealed and a new one started before it would grow past
    /// this size (a single larger record gets a segment of its own).
    pub segment_bytes: u64,
    /// Durability of acknowledged appends.
    pub fsync: FsyncPolicy,
}

impl LogOptions {
    /// Default segment size: 64 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    /// Smallest accepted segment size.
    pub const MIN_SEGMENT_BYTES: u64 = 1024;

    /// Options for `partitions` partitions, with the default segment size and
    /// [`FsyncPolicy::Always`].
    pub fn new(partitions: u32) -> Self {
        LogOptions {
            partitions,
            ..LogOptions::default()
        }
    }

    /// Checks that the options can be used.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 {
            return Err(Error::InvalidOptions(
                "partitions must be at least 1".into(),
            ));
        }
        if self.segment_bytes < Self::MIN_SEGMENT_BYTES {
            return Err(Error::InvalidOptions(format!(
                "segment_bytes is {}, the minimum is {}",
                self.segment_bytes,
                Self::MIN_SEGMENT_BYTES
            )));
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err(Error::InvalidOptions(
                "the fsync interval must be longer than zero (use FsyncPolicy::Always)".into(),
            ));
        }
        Ok(())
    }
}

impl Default for LogOptions {
    /// One partition, 64 MiB segments, [`FsyncPolicy::Always`].
    fn default() -> Self {
        LogOptions {
            partitions: 1,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            fsync: FsyncPolicy::Always,
        }
    }
}
