//! `floe bench query`: cross-shard SQL over 10M landed events, side by side
//! with DuckDB's `read_parquet` over the same data files.
//!
//! The events go through the real path into the lake: appended to an
//! embedded log, landed by the sink (one commit per million, retention on so
//! the log stays small), so the table has the production layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use floe::{Config, CrossShardQuery, QueryOptions, QueryRequest};
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink, SinkOptions};
use floe_emitter::{FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, EventKind, Json, Pipeline};
use uuid::Uuid;

use super::report::per_second;

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// Events landed.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Distinct entities (each gets events / entities versions).
    #[arg(long, default_value_t = 2_000_000)]
    entities: u64,
    /// Timed runs per query (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Keep the lake here instead of a temporary directory (reused when it
    /// already holds the events).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also land the same events in the lake of the configuration (`[lake]`,
    /// e.g. `rest://` over `s3://`; empty, or holding exactly these events
    /// from an earlier run) and run the same queries there, reporting each
    /// median next to the local one.
    #[arg(long)]
    configured_lake: bool,
    /// Python with duckdb for the comparison (default: $FLOE_PYTHON).
    #[arg(long, env = "FLOE_PYTHON")]
    python: Option<PathBuf>,
}

const TENANTS: u64 = 1000;
const TYPES: [&str; 3] = ["Order", "Customer", "Invoice"];
const STATUSES: [&str; 4] = ["placed", "paid", "shipped", "delivered"];
const DAY_US: i64 = 86_400_000_000;

/// Event `seq`: entity `seq % entities`, version `seq / entities + 1`; the
/// last version of every tenth entity deletes it. Three days, 1,000 tenants.
fn event(seq: u64, entities: u64, versions: u64) -> Event {
    let entity = seq % entities;
    let version = seq / entities + 1;
    let tenant = format!("tenant-{:04}", entity % TENANTS);
    let ty = TYPES[((entity / TENANTS) % 10).min(2) as usize % 3];
    let ty = if (entity / TENANTS) % 10 < 8 {
        "Order"
    } else {
        ty
    };
    let id = format!("{}-{entity:08}", ty.to_lowercase());
    let deleted = version == versions && entity.is_multiple_of(10);
    let kind = if deleted {
        EventKind::Deleted
    } else if version == 1 {
        EventKind::Created
    } else {
        EventKind::Updated
    };
    let state = (!deleted).then(|| {
        Json::from_trusted(format!(
            r#"{{"status":"{}","total_cents":{},"customer":"customer-{}"}}"#,
            STATUSES[(version as usize - 1).min(3)],
            (entity * 7919 + version * 13) % 100_000,
            entity % 50_000
        ))
    });
    Event {
        event_id: Uuid::from_u128(u128::from(seq) + (1 << 100)),
        idempotency_key: format!("{tenant}/{ty}/{id}@v{version}"),
        kind,
        key_hash: xxhash_rust::xxh3::xxh3_64(tenant.as_bytes()),
        partition_key: tenant.clone(),
        namespace: tenant,
        entity_type: ty.into(),
        entity_id: id,
        shard: (entity % 16) as u32,
        version,
        timestamp_us: 1_763_683_200_000_000 + (seq % 3) as i64 * DAY_US + (seq / 3) as i64,
        request_fingerprint: None,
        owner_epoch: 0,
        state,
    }
}

fn location(dir: &Path) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: format!("file://{}", dir.join("warehouse").display()),
        properties: HashMap::new(),
    }
}

/// Appends and lands the events, a million at a time.
async fn fill(dir: &Path, lake: &Lake, args: &QueryArgs) -> anyhow::Result<()> {
    let log = Arc::new(FileLog::open(
        &dir.join("log"),
        LogOptions {
            partitions: 16,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Never,
        },
    )?);
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let options = SinkOptions {
        instance: "bench-query".into(),
        retention: true,
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(lake.clone(), pipeline.clone(), options).await?;
    let versions = args.events.div_ceil(args.entities);
    let started = Instant::now();
    let mut seq = 0;
    while seq < args.events {
        let end = (seq + 1_000_000).min(args.events);
        while seq < end {
            let n = (end - seq).min(20_000);
            let events: Vec<Event> = (seq..seq + n)
                .map(|s| event(s, args.entities, versions))
                .collect();
            log.append(&events).await?;
            seq += n;
        }
        sink.land_to_head().await?;
    }
    sink.release().await?;
    pipeline.close().await?;
    std::fs::remove_dir_all(dir.join("log")).ok();
    println!(
        "landed {} events ({} entities x {versions} versions, {TENANTS} tenants, 3 days) in {:.1} s ({:.0} events/s, append + land)",
        args.events,
        args.entities,
        started.elapsed().as_secs_f64(),
        per_second(args.events, started.elapsed())
    );
    Ok(())
}

fn parquet_files(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path.display().to_string());
        }
    }
    Ok(())
}

struct Measured {
    median: Duration,
    rows: usize,
    stats: floe::QueryStats,
}

async fn measure(query: &CrossShardQuery, sql: &str, runs: usize) -> anyhow::Result<Measured> {
    let request = QueryRequest::new().no_cache();
    let warm = query.sql_with(sql, &request).await?;
    let mut times = Vec::with_capacity(runs);
    let mut last = warm;
    for _ in 0..runs {
        let started = Instant::now();
        last = query.sql_with(sql, &request).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(Measured {
        median: times[times.len() / 2],
        rows: last.num_rows(),
        stats: last.stats,
    })
}

/// The benchmark's queries; `{events}` is the table.
const QUERIES: [(&str, &str); 3] = [
    (
        "group_by",
        "SELECT namespace, entity_type, count(*) AS n FROM {events} GROUP BY namespace, entity_type ORDER BY n DESC, namespace, entity_type LIMIT 10",
    ),
    (
        "top_n",
        "SELECT entity_id, version, event_time FROM {events} WHERE namespace = 'tenant-0042' AND kind = 'updated' ORDER BY event_time DESC, entity_id LIMIT 10",
    ),
    (
        "things",
        "SELECT json_get_str(data, 'status') AS status, count(*) AS n FROM things WHERE entity_type = 'Order' GROUP BY status ORDER BY status",
    ),
];

fn query_options() -> QueryOptions {
    QueryOptions {
        namespace_is_partition_key: true,
        ..QueryOptions::default()
    }
}

/// Opens `location`, lands the events there unless it already holds them
/// (`dir` keeps the log while landing), and returns the lake.
async fn filled(location: LakeLocation, dir: &Path, args: &QueryArgs) -> anyhow::Result<Lake> {
    let shown = format!("{} over {}", location.catalog, location.warehouse);
    let lake = Lake::open(location).await?;
    let query = CrossShardQuery::new(lake.clone(), query_options());
    let landed = query.sql("SELECT count(*) FROM events").await?;
    let count = landed
        .batches
        .first()
        .map(|b| {
            floe_query::arrow::array::AsArray::as_primitive::<
                    floe_query::arrow::datatypes::Int64Type,
                >(b.column(0))
                .value(0)
        })
        .unwrap_or(0);
    if count as u64 != args.events {
        anyhow::ensure!(
            count == 0,
            "{shown} holds {count} events, not {}: use an empty lake",
            args.events
        );
        fill(dir, &lake, args).await?;
    } else {
        println!("reusing {count} events landed in {shown}");
    }
    Ok(lake)
}

/// The median of every query over `query`, printed with `label`.
async fn run_queries(
    query: &CrossShardQuery,
    label: &str,
    runs: usize,
) -> anyhow::Result<HashMap<&'static str, f64>> {
    let mut medians = HashMap::new();
    for (name, sql) in QUERIES {
        let sql = sql.replace("{events}", "events");
        let m = measure(query, &sql, runs).await?;
        println!(
            "  {label:<6} {name:<9} median {:>8.1} ms  {} rows; {}",
            m.median.as_secs_f64() * 1000.0,
            m.rows,
            m.stats
        );
        medians.insert(name, m.median.as_secs_f64() * 1000.0);
    }
    Ok(medians)
}

pub(crate) async fn run(config: Config, args: QueryArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // Fresh queries: their table, snapshot and file caches start cold.
    let query = CrossShardQuery::new(filled(location(&dir), &dir, &args).await?, query_options());
    let mut files = Vec::new();
    parquet_files(&dir.join("warehouse"), &mut files)?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    println!(
        "{} data files, {:.0} MiB; {} runs per query after a warm-up, cache off, {} threads",
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        args.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let floe_ms = run_queries(&query, "floe", args.runs).await?;

    if args.configured_lake {
        let location = config.lake.location(&config.data_dir)?;
        let label = format!("{} over {}", location.catalog, location.warehouse);
        let remote_dir = dir.join("configured");
        std::fs::create_dir_all(&remote_dir)?;
        let lake = filled(location, &remote_dir, &args).await?;
        println!("configured lake: {label}");
        // An object store's data files are cached in memory by default
        // (`[query] data_cache_bytes`); both sides are measured.
        let uncached = CrossShardQuery::new(
            lake.clone(),
            QueryOptions {
                data_cache_bytes: 0,
                ..query_options()
            },
        );
        let uncached_ms = run_queries(&uncached, "lake", args.runs).await?;
        let cached = CrossShardQuery::new(lake, query_options());
        let cached_ms = run_queries(&cached, "cached", args.runs).await?;
        if let Some(stats) = cached.data_cache_stats() {
            println!(
                "  data file cache: {} hits, {} misses, {:.1} MiB in {} ranges",
                stats.hits,
                stats.misses,
                stats.bytes as f64 / (1 << 20) as f64,
                stats.entries
            );
        }
        for (label, remote_ms) in [("uncached", &uncached_ms), ("cached", &cached_ms)] {
            let ratios: Vec<String> = QUERIES
                .iter()
                .map(|(name, _)| {
                    format!(
                        "{name} {:.1} ms vs {:.1} ms local = {:.2}x",
                        remote_ms[name],
                        floe_ms[name],
                        remote_ms[name] / floe_ms[name]
                    )
                })
                .collect();
            println!(
                "configured lake ({label} data files) vs local: {}",
                ratios.join(", ")
            );
        }
    }

    let Some(python) = args.python else {
        println!("query: DuckDB comparison skipped (no --python / FLOE_PYTHON)");
        return Ok(());
    };
    let spec_path = dir.join("duckdb-spec.json");
    let spec = serde_json::json!({
        "files": files,
        "runs": args.runs,
        "queries": QUERIES.iter().take(2).map(|(n, q)| (n.to_string(), serde_json::Value::from(*q))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/duckdb_query.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&spec_path)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut line = Vec::new();
    for (name, _) in QUERIES.iter().take(2) {
        let d = duck[name]["median_ms"].as_f64().unwrap_or(f64::NAN);
        let f = floe_ms[name];
        println!(
            "  duckdb {name:<9} median {d:>8.1} ms  {} rows (threads {}); floe/duckdb = {:.2}x",
            duck[name]["rows"],
            duck["threads"],
            f / d
        );
        line.push(format!(
            "{name} {f:.1} ms vs DuckDB {d:.1} ms ({:.2}x)",
            f / d
        ));
    }
    println!(
        "query: {}; things {:.1} ms",
        line.join(", "),
        floe_ms["things"]
    );
    Ok(())
}
