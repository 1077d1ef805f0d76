use std::path::PathBuf;

/// Result type of the `floe` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the assembled system. Everything the engine reports (bad input,
/// version conflicts, pipeline failures) arrives as [`Error::Engine`].
///
/// As in every floe crate, a message includes the text of its cause and
/// `source()` is `None` (see `floe_engine::Error`), so each cause is printed
/// once however the error is reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the engine: bad input, conflicts, routing, the pipeline.
    #[error(transparent)]
    Engine(#[from] floe_engine::Error),

    /// Another process holds the data directory.
    #[error("data directory {} is in use by another floe process ({holder}); stop it or use another --data directory", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },

    /// The data directory has history (pipeline events, landed events,
    /// migration records) but its topology document is gone: starting from
    /// the configured topology would silently re-route entities.
    #[error(
        "{} is missing, but this data directory is not new: {evidence}. Starting from the configured [topology] would silently re-route every entity and undo any migration; restore the file (from a backup, or the `to` topology of the last completed record in the migrations directory) or use a new data directory",
        path.display()
    )]
    TopologyMissing {
        /// The missing file.
        path: PathBuf,
        /// What shows the directory's history.
        evidence: String,
    },

    /// A configuration file that cannot be read or parsed.
    #[error("configuration file {}: {message}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A configuration value that cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Something that needs the Iceberg lake was asked of a floe whose
    /// configuration turns the lake off.
    #[error("{needs} needs the Iceberg lake, and lake.enabled is off")]
    LakeDisabled {
        /// What needs it, e.g. `SQL`.
        needs: &'static str,
    },

    /// An erase named an entity floe has no trace of: no state, no event in
    /// the pipeline, no row in the lake.
    #[error(
        "cannot erase {key}: no such entity (no state, no event in the pipeline, no row in the lake)"
    )]
    UnknownEntity {
        /// The entity, `namespace/type/id`.
        key: String,
    },

    /// An erase waited for the sink to land the entity's events and it did
    /// not; nothing was rewritten (the tombstone is written: run it again).
    #[error(
        "erase: the lake has landed partition {partition} up to offset {committed}, the entity's events reach {head}, after waiting {waited_ms} ms; is the sink running?"
    )]
    EraseNotLanded {
        /// The entity's pipeline partition.
        partition: u32,
        /// Its head when the erase began.
        head: u64,
        /// The lake's committed offset there.
        committed: u64,
        /// How long the erase waited.
        waited_ms: u64,
    },

    /// The embedded catalog is absent: nothing has been landed in this data
    /// directory yet.
    #[error("no lake at {}: nothing has been landed in this data directory", path.display())]
    NoLake {
        /// Where the catalog would be.
        path: PathBuf,
    },

    /// The sink does not run inside this floe (the lake or `lake.sink` is
    /// off, or the sink runs as `floe sink` elsewhere).
    #[error("the sink does not run inside this floe (lake.enabled or lake.sink is off)")]
    SinkNotRunning,

    /// The sink runs inside this floe but has not started yet.
    #[error("the sink has not started yet")]
    SinkNotStarted,

    /// A background task (recovery, a replay, opening the log) panicked or
    /// was cancelled before it returned.
    #[error("{task} failed: {message}")]
    TaskFailed {
        /// Which task, e.g. `the lake replay task`.
        task: &'static str,
        /// What the runtime reported.
        message: String,
    },

    /// The Iceberg lake or its sink failed: catalog, warehouse, commit, fencing.
    #[error("lake: {0}")]
    Lake(floe_emitter::Error),

    /// Writing or removing shard snapshot files failed (the snapshot is not
    /// used; the log still holds everything).
    #[error("shard snapshots: {0}")]
    Snapshot(floe_emitter::Error),

    /// The embedded log holds damaged records (a complete frame that fails
    /// its checksum, or damage that cannot be a torn write): floe refuses to
    /// open rather than serve a smaller state. `floe repair` rebuilds the
    /// partition. The inner error is `floe_emitter::Error::CorruptRecord`.
    #[error(transparent)]
    CorruptLog(floe_emitter::Error),

    /// A pipeline partition ends below the offset the lake has committed for
    /// it: the log would hand out offsets the lake already holds (and the
    /// sink would skip those writes). floe refuses to open.
    #[error(
        "pipeline partition {partition} ends at offset {log_high} but the lake has committed offsets up to {lake_committed}: the log lost records the lake holds (a truncated or replaced log), and new writes would reuse offsets the lake already has; run `floe repair --partition {partition}` to rebuild the partition from the lake"
    )]
    LogBehindLake {
        /// The pipeline partition.
        partition: u32,
        /// The partition's high watermark (next offset it would hand out).
        log_high: u64,
        /// The lake's committed next offset for the partition.
        lake_committed: u64,
    },

    /// A migration could not be planned or ran into a problem (and rolled
    /// back): already migrating, invalid plan, timeout, cancelled, verify
    /// mismatch.
    #[error("migration: {0}")]
    Migration(floe_migration::Error),
    /// A cross-shard SQL query failed: bad SQL, a write refused, a timeout.
    #[error("query: {0}")]
    Query(floe_query::Error),

    /// An item of a batch write or a line of an import that is well-formed
    /// JSON but not a write (a missing field, an unknown op, data that is
    /// not an object).
    #[error("invalid write item: {0}")]
    InvalidWriteItem(String),
    /// Cluster mode: a bad `[cluster]` section, or etcd refused this node
    /// (wrong cluster id, node id already live) or could not be reached.
    #[error("cluster: {0}")]
    Cluster(floe_cluster::Error),

    /// Cluster mode with a pipeline only this machine can read.
    #[error(
        "cluster mode needs a pipeline every node shares: pipeline {pipeline:?} is the embedded log of one machine; use a kafka:// pipeline or remove [cluster]"
    )]
    ClusterNeedsKafka {
        /// The configured pipeline URL.
        pipeline: String,
    },

    /// Something cluster mode does not do yet.
    #[error("{what} are not supported in cluster mode yet (docs/cluster.md)")]
    ClusterUnsupported {
        /// What was asked.
        what: &'static str,
    },

    /// Cluster mode: a reshard (shard-count migration) was given up before
    /// its cutover (a node did not pause in time, or it was cancelled); the
    /// old topology stays in force.
    #[error("reshard {id} was aborted: {reason}")]
    ReshardAborted {
        /// The migration.
        id: String,
        /// Why.
        reason: String,
    },

    /// A warm-up group handed over a shard it does not hold (a bug: the
    /// caller restores the shard in full instead).
    #[error("shard {shard} is not in its warm-up group")]
    WarmShardMissing {
        /// The shard asked for.
        shard: u32,
    },

    /// An I/O failure with what floe was doing.
    #[error("{context}: {cause}")]
    Io {
        /// What floe was doing.
        context: String,
        /// The OS error.
        cause: std::io::Error,
    },
}

impl Error {
    /// Whether the same call may succeed if it is tried again unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Engine(e) => e.is_retryable(),
            Error::Lake(e) => e.is_retryable(),
            Error::Migration(e) => e.is_retryable(),
            Error::Query(e) => e.is_retryable(),
            Error::SinkNotStarted | Error::EraseNotLanded { .. } => true,
            Error::Cluster(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The migration error inside, if this is one.
    pub fn as_migration(&self) -> Option<&floe_migration::Error> {
        match self {
            Error::Migration(e) => Some(e),
            _ => None,
        }
    }

    /// The engine error inside, if this is one.
    pub fn as_engine(&self) -> Option<&floe_engine::Error> {
        match self {
            Error::Engine(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }

    /// A task that ended without returning, from its join error.
    pub(crate) fn task(task: &'static str, e: tokio::task::JoinError) -> Self {
        Error::TaskFailed {
            task,
            message: e.to_string(),
        }
    }
}

impl From<floe_query::Error> for Error {
    fn from(e: floe_query::Error) -> Self {
        Error::Query(e)
    }
}

impl From<floe_emitter::Error> for Error {
    fn from(e: floe_emitter::Error) -> Self {
        Error::Engine(e.into())
    }
}

/// A configuration error keeps the variant floe always answered with, so
/// callers matching `Error::Config` or `Error::ConfigFile` see no change.
impl From<floe_config::Error> for Error {
    fn from(e: floe_config::Error) -> Self {
        match e {
            floe_config::Error::File { path, message } => Error::ConfigFile { path, message },
            floe_config::Error::Invalid(message) => Error::Config(message),
            floe_config::Error::Engine(e) => Error::Engine(e),
            floe_config::Error::Migration(e) => e.into(),
            floe_config::Error::Cluster(e) => Error::Cluster(e),
            floe_config::Error::ClusterNeedsKafka { pipeline } => {
                Error::ClusterNeedsKafka { pipeline }
            }
            floe_config::Error::Io { context, cause } => Error::Io { context, cause },
        }
    }
}
