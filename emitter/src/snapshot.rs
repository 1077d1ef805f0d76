//! Shard snapshot files in a data directory: written atomically, listed
//! newest first, pruned, and removed when what they hold must go (erase,
//! repair).
//!
//! Layout: `snapshots/shard-00007/00000000000000000042.snap`, one directory
//! per shard, files named by a sequence number that grows per shard. A
//! snapshot is written to a `.tmp` file, fsync'd, renamed into place and
//! the directory fsync'd: after a crash a file is either complete or absent
//! (and a torn one would fail its checksum anyway). Leftover `.tmp` files
//! are removed on the next write.
//!
//! Every call blocks: call it from `spawn_blocking` in async code.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory under a data directory holding shard snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";

const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// The snapshot files of one data directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

/// One snapshot file of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its sequence number within the shard (higher is newer).
    pub seq: u64,
    /// Its path.
    pub path: PathBuf,
}

impl SnapshotStore {
    /// The store under `data_dir` (nothing is created until a write).
    pub fn new(data_dir: &Path) -> Self {
        SnapshotStore {
            dir: data_dir.join(SNAPSHOTS_DIR),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn shard_dir(&self, shard: u32) -> PathBuf {
        self.dir.join(format!("shard-{shard:05}"))
    }

    /// The snapshots of `shard`, newest first (none when there are none).
    pub fn list(&self, shard: u32) -> Result<Vec<SnapshotFile>> {
        let dir = self.shard_dir(shard);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(cause) => return Err(io_error("listing snapshots", &dir, cause)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|cause| io_error("listing snapshots", &dir, cause))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            files.push(SnapshotFile {
                seq,
                path: entry.path(),
            });
        }
        files.sort_by_key(|b| std::cmp::Reverse(b.seq));
        Ok(files)
    }

    /// Writes `bytes` as the newest snapshot of `shard`, atomically (temp
    /// file, fsync, rename, fsync of the directory), then keeps only the
    /// `keep` newest. Returns the new file.
    pub fn write(&self, shard: u32, bytes: &[u8], keep: usize) -> Result<SnapshotFile> {
        let dir = self.shard_dir(shard);
        if !dir.exists() {
            fs::create_dir_all(&dir)
                .map_err(|cause| io_error("creating the snapshot directory", &dir, cause))?;
            sync_dir(&self.dir)?;
        }
        self.remove_temps(&dir)?;
        let seq = self.list(shard)?.first().map_or(1, |f| f.seq + 1);
        let name = format!("{seq:020}");
        let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        let path = dir.join(format!("{name}{SUFFIX}"));
        let mut file = File::create(&temp)
            .map_err(|cause| io_error("creating a snapshot file", &temp, cause))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|cause| io_error("writing a snapshot file", &temp, cause))?;
        drop(file);
        fs::rename(&temp, &path)
            .map_err(|cause| io_error("renaming a snapshot file", &path, cause))?;
        sync_dir(&dir)?;
        for old in self.list(shard)?.into_iter().skip(keep.max(1)) {
            remove_file(&old.path)?;
        }
        sync_dir(&dir)?;
        Ok(SnapshotFile { seq, path })
    }

    /// Removes every snapshot of every shard (what they hold must not come
    /// back: an erased entity, a log rebuilt by repair). Returns how many
    /// files went.
    pub fn remove_all(&self) -> Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(cause) => return Err(io_error("listing snapshots", &self.dir, cause)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|cause| io_error("listing snapshots", &self.dir, cause))?;
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            for file in
                fs::read_dir(&dir).map_err(|cause| io_error("listing snapshots", &dir, cause))?
            {
                let file = file.map_err(|cause| io_error("listing snapshots", &dir, cause))?;
                remove_file(&file.path())?;
                removed += 1;
            }
            sync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Removes the snapshot directories of shards `shard_count` and above
    /// (shards a merge removed).
    pub fn remove_shards_from(&self, shard_count: u32) -> Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(cause) => return Err(io_error("listing snapshots", &self.dir, cause)),
        };
        for entry in entries.flatten() {
            let shard = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("shard-"))
                .and_then(|n| n.parse::<u32>().ok());
            if shard.is_some_and(|s| s >= shard_count) {
                fs::remove_dir_all(entry.path()).map_err(|cause| {
                    io_error("removing a shard's snapshots", &entry.path(), cause)
                })?;
            }
        }
        sync_dir(&self.dir)
    }

    fn remove_temps(&self, dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(|cause| io_error("listing snapshots", dir, cause))? {
            let entry = entry.map_err(|cause| io_error("listing snapshots", dir, cause))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
            {
                remove_file(&entry.path())?;
            }
        }
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(cause) => Err(io_error("removing a snapshot file", path, cause)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|cause| io_error("syncing the snapshot directory", dir, cause))
}

fn io_error(context: &'static str, path: &Path, cause: io::Error) -> Error {
    Error::Io {
        context,
        path: path.to_path_buf(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_numbered_listed_newest_first_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        assert!(store.list(3).unwrap().is_empty());
        for i in 0..4u8 {
            store.write(3, &[i], 2).unwrap();
        }
        let files = store.list(3).unwrap();
        assert_eq!(files.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![4, 3]);
        assert_eq!(fs::read(&files[0].path).unwrap(), vec![3]);
        // A temp file left by a crash is ignored, then removed.
        let temp = store.shard_dir(3).join(format!("{:020}{TEMP_SUFFIX}", 9));
        fs::write(&temp, b"torn").unwrap();
        assert_eq!(store.list(3).unwrap().len(), 2);
        store.write(3, &[9], 2).unwrap();
        assert!(!temp.exists());
        store.write(5, &[1], 2).unwrap();
        store.remove_shards_from(4).unwrap();
        assert!(store.list(5).unwrap().is_empty());
        assert_eq!(store.remove_all().unwrap(), 2);
        assert!(store.list(3).unwrap().is_empty());
    }
}
