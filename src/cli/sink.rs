//! `floe sink`: the Iceberg sink outside a running floe.

use clap::Args;
use floe::{Config, SinkMode};

#[derive(Debug, Args)]
pub(crate) struct SinkArgs {
    /// Land everything up to the pipeline's current head, then exit
    /// (otherwise run until Ctrl-C).
    #[arg(long)]
    once: bool,
}

pub(crate) async fn run(config: Config, args: SinkArgs) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mode = if args.once {
        SinkMode::Once
    } else {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop.send(true);
            }
        });
        SinkMode::Follow
    };
    let stats = floe::run_sink(&config, mode, stopped).await?;
    println!(
        "landed {} events in {} commits ({} files, {} bytes)",
        stats.events, stats.commits, stats.files, stats.bytes
    );
    Ok(())
}
