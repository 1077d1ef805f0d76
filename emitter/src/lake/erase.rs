//! Erase in the lake (GDPR): every row of one entity removed from the
//! current snapshot by one `overwrite` commit, then every snapshot from
//! before that commit expired and the files only they referenced deleted.
//!
//! Why nothing of the entity is left in the warehouse afterwards:
//! - the overwrite rewrites each live data file holding a row of the entity
//!   without those rows, and removes the old file (its `deleted` manifest
//!   entry keeps no column bounds: [`RewriteFiles::scrub_removed_metrics`]);
//! - it rewrites every data manifest of the snapshot into one, so no
//!   `deleted` entry of an earlier rewrite (whose bounds may hold the
//!   entity's id) is carried either;
//! - every older snapshot is expired, and the data files, manifests and
//!   manifest lists only they referenced are deleted at once (not after the
//!   orphan grace period: they are not a commit in flight, they are
//!   history);
//! - floe writes no entity value into snapshot summaries or table
//!   properties, so metadata files hold none.
//!
//! It races the sink safely: the overwrite is a [`RewriteFiles`] commit
//! (rebased over appends); if a compaction replaced a file it planned to
//! rewrite, it plans again on the new snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use floe_engine::EntityKey;
use iceberg::spec::{DataFile, Datum};

use super::compact::read_files;
use super::expire::{ExpireReport, expire_history_before};
use super::files::live_data_files;
use super::rewrite::{MAINTENANCE_PROPERTY, RewriteFiles};
use crate::error::{Error, Result};
use crate::sink::layout::field;
use crate::sink::{DataWriter, Lake};

/// Plans before an erase that keeps losing to compactions gives up.
const PLANS: u32 = 8;

/// How an erase writes the files it rewrites.
#[derive(Debug, Clone, PartialEq)]
pub struct EraseOptions {
    /// Size of the files it writes (the sink's `target_file_bytes`).
    pub target_file_bytes: u64,
    /// zstd level of the written files.
    pub zstd_level: i32,
    /// Unreferenced files younger than this that no expired snapshot
    /// referenced (another writer's commit in flight) are kept.
    pub orphan_grace: Duration,
}

impl Default for EraseOptions {
    fn default() -> Self {
        EraseOptions {
            target_file_bytes: 128 << 20,
            zstd_level: 1,
            orphan_grace: Duration::from_secs(3_600),
        }
    }
}

/// Where the entity's rows were in the lake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityRows {
    /// Rows of the entity in the current snapshot.
    pub rows: u64,
    /// Live data files holding them.
    pub files: Vec<String>,
    /// Pipeline positions `(partition, offset)` of those rows.
    pub positions: BTreeSet<(u32, u64)>,
}

/// What an erase did in the lake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LakeErasure {
    /// The overwrite snapshot (`None`: the current snapshot held no row of
    /// the entity; older snapshots were expired all the same).
    pub snapshot_id: Option<i64>,
    /// The rows removed, where they were.
    pub erased: EntityRows,
    /// Files written in place of the rewritten ones.
    pub written_files: usize,
    /// Plans it took (more than one: a compaction replaced a file first).
    pub plans: u32,
    /// The expiry of the snapshots from before the overwrite.
    pub expired: ExpireReport,
}

/// The entity's rows in the current snapshot (read only).
pub async fn find_entity(lake: &Lake, key: &EntityKey) -> Result<EntityRows> {
    let table = lake.load_table().await?;
    let Some(snapshot) = table.metadata().current_snapshot().cloned() else {
        return Ok(EntityRows::default());
    };
    let mut found = EntityRows::default();
    for file in live_data_files(&table, &snapshot).await? {
        if !may_hold(&file, key) {
            continue;
        }
        let records = read_files(&table, &[&file]).await?;
        let before = found.rows;
        for record in records.iter().filter(|r| is_of(r, key)) {
            found.rows += 1;
            found.positions.insert((record.partition, record.offset));
        }
        if found.rows > before {
            found.files.push(file.file_path().to_string());
        }
    }
    Ok(found)
}

/// Removes every row of `key` from the lake and deletes the history that
/// held them (see the module docs).
pub async fn erase_entity(
    lake: &Lake,
    key: &EntityKey,
    options: &EraseOptions,
) -> Result<LakeErasure> {
    erase_rows(
        lake,
        &|file: &DataFile| may_hold(file, key),
        &|record: &floe_engine::Record| is_of(record, key),
        options,
    )
    .await
}

/// Removes every row `selects` picks from the lake and deletes the history
/// that held them, as [`erase_entity`] does for one entity (what dropping
/// an archived period erases). `may_hold` rules files out by their column
/// bounds before they are read (`|_| true` reads them all).
pub async fn erase_rows(
    lake: &Lake,
    may_hold: &(dyn Fn(&DataFile) -> bool + Sync),
    selects: &(dyn Fn(&floe_engine::Record) -> bool + Sync),
    options: &EraseOptions,
) -> Result<LakeErasure> {
    super::expire::check_listable(lake, &lake.load_table().await?)?;
    let mut erasure = LakeErasure::default();
    let committed = loop {
        erasure.plans += 1;
        match overwrite(lake, may_hold, selects, options, &mut erasure).await {
            Ok(committed) => break committed,
            Err(Error::FileNotLive { .. }) if erasure.plans < PLANS => {
                tracing::debug!(
                    plans = erasure.plans,
                    "a compaction replaced a file the erase planned to rewrite; planning again"
                );
                erasure.erased = EntityRows::default();
                erasure.written_files = 0;
            }
            Err(e) => return Err(e),
        }
    };
    erasure.snapshot_id = committed;
    let table = lake.load_table().await?;
    // Keep the overwrite and what the sink committed after it; with nothing
    // to overwrite, the current snapshot (which holds no row of the entity).
    let keep_from = match committed.or(table.metadata().current_snapshot_id()) {
        Some(id) => id,
        None => return Ok(erasure),
    };
    erasure.expired = expire_history_before(lake, keep_from, options.orphan_grace).await?;
    Ok(erasure)
}

/// One plan: rewrites the current snapshot's files that hold rows `selects`
/// picks and commits the overwrite. `Ok(None)`: no live file holds any.
async fn overwrite(
    lake: &Lake,
    may_hold: &(dyn Fn(&DataFile) -> bool + Sync),
    selects: &(dyn Fn(&floe_engine::Record) -> bool + Sync),
    options: &EraseOptions,
    erasure: &mut LakeErasure,
) -> Result<Option<i64>> {
    let table = lake.load_table().await?;
    let Some(snapshot) = table.metadata().current_snapshot().cloned() else {
        return Ok(None);
    };
    let writer = DataWriter::new(
        &table,
        options.target_file_bytes as usize,
        options.zstd_level,
    )?;
    let mut rewrite = RewriteFiles::overwrite();
    rewrite
        .set(MAINTENANCE_PROPERTY, "erase")
        .scrub_removed_metrics();
    let mut written: Vec<DataFile> = Vec::new();
    let planned: Result<()> = async {
        for file in live_data_files(&table, &snapshot).await? {
            if !may_hold(&file) {
                continue;
            }
            let records = read_files(&table, &[&file]).await?;
            let (mine, kept): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| selects(r));
            if mine.is_empty() {
                continue;
            }
            for record in &mine {
                erasure.erased.rows += 1;
                erasure
                    .erased
                    .positions
                    .insert((record.partition, record.offset));
            }
            erasure.erased.files.push(file.file_path().to_string());
            rewrite.delete_file(file.file_path());
            if kept.is_empty() {
                continue;
            }
            let outputs = writer.write(kept).await?;
            written.extend(outputs.iter().cloned());
            if let Some(bad) = outputs.iter().find(|o| o.partition() != file.partition()) {
                return Err(Error::Layout(format!(
                    "rewritten file {} landed in partition {:?}, its source is in {:?}",
                    bad.file_path(),
                    bad.partition(),
                    file.partition()
                )));
            }
            for output in outputs {
                rewrite.add_file(output);
            }
        }
        Ok(())
    }
    .await;
    let committed = match planned {
        Ok(()) if erasure.erased.files.is_empty() => return Ok(None),
        Ok(()) => rewrite.commit(lake).await,
        Err(e) => Err(e),
    };
    match committed {
        Ok(report) => {
            erasure.written_files = report.added_files;
            Ok(Some(report.snapshot_id))
        }
        Err(e) => {
            // Nothing references the files this plan wrote.
            for file in &written {
                let _ = table.file_io().delete(file.file_path()).await;
            }
            Err(e)
        }
    }
}

fn is_of(record: &floe_engine::Record, key: &EntityKey) -> bool {
    let e = &record.event;
    e.entity_id == key.id && e.entity_type == key.entity_type && e.namespace == key.namespace
}

/// Whether `file`'s column bounds leave room for rows of `key` (no bounds:
/// it may).
fn may_hold(file: &DataFile, key: &EntityKey) -> bool {
    let within = |field: i32, value: &str| {
        let value = Datum::string(value);
        let above = file
            .lower_bounds()
            .get(&field)
            .is_none_or(|lower| lower <= &value);
        let below = file
            .upper_bounds()
            .get(&field)
            .is_none_or(|upper| &value <= upper);
        above && below
    };
    within(field::ENTITY_ID, &key.id)
        && within(field::NAMESPACE, &key.namespace)
        && within(field::ENTITY_TYPE, &key.entity_type)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat, Struct};

    use super::*;

    fn file(bounds: Option<(&str, &str)>) -> DataFile {
        let mut builder = DataFileBuilder::default();
        builder
            .content(DataContentType::Data)
            .file_path("file:///w/f.parquet".to_string())
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .partition_spec_id(0)
            .record_count(1)
            .file_size_in_bytes(1);
        if let Some((lower, upper)) = bounds {
            builder
                .lower_bounds(HashMap::from([(field::ENTITY_ID, Datum::string(lower))]))
                .upper_bounds(HashMap::from([(field::ENTITY_ID, Datum::string(upper))]));
        }
        builder.build().unwrap()
    }

    #[test]
    fn only_files_whose_bounds_leave_room_for_the_id_are_read() {
        let key = EntityKey::new("t", "Person", "m-5");
        assert!(may_hold(&file(Some(("a", "z"))), &key));
        assert!(may_hold(&file(Some(("m-5", "m-5"))), &key));
        assert!(!may_hold(&file(Some(("n", "z"))), &key));
        assert!(!may_hold(&file(Some(("a", "m-4"))), &key));
        // No bounds: it may.
        assert!(may_hold(&file(None), &key));
    }
}
