//! The log directory on open: the lock, the meta file that fixes the partition
//! count, the partition directories and recovery of their segments.
//!
//! ```text
//! dir/floe-log.lock                      held (flock) while the log is open
//! dir/floe-log.meta                      format and partition count
//! dir/p-0000/00000000000000000000.seg    segments, named by base offset
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;

use super::gaps;
use super::segment::{self, Segment};
use crate::error::{Error, Result};

pub(super) const META_FILE: &str = "floe-log.meta";
const LOCK_FILE: &str = "floe-log.lock";
const META_FORMAT: u32 = 1;

/// An opened log directory.
#[derive(Debug)]
pub(super) struct Store {
    /// Holds the directory's lock until dropped.
    pub(super) lock: File,
    /// Each partition's segments in offset order, the last one active.
    pub(super) partitions: Vec<Vec<Segment>>,
}

/// The directory of one partition.
pub(super) fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("p-{partition:04}"))
}

/// Locks `dir` (creating it), checks or writes its meta file and recovers
/// every partition, several partitions at a time.
pub(super) fn open(dir: &Path, partitions: u32) -> Result<Store> {
    let lock = lock(dir)?;
    check_meta(dir, partitions)?;

    let threads = thread::available_parallelism()
        .map_or(1, usize::from)
        .min(partitions as usize);
    let mut results: Vec<Option<Result<Vec<Segment>>>> = (0..partitions).map(|_| None).collect();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..partitions as usize)
                        .step_by(threads)
                        .map(|p| (p, open_partition(dir, p as u32)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (p, result) in worker.join().expect("partition recovery panicked") {
                results[p] = Some(result);
            }
        }
    });
    let partitions = results
        .into_iter()
        .map(|r| r.expect("every partition was recovered"))
        .collect::<Result<_>>()?;
    // Makes new partition directories durable (one fsync per open).
    segment::sync_dir(dir)?;
    Ok(Store { lock, partitions })
}

/// Creates and locks the log directory; the lock is held while the returned
/// file lives (an open log, or a repair).
pub(super) fn lock(dir: &Path) -> Result<File> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating log directory", dir, e))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("opening lock file", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io("locking", &lock_path, e)),
    }
}

pub(super) fn check_meta(dir: &Path, partitions: u32) -> Result<()> {
    let path = dir.join(META_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let existing = parse_meta(&text).ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("not a floe log meta file: {text:?}"),
            })?;
            if existing != partitions {
                return Err(Error::PartitionMismatch {
                    dir: dir.to_path_buf(),
                    existing,
                    requested: partitions,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if partition_dir(dir, 0).exists() {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    reason: "the meta file is missing but partition directories exist".into(),
                });
            }
            write_meta(dir, &path, partitions)
        }
        Err(e) => Err(Error::io("reading meta file", &path, e)),
    }
}

fn parse_meta(text: &str) -> Option<u32> {
    let mut format = None;
    let mut partitions = None;
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.split_once('=')?;
        match key.trim() {
            "format" => format = value.trim().parse::<u32>().ok(),
            "partitions" => partitions = value.trim().parse::<u32>().ok(),
            _ => {}
        }
    }
    (format? == META_FORMAT && partitions? > 0).then_some(partitions?)
}

/// Writes the meta file atomically: temporary file, fsync, rename, fsync dir.
fn write_meta(dir: &Path, path: &Path, partitions: u32) -> Result<()> {
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let text = format!(
        "# floe embedded log; the partition count is fixed at creation\nformat = {META_FORMAT}\npartitions = {partitions}\n"
    );
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| Error::io("writing meta file", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming meta file into", path, e))?;
    segment::sync_dir(dir)
}

/// Where a repair builds a partition's new directory before swapping it in.
pub(super) fn repair_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("p-{partition:04}.repair"))
}

/// Written last into a complete [`repair_dir`].
pub(super) const REPAIRED_MARKER: &str = "REPAIRED";

/// The segment base offsets in a partition directory, ascending.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing partition", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing partition", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match segment::parse_file_name(&name) {
            Some(base) => bases.push(base),
            None if name.ends_with(".seg") => {
                return Err(Error::Corrupt {
                    path: entry.path(),
                    offset: 0,
                    reason: "a segment file name must be a 20-digit base offset".into(),
                });
            }
            None => {}
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Finishes a repair that stopped between moving the damaged directory
/// away and moving the repaired one in (the repaired one was complete and
/// synced before the first move).
pub(super) fn finish_interrupted_repair(log_dir: &Path, partition: u32, dir: &Path) -> Result<()> {
    let repaired = repair_dir(log_dir, partition);
    if !dir.exists() && repaired.join(REPAIRED_MARKER).exists() {
        tracing::warn!(partition, dir = %dir.display(), "finishing an interrupted repair");
        fs::rename(&repaired, dir)
            .map_err(|e| Error::io("moving the repaired partition into", dir, e))?;
        segment::sync_dir(log_dir)?;
    }
    Ok(())
}

/// Lists, checks and recovers one partition's segments; creates the first
/// segment of a new partition.
fn open_partition(log_dir: &Path, partition: u32) -> Result<Vec<Segment>> {
    let dir = &partition_dir(log_dir, partition);
    finish_interrupted_repair(log_dir, partition, dir)?;
    fs::create_dir_all(dir).map_err(|e| Error::io("creating partition directory", dir, e))?;
    let mut bases = list_segments(dir)?;
    if bases.is_empty() {
        segment::create(dir, 0)?;
        segment::sync_dir(dir)?;
        bases.push(0);
    }
    let gaps = gaps::read(dir)?;
    let last = bases.len() - 1;
    let segments = bases
        .iter()
        .enumerate()
        .map(|(i, &base)| {
            Segment::load(
                partition,
                dir.join(segment::file_name(base)),
                base,
                i == last,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for pair in segments.windows(2) {
        let (end, next) = (pair[0].end_offset(), pair[1].base);
        // Only a gap a repair declared may separate two segments: anything
        // else is a missing (or extra) segment file.
        if end != next && !gaps.contains(&(end..next)) {
            return Err(Error::Corrupt {
                path: pair[1].path.clone(),
                offset: 0,
                reason: format!(
                    "the segment starts at offset {next} but the one before it ends at offset {end} (partition {partition})"
                ),
            });
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_parses_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(META_FILE);
        write_meta(dir.path(), &path, 12).unwrap();
        assert_eq!(parse_meta(&fs::read_to_string(&path).unwrap()), Some(12));
        assert_eq!(parse_meta("format = 2\npartitions = 3\n"), None);
        assert_eq!(parse_meta("format = 1\npartitions = 0\n"), None);
        assert_eq!(parse_meta("garbage"), None);
    }
}
