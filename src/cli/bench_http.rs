//! `floe bench http`: acknowledged writes/s through `floe serve` (HTTP/1.1
//! keep-alive connections, a bearer token, JSON bodies) against the same
//! writes through the library, in the same run on the same machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use floe::serve::Server;
use floe::{Config, FsyncMode, Role, Secret, TokenConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{IngestArgs, ingest_once, payload, report};

const TOKEN: &str = "bench-operator-secret-0123456789";

#[derive(Debug, Args)]
pub(super) struct HttpArgs {
    /// Acknowledged writes per run.
    #[arg(long, default_value_t = 100_000)]
    writes: u64,
    /// Concurrent callers, each with one keep-alive connection.
    #[arg(long, default_value_t = 64)]
    callers: u64,
    /// Shards.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Approximate size of each entity's JSON.
    #[arg(long, default_value_t = 500)]
    payload_bytes: usize,
    /// fsync mode of the embedded log: always or never.
    #[arg(long, default_value = "always")]
    fsync: String,
}

pub(super) async fn run(config: Config, args: HttpArgs) -> anyhow::Result<()> {
    let fsync = match args.fsync.as_str() {
        "always" => FsyncMode::Always,
        "never" => FsyncMode::Never,
        other => anyhow::bail!("--fsync must be always or never, not {other:?}"),
    };
    println!(
        "http: {} puts of ~{} B JSON, {} callers, {} shards, embedded log, fsync {}",
        args.writes, args.payload_bytes, args.callers, args.shards, args.fsync
    );
    let prepare = |dir: &std::path::Path| {
        let mut config = config.clone();
        config.data_dir = dir.to_path_buf();
        config.pipeline = "file://".into();
        config.topology.shards = args.shards;
        config.log.fsync = fsync;
        config.lake.enabled = false;
        config
    };
    let library_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let library = ingest_once(
        prepare(library_dir.path()),
        &IngestArgs {
            writes: args.writes,
            callers: args.callers,
            batch: 0,
            batch_callers: 0,
            shards: args.shards,
            payload_bytes: args.payload_bytes,
            fsync: args.fsync.clone(),
            pipeline: None,
            start_broker: false,
        },
        args.callers,
        1,
    )
    .await?;
    println!(
        "  library {:>10.0} acked writes/s  {}",
        library.writes_per_s,
        report::latency_summary(&library.histogram)
    );
    let http_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let (writes_per_s, histogram) = http_once(prepare(http_dir.path()), &args).await?;
    println!(
        "  http    {:>10.0} acked writes/s  {}",
        writes_per_s,
        report::latency_summary(&histogram)
    );
    println!(
        "http {writes_per_s:.0} writes/s p99 {:.2} ms; library {:.0} writes/s: HTTP costs {:.2}x",
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        library.writes_per_s,
        library.writes_per_s / writes_per_s
    );
    Ok(())
}

async fn http_once(
    mut config: Config,
    args: &HttpArgs,
) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>)> {
    config.serve.listen = "127.0.0.1:0".into();
    config.serve.tokens = vec![TokenConfig {
        name: "bench".into(),
        role: Role::Operator,
        secret: Some(Secret::new(TOKEN)),
        secret_env: None,
    }];
    let server = Server::bind(config).await?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    wait_ready(addr).await?;

    let bodies: Arc<Vec<String>> = Arc::new(
        (0..1024)
            .map(|i| payload(i, args.payload_bytes).to_string())
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..args.callers {
        let (bodies, next, total) = (bodies.clone(), next.clone(), args.writes);
        callers.spawn(async move {
            let mut histogram = report::latency_histogram();
            let (read, mut write) = TcpStream::connect(addr).await?.into_split();
            let mut read = BufReader::new(read);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = &bodies[(i % 1024) as usize];
                let request = format!(
                    "PUT /api/v1/entities/tenant-{}/Order/o-{i} HTTP/1.1\r\nHost: {addr}\r\n\
                     Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    i % 10_000,
                    body.len()
                );
                let t = Instant::now();
                write.write_all(request.as_bytes()).await?;
                let status = read_response(&mut read).await?;
                anyhow::ensure!(status == 200, "PUT answered {status}");
                report::record(&mut histogram, t.elapsed());
            }
            anyhow::Ok(histogram)
        });
    }
    let mut histogram = report::latency_histogram();
    while let Some(joined) = callers.join_next().await {
        histogram.add(joined??)?;
    }
    let writes_per_s = report::per_second(args.writes, started.elapsed());
    let _ = stop.send(());
    serving.await??;
    Ok((writes_per_s, histogram))
}

async fn wait_ready(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            write
                .write_all(format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await?;
            if read_response(&mut read).await? == 200 {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "floe serve not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one HTTP/1.1 response (status line, headers, a Content-Length body)
/// and returns its status.
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> anyhow::Result<u16> {
    let mut line = String::new();
    read.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        anyhow::ensure!(read.read_line(&mut line).await? > 0, "connection closed");
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await?;
    Ok(status)
}
