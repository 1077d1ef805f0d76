//! A real `floe serve` process on 127.0.0.1 with an ephemeral port, for the
//! HTTP tests: it writes a config into a temporary directory, starts the
//! binary, reads the bound address from its first stdout line, waits for
//! readiness, and is killed when dropped unless it was stopped. The root
//! package's tests and `client/tests` (which includes this file) share it.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) const VIEWER: &str = "viewer-secret-0123456789";
pub(crate) const OPERATOR: &str = "operator-secret-0123456789";
pub(crate) const ADMIN: &str = "admin-secret-0123456789";

/// The tokens every test server has, as `[serve]` TOML lines.
const TOKENS: &str = r#"tokens = [
  { name = "vera", role = "viewer", secret = "viewer-secret-0123456789" },
  { name = "otto", role = "operator", secret = "operator-secret-0123456789" },
  { name = "ada", role = "admin", secret_env = "TEST_ADMIN_SECRET" },
]"#;

pub(crate) struct FloeServer {
    child: Option<Child>,
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
    pub(crate) dir: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl FloeServer {
    /// The config a server in `dir` uses: `top` goes before any table,
    /// `serve` into `[serve]`, `rest` after it (other tables).
    pub(crate) fn config_text(dir: &Path, top: &str, serve: &str, rest: &str) -> String {
        format!(
            "data_dir = \"{}\"\n{top}\n[log]\nfsync = \"always\"\n[topology]\nshards = 4\n\n[serve]\n{TOKENS}\n{serve}\n\n{rest}\n",
            dir.join("data").display()
        )
    }

    /// Starts a server and waits until it is ready.
    pub(crate) fn start(dir: &Path, top: &str, serve: &str, rest: &str) -> FloeServer {
        let server = Self::spawn(dir, top, serve, rest);
        server.wait_ready(Duration::from_secs(60));
        server
    }

    /// Starts a server without waiting for readiness.
    pub(crate) fn spawn(dir: &Path, top: &str, serve: &str, rest: &str) -> FloeServer {
        Self::spawn_at(dir, "127.0.0.1:0", top, serve, rest)
    }

    /// Starts a server listening on `listen` (to restart one where its
    /// clients know it) and waits until it is ready.
    pub(crate) fn start_at(
        dir: &Path,
        listen: &str,
        top: &str,
        serve: &str,
        rest: &str,
    ) -> FloeServer {
        let server = Self::spawn_at(dir, listen, top, serve, rest);
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn spawn_at(dir: &Path, listen: &str, top: &str, serve: &str, rest: &str) -> FloeServer {
        let config = dir.join("floe.toml");
        std::fs::write(&config, Self::config_text(dir, top, serve, rest)).unwrap();
        let mut child = Command::new(floe_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(listen)
            .env("TEST_ADMIN_SECRET", ADMIN)
            .env_remove("FLOE_TOKENS")
            .env_remove("FLOE_DATA")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting floe serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("floe serve listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}: {}", stderr.lock().unwrap()))
            .to_string();
        FloeServer {
            child: Some(child),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base,
            dir: dir.to_path_buf(),
            stderr,
        }
    }

    /// One request; the reply as JSON (or as a JSON string when it is not).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    /// Polls migration `id` with `token` until it has ended; its job record.
    pub(crate) async fn wait_migration(&self, id: &str, token: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/migrations/{id}"),
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(status, reqwest::StatusCode::OK, "{body}");
            if body["progress"].is_null() && body["job"]["status"] != serde_json::json!("running") {
                return body["job"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "migration never ended: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An operator's PUT of `data` at `path` that must be acknowledged.
    pub(crate) async fn put_ok(&self, path: &str, data: serde_json::Value) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                path,
                Some(OPERATOR),
                Some(&data.to_string()),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "PUT {path}: {body}");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub(crate) fn audit_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("data/audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
            .collect()
    }

    pub(crate) fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = blocking_status(&self.url("/readyz"))
                && status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "floe serve not ready in {timeout:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: the process dies without answering what is in flight.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(timeout)
    }

    /// Waits for the process to exit on its own.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "floe serve did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FloeServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `floe` binary: Cargo's for the root package's tests. Other packages'
/// tests (`client/tests`) find it next to their own binary's directory,
/// `target/<profile>/floe`, which a workspace build (`cargo nextest run
/// --workspace --all-features`) has just built; `FLOE_BIN` overrides it.
fn floe_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLOE_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(bin) = option_env!("CARGO_BIN_EXE_floe") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("floe"))
        .unwrap();
    assert!(
        bin.is_file(),
        "no floe binary at {}: build the workspace first (cargo build --workspace --all-features) or set FLOE_BIN",
        bin.display()
    );
    bin
}

/// A GET without a client library: the status code only.
fn blocking_status(url: &str) -> std::io::Result<u16> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = String::new();
    BufReader::new(stream).read_line(&mut head)?;
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {head:?}")))
}

/// Prometheus/OpenMetrics text parsed into `name{labels}` -> value. Panics
/// on any line that is not a comment, `# EOF` or a valid sample.
pub(crate) fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        assert!(!saw_eof, "a line after # EOF: {line:?}");
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.starts_with("# UNIT ")
        {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.ends_with('}'), "unclosed labels in {line:?}");
            for pair in labels[1..labels.len() - 1]
                .split("\",")
                .filter(|p| !p.is_empty())
            {
                let (key, val) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name in {line:?}"
                );
                assert!(!val.contains('\n'));
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    assert!(saw_eof, "no # EOF");
    samples
}

/// Sum of every series of `name` whose labels contain all of `with`.
pub(crate) fn sum(
    samples: &std::collections::BTreeMap<String, f64>,
    name: &str,
    with: &[&str],
) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let base = series.split('{').next().unwrap();
            base == name && with.iter().all(|w| series.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The `code` of an error reply.
pub(crate) fn error_code(body: &serde_json::Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}
