//! Expiry that deletes: snapshots older than a bound are removed from the
//! metadata (one compare-and-swap), then every file under the table that no
//! remaining snapshot references and that is older than a grace period is
//! deleted: data files, manifests, manifest lists, old metadata files, and
//! orphans left by writers that crashed before committing.
//!
//! Why it is safe beside the sink and compaction:
//! - the set of referenced files is computed from metadata loaded *after*
//!   the expiry commit, so it covers every snapshot any later commit builds
//!   on (later commits only add files, which are new);
//! - files younger than the grace period are never deleted, whatever
//!   references them: a writer's uncommitted files, manifests and metadata
//!   file are young while its commit is in flight;
//! - the newest snapshot carrying the sink's offsets is never expired, so
//!   the sink always finds where to resume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};

use super::files::referenced_by;
use super::swap::swap;
use crate::error::{Error, Result};
use crate::sink::Lake;
use crate::sink::layout::PARTITIONS_PROPERTY;

/// Table property: snapshots committed before this time (ms since the
/// epoch) were expired; time travel to them fails with a message naming it.
pub const EXPIRED_BEFORE_PROPERTY: &str = "floe.expired-before-ms";
/// Swap attempts before an expiry that keeps losing the race gives up.
const ATTEMPTS: u32 = 64;

/// What expiry removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireOptions {
    /// Snapshots older than this are expired.
    pub older_than: Duration,
    /// The newest this many snapshots are kept whatever their age (at least 1).
    pub retain_last: usize,
    /// Unreferenced files younger than this are kept (in-flight commits).
    pub orphan_grace: Duration,
    /// Only report what would be expired and deleted.
    pub dry_run: bool,
}

impl Default for ExpireOptions {
    fn default() -> Self {
        ExpireOptions {
            older_than: Duration::from_secs(5 * 86_400),
            retain_last: 1,
            orphan_grace: Duration::from_secs(3_600),
            dry_run: false,
        }
    }
}

/// What an expiry did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Snapshots removed from the metadata.
    pub expired_snapshots: Vec<i64>,
    /// Snapshots left.
    pub live_snapshots: usize,
    /// Files deleted (or that would be), by kind.
    pub deleted: DeletedFiles,
    /// Unreferenced files kept because they are younger than the grace period.
    pub kept_young: usize,
    /// The deleted paths.
    pub deleted_paths: Vec<String>,
}

/// Counts of deleted files by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedFiles {
    /// Parquet data files.
    pub data: usize,
    /// Manifests and manifest lists.
    pub manifests: usize,
    /// `*.metadata.json` files.
    pub metadata: usize,
    /// Anything else under the table.
    pub other: usize,
    /// Bytes of all of them.
    pub bytes: u64,
}

/// The snapshots `options` expire, given `(id, timestamp_ms)` of every
/// snapshot: older than `now - older_than`, not among the newest
/// `retain_last`, not the current one and not `protected` (the newest
/// snapshot with the sink's offsets). Pure.
pub(crate) fn select_expired(
    snapshots: &[(i64, i64)],
    current: Option<i64>,
    protected: Option<i64>,
    now_ms: i64,
    options: &ExpireOptions,
) -> Vec<i64> {
    let cutoff = now_ms - options.older_than.as_millis() as i64;
    let mut by_age = snapshots.to_vec();
    by_age.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut expired: Vec<i64> = by_age
        .iter()
        .skip(options.retain_last.max(1))
        .filter(|(id, ts)| *ts < cutoff && Some(*id) != current && Some(*id) != protected)
        .map(|(id, _)| *id)
        .collect();
    expired.sort_unstable();
    expired
}

/// The snapshot `CommittedOffsets::of` reads the sink's offsets from.
fn offsets_snapshot(metadata: &TableMetadata) -> Option<i64> {
    let mut next = metadata.current_snapshot();
    while let Some(snapshot) = next {
        if snapshot
            .summary()
            .additional_properties
            .contains_key(PARTITIONS_PROPERTY)
        {
            return Some(snapshot.snapshot_id());
        }
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    None
}

/// Fails unless the warehouse can be listed for unreferenced files (local
/// only so far). Checked before anything is committed.
pub(crate) fn check_listable(lake: &Lake, table: &Table) -> Result<PathBuf> {
    local_path(table.metadata().location()).ok_or_else(|| Error::Unsupported {
        operation: "expire",
        catalog: lake.location().catalog.to_string(),
        reason: format!(
            "listing the warehouse {} for unreferenced files needs a file:// warehouse",
            table.metadata().location()
        ),
    })
}

/// Expires snapshots and deletes unreferenced files (see the module docs).
pub async fn expire(lake: &Lake, options: &ExpireOptions) -> Result<ExpireReport> {
    let root = check_listable(lake, &lake.load_table().await?)?;
    let (table, mut report, _) = expire_selected(lake, options.dry_run, false, |metadata| {
        let snapshots: Vec<(i64, i64)> = metadata
            .snapshots()
            .map(|s| (s.snapshot_id(), s.timestamp_ms()))
            .collect();
        Ok(select_expired(
            &snapshots,
            metadata.current_snapshot_id(),
            offsets_snapshot(metadata),
            now_ms(),
            options,
        ))
    })
    .await?;
    sweep(&table, &root, &BTreeSet::new(), options, &mut report).await?;
    Ok(report)
}

/// Expires every snapshot that is not `keep_from` or committed on top of
/// it, and deletes at once every file only they referenced (other
/// unreferenced files only past `orphan_grace`): what an erase does after
/// its overwrite, so that no snapshot can read the erased rows again.
pub(crate) async fn expire_history_before(
    lake: &Lake,
    keep_from: i64,
    orphan_grace: Duration,
) -> Result<ExpireReport> {
    let root = check_listable(lake, &lake.load_table().await?)?;
    let (table, mut report, history) = expire_selected(lake, false, true, |metadata| {
        let mut keep = BTreeSet::new();
        let mut next = metadata.current_snapshot();
        while let Some(snapshot) = next {
            keep.insert(snapshot.snapshot_id());
            if snapshot.snapshot_id() == keep_from {
                return Ok(metadata
                    .snapshots()
                    .map(|s| s.snapshot_id())
                    .filter(|id| !keep.contains(id))
                    .collect());
            }
            next = snapshot
                .parent_snapshot_id()
                .and_then(|id| metadata.snapshot_by_id(id));
        }
        Err(Error::Layout(format!(
            "snapshot {keep_from} is not an ancestor of floe.events' current snapshot"
        )))
    })
    .await?;
    let options = ExpireOptions {
        older_than: Duration::ZERO,
        retain_last: 1,
        orphan_grace,
        dry_run: false,
    };
    let history: BTreeSet<PathBuf> = history.iter().filter_map(|p| local_path(p)).collect();
    sweep(&table, &root, &history, &options, &mut report).await?;
    Ok(report)
}

/// Removes the snapshots `select` names from the metadata (one swap,
/// retried against the new metadata). Returns the table after it, the
/// report so far and (with `history`) every file the expired snapshots
/// referenced.
async fn expire_selected(
    lake: &Lake,
    dry_run: bool,
    history: bool,
    select: impl Fn(&TableMetadata) -> Result<Vec<i64>>,
) -> Result<(Table, ExpireReport, BTreeSet<String>)> {
    let mut report = ExpireReport::default();
    let mut attempt = 0;
    // What expired snapshots referenced, gathered once per snapshot across
    // attempts (a snapshot's files never change). A superset is harmless:
    // only files no remaining snapshot references are ever deleted.
    let mut files = BTreeSet::new();
    let mut gathered = BTreeSet::new();
    loop {
        attempt += 1;
        let table = lake.load_table().await?;
        let metadata = table.metadata();
        let expired = select(metadata)?;
        for id in expired.iter().filter(|_| history) {
            if let Some(snapshot) = metadata.snapshot_by_id(*id)
                && gathered.insert(*id)
            {
                referenced_by(&table, snapshot, &mut files).await?;
            }
        }
        if expired.is_empty() || dry_run {
            report.live_snapshots = metadata.snapshots().len() - expired.len();
            report.expired_snapshots = expired;
            return Ok((table, report, files));
        }
        let before = expired
            .iter()
            .filter_map(|id| metadata.snapshot_by_id(*id))
            .map(|s| s.timestamp_ms())
            .max()
            .unwrap_or(0);
        let updates = vec![
            TableUpdate::RemoveSnapshots {
                snapshot_ids: expired.clone(),
            },
            TableUpdate::SetProperties {
                updates: [(
                    EXPIRED_BEFORE_PROPERTY.to_string(),
                    (before + 1).to_string(),
                )]
                .into(),
            },
        ];
        let requirements = [TableRequirement::UuidMatch {
            uuid: metadata.uuid(),
        }];
        match swap(lake, &table, "expire", updates, &requirements).await {
            Ok(_) => {
                let table = lake.load_table().await?;
                report.live_snapshots = table.metadata().snapshots().len();
                report.expired_snapshots = expired;
                return Ok((table, report, files));
            }
            // A commit landed in between (the sink's, most often): the same
            // snapshots are expired on top of it. A swap takes milliseconds,
            // so a small jittered pause keeps out of step with a periodic
            // committer.
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u8 % 8);
                tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes every file under `root` that no snapshot left in `table` (dry:
/// that no snapshot but the expired ones) references: files in `history`
/// at once, any other only once older than the grace period.
async fn sweep(
    table: &Table,
    root: &Path,
    history: &BTreeSet<PathBuf>,
    options: &ExpireOptions,
    report: &mut ExpireReport,
) -> Result<()> {
    let metadata = table.metadata();
    // Every file a remaining snapshot needs, plus the current metadata file.
    let mut referenced = BTreeSet::new();
    for snapshot in metadata.snapshots() {
        if options.dry_run && report.expired_snapshots.contains(&snapshot.snapshot_id()) {
            continue;
        }
        referenced_by(table, snapshot, &mut referenced).await?;
    }
    for statistics in metadata.statistics_iter() {
        referenced.insert(statistics.statistics_path.clone());
    }
    if let Some(location) = table.metadata_location() {
        referenced.insert(location.to_string());
    }
    let referenced: BTreeSet<PathBuf> = referenced.iter().filter_map(|p| local_path(p)).collect();
    let grace_start = SystemTime::now()
        .checked_sub(options.orphan_grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut files = Vec::new();
    list(root, &mut files)?;
    for (path, modified, bytes) in files {
        if referenced.contains(&path) {
            continue;
        }
        if modified > grace_start && !history.contains(&path) {
            report.kept_young += 1;
            continue;
        }
        if !options.dry_run {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("deleting an unreferenced lake file", path, e)),
            }
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let kind = &mut report.deleted;
        if name.ends_with(".parquet") {
            kind.data += 1;
        } else if name.ends_with(".avro") {
            kind.manifests += 1;
        } else if name.ends_with(".metadata.json") {
            kind.metadata += 1;
        } else {
            kind.other += 1;
        }
        kind.bytes += bytes;
        report.deleted_paths.push(path.display().to_string());
    }
    report.deleted_paths.sort();
    Ok(())
}

/// `file:///dir/x` -> `/dir/x` (`None` for other schemes).
fn local_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file:")?;
    let path = format!("/{}", rest.trim_start_matches('/'));
    Some(PathBuf::from(path))
}

/// Every file under `dir` with its modification time and size.
fn list(dir: &Path, into: &mut Vec<(PathBuf, SystemTime, u64)>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("listing the warehouse", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing the warehouse", dir, e))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("reading file metadata in the warehouse", path.clone(), e))?;
        if meta.is_dir() {
            list(&path, into)?;
        } else {
            let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
            into.push((path, modified, meta.len()));
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(older_than_ms: u64, retain_last: usize) -> ExpireOptions {
        ExpireOptions {
            older_than: Duration::from_millis(older_than_ms),
            retain_last,
            ..ExpireOptions::default()
        }
    }

    #[test]
    fn expires_old_snapshots_but_keeps_the_newest_the_current_and_the_offsets() {
        let snaps = [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)];
        // Cutoff 1000 - 650 = 350: 1, 2, 3 are old.
        assert_eq!(
            select_expired(&snaps, Some(5), Some(5), 1000, &options(650, 1)),
            vec![1, 2, 3]
        );
        // The newest 4 are kept whatever their age.
        assert_eq!(
            select_expired(&snaps, Some(5), Some(5), 1000, &options(650, 4)),
            vec![1]
        );
        // A current or offsets snapshot that is old is kept.
        assert_eq!(
            select_expired(&snaps, Some(5), Some(2), 1000, &options(650, 1)),
            vec![1, 3]
        );
        // Nothing is old enough.
        assert!(select_expired(&snaps, Some(5), Some(5), 1000, &options(10_000, 1)).is_empty());
        // retain_last 0 still keeps one.
        assert_eq!(
            select_expired(&snaps, None, None, 10_000, &options(0, 0)),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn file_uris_map_to_paths() {
        assert_eq!(
            local_path("file:///a/b.parquet"),
            Some(PathBuf::from("/a/b.parquet"))
        );
        assert_eq!(local_path("file:/a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(local_path("s3://b/k"), None);
    }
}
