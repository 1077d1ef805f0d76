//! What a snapshot references: its manifest list, manifests and live data
//! files, read from the table's own metadata.

use std::collections::BTreeSet;

use iceberg::spec::{DataFile, ManifestContentType, SnapshotRef};
use iceberg::table::Table;

use crate::error::{Error, Result};

/// The live data files of `snapshot` (entries added or existing).
pub(crate) async fn live_data_files(
    table: &Table,
    snapshot: &SnapshotRef,
) -> Result<Vec<DataFile>> {
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(|e| Error::iceberg("reading the manifest list", e))?;
    let mut files = Vec::new();
    for manifest in list.entries() {
        if manifest.content != ManifestContentType::Data {
            continue;
        }
        let loaded = manifest
            .load_manifest(table.file_io())
            .await
            .map_err(|e| Error::iceberg("reading a manifest", e))?;
        files.extend(
            loaded
                .entries()
                .iter()
                .filter(|e| e.is_alive())
                .map(|e| e.data_file().clone()),
        );
    }
    Ok(files)
}

/// Every file `snapshot` needs to be read: its manifest list, its manifests
/// and the data and delete files they list as live.
pub(crate) async fn referenced_by(
    table: &Table,
    snapshot: &SnapshotRef,
    into: &mut BTreeSet<String>,
) -> Result<()> {
    into.insert(snapshot.manifest_list().to_string());
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(|e| Error::iceberg("reading the manifest list", e))?;
    for manifest in list.entries() {
        // Manifests are shared between snapshots: read each once.
        if !into.insert(manifest.manifest_path.clone()) {
            continue;
        }
        let loaded = manifest
            .load_manifest(table.file_io())
            .await
            .map_err(|e| Error::iceberg("reading a manifest", e))?;
        into.extend(
            loaded
                .entries()
                .iter()
                .filter(|e| e.is_alive())
                .map(|e| e.file_path().to_string()),
        );
    }
    Ok(())
}
