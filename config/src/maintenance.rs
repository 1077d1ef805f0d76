//! `[lake.maintenance]`: the compaction and expiry policy that runs beside
//! the sink.

use std::time::Duration;

use floe_emitter::lake::{CompactOptions, ExpireOptions, MaintenanceOptions};
use serde::{Deserialize, Serialize};

use super::LakeConfig;

/// The background lake maintenance of the sink process.
///
/// ```toml
/// [lake.maintenance]
/// compact = true
/// compact_min_files = 8
/// expire = true
/// expire_older_than_ms = 432000000   # 5 days
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Time between maintenance rounds.
    pub interval_ms: u64,
    /// Compact small files each round (tiered: see docs/iceberg.md).
    pub compact: bool,
    /// Small files of one size tier in one partition that trigger a merge
    /// (also the ratio between tiers).
    pub compact_min_files: usize,
    /// Files at least this large are never compacted; 0 = half of
    /// `lake.target_file_bytes`.
    pub compact_small_file_bytes: u64,
    /// Most input bytes merged into one group; 0 = `lake.target_file_bytes`.
    pub compact_max_input_bytes: u64,
    /// Most input bytes one round rewrites.
    pub compact_max_round_bytes: u64,
    /// Upper bound of the smallest size tier.
    pub compact_tier_base_bytes: u64,
    /// Expire snapshots and delete unreferenced files each round.
    pub expire: bool,
    /// Snapshots older than this are expired.
    pub expire_older_than_ms: u64,
    /// The newest snapshots always kept.
    pub expire_retain_last: usize,
    /// Unreferenced files younger than this are kept (commits in flight).
    pub orphan_grace_ms: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        let compact = CompactOptions::default();
        let expire = ExpireOptions::default();
        MaintenanceConfig {
            interval_ms: 60_000,
            compact: false,
            compact_min_files: 8,
            compact_small_file_bytes: 0,
            compact_max_input_bytes: 0,
            compact_max_round_bytes: compact.max_run_bytes,
            compact_tier_base_bytes: compact.tier_base_bytes,
            expire: false,
            expire_older_than_ms: expire.older_than.as_millis() as u64,
            expire_retain_last: expire.retain_last,
            orphan_grace_ms: expire.orphan_grace.as_millis() as u64,
        }
    }
}

impl LakeConfig {
    /// Compaction as `floe lake compact` and the policy run it: the sink's
    /// file size and zstd level; `tiered` as the background policy does.
    pub fn compact_options(&self, tiered: bool) -> CompactOptions {
        let m = &self.maintenance;
        let target = self.target_file_bytes;
        let or = |v: u64, default: u64| if v == 0 { default } else { v };
        CompactOptions {
            target_file_bytes: target,
            small_file_bytes: or(m.compact_small_file_bytes, target / 2),
            max_input_bytes: or(m.compact_max_input_bytes, target),
            max_run_bytes: m.compact_max_round_bytes,
            min_files: tiered.then_some(m.compact_min_files),
            tier_base_bytes: m.compact_tier_base_bytes,
            zstd_level: self.zstd_level,
        }
    }

    /// Expiry as the policy runs it.
    pub fn expire_options(&self) -> ExpireOptions {
        let m = &self.maintenance;
        ExpireOptions {
            older_than: Duration::from_millis(m.expire_older_than_ms),
            retain_last: m.expire_retain_last,
            orphan_grace: Duration::from_millis(m.orphan_grace_ms),
            dry_run: false,
        }
    }

    /// The background policy, or `None` when it has nothing to do.
    pub fn maintenance_options(&self) -> Option<MaintenanceOptions> {
        let m = &self.maintenance;
        if !m.compact && !m.expire {
            return None;
        }
        Some(MaintenanceOptions {
            interval: Duration::from_millis(m.interval_ms),
            compact: m.compact.then(|| self.compact_options(true)),
            expire: m.expire.then(|| self.expire_options()),
        })
    }
}
