//! GDPR erase of one entity: tombstone it, wait for the sink to land
//! everything up to the tombstone, remove every row of it from the lake
//! (an `overwrite` commit) and expire the history that held them, then
//! report the copies that are left in the pipeline and when they go.
//!
//! Guarantees and limits are in docs/operations.md ("Erasing an entity").

use std::time::{Duration, Instant};

use floe_emitter::FileLog;
use floe_emitter::lake::{EraseOptions, erase_entity, find_entity};
use floe_engine::{EntityKey, Offset, Pipeline};
use serde::Serialize;

use super::Floe;
use crate::error::{Error, Result};
use crate::{WriteRequest, lake};
use floe_config::PipelineUrl;

/// How often the landing of the tombstone is checked.
const POLL: Duration = Duration::from_millis(50);

/// What an erase did and what it could not.
#[derive(Debug, Clone, Serialize)]
pub struct EraseReport {
    /// The entity.
    pub namespace: String,
    /// Its type.
    pub entity_type: String,
    /// Its id.
    pub id: String,
    /// The version of the tombstone written (`None`: it was deleted already).
    pub tombstone_version: Option<u64>,
    /// The lake's `overwrite` snapshot (`None`: no live file held it).
    pub snapshot_id: Option<i64>,
    /// Rows of the entity removed from the lake.
    pub erased_rows: u64,
    /// Data files rewritten without them.
    pub rewritten_files: usize,
    /// Snapshots expired (every one from before the overwrite).
    pub expired_snapshots: usize,
    /// Files deleted from the warehouse (the old data files, manifests,
    /// manifest lists and metadata files).
    pub deleted_files: usize,
    /// Unreferenced files kept because they are younger than the orphan
    /// grace period and no expired snapshot referenced them (another
    /// writer's commit in flight).
    pub kept_young_files: usize,
    /// Copies of the entity's events still in the pipeline.
    pub remaining: Vec<RemainingCopy>,
}

/// Events of the entity still in the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct RemainingCopy {
    /// `embedded log` or `kafka`.
    pub store: &'static str,
    /// The segment file or `topic/partition`.
    pub location: String,
    /// Pipeline partition.
    pub partition: u32,
    /// Offsets of the entity's events there.
    pub offsets: Vec<Offset>,
    /// When they go.
    pub until: String,
}

impl Floe {
    /// Erases every trace of `key` from the lake (GDPR): see the module
    /// docs. `partition_key` is needed when the entity's type reads its
    /// partition key from its data. An entity with no state, no event in the
    /// pipeline and no row in the lake is [`Error::UnknownEntity`], and
    /// nothing changes.
    pub async fn erase(
        &self,
        key: EntityKey,
        partition_key: Option<String>,
    ) -> Result<EraseReport> {
        self.check_open()?;
        key.validate()?;
        let config = &self.inner.config;
        let lake = lake::open(config)
            .await?
            .ok_or(Error::LakeDisabled { needs: "erase" })?;
        let partition_key = match partition_key {
            Some(k) => k,
            None => self.inner.extractor.extract(&key, None)?,
        };
        let live = self.get_routed(&key, &partition_key).await?;
        let pipeline = self.inner.pipeline.clone();
        let hash = self.inner.cluster.router().key_hash(&partition_key);
        let partition = floe_engine::partition_for(hash, pipeline.partitions());
        let mut tombstone_version = None;
        if live.is_none() {
            let in_log = !events_of(&*pipeline, partition, &key, 0).await?.is_empty();
            if !in_log && find_entity(&lake, &key).await.map_err(Error::Lake)?.rows == 0 {
                return Err(Error::UnknownEntity {
                    key: key.to_string(),
                });
            }
        } else {
            let ack = self
                .write(WriteRequest::delete(key.clone()).partition_key(partition_key))
                .await?;
            tombstone_version = Some(ack.version);
        }
        // Shard snapshots taken before the tombstone hold the entity's data:
        // they all go, and a fresh round (holding the tombstone) replaces
        // them, so neither a file nor a later reopen brings the data back.
        let replaced = self
            .inner
            .snapshots
            .replace_all(&self.inner.cluster, &*self.inner.pipeline)
            .await?;
        if !replaced.skipped.is_empty() {
            tracing::warn!(skipped = ?replaced.skipped, "shard snapshots after an erase skipped (the next reopen replays those shards' log)");
        }
        // Everything of the entity up to the tombstone is in the lake before
        // the lake is rewritten.
        let head = pipeline.high_watermark(partition).await?;
        self.wait_landed(&lake, partition, head).await?;
        let options = EraseOptions {
            target_file_bytes: config.lake.target_file_bytes,
            zstd_level: config.lake.zstd_level,
            orphan_grace: Duration::from_millis(config.lake.maintenance.orphan_grace_ms),
        };
        let erased = erase_entity(&lake, &key, &options)
            .await
            .map_err(Error::Lake)?;
        // Cached query results and data file bytes may hold the rows.
        if let Ok(query) = self.query() {
            query.forget_cached();
        }
        let remaining = self.remaining_copies(partition, &key).await?;
        Ok(EraseReport {
            namespace: key.namespace,
            entity_type: key.entity_type,
            id: key.id,
            tombstone_version,
            snapshot_id: erased.snapshot_id,
            erased_rows: erased.erased.rows,
            rewritten_files: erased.erased.files.len(),
            expired_snapshots: erased.expired.expired_snapshots.len(),
            deleted_files: erased.expired.deleted_paths.len(),
            kept_young_files: erased.expired.kept_young,
            remaining,
        })
    }

    /// Waits until the lake's committed offset of `partition` reaches `head`.
    async fn wait_landed(
        &self,
        lake: &floe_emitter::sink::Lake,
        partition: u32,
        head: Offset,
    ) -> Result<()> {
        // A few commit intervals: the sink commits at least that often.
        let interval = Duration::from_millis(self.inner.config.lake.commit_interval_ms);
        let limit = (interval * 3).max(Duration::from_secs(30));
        let started = Instant::now();
        loop {
            let committed = lake
                .committed_offsets(self.inner.pipeline.partitions())
                .await
                .map_err(Error::Lake)?
                .offsets[partition as usize];
            if committed >= head {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(Error::EraseNotLanded {
                    partition,
                    head,
                    committed,
                    waited_ms: limit.as_millis() as u64,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The entity's events still in the pipeline, and when they go.
    async fn remaining_copies(
        &self,
        partition: u32,
        key: &EntityKey,
    ) -> Result<Vec<RemainingCopy>> {
        let pipeline = &*self.inner.pipeline;
        let offsets = events_of(pipeline, partition, key, 0).await?;
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let config = &self.inner.config;
        let retention = config.lake.retention;
        Ok(match config.pipeline_url()? {
            PipelineUrl::File(dir) => {
                let segments = FileLog::segment_files(&dir, partition).map_err(Error::Lake)?;
                let active = segments.last().map(|(base, _)| *base);
                let mut copies: Vec<RemainingCopy> = Vec::new();
                for offset in offsets {
                    let Some((base, path)) = segments.iter().rev().find(|(b, _)| *b <= offset)
                    else {
                        continue;
                    };
                    let location = path.display().to_string();
                    if let Some(copy) = copies.last_mut().filter(|c| c.location == location) {
                        copy.offsets.push(offset);
                        continue;
                    }
                    let until = match (retention, Some(*base) == active) {
                        (false, _) => {
                            "kept: lake.retention is off, the embedded log deletes nothing"
                                .to_string()
                        }
                        (true, true) => format!(
                            "when this active segment rolls over (at log.segment_bytes = {} bytes) and the sink commits past it",
                            config.log.segment_bytes
                        ),
                        (true, false) => {
                            "at the sink's next commit (the segment is sealed and landed)"
                                .to_string()
                        }
                    };
                    copies.push(RemainingCopy {
                        store: "embedded log",
                        location,
                        partition,
                        offsets: vec![offset],
                        until,
                    });
                }
                copies
            }
            PipelineUrl::Kafka { topic, .. } => {
                let until = if retention && config.kafka.delete_records {
                    "at the sink's next commit (DeleteRecords below the committed offset), or by the topic's retention.ms / retention.bytes".to_string()
                } else {
                    "by the topic's retention.ms / retention.bytes (floe sends no DeleteRecords: lake.retention or kafka.delete_records is off)".to_string()
                };
                vec![RemainingCopy {
                    store: "kafka",
                    location: format!("{topic}/{partition}"),
                    partition,
                    offsets,
                    until,
                }]
            }
        })
    }
}

/// Offsets of `key`'s events in `partition` from `from` to the head.
async fn events_of(
    pipeline: &dyn Pipeline,
    partition: u32,
    key: &EntityKey,
    from: Offset,
) -> Result<Vec<Offset>> {
    let head = pipeline.high_watermark(partition).await?;
    let mut at = from.max(pipeline.low_watermark(partition).await?);
    let mut offsets = Vec::new();
    while at < head {
        let records = pipeline
            .read(partition, at, 4096, Duration::from_millis(10))
            .await?;
        let Some(last) = records.last() else { break };
        at = last.offset + 1;
        offsets.extend(
            records
                .iter()
                .filter(|r| {
                    let e = &r.event;
                    e.entity_id == key.id
                        && e.entity_type == key.entity_type
                        && e.namespace == key.namespace
                })
                .map(|r| r.offset),
        );
    }
    Ok(offsets)
}
