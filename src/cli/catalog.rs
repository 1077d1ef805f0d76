//! `floe catalog serve`: the lake's SQLite catalog over the Iceberg REST
//! catalog protocol, until SIGTERM or Ctrl-C.

use std::io::Write;

use anyhow::bail;
use clap::{Args, Subcommand};
use floe::Config;
use floe_catalog::{CatalogServer, ServerOptions};
use floe_emitter::sink::{CATALOG_NAME, CatalogUrl};

#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Serve the `[lake]` SQLite catalog (and its warehouse) as an Iceberg
    /// REST catalog.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "FLOE_CATALOG_LISTEN", default_value = "127.0.0.1:8181")]
    listen: String,
}

pub(crate) async fn run(config: Config, args: CatalogArgs) -> anyhow::Result<()> {
    let CatalogCommand::Serve(args) = args.command;
    let location = config.lake.location(&config.data_dir)?;
    let CatalogUrl::Sqlite(catalog_path) = location.catalog else {
        bail!(
            "lake.catalog is {}: `floe catalog serve` serves a sqlite:// catalog (the REST clients then use rest://HOST:PORT)",
            location.catalog
        );
    };
    let server = CatalogServer::open(ServerOptions {
        catalog_path,
        catalog_name: CATALOG_NAME.to_string(),
        warehouse: location.warehouse,
        properties: location.properties,
    })
    .await?;
    let listener = CatalogServer::bind(&args.listen).await?;
    // The first line on stdout is the bound address, for scripts and tests
    // that listen on port 0.
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "floe catalog listening on http://{}",
        listener.local_addr()?
    )?;
    stdout.flush()?;
    server
        .serve(listener, super::serve::shutdown_signal())
        .await?;
    Ok(())
}
