//! Cluster tests with real processes: one etcd, one tansu broker and N
//! `floe serve` nodes on 127.0.0.1, each on a port picked free. Nodes can be
//! killed (SIGKILL), paused (SIGSTOP) and resumed (SIGCONT). A small client
//! follows `503 not_owner` answers to the owner they name, as the client
//! library does. Everything a test starts is stopped when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_cluster::ClusterConfig;
use floe_cluster::testing::EtcdServer;
use floe_emitter::TansuBroker;
use serde_json::Value;

pub(crate) const SHARDS: u32 = 6;
pub(crate) const PARTITIONS: u32 = 4;
/// The `cluster.token` every node of a test cluster shares.
pub(crate) const CLUSTER_TOKEN: &str = "test-cluster-token-0123456789";

/// etcd, the broker and a topic, shared by the nodes of one test.
pub(crate) struct Harness {
    pub(crate) etcd: EtcdServer,
    pub(crate) broker: TansuBroker,
    pub(crate) topic: String,
    pub(crate) cluster_id: String,
    pub(crate) dir: tempfile::TempDir,
    /// The lake every node shares (`with_lake`): SQLite catalog and local
    /// warehouse under this directory; `None`: the lake is off.
    pub(crate) lake: Option<PathBuf>,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        let etcd = EtcdServer::start()
            .await
            .unwrap_or_else(|e| panic!("the cluster tests need etcd: {e}"));
        let broker = tokio::task::spawn_blocking(TansuBroker::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the cluster tests need a broker: {e}"));
        Harness {
            etcd,
            broker,
            topic: format!("floe-cluster-{}", uuid::Uuid::new_v4().simple()),
            cluster_id: "test".into(),
            dir: tempfile::tempdir().unwrap(),
            lake: None,
        }
    }

    /// Turns the shared lake on for the nodes started from now on: every
    /// node is a candidate of the sink's election (`lake.sink = true`).
    pub(crate) fn with_lake(mut self) -> Harness {
        let lake = self.dir.path().join("lake");
        std::fs::create_dir_all(&lake).unwrap();
        self.lake = Some(lake);
        self
    }

    /// The `[lake]` section of every node.
    fn lake_section(&self) -> String {
        match &self.lake {
            None => "[lake]\nenabled = false\n".into(),
            Some(dir) => format!(
                "[lake]\nenabled = true\nsink = true\ncatalog = \"sqlite://{}\"\n\
                 warehouse = \"file://{}\"\ncommit_interval_ms = 500\n",
                dir.join("catalog.db").display(),
                dir.join("warehouse").display()
            ),
        }
    }

    pub(crate) fn pipeline(&self) -> String {
        format!(
            "kafka://{}/{}?partitions={PARTITIONS}",
            self.broker.bootstrap(),
            self.topic
        )
    }

    /// The `[cluster]` section of node `id` on `port` (test timings: 2 s TTL).
    pub(crate) fn cluster_config(&self, id: &str, port: u16) -> ClusterConfig {
        ClusterConfig {
            token: Some(floe_cluster::ClusterToken::new(CLUSTER_TOKEN)),
            ..self.etcd.node_config(&self.cluster_id, id, port)
        }
    }

    /// A node's whole configuration file.
    pub(crate) fn config_text(&self, id: &str, cluster: &ClusterConfig, pipeline: &str) -> String {
        format!(
            "data_dir = \"{data}\"\npipeline = \"{pipeline}\"\n\n[topology]\nshards = {SHARDS}\n\n\
             [partition_key]\nfields = [\"$id\"]\n\n[kafka]\nrequest_timeout_ms = 5000\n\n\
             {lake}\n[serve]\nauth = \"disabled\"\n\n[cluster]\n{cluster}",
            data = self.dir.path().join(id).join("data").display(),
            lake = self.lake_section(),
            cluster = toml::to_string(cluster).unwrap(),
        )
    }

    /// Starts node `id` with the standard configuration and waits until it
    /// is ready.
    pub(crate) fn node(&self, id: &str) -> Node {
        let port = free_port();
        let cluster = self.cluster_config(id, port);
        let node = Node::spawn(
            self.dir.path(),
            id,
            port,
            &self.config_text(id, &cluster, &self.pipeline()),
        );
        node.wait_ready(Duration::from_secs(60));
        node
    }

    /// Starts node `id` on `port` (a restart keeps its port and data
    /// directory) and waits until it is ready.
    pub(crate) fn node_on(&self, id: &str, port: u16) -> Node {
        let cluster = self.cluster_config(id, port);
        let node = Node::spawn(
            self.dir.path(),
            id,
            port,
            &self.config_text(id, &cluster, &self.pipeline()),
        );
        node.wait_ready(Duration::from_secs(60));
        node
    }

    /// The node records registered in etcd now.
    pub(crate) async fn registered(&self) -> Vec<floe_cluster::NodeRecord> {
        let client = self.etcd.client().await.unwrap();
        let config = self.cluster_config("probe", 1);
        floe_cluster::live_nodes(&client, &config)
            .await
            .unwrap()
            .into_values()
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The nodes' output is printed as they drop (`Node`); the broker's
        // tells whether it answered them.
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join(format!("{}-broker.log", self.topic));
            let _ = std::fs::copy(self.broker.dir().join("broker.log"), &kept);
            eprintln!(
                "----- the broker's log (its end; all of it in {}) -----\n{}\n----- end of the broker's log -----",
                kept.display(),
                self.broker.log()
            );
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `floe serve` process.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) port: u16,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    /// The threads copying its output; they end at EOF once it exits.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Starts `floe serve` with `config` (written to `dir/<id>.toml`),
    /// listening on `port`; does not wait for readiness.
    pub(crate) fn spawn(dir: &Path, id: &str, port: u16, config: &str) -> Node {
        let path: PathBuf = dir.join(format!("{id}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_remove("FLOE_TOKENS")
            .env_remove("FLOE_DATA")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting floe serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let stderr = stderr.clone();
            readers.push(std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    stderr.lock().unwrap().push_str(&line);
                    line.clear();
                }
            }));
        }
        Node {
            id: id.into(),
            port,
            child: Some(child),
            stderr,
            readers,
        }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn output(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub(crate) fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if status_of(&format!("{}/readyz", self.base())) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready in {timeout:?}: {}",
                self.id,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit on its own.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                // Everything it wrote is read before the caller looks at it.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit: {}",
                self.id,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL, as a crash; reaps the process.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn pause(&self) {
        self.signal("STOP");
    }

    pub(crate) fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGTERM and wait for a clean exit.
    pub(crate) fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(timeout)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failing test shows what every node said: the harness keeps the
        // output, and a panic is the only moment anyone can look at it.
        if std::thread::panicking() {
            eprintln!(
                "----- output of node {} -----\n{}----- end of node {} -----",
                self.id,
                self.output(),
                self.id
            );
        }
        if let Some(mut child) = self.child.take() {
            // A paused process must be resumed to die of SIGKILL promptly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A GET's status code, or `None` if nothing answered.
fn status_of(url: &str) -> Option<u16> {
    use std::io::Write;
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    BufReader::new(stream).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// What one call came to.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    /// The node (by address) that answered.
    pub(crate) addr: String,
    /// The owner (node id) that node forwarded the call to, if it did.
    pub(crate) forwarded_to: Option<String>,
}

/// A client that sends a call to a node and, on `503 not_owner` naming an
/// owner, to that owner; other 503s and connection failures are retried
/// after a pause, until `deadline`.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) http: reqwest::Client,
}

impl Caller {
    pub(crate) fn new() -> Caller {
        Caller {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    /// One attempt at `addr`: `None` when nothing answered.
    pub(crate) async fn once(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Option<Answer> {
        let mut request = self.http.request(method, format!("http://{addr}{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let forwarded_to = response
            .headers()
            .get(floe_cluster::FORWARDED_TO)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.ok()?;
        Some(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            addr: addr.into(),
            forwarded_to,
        })
    }

    /// Retries until an answer that is not a 503 (or a connection failure),
    /// following `not_owner` to the owner named; `addrs` are tried in turn
    /// otherwise. Returns the answer and how many attempts it took.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        addrs: &[String],
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        deadline: Duration,
    ) -> Answer {
        let until = Instant::now() + deadline;
        let mut next = 0usize;
        let mut target = addrs[0].clone();
        loop {
            let answer = self
                .once(method.clone(), &target, path, body, idempotency_key)
                .await;
            match answer {
                Some(a) if a.status != 503 => return a,
                Some(a) => {
                    let owner = a.body["error"]["owner"]["addr"]
                        .as_str()
                        .map(str::to_string);
                    assert!(
                        Instant::now() < until,
                        "{method} {path}: still 503 after {deadline:?}: {}",
                        a.body
                    );
                    match owner {
                        Some(owner) if owner != target => target = owner,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            next += 1;
                            target = addrs[next % addrs.len()].clone();
                        }
                    }
                }
                None => {
                    assert!(
                        Instant::now() < until,
                        "{method} {path}: no node answered within {deadline:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    next += 1;
                    target = addrs[next % addrs.len()].clone();
                }
            }
        }
    }
}
