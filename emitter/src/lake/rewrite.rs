//! `RewriteFiles`: one atomic snapshot that removes a set of data files and
//! adds others (operation `replace` for compaction, `overwrite` for erase).
//!
//! Shaped like iceberg-java's `RewriteFiles` (and iceberg-rust's open
//! RewriteFiles PR) so it can give way to upstream's when that lands: the
//! action is built with `delete_file` / `add_file`, and `commit` turns it
//! into manifests, a manifest list, a snapshot and a metadata swap.
//!
//! Safe beside the sink committing at the same time:
//! - the first attempt checks, on freshly loaded metadata, that each file it
//!   removes is live in the current snapshot ([`Error::FileNotLive`]
//!   otherwise, with nothing committed);
//! - the swap is a compare-and-swap on the catalog. When another commit
//!   lands first, the attempt is *rebased* on the new metadata
//!   ([`rebase`](RewriteFiles::rebase)): the manifests it rewrote stay as
//!   they are, and only the manifest list is written again, listing them
//!   with the manifests the other commits added. That is valid exactly when
//!   every manifest it rewrote is still listed by the new snapshot
//!   (manifests are immutable, so its files are then still live there) and
//!   no added manifest names a file it removes; otherwise the attempt is
//!   planned again from scratch, liveness check included. The sink only
//!   appends, so racing it costs one manifest list per lost race;
//! - the new snapshot carries the floe summary properties (the pipeline
//!   offsets) of the newest snapshot that has them, byte for byte, so the
//!   sink and recovery read the same offsets from it;
//! - a `replace` must add exactly as many rows as it removes
//!   ([`Error::RowsChanged`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, FormatVersion, MAIN_BRANCH, ManifestContentType,
    ManifestEntryRef, ManifestFile, ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot,
    SnapshotReference, SnapshotRetention, SnapshotSummaryCollector, Summary,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use uuid::Uuid;

use super::summary::{add_totals, carried_properties, new_snapshot_id, now_ms};
use super::swap::swap;
use crate::error::{Error, Result};
use crate::sink::Lake;
use crate::sink::layout::PARTITIONS_PROPERTY;

/// Attempts before a rewrite that keeps losing the race gives up. An attempt
/// after the first is a rebase (one manifest list and one metadata file), so
/// a sink committing every few tens of milliseconds still leaves room.
const ATTEMPTS: u32 = 64;
/// More data manifests than this and a rewrite merges them all into one
/// (every sink commit adds a manifest; planning reads all of them).
const MERGE_MANIFESTS_ABOVE: usize = 64;
/// Summary property naming the floe operation that wrote a snapshot.
pub const MAINTENANCE_PROPERTY: &str = "floe.maintenance";

/// Manifests read so far, by path (they are immutable).
type ManifestCache = HashMap<String, Vec<ManifestEntryRef>>;

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
    /// Attempts it took (more than one: it lost races).
    pub attempts: u32,
    /// Lost races answered by a rebase (the rest were planned again).
    pub rebases: u32,
}

/// Removes data files and adds others in one snapshot.
#[derive(Debug, Clone)]
pub struct RewriteFiles {
    operation: Operation,
    delete: BTreeSet<String>,
    add: Vec<DataFile>,
    properties: HashMap<String, String>,
    scrub: bool,
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
            scrub: false,
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

    /// The `deleted` manifest entries of the removed files keep their path,
    /// partition, size and row count but none of their column metrics
    /// (bounds, value counts), and every data manifest is rewritten into one
    /// without the `deleted` entries of earlier snapshots: an erase must not
    /// leave the erased values in the new snapshot's manifests as a removed
    /// file's lower or upper bound.
    pub fn scrub_removed_metrics(&mut self) -> &mut Self {
        self.scrub = true;
        self
    }

    /// Commits, rebasing on (or re-planning against) the new metadata when
    /// another commit landed first.
    pub async fn commit(&self, lake: &Lake) -> Result<RewriteReport> {
        self.commit_on(lake, lake.load_table().await?).await
    }

    /// [`commit`](Self::commit), planned first on `base`, metadata loaded
    /// earlier (tests use a stale one to make the first attempt lose).
    #[doc(hidden)]
    pub async fn commit_on(&self, lake: &Lake, base: Table) -> Result<RewriteReport> {
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
        let mut cache = ManifestCache::new();
        let mut table = base;
        let mut staged = self.stage(&table, &mut cache).await?;
        let (mut attempt, mut rebases) = (0, 0);
        loop {
            attempt += 1;
            let requirements = [
                TableRequirement::UuidMatch {
                    uuid: table.metadata().uuid(),
                },
                TableRequirement::RefSnapshotIdMatch {
                    r#ref: MAIN_BRANCH.to_string(),
                    snapshot_id: staged.parent_id,
                },
            ];
            let updates = vec![
                TableUpdate::AddSnapshot {
                    snapshot: staged.snapshot().clone(),
                },
                TableUpdate::SetSnapshotRef {
                    ref_name: MAIN_BRANCH.to_string(),
                    reference: SnapshotReference::new(
                        staged.snapshot_id,
                        SnapshotRetention::branch(None, None, None),
                    ),
                },
            ];
            let e = match swap(lake, &table, self.operation_name(), updates, &requirements).await {
                Ok(_) => {
                    return Ok(RewriteReport {
                        snapshot_id: staged.snapshot_id,
                        parent_id: staged.parent_id,
                        removed_files: self.delete.len(),
                        added_files: self.add.len(),
                        removed_rows: staged.removed_rows,
                        added_rows: staged.added_rows,
                        attempts: attempt,
                        rebases,
                    });
                }
                Err(e) => e,
            };
            if !e.is_retryable() || attempt >= ATTEMPTS {
                staged.discard(table.file_io()).await;
                return Err(e);
            }
            tracing::debug!(error = %e, attempt, "rewrite lost a race; rebasing");
            if attempt > 2 {
                // Jitter, so as not to fall into step with a periodic committer.
                let jitter = u64::from(Uuid::new_v4().as_u128() as u8 % 8);
                tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
            }
            let reloaded = lake.load_table().await;
            let next = match reloaded {
                Ok(next) => next,
                Err(e) => {
                    staged.discard(table.file_io()).await;
                    return Err(e);
                }
            };
            table = next;
            staged = match self.rebase(&table, staged, &mut cache).await {
                Ok(Rebased::Done(s)) => {
                    rebases += 1;
                    s
                }
                Ok(Rebased::Restage(old)) => {
                    old.discard(table.file_io()).await;
                    self.stage(&table, &mut cache).await?
                }
                Err(e) => return Err(e),
            };
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
    async fn stage(&self, table: &Table, cache: &mut ManifestCache) -> Result<Staged> {
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
        let mut staged = Staged {
            snapshot: None,
            snapshot_id,
            parent_id,
            base: BTreeSet::new(),
            consumed: BTreeSet::new(),
            own: Vec::new(),
            written: Vec::new(),
            list: None,
            collected: HashMap::new(),
            removed_rows: 0,
            added_rows: self.add.iter().map(DataFile::record_count).sum(),
        };
        let mut carried: Vec<ManifestFile> = Vec::new();
        let mut found = BTreeSet::new();
        let planned: Result<()> = async {
            let Some(parent) = parent else { return Ok(()) };
            let list = table
                .manifest_list_reader(parent)
                .load()
                .await
                .map_err(|e| Error::iceberg("reading the manifest list", e))?;
            refuse_delete_files(list.entries())?;
            let data_manifests = list
                .entries()
                .iter()
                .filter(|m| m.content == ManifestContentType::Data)
                .count();
            // A scrubbing rewrite (erase) also drops the `deleted` entries
            // earlier rewrites left in the manifests: all are rewritten.
            let merge = self.scrub || data_manifests > MERGE_MANIFESTS_ABOVE;
            // Merged manifests all go to one writer; others keep their own.
            let mut merged = None;
            for manifest in list.entries() {
                staged.base.insert(manifest.manifest_path.clone());
                let entries = load_entries(io, manifest, cache).await?;
                let touched = entries
                    .iter()
                    .any(|e| e.is_alive() && self.delete.contains(e.file_path()));
                if !touched && !merge {
                    carried.push(manifest.clone());
                    continue;
                }
                staged.consumed.insert(manifest.manifest_path.clone());
                let mut own = None;
                let writer = if merge {
                    if merged.is_none() {
                        let path = manifest_path(staged.written.len());
                        staged.written.push(path.clone());
                        merged = Some(new_writer(path)?);
                    }
                    merged.as_mut().expect("set above")
                } else {
                    let path = manifest_path(staged.written.len());
                    staged.written.push(path.clone());
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
                        staged.removed_rows += entry.record_count();
                        summary.remove_file(&file, schema.clone(), spec.clone());
                        let file = if self.scrub {
                            scrubbed(&file, spec.spec_id())?
                        } else {
                            file
                        };
                        writer.add_delete_file(file, seq, file_seq)
                    } else {
                        let added_in = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                        writer.add_existing_file(file, added_in, seq, file_seq)
                    }
                    .map_err(|e| Error::iceberg("writing a manifest entry", e))?;
                }
                if let Some(writer) = own {
                    staged.own.push(
                        writer
                            .write_manifest_file()
                            .await
                            .map_err(|e| Error::iceberg("writing a manifest", e))?,
                    );
                }
            }
            if let Some(writer) = merged {
                staged.own.push(
                    writer
                        .write_manifest_file()
                        .await
                        .map_err(|e| Error::iceberg("writing a manifest", e))?,
                );
            }
            Ok(())
        }
        .await;
        let checked = planned.and_then(|()| {
            if let Some(missing) = self.delete.iter().find(|p| !found.contains(*p)) {
                return Err(Error::FileNotLive {
                    file: missing.clone(),
                    snapshot_id: parent_id,
                });
            }
            if self.operation == Operation::Replace && staged.added_rows != staged.removed_rows {
                return Err(Error::RowsChanged {
                    removed: staged.removed_rows,
                    added: staged.added_rows,
                });
            }
            Ok(())
        });
        if let Err(e) = checked {
            staged.discard(io).await;
            return Err(e);
        }
        let finished: Result<()> = async {
            if !self.add.is_empty() {
                let path = manifest_path(staged.written.len());
                staged.written.push(path.clone());
                let mut writer = new_writer(path)?;
                for file in &self.add {
                    summary.add_file(file, schema.clone(), spec.clone());
                    // -1: the data sequence number is inherited from the
                    // manifest list (this snapshot's), as for any added file.
                    writer
                        .add_file(file.clone(), -1)
                        .map_err(|e| Error::iceberg("writing a manifest entry", e))?;
                }
                staged.own.push(
                    writer
                        .write_manifest_file()
                        .await
                        .map_err(|e| Error::iceberg("writing a manifest", e))?,
                );
            }
            staged.collected = summary.build();
            self.finish(table, &mut staged, carried).await
        }
        .await;
        match finished {
            Ok(()) => Ok(staged),
            Err(e) => {
                staged.discard(io).await;
                Err(e)
            }
        }
    }

    /// Moves `staged` onto `table`'s current snapshot if that only added
    /// manifests next to the ones it rewrote (see the module docs); writes
    /// one manifest list. Anything else is [`Rebased::Restage`].
    async fn rebase(
        &self,
        table: &Table,
        mut staged: Staged,
        cache: &mut ManifestCache,
    ) -> Result<Rebased> {
        let metadata = table.metadata();
        if metadata.snapshot_by_id(staged.snapshot_id).is_some() {
            return Ok(Rebased::Restage(staged));
        }
        let parent = metadata.current_snapshot();
        if parent.map(|s| s.snapshot_id()) == staged.parent_id
            && staged.snapshot.as_ref().map(Snapshot::sequence_number)
                == Some(metadata.next_sequence_number())
        {
            // Only properties moved (the sink renewed its lease): the staged
            // snapshot is still the right one.
            return Ok(Rebased::Done(staged));
        }
        let Some(parent) = parent else {
            return Ok(Rebased::Restage(staged));
        };
        let io = table.file_io();
        let list = table
            .manifest_list_reader(parent)
            .load()
            .await
            .map_err(|e| Error::iceberg("reading the manifest list", e));
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                staged.discard(io).await;
                return Err(e);
            }
        };
        let listed: BTreeSet<&str> = list
            .entries()
            .iter()
            .map(|m| m.manifest_path.as_str())
            .collect();
        if staged.consumed.iter().any(|m| !listed.contains(m.as_str())) {
            // Another rewrite replaced a manifest this one rewrote.
            return Ok(Rebased::Restage(staged));
        }
        let mut carried = Vec::new();
        for manifest in list.entries() {
            if staged.consumed.contains(&manifest.manifest_path) {
                continue;
            }
            if !staged.base.contains(&manifest.manifest_path) {
                if manifest.content != ManifestContentType::Data {
                    return Ok(Rebased::Restage(staged));
                }
                // Added since: it must not name a file this rewrite removes.
                let entries = match load_entries(io, manifest, cache).await {
                    Ok(entries) => entries,
                    Err(e) => {
                        staged.discard(io).await;
                        return Err(e);
                    }
                };
                if entries.iter().any(|e| self.delete.contains(e.file_path())) {
                    return Ok(Rebased::Restage(staged));
                }
            }
            carried.push(manifest.clone());
        }
        // The old list is referenced by nothing now.
        if let Some(old) = staged.list.take() {
            let _ = io.delete(&old).await;
            staged.written.retain(|p| *p != old);
        }
        staged.parent_id = Some(parent.snapshot_id());
        match self.finish(table, &mut staged, carried).await {
            Ok(()) => Ok(Rebased::Done(staged)),
            Err(e) => {
                staged.discard(io).await;
                Err(e)
            }
        }
    }

    /// Writes the manifest list (`carried` manifests of the parent, then the
    /// staged ones) and builds the snapshot on `table`'s current state.
    async fn finish(
        &self,
        table: &Table,
        staged: &mut Staged,
        carried: Vec<ManifestFile>,
    ) -> Result<()> {
        let metadata = table.metadata();
        let parent = metadata.current_snapshot();
        let sequence = metadata.next_sequence_number();
        let snapshot_id = staged.snapshot_id;
        let list_path = format!(
            "{}/metadata/snap-{snapshot_id}-0-{}.avro",
            metadata.location(),
            Uuid::now_v7()
        );
        staged.written.push(list_path.clone());
        staged.list = Some(list_path.clone());
        let output = table
            .file_io()
            .new_output(&list_path)
            .map_err(|e| Error::iceberg("creating the manifest list", e))?
            .writer()
            .await
            .map_err(|e| Error::iceberg("creating the manifest list", e))?;
        let mut list = ManifestListWriter::v2(output, snapshot_id, staged.parent_id, sequence);
        list.add_manifests(carried.into_iter().chain(staged.own.iter().cloned()))
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
        properties.extend(staged.collected.clone());
        add_totals(&mut properties, parent.map(|s| s.summary()));
        staged.snapshot = Some(
            Snapshot::builder()
                .with_manifest_list(list_path)
                .with_snapshot_id(snapshot_id)
                .with_parent_snapshot_id(staged.parent_id)
                .with_sequence_number(sequence)
                .with_summary(Summary {
                    operation: self.operation.clone(),
                    additional_properties: properties,
                })
                .with_schema_id(metadata.current_schema_id())
                .with_timestamp_ms(now_ms().max(metadata.last_updated_ms()))
                .build(),
        );
        Ok(())
    }
}

/// A planned snapshot whose files are written but not committed.
struct Staged {
    /// Set by `finish`.
    snapshot: Option<Snapshot>,
    snapshot_id: i64,
    parent_id: Option<i64>,
    /// Every manifest the parent it was planned on listed.
    base: BTreeSet<String>,
    /// The parent's data manifests it replaces with its own.
    consumed: BTreeSet<String>,
    /// Its own manifests (rewritten and added), sequence numbers unassigned
    /// so that any manifest list can inherit them.
    own: Vec<ManifestFile>,
    /// Every file written for it (manifests, the manifest list).
    written: Vec<String>,
    /// The current manifest list.
    list: Option<String>,
    /// Added and removed counts of the summary (parent-independent).
    collected: HashMap<String, String>,
    removed_rows: u64,
    added_rows: u64,
}

impl Staged {
    /// Deletes what it wrote: nothing references a lost attempt's files.
    async fn discard(&self, io: &FileIO) {
        for path in &self.written {
            let _ = io.delete(path).await;
        }
    }

    /// The snapshot (`finish` set it before staging or rebasing returned).
    fn snapshot(&self) -> &Snapshot {
        self.snapshot
            .as_ref()
            .expect("a staged rewrite has a snapshot")
    }
}

enum Rebased {
    /// Moved onto the new parent.
    Done(Staged),
    /// Cannot be moved: plan again (its files are to be discarded).
    Restage(Staged),
}

/// A manifest's entries, read once.
async fn load_entries(
    io: &FileIO,
    manifest: &ManifestFile,
    cache: &mut ManifestCache,
) -> Result<Vec<ManifestEntryRef>> {
    if let Some(entries) = cache.get(&manifest.manifest_path) {
        return Ok(entries.clone());
    }
    let loaded = manifest
        .load_manifest(io)
        .await
        .map_err(|e| Error::iceberg("reading a manifest", e))?;
    let (entries, _) = loaded.into_parts();
    cache.insert(manifest.manifest_path.clone(), entries.clone());
    Ok(entries)
}

/// Delete files (written by another engine) would apply to rows a rewrite
/// copies into new files, and be lost on them: refused.
fn refuse_delete_files(manifests: &[ManifestFile]) -> Result<()> {
    match manifests
        .iter()
        .find(|m| m.content != ManifestContentType::Data)
    {
        Some(m) => Err(Error::Layout(format!(
            "floe.events has delete files ({}); floe's rewrites copy data files whole and would undo them",
            m.manifest_path
        ))),
        None => Ok(()),
    }
}

/// `file` without column metrics: what a scrubbed `deleted` entry records.
fn scrubbed(file: &DataFile, spec_id: i32) -> Result<DataFile> {
    DataFileBuilder::default()
        .content(file.content_type())
        .file_path(file.file_path().to_string())
        .file_format(file.file_format())
        .partition(file.partition().clone())
        .partition_spec_id(spec_id)
        .record_count(file.record_count())
        .file_size_in_bytes(file.file_size_in_bytes())
        .build()
        .map_err(|e| Error::Layout(format!("scrubbing {}: {e}", file.file_path())))
}
