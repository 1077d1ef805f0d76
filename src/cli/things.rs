//! `floe things`: seed 004's `query_things` from the command line, the
//! same typed query as `GET /api/v1/things`.

use anyhow::Context;
use clap::{Args, ValueEnum};
use floe::{Config, Floe, OrderBy, QueryRequest, ThingsPage, ThingsQuery};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub(crate) struct ThingsArgs {
    /// The entity type, e.g. Order.
    entity_type: String,
    /// Only this namespace (tenant).
    #[arg(long)]
    namespace: Option<String>,
    /// A condition on the entity's JSON, repeatable (all must hold):
    /// "status = paid", "total >= 1500", "address.city IN ('Oslo', 'Bergen')",
    /// "name LIKE 'Pizza%'". See docs/query.md for the grammar.
    #[arg(long = "filter", short = 'f')]
    filters: Vec<String>,
    /// Sort key and direction: `$id`, `$version`, `$updated_at` or a field
    /// path, then `asc` or `desc` ("total desc").
    #[arg(long)]
    order: Option<String>,
    /// At most this many things.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Skip this many first.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Also read acknowledged writes not landed yet: opens the data
    /// directory (takes its lock) and reads its pipeline.
    #[arg(long)]
    fresh: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One line per thing.
    Table,
    /// One JSON document with the things and the query's figures.
    Json,
}

pub(crate) async fn run(config: Config, args: ThingsArgs) -> anyhow::Result<()> {
    let mut query = ThingsQuery::new(args.entity_type.clone())
        .limit(args.limit)
        .offset(args.offset);
    if let Some(namespace) = &args.namespace {
        query = query.namespace(namespace.clone());
    }
    for filter in &args.filters {
        query = query
            .parse_filter(filter)
            .with_context(|| format!("--filter {filter:?}"))?;
    }
    if let Some(order) = &args.order {
        let (by, descending) =
            OrderBy::parse_directed(order).with_context(|| format!("--order {order:?}"))?;
        query = query.order_by(by, descending);
    }
    let page = if args.fresh {
        let floe = Floe::open(config).await?;
        let page = floe
            .query_things(&query, &QueryRequest::new().fresh())
            .await;
        floe.close().await?;
        page?
    } else {
        floe::open_query(&config)
            .await?
            .query_things(&query)
            .await?
    };
    print!("{}", render(&page, args.format));
    Ok(())
}

fn render(page: &ThingsPage, format: Format) -> String {
    match format {
        Format::Json => {
            let things: Vec<Value> = page
                .things
                .iter()
                .map(|t| {
                    json!({
                        "namespace": t.namespace,
                        "type": t.entity_type,
                        "id": t.id,
                        "version": t.version,
                        "partition_key": t.partition_key,
                        "shard": t.shard,
                        "updated_at_us": t.updated_at_us,
                        "data": t.data,
                    })
                })
                .collect();
            format!(
                "{}\n",
                json!({ "count": things.len(), "things": things, "stats": page.stats.to_string() })
            )
        }
        Format::Table => {
            let mut out = String::new();
            for t in &page.things {
                out.push_str(&format!(
                    "{}/{}/{}  v{}  shard-{}  {}\n",
                    t.namespace, t.entity_type, t.id, t.version, t.shard, t.data
                ));
            }
            out.push_str(&format!("({} things)  {}\n", page.things.len(), page.stats));
            out
        }
    }
}
