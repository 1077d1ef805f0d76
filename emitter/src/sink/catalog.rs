//! Opening the lake: an Iceberg catalog chosen by URL scheme, the warehouse,
//! and `floe.events` (created on first use).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory, StorageFactory};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, ErrorKind, TableRequirement, TableUpdate};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use super::layout;
use crate::error::{Error, Result};

/// Name floe gives its catalog (the SQL catalog stores it in every row).
pub const CATALOG_NAME: &str = "floe";

/// Where the lake lives: a catalog URL and a warehouse URL, both resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeLocation {
    /// The catalog.
    pub catalog: CatalogUrl,
    /// The warehouse: `file:///abs/dir` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// Extra catalog and storage properties (for example `s3.endpoint`,
    /// `s3.access-key-id`, `s3.secret-access-key`, `s3.region`, `token`).
    pub properties: HashMap<String, String>,
}

/// A catalog, parsed from a URL whose scheme picks the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// `sqlite://PATH`: the SQL catalog on a SQLite file (embedded default).
    Sqlite(PathBuf),
    /// `rest://host:port/path`, `http://...`, `https://...`: an Iceberg REST
    /// catalog at this HTTP(S) address.
    Rest(String),
}

impl CatalogUrl {
    /// Parses a catalog URL; `sqlite://` with no path means `default_sqlite`.
    pub fn parse(url: &str, default_sqlite: impl Into<PathBuf>) -> Result<CatalogUrl> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(CatalogUrl::Sqlite(if path.is_empty() {
                default_sqlite.into()
            } else {
                PathBuf::from(path)
            }));
        }
        if let Some(rest) = url.strip_prefix("rest://") {
            if rest.is_empty() {
                return Err(Error::LakeConfig(format!(
                    "catalog URL {url:?} names no host (expected rest://host:port)"
                )));
            }
            return Ok(CatalogUrl::Rest(format!("http://{rest}")));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(CatalogUrl::Rest(url.to_string()));
        }
        let scheme = url.split("://").next().unwrap_or(url);
        Err(Error::LakeConfig(format!(
            "catalog URL {url:?}: unsupported scheme {scheme:?} (expected sqlite://, rest://, http:// or https://)"
        )))
    }
}

impl std::fmt::Display for CatalogUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            CatalogUrl::Rest(uri) => f.write_str(uri),
        }
    }
}

/// Checks a warehouse URL: `file://` with an absolute path, or `s3://bucket/...`.
pub fn check_warehouse(url: &str) -> Result<()> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(Error::LakeConfig(format!(
                "warehouse {url:?} must be an absolute path (file:///dir)"
            )));
        }
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::LakeConfig(format!(
                "warehouse {url:?} names no bucket (expected s3://bucket/prefix)"
            )));
        }
        return Ok(());
    }
    Err(Error::LakeConfig(format!(
        "warehouse {url:?}: unsupported scheme (expected file:// or s3://)"
    )))
}

/// An open catalog with `floe.events` in it.
#[derive(Clone)]
pub struct Lake {
    catalog: Arc<dyn Catalog>,
    location: LakeLocation,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("catalog", &self.location.catalog)
            .field("warehouse", &self.location.warehouse)
            .finish_non_exhaustive()
    }
}

impl Lake {
    /// Connects to the catalog, creates `floe.events` if it is missing and
    /// checks that the warehouse accepts writes. Any failure here is a clear
    /// error at start rather than a failed commit later.
    pub async fn open(location: LakeLocation) -> Result<Lake> {
        check_warehouse(&location.warehouse)?;
        let storage: Arc<dyn StorageFactory> = if location.warehouse.starts_with("file://") {
            Arc::new(LocalFsStorageFactory)
        } else {
            Arc::new(OpenDalResolvingStorageFactory::new())
        };
        // The warehouse first: with object storage, a wrong endpoint or
        // credentials or a missing bucket would otherwise surface as a failed
        // table creation deep inside the catalog.
        if !location.warehouse.starts_with("file://") {
            let io = FileIOBuilder::new(storage.clone())
                .with_props(location.properties.clone())
                .build();
            let warehouse = location.warehouse.trim_end_matches('/');
            check_bucket(&io, warehouse, &location).await?;
            probe(&io, warehouse, &location).await?;
        }
        let mut props = location.properties.clone();
        let catalog: Arc<dyn Catalog> = match &location.catalog {
            CatalogUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::io("creating the catalog directory", dir.to_path_buf(), e)
                    })?;
                }
                if let Some(dir) = location.warehouse.strip_prefix("file://") {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io("creating the warehouse", PathBuf::from(dir), e))?;
                }
                props.insert("uri".into(), format!("sqlite:{}?mode=rwc", path.display()));
                props.insert("warehouse".into(), location.warehouse.clone());
                let catalog = SqlCatalogBuilder::default()
                    .sql_bind_style(SqlBindStyle::QMark)
                    .with_storage_factory(storage)
                    .load(CATALOG_NAME, props)
                    .await
                    .map_err(|e| Error::CatalogUnavailable {
                        catalog: location.catalog.to_string(),
                        cause: Box::new(e),
                    })?;
                Arc::new(catalog)
            }
            CatalogUrl::Rest(uri) => {
                props.insert("uri".into(), uri.clone());
                props.insert("warehouse".into(), location.warehouse.clone());
                let catalog = RestCatalogBuilder::default()
                    .with_storage_factory(storage)
                    .load(CATALOG_NAME, props)
                    .await
                    .map_err(|e| Error::CatalogUnavailable {
                        catalog: uri.clone(),
                        cause: Box::new(e),
                    })?;
                Arc::new(catalog)
            }
        };
        let lake = Lake { catalog, location };
        let table = lake.ensure_table().await?;
        lake.probe_warehouse(&table).await?;
        Ok(lake)
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// Where the lake lives.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// Loads the current metadata of `floe.events`.
    pub async fn load_table(&self) -> Result<Table> {
        self.catalog
            .load_table(&layout::table_ident())
            .await
            .map_err(|e| Error::iceberg("loading floe.events", e))
    }

    async fn ensure_table(&self) -> Result<Table> {
        let unavailable = |e| Error::CatalogUnavailable {
            catalog: self.location.catalog.to_string(),
            cause: Box::new(e),
        };
        let namespace = layout::namespace_ident();
        if !self
            .catalog
            .namespace_exists(&namespace)
            .await
            .map_err(unavailable)?
        {
            match self
                .catalog
                .create_namespace(&namespace, HashMap::new())
                .await
            {
                Ok(_) => {}
                // Another process created it first.
                Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => {}
                Err(e) => return Err(Error::iceberg("creating namespace floe", e)),
            }
        }
        let ident = layout::table_ident();
        if self
            .catalog
            .table_exists(&ident)
            .await
            .map_err(|e| Error::iceberg("looking up floe.events", e))?
        {
            return self.upgrade(self.load_table().await?).await;
        }
        let properties = HashMap::from([
            ("write.format.default".to_string(), "parquet".to_string()),
            (
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            ),
            // Conflicts come back to the sink, which re-checks its lease and
            // the offsets before retrying, instead of being silently rebased.
            ("commit.retry.num-retries".to_string(), "0".to_string()),
        ]);
        match self
            .catalog
            .create_table(&namespace, layout::table_creation(properties)?)
            .await
        {
            Ok(table) => Ok(table),
            Err(e) if e.kind() == ErrorKind::TableAlreadyExists => {
                self.upgrade(self.load_table().await?).await
            }
            Err(e) => Err(Error::iceberg("creating floe.events", e)),
        }
    }

    /// Adds the columns a table created by an older floe lacks
    /// ([`layout::upgraded_schema`]: `owner_epoch`, `request_fingerprint`),
    /// as a schema change
    /// committed with a compare-and-swap: a concurrent commit (the sink's,
    /// another process's upgrade) makes it reload and look again. Columns
    /// are only ever added, so files written before read them as null.
    ///
    /// On a REST catalog floe cannot commit a schema change yet (see
    /// `lake::swap`): the table stays as it is, and the sink writes the
    /// columns it has: events read back from the lake then carry epoch 0
    /// and no fingerprint, as before the upgrade (docs/iceberg.md, "Schema").
    async fn upgrade(&self, mut table: Table) -> Result<Table> {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let metadata = table.metadata();
            let next_id = metadata
                .schemas_iter()
                .map(|s| s.schema_id())
                .max()
                .unwrap_or(0)
                + 1;
            let Some(schema) = layout::upgraded_schema(metadata.current_schema(), next_id)? else {
                return Ok(table);
            };
            if matches!(self.location.catalog, CatalogUrl::Rest(_)) {
                tracing::warn!(
                    catalog = %self.location.catalog,
                    "floe.events predates the owner_epoch and request_fingerprint columns, and floe cannot change a schema on a REST catalog yet; events read back from the lake carry owner epoch 0 and no fingerprint"
                );
                return Ok(table);
            }
            let requirements = [
                TableRequirement::CurrentSchemaIdMatch {
                    current_schema_id: metadata.current_schema_id(),
                },
                TableRequirement::LastAssignedFieldIdMatch {
                    last_assigned_field_id: metadata.last_column_id(),
                },
            ];
            let updates = vec![
                TableUpdate::AddSchema { schema },
                TableUpdate::SetCurrentSchema { schema_id: -1 },
            ];
            match crate::lake::swap::swap(self, &table, "upgrade", updates, &requirements).await {
                Ok(_) => tracing::info!(
                    "added the columns floe.events lacked (owner_epoch, request_fingerprint)"
                ),
                Err(Error::CommitConflict { .. }) => {}
                Err(e) => return Err(e),
            }
            table = self.load_table().await?;
        }
        Err(Error::CommitConflict {
            operation: "upgrade",
            reason: format!(
                "the table kept changing over {ATTEMPTS} attempts to add its new columns"
            ),
        })
    }

    /// Writes and deletes a small file under the table's data location.
    async fn probe_warehouse(&self, table: &Table) -> Result<()> {
        let dir = format!("{}/data", table.metadata().location());
        probe(table.file_io(), &dir, &self.location).await
    }
}

/// Lists a fresh prefix of the warehouse (a read: nothing is there, nothing
/// is deleted), which an object store answers with `NoSuchBucket` when the
/// bucket is missing. Done before any write, because some S3-compatible
/// servers (s3s-fs) create a bucket on the first write instead of refusing
/// it, and then the lake would live in a bucket nobody provisioned. Any
/// other failure (credentials, endpoint) is reported as the write probe
/// reports it, without waiting for the write to fail the same way.
async fn check_bucket(io: &FileIO, warehouse: &str, location: &LakeLocation) -> Result<()> {
    let prefix = format!("{warehouse}/.floe-probe-{}", uuid::Uuid::new_v4());
    match io.delete_prefix(&prefix).await {
        Err(e) if is_no_such_bucket(&e) => {
            let bucket = warehouse
                .split_once("://")
                .map_or(warehouse, |(_, rest)| rest)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            Err(Error::BucketMissing {
                bucket,
                warehouse: location.warehouse.clone(),
                endpoint: store_endpoint(location),
            })
        }
        Err(e) => Err(unusable(e, location)),
        Ok(()) => Ok(()),
    }
}

/// The object store a location's storage talks to, as messages name it.
pub fn store_endpoint(location: &LakeLocation) -> String {
    location
        .properties
        .get("s3.endpoint")
        .filter(|e| !e.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "AWS S3 (no s3.endpoint in [lake.properties])".to_string())
}

/// A failed probe: the store did not answer, or it refused (credentials,
/// permissions, a wrong setting).
fn unusable(e: iceberg::Error, location: &LakeLocation) -> Error {
    if crate::outage(&e).is_some() {
        return Error::StoreUnavailable {
            endpoint: store_endpoint(location),
            warehouse: location.warehouse.clone(),
            cause: Box::new(e),
        };
    }
    Error::WarehouseNotWritable {
        warehouse: location.warehouse.clone(),
        cause: Box::new(e),
    }
}

/// The S3 error code of a missing bucket, anywhere in the storage error
/// (the S3 client keeps the server's error document in its message).
fn is_no_such_bucket(e: &iceberg::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.to_string().contains("NoSuchBucket") {
            return true;
        }
        source = error.source();
    }
    false
}

/// Writes and deletes a small file in `dir`.
async fn probe(io: &FileIO, dir: &str, location: &LakeLocation) -> Result<()> {
    let path = format!("{dir}/.floe-probe-{}", uuid::Uuid::new_v4());
    let written = async {
        io.new_output(&path)?
            .write(bytes::Bytes::from_static(b"probe"))
            .await?;
        io.delete(&path).await
    }
    .await;
    written.map_err(|e| unusable(e, location))
}
