use std::time::Duration;

/// Result type of floe-query.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong answering a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The statement would change something: floe's SQL is read-only.
    #[error(
        "read-only: {statement} statements are not allowed (floe's SQL reads the lake; writes go through floe's API)"
    )]
    ReadOnly {
        /// What kind of statement was refused, e.g. `DROP TABLE`.
        statement: String,
    },

    /// The query ran longer than its timeout and was cancelled.
    #[error("query timed out after {} ms", after.as_millis())]
    Timeout {
        /// The timeout in force.
        after: Duration,
    },

    /// The query's execution ended abnormally (an operator panicked).
    #[error("query execution failed: {0}")]
    Execution(String),

    /// SQL that cannot be parsed, planned or executed.
    #[error("{0}")]
    Sql(#[source] Box<datafusion::error::DataFusionError>),

    /// Reading Iceberg metadata failed.
    #[error("{context}: {source}")]
    Iceberg {
        /// What the query was doing.
        context: &'static str,
        /// The Iceberg error.
        #[source]
        source: Box<iceberg::Error>,
    },

    /// The lake could not be opened or read.
    #[error(transparent)]
    Lake(#[from] floe_emitter::Error),

    /// Reading acknowledged events from the pipeline (fresh mode) failed.
    #[error("reading acknowledged events from the pipeline: {0}")]
    Pipeline(#[from] floe_engine::Error),

    /// A time-travel target that the table's history does not have.
    #[error("no snapshot {0}")]
    NoSuchSnapshot(String),

    /// A request that this build or this table cannot serve.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A typed query with an invalid part (an empty field name, a bad limit).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

impl Error {
    pub(crate) fn iceberg(context: &'static str, source: iceberg::Error) -> Error {
        Error::Iceberg {
            context,
            source: Box::new(source),
        }
    }

    /// Whether running the same query again may succeed (timeouts and
    /// transient I/O), as opposed to a query that will always fail.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Iceberg { source, .. } => source.retryable(),
            Error::Lake(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::Sql(Box::new(e))
    }
}
