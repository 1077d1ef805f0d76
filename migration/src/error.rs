//! The migration crate's one error type.

use std::path::PathBuf;

/// Result type of `floe-migration`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a migration could not be planned, run or recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another migration is moving some of the same keys (or any migration
    /// runs: floe runs one at a time).
    #[error(
        "partition key {key:?} is already migrating (migration {running}); wait for it to finish or cancel it"
    )]
    AlreadyMigrating {
        /// The running migration.
        running: String,
        /// One of the keys both would move (or `*` when the running one
        /// blocks every topology change).
        key: String,
    },

    /// The plan cannot run: it is stale, names unknown shards, or the
    /// strategy cannot make the change.
    #[error("invalid migration plan: {0}")]
    InvalidPlan(String),

    /// A plan names a shard the topology does not have.
    #[error(
        "invalid migration plan: shard {shard} does not exist (the topology has shards 0..{shard_count})"
    )]
    UnknownShard {
        /// The shard named.
        shard: u32,
        /// Shards in the topology.
        shard_count: u32,
    },

    /// A merge names the same shard twice.
    #[error("invalid migration plan: shard {shard} cannot be merged with itself")]
    MergeWithItself {
        /// The shard named twice.
        shard: u32,
    },

    /// The only shard of a topology cannot leave.
    #[error(
        "invalid migration plan: shard {shard} is the last one and cannot leave (a topology keeps at least one shard)"
    )]
    LastShard {
        /// The shard.
        shard: u32,
    },

    /// A balance tolerance that is negative, or not a number: hot and
    /// cold would overlap, or nothing would compare.
    #[error(
        "balance threshold {threshold}: expected a finite number >= 0 (0.2: a shard 20% above the mean is hot)"
    )]
    InvalidThreshold {
        /// The threshold given.
        threshold: f64,
    },

    /// A range change would make two ranges overlap.
    #[error("invalid range plan: {0}")]
    RangeOverlap(String),

    /// A range change names a range boundary that is not one (two ranges
    /// to merge that do not touch, a split point outside every range).
    #[error("invalid range plan: {0}")]
    RangeGap(String),

    /// A range bound that does not fit the topology's range key.
    #[error("invalid range plan: {0}")]
    RangeBound(String),

    /// The migration did not finish within its timeout; it was rolled back.
    #[error("migration {id} timed out after {seconds:.1} s in phase {phase}; rolled back")]
    Timeout {
        /// The migration.
        id: String,
        /// The phase it was in.
        phase: String,
        /// Its timeout.
        seconds: f64,
    },

    /// An archival's sink did not land the period's last events within the
    /// timeout; it was rolled back (the period takes writes again).
    #[error(
        "archival {id} of period {period} rolled back: the sink did not land the pipeline up to offsets {needed:?} within {seconds:.1} s (landed {landed:?}); is the sink running ([lake] sink = true, or floe sink)?"
    )]
    NotLanded {
        /// The migration.
        id: String,
        /// The period.
        period: String,
        /// Its timeout.
        seconds: f64,
        /// The lake's committed offsets when it gave up.
        landed: Vec<floe_engine::Offset>,
        /// The offsets it waited for.
        needed: Vec<floe_engine::Offset>,
    },

    /// The migration was cancelled; it was rolled back.
    #[error("migration {id} was cancelled in phase {phase}; rolled back")]
    Cancelled {
        /// The migration.
        id: String,
        /// The phase it was in.
        phase: String,
    },

    /// Source and target disagree about moved entities after the copy.
    #[error(
        "verification failed: {mismatched} of {checked} moved entities differ between source and target (first: {first}); rolled back"
    )]
    VerifyMismatch {
        /// Entities compared.
        checked: u64,
        /// Entities that differ.
        mismatched: u64,
        /// The first differing entity and how.
        first: String,
    },

    /// A failure injected by a test hook.
    #[error("injected failure at {0}")]
    Injected(String),

    /// No migration with this id.
    #[error("no migration {0}")]
    NotFound(String),

    /// A `[migration]` setting that cannot be used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A task of the migration (a lake or pipeline reader) panicked or was
    /// cancelled.
    #[error("the {task} task failed: {message}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// What the runtime said.
        message: String,
    },

    /// A second waiter of a migration that failed: the first one got the
    /// typed error, this one its message.
    #[error("migration {id}: {message}")]
    Failed {
        /// The migration.
        id: String,
        /// The error the first waiter got.
        message: String,
    },

    /// The migration's task ended without recording an outcome.
    #[error("migration {0} stopped without an outcome")]
    NoOutcome(String),

    /// The engine refused something (routing, a stopped shard, the pipeline).
    #[error(transparent)]
    Engine(#[from] floe_engine::Error),

    /// The lake could not be read.
    #[error("reading the lake: {0}")]
    Lake(floe_emitter::Error),

    /// A job file that cannot be read, written or parsed.
    #[error("migration job file {}: {message}", path.display())]
    Job {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl From<floe_emitter::Error> for Error {
    fn from(e: floe_emitter::Error) -> Self {
        Error::Lake(e)
    }
}

impl Error {
    /// Whether the same migration may succeed if started again unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Engine(e) => e.is_retryable(),
            Error::Lake(e) => e.is_retryable(),
            Error::Timeout { .. } | Error::NotLanded { .. } | Error::AlreadyMigrating { .. } => {
                true
            }
            _ => false,
        }
    }

    pub(crate) fn job(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        Error::Job {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
