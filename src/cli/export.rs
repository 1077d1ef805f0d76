//! `floe export NAMESPACE`: one tenant's live entities as NDJSON `restore`
//! lines, to be read by `floe import` in another deployment (versions carry
//! over; importing twice changes nothing).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use floe::{Config, Floe};

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The namespace (tenant) to export.
    namespace: String,
    /// Write here instead of stdout; the file appears whole or not at all.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub(crate) async fn run(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    let floe = Floe::open(config).await?;
    let result = export(&floe, &args).await;
    floe.close().await?;
    let report = result?;
    eprintln!(
        "exported {} entities of namespace {:?} ({} bytes)",
        report.entities, args.namespace, report.bytes
    );
    Ok(())
}

async fn export(floe: &Floe, args: &ExportArgs) -> anyhow::Result<floe::ExportReport> {
    let Some(path) = &args.output else {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        return Ok(floe.export_namespace(&args.namespace, &mut out).await?);
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(temp);
    let report = floe.export_namespace(&args.namespace, &mut out).await?;
    let temp = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    temp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}
