//! `[lake]`: the Iceberg catalog and warehouse the pipeline lands in, and
//! the sink's settings.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use floe_emitter::sink::{CatalogUrl, LakeLocation, SinkOptions};
use serde::{Deserialize, Serialize};

use crate::MaintenanceConfig;
use crate::error::{Error, Result};

/// The Iceberg lake (`[lake]`): where the pipeline lands and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeConfig {
    /// Use the lake at all: recovery reads landed events from it and the
    /// sink can run. Off: floe keeps everything in the pipeline only.
    pub enabled: bool,
    /// Run the sink inside `Floe` (started by open, flushed by close). Off:
    /// run `floe sink` separately.
    pub sink: bool,
    /// The catalog by URL: `sqlite://` (default: `DATA/catalog.db`),
    /// `sqlite:///path/catalog.db`, `rest://host:port` or `http(s)://...`.
    pub catalog: String,
    /// The warehouse: empty for `file://DATA/warehouse`, `file:///dir`, or
    /// `s3://bucket/prefix`.
    pub warehouse: String,
    /// Catalog and storage properties (`s3.endpoint`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.region`, `s3.path-style-access`, `token`...).
    pub properties: BTreeMap<String, String>,
    /// Commit at least this often while events arrive.
    pub commit_interval_ms: u64,
    /// Commit when buffered events reach about this many bytes.
    pub commit_bytes: u64,
    /// Commit when this many events are buffered.
    pub commit_events: u64,
    /// Roll data files over at about this size.
    pub target_file_bytes: u64,
    /// zstd level of the Parquet files.
    pub zstd_level: i32,
    /// The sink's commit lease: another sink may take over only after this
    /// long without renewal.
    pub lease_ms: u64,
    /// Delete embedded-log segments wholly below the committed offsets.
    pub retention: bool,
    /// Compaction and expiry beside the sink (`[lake.maintenance]`).
    pub maintenance: MaintenanceConfig,
}

impl Default for LakeConfig {
    fn default() -> Self {
        let sink = SinkOptions::default();
        LakeConfig {
            enabled: true,
            sink: true,
            catalog: "sqlite://".into(),
            warehouse: String::new(),
            properties: BTreeMap::new(),
            commit_interval_ms: sink.commit_interval.as_millis() as u64,
            commit_bytes: sink.commit_bytes as u64,
            commit_events: sink.commit_events as u64,
            target_file_bytes: sink.target_file_bytes as u64,
            zstd_level: sink.zstd_level,
            lease_ms: sink.lease.as_millis() as u64,
            retention: sink.retention,
            maintenance: MaintenanceConfig::default(),
        }
    }
}

impl LakeConfig {
    /// The sink settings this describes.
    pub fn sink_options(&self) -> SinkOptions {
        SinkOptions {
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            commit_bytes: self.commit_bytes as usize,
            commit_events: self.commit_events as usize,
            target_file_bytes: self.target_file_bytes as usize,
            zstd_level: self.zstd_level,
            lease: Duration::from_millis(self.lease_ms),
            retention: self.retention,
            ..SinkOptions::default()
        }
    }

    /// The catalog and warehouse, with defaults resolved inside `data_dir`.
    pub fn location(&self, data_dir: &Path) -> Result<LakeLocation> {
        let data_dir = std::path::absolute(data_dir)
            .map_err(|e| Error::io(format!("resolving {}", data_dir.display()), e))?;
        let lake_error = |e: floe_emitter::Error| Error::Invalid(format!("lake: {e}"));
        let catalog =
            CatalogUrl::parse(&self.catalog, data_dir.join("catalog.db")).map_err(lake_error)?;
        let warehouse = if self.warehouse.trim().is_empty() {
            format!("file://{}", data_dir.join("warehouse").display())
        } else {
            // Checked as written, so the error names what the user wrote
            // (`s3://` names no bucket; trimmed it would be `s3:`).
            let written = self.warehouse.trim();
            floe_emitter::sink::check_warehouse(written).map_err(lake_error)?;
            let trimmed = written.trim_end_matches('/');
            if trimmed.ends_with(':') {
                written.to_string()
            } else {
                trimmed.to_string()
            }
        };
        floe_emitter::sink::check_warehouse(&warehouse).map_err(lake_error)?;
        Ok(LakeLocation {
            catalog,
            warehouse,
            properties: self.properties.clone().into_iter().collect(),
        })
    }
}
