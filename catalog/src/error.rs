//! What can fail when opening or serving the catalog.

/// Errors of `floe-catalog`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot be served.
    #[error("catalog server configuration: {0}")]
    Config(String),

    /// The SQLite catalog could not be opened.
    #[error("cannot open the catalog {catalog}: {cause}")]
    Open {
        /// The catalog file.
        catalog: String,
        /// What SQLite or Iceberg reported.
        cause: String,
    },

    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        cause: std::io::Error,
    },

    /// Serving HTTP failed.
    #[error("serving the REST catalog: {0}")]
    Serve(std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
