//! Settings of the sink.

use std::time::Duration;

use crate::error::{Error, Result};

/// How the sink batches, writes and commits.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkOptions {
    /// Commit at least this often while events arrive.
    pub commit_interval: Duration,
    /// Commit when the buffered events reach about this many bytes.
    pub commit_bytes: usize,
    /// Commit when this many events are buffered.
    pub commit_events: usize,
    /// Roll a data file over at about this size.
    pub target_file_bytes: usize,
    /// zstd level of the Parquet files (1 = fastest).
    pub zstd_level: i32,
    /// How long a sink's commit lease lasts without renewal.
    pub lease: Duration,
    /// Delete pipeline segments wholly below the committed offsets.
    pub retention: bool,
    /// Events read per partition per call.
    pub read_chunk: usize,
    /// Sleep between polls when the pipeline has nothing new.
    pub poll_interval: Duration,
    /// A stable name of where this sink runs (floe uses an id stored in the
    /// data directory). A lease held under the same name is taken over at
    /// once: the data directory's lock guarantees its earlier holder is gone
    /// (it crashed). Leases of other names are honoured until they expire.
    pub instance: String,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            commit_interval: Duration::from_secs(10),
            commit_bytes: 128 << 20,
            commit_events: 1_000_000,
            target_file_bytes: 128 << 20,
            zstd_level: 1,
            lease: Duration::from_secs(60),
            retention: false,
            read_chunk: 16_384,
            poll_interval: Duration::from_millis(100),
            instance: "floe".into(),
        }
    }
}

impl SinkOptions {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::LakeConfig(m.to_string()));
        if self.commit_interval.is_zero() {
            return bad("commit interval must be positive");
        }
        if self.commit_bytes == 0 || self.commit_events == 0 {
            return bad("commit size limits must be positive");
        }
        if self.target_file_bytes < 1024 {
            return bad("target file size must be at least 1024 bytes");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad("zstd level must be within 1..=22");
        }
        if self.lease < Duration::from_secs(1) {
            return bad("the sink lease must last at least 1 s");
        }
        if self.instance.is_empty() || self.instance.contains('/') {
            return bad("the sink instance name must be non-empty and contain no '/'");
        }
        if self.read_chunk == 0 || self.poll_interval.is_zero() {
            return bad("read chunk and poll interval must be positive");
        }
        Ok(())
    }
}
