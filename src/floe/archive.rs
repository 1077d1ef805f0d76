//! Reads of archived periods (seed 002's archive window): their entities
//! are in no shard's memory, so a read that routes to one, or that finds
//! nothing in the shards while some period is archived, is answered from
//! the lake, which holds every event of an archived period (archival waits
//! for the sink to land them before it evicts; see
//! `floe_migration`'s archive phases and docs/operations.md).

use std::collections::BTreeMap;

use floe_emitter::replay::entity_from_lake;
use floe_engine::{Entity, EntityKey, PeriodState, Strategy};
use floe_migration::{JobStatus, PlanKind};
use serde::Serialize;

use super::Floe;
use crate::error::{Error, Result};

/// Where a read was answered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ReadSource {
    /// The owning shard's memory.
    Memory,
    /// The lake: the entity's period is archived.
    Lake {
        /// The archived period's label.
        period: String,
        /// The lake snapshot read.
        snapshot_id: Option<i64>,
    },
}

/// A live entity and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRead {
    /// The entity.
    pub entity: Entity,
    /// Where it came from.
    pub source: ReadSource,
}

/// Active against archived: what `floe stats`, `GET /api/v1/stats` and the
/// `floe_archive` metric show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveStats {
    /// Live entities in shard memory.
    pub active_entities: u64,
    /// Bytes of their data.
    pub active_bytes: u64,
    /// Sealed and archived periods by label.
    pub periods: BTreeMap<String, PeriodState>,
    /// Records (live entities and tombstones) the completed archivals of
    /// this data directory evicted: they are in the lake only.
    pub archived_entities: u64,
}

impl Floe {
    /// Active and archived entities and memory (see [`ArchiveStats`]).
    pub async fn archive_stats(&self) -> Result<ArchiveStats> {
        let shards = self.shard_stats().await?;
        let periods = match self.router().topology().strategy.clone() {
            Strategy::Time { archived, .. } => archived,
            _ => BTreeMap::new(),
        };
        let archived_entities = if periods.is_empty() {
            0
        } else {
            self.inner
                .migrations
                .list()?
                .iter()
                .filter(|job| {
                    job.status == JobStatus::Completed
                        && matches!(job.kind, PlanKind::ArchivePeriod { .. })
                })
                .map(|job| job.evicted)
                .sum()
        };
        Ok(ArchiveStats {
            active_entities: shards.iter().map(|s| s.entities).sum(),
            active_bytes: shards.iter().map(|s| s.bytes).sum(),
            periods,
            archived_entities,
        })
    }

    /// Reads a live entity: from the shard that owns it (so a caller always
    /// reads its own acknowledged writes), or from the lake when its period
    /// is archived (slower: a lake read, stated in [`EntityRead::source`]).
    /// `partition_key`: the entity's, when the caller has it (one hop, and
    /// for archived entities a read narrowed to its key's files); without
    /// it, time-routed entities are located in the shards, then in the lake.
    pub async fn read(
        &self,
        key: &EntityKey,
        partition_key: Option<&str>,
    ) -> Result<Option<EntityRead>> {
        self.check_open()?;
        let partition_key = match partition_key {
            Some(k) => Some(k.to_owned()),
            None if self.locates(key) => None,
            None => Some(self.inner.extractor.extract(key, None)?),
        };
        let router = self.router();
        let Some(partition_key) = partition_key else {
            if let Some((entity, _)) = self.inner.cluster.locate(key).await? {
                return Ok(Some(EntityRead::memory(entity)));
            }
            if !router.has_archived() {
                return Ok(None);
            }
            return self.read_archived(key, None).await;
        };
        if router.is_archived(&partition_key) {
            if router
                .period_state(&partition_key)
                .is_some_and(|p| p.state == PeriodState::Dropped)
            {
                // Its rows were erased from the lake.
                return Ok(None);
            }
            return self.read_archived(key, Some(&partition_key)).await;
        }
        Ok(self
            .inner
            .cluster
            .get(key, &partition_key)
            .await?
            .map(EntityRead::memory))
    }

    /// The partition key of `key` when the lake holds it live in an
    /// archived period (what an update or delete that names no partition
    /// key needs to be refused as [`floe_engine::Error::PeriodArchived`]
    /// rather than reported missing).
    pub(super) async fn archived_partition_key(&self, key: &EntityKey) -> Result<Option<String>> {
        if !self.router().has_archived() {
            return Ok(None);
        }
        Ok(self.archived_in_lake(key, None).await?.map(|(_, k)| k))
    }

    async fn read_archived(
        &self,
        key: &EntityKey,
        partition_key: Option<&str>,
    ) -> Result<Option<EntityRead>> {
        key.validate()?;
        Ok(self
            .archived_in_lake(key, partition_key)
            .await?
            .map(|(read, _)| read))
    }

    /// The live entity `key` in the lake with its partition key, when that
    /// key is in an archived period (and is `partition_key`, when given).
    /// Without a partition key the lake may answer with an entity of an
    /// active period that the shards no longer hold (it was deleted since):
    /// only an archived period's answer counts.
    async fn archived_in_lake(
        &self,
        key: &EntityKey,
        partition_key: Option<&str>,
    ) -> Result<Option<(EntityRead, String)>> {
        let router = self.router();
        let hash = partition_key.map(|k| router.key_hash(k));
        let found = entity_from_lake(
            self.archive_lake()?,
            self.inner.pipeline.partitions(),
            key,
            hash,
        )
        .await
        .map_err(Error::Lake)?;
        let (Some(entity), Some(stored_key)) = (found.entity, found.partition_key) else {
            return Ok(None);
        };
        let archived = router
            .period_state(&stored_key)
            .filter(|p| p.state != PeriodState::Sealed);
        let Some(archived) = archived else {
            return Ok(None);
        };
        if partition_key.is_some_and(|k| k != stored_key) {
            return Ok(None);
        }
        let read = EntityRead {
            entity,
            source: ReadSource::Lake {
                period: archived.period,
                snapshot_id: found.snapshot_id,
            },
        };
        Ok(Some((read, stored_key)))
    }

    fn archive_lake(&self) -> Result<&floe_emitter::sink::Lake> {
        self.inner.lake.as_ref().ok_or(Error::LakeDisabled {
            needs: "reads of archived periods",
        })
    }
}

impl Floe {
    /// Under `migration.archived_writes = "reactivate"`, a write routed by
    /// `partition_key` into a sealed or archived period reactivates the
    /// period first (a `reactivate-period` migration: its entities come back
    /// from the lake), so that the write then applies; a migration already
    /// running is waited for. Under `"refuse"` (the default) nothing
    /// happens here and the shard cluster refuses the write.
    pub(super) async fn reactivate_for(&self, partition_key: &str) -> Result<()> {
        if self.inner.config.migration.archived_writes != floe_migration::ArchivedWrites::Reactivate
        {
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            let Some(archived) = self.router().period_state(partition_key) else {
                return Ok(());
            };
            if archived.state == PeriodState::Dropped {
                // Nothing to bring back: the shard cluster refuses the write.
                return Ok(());
            }
            let migrations = self.migrations();
            if let Some(running) = migrations.running() {
                // Whatever it is (another writer's reactivation of this
                // period, most likely), the topology is read again after it.
                let _ = migrations.wait(&running).await;
                continue;
            }
            let outcome = migrations
                .plan_and_run(PlanKind::ReactivatePeriod {
                    period: archived.period.clone(),
                })
                .await;
            match outcome {
                Ok(report) => {
                    tracing::info!(period = %archived.period, entities = report.entities_moved, "reactivated an archived period for a write");
                    return Ok(());
                }
                Err(e) => {
                    attempts += 1;
                    if self.router().period_state(partition_key).is_none() {
                        return Ok(());
                    }
                    if attempts >= 3 {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl EntityRead {
    fn memory(entity: Entity) -> Self {
        EntityRead {
            entity,
            source: ReadSource::Memory,
        }
    }
}
