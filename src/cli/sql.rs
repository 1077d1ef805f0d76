//! `floe sql`: one read-only SQL statement over the Iceberg lake.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use floe::{AsOf, Config, Floe, QueryRequest, QueryResult};
use floe_query::arrow;

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The statement, e.g. "SELECT namespace, count(*) FROM things GROUP BY 1".
    /// Tables: `events` (every landed event) and `things` (current state).
    sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print what the query scanned and pruned (to stderr).
    #[arg(long)]
    stats: bool,
    /// Also read acknowledged events not landed yet: opens the data
    /// directory (takes its lock) and reads its pipeline.
    #[arg(long, conflicts_with_all = ["as_of_snapshot", "as_of_time"])]
    fresh: bool,
    /// Read this snapshot of floe.events (time travel).
    #[arg(long, conflicts_with = "as_of_time")]
    as_of_snapshot: Option<i64>,
    /// Read the snapshot current at this time: RFC 3339
    /// ("2026-11-21T10:00:00Z") or ms since the epoch.
    #[arg(long)]
    as_of_time: Option<String>,
    /// Cancel the query after this many ms (default: `query.timeout_ms`;
    /// at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// An aligned text table.
    Table,
    /// A JSON array of objects.
    Json,
    /// CSV with a header line.
    Csv,
}

fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    let nanos = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text.trim())
        .with_context(|| {
            format!("--as-of-time {text:?}: expected RFC 3339 or ms since the epoch")
        })?;
    Ok(nanos.div_euclid(1_000_000))
}

pub(crate) async fn run(config: Config, args: SqlArgs) -> anyhow::Result<()> {
    let mut request = QueryRequest::new();
    if let Some(id) = args.as_of_snapshot {
        request = request.as_of(AsOf::Snapshot(id));
    }
    if let Some(time) = &args.as_of_time {
        request = request.as_of(AsOf::TimestampMs(parse_time(time)?));
    }
    if let Some(ms) = args.timeout_ms {
        request = request.timeout(Duration::from_millis(ms));
    }
    let result = if args.fresh {
        let floe = Floe::open(config).await?;
        let result = floe.sql_with(&args.sql, &request.fresh()).await;
        floe.close().await?;
        result?
    } else {
        // Committed snapshots only: no lock, runs beside a live floe.
        floe::open_query(&config)
            .await?
            .sql_with(&args.sql, &request)
            .await?
    };
    print!("{}", render(&result, args.format)?);
    if args.stats {
        eprintln!("{}", result.stats);
    }
    Ok(())
}

/// The result in `format`.
fn render(result: &QueryResult, format: Format) -> anyhow::Result<String> {
    let batches = &result.batches;
    Ok(match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = result
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                format!("({}) 0 rows\n", names.join(", "))
            } else {
                format!("{}\n", arrow::util::pretty::pretty_format_batches(batches)?)
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            let mut text = String::from_utf8(writer.into_inner())?;
            if text.is_empty() {
                text.push_str("[]");
            }
            text.push('\n');
            text
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            String::from_utf8(out)?
        }
    })
}

/// `floe demo`'s analytics: the result as a table, then its figures.
pub(crate) fn table_with_stats(result: &QueryResult) -> anyhow::Result<String> {
    Ok(format!(
        "{}  {}\n",
        render(result, Format::Table)?,
        result.stats
    ))
}
