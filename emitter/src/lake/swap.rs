//! The compare-and-swap of `floe.events`' metadata on the catalog.
//!
//! iceberg-rust 0.10.1 keeps the `TableCommit` builder crate-private, so a
//! commit that its transactions cannot express (a rewrite, an expiry that
//! deletes files) does what the catalog's own `update_table` does, with
//! public parts: check the requirements against the base metadata, apply the
//! updates to a metadata builder, write the next `*.metadata.json` and swap
//! the catalog's pointer from the base location to the new one, only if it
//! still is the base location. The updates and requirements are the ones the
//! REST protocol's commit endpoint takes, so a REST implementation slots in
//! here unchanged.

use std::str::FromStr;
use std::time::Duration;

use iceberg::table::Table;
use iceberg::{MetadataLocation, TableRequirement, TableUpdate};
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::error::{Error, Result};
use crate::sink::layout::{NAMESPACE, TABLE};
use crate::sink::{CATALOG_NAME, CatalogUrl, Lake};

/// How long a swap waits for SQLite's write lock (the sink may hold it).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits `updates` on top of `base` if the catalog still points at `base`;
/// returns the new metadata file's location.
///
/// A requirement that `base` fails, or a catalog that moved on since `base`
/// was loaded, is [`Error::CommitConflict`] (retryable: reload, re-plan,
/// retry); the metadata file written for the lost attempt is deleted.
pub(crate) async fn swap(
    lake: &Lake,
    base: &Table,
    operation: &'static str,
    updates: Vec<TableUpdate>,
    requirements: &[TableRequirement],
) -> Result<String> {
    let sqlite = match &lake.location().catalog {
        CatalogUrl::Sqlite(path) => path.clone(),
        CatalogUrl::Rest(uri) => {
            return Err(Error::Unsupported {
                operation,
                catalog: format!("REST ({uri})"),
                reason: "floe's maintenance commits swap metadata on the SQLite catalog only so far; run maintenance on a deployment with the embedded catalog".into(),
            });
        }
    };
    for requirement in requirements {
        requirement
            .check(Some(base.metadata()))
            .map_err(|e| Error::CommitConflict {
                operation,
                reason: e.to_string(),
            })?;
    }
    let base_location = base
        .metadata_location_result()
        .map_err(|e| Error::iceberg("reading the table's metadata location", e))?
        .to_string();
    let mut builder = base
        .metadata()
        .clone()
        .into_builder(Some(base_location.clone()));
    for update in updates {
        builder = update
            .apply(builder)
            .map_err(|e| Error::iceberg("applying a metadata update", e))?;
    }
    let metadata = builder
        .build()
        .map_err(|e| Error::iceberg("building the new table metadata", e))?
        .metadata;
    let next = MetadataLocation::from_str(&base_location)
        .map_err(|e| Error::iceberg("parsing the table's metadata location", e))?
        .with_next_version()
        .with_new_metadata(&metadata);
    metadata
        .write_to(base.file_io(), &next)
        .await
        .map_err(|e| Error::iceberg("writing the new table metadata", e))?;
    let location = next.to_string();
    match swap_sqlite(&sqlite, &base_location, &location).await {
        Ok(true) => Ok(location),
        Ok(false) => {
            // Nobody references the file of the lost attempt.
            let _ = base.file_io().delete(&location).await;
            Err(Error::CommitConflict {
                operation,
                reason: format!("the catalog no longer points at {base_location}"),
            })
        }
        Err(e) => {
            // Unknown whether the swap happened: keep the file (an orphan at
            // worst, which expiry deletes) rather than risk deleting the
            // table's current metadata.
            Err(e)
        }
    }
}

/// `UPDATE ... WHERE metadata_location = base`: the same statement the SQL
/// catalog's `update_table` runs. Returns whether the row moved.
async fn swap_sqlite(path: &std::path::Path, base: &str, next: &str) -> Result<bool> {
    // A busy or unreachable database may well work on the next attempt.
    let unavailable = |e: sqlx::Error| Error::CatalogUnavailable {
        catalog: format!("sqlite://{}", path.display()),
        cause: Box::new(
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("swapping the metadata pointer: {e}"),
            )
            .with_retryable(true),
        ),
    };
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(unavailable)?;
    let result = sqlx::query(
        "UPDATE iceberg_tables
         SET metadata_location = ?, previous_metadata_location = ?
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?
           AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)
           AND metadata_location = ?",
    )
    .bind(next)
    .bind(base)
    .bind(CATALOG_NAME)
    .bind(NAMESPACE)
    .bind(TABLE)
    .bind(base)
    .execute(&mut connection)
    .await
    .map_err(unavailable)?;
    Ok(result.rows_affected() == 1)
}
