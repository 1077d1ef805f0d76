//! Replay of the moving keys' history: the lake snapshot first (reading only
//! the files that can hold them), then the pipeline tail after the
//! snapshot's offsets.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{BooleanArray, RecordBatch};
use floe_emitter::sink::{CommittedOffsets, Lake, batch_to_records};
use floe_engine::{Offset, Pipeline, Record};
use futures::TryStreamExt;
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::Datum;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::plan::Movement;

/// Up to this many moving key hashes are pushed down to the scan as
/// `key_hash IN (...)`: files, row groups and pages whose `key_hash` bounds
/// hold none of them are skipped (the sink sorts rows by `key_hash`). With
/// more, the scan reads every file. Either way the routing predicate
/// decides which rows move.
pub const MAX_PUSHED_KEYS: usize = 4096;

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayStats {
    /// Data files opened.
    pub files: u64,
    /// Bytes read from storage (Parquet pages, footers and indexes).
    pub bytes_read: u64,
    /// Rows decoded.
    pub rows_scanned: u64,
    /// Events of moving keys handed on.
    pub events: u64,
}

/// How the lake is read.
#[derive(Debug, Clone)]
pub struct LakeReplay {
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Data files read at once.
    pub concurrency: usize,
}

impl Default for LakeReplay {
    fn default() -> Self {
        LakeReplay {
            batch_size: 8192,
            concurrency: 4,
        }
    }
}

impl LakeReplay {
    /// Scans snapshot `at` for the events of keys that `movement` moves and
    /// sends them to `out` batch by batch. `hashes`, when it holds the hash
    /// of every moving key with events in the snapshot, is pushed down.
    pub async fn run(
        &self,
        lake: &Lake,
        at: &CommittedOffsets,
        movement: &Movement,
        hashes: Option<&[u64]>,
        out: &mpsc::Sender<Vec<Record>>,
    ) -> Result<ReplayStats> {
        let mut stats = ReplayStats::default();
        let Some(snapshot) = at.snapshot_id else {
            return Ok(stats);
        };
        let table = lake.load_table().await?;
        let mut scan = table
            .scan()
            .snapshot_id(snapshot)
            .with_batch_size(Some(self.batch_size));
        if let Some(hashes) = hashes.filter(|h| h.len() <= MAX_PUSHED_KEYS) {
            if hashes.is_empty() {
                return Ok(stats);
            }
            let predicate: Predicate =
                Reference::new("key_hash").is_in(hashes.iter().map(|&h| Datum::long(h as i64)));
            scan = scan.with_filter(predicate);
        }
        let scan = scan
            .build()
            .map_err(Error::iceberg("planning the replay scan"))?;
        let tasks: Vec<_> = scan
            .plan_files()
            .await
            .map_err(Error::iceberg("planning the replay scan"))?
            .try_collect()
            .await
            .map_err(Error::iceberg("planning the replay scan"))?;
        stats.files = tasks.len() as u64;
        let reader = ArrowReaderBuilder::new(table.file_io().clone(), iceberg::Runtime::current())
            .with_batch_size(self.batch_size)
            .with_data_file_concurrency_limit(self.concurrency.max(1))
            .with_row_group_filtering_enabled(true)
            .with_row_selection_enabled(true)
            .build();
        let tasks = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
        let result = reader
            .read(tasks)
            .map_err(Error::iceberg("reading the lake"))?;
        let metrics = result.metrics().clone();
        let mut batches = result.stream();
        while let Some(batch) = batches
            .try_next()
            .await
            .map_err(Error::iceberg("reading the lake"))?
        {
            stats.rows_scanned += batch.num_rows() as u64;
            let Some(moving) = select_moving(&batch, movement)? else {
                continue;
            };
            let records = batch_to_records(&moving)?;
            if let Some(r) = records.iter().find(|r| {
                at.offsets
                    .get(r.partition as usize)
                    .is_none_or(|&o| r.offset >= o)
            }) {
                return Err(Error::InvalidPlan(format!(
                    "lake snapshot {snapshot} holds offset {} of partition {}, beyond its committed offsets",
                    r.offset, r.partition
                )));
            }
            stats.events += records.len() as u64;
            if out.send(records).await.is_err() {
                break;
            }
        }
        stats.bytes_read = metrics.bytes_read();
        Ok(stats)
    }
}

use futures::StreamExt as _;

/// The rows of `batch` whose key moves; `None` if there are none. Only the
/// `key_hash` and `partition_key` columns are looked at for the others.
fn select_moving(batch: &RecordBatch, movement: &Movement) -> Result<Option<RecordBatch>> {
    let layout = |what: &str| floe_emitter::Error::Layout(format!("replayed batch: {what}"));
    let hashes = batch
        .column_by_name("key_hash")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| layout("no long column key_hash"))?;
    let keys = batch
        .column_by_name("partition_key")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| layout("no string column partition_key"))?;
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|row| Some(movement.moves(keys.value(row), hashes.value(row) as u64)))
        .collect();
    if mask.true_count() == 0 {
        return Ok(None);
    }
    if mask.true_count() == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    let filtered = arrow_select::filter::filter_record_batch(batch, &mask)
        .map_err(|e| layout(&format!("filtering rows: {e}")))?;
    Ok(Some(filtered))
}

/// Reads partition by partition from `from[p]` up to `to[p]` (exclusive) and
/// sends the events of moving keys to `out`; returns the events read and
/// those sent.
pub async fn replay_tail(
    pipeline: &Arc<dyn Pipeline>,
    from: &[Offset],
    to: &[Offset],
    movement: &Movement,
    chunk: usize,
    out: &mpsc::Sender<Vec<Record>>,
) -> Result<(u64, u64)> {
    let (mut read, mut sent) = (0, 0);
    for (partition, (&start, &end)) in (0u32..).zip(from.iter().zip(to)) {
        let mut offset = start;
        while offset < end {
            let records = pipeline
                .read(
                    partition,
                    offset,
                    chunk.min((end - offset) as usize),
                    Duration::ZERO,
                )
                .await?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            read += records.len() as u64;
            let moving: Vec<Record> = records
                .into_iter()
                .filter(|r| {
                    r.offset < end && movement.moves(&r.event.partition_key, r.event.key_hash)
                })
                .collect();
            sent += moving.len() as u64;
            if !moving.is_empty() && out.send(moving).await.is_err() {
                return Ok((read, sent));
            }
        }
    }
    Ok((read, sent))
}

/// The data files of one lake snapshot: count, bytes and rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeSize {
    /// Data files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their rows.
    pub rows: u64,
}

/// Sizes the committed snapshot `at` from its manifests (no data is read).
pub async fn lake_size(lake: &Lake, at: &CommittedOffsets) -> Result<LakeSize> {
    let mut size = LakeSize::default();
    let Some(snapshot) = at.snapshot_id else {
        return Ok(size);
    };
    let table = lake.load_table().await?;
    let scan = table
        .scan()
        .snapshot_id(snapshot)
        .build()
        .map_err(Error::iceberg("planning a size scan"))?;
    let tasks: Vec<_> = scan
        .plan_files()
        .await
        .map_err(Error::iceberg("planning a size scan"))?
        .try_collect()
        .await
        .map_err(Error::iceberg("planning a size scan"))?;
    for task in tasks {
        size.files += 1;
        size.bytes += task.file_size_in_bytes;
        size.rows += task.record_count.unwrap_or(0);
    }
    Ok(size)
}
