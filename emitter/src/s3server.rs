//! A local S3-compatible object store for tests and benchmarks (feature
//! `test-util`): `s3s-fs` on 127.0.0.1, a free port, its own temporary
//! directory and its own credentials.
//!
//! The binary is found at `$FLOE_S3S_BIN`, else `s3s-fs` on `PATH`, else
//! `~/.cargo/floe-tools/bin/s3s-fs` (where `scripts/install-s3s.sh` puts
//! it). A bucket is a folder of the server's directory. The server is killed
//! when the [`S3Server`] is dropped; [`S3Server::stop`] and
//! [`S3Server::start_again`] keep its directory and port, for outage tests.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The region the test server's clients sign for (s3s-fs accepts any).
const TEST_REGION: &str = "us-east-1";

/// Why an S3 server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3ServerError {
    /// No s3s-fs binary was found.
    #[error(
        "no s3s-fs binary found (looked at $FLOE_S3S_BIN, `s3s-fs` on PATH and {}): install it with `cargo install s3s-fs --version 0.14.1 --locked --features binary --root ~/.cargo/floe-tools` (what scripts/install-s3s.sh does) or export FLOE_S3S_BIN",
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
    #[error("the s3s-fs server did not become ready on {addr}: {reason}; its output: {log}")]
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

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> S3ServerError {
    let context = context.into();
    move |cause| S3ServerError::Io { context, cause }
}

/// A running (or stopped) s3s-fs server that this process started.
#[derive(Debug)]
pub struct S3Server {
    binary: PathBuf,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// Finds the binary, starts a server on a free loopback port over a new
    /// temporary directory with fresh credentials, and waits until it
    /// accepts connections.
    pub fn start() -> Result<S3Server> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("floe-s3-")
            .tempdir()
            .map_err(io("creating the S3 server's temporary directory"))?;
        std::fs::create_dir(dir.path().join("data"))
            .map_err(io("creating the S3 server's data directory"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("finding a free port"))?
            .port();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let mut server = S3Server {
            binary,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            access_key: format!("floe-test-{}", &unique[..12]),
            secret_key: format!("secret-{unique}"),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the `s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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
        std::fs::create_dir_all(&path).map_err(io(format!("creating bucket {name}")))
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
        self.child.is_some()
    }

    /// Kills the server (an outage: connections are refused) and waits for
    /// it to exit. Its objects stay for [`S3Server::start_again`].
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().map_err(io("waiting for the S3 server"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, objects and credentials.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io("creating the S3 server's log file"))?;
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1"])
            .args(["--port", &self.addr.port().to_string()])
            .args(["--access-key", &self.access_key])
            .args(["--secret-key", &self.secret_key])
            .arg(self.root())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(io("sharing the S3 server's log file"))?,
            )
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Ready when the port accepts a connection.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                tracing::info!(addr = %self.addr, dir = %self.dir.path().display(), "s3s-fs ready");
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().map_err(io("checking the S3 server"))?,
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
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(S3ServerError::NotReady {
                    addr: self.addr,
                    reason,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last few kilobytes of the server's output (across restarts).
    pub fn log(&self) -> String {
        let text = std::fs::read(self.log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut from = text.len().saturating_sub(4000);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text[from..].to_string()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `$FLOE_S3S_BIN`, `s3s-fs` on `PATH`, `~/.cargo/floe-tools/bin/s3s-fs`.
fn find_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FLOE_S3S_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(S3ServerError::NotFound { fallback: bin })
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("s3s-fs");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let fallback = home.join(".cargo/floe-tools/bin/s3s-fs");
    if is_executable(&fallback) {
        Ok(fallback)
    } else {
        Err(S3ServerError::NotFound { fallback })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    File::open(path)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
