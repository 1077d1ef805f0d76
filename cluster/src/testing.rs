//! A real etcd for tests (feature `test-util`): one server per test on free loopback
//! ports in a temporary directory, stopped (killed and reaped) when dropped, and
//! restartable on the same data directory.
//!
//! The binary is `$FLOE_ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on `PATH`. When
//! none exists, [`EtcdServer::start`] fails: tests that need etcd never skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};

/// How long a started etcd gets to answer.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The etcd binary tests run.
pub fn etcd_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FLOE_ETCD_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(Error::Harness(format!(
                "FLOE_ETCD_BIN={} does not exist",
                bin.display()
            )))
        };
    }
    let default = Path::new("/usr/bin/etcd");
    if default.is_file() {
        return Ok(default.to_owned());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Harness(
                "no etcd binary: install it (apt-get install etcd-server, as scripts/test.sh \
                 does) or set FLOE_ETCD_BIN"
                    .into(),
            )
        })
}

/// A free TCP port on 127.0.0.1 (bound, then released for etcd to take).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Harness(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Harness(format!("no free port: {e}")))
}

/// A temporary directory for one etcd server's data, in memory where the
/// machine has a tmpfs at `/dev/shm`.
///
/// etcd preallocates 64 MiB for its write-ahead log at start. The cluster
/// tests start a dozen servers at once, and on a machine whose disk is
/// nearly full (CI machines can be) those allocations failed with "no space
/// left on device" before any test ran. A test's etcd never outlives the
/// machine, so memory is as durable as it needs: a killed and restarted
/// server finds its data.
fn data_dir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("floe-etcd-")
            .tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir().map_err(|e| Error::Harness(format!("temp dir: {e}")))
}

/// One etcd server owned by a test.
#[derive(Debug)]
pub struct EtcdServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers a KV read.
    pub async fn start() -> Result<EtcdServer> {
        let bin = etcd_bin()?;
        let dir = data_dir()?;
        let mut server = EtcdServer {
            dir,
            bin,
            client_port: free_port()?,
            peer_port: free_port()?,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client connected to this server.
    pub async fn client(&self) -> Result<Client> {
        Client::connect([self.endpoint()], None)
            .await
            .map_err(Error::etcd("connect"))
    }

    /// A valid node configuration against this server with short test timings:
    /// 2 s lease TTL, 200 ms keepalives, 800 ms safety margin.
    pub fn node_config(&self, cluster_id: &str, node_id: &str, port: u16) -> ClusterConfig {
        ClusterConfig {
            cluster_id: cluster_id.into(),
            node_id: node_id.into(),
            advertised_addr: format!("127.0.0.1:{port}"),
            etcd_endpoints: vec![self.endpoint()],
            lease_ttl_secs: 2,
            keepalive_interval_ms: 200,
            safety_margin_ms: 800,
            write_timeout_ms: 500,
            etcd_timeout_ms: 1_000,
            handover_poll_ms: 100,
            ..ClusterConfig::default()
        }
    }

    /// Whether the etcd process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills etcd (SIGKILL, as a crash) and reaps it. The data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<()> {
        let log_path = self.dir.path().join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::Harness(format!("log file: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::Harness(format!("log file: {e}")))?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::Harness(format!("running {}: {e}", self.bin.display())))?;
        self.child = Some(child);

        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::Harness(format!(
                    "etcd exited with {status}: {}",
                    log_tail(&log_path)
                )));
            }
            if self.answers().await {
                return Ok(());
            }
            if started.elapsed() > READY_WITHIN {
                self.stop();
                return Err(Error::Harness(format!(
                    "etcd did not answer within {READY_WITHIN:?}: {}",
                    log_tail(&log_path)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn answers(&self) -> bool {
        let probe = async {
            let mut client = Client::connect([self.endpoint()], None).await.ok()?;
            client.get("/floe-harness-probe", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Some(_))
        )
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
