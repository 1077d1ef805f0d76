//! What can be wrong with a configuration.

use std::path::PathBuf;

/// A configuration that cannot be used. Nothing is opened or joined when one
/// of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file that cannot be read or parsed.
    #[error("configuration file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A configuration value that cannot be used; the message names the key
    /// and why.
    #[error("invalid configuration: {0}")]
    Invalid(String),

    /// A topology or shard setting the engine refuses (shard count, ranges,
    /// overrides, limits).
    #[error(transparent)]
    Engine(#[from] floe_engine::Error),

    /// A `[migration]` setting the migration coordinator refuses.
    #[error(transparent)]
    Migration(#[from] floe_migration::Error),

    /// A bad `[cluster]` section.
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

    /// A path in the configuration the OS cannot resolve.
    #[error("{context}: {cause}")]
    Io {
        /// What was being resolved.
        context: String,
        /// The OS error.
        cause: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
