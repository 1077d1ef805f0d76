//! The moving keys' history for their new owners, read with the shared
//! replay module (`floe_emitter::replay`): the lake snapshot (only the
//! moving keys, their hashes pushed down) and the pipeline tail after it.

use std::sync::Arc;

use floe_emitter::replay::{LakeScan, PipelineTail, ScanStats};
use floe_emitter::sink::{CommittedOffsets, Lake};
use floe_engine::{Offset, Pipeline, Record};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::plan::Movement;

/// Scans snapshot `at` for the events of keys that `movement` moves and
/// sends them to `out`. `hashes`, when it holds the hash of every moving key
/// with events in the snapshot, is pushed down.
pub(crate) async fn copy_from_lake(
    scan: LakeScan,
    lake: &Lake,
    at: &CommittedOffsets,
    movement: &Movement,
    hashes: Option<&[u64]>,
    out: &mpsc::Sender<Vec<Record>>,
) -> Result<ScanStats> {
    let moves = |key: &str, hash: u64| movement.moves(key, hash);
    Ok(scan.run(lake, at, Some(&moves), hashes, out).await?)
}

/// Reads the pipeline from `from[p]` up to `to[p]` (exclusive) and sends the
/// events of moving keys to `out`; returns the events read and those sent.
pub(crate) async fn tail_moving(
    pipeline: Arc<dyn Pipeline>,
    from: &[Offset],
    to: &[Offset],
    movement: &Movement,
    chunk: usize,
    out: &mpsc::Sender<Vec<Record>>,
) -> Result<(u64, u64)> {
    let mut tail = PipelineTail::new(pipeline, from, to, chunk);
    let mut sent = 0;
    while let Some(records) = tail.next().await? {
        let moving: Vec<Record> = records
            .into_iter()
            .filter(|r| movement.moves(&r.event.partition_key, r.event.key_hash))
            .collect();
        sent += moving.len() as u64;
        if !moving.is_empty() && out.send(moving).await.is_err() {
            break;
        }
    }
    Ok((tail.events_read(), sent))
}
