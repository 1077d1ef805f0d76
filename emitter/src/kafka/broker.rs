//! A local Kafka-protocol broker for tests and benchmarks: tansu with its
//! SQLite engine, on 127.0.0.1, a free port and its own temporary directory.
//!
//! The binary is found at `$FLOE_TANSU_BIN`, else `tansu` on `PATH`, else
//! `~/.cargo/floe-tools/bin/tansu` (where `scripts/install-tansu.sh` puts
//! it). The broker is killed when the [`TansuBroker`] is dropped; `stop` and
//! `kill` and `restart` keep its data directory and port, for outage
//! tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{self, ProcessError, Readiness, ServerProcess};

/// How long a starting broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a broker could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No tansu binary was found.
    #[error(
        "no tansu broker binary found (looked at $FLOE_TANSU_BIN, `tansu` on PATH and {}): install it with scripts/install-tansu.sh and export FLOE_TANSU_BIN=$(scripts/install-tansu.sh)",
        fallback.display()
    )]
    NotFound {
        /// The last place looked.
        fallback: PathBuf,
    },
    /// Starting, stopping or waiting for the process failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The index the harness adds to the broker's storage could not be
    /// created.
    #[error("adding the header index to the broker's storage {path}: {cause}")]
    Index {
        /// The broker's SQLite database.
        path: PathBuf,
        /// What SQLite said.
        cause: String,
    },
    /// The broker did not become ready.
    #[error("the tansu broker did not become ready on {addr}: {reason}; its output: {log}")]
    NotReady {
        /// Where it should listen.
        addr: SocketAddr,
        /// What happened.
        reason: String,
        /// The end of its log.
        log: String,
    },
}

type Result<T> = std::result::Result<T, BrokerError>;

impl From<ProcessError> for BrokerError {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::Io { context, cause } => BrokerError::Io { context, cause },
            ProcessError::NotReady { addr, reason, log } => {
                BrokerError::NotReady { addr, reason, log }
            }
        }
    }
}

/// A running (or stopped) tansu broker that this process started.
#[derive(Debug)]
pub struct TansuBroker {
    // Declared before `dir`: the process is killed before its directory is
    // removed.
    process: ServerProcess,
    dir: tempfile::TempDir,
}

impl TansuBroker {
    /// Finds the binary, starts a broker on a free loopback port in a new
    /// temporary directory, and waits until it accepts connections.
    pub fn start() -> Result<TansuBroker> {
        let binary = process::find_binary("FLOE_TANSU_BIN", "tansu")
            .map_err(|fallback| BrokerError::NotFound { fallback })?;
        let dir = tempfile::Builder::new()
            .prefix("floe-tansu-")
            .tempdir()
            .map_err(process::io("creating the broker's temporary directory"))?;
        let addr = process::free_loopback_addr()?;
        let log = dir.path().join("broker.log");
        let mut broker = TansuBroker {
            process: ServerProcess::new("broker", binary, addr, log),
            dir,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.process.addr().to_string()
    }

    /// The broker's working directory (its SQLite database and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the broker process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Stops the broker with SIGTERM (SIGKILL after 10 s) and waits for it to
    /// exit. Its data stays for [`TansuBroker::restart`].
    pub fn stop(&mut self) -> Result<()> {
        Ok(self.process.terminate(Duration::from_secs(10))?)
    }

    /// Kills the broker (SIGKILL), as a crash would, and waits for it to
    /// exit. Its data stays for [`TansuBroker::restart`].
    ///
    /// Outage tests use this rather than [`TansuBroker::stop`]: tansu 0.6
    /// stopped with SIGTERM while producers write stops its storage first,
    /// answers UNKNOWN_SERVER_ERROR until it is killed, and the idempotent
    /// producer's epoch bump that follows makes the restarted broker's
    /// storage panic.
    pub fn kill(&mut self) -> Result<()> {
        Ok(self.process.kill()?)
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The last few kilobytes of the broker's output (across restarts), for
    /// diagnosing a failed test.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Starts the process; ready when its log says `ready in` and the port
    /// accepts a connection.
    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://{}", self.process.addr());
        let dir = self.dir.path().to_path_buf();
        self.process.start(
            |command| {
                command
                    .arg("broker")
                    .args(["--listener-url", &url, "--advertised-listener-url", &url])
                    .args(["--storage-engine", "sqlite://tansu.db"])
                    .current_dir(&dir)
                    .env_remove("LISTENER_URL")
                    .env_remove("ADVERTISED_LISTENER_URL")
                    .env_remove("STORAGE_ENGINE")
                    // The caller's log filter is not the broker's (it would
                    // flood the log with debug output).
                    .env_remove("RUST_LOG");
            },
            Readiness {
                log_says: Some("ready in"),
                timeout: START_TIMEOUT,
            },
        )?;
        self.index_headers()
    }

    /// Adds the index tansu 0.6's SQLite schema lacks: it looks up the
    /// headers of every record it returns by `(topition, offset_id)`, and
    /// without an index each lookup scans every header of every topic, so a
    /// fetch of a few thousand records carrying headers (floe's do) takes
    /// seconds and holds the broker's single storage task meanwhile: the
    /// producers stall behind it. The broker created its tables before it
    /// said it was ready; the index persists in its database.
    fn index_headers(&self) -> Result<()> {
        let path = self.dir.path().join("tansu.db");
        let url = format!("sqlite://{}", path.display());
        let failed = |cause: String| BrokerError::Index {
            path: path.clone(),
            cause,
        };
        // The harness is called from sync and async code alike: the one
        // statement runs on a thread of its own with its own runtime.
        let created = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    runtime.block_on(async {
                        use sqlx::ConnectOptions;
                        let options: sqlx::sqlite::SqliteConnectOptions =
                            url.parse().map_err(|e: sqlx::Error| e.to_string())?;
                        let mut connection = options
                            .busy_timeout(Duration::from_secs(30))
                            .connect()
                            .await
                            .map_err(|e| e.to_string())?;
                        sqlx::query(
                            "create index if not exists floe_header_record on header (topition, offset_id)",
                        )
                        .execute(&mut connection)
                        .await
                        .map_err(|e| e.to_string())?;
                        Ok::<(), String>(())
                    })
                })
                .join()
                .map_err(|_| "the indexing thread panicked".to_string())?
        });
        created.map_err(failed)
    }
}
