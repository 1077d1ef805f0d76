//! `floe repair`: rebuilds damaged partitions of the embedded log.

use clap::Args;
use floe::Config;

#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    /// Only this pipeline partition (checked against the lake even when its
    /// files look intact); default: every damaged partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Report what the repair would do, and write nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn run(config: Config, args: RepairArgs) -> anyhow::Result<()> {
    let reports = floe::repair(&config, args.partition, args.dry_run).await?;
    for report in &reports {
        print!("{report}");
    }
    let repaired = reports.iter().filter(|r| r.needed).count();
    let lost: u64 = reports
        .iter()
        .flat_map(|r| r.lost.iter().filter(|l| !l.earlier))
        .map(|l| l.offsets.end - l.offsets.start)
        .sum();
    let verb = if args.dry_run {
        "would repair"
    } else {
        "repaired"
    };
    println!(
        "{verb} {repaired} of {} partitions; {lost} offsets unrecoverable{}",
        reports.len(),
        if args.dry_run {
            " (dry run: nothing was written)"
        } else {
            ""
        }
    );
    Ok(())
}
