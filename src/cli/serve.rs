//! `floe serve`: the HTTP API until SIGTERM or Ctrl-C.

use std::io::Write;

use clap::Args;
use floe::Config;
use floe::serve::Server;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port);
    /// overrides `serve.listen`.
    #[arg(long, env = "FLOE_LISTEN")]
    listen: Option<String>,
}

pub(crate) async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.serve.listen = listen;
    }
    let server = Server::bind(config).await?;
    // The first line on stdout is the bound address, for scripts and tests
    // that listen on port 0.
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "floe serve listening on http://{}",
        server.local_addr()
    )?;
    stdout.flush()?;
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// SIGTERM (orchestrators) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop floe serve with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
