//! Archival of a period (seed 002's archive window), run by the
//! coordinator like any migration but with phases of its own:
//!
//! land (persist and route the period sealed: its writes are refused from
//! now on; wait until the sink has landed every event appended before) ->
//! cutover (persist and route it archived) -> clean-up (its entities leave
//! shard memory and the partition-key index).
//!
//! Reactivation is the way back: restore (an archived period's events, from
//! the lake snapshot, applied to the period's shard, invisible there until
//! the cutover) -> cutover (persist and route the period active). A sealed
//! period's entities are still in memory, so it only needs the cutover.
//! Writes to the period are refused until the cutover; reads are answered
//! from the lake until then, from memory after.
//!
//! Reads stay correct throughout: while the period is sealed its entities
//! are still answered from memory; once archived, from the lake, which by
//! then holds every event of the period (no write reaches it after the
//! seal, and the lake covers the pipeline up to the heads read after it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use floe_emitter::lake::{EraseOptions, erase_rows};
use floe_emitter::replay::{LakeScan, heads};
use floe_engine::{Event, NextRouting, Offset, PeriodState, Router, ShardCluster};
use tokio::sync::mpsc;

use super::Coordinator;
use crate::config::MigrationReport;
use crate::coordinator::stage::Stage;
use crate::error::{Error, Result};
use crate::job::{JobStatus, Phase};

/// How often the lake's committed offsets are read while the sink lands.
const LAND_POLL: Duration = Duration::from_millis(100);

impl Coordinator {
    /// Takes period `period` out of shard memory; see the module docs.
    pub(super) async fn archive(&mut self, period: &str) -> Result<MigrationReport> {
        let deployment = self.deployment.clone();
        let cluster = deployment.cluster.clone();
        let lake = deployment.lake.clone().ok_or_else(|| {
            Error::InvalidPlan("archival needs a lake: the period's history is read from it".into())
        })?;
        self.enter(Phase::Land)?;
        self.check_unchanged()?;
        if let Some(sealed) = self.plan.sealed_step() {
            let router = Arc::new(Router::new(sealed.clone())?);
            deployment.topology.store(&sealed).await?;
            self.stage.advance(Stage::Persisted);
            let routing = cluster.swap_routing(|r| NextRouting {
                router,
                shards: r.shards().clone(),
                admission: None,
            });
            // Writes a worker accepted under the old routing are durable
            // after this; later ones are refused as stale, route again and
            // meet the seal.
            ShardCluster::barrier(&routing).await?;
        }
        let pipeline = cluster.pipeline().clone();
        let needed = heads(&*pipeline).await?;
        let started = Instant::now();
        loop {
            let landed = lake.committed_offsets(pipeline.partitions()).await?;
            if landed_up_to(&landed.offsets, &needed) {
                break;
            }
            if let Err(stop) = self.check_stop() {
                return Err(match stop {
                    Error::Timeout { id, seconds, .. } => Error::NotLanded {
                        id,
                        period: period.to_owned(),
                        seconds,
                        landed: landed.offsets,
                        needed,
                    },
                    other => other,
                });
            }
            self.publish(false)?;
            tokio::time::sleep(LAND_POLL).await;
        }
        let land_us = started.elapsed().as_micros() as u64;

        self.cut_over().await?;
        let evicted = cluster.evict_archived().await?;
        tracing::info!(%period, evicted, land_ms = land_us / 1000, "period archived");
        self.job.evicted = evicted;
        let mut report = self.complete()?;
        report.entities_moved = evicted;
        report.buffer_window_us = land_us;
        Ok(report)
    }
}

impl Coordinator {
    /// Makes period `period` take writes again; see the module docs.
    pub(super) async fn reactivate(&mut self, period: &str) -> Result<MigrationReport> {
        let deployment = self.deployment.clone();
        let cluster = deployment.cluster.clone();
        self.enter(Phase::Restore)?;
        self.check_unchanged()?;
        let archived = matches!(
            &self.plan.from.strategy,
            floe_engine::Strategy::Time { archived, .. }
                if archived.get(period) == Some(&PeriodState::Archived)
        );
        let live =
            |stats: Vec<floe_engine::ShardStats>| stats.iter().map(|s| s.entities).sum::<u64>();
        let live_before = live(cluster.shard_stats().await?);
        let (mut copied, mut lake_events) = (0, 0);
        let copy_started = Instant::now();
        if archived {
            let lake = deployment.lake.clone().ok_or_else(|| {
                Error::InvalidPlan(
                    "an archived period is read back from the lake: configure [lake]".into(),
                )
            })?;
            // From here a failure drops the copies (the old routing's
            // `owns` is false for them) and changes nothing else.
            self.stage.advance(Stage::Installed);
            let pipeline = cluster.pipeline().clone();
            let committed = lake.committed_offsets(pipeline.partitions()).await?;
            let (from, to) = (self.movement.from().clone(), self.movement.to().clone());
            let keep = {
                let (from, to) = (from.clone(), to.clone());
                move |key: &str, _: u64| from.is_archived(key) && !to.is_archived(key)
            };
            let scan = LakeScan {
                batch_size: self.config.batch_size,
                concurrency: self.config.lake_concurrency,
            };
            let (tx, mut rx) = mpsc::channel(4);
            let read = async {
                let scanned = scan.run(&lake, &committed, Some(&keep), None, &tx).await;
                drop(tx);
                scanned
            };
            let apply = async {
                let mut applied = 0;
                while let Some(records) = rx.recv().await {
                    let mut by_shard: HashMap<u32, Vec<Event>> = HashMap::new();
                    for record in records {
                        let event = record.event;
                        by_shard
                            .entry(to.route(&event.partition_key, event.key_hash))
                            .or_default()
                            .push(event);
                    }
                    for (shard, events) in by_shard {
                        applied += cluster.ingest_restored(shard, events).await?;
                    }
                }
                Ok::<u64, Error>(applied)
            };
            let (scanned, applied) = tokio::join!(read, apply);
            let stats = scanned?;
            applied?;
            copied = live(cluster.shard_stats().await?).saturating_sub(live_before);
            lake_events = stats.events;
            self.lake.files += stats.files;
            self.lake.bytes_read += stats.bytes_read;
            self.lake.rows_scanned += stats.rows_scanned;
            self.lake.events += stats.events;
            self.job.progress.events_processed = stats.events;
            self.check_stop()?;
        }
        self.copy_us = copy_started.elapsed().as_micros() as u64;

        self.cut_over().await?;
        tracing::info!(%period, entities = copied, lake_events, "period reactivated");
        let mut report = self.complete()?;
        report.entities_moved = copied;
        report.events_replayed = lake_events;
        report.lake_events = lake_events;
        report.copy_us = self.copy_us;
        report.scan_us = self.copy_us;
        Ok(report)
    }
}

impl Coordinator {
    /// Drops archived period `period`: erase (every row of the period
    /// removed from the lake by an overwrite commit, the history that held
    /// them expired and deleted) -> cutover (persist and route it dropped).
    /// A stop between the two leaves it archived with no rows: running the
    /// drop again finds nothing to erase and finishes.
    pub(super) async fn drop_period(&mut self, period: &str) -> Result<MigrationReport> {
        let deployment = self.deployment.clone();
        let lake = deployment.lake.clone().ok_or_else(|| {
            Error::InvalidPlan(
                "dropping a period erases its rows from the lake: configure [lake]".into(),
            )
        })?;
        self.enter(Phase::Erase)?;
        self.check_unchanged()?;
        let router = self.movement.from().clone();
        let selects = |record: &floe_engine::Record| {
            router
                .period_state(&record.event.partition_key)
                .is_some_and(|p| p.period == period)
        };
        let started = Instant::now();
        let erasure = erase_rows(&lake, &|_| true, &selects, &EraseOptions::default()).await?;
        tracing::info!(
            %period,
            rows = erasure.erased.rows,
            files = erasure.erased.files.len(),
            expired = erasure.expired.expired_snapshots.len(),
            "erased a dropped period's rows from the lake"
        );
        self.cut_over().await?;
        let mut report = self.complete()?;
        report.lake_events = erasure.erased.rows;
        report.files_read = erasure.erased.files.len() as u64;
        report.copy_us = started.elapsed().as_micros() as u64;
        Ok(report)
    }
}

impl Coordinator {
    /// The cutover of the period plans: `to` persisted, then routed (no key
    /// changes shard, so there is nothing to drain); ends in the clean-up
    /// phase.
    async fn cut_over(&mut self) -> Result<()> {
        self.enter(Phase::Cutover)?;
        let to = self.plan.to.clone();
        self.deployment.topology.store(&to).await?;
        if self.stage < Stage::Persisted {
            self.stage.advance(Stage::Persisted);
        }
        let router = Arc::new(Router::new(to)?);
        self.deployment.cluster.swap_routing(|r| NextRouting {
            router,
            shards: r.shards().clone(),
            admission: None,
        });
        self.stage.advance(Stage::CutOver);
        self.enter(Phase::Drain)?;
        self.enter(Phase::Cleanup)
    }

    /// Records the end and reports it; the plan kind fills in its figures.
    fn complete(&mut self) -> Result<MigrationReport> {
        self.enter(Phase::Done)?;
        self.job.status = JobStatus::Completed;
        self.finish();
        Ok(MigrationReport {
            id: self.job.id.clone(),
            kind: self.plan.kind.clone(),
            from_version: self.plan.from.version,
            to_version: self.plan.to.version,
            keys_moved: 0,
            entities_moved: 0,
            events_replayed: 0,
            lake_events: 0,
            bytes_read: self.lake.bytes_read,
            rows_scanned: self.lake.rows_scanned,
            files_read: self.lake.files,
            tail_events_read: 0,
            buffered_writes: 0,
            max_write_pause_us: 0,
            buffer_window_us: 0,
            verified_entities: 0,
            copy_us: 0,
            scan_us: 0,
            duration_us: self.started.elapsed().as_micros() as u64,
        })
    }
}

/// Whether the lake's committed offsets cover every offset below `needed`.
fn landed_up_to(landed: &[Offset], needed: &[Offset]) -> bool {
    needed
        .iter()
        .enumerate()
        .all(|(p, &head)| head == 0 || landed.get(p).is_some_and(|&l| l >= head))
}

#[cfg(test)]
mod tests {
    use super::landed_up_to;

    #[test]
    fn the_lake_covers_the_heads_only_when_every_partition_reached_them() {
        assert!(landed_up_to(&[5, 7], &[5, 7]));
        assert!(landed_up_to(&[6, 9], &[5, 7]));
        assert!(!landed_up_to(&[5, 6], &[5, 7]));
        // An empty partition needs nothing; a lake without offsets lands
        // nothing of the others.
        assert!(landed_up_to(&[], &[0, 0]));
        assert!(!landed_up_to(&[], &[0, 3]));
    }
}
