//! How migrations run (`[migration]`), the options of one run, what a
//! finished one reports, and (with the `failpoints` feature) where tests
//! make one fail.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
#[cfg(feature = "failpoints")]
use crate::job::Phase;
use crate::plan::PlanKind;

/// How migrations run (`[migration]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// A migration that has not cut over after this long rolls back.
    pub timeout_ms: u64,
    /// Events applied to a target shard per step (a shard's other requests
    /// wait at most one step).
    pub batch_size: usize,
    /// Writes to moving keys the buffer holds before callers wait for a slot.
    pub buffer_capacity: usize,
    /// Data files the lake replay reads at once.
    pub lake_concurrency: usize,
    /// Pipeline catch-up rounds before buffering begins; buffering begins
    /// earlier once a round reads fewer than `batch_size` events.
    pub catch_up_rounds: u32,
    /// Compare source and target digests of the moved entities before the
    /// cutover.
    pub verify: bool,
    /// Time topologies: how long before a period starts its shard is added
    /// by the background task (a migration that moves nothing); 0 turns the
    /// task off.
    pub period_lead_time_ms: u64,
    /// Time topologies: how often the background task looks for due
    /// periods.
    pub period_check_interval_ms: u64,
    /// Time topologies: how many of the most recent periods (the current
    /// one included) stay in shard memory (seed 002's active window); the
    /// background task archives older ones, whose reads are then answered
    /// from the lake and whose writes are refused. 0 (the default) archives
    /// nothing automatically (`floe migrate archive-period` still does).
    pub active_periods: u32,
    /// Time topologies: what a write to a sealed or archived period does.
    pub archived_writes: ArchivedWrites,
    /// Time topologies: archived periods older than the `retain_periods`
    /// most recent ones (the current one included) are dropped by the
    /// background task: their rows are erased from the lake (seed 002's
    /// `ARCHIVE_PARTITION_MONTHS` and `drop_old_partitions`). 0 (the
    /// default) drops nothing. At least `active_periods` when set.
    pub retain_periods: u32,
}

/// What a write to a sealed or archived period does (seed 002's archive
/// window policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchivedWrites {
    /// Refused with `PeriodArchived` (HTTP `409 period_archived`); nothing
    /// is written.
    #[default]
    Refuse,
    /// The period is reactivated first (its entities replayed from the lake
    /// into its shard, a `reactivate-period` migration), then the write is
    /// applied.
    Reactivate,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            timeout_ms: 300_000,
            batch_size: 8192,
            buffer_capacity: 65_536,
            lake_concurrency: 4,
            catch_up_rounds: 8,
            verify: true,
            period_lead_time_ms: 7 * 24 * 3_600_000,
            period_check_interval_ms: 60_000,
            active_periods: 0,
            archived_writes: ArchivedWrites::Refuse,
            retain_periods: 0,
        }
    }
}

impl MigrationConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("migration.timeout_ms", self.timeout_ms as usize),
            ("migration.batch_size", self.batch_size),
            ("migration.buffer_capacity", self.buffer_capacity),
            ("migration.lake_concurrency", self.lake_concurrency),
            (
                "migration.period_check_interval_ms",
                self.period_check_interval_ms as usize,
            ),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be at least 1")));
            }
        }
        if self.retain_periods > 0 && self.retain_periods < self.active_periods {
            return Err(Error::InvalidConfig(format!(
                "migration.retain_periods ({}) must be at least migration.active_periods ({}): a period is archived before it is dropped",
                self.retain_periods, self.active_periods
            )));
        }
        Ok(())
    }
}

/// Where a test makes a migration fail (as a crash or an error would).
/// Only in builds with the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// An error after the first batch copied from the lake: rolls back.
    MidCopy,
    /// An error after the new topology is persisted and before routing
    /// switches: rolls back (the old topology is persisted again).
    MidCutover,
    /// Stops dead after the first copied batch, as if the process died:
    /// no rollback, the job stays `running` on disk.
    CrashMidCopy,
    /// Stops dead after the new topology is persisted, before routing
    /// switches, as if the process died there.
    CrashMidCutover,
    /// Stops dead just before entering `phase` (any phase but `planned`
    /// and `rolling_back`), as if the process died there: no rollback, the
    /// job stays `running` on disk, a restart settles it by the persisted
    /// topology.
    CrashBefore(Phase),
    /// An error just before entering `phase`: rolls back if that is before
    /// the cutover, finishes forward after.
    FailBefore(Phase),
}

/// Options of one migration: the configured ones plus test hooks.
#[derive(Debug, Clone, Default)]
pub struct MigrationOptions {
    /// Overrides of `[migration]` for this run.
    pub config: Option<MigrationConfig>,
    /// A failure to inject (`failpoints` feature).
    #[cfg(feature = "failpoints")]
    pub fail_at: Option<FailPoint>,
}

impl MigrationOptions {
    /// Options that override `[migration]` with `config` for this run.
    pub fn with_config(config: MigrationConfig) -> Self {
        MigrationOptions {
            config: Some(config),
            #[cfg(feature = "failpoints")]
            fail_at: None,
        }
    }
}

/// What a finished migration did (seed 004's migration result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The migration.
    pub id: String,
    /// What it did.
    pub kind: PlanKind,
    /// Topology version before and after.
    pub from_version: u64,
    /// The version now in force.
    pub to_version: u64,
    /// Known partition keys that changed owner.
    pub keys_moved: u64,
    /// Entities (live and tombstones) moved.
    pub entities_moved: u64,
    /// Events applied to the new owners (lake and pipeline tail).
    pub events_replayed: u64,
    /// Of those, events read from the lake.
    pub lake_events: u64,
    /// Bytes read from the lake.
    pub bytes_read: u64,
    /// Rows the lake scan decoded (moving or not).
    pub rows_scanned: u64,
    /// Data files the lake scan opened.
    pub files_read: u64,
    /// Events read from the pipeline tail (moving or not).
    pub tail_events_read: u64,
    /// Writes held by the buffer.
    pub buffered_writes: u64,
    /// The longest a write was held, in microseconds.
    pub max_write_pause_us: u64,
    /// From buffering to cutover, in microseconds: the longest any write to
    /// a moving key could wait.
    pub buffer_window_us: u64,
    /// Entities compared by verification.
    pub verified_entities: u64,
    /// Wall-clock time of the copy (lake replay) in microseconds.
    pub copy_us: u64,
    /// Of the copy, the lake scan and apply alone (without the barrier and
    /// the inventory that finds the moving keys' hashes), in microseconds.
    pub scan_us: u64,
    /// Wall-clock time in all, in microseconds.
    pub duration_us: u64,
}
