//! `floe lake compact` and `floe lake expire`: maintenance of the Iceberg
//! lake, safe beside a running floe or `floe sink`; `floe erase`.

use std::time::Duration;

use clap::{Args, Subcommand};
use floe::{Config, EntityKey, ExpireOptions, Floe};

#[derive(Debug, Args)]
pub(crate) struct LakeArgs {
    #[command(subcommand)]
    command: LakeCommand,
}

#[derive(Debug, Subcommand)]
enum LakeCommand {
    /// Merge the small data files of every partition into files of about
    /// `lake.target_file_bytes`, sorted by key_hash, in one replace snapshot.
    Compact(CompactArgs),
    /// Expire old snapshots and delete every file no live snapshot references.
    Expire(ExpireArgs),
}

#[derive(Debug, Args)]
struct CompactArgs {
    /// Merge by size tier as the background policy does (only tiers holding
    /// `lake.maintenance.compact_min_files` files), instead of everything small.
    #[arg(long)]
    tiered: bool,
}

#[derive(Debug, Args)]
struct ExpireArgs {
    /// Expire snapshots older than this (`7d`, `12h`, `30m`, `10s`, `500ms`, `0`).
    #[arg(long, value_parser = parse_duration)]
    older_than: Duration,
    /// Always keep the newest this many snapshots.
    #[arg(long, default_value_t = 1)]
    retain_last: usize,
    /// Keep unreferenced files younger than this (commits in flight, crashed
    /// writers' files until they are surely dead).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    orphan_grace: Duration,
    /// Report what would be expired and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EraseArgs {
    /// Namespace (usually the tenant).
    namespace: String,
    /// Entity type.
    entity_type: String,
    /// Entity id.
    id: String,
    /// The entity's partition key (needed when its type reads it from the data).
    #[arg(long)]
    partition_key: Option<String>,
}

/// `floe erase`: on the data directory (it opens it, so no floe may be
/// serving it; use `DELETE /api/v1/entities/...?erase=true` then).
pub(crate) async fn erase(config: Config, args: EraseArgs) -> anyhow::Result<()> {
    let floe = Floe::open(config).await?;
    let key = EntityKey::new(args.namespace, args.entity_type, args.id);
    let erased = floe.erase(key, args.partition_key).await;
    floe.close().await?;
    println!("{}", serde_json::to_string_pretty(&erased?)?);
    Ok(())
}

pub(crate) async fn run(config: Config, args: LakeArgs) -> anyhow::Result<()> {
    match args.command {
        LakeCommand::Compact(args) => {
            let r = floe::compact_lake(&config, args.tiered).await?;
            match r.snapshot_id {
                None => println!("nothing to compact ({} live data files)", r.files_before),
                Some(id) => println!(
                    "compacted {} files ({} bytes) into {} ({} bytes) in {} groups, {} rows; live data files {} -> {}; snapshot {id}{}",
                    r.removed_files,
                    r.removed_bytes,
                    r.added_files,
                    r.added_bytes,
                    r.groups,
                    r.rows,
                    r.files_before,
                    r.files_after,
                    if r.attempts > 1 {
                        format!(
                            " (after {} attempts: the sink committed meanwhile)",
                            r.attempts
                        )
                    } else {
                        String::new()
                    }
                ),
            }
        }
        LakeCommand::Expire(args) => {
            let options = ExpireOptions {
                older_than: args.older_than,
                retain_last: args.retain_last,
                orphan_grace: args.orphan_grace,
                dry_run: args.dry_run,
            };
            let r = floe::expire_lake(&config, &options).await?;
            let verb = if args.dry_run {
                "would expire"
            } else {
                "expired"
            };
            let d = r.deleted;
            println!(
                "{verb} {} snapshots ({} live); {} {} data files, {} manifests and manifest lists, {} metadata files, {} other files ({} bytes); kept {} unreferenced files younger than the grace period",
                r.expired_snapshots.len(),
                r.live_snapshots,
                if args.dry_run {
                    "would delete"
                } else {
                    "deleted"
                },
                d.data,
                d.manifests,
                d.metadata,
                d.other,
                d.bytes,
                r.kept_young,
            );
        }
    }
    Ok(())
}

/// `7d`, `12h`, `30m`, `10s`, `500ms` or `0`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit (d, h, m, s or ms)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number before the unit"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (d, h, m, s or ms)"
            ));
        }
    };
    Ok(Duration::from_secs(n * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("7").unwrap_err().contains("unit"));
        assert!(parse_duration("7w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("d").is_err());
    }
}
