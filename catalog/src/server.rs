//! [`CatalogServer`]: the SQLite catalog and its warehouse, and what each
//! REST operation does to them.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;

use iceberg::io::{LocalFsStorageFactory, StorageFactory};
use iceberg::spec::TableMetadata;
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::{
    CommitTableRequest, CommitTableResponse, CreateTableRequest, LoadTableResult,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::commit::{self, Refused};
use crate::error::{Error, Result};
use crate::routes::{self, ApiError};

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The SQLite catalog file (created if missing).
    pub catalog_path: PathBuf,
    /// The catalog name its rows carry (floe's lake uses `floe`).
    pub catalog_name: String,
    /// Where new tables go: `file:///dir` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// Storage properties (`s3.endpoint`, `s3.access-key-id`, ...): the
    /// server writes table metadata, so it needs the warehouse's credentials.
    pub properties: HashMap<String, String>,
}

/// floe's SQL catalog behind the REST protocol.
#[derive(Clone)]
pub struct CatalogServer {
    catalog: Arc<SqlCatalog>,
    /// The catalog's own database, for the compare-and-swap of a commit.
    pool: SqlitePool,
    options: Arc<ServerOptions>,
    /// Commits of this server, one at a time: the swap alone keeps them
    /// correct, this keeps them from failing each other needlessly.
    commits: Arc<tokio::sync::Mutex<()>>,
    /// Table metadata by metadata file location. A metadata file is never
    /// rewritten (a commit writes a new one and swaps the pointer), so a
    /// load whose pointer is unchanged is answered without reading it.
    metadata: Arc<std::sync::Mutex<MetadataCache>>,
}

/// Metadata files kept in memory; a few per table cover the current one
/// while commits land.
const METADATA_CACHED: usize = 32;

/// The newest [`METADATA_CACHED`] metadata files read or written.
#[derive(Debug, Default)]
struct MetadataCache {
    entries: std::collections::VecDeque<(String, Arc<TableMetadata>)>,
}

impl MetadataCache {
    fn get(&self, location: &str) -> Option<Arc<TableMetadata>> {
        self.entries
            .iter()
            .find(|(l, _)| l == location)
            .map(|(_, m)| m.clone())
    }

    fn put(&mut self, location: String, metadata: Arc<TableMetadata>) {
        if self.get(&location).is_some() {
            return;
        }
        if self.entries.len() >= METADATA_CACHED {
            self.entries.pop_front();
        }
        self.entries.push_back((location, metadata));
    }
}

impl std::fmt::Debug for CatalogServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogServer")
            .field("catalog", &self.options.catalog_path)
            .field("warehouse", &self.options.warehouse)
            .finish_non_exhaustive()
    }
}

impl CatalogServer {
    /// Opens (creating if missing) the catalog.
    pub async fn open(options: ServerOptions) -> Result<CatalogServer> {
        let path = &options.catalog_path;
        let open_error = |cause: String| Error::Open {
            catalog: path.display().to_string(),
            cause,
        };
        if !(options.warehouse.starts_with("file:///") || options.warehouse.starts_with("s3://")) {
            return Err(Error::Config(format!(
                "warehouse {:?}: expected file:///dir or s3://bucket/prefix",
                options.warehouse
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let storage: Arc<dyn StorageFactory> = match options.warehouse.strip_prefix("file://") {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| open_error(format!("{dir}: {e}")))?;
                Arc::new(LocalFsStorageFactory)
            }
            None => Arc::new(OpenDalResolvingStorageFactory::new()),
        };
        let mut props = options.properties.clone();
        props.insert("uri".into(), format!("sqlite:{}?mode=rwc", path.display()));
        props.insert("warehouse".into(), options.warehouse.clone());
        let catalog = SqlCatalogBuilder::default()
            .sql_bind_style(SqlBindStyle::QMark)
            .with_storage_factory(storage)
            .load(&options.catalog_name, props)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(10)),
            )
            .await
            .map_err(|e| open_error(e.to_string()))?;
        Ok(CatalogServer {
            catalog: Arc::new(catalog),
            pool,
            options: Arc::new(options),
            commits: Arc::default(),
            metadata: Arc::default(),
        })
    }

    /// The REST routes, for an HTTP server of the caller's.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// Binds `addr` and serves until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, catalog = %self.options.catalog_path.display(), warehouse = %self.options.warehouse, "serving the Iceberg REST catalog");
        }
        // See floe serve: a response in two writes must not wait for the
        // client's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY refused on an accepted connection");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }

    /// Binds a TCP listener on `addr`.
    pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| Error::Bind {
                addr: addr.to_string(),
                cause,
            })
    }

    pub(crate) fn catalog(&self) -> &SqlCatalog {
        &self.catalog
    }

    pub(crate) fn warehouse(&self) -> &str {
        &self.options.warehouse
    }

    pub(crate) async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> std::result::Result<Vec<NamespaceIdent>, ApiError> {
        Ok(self.catalog.list_namespaces(parent).await?)
    }

    pub(crate) async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        request: CreateTableRequest,
    ) -> std::result::Result<LoadTableResult, ApiError> {
        if request.stage_create == Some(true) {
            return Err(ApiError::bad_request(
                "staged table creation (stage-create) is not supported by this catalog",
            ));
        }
        let creation = TableCreation::builder()
            .name(request.name)
            .location_opt(request.location)
            .schema(request.schema)
            .partition_spec_opt(request.partition_spec)
            .sort_order_opt(request.write_order)
            .properties(request.properties)
            .build();
        let table = self.catalog.create_table(namespace, creation).await?;
        Ok(load_result(
            table.metadata_location().map(str::to_string),
            table.metadata().clone(),
        ))
    }

    pub(crate) async fn load_table(
        &self,
        ident: &TableIdent,
    ) -> std::result::Result<LoadTableResult, ApiError> {
        // The pointer alone first: an unchanged one is answered from memory
        // (a query loads the table every time it runs).
        if let Ok(Some(location)) = self.metadata_location(ident).await
            && let Some(metadata) = self.cache().get(&location)
        {
            return Ok(load_result(Some(location), metadata.as_ref().clone()));
        }
        let table = self.catalog.load_table(ident).await?;
        if let Some(location) = table.metadata_location() {
            self.cache()
                .put(location.to_string(), Arc::new(table.metadata().clone()));
        }
        Ok(load_result(
            table.metadata_location().map(str::to_string),
            table.metadata().clone(),
        ))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, MetadataCache> {
        self.metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the catalog's row of `ident` points (`None`: no such table;
    /// the catalog's own load then says why).
    async fn metadata_location(&self, ident: &TableIdent) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT metadata_location FROM iceberg_tables \
             WHERE catalog_name = ? AND table_name = ? AND table_namespace = ? \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
        )
        .bind(&self.options.catalog_name)
        .bind(ident.name())
        .bind(ident.namespace().join("."))
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
    }

    /// Checks, applies, writes and swaps (see `commit`).
    pub(crate) async fn commit(
        &self,
        ident: &TableIdent,
        request: CommitTableRequest,
    ) -> std::result::Result<CommitTableResponse, ApiError> {
        if let Some(named) = &request.identifier
            && named != ident
        {
            return Err(ApiError::bad_request(format!(
                "the commit names table {named} but was sent to {ident}"
            )));
        }
        let _one_at_a_time = self.commits.lock().await;
        let table = self.catalog.load_table(ident).await?;
        let current = table
            .metadata_location()
            .ok_or_else(|| ApiError::internal(format!("table {ident} has no metadata location")))?
            .to_string();
        let staged = commit::stage(
            table.metadata(),
            &current,
            &request.requirements,
            request.updates,
        )
        .map_err(|refused| match refused {
            Refused::Conflict(why) => ApiError::commit_failed(why),
            Refused::Invalid(why) => ApiError::bad_request(why),
        })?;
        let next = staged.location.to_string();
        staged
            .metadata
            .write_to(table.file_io(), &staged.location)
            .await
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "writing the new metadata of {ident} to {next} failed (nothing was committed): {e}"
                ))
            })?;
        let swapped = self.swap(ident, &current, &next).await;
        match swapped {
            Ok(true) => {
                self.cache()
                    .put(next.clone(), Arc::new(staged.metadata.clone()));
                Ok(CommitTableResponse {
                    metadata_location: next,
                    metadata: staged.metadata,
                })
            }
            Ok(false) => {
                let _ = table.file_io().delete(&next).await;
                Err(ApiError::commit_failed(format!(
                    "table {ident} changed since {current}: another commit landed first; refresh and retry"
                )))
            }
            Err(e) => {
                let _ = table.file_io().delete(&next).await;
                Err(ApiError::unavailable(format!(
                    "updating the catalog's pointer of {ident} failed (nothing was committed): {e}"
                )))
            }
        }
    }

    /// Points `ident` at `next` if it still points at `current` (the SQL
    /// catalog's own compare-and-swap on its `iceberg_tables` row).
    async fn swap(&self, ident: &TableIdent, current: &str, next: &str) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_name = ? AND table_namespace = ? \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?",
        )
        .bind(next)
        .bind(current)
        .bind(&self.options.catalog_name)
        .bind(ident.name())
        .bind(ident.namespace().join("."))
        .bind(current)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn load_result(metadata_location: Option<String>, metadata: TableMetadata) -> LoadTableResult {
    LoadTableResult {
        metadata_location,
        metadata,
        config: HashMap::new(),
        storage_credentials: None,
    }
}

impl From<iceberg::Error> for ApiError {
    fn from(e: iceberg::Error) -> Self {
        match e.kind() {
            ErrorKind::NamespaceNotFound => ApiError::not_found("NoSuchNamespaceException", e),
            ErrorKind::TableNotFound => ApiError::not_found("NoSuchTableException", e),
            ErrorKind::NamespaceAlreadyExists | ErrorKind::TableAlreadyExists => {
                ApiError::already_exists(e)
            }
            ErrorKind::CatalogCommitConflicts => ApiError::commit_failed(e.to_string()),
            ErrorKind::DataInvalid | ErrorKind::FeatureUnsupported => {
                ApiError::bad_request(e.to_string())
            }
            // The warehouse's storage failed (iceberg-storage-opendal's one
            // message for every failed object-store call, over OpenDAL's
            // error, which prints its kind first), other than a missing
            // object: the store is down or refusing; the client may retry.
            ErrorKind::Unexpected
                if e.message() == "Failure in doing io operation"
                    && !std::error::Error::source(&e)
                        .is_some_and(|s| s.to_string().starts_with("NotFound")) =>
            {
                ApiError::unavailable(format!("the warehouse's storage failed: {e}"))
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Arc<TableMetadata> {
        let schema = iceberg::spec::Schema::builder().build().unwrap();
        let creation = TableCreation::builder()
            .name("t".into())
            .location("file:///w/t".into())
            .schema(schema)
            .build();
        Arc::new(
            iceberg::spec::TableMetadataBuilder::from_table_creation(creation)
                .unwrap()
                .build()
                .unwrap()
                .metadata,
        )
    }

    #[test]
    fn the_metadata_cache_keeps_the_newest_files_by_location() {
        let mut cache = MetadataCache::default();
        let m = metadata();
        for i in 0..=METADATA_CACHED {
            cache.put(format!("m{i}"), m.clone());
        }
        assert!(cache.get("m0").is_none(), "the oldest is evicted");
        assert!(cache.get("m1").is_some());
        assert!(cache.get(&format!("m{METADATA_CACHED}")).is_some());
        assert!(cache.get("other").is_none());
        cache.put("m1".into(), m);
        assert_eq!(
            cache.entries.len(),
            METADATA_CACHED,
            "a location is kept once"
        );
    }
}
