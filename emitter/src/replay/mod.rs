//! Replaying history: a lake snapshot, then the pipeline after it.
//!
//! Recovery (rebuilding every shard when a data directory opens), a
//! migration's copy and catch-up (the moving keys' history on their new
//! owners) and fresh-mode SQL (acknowledged events not landed yet) all read
//! history the same way, with this module:
//!
//! 1. [`ReplaySource::resolve`]: read the pipeline's low watermarks and (when
//!    the lake is needed) the lake's committed offsets `C[p]`, and check
//!    that they fit together ([`check_retention`]: retention never deleted
//!    past `C`, [`check_history_complete`]: without a lake nothing was
//!    deleted at all).
//! 2. [`LakeScan`]: the events of that snapshot, exactly the offsets below
//!    `C[p]`, optionally limited to some keys (with a `key_hash IN (...)`
//!    pushdown) and checked against `C` ([`check_within_snapshot`]).
//! 3. [`PipelineTail`] / [`PartitionTail`]: the pipeline from `C[p]` up to a
//!    head read with [`heads`].
//!
//! Every offset below the head is then read exactly once, from one source.
//! With shard snapshots ([`load_snapshots`], [`recover_from_snapshots`]) a
//! shard starts from its snapshot and reads only the events at or above
//! its offsets ([`check_snapshot_within_log`]: never beyond what the log
//! holds).
//! Each violated invariant is its own [`crate::Error`] variant. [`recover`]
//! is the whole of recovery built from these parts; [`restore_shards`] the
//! restore of some shards (a cluster node taking shards over), from the
//! lake whenever it has a snapshot.

mod entity;
mod lake;
mod recover;
mod restore;
mod snapshots;
mod tail;

use floe_engine::{Offset, Pipeline, Record};

pub use entity::{LakeEntity, entity_from_lake};
pub use lake::{KeyFilter, LakeScan, LakeSize, MAX_PUSHED_KEYS, ScanStats, lake_size};
pub use recover::{RecoveryStats, recover, recover_from_snapshots};
pub use restore::{RestoreStats, ShardReplay, check_committed_within_heads, restore_shards};
pub use snapshots::{
    LoadedSnapshots, ShardStart, check_snapshot_within_log, fences_at, load_snapshots,
};
pub use tail::{PartitionTail, PipelineTail, heads, low_watermarks};

use crate::error::{Error, Result};
use crate::sink::{CommittedOffsets, Lake};

/// When a replay reads the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LakeUse {
    /// Only when the pipeline alone no longer holds all history (retention
    /// deleted landed events): recovery, which must read everything anyway.
    WhenTrimmed,
    /// Whenever the lake has a snapshot: a migration's copy, which reads a
    /// few keys cheaply from the lake rather than the whole pipeline.
    Always,
}

/// Where a replay's history comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySource {
    /// The lake snapshot that holds every event below `from` (`None`: the
    /// lake is not read, the pipeline holds everything from `from`).
    pub snapshot: Option<CommittedOffsets>,
    /// Where each partition's pipeline tail starts.
    pub from: Vec<Offset>,
}

impl ReplaySource {
    /// Decides where history is read from, checking the invariants that let
    /// the two sources be joined without a gap or an overlap.
    pub async fn resolve(
        pipeline: &dyn Pipeline,
        lake: Option<&Lake>,
        usage: LakeUse,
    ) -> Result<ReplaySource> {
        let partitions = pipeline.partitions();
        let lows = low_watermarks(pipeline)
            .await
            .map_err(|cause| Error::Pipeline { cause })?;
        let zeros = vec![0; partitions as usize];
        let lake = match lake {
            Some(lake) if usage == LakeUse::Always || lows.iter().any(|&l| l > 0) => lake,
            _ => {
                check_history_complete(&lows)?;
                return Ok(ReplaySource {
                    snapshot: None,
                    from: zeros,
                });
            }
        };
        let committed = lake.committed_offsets(partitions).await?;
        let from = if committed.snapshot_id.is_some() {
            committed.offsets.clone()
        } else {
            zeros
        };
        check_retention(&lows, &from)?;
        Ok(ReplaySource {
            snapshot: committed.snapshot_id.is_some().then_some(committed),
            from,
        })
    }
}

/// Without a lake the pipeline must still hold all history: every low
/// watermark is 0.
pub fn check_history_complete(lows: &[Offset]) -> Result<()> {
    match (0u32..).zip(lows).find(|&(_, &low)| low > 0) {
        Some((partition, &low_watermark)) => Err(Error::HistoryNeedsLake {
            partition,
            low_watermark,
        }),
        None => Ok(()),
    }
}

/// Retention never deletes past what the lake holds: `low[p] <= committed[p]`
/// for every partition.
pub fn check_retention(lows: &[Offset], committed: &[Offset]) -> Result<()> {
    for (partition, (&low_watermark, &committed)) in (0u32..).zip(lows.iter().zip(committed)) {
        if low_watermark > committed {
            return Err(Error::RetentionAboveCommitted {
                partition,
                low_watermark,
                committed,
            });
        }
    }
    Ok(())
}

/// A snapshot holds exactly the events below its committed offsets: none of
/// `records` (read from snapshot `at`) may be at or beyond them.
pub fn check_within_snapshot(at: &CommittedOffsets, records: &[Record]) -> Result<()> {
    let beyond = records.iter().find(|r| {
        at.offsets
            .get(r.partition as usize)
            .is_none_or(|&o| r.offset >= o)
    });
    match beyond {
        Some(r) => Err(Error::SnapshotBeyondCommitted {
            snapshot: at.snapshot_id.unwrap_or(-1),
            partition: r.partition,
            offset: r.offset,
            committed: at
                .offsets
                .get(r.partition as usize)
                .map_or_else(|| "none".to_string(), |o| format!("below {o}")),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use floe_engine::{Event, EventKind};

    use super::*;

    fn record(partition: u32, offset: Offset) -> Record {
        Record {
            partition,
            offset,
            event: Event {
                event_id: uuid::Uuid::now_v7(),
                idempotency_key: format!("k{offset}"),
                kind: EventKind::Created,
                namespace: "t".into(),
                entity_type: "T".into(),
                entity_id: format!("e{offset}"),
                partition_key: "t".into(),
                key_hash: 1,
                shard: 0,
                version: 1,
                timestamp_us: 0,
                state: None,
                request_fingerprint: None,
                owner_epoch: 0,
            },
        }
    }

    #[test]
    fn a_snapshot_holding_an_event_beyond_its_offsets_is_refused() {
        let at = CommittedOffsets {
            snapshot_id: Some(7),
            offsets: vec![10, 5],
        };
        check_within_snapshot(&at, &[record(0, 9), record(1, 4)]).unwrap();
        let err = check_within_snapshot(&at, &[record(0, 3), record(1, 5)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SnapshotBeyondCommitted {
                    snapshot: 7,
                    partition: 1,
                    offset: 5,
                    ..
                }
            ),
            "{err}"
        );
        // A partition the snapshot does not know is beyond it too.
        let err = check_within_snapshot(&at, &[record(2, 0)]).unwrap_err();
        assert!(matches!(
            err,
            Error::SnapshotBeyondCommitted { partition: 2, .. }
        ));
        assert!(err.to_string().contains("(none)"), "{err}");
    }

    #[test]
    fn retention_above_the_committed_offsets_is_refused() {
        check_retention(&[0, 4, 5], &[0, 4, 9]).unwrap();
        let err = check_retention(&[0, 6, 5], &[0, 4, 9]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RetentionAboveCommitted {
                    partition: 1,
                    low_watermark: 6,
                    committed: 4
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("events in between are lost"));
    }

    #[test]
    fn deleted_history_without_a_lake_is_refused() {
        check_history_complete(&[0, 0]).unwrap();
        let err = check_history_complete(&[0, 3]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::HistoryNeedsLake {
                    partition: 1,
                    low_watermark: 3
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("lake.enabled"));
    }
}
