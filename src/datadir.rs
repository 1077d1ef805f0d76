//! The data directory: an exclusive lock and the persisted topology document.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use floe_engine::Topology;

use crate::error::{Error, Result};

const LOCK_FILE: &str = "floe.lock";
const TOPOLOGY_FILE: &str = "topology.json";

/// Holds the data directory's lock for as long as it lives. The OS releases
/// the lock when the process dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating data directory {}", dir.display()), e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
        file.set_len(0)
            .and_then(|_| write!(file, "pid {}", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(DirLock { _file: file })
    }
}

fn topology_path(dir: &Path) -> PathBuf {
    dir.join(TOPOLOGY_FILE)
}

/// The persisted topology, if the directory has one.
pub(crate) fn load_topology(dir: &Path) -> Result<Option<Topology>> {
    let path = topology_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(Topology::from_json(&text)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// Persists the topology atomically: write a temporary file, fsync it, rename
/// it over the old one, fsync the directory. A crash leaves the old or the new
/// document, never a mix.
pub(crate) fn store_topology(dir: &Path, topology: &Topology) -> Result<()> {
    let path = topology_path(dir);
    let tmp = dir.join(format!("{TOPOLOGY_FILE}.tmp"));
    let context = |what: &str| format!("{what} {}", tmp.display());
    let mut file = File::create(&tmp).map_err(|e| Error::io(context("creating"), e))?;
    file.write_all(topology.to_json().as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(context("writing"), e))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::io(format!("renaming over {}", path.display()), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))?;
    Ok(())
}

/// The topology store of a data directory: `DATA/topology.json`, replaced
/// atomically (see [`store_topology`]).
#[derive(Debug, Clone)]
pub(crate) struct FileTopologyStore {
    dir: PathBuf,
}

impl FileTopologyStore {
    pub(crate) fn new(dir: &Path) -> Self {
        FileTopologyStore {
            dir: dir.to_path_buf(),
        }
    }
}

/// The engine's error for a failure of the file store.
fn engine_error(e: Error) -> floe_engine::Error {
    match e {
        Error::Engine(e) => e,
        Error::Io { context, cause } => floe_engine::Error::Io { context, cause },
        other => floe_engine::Error::InvalidTopology(other.to_string()),
    }
}

#[async_trait::async_trait]
impl floe_engine::TopologyStore for FileTopologyStore {
    async fn load(&self) -> floe_engine::Result<Option<Topology>> {
        load_topology(&self.dir).map_err(engine_error)
    }

    async fn store(&self, topology: &Topology) -> floe_engine::Result<()> {
        store_topology(&self.dir, topology).map_err(engine_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }));
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        drop(lock);
        DirLock::acquire(dir.path()).unwrap();
    }
}
