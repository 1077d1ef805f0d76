//! The lake backends the lake tests run every body against, each for real:
//! floe's SQLite catalog with a local warehouse, and floe's REST catalog
//! server (`floe_catalog`, what `floe catalog serve` runs) with an `s3://`
//! warehouse on a local S3 server (floe-s3-server, s3s-fs's store).
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use floe::Config;
use floe_catalog::{CatalogServer, ServerOptions};
use floe_emitter::S3Server;
use floe_emitter::sink::CATALOG_NAME;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bucket every S3 backend uses.
pub(crate) const BUCKET: &str = "lake";
/// Its warehouse.
pub(crate) const WAREHOUSE: &str = "s3://lake/warehouse";

/// Which lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `sqlite://` in the data directory, `file://DATA/warehouse`.
    SqliteLocal,
    /// `rest://` (floe's catalog server) over `s3://` (floe-s3-server).
    RestS3,
}

/// A running REST catalog server on loopback.
pub(crate) struct RestCatalog {
    pub(crate) uri: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RestCatalog {
    /// Serves the SQLite catalog at `catalog_path` over `s3` on a free port.
    pub(crate) async fn start(catalog_path: &Path, s3: &S3Server) -> RestCatalog {
        let server = CatalogServer::open(ServerOptions {
            catalog_path: catalog_path.to_path_buf(),
            catalog_name: CATALOG_NAME.to_string(),
            warehouse: WAREHOUSE.to_string(),
            properties: s3.properties(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let listener = CatalogServer::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        RestCatalog {
            uri,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the port is closed.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RestCatalog {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One lake backend, started for one test.
pub(crate) struct TestLake {
    pub(crate) backend: Backend,
    dir: tempfile::TempDir,
    pub(crate) s3: Option<S3Server>,
    pub(crate) rest: Option<RestCatalog>,
}

impl TestLake {
    /// Starts what the backend needs (nothing for the embedded one).
    pub(crate) async fn start(backend: Backend) -> TestLake {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rest) = match backend {
            Backend::SqliteLocal => (None, None),
            Backend::RestS3 => {
                let s3 = S3Server::start().unwrap_or_else(|e| panic!("{e}"));
                s3.create_bucket(BUCKET).unwrap();
                let rest = RestCatalog::start(&dir.path().join("catalog.db"), &s3).await;
                (Some(s3), Some(rest))
            }
        };
        TestLake {
            backend,
            dir,
            s3,
            rest,
        }
    }

    /// Points `config`'s `[lake]` at this backend.
    pub(crate) fn apply(&self, config: &mut Config) {
        if let (Some(s3), Some(rest)) = (&self.s3, &self.rest) {
            config.lake.catalog = rest.uri.replacen("http://", "rest://", 1);
            config.lake.warehouse = WAREHOUSE.to_string();
            config.lake.properties = s3.properties().into_iter().collect::<BTreeMap<_, _>>();
        }
    }

    /// The services this backend talks to over the network (the REST
    /// catalog's URI, the object store's endpoint): what an outage message
    /// names.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rest) = &self.rest {
            out.push(rest.uri.clone());
        }
        if let Some(s3) = &self.s3 {
            out.push(s3.endpoint());
        }
        out
    }

    /// pyiceberg's `load_catalog` properties for this backend, where
    /// `data_dir` is the floe data directory (the embedded catalog's home).
    pub(crate) fn pyiceberg_properties(&self, data_dir: &Path) -> Value {
        match (&self.s3, &self.rest) {
            (Some(s3), Some(rest)) => json!({
                "type": "rest",
                "uri": rest.uri,
                "warehouse": WAREHOUSE,
                "s3.endpoint": s3.endpoint(),
                "s3.access-key-id": s3.access_key(),
                "s3.secret-access-key": s3.secret_key(),
                "s3.region": "us-east-1",
            }),
            _ => {
                let data = data_dir.canonicalize().unwrap();
                json!({
                    "type": "sql",
                    "uri": format!("sqlite:///{}/catalog.db", data.display()),
                    "warehouse": format!("file://{}/warehouse", data.display()),
                })
            }
        }
    }
}

/// The interpreter of the independent readers (pyiceberg): fails, never
/// skips, when it is not configured.
pub(crate) fn python() -> String {
    match std::env::var("FLOE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "FLOE_PYTHON is not set (the independent reader is part of the contract): run FLOE_PYTHON=$(scripts/python-env.sh) or scripts/test.sh"
        ),
    }
}

/// Runs `tests/readers/iceberg_rest_reader.py MODE PROPS` off the async
/// runtime (the REST catalog it talks to may be served by this process).
pub(crate) async fn pyiceberg(mode: &str, properties: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/iceberg_rest_reader.py");
    let (mode, properties) = (mode.to_string(), properties.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .arg(mode)
            .arg(properties)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
