//! Lake maintenance in the assembled system: `floe lake compact`,
//! `floe lake expire`, and the policy that runs beside the sink.
//!
//! Maintenance takes no data-directory lock: its commits are
//! compare-and-swaps on the catalog that retry around the sink's, so it runs
//! beside a live `Floe` or `floe sink` (see docs/operations.md).

use floe_emitter::lake::{
    CompactReport, ExpireOptions, ExpireReport, Maintenance, compact, expire,
};
use floe_emitter::sink::{CatalogUrl, Lake};

use crate::error::{Error, Result};
use floe_config::Config;

/// Opens the configured lake for maintenance (it must exist already).
async fn open(config: &Config, needs: &'static str) -> Result<Lake> {
    config.validate()?;
    if !config.lake.enabled {
        return Err(Error::LakeDisabled { needs });
    }
    let location = config.lake.location(&config.data_dir)?;
    if let CatalogUrl::Sqlite(path) = &location.catalog
        && !path.exists()
    {
        return Err(Error::NoLake { path: path.clone() });
    }
    Lake::open(location).await.map_err(Error::Lake)
}

/// `floe lake compact`: merges the small files of every partition (all of
/// them, or by size tier as the background policy does with `tiered`).
pub async fn compact_lake(config: &Config, tiered: bool) -> Result<CompactReport> {
    let lake = open(config, "compaction").await?;
    compact(&lake, &config.lake.compact_options(tiered))
        .await
        .map_err(Error::Lake)
}

/// `floe lake expire`: expires snapshots and deletes unreferenced files.
pub async fn expire_lake(config: &Config, options: &ExpireOptions) -> Result<ExpireReport> {
    let lake = open(config, "expiry").await?;
    expire(&lake, options).await.map_err(Error::Lake)
}

/// Starts the background policy beside a sink, when configured and the
/// catalog supports its commits.
pub(crate) fn start_policy(lake: &Lake, config: &Config) -> Option<Maintenance> {
    let options = config.lake.maintenance_options()?;
    if let CatalogUrl::Rest(uri) = &lake.location().catalog {
        tracing::warn!(catalog = %uri, "lake maintenance needs the SQLite catalog so far; the policy does not run");
        return None;
    }
    match Maintenance::start(lake.clone(), options) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(error = %e, "lake maintenance cannot start");
            None
        }
    }
}
