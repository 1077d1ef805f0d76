//! One server process that a test harness started (the tansu broker, the
//! S3 server, floe-s3-server): found on the machine, run on a loopback port with
//! its output appended to a log file, ready when it accepts connections
//! (and, for some, when its log says so), stopped or killed on demand and
//! killed when dropped. Stopping keeps the port and the log, so the same
//! server can be started again for outage tests.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often a starting server is checked.
const POLL: Duration = Duration::from_millis(25);

/// Why a server process could not be started, checked or stopped.
#[derive(Debug)]
pub(crate) enum ProcessError {
    /// An OS call failed.
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The server did not become ready.
    NotReady {
        /// Where it should listen.
        addr: SocketAddr,
        /// What happened.
        reason: String,
        /// The end of its output since this start.
        log: String,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let context = context.into();
    move |cause| ProcessError::Io { context, cause }
}

/// `127.0.0.1` and a port nobody listens on now.
pub(crate) fn free_loopback_addr() -> Result<SocketAddr, ProcessError> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("finding a free port"))?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `$ENV_VAR`, else `name` on `PATH`, else `~/.cargo/floe-tools/bin/NAME`
/// (where `scripts/install-tool.sh` puts it). `Err` holds the last place
/// looked, for the "not found" message.
pub(crate) fn find_binary(env_var: &str, name: &str) -> Result<PathBuf, PathBuf> {
    if let Some(bin) = std::env::var_os(env_var).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(bin)
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let fallback = home.join(".cargo/floe-tools/bin").join(name);
    if is_executable(&fallback) {
        Ok(fallback)
    } else {
        Err(fallback)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    File::open(path)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// When a started server counts as ready.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    /// Text its output (since this start) must contain, if any.
    pub(crate) log_says: Option<&'static str>,
    /// How long it may take.
    pub(crate) timeout: Duration,
}

/// A server process (running or stopped) of a harness.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// What it is, in messages: "broker", "S3 server".
    name: &'static str,
    binary: PathBuf,
    addr: SocketAddr,
    log_path: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// A server (not started) of `binary` listening on `addr`, writing its
    /// output to `log_path`.
    pub(crate) fn new(
        name: &'static str,
        binary: PathBuf,
        addr: SocketAddr,
        log_path: PathBuf,
    ) -> ServerProcess {
        ServerProcess {
            name,
            binary,
            addr,
            log_path,
            child: None,
        }
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the process is running (started and not stopped).
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the binary with what `configure` adds (arguments, working
    /// directory, environment), stdin closed and output appended to the log,
    /// and waits until it is `ready`. A server that exits or stays unready
    /// is killed and reported with the end of its output.
    pub(crate) fn start(
        &mut self,
        configure: impl FnOnce(&mut Command),
        ready: Readiness,
    ) -> Result<(), ProcessError> {
        let name = self.name;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io(format!("creating the {name}'s log file")))?;
        let start = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let mut command = Command::new(&self.binary);
        configure(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(io(format!("sharing the {name}'s log file")))?,
            )
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready(start, ready)
    }

    fn wait_ready(&mut self, start: u64, ready: Readiness) -> Result<(), ProcessError> {
        let deadline = Instant::now() + ready.timeout;
        loop {
            let said = ready
                .log_says
                .is_none_or(|text| self.log_since(start).contains(text));
            if said && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                tracing::info!(addr = %self.addr, log = %self.log_path.display(), "{} ready", self.name);
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child
                    .try_wait()
                    .map_err(io(format!("checking the {}", self.name)))?,
                None => None,
            };
            let reason = match exited {
                Some(status) => Some(format!("it exited with {status}")),
                None if Instant::now() >= deadline => {
                    Some(format!("not ready after {:?}", ready.timeout))
                }
                None => None,
            };
            if let Some(reason) = reason {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(ProcessError::NotReady {
                    addr: self.addr,
                    reason,
                    log: tail(&self.log_since(start)),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the process (SIGKILL, as a crash would) and waits for it to
    /// exit.
    pub(crate) fn kill(&mut self) -> Result<(), ProcessError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(io(format!("waiting for the {}", self.name)))?;
        }
        Ok(())
    }

    /// Stops the process with SIGTERM, SIGKILL after `grace`, and waits for
    /// it to exit.
    pub(crate) fn terminate(&mut self, grace: Duration) -> Result<(), ProcessError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let waiting = format!("waiting for the {}", self.name);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if child.try_wait().map_err(io(waiting.clone()))?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                child.wait().map_err(io(waiting))?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last few kilobytes of its output (across restarts).
    pub(crate) fn log(&self) -> String {
        tail(&self.log_since(0))
    }

    /// Its output from byte `start` of the log file on.
    fn log_since(&self, start: u64) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let from = usize::try_from(start).unwrap_or(usize::MAX).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_exits_is_reported_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr().unwrap();
        let mut server =
            ServerProcess::new("shell", "/bin/sh".into(), addr, dir.path().join("sh.log"));
        let err = server
            .start(
                |c| {
                    c.args(["-c", "echo starting up; exit 3"]);
                },
                Readiness {
                    log_says: None,
                    timeout: Duration::from_secs(30),
                },
            )
            .unwrap_err();
        match err {
            ProcessError::NotReady { reason, log, .. } => {
                assert!(reason.contains("exited"), "{reason}");
                assert!(log.contains("starting up"), "{log}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!server.is_running());
    }

    #[test]
    fn a_listening_server_is_ready_only_once_its_log_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // Something listens, but the log never says "ready in".
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server =
            ServerProcess::new("shell", "/bin/sh".into(), addr, dir.path().join("sh.log"));
        let unready = server.start(
            |c| {
                c.args(["-c", "echo booting; sleep 30"]);
            },
            Readiness {
                log_says: Some("ready in"),
                timeout: Duration::from_millis(500),
            },
        );
        assert!(
            matches!(&unready, Err(ProcessError::NotReady { reason, .. }) if reason.contains("not ready after")),
            "{unready:?}"
        );
        assert!(!server.is_running(), "an unready server is killed");
        server
            .start(
                |c| {
                    c.args(["-c", "echo ready in 1ms; sleep 30"]);
                },
                Readiness {
                    log_says: Some("ready in"),
                    timeout: Duration::from_secs(30),
                },
            )
            .unwrap();
        assert!(server.is_running());
        server.terminate(Duration::from_secs(10)).unwrap();
        assert!(!server.is_running());
        assert!(server.log().contains("booting"), "{}", server.log());
    }
}
