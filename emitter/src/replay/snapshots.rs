//! Where recovery starts when shard snapshots exist: per shard, the newest
//! snapshot that passes every check, or nothing (a full replay of that
//! shard). A refused snapshot is reported (the caller logs a warning) and
//! the next older one is tried; a snapshot is never half-used.

use std::time::Duration;

use floe_engine::{Offset, Pipeline, RecoveredShard, SnapshotHeader, Topology};

use crate::error::{Error, Result};
use crate::snapshot::{SnapshotFile, SnapshotStore};

/// A shard's starting point from a snapshot: its state, and per partition
/// the offset its tail starts at (every event of the shard below it is in
/// the state).
#[derive(Debug)]
pub struct ShardStart {
    /// The state and window the snapshot holds.
    pub shard: RecoveredShard,
    /// The snapshot's offsets, one per partition.
    pub from: Vec<Offset>,
    /// The file it came from.
    pub file: SnapshotFile,
}

/// What loading found: a start per shard (`None`: no usable snapshot) and
/// every snapshot refused on the way, with why.
#[derive(Debug, Default)]
pub struct LoadedSnapshots {
    /// Indexed by shard.
    pub starts: Vec<Option<ShardStart>>,
    /// Snapshots refused (damaged, another topology, beyond the log...).
    pub refused: Vec<Error>,
}

/// A snapshot claims only what the log holds: `low[p] <= offsets[p] <=
/// high[p]` for every partition (above the high watermark the log lost
/// its tail or was replaced; below the low watermark retention deleted the
/// tail it needs).
pub fn check_snapshot_within_log(
    shard: u32,
    offsets: &[Offset],
    lows: &[Offset],
    highs: &[Offset],
) -> Result<()> {
    for (partition, ((&offset, &low), &high)) in (0u32..).zip(offsets.iter().zip(lows).zip(highs)) {
        if offset > high {
            return Err(Error::ShardSnapshotBeyondLog {
                shard,
                partition,
                offset,
                high,
            });
        }
        if offset < low {
            return Err(Error::ShardSnapshotBelowRetention {
                shard,
                partition,
                offset,
                low,
            });
        }
    }
    Ok(())
}

/// Loads, per shard of `topology`, the newest snapshot in `store` that
/// decodes (checksum), names the shard, was taken under exactly
/// `topology`, covers the pipeline's partitions, stays within the log and
/// whose fences match the log. Shards are decoded in parallel.
pub async fn load_snapshots(
    store: &SnapshotStore,
    pipeline: &dyn Pipeline,
    topology: &Topology,
    dedup_window: usize,
) -> Result<LoadedSnapshots> {
    let partitions = pipeline.partitions();
    let mut lows = Vec::with_capacity(partitions as usize);
    let mut highs = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        lows.push(pipeline.low_watermark(p).await.map_err(pipeline_error)?);
        highs.push(pipeline.high_watermark(p).await.map_err(pipeline_error)?);
    }
    let mut decoding = tokio::task::JoinSet::new();
    for shard in 0..topology.shard_count {
        let (store, topology) = (store.clone(), topology.clone());
        let (lows, highs) = (lows.clone(), highs.clone());
        decoding.spawn_blocking(move || {
            let mut refused = Vec::new();
            let files = match store.list(shard) {
                Ok(files) => files,
                Err(e) => return (shard, None, vec![e]),
            };
            for file in files {
                match decode_checked(&file, shard, &topology, dedup_window, &lows, &highs) {
                    Ok((header, recovered)) => {
                        return (shard, Some((file, header, recovered)), refused);
                    }
                    Err(e) => refused.push(e),
                }
            }
            (shard, None, refused)
        });
    }
    let mut loaded = LoadedSnapshots {
        starts: (0..topology.shard_count).map(|_| None).collect(),
        refused: Vec::new(),
    };
    let mut candidates = Vec::new();
    while let Some(joined) = decoding.join_next().await {
        let (shard, found, refused) =
            joined.map_err(|e| Error::Task(format!("decoding a shard snapshot failed: {e}")))?;
        loaded.refused.extend(refused);
        if let Some(found) = found {
            candidates.push((shard, found));
        }
    }
    // The fences need the log, so they are checked here; a shard whose
    // newest good snapshot fails them replays in full (older snapshots were
    // taken against the same log, so they would fail too or be older).
    for (shard, (file, header, recovered)) in candidates {
        match check_fences(pipeline, &header).await {
            Ok(()) => {
                loaded.starts[shard as usize] = Some(ShardStart {
                    shard: recovered,
                    from: header.offsets,
                    file,
                });
            }
            Err(e) => loaded.refused.push(e),
        }
    }
    Ok(loaded)
}

fn decode_checked(
    file: &SnapshotFile,
    shard: u32,
    topology: &Topology,
    dedup_window: usize,
    lows: &[Offset],
    highs: &[Offset],
) -> Result<(SnapshotHeader, RecoveredShard)> {
    let bytes = std::fs::read(&file.path).map_err(|cause| Error::Io {
        context: "reading a shard snapshot",
        path: file.path.clone(),
        cause,
    })?;
    let corrupt = |cause| Error::ShardSnapshotCorrupt {
        path: file.path.clone(),
        cause,
    };
    // The header first: a snapshot of another topology is not decoded.
    let verified = floe_engine::verify_snapshot(&bytes).map_err(corrupt)?;
    check_header(file, &verified.header, shard, topology, lows.len())?;
    check_snapshot_within_log(shard, &verified.header.offsets, lows, highs)?;
    let header = verified.header.clone();
    let recovered = verified.decode(dedup_window).map_err(corrupt)?;
    Ok((header, recovered))
}

fn check_header(
    file: &SnapshotFile,
    header: &SnapshotHeader,
    shard: u32,
    topology: &Topology,
    partitions: usize,
) -> Result<()> {
    if header.shard != shard {
        return Err(Error::ShardSnapshotWrongShard {
            path: file.path.clone(),
            expected: shard,
            found: header.shard,
        });
    }
    if header.topology != *topology {
        return Err(Error::ShardSnapshotTopology {
            path: file.path.clone(),
            snapshot_version: header.topology.version,
            current_version: topology.version,
        });
    }
    if header.offsets.len() != partitions || header.fences.len() != partitions {
        return Err(Error::ShardSnapshotPartitions {
            path: file.path.clone(),
            snapshot: header.offsets.len(),
            pipeline: partitions as u32,
        });
    }
    Ok(())
}

/// The event below each snapshot offset is the one the snapshot recorded.
async fn check_fences(pipeline: &dyn Pipeline, header: &SnapshotHeader) -> Result<()> {
    for (partition, (&offset, fence)) in (0u32..).zip(header.offsets.iter().zip(&header.fences)) {
        if offset == 0 {
            continue;
        }
        let at = offset - 1;
        let found = pipeline
            .read(partition, at, 1, Duration::ZERO)
            .await
            .map_err(pipeline_error)?
            .into_iter()
            .next()
            .filter(|r| r.offset == at)
            .map(|r| r.event.event_id);
        if found.is_none() || found != *fence {
            return Err(Error::ShardSnapshotFence {
                shard: header.shard,
                partition,
                offset: at,
                expected: fence.map_or_else(|| "none".into(), |f| f.to_string()),
                found: found.map_or_else(|| "no event".into(), |f| f.to_string()),
            });
        }
    }
    Ok(())
}

/// The fences of a snapshot covering `offsets`: the event id at
/// `offsets[p] - 1` of each partition.
pub async fn fences_at(
    pipeline: &dyn Pipeline,
    offsets: &[Offset],
) -> Result<Vec<Option<uuid::Uuid>>> {
    let mut fences = Vec::with_capacity(offsets.len());
    for (partition, &offset) in (0u32..).zip(offsets) {
        if offset == 0 {
            fences.push(None);
            continue;
        }
        let record = pipeline
            .read(partition, offset - 1, 1, Duration::ZERO)
            .await
            .map_err(pipeline_error)?
            .into_iter()
            .next()
            .filter(|r| r.offset == offset - 1);
        match record {
            Some(r) => fences.push(Some(r.event.event_id)),
            None => {
                return Err(Error::Pipeline {
                    cause: floe_engine::Error::Codec(format!(
                        "partition {partition}: no event at offset {} below the high watermark",
                        offset - 1
                    )),
                });
            }
        }
    }
    Ok(fences)
}

fn pipeline_error(cause: floe_engine::Error) -> Error {
    Error::Pipeline { cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_beyond_the_log_or_below_retention_is_refused() {
        check_snapshot_within_log(2, &[0, 5, 9], &[0, 0, 3], &[0, 5, 12]).unwrap();
        let err = check_snapshot_within_log(2, &[0, 6, 9], &[0, 0, 3], &[0, 5, 12]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ShardSnapshotBeyondLog {
                    shard: 2,
                    partition: 1,
                    offset: 6,
                    high: 5
                }
            ),
            "{err}"
        );
        let err = check_snapshot_within_log(2, &[0, 5, 2], &[0, 0, 3], &[0, 5, 12]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ShardSnapshotBelowRetention {
                    partition: 2,
                    offset: 2,
                    low: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("the log starts at 3"), "{err}");
    }
}
