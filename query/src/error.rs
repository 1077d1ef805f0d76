use std::time::Duration;

use datafusion::error::DataFusionError;
use floe_emitter::sink::{CatalogUrl, LakeLocation, store_endpoint};
use floe_emitter::{Outage, outage};

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
    #[error("{}", datafusion_message(.0))]
    Sql(Box<DataFusionError>),

    /// Reading Iceberg metadata failed.
    #[error("{context}: {cause}")]
    Iceberg {
        /// What the query was doing.
        context: &'static str,
        /// The Iceberg error.
        cause: Box<iceberg::Error>,
    },

    /// The lake could not be opened or read.
    #[error(transparent)]
    Lake(#[from] floe_emitter::Error),

    /// Reading acknowledged events from the pipeline (fresh mode) failed.
    #[error("reading acknowledged events from the pipeline: {0}")]
    Pipeline(floe_engine::Error),

    /// A time-travel target that the table's history does not have.
    #[error("no snapshot {0}")]
    NoSuchSnapshot(String),

    /// A request that this build or this table cannot serve.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The lake's catalog or object store did not answer while the query
    /// ran (down, unreachable or overloaded). Nothing is wrong with the
    /// query: it can run again once the service is back.
    #[error(
        "the lake's {service} at {endpoint} is unavailable; retry the query when it is back: {cause}"
    )]
    LakeUnavailable {
        /// `catalog` or `object store`.
        service: &'static str,
        /// The catalog URI or the object store's endpoint.
        endpoint: String,
        /// What the client reported.
        cause: String,
    },

    /// The warehouse's object store cannot be configured from the lake's
    /// properties.
    #[error("object store: {0}")]
    ObjectStore(String),
    /// A filter or order key of a things query that does not parse.
    #[error("invalid filter: {0}")]
    InvalidFilter(crate::filter::FilterError),

    /// A typed query with an invalid part (an empty field name, a bad limit).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

impl Error {
    pub(crate) fn iceberg(context: &'static str, cause: iceberg::Error) -> Error {
        Error::Iceberg {
            context,
            cause: Box::new(cause),
        }
    }

    /// Whether running the same query again may succeed (timeouts and
    /// transient I/O), as opposed to a query that will always fail.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::LakeUnavailable { .. } => true,
            Error::Iceberg { cause, .. } => cause.retryable(),
            Error::Lake(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl Error {
    /// This error as [`Error::LakeUnavailable`] when what failed underneath
    /// is an outage of the catalog or the object store of `location`
    /// (see [`floe_emitter::outage`]); any other error unchanged.
    pub(crate) fn or_outage(self, location: &LakeLocation) -> Error {
        let found = match &self {
            Error::Sql(e) => outage(e.as_ref()),
            Error::Iceberg { cause, .. } => outage(cause.as_ref()),
            Error::Lake(e) => match e {
                floe_emitter::Error::Iceberg { cause, .. }
                | floe_emitter::Error::CatalogUnavailable { cause, .. } => outage(cause.as_ref()),
                floe_emitter::Error::StoreUnavailable { .. } => Some(Outage::Storage),
                _ => None,
            },
            _ => None,
        };
        // Only a service floe talks to over the network can be out: an
        // embedded catalog or a local warehouse failing is something else.
        let remote = match found {
            Some(Outage::Catalog) => matches!(location.catalog, CatalogUrl::Rest(_)),
            Some(_) => !location.warehouse.starts_with("file://"),
            None => false,
        };
        let (Some(found), true) = (found, remote) else {
            return self;
        };
        let endpoint = match found {
            Outage::Catalog => location.catalog.to_string(),
            _ => store_endpoint(location),
        };
        Error::LakeUnavailable {
            service: found.service(),
            endpoint,
            cause: self.to_string(),
        }
    }
}

// Not `#[from]`: that would make the filter error a source too, and its
// message would print twice in a chain.
impl From<crate::filter::FilterError> for Error {
    fn from(e: crate::filter::FilterError) -> Self {
        Error::InvalidFilter(e)
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::Sql(Box::new(e))
    }
}

impl From<floe_engine::Error> for Error {
    fn from(e: floe_engine::Error) -> Self {
        Error::Pipeline(e)
    }
}

/// DataFusion's message, each part once and none as `Debug`. Its own
/// `Display` prints a parser error with `{:?}` (`SQL error:
/// ParserError("...")`) and its `source()` then repeats it, so the parser
/// error is rendered by its `Display`, and wrappers (context, diagnostics,
/// shared errors) by what they wrap.
fn datafusion_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::SQL(parser, _) => parser.to_string(),
        DataFusionError::Context(context, inner) => {
            format!("{context}: {}", datafusion_message(inner))
        }
        DataFusionError::Diagnostic(_, inner) => datafusion_message(inner),
        DataFusionError::Shared(inner) => datafusion_message(inner),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(first) => datafusion_message(first),
            None => e.strip_backtrace(),
        },
        other => other.strip_backtrace(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::ParserError;

    #[test]
    fn a_parser_error_is_printed_once_and_not_as_debug() {
        let parser = || ParserError::ParserError("Expected: an SQL statement, found: SELEC".into());
        let expected = "sql parser error: Expected: an SQL statement, found: SELEC";
        let plain = Error::from(DataFusionError::SQL(Box::new(parser()), None));
        assert_eq!(plain.to_string(), expected);
        assert!(std::error::Error::source(&plain).is_none());
        let wrapped = Error::from(DataFusionError::Shared(std::sync::Arc::new(
            DataFusionError::SQL(Box::new(parser()), None).context("planning"),
        )));
        assert_eq!(wrapped.to_string(), format!("planning: {expected}"));
        let plan = Error::from(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(
            plan.to_string(),
            "Error during planning: table 'x' not found"
        );
    }
}
