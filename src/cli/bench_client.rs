//! `floe bench client`: acknowledged writes/s through floe-client (the
//! shard map, an idempotency key on every write, the retry loop) against
//! one `floe serve` in this process, over HTTP/1.1 keep-alive connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use floe::serve::Server;
use floe::{Config, FsyncMode, Role, Secret, TokenConfig};
use floe_client::{Client, EntityKey};

use super::{payload, report};

const TOKEN: &str = "bench-operator-secret-0123456789";

#[derive(Debug, Args)]
pub(super) struct ClientArgs {
    /// Acknowledged writes.
    #[arg(long, default_value_t = 100_000)]
    writes: u64,
    /// Concurrent callers sharing one client (and its connection pool).
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

pub(super) async fn run(mut config: Config, args: ClientArgs) -> anyhow::Result<()> {
    config.log.fsync = match args.fsync.as_str() {
        "always" => FsyncMode::Always,
        "never" => FsyncMode::Never,
        other => anyhow::bail!("--fsync must be always or never, not {other:?}"),
    };
    println!(
        "client: {} puts of ~{} B JSON, {} callers on one floe-client, {} shards, 1 node, embedded log, fsync {}",
        args.writes, args.payload_bytes, args.callers, args.shards, args.fsync
    );
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    config.data_dir = dir.path().to_path_buf();
    config.pipeline = "file://".into();
    config.topology.shards = args.shards;
    config.lake.enabled = false;
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
    let client = Client::builder(format!("http://{addr}"))
        .token(TOKEN)
        .build()?;
    // Retried until the server has recovered (503 not_ready meanwhile).
    let map = tokio::time::timeout(Duration::from_secs(60), client.cluster_map())
        .await
        .context("floe serve not ready in 60 s")??;
    anyhow::ensure!(map.topology.shard_count == args.shards);

    let bodies: Arc<Vec<serde_json::Value>> =
        Arc::new((0..1024).map(|i| payload(i, args.payload_bytes)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..args.callers {
        let (client, bodies, next, total) =
            (client.clone(), bodies.clone(), next.clone(), args.writes);
        callers.spawn(async move {
            let mut histogram = report::latency_histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let key =
                    EntityKey::new(format!("tenant-{}", i % 10_000), "Order", format!("o-{i}"));
                let t = Instant::now();
                client
                    .put(key, bodies[(i % 1024) as usize].clone())
                    .await
                    .with_context(|| format!("write {i}"))?;
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
    println!(
        "  client  {:>10.0} acked writes/s  {}",
        writes_per_s,
        report::latency_summary(&histogram)
    );
    println!(
        "client {writes_per_s:.0} acked writes/s p99 {:.2} ms through floe-client, 1 node, {} callers, fsync {}",
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        args.callers,
        args.fsync
    );
    Ok(())
}
