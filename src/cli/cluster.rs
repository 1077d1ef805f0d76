//! `floe cluster status`: the cluster as etcd holds it (nodes, leases, shards
//! per node, the placement leader), as JSON.

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
}

pub(crate) async fn run(config: Config, args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = config
        .cluster
        .as_ref()
        .context("floe cluster needs a configuration with [cluster]")?;
    cluster.validate()?;
    match args.command {
        ClusterCommand::Status => {
            let client = floe_cluster::connect(cluster).await?;
            let status = floe_cluster::status(&client, cluster).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
    }
    Ok(())
}
