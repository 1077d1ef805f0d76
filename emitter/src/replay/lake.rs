//! The lake part of a replay: the events of one committed snapshot, all of
//! them or those of some keys (reading only the files, row groups and pages
//! that can hold those keys).

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{BooleanArray, Int64Array, RecordBatch, StringArray};
use floe_engine::Record;
use futures::TryStreamExt;
use iceberg::arrow::{ArrowReaderBuilder, ScanResult};
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::Datum;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::check_within_snapshot;
use crate::error::{Error, Result};
use crate::sink::{CommittedOffsets, Lake, batch_to_records};

/// Which rows of the snapshot a scan hands on: those whose
/// `(partition_key, key_hash)` pass (`None`: all).
pub type KeyFilter<'a> = Option<&'a (dyn Fn(&str, u64) -> bool + Send + Sync)>;

/// Up to this many moving key hashes are pushed down to the scan as
/// `key_hash IN (...)`: files, row groups and pages whose `key_hash` bounds
/// hold none of them are skipped (the sink sorts rows by `key_hash`). With
/// more, the scan reads every file. Either way the routing predicate
/// decides which rows move.
pub const MAX_PUSHED_KEYS: usize = 4096;

/// What a lake scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Data files opened.
    pub files: u64,
    /// Bytes read from storage (Parquet pages, footers and indexes).
    pub bytes_read: u64,
    /// Rows decoded.
    pub rows_scanned: u64,
    /// Events handed on (those that passed the filter).
    pub events: u64,
}

/// How the lake is read.
#[derive(Debug, Clone)]
pub struct LakeScan {
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Data files read at once.
    pub concurrency: usize,
}

impl Default for LakeScan {
    fn default() -> Self {
        LakeScan {
            batch_size: 8192,
            concurrency: 4,
        }
    }
}

impl LakeScan {
    /// Scans snapshot `at` for the events that pass `keep` and sends them to
    /// `out` batch by batch, in no particular order; stops early when `out`
    /// is closed. `hashes`, when it holds the hash of every wanted key with
    /// events in the snapshot, is pushed down. Every event read is checked
    /// to be below the snapshot's committed offsets.
    pub async fn run(
        &self,
        lake: &Lake,
        at: &CommittedOffsets,
        keep: KeyFilter<'_>,
        hashes: Option<&[u64]>,
        out: &mpsc::Sender<Vec<Record>>,
    ) -> Result<ScanStats> {
        let mut stats = ScanStats::default();
        let Some(snapshot) = at.snapshot_id else {
            return Ok(stats);
        };
        let filter = match hashes.filter(|h| h.len() <= MAX_PUSHED_KEYS) {
            Some([]) => return Ok(stats),
            Some(hashes) => Some(
                Reference::new("key_hash").is_in(hashes.iter().map(|&h| Datum::long(h as i64))),
            ),
            None => None,
        };
        let result = self
            .read(lake, snapshot, None, filter, &REPLAY, &mut stats)
            .await?;
        let metrics = result.metrics().clone();
        let mut batches = result.stream();
        while let Some(batch) = batches
            .try_next()
            .await
            .map_err(|e| Error::iceberg(REPLAY.read, e))?
        {
            stats.rows_scanned += batch.num_rows() as u64;
            let selected = match keep {
                Some(keep) => match select(&batch, keep)? {
                    Some(selected) => selected,
                    None => continue,
                },
                None => batch,
            };
            let records = batch_to_records(&selected)?;
            check_within_snapshot(at, &records)?;
            stats.events += records.len() as u64;
            if out.send(records).await.is_err() {
                break;
            }
        }
        stats.bytes_read = metrics.bytes_read();
        Ok(stats)
    }

    /// The distinct `key_hash`es in snapshot `at` of the keys that pass
    /// `keep`, sorted, reading only the `partition_key` and `key_hash`
    /// columns: what a per-shard restore pushes down to [`LakeScan::run`]
    /// when it does not know the shards' keys beforehand (the previous
    /// owner is gone). `stats` counts the rows and bytes this read.
    pub async fn key_hashes(
        &self,
        lake: &Lake,
        at: &CommittedOffsets,
        keep: &(dyn Fn(&str, u64) -> bool + Send + Sync),
    ) -> Result<(Vec<u64>, ScanStats)> {
        let mut stats = ScanStats::default();
        let Some(snapshot) = at.snapshot_id else {
            return Ok((Vec::new(), stats));
        };
        let columns = ["partition_key", "key_hash"];
        let result = self
            .read(lake, snapshot, Some(&columns), None, &KEYS, &mut stats)
            .await?;
        let metrics = result.metrics().clone();
        let mut batches = result.stream();
        let mut hashes = std::collections::BTreeSet::new();
        while let Some(batch) = batches
            .try_next()
            .await
            .map_err(|e| Error::iceberg(KEYS.read, e))?
        {
            stats.rows_scanned += batch.num_rows() as u64;
            let (keys, key_hashes) = key_columns(&batch, "key scan batch")?;
            for row in 0..batch.num_rows() {
                let hash = key_hashes.value(row) as u64;
                if keep(keys.value(row), hash) {
                    hashes.insert(hash);
                }
            }
        }
        stats.bytes_read = metrics.bytes_read();
        Ok((hashes.into_iter().collect(), stats))
    }

    /// The events of entity `key` in snapshot `at`, in no particular order:
    /// the row filter on its three names (and on `key_hash`, when known) is
    /// pushed down, so only the rows of the entity are decoded and only the
    /// files, row groups and pages whose bounds can hold them are read.
    pub async fn entity_events(
        &self,
        lake: &Lake,
        at: &CommittedOffsets,
        key: &floe_engine::EntityKey,
        key_hash: Option<u64>,
    ) -> Result<(Vec<Record>, ScanStats)> {
        let mut stats = ScanStats::default();
        let Some(snapshot) = at.snapshot_id else {
            return Ok((Vec::new(), stats));
        };
        let mut filter = Reference::new("namespace")
            .equal_to(Datum::string(&key.namespace))
            .and(Reference::new("entity_type").equal_to(Datum::string(&key.entity_type)))
            .and(Reference::new("entity_id").equal_to(Datum::string(&key.id)));
        if let Some(hash) = key_hash {
            filter = Reference::new("key_hash")
                .equal_to(Datum::long(hash as i64))
                .and(filter);
        }
        let result = self
            .read(lake, snapshot, None, Some(filter), &ENTITY, &mut stats)
            .await?;
        let metrics = result.metrics().clone();
        let mut batches = result.stream();
        let mut out = Vec::new();
        while let Some(batch) = batches
            .try_next()
            .await
            .map_err(|e| Error::iceberg(ENTITY.read, e))?
        {
            stats.rows_scanned += batch.num_rows() as u64;
            let records = batch_to_records(&batch)?;
            check_within_snapshot(at, &records)?;
            // The pushed-down filter prunes; this decides.
            out.extend(records.into_iter().filter(|r| {
                r.event.namespace == key.namespace
                    && r.event.entity_type == key.entity_type
                    && r.event.entity_id == key.id
            }));
        }
        stats.events = out.len() as u64;
        stats.bytes_read = metrics.bytes_read();
        Ok((out, stats))
    }

    /// Plans snapshot `snapshot` (only `columns` when given; the files,
    /// row groups and pages that can hold rows passing `filter`) and starts
    /// reading it; `stats` counts the files opened.
    async fn read(
        &self,
        lake: &Lake,
        snapshot: i64,
        columns: Option<&[&str]>,
        filter: Option<Predicate>,
        what: &Contexts,
        stats: &mut ScanStats,
    ) -> Result<ScanResult> {
        let table = lake.load_table().await?;
        let mut scan = table
            .scan()
            .snapshot_id(snapshot)
            .with_batch_size(Some(self.batch_size));
        if let Some(columns) = columns {
            scan = scan.select(columns.iter().copied());
        }
        if let Some(filter) = filter {
            scan = scan.with_filter(filter);
        }
        let tasks: Vec<_> = scan
            .build()
            .map_err(|e| Error::iceberg(what.plan, e))?
            .plan_files()
            .await
            .map_err(|e| Error::iceberg(what.plan, e))?
            .try_collect()
            .await
            .map_err(|e| Error::iceberg(what.plan, e))?;
        stats.files = tasks.len() as u64;
        let reader = ArrowReaderBuilder::new(table.file_io().clone(), iceberg::Runtime::current())
            .with_batch_size(self.batch_size)
            .with_data_file_concurrency_limit(self.concurrency.max(1))
            .with_row_group_filtering_enabled(true)
            .with_row_selection_enabled(true)
            .build();
        let tasks = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
        reader.read(tasks).map_err(|e| Error::iceberg(what.read, e))
    }
}

/// What a failed plan or read of a scan was doing, for its error.
struct Contexts {
    plan: &'static str,
    read: &'static str,
}

const REPLAY: Contexts = Contexts {
    plan: "planning the replay scan",
    read: "reading the lake",
};

const ENTITY: Contexts = Contexts {
    plan: "planning the read of an archived entity",
    read: "reading an archived entity from the lake",
};

const KEYS: Contexts = Contexts {
    plan: "planning the key scan",
    read: "reading the lake's keys",
};

/// The `partition_key` and `key_hash` columns of `batch`.
fn key_columns<'a>(
    batch: &'a RecordBatch,
    what: &str,
) -> Result<(&'a StringArray, &'a Int64Array)> {
    let layout = |missing: &str| Error::Layout(format!("{what}: {missing}"));
    let hashes = batch
        .column_by_name("key_hash")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| layout("no long column key_hash"))?;
    let keys = batch
        .column_by_name("partition_key")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| layout("no string column partition_key"))?;
    Ok((keys, hashes))
}

use futures::StreamExt as _;

/// The rows of `batch` whose key passes `keep`; `None` if there are none.
/// Only the `key_hash` and `partition_key` columns are looked at for the
/// others.
fn select(
    batch: &RecordBatch,
    keep: &(dyn Fn(&str, u64) -> bool + Send + Sync),
) -> Result<Option<RecordBatch>> {
    let (keys, hashes) = key_columns(batch, "replayed batch")?;
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|row| Some(keep(keys.value(row), hashes.value(row) as u64)))
        .collect();
    if mask.true_count() == 0 {
        return Ok(None);
    }
    if mask.true_count() == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    let filtered = arrow_select::filter::filter_record_batch(batch, &mask)
        .map_err(|e| Error::Layout(format!("replayed batch: filtering rows: {e}")))?;
    Ok(Some(filtered))
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
        .map_err(|e| Error::iceberg("planning a size scan", e))?;
    let tasks: Vec<_> = scan
        .plan_files()
        .await
        .map_err(|e| Error::iceberg("planning a size scan", e))?
        .try_collect()
        .await
        .map_err(|e| Error::iceberg("planning a size scan", e))?;
    for task in tasks {
        size.files += 1;
        size.bytes += task.file_size_in_bytes;
        size.rows += task.record_count.unwrap_or(0);
    }
    Ok(size)
}
