//! One entity read from the lake: what answers reads of archived periods,
//! whose entities are in no shard's memory.

use floe_engine::{Entity, EntityKey, ShardState};

use super::lake::{LakeScan, ScanStats};
use crate::error::Result;
use crate::sink::Lake;

/// An entity as the lake's committed snapshot holds it.
#[derive(Debug, Clone, Default)]
pub struct LakeEntity {
    /// The live entity (`None`: no event of it, or its last is a tombstone).
    pub entity: Option<Entity>,
    /// Its partition key, when the lake holds any event of it.
    pub partition_key: Option<String>,
    /// The snapshot read (`None`: the lake has none yet).
    pub snapshot_id: Option<i64>,
    /// What the read cost.
    pub stats: ScanStats,
}

/// Reads entity `key` from the lake's committed snapshot and folds its
/// events exactly as a shard applies them (the highest version wins, a
/// tombstone deletes). `key_hash`, the hash of its partition key when the
/// caller knows it, narrows the read to the files and row groups that can
/// hold it; without it every file whose name bounds allow the entity is
/// read (slower).
pub async fn entity_from_lake(
    lake: &Lake,
    partitions: u32,
    key: &EntityKey,
    key_hash: Option<u64>,
) -> Result<LakeEntity> {
    let at = lake.committed_offsets(partitions).await?;
    let (records, stats) = LakeScan::default()
        .entity_events(lake, &at, key, key_hash)
        .await?;
    let mut state = ShardState::new();
    let mut latest: Option<(u64, String)> = None;
    for record in records {
        let event = record.event;
        if latest.as_ref().is_none_or(|(v, _)| event.version > *v) {
            latest = Some((event.version, event.partition_key.clone()));
        }
        state.apply_owned(event);
    }
    Ok(LakeEntity {
        entity: state.get(key),
        partition_key: latest.map(|(_, k)| k),
        snapshot_id: at.snapshot_id,
        stats,
    })
}
