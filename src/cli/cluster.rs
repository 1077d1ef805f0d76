//! `floe cluster status|drain|undrain`: the cluster as etcd holds it (nodes,
//! leases, shards per node, the placement leader), as JSON; draining a node
//! before stopping it.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use floe::Config;

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Live nodes with their leases and shards, the leader, every grant.
    Status,
    /// Mark a node draining: the controller places nothing on it and moves
    /// its shards off with planned handovers. Waits until it holds no shard
    /// (then it may be stopped) and prints its drain status.
    Drain(DrainArgs),
    /// Take the draining mark off a node: placement may use it again.
    Undrain(UndrainArgs),
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The node's id.
    node: String,
    /// How long to wait for its shards to move off.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Mark it and return at once, without waiting.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
struct UndrainArgs {
    /// The node's id.
    node: String,
}

pub(crate) async fn run(config: Config, args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = config
        .cluster
        .as_ref()
        .context("floe cluster needs a configuration with [cluster]")?;
    cluster.validate()?;
    let client = floe_cluster::connect(cluster).await?;
    match args.command {
        ClusterCommand::Status => {
            let status = floe_cluster::status(&client, cluster).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        ClusterCommand::Drain(args) => {
            let status = if args.no_wait {
                floe_cluster::drain(&client, cluster, &args.node).await?
            } else {
                floe_cluster::drain_and_wait(
                    &client,
                    cluster,
                    &args.node,
                    Duration::from_secs(args.timeout_secs),
                    Duration::from_millis(200),
                )
                .await?
            };
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        ClusterCommand::Undrain(args) => {
            floe_cluster::undrain(&client, cluster, &args.node).await?;
            println!(
                "{}",
                serde_json::json!({ "node_id": args.node, "draining": false })
            );
        }
    }
    Ok(())
}
