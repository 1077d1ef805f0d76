//! The migration job: its phases (a small state machine), its progress, and
//! the record persisted in the data directory so that `floe migrate status`
//! and `cancel` work from another process and a restart can settle it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use floe_engine::Topology;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{MigrationPlan, PlanKind};

/// Where a migration is. The happy path runs top to bottom; any phase
/// before `Cutover` completes can go to `RollingBack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Accepted, not started.
    Planned,
    /// Replaying the moving keys' history from the Iceberg lake.
    Copy,
    /// Replaying the pipeline's tail after the lake snapshot's offsets.
    CatchUp,
    /// Holding new writes to moving keys; the last catch-up runs.
    Buffer,
    /// Comparing source and target digests of the moved entities.
    Verify,
    /// Archival: writes to the period are refused; waiting for the sink to
    /// land every event written before in the lake.
    Land,
    /// Reactivation: an archived period's entities are replayed from the
    /// lake into its shard (writes to it are still refused).
    Restore,
    /// Dropping a period: its rows are erased from the lake.
    Erase,
    /// Persisting the new topology and switching routing.
    Cutover,
    /// Letting the held writes go to their new owners.
    Drain,
    /// Removing the moved entities from their old owners.
    Cleanup,
    /// Finished.
    Done,
    /// Undoing: old topology, held writes to the old owners, copies dropped.
    RollingBack,
}

impl Phase {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Copy => "copy",
            Phase::CatchUp => "catch_up",
            Phase::Buffer => "buffer",
            Phase::Verify => "verify",
            Phase::Land => "land",
            Phase::Restore => "restore",
            Phase::Erase => "erase",
            Phase::Cutover => "cutover",
            Phase::Drain => "drain",
            Phase::Cleanup => "cleanup",
            Phase::Done => "done",
            Phase::RollingBack => "rolling_back",
        }
    }

    /// Whether `next` may follow this phase.
    pub fn can_go_to(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Planned, Copy)
                | (Copy, CatchUp)
                | (CatchUp, Buffer)
                | (Buffer, Verify)
                | (Verify, Cutover)
                | (Cutover, Drain)
                | (Drain, Cleanup)
                | (Cleanup, Done)
                | (Planned, Land)
                | (Land, Cutover)
                | (Planned, Restore)
                | (Restore, Cutover)
                | (Planned, Erase)
                | (Erase, Cutover)
                | (
                    Planned | Copy | CatchUp | Buffer | Verify | Land | Restore | Erase | Cutover,
                    RollingBack
                )
        )
    }

    /// Whether the new topology is (or may be) in force: from here on the
    /// migration finishes forward, it is not rolled back.
    pub fn past_cutover(self) -> bool {
        matches!(self, Phase::Drain | Phase::Cleanup | Phase::Done)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a migration ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Running.
    Running,
    /// The new topology is in force.
    Completed,
    /// The old topology is in force; nothing moved.
    RolledBack,
}

/// Progress of a running migration (seed 004's `onProgress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The phase.
    pub phase: Option<Phase>,
    /// Events applied to targets (lake and pipeline).
    pub events_processed: u64,
    /// Events expected (the plan's estimate; grows with catch-up).
    pub events_total: u64,
    /// Known moving keys seen so far.
    pub keys_processed: u64,
    /// Known moving keys.
    pub keys_total: u64,
    /// Milliseconds since start.
    pub elapsed_ms: u64,
    /// Bytes read from the lake.
    pub bytes_read: u64,
    /// Rows scanned in the lake (matching or not).
    pub rows_scanned: u64,
    /// Events read from the pipeline's tail.
    pub tail_events: u64,
    /// Writes held by the buffer so far.
    pub buffered_writes: u64,
    /// Longest a write was held, in microseconds.
    pub max_write_pause_us: u64,
}

/// The persisted record of a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationJob {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: PlanKind,
    /// The topology before.
    pub from: Topology,
    /// The topology after.
    pub to: Topology,
    /// Running, completed or rolled back.
    pub status: JobStatus,
    /// The last phase entered.
    pub phase: Phase,
    /// Progress at the last update.
    pub progress: Progress,
    /// Why it rolled back.
    pub error: Option<String>,
    /// Known moving keys.
    pub moving_keys: u64,
    /// Start, ms since the epoch.
    pub started_at_ms: u64,
    /// End, ms since the epoch.
    pub finished_at_ms: Option<u64>,
    /// Set when a restart settled a job its process left running.
    #[serde(default)]
    pub settled_after_restart: bool,
    /// Archivals: records (live entities and tombstones) that left shard
    /// memory.
    #[serde(default)]
    pub evicted: u64,
}

impl MigrationJob {
    /// The record of migration `id` of `plan`, running from now on in
    /// `phase`.
    pub fn start(id: String, plan: &MigrationPlan, phase: Phase) -> Self {
        MigrationJob {
            id,
            kind: plan.kind.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            status: JobStatus::Running,
            phase,
            progress: Progress {
                phase: Some(phase),
                events_total: plan.estimated_events,
                keys_total: plan.moves.len() as u64,
                ..Progress::default()
            },
            error: None,
            moving_keys: plan.moves.len() as u64,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            settled_after_restart: false,
            evicted: 0,
        }
    }

    /// Settles a job whose process stopped while it ran, from the topology
    /// the data directory now holds. Recovery rebuilds every shard from the
    /// pipeline under that one topology, so each key has exactly one owner
    /// whatever phase the job was in: if the new topology was persisted the
    /// migration is complete, otherwise it is rolled back. Returns whether
    /// the job changed.
    pub fn settle_after_restart(&mut self, persisted: &Topology) -> bool {
        if self.status != JobStatus::Running {
            return false;
        }
        let (status, note) = if persisted.version >= self.to.version
            && persisted.shard_count == self.to.shard_count
            && persisted.overrides == self.to.overrides
        {
            (
                JobStatus::Completed,
                "the process stopped after the cutover; the restart recovered every key on its new owner",
            )
        } else {
            (
                JobStatus::RolledBack,
                "the process stopped before the cutover; the restart recovered every key on its old owner",
            )
        };
        self.status = status;
        self.error = Some(note.into());
        self.finished_at_ms = Some(now_ms());
        self.settled_after_restart = true;
        true
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The job files of a data directory: `DIR/<id>.json` (atomically replaced
/// on every update) and `DIR/<id>.cancel` (a request from another process).
#[derive(Debug, Clone)]
pub struct JobStore {
    dir: PathBuf,
}

impl JobStore {
    /// The store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JobStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    /// Replaces the job's file atomically (temporary file, rename), without
    /// fsync: the record is informational (status, progress), and what a
    /// restart settles a job by is the topology file, which is fsync'd.
    pub fn save(&self, job: &MigrationJob) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::job(&self.dir, e))?;
        let path = self.path(&job.id, "json");
        let tmp = self.path(&job.id, "json.tmp");
        let text = serde_json::to_string_pretty(job).map_err(|e| Error::job(&path, e))?;
        let mut file = File::create(&tmp).map_err(|e| Error::job(&tmp, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::job(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::job(&path, e))?;
        Ok(())
    }

    /// One job.
    pub fn load(&self, id: &str) -> Result<MigrationJob> {
        let path = self.path(id, "json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.into()));
            }
            Err(e) => return Err(Error::job(&path, e)),
        };
        serde_json::from_str(&text).map_err(|e| Error::job(&path, e))
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Result<Vec<MigrationJob>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::job(&self.dir, e)),
        };
        let mut jobs = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::job(&self.dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(id) = path.file_stem().and_then(|s| s.to_str())
            {
                jobs.push(self.load(id)?);
            }
        }
        jobs.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(jobs)
    }

    /// Asks the process running `id` to cancel it (it polls for the file).
    pub fn request_cancel(&self, id: &str) -> Result<()> {
        let job = self.load(id)?;
        if job.status != JobStatus::Running {
            return Err(Error::InvalidPlan(format!(
                "migration {id} is not running ({:?})",
                job.status
            )));
        }
        let path = self.path(id, "cancel");
        std::fs::write(&path, b"cancel").map_err(|e| Error::job(&path, e))
    }

    /// Whether another process asked to cancel `id`.
    pub fn cancel_requested(&self, id: &str) -> bool {
        self.path(id, "cancel").exists()
    }

    /// Removes a cancel request (once the job has ended).
    pub fn clear_cancel(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id, "cancel"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::{HashFunction, Strategy};

    fn job(id: &str) -> MigrationJob {
        let from = Topology::new(4, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
        let to = from.with_shard_count(5).unwrap();
        MigrationJob {
            id: id.into(),
            kind: PlanKind::AddShard {},
            from,
            to,
            status: JobStatus::Running,
            phase: Phase::Copy,
            progress: Progress::default(),
            error: None,
            moving_keys: 3,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            settled_after_restart: false,
            evicted: 0,
        }
    }

    #[test]
    fn phases_follow_the_machine() {
        use Phase::*;
        let path = [
            Planned, Copy, CatchUp, Buffer, Verify, Cutover, Drain, Cleanup, Done,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_go_to(w[1]), "{} -> {}", w[0], w[1]);
        }
        assert!(!Copy.can_go_to(Cutover));
        // Archival and reactivation have paths of their own.
        for path in [
            [Planned, Land, Cutover, Drain, Cleanup, Done],
            [Planned, Restore, Cutover, Drain, Cleanup, Done],
            [Planned, Erase, Cutover, Drain, Cleanup, Done],
        ] {
            for w in path.windows(2) {
                assert!(w[0].can_go_to(w[1]), "{} -> {}", w[0], w[1]);
            }
        }
        assert!(Land.can_go_to(RollingBack) && Restore.can_go_to(RollingBack));
        assert!(!Land.can_go_to(Copy) && !Restore.can_go_to(Buffer));
        assert!(Buffer.can_go_to(RollingBack));
        assert!(
            !Drain.can_go_to(RollingBack),
            "after the cutover a migration finishes forward"
        );
        assert!(Drain.past_cutover() && !Cutover.past_cutover());
    }

    #[test]
    fn store_roundtrips_lists_and_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path().join("migrations"));
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(store.load("nope"), Err(Error::NotFound(_))));
        let a = job("a");
        store.save(&a).unwrap();
        assert_eq!(store.load("a").unwrap(), a);
        assert!(!store.cancel_requested("a"));
        store.request_cancel("a").unwrap();
        assert!(store.cancel_requested("a"));
        store.clear_cancel("a");
        assert!(!store.cancel_requested("a"));
        let mut b = job("b");
        b.status = JobStatus::Completed;
        store.save(&b).unwrap();
        assert!(store.request_cancel("b").is_err());
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn a_restart_settles_by_the_persisted_topology() {
        let mut before = job("x");
        assert!(before.settle_after_restart(&before.from.clone()));
        assert_eq!(before.status, JobStatus::RolledBack);
        assert!(
            !before.settle_after_restart(&before.from.clone()),
            "settled once"
        );
        let mut after = job("y");
        assert!(after.settle_after_restart(&after.to.clone()));
        assert_eq!(after.status, JobStatus::Completed);
        assert!(after.settled_after_restart);
    }
}
