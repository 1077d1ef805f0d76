//! The background task of time topologies: every period's shard exists
//! before the period starts ([`crate::Migrations::ensure_periods`], run every
//! `migration.period_check_interval_ms`, `migration.period_lead_time_ms`
//! ahead), and periods older than the `migration.active_periods` most recent
//! ones are archived ([`crate::Migrations::ensure_archived`]).
//!
//! Safe across restarts by construction: the task keeps no state of its own.
//! Each round reads the persisted topology, plans the periods still missing
//! and runs each as an ordinary migration (persisted job, rolled back or
//! resumed at open like any other); a period added before a crash is in the
//! topology after it, so the next round skips it.

use std::sync::Arc;
use std::time::Duration;

use floe_engine::Strategy;

use super::Floe;

impl Floe {
    /// Starts the period task when the topology routes by time and the lead
    /// time is not 0. It holds the deployment only while a round runs and
    /// ends when floe is closed or dropped.
    pub(super) fn start_period_task(&self) {
        let config = &self.inner.config.migration;
        if (config.period_lead_time_ms == 0
            && config.active_periods == 0
            && config.retain_periods == 0)
            || !matches!(self.router().topology().strategy, Strategy::Time { .. })
        {
            return;
        }
        let adds = config.period_lead_time_ms > 0;
        let interval = Duration::from_millis(config.period_check_interval_ms.max(1));
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                {
                    let Some(inner) = weak.upgrade() else { return };
                    let floe = Floe { inner };
                    if floe.check_open().is_err() {
                        return;
                    }
                    let now = floe_migration::now_ms() as i64;
                    let added = match adds {
                        true => floe.migrations().ensure_periods(now).await,
                        false => Ok(Vec::new()),
                    };
                    match added {
                        Ok(added) if !added.is_empty() => {
                            tracing::info!(periods = ?added, "added the shards of upcoming periods");
                        }
                        Ok(_) => {}
                        // Another migration runs, or floe is closing: the
                        // next round tries again.
                        Err(e) => {
                            tracing::warn!(error = %e, "adding an upcoming period's shard failed; retrying next round");
                        }
                    }
                    match floe.migrations().ensure_archived(now).await {
                        Ok(archived) if !archived.is_empty() => {
                            tracing::info!(periods = ?archived, "archived periods past the active window");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "archiving a period failed; retrying next round");
                        }
                    }
                }
                tokio::time::sleep(interval).await;
            }
        });
    }
}
