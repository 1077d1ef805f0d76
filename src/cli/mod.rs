//! Subcommands of the `floe` binary.

// The benchmark commands (`bench` feature) and the server (`server`) build
// only when asked for; the rest is the everyday command line.
#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod bench_archive;
#[cfg(all(feature = "bench", feature = "kafka"))]
mod bench_cluster;
#[cfg(feature = "bench")]
mod bench_land;
#[cfg(feature = "bench")]
mod bench_migrate;
#[cfg(feature = "bench")]
mod bench_query;
#[cfg(feature = "server")]
mod catalog;
mod cluster;
mod demo;
mod demo_day;
mod entity;
mod export;
mod import;
mod lake;
mod migrate;
mod repair;
mod report;
#[cfg(feature = "server")]
mod serve;
mod sink;
mod sql;
mod things;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use floe::Config;

/// floe: an event-sourced sharding engine.
#[derive(Debug, Parser)]
#[command(name = "floe", version, about)]
struct Cli {
    /// A TOML configuration file (see docs/configuration.md).
    #[arg(long, global = true, env = "FLOE_CONFIG")]
    config: Option<PathBuf>,

    /// The data directory (overrides `data_dir` of the configuration).
    #[arg(long = "data", global = true, env = "FLOE_DATA")]
    data: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or replace an entity.
    Put(entity::PutArgs),
    /// Apply a JSON merge patch to an entity.
    Update(entity::UpdateArgs),
    /// Print an entity as JSON.
    Get(entity::GetArgs),
    /// Delete an entity.
    Delete(entity::DeleteArgs),
    /// List the entities of a namespace and type.
    List(entity::ListArgs),
    /// Write one namespace's live entities as NDJSON `restore` lines, for
    /// `floe import` into another deployment (versions carry over).
    Export(export::ExportArgs),
    /// Import NDJSON entities or write commands from a file or stdin
    /// (resumable: a re-run applies nothing twice).
    Import(import::ImportArgs),
    /// Show which shard a partition key routes to.
    ShardForKey(entity::ShardForKeyArgs),
    /// Print the topology document.
    Topology,
    /// Print per-shard statistics and rebalance hints.
    Stats,
    /// Run a multi-tenant restaurant workload on an embedded deployment.
    Demo(demo::DemoArgs),
    /// Measure routing, ingest and reopen speed.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Land the pipeline in the Iceberg lake (standalone sink).
    Sink(sink::SinkArgs),
    /// Serve the HTTP API: entities, routing, stats, health, metrics.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
    /// Serve the lake's catalog over the Iceberg REST protocol.
    #[cfg(feature = "server")]
    Catalog(catalog::CatalogArgs),
    /// Plan, run, follow and cancel live shard migrations.
    Migrate(migrate::MigrateArgs),
    /// Run one read-only SQL statement across every shard (over the lake).
    Sql(sql::SqlArgs),
    /// Live entities of a type, filtered on their JSON, ordered and paged.
    Things(things::ThingsArgs),
    /// Rebuild damaged partitions of the embedded log from the lake.
    Repair(repair::RepairArgs),
    /// Maintain the Iceberg lake: compaction and expiry.
    Lake(lake::LakeArgs),
    /// Erase an entity (GDPR): tombstone it, remove every row of it from the
    /// lake, expire the snapshots that held it; report the copies left in
    /// the pipeline.
    Erase(lake::EraseArgs),
    /// Cluster mode: the cluster as etcd holds it.
    Cluster(cluster::ClusterArgs),
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs its lifecycle; one-shot commands only what goes wrong.
    let default_filter = match cli.command {
        #[cfg(feature = "server")]
        Command::Serve(_) | Command::Catalog(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_deref(), cli.data.as_deref())?;
    match cli.command {
        Command::Put(args) => entity::put(config, args).await,
        Command::Update(args) => entity::update(config, args).await,
        Command::Get(args) => entity::get(config, args).await,
        Command::Delete(args) => entity::delete(config, args).await,
        Command::List(args) => entity::list(config, args).await,
        Command::Export(args) => export::run(config, args).await,
        Command::Import(args) => import::run(config, args).await,
        Command::ShardForKey(args) => entity::shard_for_key(config, args).await,
        Command::Topology => entity::topology(config).await,
        Command::Stats => entity::stats(config).await,
        Command::Demo(args) => demo::run(config, cli.data.is_some(), args).await,
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::run(config, args).await,
        Command::Sink(args) => sink::run(config, args).await,
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(config, args).await,
        #[cfg(feature = "server")]
        Command::Catalog(args) => catalog::run(config, args).await,
        Command::Migrate(args) => migrate::run(config, args).await,
        Command::Sql(args) => sql::run(config, args).await,
        Command::Things(args) => things::run(config, args).await,
        Command::Repair(args) => repair::run(config, args).await,
        Command::Lake(args) => lake::run(config, args).await,
        Command::Erase(args) => lake::erase(config, args).await,
        Command::Cluster(args) => cluster::run(config, args).await,
    }
}

fn load_config(
    file: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(path) => Config::from_toml_file(path)?,
        None => Config::default(),
    };
    if let Some(data) = data {
        config.data_dir = data.to_path_buf();
    }
    config.validate().context("checking the configuration")?;
    Ok(config)
}
