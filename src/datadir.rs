//! The data directory: an exclusive lock and the persisted topology document.
//!
//! `topology.json` is the only record of which shard owns which key. A
//! directory without it is new only if nothing else holds history: if the
//! pipeline has events, the lake has landed some, or migrations were run,
//! the file was lost, and starting from the configured topology would
//! silently re-route every entity (and undo the migrations). Such a
//! directory is refused ([`Error::TopologyMissing`]) rather than guessed at.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use floe_emitter::sink::Lake;
use floe_engine::{Pipeline, Topology};

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

/// What shows that `dir` has history although its topology document is
/// missing: each item names one witness (migration records, pipeline events,
/// landed events). Empty: the directory is new.
///
/// Only what belongs to this directory counts: the embedded log (a Kafka
/// topic is shared, and a new directory on an existing topic is how a node
/// rebuilds its state from it) and a SQLite catalog inside the directory (a
/// shared catalog holds other directories' events).
pub(crate) async fn history_without_topology(
    config: &floe_config::Config,
    pipeline: &dyn Pipeline,
    lake: Option<&Lake>,
) -> Result<Vec<String>> {
    let dir = config.data_dir.as_path();
    let local_pipeline = matches!(config.pipeline_url()?, floe_config::PipelineUrl::File(_));
    let data_dir = std::path::absolute(dir)
        .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    let lake = lake.filter(|lake| {
        matches!(&lake.location().catalog,
            floe_emitter::sink::CatalogUrl::Sqlite(path) if path.starts_with(&data_dir))
    });
    let mut evidence = Vec::new();
    let jobs_dir = dir.join(crate::migrate::JOBS_DIR);
    let jobs = floe_migration::JobStore::new(&jobs_dir)
        .list()
        .map_err(Error::Migration)?;
    if let Some(last) = jobs.iter().max_by_key(|job| job.started_at_ms) {
        evidence.push(format!(
            "{} migration record(s) in {}, the last ({}) {} topology version {} -> {} ({} -> {} shards)",
            jobs.len(),
            jobs_dir.display(),
            last.id,
            match last.status {
                floe_migration::JobStatus::Completed => "completed",
                floe_migration::JobStatus::RolledBack => "rolled back",
                floe_migration::JobStatus::Running => "was running",
            },
            last.from.version,
            last.to.version,
            last.from.shard_count,
            last.to.shard_count,
        ));
    }
    let mut events = 0u64;
    for partition in 0..pipeline.partitions() {
        if !local_pipeline {
            break;
        }
        events += pipeline.high_watermark(partition).await?;
    }
    if events > 0 {
        evidence.push(format!(
            "the pipeline holds {events} events (the sum of its partitions' high watermarks)"
        ));
    }
    if let Some(lake) = lake {
        let table = lake.load_table().await.map_err(Error::Lake)?;
        if let Some(snapshot) = table.metadata().current_snapshot_id() {
            evidence.push(format!(
                "the lake's floe.events has landed events (snapshot {snapshot})"
            ));
        }
    }
    Ok(evidence)
}

/// The error for a directory whose topology document is gone.
pub(crate) fn topology_missing(dir: &Path, evidence: Vec<String>) -> Error {
    Error::TopologyMissing {
        path: topology_path(dir),
        evidence: evidence.join("; "),
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
