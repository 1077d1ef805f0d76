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

    /// The engine refused something (routing, a stopped shard, the pipeline).
    #[error(transparent)]
    Engine(#[from] floe_engine::Error),

    /// The lake could not be read.
    #[error("reading the lake: {0}")]
    Lake(floe_emitter::Error),

    /// An Iceberg scan of the lake failed.
    #[error("{context}: {cause}")]
    Iceberg {
        /// What the migration was doing.
        context: &'static str,
        /// The Iceberg error.
        cause: Box<iceberg::Error>,
    },

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
            Error::Timeout { .. } | Error::AlreadyMigrating { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn iceberg(context: &'static str) -> impl FnOnce(iceberg::Error) -> Self {
        move |cause| Error::Iceberg {
            context,
            cause: Box::new(cause),
        }
    }

    pub(crate) fn job(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        Error::Job {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
