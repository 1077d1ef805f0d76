//! `floe migrate`: plan, run, follow and cancel live shard migrations.
//!
//! Running a migration opens the data directory (taking its lock) for the
//! duration. `status` and `cancel` work from another process without the
//! lock: they read the job files in `DATA/migrations/` and leave a cancel
//! request there, which the running process polls between batches.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use floe::{
    Config, Floe, JobStatus, MigrationConfig, MigrationJob, MigrationOptions, MigrationPlan,
    MigrationReport, PlanKind, RangeBound,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Print a plan (moving keys, destinations, estimates, warnings) without running it.
    Plan {
        #[command(subcommand)]
        change: Change,
        /// Print the plan as JSON (every moving key).
        #[arg(long, global = true)]
        json: bool,
    },
    /// Add a shard live: the strategy hands it its share of keys.
    AddShard(RunArgs),
    /// Remove a shard live (any one; the highest takes its id); its keys go to the least loaded shards.
    RemoveShard {
        /// The shard (default: the highest).
        #[arg(long)]
        shard: Option<u32>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Move keys from hot shards to cold ones (pinned by overrides).
    Rebalance {
        /// Tolerance: a shard this fraction above the mean is hot.
        #[arg(long, default_value_t = 0.2)]
        threshold: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// A new shard takes about half of one shard's keys.
    Split {
        /// The shard to split.
        #[arg(long)]
        shard: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Merge any two shards live: all of `from`'s keys go to `into` (the highest takes the freed id).
    Merge {
        /// The shard that leaves.
        #[arg(long)]
        from: u32,
        /// The shard that takes its keys.
        #[arg(long)]
        into: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Pin a partition key (a tenant) to a chosen shard, live.
    Pin {
        /// The partition key.
        key: String,
        /// Its shard from now on.
        shard: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Move partition keys to given shards, live: `KEY=SHARD ...`.
    MoveKeys {
        /// `KEY=SHARD` pairs (the key is everything before the last `=`).
        #[arg(required = true, value_parser = parse_move)]
        moves: Vec<(String, u32)>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Drop the overrides of partition keys, live: they follow the strategy again.
    Unpin {
        /// The partition keys.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Range topologies, live: a new range [--start, --end) on a new shard (or --shard).
    AddRange {
        #[command(flatten)]
        range: NewRange,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Range topologies, live: cut the range holding AT there; the upper part goes to a new shard (or --shard).
    SplitRange {
        #[command(flatten)]
        at: AtBound,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Range topologies, live: the ranges ending and starting at AT become one (the lower one's shard, or --shard).
    MergeRanges {
        #[command(flatten)]
        at: AtBound,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Range topologies, live: the range holding AT goes to SHARD.
    MoveRange {
        /// A key of the range.
        at: String,
        /// Its shard from now on.
        shard: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time topologies, live: PERIOD (`2024-03`) gets a new shard (or --shard). The background task does this ahead of time.
    AddPeriod {
        /// The period's label: `2024-03` (month), `2024-03-15` (day), `2024-W11` (week), `2024` (year).
        period: String,
        /// Its shard (default: a new shard).
        #[arg(long)]
        shard: Option<u32>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time topologies, live: PERIOD goes to SHARD.
    MovePeriod {
        /// The period's label.
        period: String,
        /// Its shard from now on.
        shard: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time topologies: PERIOD, which has ended, leaves shard memory: its writes are refused, the sink lands its last events, its entities are evicted and read from the lake from then on (seed 002's archive window; `migration.active_periods` does it automatically).
    ArchivePeriod {
        /// The period's label.
        period: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time topologies: a sealed or archived PERIOD takes writes again; an archived one's entities are replayed from the lake into its shard first.
    ReactivatePeriod {
        /// The period's label.
        period: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time topologies: an archived PERIOD past its retention is dropped: its rows are erased from the lake (seed 002's drop_old_partitions; `migration.retain_periods` does it automatically).
    DropPeriod {
        /// The period's label.
        period: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Give TENANT a new shard of its own and move all its keys there, in one live migration (seed 002's "large team").
    Isolate {
        /// The tenant: a time topology's tenant part, else a partition key (the namespace with the tenant pattern).
        tenant: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The balance analysis: imbalance, hot and cold shards, mean load.
    Balance {
        /// Tolerance: a shard this fraction above the mean is hot.
        #[arg(long, default_value_t = 0.2)]
        threshold: f64,
    },
    /// Migrations recorded in the data directory (works while another process runs one).
    Status {
        /// One migration (default: all, newest last).
        #[arg(long)]
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the process running a migration to cancel it (it rolls back).
    Cancel {
        /// The migration (default: the running one).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand, Clone)]
enum Change {
    /// Add one shard.
    AddShard,
    /// Remove a shard.
    RemoveShard {
        /// The shard (default: the highest).
        #[arg(long)]
        shard: Option<u32>,
    },
    /// Rebalance hot shards.
    Rebalance {
        /// Tolerance.
        #[arg(long, default_value_t = 0.2)]
        threshold: f64,
    },
    /// Split a shard.
    Split {
        /// The shard.
        #[arg(long)]
        shard: u32,
    },
    /// Merge two shards.
    Merge {
        /// The shard that leaves.
        #[arg(long)]
        from: u32,
        /// The shard that takes its keys.
        #[arg(long)]
        into: u32,
    },
    /// Pin a partition key to a shard.
    Pin {
        /// The partition key.
        key: String,
        /// The shard.
        shard: u32,
    },
    /// Move partition keys to given shards.
    MoveKeys {
        /// `KEY=SHARD` pairs.
        #[arg(required = true, value_parser = parse_move)]
        moves: Vec<(String, u32)>,
    },
    /// Drop the overrides of partition keys.
    Unpin {
        /// The partition keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Add a range (range topologies).
    AddRange(NewRange),
    /// Split the range holding a key (range topologies).
    SplitRange(AtBound),
    /// Merge the two ranges touching at a key (range topologies).
    MergeRanges(AtBound),
    /// Move the range holding a key (range topologies).
    MoveRange {
        /// A key of the range.
        at: String,
        /// Its shard from now on.
        shard: u32,
    },
    /// Give a period a shard (time topologies).
    AddPeriod {
        /// The period's label.
        period: String,
        /// Its shard (default: a new shard).
        #[arg(long)]
        shard: Option<u32>,
    },
    /// Move a period to a shard (time topologies).
    MovePeriod {
        /// The period's label.
        period: String,
        /// Its shard from now on.
        shard: u32,
    },
    /// Archive a period (time topologies).
    ArchivePeriod {
        /// The period's label.
        period: String,
    },
    /// Reactivate a sealed or archived period (time topologies).
    ReactivatePeriod {
        /// The period's label.
        period: String,
    },
    /// Drop an archived period (time topologies).
    DropPeriod {
        /// The period's label.
        period: String,
    },
    /// Give a tenant a shard of its own.
    Isolate {
        /// The tenant.
        tenant: String,
    },
}

/// A new range `[start, end)`; bounds are read as the range key's kind.
#[derive(Debug, Args, Clone)]
struct NewRange {
    /// Inclusive lower bound (default: unbounded).
    #[arg(long)]
    start: Option<String>,
    /// Exclusive upper bound (default: unbounded).
    #[arg(long)]
    end: Option<String>,
    /// Its shard (default: a new shard).
    #[arg(long)]
    shard: Option<u32>,
}

/// A range boundary and an optional owner.
#[derive(Debug, Args, Clone)]
struct AtBound {
    /// The key (read as the range key's kind: integer or string).
    at: String,
    /// The shard that gets the part (default: a new shard for a split, the lower range's for a merge).
    #[arg(long)]
    shard: Option<u32>,
}

impl NewRange {
    fn kind(self) -> PlanKind {
        PlanKind::AddRange {
            start: self.start.map(RangeBound::String),
            end: self.end.map(RangeBound::String),
            shard: self.shard,
        }
    }
}

fn split_range(at: AtBound) -> PlanKind {
    PlanKind::SplitRange {
        at: RangeBound::String(at.at),
        shard: at.shard,
    }
}

fn merge_ranges(at: AtBound) -> PlanKind {
    PlanKind::MergeRanges {
        at: RangeBound::String(at.at),
        shard: at.shard,
    }
}

fn move_range(at: String, shard: u32) -> PlanKind {
    PlanKind::MoveRange {
        at: RangeBound::String(at),
        shard,
    }
}

/// `KEY=SHARD`, split at the last `=` (keys may hold `=`).
fn parse_move(text: &str) -> Result<(String, u32), String> {
    let (key, shard) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=SHARD"))?;
    if key.is_empty() {
        return Err(format!("{text:?}: the partition key is empty"));
    }
    let shard = shard
        .parse()
        .map_err(|_| format!("{text:?}: {shard:?} is not a shard number"))?;
    Ok((key.to_string(), shard))
}

fn move_keys(moves: Vec<(String, u32)>) -> PlanKind {
    PlanKind::MoveKeys {
        moves: moves.into_iter().collect(),
    }
}

#[derive(Debug, Args, Clone)]
struct RunArgs {
    /// Roll back if not cut over after this many seconds (default: migration.timeout_ms).
    #[arg(long)]
    timeout_secs: Option<f64>,
    /// Events applied to a target shard per step (default: migration.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// No progress bar (for logs and scripts).
    #[arg(long)]
    quiet: bool,
}

pub(crate) async fn run(config: Config, args: MigrateArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Plan { change, json } => plan(config, change, json).await,
        Which::AddShard(run) => execute(config, PlanKind::AddShard {}, (&run).into()).await,
        Which::RemoveShard { shard, run } => {
            let shard = match shard {
                Some(shard) => shard,
                None => highest(&config).await?,
            };
            execute(config, PlanKind::RemoveShard { shard }, (&run).into()).await
        }
        Which::Rebalance { threshold, run } => {
            execute(config, PlanKind::Rebalance { threshold }, (&run).into()).await
        }
        Which::Split { shard, run } => {
            execute(config, PlanKind::Split { shard }, (&run).into()).await
        }
        Which::Merge { from, into, run } => {
            execute(config, PlanKind::Merge { from, into }, (&run).into()).await
        }
        Which::Pin { key, shard, run } => {
            execute(config, PlanKind::Pin { key, shard }, (&run).into()).await
        }
        Which::MoveKeys { moves, run } => execute(config, move_keys(moves), (&run).into()).await,
        Which::Unpin { keys, run } => {
            execute(config, PlanKind::Unpin { keys }, (&run).into()).await
        }
        Which::AddRange { range, run } => execute(config, range.kind(), (&run).into()).await,
        Which::SplitRange { at, run } => execute(config, split_range(at), (&run).into()).await,
        Which::MergeRanges { at, run } => execute(config, merge_ranges(at), (&run).into()).await,
        Which::MoveRange { at, shard, run } => {
            execute(config, move_range(at, shard), (&run).into()).await
        }
        Which::AddPeriod { period, shard, run } => {
            execute(config, PlanKind::AddPeriod { period, shard }, (&run).into()).await
        }
        Which::MovePeriod { period, shard, run } => {
            execute(
                config,
                PlanKind::MovePeriod { period, shard },
                (&run).into(),
            )
            .await
        }
        Which::ArchivePeriod { period, run } => {
            execute(config, PlanKind::ArchivePeriod { period }, (&run).into()).await
        }
        Which::ReactivatePeriod { period, run } => {
            execute(config, PlanKind::ReactivatePeriod { period }, (&run).into()).await
        }
        Which::DropPeriod { period, run } => {
            execute(config, PlanKind::DropPeriod { period }, (&run).into()).await
        }
        Which::Isolate { tenant, run } => {
            execute(config, PlanKind::Isolate { tenant }, (&run).into()).await
        }
        Which::Balance { threshold } => balance(config, threshold).await,
        Which::Status { id, json } => status(&config, id, json),
        Which::Cancel { id } => cancel(&config, id),
    }
}

async fn highest(config: &Config) -> anyhow::Result<u32> {
    let floe = Floe::open(config.clone()).await?;
    let shard = floe.topology().shard_count - 1;
    floe.close().await?;
    Ok(shard)
}

fn kind_of(change: Change, shard_count: u32) -> PlanKind {
    match change {
        Change::AddShard => PlanKind::AddShard {},
        Change::RemoveShard { shard } => PlanKind::RemoveShard {
            shard: shard.unwrap_or(shard_count - 1),
        },
        Change::Rebalance { threshold } => PlanKind::Rebalance { threshold },
        Change::Split { shard } => PlanKind::Split { shard },
        Change::Merge { from, into } => PlanKind::Merge { from, into },
        Change::Pin { key, shard } => PlanKind::Pin { key, shard },
        Change::MoveKeys { moves } => move_keys(moves),
        Change::Unpin { keys } => PlanKind::Unpin { keys },
        Change::AddRange(range) => range.kind(),
        Change::SplitRange(at) => split_range(at),
        Change::MergeRanges(at) => merge_ranges(at),
        Change::MoveRange { at, shard } => move_range(at, shard),
        Change::AddPeriod { period, shard } => PlanKind::AddPeriod { period, shard },
        Change::MovePeriod { period, shard } => PlanKind::MovePeriod { period, shard },
        Change::ArchivePeriod { period } => PlanKind::ArchivePeriod { period },
        Change::ReactivatePeriod { period } => PlanKind::ReactivatePeriod { period },
        Change::DropPeriod { period } => PlanKind::DropPeriod { period },
        Change::Isolate { tenant } => PlanKind::Isolate { tenant },
    }
}

async fn plan(config: Config, change: Change, json: bool) -> anyhow::Result<()> {
    let floe = Floe::open(config).await?;
    let result = async {
        let kind = kind_of(change, floe.topology().shard_count);
        let plan = floe.migrations().plan(kind).await?;
        let validation = floe.migrations().validate(&plan);
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "plan": plan, "validation": validation })
                )?
            );
        } else {
            print_plan(&plan);
            for error in &validation.errors {
                println!("error: {error}");
            }
            for warning in &validation.warnings {
                println!("warning: {warning}");
            }
            println!("valid: {}", validation.is_valid());
        }
        anyhow::Ok(())
    }
    .await;
    floe.close().await?;
    result
}

fn print_plan(plan: &MigrationPlan) {
    println!(
        "plan {}: topology v{} ({} shards) -> v{} ({} shards)",
        plan.kind.name(),
        plan.from.version,
        plan.from.shard_count,
        plan.to.version,
        plan.to.shard_count
    );
    println!(
        "moving keys: {} of {} ({} entities), ~{} events to replay, {} of {} bytes of current data, ~{:.1} s",
        plan.moves.len(),
        plan.keys_total,
        plan.moves.iter().map(|m| m.entities).sum::<u64>(),
        plan.estimated_events,
        plan.estimated_bytes,
        plan.total_bytes,
        plan.estimated_duration_ms as f64 / 1000.0
    );
    let mut flows: std::collections::BTreeMap<(u32, u32), (u64, u64)> = Default::default();
    for m in &plan.moves {
        let flow = flows.entry((m.from, m.to)).or_default();
        flow.0 += 1;
        flow.1 += m.events;
    }
    for ((from, to), (keys, events)) in flows {
        println!("  shard-{from} -> shard-{to}: {keys} keys, {events} events");
    }
    for m in plan.moves.iter().take(10) {
        println!(
            "  {:?} -> shard-{} ({} entities, {} events)",
            m.partition_key, m.to, m.entities, m.events
        );
    }
    if plan.moves.len() > 10 {
        println!(
            "  ... {} more (--json lists them all)",
            plan.moves.len() - 10
        );
    }
}

async fn execute(config: Config, kind: PlanKind, args: RunArgsView) -> anyhow::Result<()> {
    let floe = Floe::open(config.clone()).await?;
    let result = execute_on(&floe, kind, &args).await;
    floe.close().await?;
    let report = result?;
    print_report(&report);
    Ok(())
}

/// Plans and runs one migration on an open `Floe` with a progress bar; the
/// demo uses it too.
pub(crate) async fn execute_on(
    floe: &Floe,
    kind: PlanKind,
    args: &RunArgsView,
) -> anyhow::Result<MigrationReport> {
    let migrations = floe.migrations();
    let plan = migrations.plan(kind).await?;
    print_plan(&plan);
    let validation = migrations.validate(&plan);
    for warning in &validation.warnings {
        println!("warning: {warning}");
    }
    let mut config: MigrationConfig = floe.config().migration.clone();
    if let Some(secs) = args.timeout_secs {
        config.timeout_ms = (secs * 1000.0).max(1.0) as u64;
    }
    if let Some(batch) = args.batch_size {
        config.batch_size = batch;
    }
    let handle = migrations
        .start(plan, MigrationOptions::with_config(config))
        .await?;
    println!(
        "migration {} started (floe migrate status / cancel --id {} from another shell)",
        handle.id, handle.id
    );
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>12} [{bar:40}] {pos}/{len} events, {msg}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let mut progress = handle.progress();
    let follow = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                let p = progress.borrow_and_update().clone();
                bar.set_prefix(p.phase.map_or("starting", |ph| ph.as_str()).to_string());
                bar.set_length(p.events_total.max(p.events_processed).max(1));
                bar.set_position(p.events_processed);
                bar.set_message(format!(
                    "{}/{} keys, {:.1} MB read, {} writes held, {:.1} s",
                    p.keys_processed,
                    p.keys_total,
                    p.bytes_read as f64 / 1e6,
                    p.buffered_writes,
                    p.elapsed_ms as f64 / 1000.0
                ));
                bar.tick();
            }
        })
    };
    bar.enable_steady_tick(Duration::from_millis(100));
    let outcome = handle.wait().await;
    follow.abort();
    bar.finish_and_clear();
    Ok(outcome?)
}

/// The run options `execute_on` needs; other commands (the demo) build one.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunArgsView {
    pub(crate) timeout_secs: Option<f64>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) quiet: bool,
}

impl From<&RunArgs> for RunArgsView {
    fn from(a: &RunArgs) -> Self {
        RunArgsView {
            timeout_secs: a.timeout_secs,
            batch_size: a.batch_size,
            quiet: a.quiet,
        }
    }
}

pub(crate) fn print_report(r: &MigrationReport) {
    println!(
        "migration {} ({}) done: topology v{} -> v{}",
        r.id,
        r.kind.name(),
        r.from_version,
        r.to_version
    );
    println!(
        "  keys moved:       {} ({} entities)",
        r.keys_moved, r.entities_moved
    );
    println!(
        "  events replayed:  {} ({} from the lake, {} read from the pipeline tail)",
        r.events_replayed, r.lake_events, r.tail_events_read
    );
    println!(
        "  bytes read:       {:.1} MB from {} lake files ({} rows decoded)",
        r.bytes_read as f64 / 1e6,
        r.files_read,
        r.rows_scanned
    );
    println!(
        "  duration:         {:.2} s (copy {:.2} s)",
        r.duration_us as f64 / 1e6,
        r.copy_us as f64 / 1e6
    );
    println!(
        "  buffered writes:  {} (buffer window {:.1} ms)",
        r.buffered_writes,
        r.buffer_window_us as f64 / 1000.0
    );
    println!(
        "  max write pause:  {:.1} ms",
        r.max_write_pause_us as f64 / 1000.0
    );
    println!(
        "  verified:         {} entities matched on source and target",
        r.verified_entities
    );
}

async fn balance(config: Config, threshold: f64) -> anyhow::Result<()> {
    let floe = Floe::open(config).await?;
    let result = floe.migrations().analyze_balance(threshold).await;
    floe.close().await?;
    let a = result?;
    println!(
        "balanced: {} (imbalance {:.1}%, threshold {:.1}%)",
        a.is_balanced,
        a.imbalance_ratio * 100.0,
        threshold * 100.0
    );
    println!(
        "hot shards: {:?}; cold shards: {:?}",
        a.hot_shards, a.cold_shards
    );
    println!(
        "average: {:.0} entities, {:.0} bytes per shard",
        a.avg_entities, a.avg_bytes
    );
    for s in &a.shards {
        println!(
            "  shard-{:<3} {:>9} entities {:>12} bytes",
            s.shard, s.entities, s.bytes
        );
    }
    Ok(())
}

fn status(config: &Config, id: Option<String>, json: bool) -> anyhow::Result<()> {
    let mut jobs = floe::list_jobs(&config.data_dir)?;
    if let Some(id) = id {
        jobs.retain(|j| j.id == id);
        anyhow::ensure!(
            !jobs.is_empty(),
            "no migration {id} in {}",
            config.data_dir.display()
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(());
    }
    if jobs.is_empty() {
        println!("no migrations in {}", config.data_dir.display());
    }
    for job in &jobs {
        print_job(job);
    }
    Ok(())
}

fn print_job(job: &MigrationJob) {
    let p = &job.progress;
    println!(
        "{} {} v{} -> v{}: {:?}, phase {}, {}/{} events, {}/{} keys, {:.1} s{}",
        job.id,
        job.kind.name(),
        job.from.version,
        job.to.version,
        job.status,
        job.phase,
        p.events_processed,
        p.events_total,
        p.keys_processed,
        p.keys_total,
        p.elapsed_ms as f64 / 1000.0,
        job.error
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})"))
    );
}

fn cancel(config: &Config, id: Option<String>) -> anyhow::Result<()> {
    let id = match id {
        Some(id) => id,
        None => floe::list_jobs(&config.data_dir)?
            .into_iter()
            .rev()
            .find(|j| j.status == JobStatus::Running)
            .map(|j| j.id)
            .with_context(|| format!("no running migration in {}", config.data_dir.display()))?,
    };
    floe::request_cancel(&config.data_dir, &id)?;
    println!(
        "cancel requested for {id}; the process running it rolls back at its next step (floe migrate status --id {id})"
    );
    Ok(())
}
