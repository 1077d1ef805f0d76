//! A local S3-compatible object store for tests and benchmarks (feature
//! `test-util`): `floe-s3-server` (tools/s3-server: s3s-fs's store with
//! TCP_NODELAY set) on 127.0.0.1, a free port, its own temporary directory
//! and its own credentials.
//!
//! The binary is found at `$FLOE_S3S_BIN`, else `floe-s3-server` on `PATH`,
//! else `~/.cargo/floe-tools/bin/floe-s3-server` (where
//! `scripts/install-s3s.sh` puts it). A bucket is a folder of the server's
//! directory. The server is killed when the [`S3Server`] is dropped;
//! [`S3Server::stop`] and [`S3Server::start_again`] keep its directory and
//! port, for outage tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::process::{self, ProcessError, Readiness, ServerProcess};

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The region the test server's clients sign for (the server accepts any).
const TEST_REGION: &str = "us-east-1";

/// Why an S3 server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3ServerError {
    /// No floe-s3-server binary was found.
    #[error(
        "no floe-s3-server binary found (looked at $FLOE_S3S_BIN, `floe-s3-server` on PATH and {}): install it with scripts/install-s3s.sh (`cargo install --path tools/s3-server --locked --root ~/.cargo/floe-tools`) or export FLOE_S3S_BIN",
        fallback.display()
    )]
    NotFound {
        /// The last place looked.
        fallback: PathBuf,
    },
    /// Starting, stopping or waiting for the process, or creating a bucket, failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The server did not become ready.
    #[error("the S3 server did not become ready on {addr}: {reason}; its output: {log}")]
    NotReady {
        /// Where it should listen.
        addr: SocketAddr,
        /// What happened.
        reason: String,
        /// The end of its log.
        log: String,
    },
}

type Result<T> = std::result::Result<T, S3ServerError>;

impl From<ProcessError> for S3ServerError {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::Io { context, cause } => S3ServerError::Io { context, cause },
            ProcessError::NotReady { addr, reason, log } => {
                S3ServerError::NotReady { addr, reason, log }
            }
        }
    }
}

/// A running (or stopped) S3 server that this process started.
#[derive(Debug)]
pub struct S3Server {
    // Declared before `dir`: the process is killed before its directory is
    // removed.
    process: ServerProcess,
    dir: tempfile::TempDir,
    access_key: String,
    secret_key: String,
}

impl S3Server {
    /// Finds the binary, starts a server on a free loopback port over a new
    /// temporary directory with fresh credentials, and waits until it
    /// accepts connections.
    pub fn start() -> Result<S3Server> {
        let binary = process::find_binary("FLOE_S3S_BIN", "floe-s3-server")
            .map_err(|fallback| S3ServerError::NotFound { fallback })?;
        let dir = tempfile::Builder::new()
            .prefix("floe-s3-")
            .tempdir()
            .map_err(process::io("creating the S3 server's temporary directory"))?;
        std::fs::create_dir(dir.path().join("data"))
            .map_err(process::io("creating the S3 server's data directory"))?;
        let addr = process::free_loopback_addr()?;
        let log = dir.path().join("s3-server.log");
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let mut server = S3Server {
            process: ServerProcess::new("S3 server", binary, addr, log),
            dir,
            access_key: format!("floe-test-{}", &unique[..12]),
            secret_key: format!("secret-{unique}"),
        };
        server.spawn()?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the `s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.process.addr())
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Creates a bucket (a folder under the server's root).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let path = self.root().join(name);
        std::fs::create_dir_all(&path).map_err(|cause| S3ServerError::Io {
            context: format!("creating bucket {name}"),
            cause,
        })
    }

    /// The directory the server stores objects in (one folder per bucket).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The Iceberg storage properties (`lake.properties`) for this server:
    /// endpoint, credentials, region and path-style addressing.
    pub fn properties(&self) -> HashMap<String, String> {
        HashMap::from([
            ("s3.endpoint".to_string(), self.endpoint()),
            ("s3.access-key-id".to_string(), self.access_key.clone()),
            ("s3.secret-access-key".to_string(), self.secret_key.clone()),
            ("s3.region".to_string(), TEST_REGION.to_string()),
            ("s3.path-style-access".to_string(), "true".to_string()),
        ])
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Kills the server (an outage: connections are refused) and waits for
    /// it to exit. Its objects stay for [`S3Server::start_again`].
    pub fn stop(&mut self) -> Result<()> {
        Ok(self.process.kill()?)
    }

    /// Starts the server again on the same port, objects and credentials.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The last few kilobytes of the server's output (across restarts).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Starts the process; ready when the port accepts a connection.
    fn spawn(&mut self) -> Result<()> {
        let port = self.process.addr().port().to_string();
        let (access_key, secret_key, root) = (
            self.access_key.clone(),
            self.secret_key.clone(),
            self.root(),
        );
        Ok(self.process.start(
            |command| {
                command
                    .args(["--host", "127.0.0.1"])
                    .args(["--port", &port])
                    .args(["--access-key", &access_key])
                    .args(["--secret-key", &secret_key])
                    .arg(root)
                    .env("RUST_LOG", "warn");
            },
            Readiness {
                log_says: None,
                timeout: START_TIMEOUT,
            },
        )?)
    }
}
