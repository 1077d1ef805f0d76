//! floe's embedded Iceberg catalog (the SQL catalog on SQLite that
//! `floe.events` lives in) served over the Iceberg REST catalog protocol,
//! so that any engine with a REST client (Spark, Trino, pyiceberg, floe's own
//! `rest://` lake) reads and writes the lake through it.
//!
//! - [`CatalogServer`]: the catalog and its warehouse, opened once; its
//!   [`CatalogServer::router`] answers the REST routes (config, namespaces,
//!   tables, load, create, commit, drop).
//! - Commits check the request's requirements against the current metadata,
//!   apply its updates, write the new metadata file and swap the catalog's
//!   pointer only if it still names the metadata the requirements were
//!   checked against: a lost race or a failed requirement is `409
//!   CommitFailedException`, as the spec says, and changes nothing.
//!
//! `docs/iceberg.md` ("A REST catalog: floe catalog serve") shows the setup.
#![deny(missing_docs)]

mod commit;
mod error;
mod routes;
mod server;

pub use error::{Error, Result};
pub use server::{CatalogServer, ServerOptions};
