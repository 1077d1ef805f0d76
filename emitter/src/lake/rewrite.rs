//! `RewriteFiles`: one atomic snapshot that removes a set of data files and
//! adds others (operation `replace` for compaction, `overwrite` for erase).
//!
//! Shaped like iceberg-java's `RewriteFiles` (and iceberg-rust's open
//! RewriteFiles PR) so it can give way to upstream's when that lands: the
//! action is built with `delete_file` / `add_file`, and `commit` turns it
//! into manifests, a manifest list, a snapshot and a metadata swap.
//!
//! Safe beside the sink committing at the same time:
//! - every attempt starts from freshly loaded metadata and checks that each
//!   file it removes is live in the current snapshot ([`Error::FileNotLive`]
//!   otherwise, with nothing committed);
//! - the swap is a compare-and-swap on the catalog, so an append that lands
//!   between the load and the swap makes the attempt fail and the next one
//!   re-plans on top of it (the appended files are carried, never dropped);
//! - the new snapshot carries the floe summary properties (the pipeline
//!   offsets) of the snapshot it replaces, byte for byte, so the sink and
//!   recovery read the same offsets from it;
//! - a `replace` must add exactly as many rows as it removes
//!   ([`Error::RowsChanged`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestEntryRef,
    ManifestFile, ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot,
    SnapshotReference, SnapshotRetention, SnapshotSummaryCollector, Summary, TableMetadata,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use uuid::Uuid;

use super::swap::swap;
use crate::error::{Error, Result};
use crate::sink::Lake;
use crate::sink::layout::PARTITIONS_PROPERTY;

/// Attempts before a rewrite that keeps losing the race gives up. Each
/// re-plan reads only the manifests it has not seen (they are immutable), so
/// an attempt after the first takes milliseconds; a sink committing every
/// few tens of milliseconds still leaves room.
const ATTEMPTS: u32 = 64;
/// More data manifests than this and a rewrite merges them all into one
/// (every sink commit adds a manifest; planning reads all of them).
const MERGE_MANIFESTS_ABOVE: usize = 64;
/// Summary property naming the floe operation that wrote a snapshot.
pub const MAINTENANCE_PROPERTY: &str = "floe.maintenance";

/// What a committed rewrite did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteReport {
    /// The new snapshot.
    pub snapshot_id: i64,
    /// Its parent (the snapshot it rewrote).
    pub parent_id: Option<i64>,
    /// Data files removed.
    pub removed_files: usize,
    /// Data files added.
    pub added_files: usize,
    /// Rows in the removed files.
    pub removed_rows: u64,
    /// Rows in the added files.
    pub added_rows: u64,
    /// Attempts it took (more than one: it lost races and re-planned).
    pub attempts: u32,
}

/// Removes data files and adds others in one snapshot.
#[derive(Debug, Clone)]
pub struct RewriteFiles {
    operation: Operation,
    delete: BTreeSet<String>,
    add: Vec<DataFile>,
    properties: HashMap<String, String>,
}

impl RewriteFiles {
    /// A `replace`: the same rows in other files (compaction).
    pub fn replace() -> RewriteFiles {
        RewriteFiles::new(Operation::Replace)
    }

    /// An `overwrite`: removed files' rows are replaced by the added files'
    /// rows, which may be fewer (erase).
    pub fn overwrite() -> RewriteFiles {
        RewriteFiles::new(Operation::Overwrite)
    }

    fn new(operation: Operation) -> RewriteFiles {
        RewriteFiles {
            operation,
            delete: BTreeSet::new(),
            add: Vec::new(),
            properties: HashMap::new(),
        }
    }

    /// Removes the data file at `path` (it must be live when committing).
    pub fn delete_file(&mut self, path: impl Into<String>) -> &mut Self {
        self.delete.insert(path.into());
        self
    }

    /// Adds a data file (written, not yet referenced by any snapshot).
    pub fn add_file(&mut self, file: DataFile) -> &mut Self {
        self.add.push(file);
        self
    }

    /// Sets a snapshot summary property (`floe.*` offsets are carried from
    /// the parent and cannot be set here).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Commits, retrying lost races against the new metadata.
    pub async fn commit(&self, lake: &Lake) -> Result<RewriteReport> {
        if self.delete.is_empty() && self.add.is_empty() {
            return Err(Error::LakeConfig(
                "a rewrite must remove or add a file".into(),
            ));
        }
        if let Some(file) = self
            .add
            .iter()
            .find(|f| f.content_type() != DataContentType::Data)
        {
            return Err(Error::LakeConfig(format!(
                "a rewrite adds data files only, not {:?} ({})",
                file.content_type(),
                file.file_path()
            )));
        }
        let mut attempt = 0;
        let mut manifests = HashMap::new();
        loop {
            attempt += 1;
            let table = lake.load_table().await?;
            let staged = self.stage(&table, &mut manifests).await?;
            let requirements = [
                TableRequirement::UuidMatch {
                    uuid: table.metadata().uuid(),
                },
                TableRequirement::RefSnapshotIdMatch {
                    r#ref: MAIN_BRANCH.to_string(),
                    snapshot_id: staged.report.parent_id,
                },
            ];
            let updates = vec![
                TableUpdate::AddSnapshot {
                    snapshot: staged.snapshot.clone(),
                },
                TableUpdate::SetSnapshotRef {
                    ref_name: MAIN_BRANCH.to_string(),
                    reference: SnapshotReference::new(
                        staged.report.snapshot_id,
                        SnapshotRetention::branch(None, None, None),
                    ),
                },
            ];
            match swap(lake, &table, self.operation_name(), updates, &requirements).await {
                Ok(_) => {
                    return Ok(RewriteReport {
                        attempts: attempt,
                        ..staged.report
                    });
                }
                Err(e) => {
                    // The manifests and manifest list of a lost attempt are
                    // referenced by nothing.
                    for path in &staged.written {
                        let _ = table.file_io().delete(path).await;
                    }
                    if !e.is_retryable() || attempt >= ATTEMPTS {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, attempt, "rewrite lost a race; re-planning");
                    // Jitter, so as not to fall into step with a periodic committer.
                    let jitter = u64::from(Uuid::new_v4().as_u128() as u8 % 16);
                    tokio::time::sleep(Duration::from_millis(
                        2 + jitter + u64::from(attempt.min(10)),
                    ))
                    .await;
                }
            }
        }
    }

    fn operation_name(&self) -> &'static str {
        match self.operation {
            Operation::Overwrite => "overwrite",
            _ => "replace",
        }
    }

    /// Writes the manifests and the manifest list of the new snapshot on top
    /// of `table`'s current one.
    async fn stage(
        &self,
        table: &Table,
        cache: &mut HashMap<String, Vec<ManifestEntryRef>>,
    ) -> Result<Staged> {
        let metadata = table.metadata();
        if metadata.format_version() != FormatVersion::V2 {
            return Err(Error::Layout(format!(
                "rewrites need an Iceberg format v2 table; floe.events is {}",
                metadata.format_version()
            )));
        }
        let parent = metadata.current_snapshot();
        let parent_id = parent.map(|s| s.snapshot_id());
        let snapshot_id = new_snapshot_id(metadata);
        let sequence = metadata.next_sequence_number();
        let commit = Uuid::now_v7();
        let io = table.file_io();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().clone();
        let manifest_path =
            |n: usize| format!("{}/metadata/{commit}-m{n}.avro", metadata.location());
        let new_writer = |path: String| -> Result<_> {
            let output = io
                .new_output(path)
                .map_err(|e| Error::iceberg("creating a manifest", e))?;
            Ok(ManifestWriterBuilder::new(
                output,
                Some(snapshot_id),
                schema.clone(),
                spec.as_ref().clone(),
            )
            .build_v2_data())
        };

        let mut summary = SnapshotSummaryCollector::default();
        let mut manifests: Vec<ManifestFile> = Vec::new();
        let mut written = Vec::new();
        let mut found = BTreeSet::new();
        let mut removed_rows = 0;
        if let Some(parent) = parent {
            let list = table
                .manifest_list_reader(parent)
                .load()
                .await
                .map_err(|e| Error::iceberg("reading the manifest list", e))?;
            let data_manifests = list
                .entries()
                .iter()
                .filter(|m| m.content == ManifestContentType::Data)
                .count();
            let merge = data_manifests > MERGE_MANIFESTS_ABOVE;
            // Merged manifests all go to one writer; others keep their own.
            let mut merged = None;
            for manifest in list.entries() {
                if manifest.content != ManifestContentType::Data {
                    manifests.push(manifest.clone());
                    continue;
                }
                let entries = match cache.get(&manifest.manifest_path) {
                    Some(entries) => entries.clone(),
                    None => {
                        let loaded = manifest
                            .load_manifest(io)
                            .await
                            .map_err(|e| Error::iceberg("reading a manifest", e))?;
                        let (entries, _) = loaded.into_parts();
                        cache.insert(manifest.manifest_path.clone(), entries.clone());
                        entries
                    }
                };
                let touched = entries
                    .iter()
                    .any(|e| e.is_alive() && self.delete.contains(e.file_path()));
                if !touched && !merge {
                    manifests.push(manifest.clone());
                    continue;
                }
                let mut own = None;
                let writer = if merge {
                    if merged.is_none() {
                        let path = manifest_path(written.len());
                        written.push(path.clone());
                        merged = Some(new_writer(path)?);
                    }
                    merged.as_mut().expect("set above")
                } else {
                    let path = manifest_path(written.len());
                    written.push(path.clone());
                    own.insert(new_writer(path)?)
                };
                for entry in entries.iter().filter(|e| e.is_alive()) {
                    let (Some(seq), file_seq) =
                        (entry.sequence_number(), entry.file_sequence_number)
                    else {
                        return Err(Error::Layout(format!(
                            "manifest entry of {} has no sequence number",
                            entry.file_path()
                        )));
                    };
                    let file = entry.data_file().clone();
                    if self.delete.contains(entry.file_path()) {
                        found.insert(entry.file_path().to_string());
                        removed_rows += entry.record_count();
                        summary.remove_file(&file, schema.clone(), spec.clone());
                        writer.add_delete_file(file, seq, file_seq)
                    } else {
                        let added_in = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                        writer.add_existing_file(file, added_in, seq, file_seq)
                    }
                    .map_err(|e| Error::iceberg("writing a manifest entry", e))?;
                }
                if let Some(writer) = own {
                    manifests.push(
                        writer
                            .write_manifest_file()
                            .await
                            .map_err(|e| Error::iceberg("writing a manifest", e))?,
                    );
                }
            }
            if let Some(writer) = merged {
                manifests.push(
                    writer
                        .write_manifest_file()
                        .await
                        .map_err(|e| Error::iceberg("writing a manifest", e))?,
                );
            }
        }
        if let Some(missing) = self.delete.iter().find(|p| !found.contains(*p)) {
            for path in &written {
                let _ = io.delete(path).await;
            }
            return Err(Error::FileNotLive {
                file: missing.clone(),
                snapshot_id: parent_id,
            });
        }
        let added_rows: u64 = self.add.iter().map(DataFile::record_count).sum();
        if self.operation == Operation::Replace && added_rows != removed_rows {
            for path in &written {
                let _ = io.delete(path).await;
            }
            return Err(Error::RowsChanged {
                removed: removed_rows,
                added: added_rows,
            });
        }
        if !self.add.is_empty() {
            let path = manifest_path(written.len());
            written.push(path.clone());
            let mut writer = new_writer(path)?;
            for file in &self.add {
                summary.add_file(file, schema.clone(), spec.clone());
                // -1: the data sequence number is inherited from the
                // manifest list (this snapshot's), as for any added file.
                writer
                    .add_file(file.clone(), -1)
                    .map_err(|e| Error::iceberg("writing a manifest entry", e))?;
            }
            manifests.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(|e| Error::iceberg("writing a manifest", e))?,
            );
        }

        let list_path = format!(
            "{}/metadata/snap-{snapshot_id}-0-{commit}.avro",
            metadata.location()
        );
        written.push(list_path.clone());
        let output = io
            .new_output(&list_path)
            .map_err(|e| Error::iceberg("creating the manifest list", e))?
            .writer()
            .await
            .map_err(|e| Error::iceberg("creating the manifest list", e))?;
        let mut list = ManifestListWriter::v2(output, snapshot_id, parent_id, sequence);
        list.add_manifests(manifests.into_iter())
            .map_err(|e| Error::iceberg("writing the manifest list", e))?;
        list.close()
            .await
            .map_err(|e| Error::iceberg("writing the manifest list", e))?;

        let mut properties = self.properties.clone();
        properties.retain(|k, _| !k.starts_with("floe.offsets.") && k != PARTITIONS_PROPERTY);
        properties
            .entry(MAINTENANCE_PROPERTY.to_string())
            .or_insert_with(|| self.operation_name().to_string());
        properties.extend(carried_properties(metadata));
        properties.extend(summary.build());
        add_totals(&mut properties, parent.map(|s| s.summary()));
        let snapshot = Snapshot::builder()
            .with_manifest_list(list_path)
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent_id)
            .with_sequence_number(sequence)
            .with_summary(Summary {
                operation: self.operation.clone(),
                additional_properties: properties,
            })
            .with_schema_id(metadata.current_schema_id())
            .with_timestamp_ms(now_ms().max(metadata.last_updated_ms()))
            .build();
        Ok(Staged {
            snapshot,
            written,
            report: RewriteReport {
                snapshot_id,
                parent_id,
                removed_files: self.delete.len(),
                added_files: self.add.len(),
                removed_rows,
                added_rows,
                attempts: 0,
            },
        })
    }
}

/// A planned snapshot whose files are written but not committed.
struct Staged {
    snapshot: Snapshot,
    /// Manifests and the manifest list written for it.
    written: Vec<String>,
    report: RewriteReport,
}

/// The floe summary properties (pipeline offsets, partition count, owner)
/// of the newest snapshot that has them, walking back from the current one:
/// what [`crate::sink::CommittedOffsets::of`] reads. A rewrite carries them
/// unchanged, so the offsets stay readable after its parents are expired.
pub(crate) fn carried_properties(metadata: &TableMetadata) -> HashMap<String, String> {
    let mut next = metadata.current_snapshot();
    while let Some(snapshot) = next {
        let summary = &snapshot.summary().additional_properties;
        if summary.contains_key(PARTITIONS_PROPERTY) {
            return summary
                .iter()
                .filter(|(k, _)| k.starts_with("floe.") && k.as_str() != MAINTENANCE_PROPERTY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    HashMap::new()
}

/// `total-*` = the parent's total + added - removed, for every total the
/// parent has (what iceberg's crate-private `update_snapshot_summaries`
/// does).
fn add_totals(properties: &mut HashMap<String, String>, parent: Option<&Summary>) {
    const TOTALS: [(&str, &str, &str); 6] = [
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-records", "added-records", "deleted-records"),
        ("total-files-size", "added-files-size", "removed-files-size"),
        (
            "total-delete-files",
            "added-delete-files",
            "removed-delete-files",
        ),
        (
            "total-position-deletes",
            "added-position-deletes",
            "removed-position-deletes",
        ),
        (
            "total-equality-deletes",
            "added-equality-deletes",
            "removed-equality-deletes",
        ),
    ];
    let Some(parent) = parent else { return };
    let get = |map: &HashMap<String, String>, key: &str| {
        map.get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for (total, added, removed) in TOTALS {
        let Some(before) = parent
            .additional_properties
            .get(total)
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let after = (before + get(properties, added)).saturating_sub(get(properties, removed));
        properties.insert(total.to_string(), after.to_string());
    }
}

/// A positive snapshot id no snapshot of the table has.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (hi, lo) = Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) >> 1) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_the_parent() {
        let parent = Summary {
            operation: Operation::Append,
            additional_properties: HashMap::from([
                ("total-data-files".to_string(), "10".to_string()),
                ("total-records".to_string(), "1000".to_string()),
            ]),
        };
        let mut props = HashMap::from([
            ("added-data-files".to_string(), "1".to_string()),
            ("deleted-data-files".to_string(), "4".to_string()),
            ("added-records".to_string(), "400".to_string()),
            ("deleted-records".to_string(), "400".to_string()),
        ]);
        add_totals(&mut props, Some(&parent));
        assert_eq!(props["total-data-files"], "7");
        assert_eq!(props["total-records"], "1000");
        assert!(
            !props.contains_key("total-files-size"),
            "the parent had none"
        );
    }
}
