//! A local Kafka-protocol broker for tests and benchmarks: tansu with its
//! SQLite engine, on 127.0.0.1, a free port and its own temporary directory.
//!
//! The binary is found at `$FLOE_TANSU_BIN`, else `tansu` on `PATH`, else
//! `~/.cargo/floe-tools/bin/tansu` (where `scripts/install-tansu.sh` puts
//! it). The broker is killed when the [`TansuBroker`] is dropped; `stop` and
//! `kill` and `restart` keep its data directory and port, for outage
//! tests.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerError {
    let context = context.into();
    move |cause| BrokerError::Io { context, cause }
}

/// A running (or stopped) tansu broker that this process started.
#[derive(Debug)]
pub struct TansuBroker {
    binary: PathBuf,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl TansuBroker {
    /// Finds the binary, starts a broker on a free loopback port in a new
    /// temporary directory, and waits until it accepts connections.
    pub fn start() -> Result<TansuBroker> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("floe-tansu-")
            .tempdir()
            .map_err(io("creating the broker's temporary directory"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("finding a free port"))?
            .port();
        let mut broker = TansuBroker {
            binary,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The broker's working directory (its SQLite database and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the broker process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the broker with SIGTERM (SIGKILL after 10 s) and waits for it to
    /// exit. Its data stays for [`TansuBroker::restart`].
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child
                .try_wait()
                .map_err(io("waiting for the broker"))?
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                child.wait().map_err(io("waiting for the broker"))?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().map_err(io("waiting for the broker"))?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io("creating the broker's log file"))?;
        let start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let url = format!("tcp://{}", self.addr);
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            // The caller's log filter is not the broker's (it would flood
            // the log with debug output).
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(io("sharing the broker's log file"))?,
            )
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready(start)?;
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

    /// Ready when the log (from byte `start`) says `ready in` and the port
    /// accepts a connection.
    fn wait_ready(&mut self, start: u64) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log_since(start);
            if log.contains("ready in")
                && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                tracing::info!(addr = %self.addr, dir = %self.dir.path().display(), "tansu broker ready");
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().map_err(io("checking the broker"))?,
                None => None,
            };
            let reason = match exited {
                Some(status) => Some(format!("it exited with {status}")),
                None if Instant::now() >= deadline => {
                    Some(format!("not ready after {START_TIMEOUT:?}"))
                }
                None => None,
            };
            if let Some(reason) = reason {
                if exited.is_none()
                    && let Some(mut child) = self.child.take()
                {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                self.child = None;
                return Err(BrokerError::NotReady {
                    addr: self.addr,
                    reason,
                    log: tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last few kilobytes of the broker's output (across restarts), for
    /// diagnosing a failed test.
    pub fn log(&self) -> String {
        tail(&self.log_since(0))
    }

    /// The broker's output from byte `start` of its log file on.
    fn log_since(&self, start: u64) -> String {
        let text = std::fs::read(self.log_path()).unwrap_or_default();
        let from = (start as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }
}

/// The last 4,000 bytes of `text` (at a character boundary).
fn tail(text: &str) -> String {
    let mut from = text.len().saturating_sub(4000);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..].to_string()
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `$FLOE_TANSU_BIN`, `tansu` on `PATH`, `~/.cargo/floe-tools/bin/tansu`.
fn find_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FLOE_TANSU_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(BrokerError::NotFound { fallback: bin })
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let fallback = home.join(".cargo/floe-tools/bin/tansu");
    if is_executable(&fallback) {
        Ok(fallback)
    } else {
        Err(BrokerError::NotFound { fallback })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    File::open(path)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
