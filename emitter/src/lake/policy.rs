//! The background maintenance policy that runs beside the sink: every
//! interval, a tiered compaction and (if configured) an expiry.
//!
//! It never holds the sink up: its commits are compare-and-swaps that the
//! sink's own commits win or retry past in milliseconds, and its work
//! (reading and writing Parquet) runs in its own task. Failures are logged
//! and the next round tries again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::compact::{CompactOptions, CompactReport, compact};
use super::expire::{ExpireOptions, ExpireReport, expire};
use crate::error::{Error, Result};
use crate::sink::Lake;

/// What the policy does and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceOptions {
    /// Time between rounds.
    pub interval: Duration,
    /// Compaction each round (`None`: off).
    pub compact: Option<CompactOptions>,
    /// Expiry each round (`None`: off).
    pub expire: Option<ExpireOptions>,
}

impl MaintenanceOptions {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::LakeConfig(
                "maintenance interval must be positive".into(),
            ));
        }
        if let Some(compact) = &self.compact {
            compact.validate()?;
        }
        Ok(())
    }
}

/// Totals of what the policy did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Rounds run.
    pub rounds: u64,
    /// Replace commits made by compaction.
    pub compactions: u64,
    /// Files compaction removed.
    pub compacted_files: u64,
    /// Snapshots expired.
    pub expired_snapshots: u64,
    /// Files expiry deleted.
    pub deleted_files: u64,
    /// Rounds that failed (logged).
    pub failures: u64,
}

/// The running policy.
#[derive(Debug)]
pub struct Maintenance {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Mutex<MaintenanceStats>>,
}

impl Maintenance {
    /// Starts the policy on `lake`.
    pub fn start(lake: Lake, options: MaintenanceOptions) -> Result<Maintenance> {
        options.validate()?;
        let (stop, mut stopped) = watch::channel(false);
        let stats = Arc::new(Mutex::new(MaintenanceStats::default()));
        let totals = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(options.interval) => {}
                    _ = stopped.changed() => return,
                }
                let round = tokio::select! {
                    round = run_round(&lake, &options) => round,
                    // A round cut short leaves only unreferenced files,
                    // which a later expiry deletes.
                    _ = stopped.changed() => return,
                };
                let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                t.rounds += 1;
                match round {
                    Ok((compacted, expired)) => {
                        if let Some(c) = compacted.filter(|c| c.snapshot_id.is_some()) {
                            tracing::info!(
                                files = c.removed_files,
                                into = c.added_files,
                                rows = c.rows,
                                "compacted floe.events"
                            );
                            t.compactions += 1;
                            t.compacted_files += c.removed_files as u64;
                        }
                        if let Some(e) = expired {
                            t.expired_snapshots += e.expired_snapshots.len() as u64;
                            t.deleted_files += e.deleted_paths.len() as u64;
                        }
                    }
                    Err(e) => {
                        t.failures += 1;
                        tracing::warn!(error = %e, "lake maintenance round failed; retrying next round");
                    }
                }
            }
        });
        Ok(Maintenance { stop, task, stats })
    }

    /// What the policy did so far.
    pub fn stats(&self) -> MaintenanceStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the policy (a round in progress is abandoned) and waits.
    pub async fn stop(self) -> MaintenanceStats {
        let _ = self.stop.send(true);
        let stats = self.stats.clone();
        let _ = self.task.await;
        *stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One round: compaction, then expiry.
pub async fn run_round(
    lake: &Lake,
    options: &MaintenanceOptions,
) -> Result<(Option<CompactReport>, Option<ExpireReport>)> {
    let compacted = match &options.compact {
        Some(o) => Some(compact(lake, o).await?),
        None => None,
    };
    let expired = match &options.expire {
        Some(o) => Some(expire(lake, o).await?),
        None => None,
    };
    Ok((compacted, expired))
}
