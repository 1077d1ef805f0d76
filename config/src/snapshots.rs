//! `[snapshots]`: shard state snapshots, so a reopen replays only the log's
//! tail (docs/configuration.md, docs/operations.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// When shards write snapshots of their state.
///
/// ```toml
/// [snapshots]
/// enabled = true        # the default
/// interval_ms = 300000  # every 5 minutes; 0 = only on close
/// keep = 2              # per shard, the newest
/// on_close = true
/// ```
///
/// Snapshots apply to the embedded log (`file://`) on one node. With Kafka
/// or in cluster mode they are never written nor read: the topic is the
/// history every node shares, and a local file cannot prove it is a prefix
/// of it under the current ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Write and use snapshots at all. Off: every reopen replays the whole
    /// log (existing snapshots are ignored, not deleted).
    pub enabled: bool,
    /// Time between snapshot rounds (every shard, one after the other);
    /// 0 = none while running, only `on_close` (and after an erase).
    pub interval_ms: u64,
    /// Snapshots kept per shard, newest first (an older one is the fallback
    /// when the newest is damaged). At least 1.
    pub keep: usize,
    /// Take a round when floe closes (so the next open replays nothing).
    pub on_close: bool,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: true,
            interval_ms: 300_000,
            keep: 2,
            on_close: true,
        }
    }
}

/// Shortest interval accepted: a round reads every shard's state.
pub const MIN_SNAPSHOT_INTERVAL_MS: u64 = 100;

impl SnapshotConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.interval_ms != 0 && self.interval_ms < MIN_SNAPSHOT_INTERVAL_MS {
            return Err(Error::Invalid(format!(
                "snapshots.interval_ms must be 0 (only on close) or at least {MIN_SNAPSHOT_INTERVAL_MS}, got {}",
                self.interval_ms
            )));
        }
        if !(1..=100).contains(&self.keep) {
            return Err(Error::Invalid(format!(
                "snapshots.keep must be between 1 and 100, got {}",
                self.keep
            )));
        }
        Ok(())
    }

    /// The time between rounds (`None`: no periodic rounds).
    pub fn interval(&self) -> Option<Duration> {
        (self.enabled && self.interval_ms > 0).then(|| Duration::from_millis(self.interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_intervals_and_counts_are_refused() {
        SnapshotConfig::default().validate().unwrap();
        let only_on_close = SnapshotConfig {
            interval_ms: 0,
            ..SnapshotConfig::default()
        };
        only_on_close.validate().unwrap();
        assert_eq!(only_on_close.interval(), None);
        let err = SnapshotConfig {
            interval_ms: 5,
            ..SnapshotConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("at least 100, got 5"), "{err}");
        let err = SnapshotConfig {
            keep: 0,
            ..SnapshotConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("snapshots.keep"), "{err}");
    }
}
