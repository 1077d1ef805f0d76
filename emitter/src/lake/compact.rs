//! Compaction: the small data files of a partition merged into files of
//! about the target size, rows sorted by `key_hash`, in one `replace`
//! snapshot.
//!
//! The plan is a pure function of the live files ([`plan_compaction`]).
//! Two modes:
//! - **full** (`floe lake compact`): every partition with two or more small
//!   files has them merged (in groups of at most `max_input_bytes`);
//! - **tiered** (the background policy): small files are put in size tiers
//!   (`tier_base_bytes` x `min_files`^t), and a tier is merged once it holds
//!   `min_files` files. Each row is then rewritten about once per tier
//!   (log_min_files(target / commit size) times, ~4 at the defaults) instead
//!   of on every round, and a partition holds at most about
//!   `(min_files - 1)` files per tier plus its full-size files.

use std::collections::BTreeMap;
use std::sync::Arc;

use iceberg::spec::DataFile;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::files::live_data_files;
use super::rewrite::{MAINTENANCE_PROPERTY, RewriteFiles};
use crate::error::{Error, Result};
use crate::sink::DataWriter;
use crate::sink::Lake;
use crate::sink::batch_to_records;

/// How compaction chooses and writes files.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactOptions {
    /// Size of the files it writes (the sink's `target_file_bytes`).
    pub target_file_bytes: u64,
    /// Files at least this large are left alone.
    pub small_file_bytes: u64,
    /// Most bytes of input merged into one group (bounds memory: the group
    /// is decoded whole).
    pub max_input_bytes: u64,
    /// Most bytes of input one run rewrites (the rest waits for the next run).
    pub max_run_bytes: u64,
    /// Tiered mode: files per tier that trigger a merge (and the tier ratio).
    /// `None`: full mode.
    pub min_files: Option<usize>,
    /// Tiered mode: the upper bound of tier 0.
    pub tier_base_bytes: u64,
    /// zstd level of the written files.
    pub zstd_level: i32,
}

impl Default for CompactOptions {
    fn default() -> Self {
        let target = 128u64 << 20;
        CompactOptions {
            target_file_bytes: target,
            small_file_bytes: target / 2,
            max_input_bytes: target,
            max_run_bytes: 1 << 30,
            min_files: None,
            tier_base_bytes: 1 << 20,
            zstd_level: 1,
        }
    }
}

impl CompactOptions {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::LakeConfig(format!("compaction: {m}")));
        if self.target_file_bytes < 1024 {
            return bad("target file size must be at least 1024 bytes");
        }
        if self.small_file_bytes == 0 || self.max_input_bytes == 0 || self.max_run_bytes == 0 {
            return bad("small file size and input limits must be positive");
        }
        if self.min_files.is_some_and(|n| n < 2) {
            return bad("min_files must be at least 2");
        }
        if self.tier_base_bytes == 0 {
            return bad("tier base must be positive");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad("zstd level must be within 1..=22");
        }
        Ok(())
    }
}

/// A live data file as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFiles {
    /// The partition (its values, printed): files of different partitions
    /// are never merged.
    pub partition: String,
    /// The file.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// Groups of files (indexes into `files`) to merge, each within one
/// partition, each of two files or more. Pure: the same files and options
/// always give the same plan.
pub fn plan_compaction(files: &[PartitionFiles], options: &CompactOptions) -> Vec<Vec<usize>> {
    // (partition, tier) -> small files, in path order (names are UUID v7, so
    // that is write order).
    let mut buckets: BTreeMap<(&str, u32), Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.bytes >= options.small_file_bytes {
            continue;
        }
        let tier = match options.min_files {
            Some(fanout) => tier_of(f.bytes, options.tier_base_bytes, fanout as u64),
            None => 0,
        };
        buckets.entry((&f.partition, tier)).or_default().push(i);
    }
    let threshold = options.min_files.unwrap_or(2);
    let mut groups = Vec::new();
    let mut run = 0u64;
    for (_, mut members) in buckets {
        if members.len() < threshold {
            continue;
        }
        members.sort_by(|&a, &b| files[a].path.cmp(&files[b].path));
        let mut group: Vec<usize> = Vec::new();
        let mut bytes = 0;
        for i in members {
            if !group.is_empty() && bytes + files[i].bytes > options.max_input_bytes {
                if group.len() >= 2 {
                    groups.push(std::mem::take(&mut group));
                }
                group.clear();
                bytes = 0;
            }
            group.push(i);
            bytes += files[i].bytes;
        }
        if group.len() >= 2 {
            groups.push(group);
        }
    }
    // Bound the run; smaller partitions' groups first is not needed: the plan
    // order is (partition, tier), stable across runs.
    groups.retain(|g| {
        let bytes: u64 = g.iter().map(|&i| files[i].bytes).sum();
        if run > 0 && run + bytes > options.max_run_bytes {
            return false;
        }
        run += bytes;
        true
    });
    groups
}

/// Tier t holds sizes in [base * fanout^(t-1), base * fanout^t).
fn tier_of(bytes: u64, base: u64, fanout: u64) -> u32 {
    let mut tier = 0;
    let mut bound = base;
    while bytes >= bound {
        tier += 1;
        bound = bound.saturating_mul(fanout.max(2));
    }
    tier
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The replace snapshot (`None`: nothing needed compacting).
    pub snapshot_id: Option<i64>,
    /// Groups merged.
    pub groups: usize,
    /// Files removed.
    pub removed_files: usize,
    /// Files written.
    pub added_files: usize,
    /// Rows rewritten (the same number removed and added).
    pub rows: u64,
    /// Bytes of the removed files.
    pub removed_bytes: u64,
    /// Bytes of the written files.
    pub added_bytes: u64,
    /// Live data files before and after.
    pub files_before: usize,
    /// Live data files after.
    pub files_after: usize,
    /// Commit attempts (more than one: it raced the sink).
    pub attempts: u32,
    /// Lost races answered by a rebase on the new snapshot (the others
    /// were planned again).
    pub rebases: u32,
}

/// Compacts the current snapshot of `floe.events` in one replace commit.
pub async fn compact(lake: &Lake, options: &CompactOptions) -> Result<CompactReport> {
    options.validate()?;
    let table = lake.load_table().await?;
    let Some(snapshot) = table.metadata().current_snapshot().cloned() else {
        return Ok(CompactReport::default());
    };
    let live = live_data_files(&table, &snapshot).await?;
    let described: Vec<PartitionFiles> = live
        .iter()
        .map(|f| PartitionFiles {
            // One partition spec (the sink refuses others), so values identify it.
            partition: format!("{:?}", f.partition()),
            path: f.file_path().to_string(),
            bytes: f.file_size_in_bytes(),
        })
        .collect();
    let groups = plan_compaction(&described, options);
    let mut report = CompactReport {
        files_before: live.len(),
        files_after: live.len(),
        ..CompactReport::default()
    };
    if groups.is_empty() {
        return Ok(report);
    }
    let writer = DataWriter::new(
        &table,
        options.target_file_bytes as usize,
        options.zstd_level,
    )?;
    let mut rewrite = RewriteFiles::replace();
    rewrite.set(MAINTENANCE_PROPERTY, "compact");
    let mut written: Vec<DataFile> = Vec::new();
    let merged = async {
        for group in &groups {
            let inputs: Vec<&DataFile> = group.iter().map(|&i| &live[i]).collect();
            let records = read_files(&table, &inputs).await?;
            let rows = records.len() as u64;
            let outputs = writer.write(records).await?;
            written.extend(outputs.iter().cloned());
            let out_rows: u64 = outputs.iter().map(DataFile::record_count).sum();
            let in_rows: u64 = inputs.iter().map(|f| f.record_count()).sum();
            if out_rows != rows || in_rows != rows {
                return Err(Error::RowsChanged {
                    removed: in_rows,
                    added: out_rows,
                });
            }
            if let Some(bad) = outputs
                .iter()
                .find(|o| o.partition() != inputs[0].partition())
            {
                return Err(Error::Layout(format!(
                    "compacted file {} landed in partition {:?}, its inputs are in {:?}",
                    bad.file_path(),
                    bad.partition(),
                    inputs[0].partition()
                )));
            }
            for input in &inputs {
                rewrite.delete_file(input.file_path());
                report.removed_bytes += input.file_size_in_bytes();
            }
            for output in outputs {
                report.added_bytes += output.file_size_in_bytes();
                rewrite.add_file(output);
            }
            report.rows += rows;
        }
        rewrite.commit(lake).await
    }
    .await;
    match merged {
        Ok(committed) => {
            report.snapshot_id = Some(committed.snapshot_id);
            report.groups = groups.len();
            report.removed_files = committed.removed_files;
            report.added_files = committed.added_files;
            report.files_after = live.len() - committed.removed_files + committed.added_files;
            report.attempts = committed.attempts;
            report.rebases = committed.rebases;
            Ok(report)
        }
        Err(e) => {
            // Nothing references the files this run wrote.
            for file in &written {
                let _ = table.file_io().delete(file.file_path()).await;
            }
            Err(e)
        }
    }
}

/// Reads the rows of `files` (Parquet, decoded on a blocking thread).
pub(super) async fn read_files(
    table: &iceberg::table::Table,
    files: &[&DataFile],
) -> Result<Vec<floe_engine::Record>> {
    let mut contents = Vec::with_capacity(files.len());
    for file in files {
        let bytes = table
            .file_io()
            .new_input(file.file_path())
            .map_err(|e| Error::iceberg("opening a data file", e))?
            .read()
            .await
            .map_err(|e| Error::iceberg("reading a data file", e))?;
        contents.push((file.file_path().to_string(), bytes));
    }
    let contents = Arc::new(contents);
    tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        for (path, bytes) in contents.iter() {
            let parquet = |e: parquet::errors::ParquetError| {
                Error::Layout(format!("data file {path} is not readable Parquet: {e}"))
            };
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .map_err(parquet)?
                .with_batch_size(8192)
                .build()
                .map_err(parquet)?;
            for batch in reader {
                let batch = batch.map_err(|e| Error::Arrow {
                    context: "decoding a data file",
                    cause: e,
                })?;
                records.extend(batch_to_records(&batch)?);
            }
        }
        Ok(records)
    })
    .await
    .map_err(|e| Error::Task(format!("a compaction reader failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(partition: &str, n: usize, bytes: u64) -> PartitionFiles {
        PartitionFiles {
            partition: partition.into(),
            path: format!("p/{partition}/{n:04}"),
            bytes,
        }
    }

    fn options(min_files: Option<usize>) -> CompactOptions {
        CompactOptions {
            target_file_bytes: 1000,
            small_file_bytes: 750,
            max_input_bytes: 1000,
            max_run_bytes: 1 << 30,
            min_files,
            tier_base_bytes: 10,
            zstd_level: 1,
        }
    }

    #[test]
    fn full_mode_merges_small_files_per_partition_within_the_input_bound() {
        let mut files: Vec<_> = (0..7).map(|n| file("a", n, 300)).collect();
        files.push(file("a", 99, 800)); // large: left alone
        files.push(file("b", 0, 100)); // alone in its partition
        let groups = plan_compaction(&files, &options(None));
        // 300 x 7 in groups of at most 1000 bytes: 3 + 3, and the 7th alone stays.
        assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn tiered_mode_waits_for_min_files_of_a_tier() {
        let files: Vec<_> = (0..3).map(|n| file("a", n, 5)).collect();
        assert!(plan_compaction(&files, &options(Some(4))).is_empty());
        let mut files: Vec<_> = (0..4).map(|n| file("a", n, 5)).collect();
        // Tier 1 ([10, 40)): not yet 4 of them.
        files.extend((10..12).map(|n| file("a", n, 30)));
        assert_eq!(
            plan_compaction(&files, &options(Some(4))),
            vec![vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn tiers_grow_by_the_fanout() {
        assert_eq!(tier_of(9, 10, 4), 0);
        assert_eq!(tier_of(10, 10, 4), 1);
        assert_eq!(tier_of(39, 10, 4), 1);
        assert_eq!(tier_of(40, 10, 4), 2);
    }

    /// One simulated day of one partition: a commit every 10 s adds a file
    /// of `commit_bytes`, the policy runs every 60 s (defaults otherwise);
    /// merged groups become one file of their total size. Returns the most
    /// live small files seen and the write amplification.
    pub(crate) fn simulate_day(commit_bytes: u64) -> (usize, usize, f64) {
        let options = CompactOptions {
            min_files: Some(8),
            ..CompactOptions::default()
        };
        let mut files: Vec<PartitionFiles> = Vec::new();
        let (mut written, mut rewritten, mut most, mut n) = (0u64, 0u64, 0usize, 0usize);
        for commit in 0..8_640 {
            files.push(file("p", n, commit_bytes));
            n += 1;
            written += commit_bytes;
            if commit % 6 == 5 {
                let groups = plan_compaction(&files, &options);
                let mut merged = Vec::new();
                for group in &groups {
                    let bytes: u64 = group.iter().map(|&i| files[i].bytes).sum();
                    rewritten += bytes;
                    merged.push(bytes);
                }
                let gone: std::collections::BTreeSet<usize> =
                    groups.into_iter().flatten().collect();
                let mut kept: Vec<_> = files
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !gone.contains(i))
                    .map(|(_, f)| f)
                    .collect();
                for bytes in merged {
                    kept.push(file("p", n, bytes));
                    n += 1;
                }
                files = kept;
            }
            let small = files
                .iter()
                .filter(|f| f.bytes < options.small_file_bytes)
                .count();
            most = most.max(small);
        }
        (
            most,
            files.len(),
            (written + rewritten) as f64 / written as f64,
        )
    }

    #[test]
    fn a_simulated_day_keeps_small_files_per_partition_bounded() {
        // 62 KB a commit (1,000 events/s over 16 buckets), 640 KB (10,000/s), 6.4 MB (100,000/s).
        for commit_bytes in [62_000, 640_000, 6_400_000] {
            let (most, live, amplification) = simulate_day(commit_bytes);
            eprintln!(
                "{commit_bytes} B/commit: at most {most} small files, {live} live at the end, write amplification {amplification:.2}"
            );
            // Bound: (min_files - 1) per tier over 4 tiers, plus the commits
            // that arrive between two rounds.
            assert!(most <= 3 * 7 + 6, "{commit_bytes}: {most}");
            assert!(amplification < 6.0, "{commit_bytes}: {amplification}");
        }
    }

    #[test]
    fn a_run_is_bounded_but_always_makes_progress() {
        let files: Vec<_> = (0..4).map(|n| file("a", n, 400)).collect();
        let mut o = options(None);
        o.max_run_bytes = 100;
        assert_eq!(plan_compaction(&files, &o).len(), 1);
    }
}
