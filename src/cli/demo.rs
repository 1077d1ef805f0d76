//! `floe demo`: a multi-tenant restaurant workload on an embedded deployment.
//!
//! Each restaurant is a tenant (namespace) and the partition key, so a
//! restaurant's menu, items and orders live on one shard, as seed 001 shards
//! a restaurant platform.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use floe::{Config, EntityKey, Floe, FsyncMode};
use serde_json::json;
use tokio::sync::Mutex;

use super::demo_day::{Batch, Day, Outcome};
use super::report;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Restaurants (tenants).
    #[arg(long, default_value_t = 1000)]
    restaurants: u32,
    /// Menu items per restaurant.
    #[arg(long, default_value_t = 10)]
    items: u32,
    /// Orders per restaurant on average. Sizes are skewed: a few large
    /// chains take many times the average, most small shops a fraction.
    /// Orders end in every state (placed, preparing, out for delivery,
    /// delivered, cancelled, refunded, or withdrawn and deleted).
    #[arg(long, default_value_t = 40)]
    orders: u32,
    /// Seed of the day's random choices (sizes, menus, baskets, outcomes):
    /// the same seed gives the same day.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Concurrent callers (restaurant clients); each runs a batch of one
    /// restaurant's orders at a time, one write after another (a chain's
    /// day is split into batches that run side by side).
    #[arg(long, default_value_t = 1000)]
    callers: u32,
    /// Shards of a new deployment.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Do not add a shard live halfway through the workload.
    #[arg(long)]
    no_migration: bool,
}

pub(crate) async fn run(
    mut config: Config,
    data_given: bool,
    args: DemoArgs,
) -> anyhow::Result<()> {
    let _temp;
    if !data_given {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        config.data_dir = dir.path().to_path_buf();
        _temp = dir;
    }
    config.topology.shards = args.shards;
    config.log.fsync = FsyncMode::Always;
    println!(
        "floe demo: {} restaurants x ({} menu items + {} orders) on {} shards, {} callers, data in {}",
        args.restaurants,
        args.items,
        args.orders,
        args.shards,
        args.callers,
        config.data_dir.display()
    );
    let floe = Floe::open(config.clone()).await?;
    let topology = floe.topology();
    println!(
        "topology v{}: {} shards, {:?} routing, {:?} key hash; partition key = restaurant (namespace)",
        topology.version, topology.shard_count, topology.strategy, topology.hash
    );

    let day = Arc::new(Day::new(
        args.restaurants,
        args.items,
        args.orders,
        args.seed,
    ));
    println!("{}", day.summary());
    let next = Arc::new(Mutex::new(0usize));
    let histogram = Arc::new(std::sync::Mutex::new(report::latency_histogram()));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..args.callers {
        let (floe, next, histogram, day) =
            (floe.clone(), next.clone(), histogram.clone(), day.clone());
        callers.spawn(async move {
            let mut local = report::latency_histogram();
            let mut writes = 0u64;
            loop {
                let batch = {
                    let mut n = next.lock().await;
                    if *n >= day.batches.len() {
                        break;
                    }
                    *n += 1;
                    day.batches[*n - 1]
                };
                writes += batch_workload(&floe, &day, batch, &mut local).await?;
            }
            histogram
                .lock()
                .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?
                .add(&local)?;
            anyhow::Ok(writes)
        });
    }
    // Halfway through, add a shard while the callers keep writing.
    let migration = (!args.no_migration).then(|| {
        let (floe, next) = (floe.clone(), next.clone());
        let half = day.batches.len() / 2;
        tokio::spawn(async move {
            while *next.lock().await < half {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            println!("\nadding a shard live while the workload keeps writing:");
            let options = super::migrate::RunArgsView {
                quiet: true,
                ..Default::default()
            };
            super::migrate::execute_on(&floe, floe::PlanKind::AddShard {}, &options).await
        })
    });
    let mut writes = 0;
    while let Some(joined) = callers.join_next().await {
        writes += joined??;
    }
    let elapsed = started.elapsed();
    if let Some(migration) = migration {
        let report = migration.await??;
        super::migrate::print_report(&report);
    }
    let histogram = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?
        .clone();

    let stats = floe.shard_stats().await?;
    let entities: Vec<u64> = stats.iter().map(|s| s.entities).collect();
    println!("\nentities per shard:");
    print!("{}", report::distribution(&entities));
    let total_entities: u64 = entities.iter().sum();
    let batches: u64 = stats.iter().map(|s| s.batches).sum();
    println!(
        "\n{writes} acknowledged writes in {:.2} s: {:.0} writes/s, {:.1} writes per group commit (fsync always)",
        elapsed.as_secs_f64(),
        report::per_second(writes, elapsed),
        writes as f64 / batches.max(1) as f64
    );
    println!("ack latency: {}", report::latency_summary(&histogram));
    let sample = EntityKey::new(day.namespace(day.largest()), "Order", "order-0003");
    if let Some(order) = floe.get(&sample).await? {
        println!("read back {} v{}: {}", order.key, order.version, order.data);
    }
    for hint in floe.rebalance_hints() {
        println!("rebalance hint: {hint:?}");
    }
    if let Ok(lag) = floe.sink_lag().await {
        println!(
            "iceberg sink: {} commits so far, {} events not yet landed (close lands the rest)",
            lag.commits, lag.events
        );
    }
    floe.close().await?;

    let reopen = Instant::now();
    let reopened = Floe::open(config).await?;
    let recovered: u64 = reopened
        .shard_stats()
        .await?
        .iter()
        .map(|s| s.entities)
        .sum();
    let recovery = reopened.recovery_stats();
    println!(
        "reopened in {:.0} ms: replayed {} events ({} from the Iceberg lake), {recovered} entities (before close: {total_entities})",
        reopen.elapsed().as_secs_f64() * 1000.0,
        recovery.events,
        recovery.from_lake
    );
    analytics(&reopened, &day.namespace(day.largest())).await?;
    reopened.close().await?;
    anyhow::ensure!(recovered == total_entities, "recovery lost entities");
    println!(
        "demo: {:.0} acked writes/s, p99 ack {:.2} ms across {} shards",
        report::per_second(writes, elapsed),
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        entities.len()
    );
    Ok(())
}

/// Cross-shard SQL over what the sink landed (everything: close made a
/// final commit): order funnel, top restaurants, prices by cuisine, and the
/// largest tenant's history, which reads only its own partitions.
async fn analytics(floe: &Floe, largest: &str) -> anyhow::Result<()> {
    let history = format!(
        "SELECT kind, entity_type, count(*) AS events, max(version) AS max_version \
         FROM events WHERE namespace = '{largest}' GROUP BY kind, entity_type ORDER BY entity_type, kind"
    );
    let queries = [
        (
            "orders by status (things = current state of every entity)",
            "SELECT json_get_str(data, 'status') AS status, count(*) AS orders \
             FROM things WHERE entity_type = 'Order' GROUP BY status ORDER BY orders DESC",
        ),
        (
            "top 5 restaurants by delivered revenue, across all shards (chains lead)",
            "SELECT namespace AS restaurant, count(*) AS delivered, \
             sum(json_get_int(data, 'total_cents')) / 100.0 AS revenue, \
             round(avg(json_get_int(data, 'total_cents')) / 100.0, 2) AS avg_ticket \
             FROM things WHERE entity_type = 'Order' AND json_get_str(data, 'status') = 'delivered' \
             GROUP BY namespace ORDER BY revenue DESC, restaurant LIMIT 5",
        ),
        (
            "average menu price by cuisine (a join of two entity types)",
            "SELECT json_get_str(r.data, 'cuisine') AS cuisine, count(*) AS items, \
             round(avg(json_get_int(m.data, 'price_cents')) / 100.0, 2) AS avg_price \
             FROM things r JOIN things m ON r.namespace = m.namespace \
             WHERE r.entity_type = 'Restaurant' AND m.entity_type = 'MenuItem' \
             GROUP BY cuisine ORDER BY avg_price DESC",
        ),
        (
            "the largest chain's event history (partition pruning)",
            history.as_str(),
        ),
    ];
    println!("\ncross-shard SQL over the Iceberg lake (floe sql --data DIR \"...\"):");
    for (title, sql) in queries {
        let result = floe.sql(sql).await?;
        println!("\n-- {title}\n{sql}");
        print!("{}", super::sql::table_with_stats(&result)?);
    }
    Ok(())
}

/// One batch of a restaurant's day: the first batch writes its profile and
/// menu, every batch a run of its orders, each ending in its outcome.
async fn batch_workload(
    floe: &Floe,
    day: &Day,
    batch: Batch,
    histogram: &mut hdrhistogram::Histogram<u64>,
) -> anyhow::Result<u64> {
    let shop = &day.shops[batch.shop as usize];
    let ns = day.namespace(batch.shop);
    let mut writes = 0u64;
    let h = histogram;
    if batch.first == 0 {
        timed(h, &mut writes, floe.put(
            EntityKey::new(&ns, "Restaurant", "profile"),
            json!({ "name": shop.name, "cuisine": shop.cuisine, "city": shop.city, "tier": shop.tier.name(), "open": true }),
        )).await?;
        for (item, price) in shop.prices.iter().enumerate() {
            timed(h, &mut writes, floe.put(
                EntityKey::new(&ns, "MenuItem", format!("item-{item:02}")),
                json!({ "name": format!("{} dish {item}", shop.cuisine), "price_cents": price, "available": true }),
            )).await?;
        }
    }
    for order in batch.first..batch.first + batch.count {
        let plan = day.order(batch.shop, order);
        let key = EntityKey::new(&ns, "Order", format!("order-{order:04}"));
        timed(h, &mut writes, floe.create(
            key.clone(),
            json!({ "status": "placed", "items": plan.lines, "total_cents": plan.total_cents, "customer": plan.customer }),
        )).await?;
        // Each outcome walks its own path through the states.
        let steps: &[serde_json::Value] = &match plan.outcome {
            Outcome::Placed => vec![],
            Outcome::Withdrawn => {
                timed(h, &mut writes, floe.delete(key)).await?;
                continue;
            }
            Outcome::Cancelled => {
                vec![json!({ "status": "cancelled", "reason": "kitchen closed" })]
            }
            Outcome::Preparing => vec![json!({ "status": "preparing" })],
            Outcome::OutForDelivery => vec![
                json!({ "status": "preparing" }),
                json!({ "status": "out_for_delivery" }),
            ],
            Outcome::Delivered => vec![
                json!({ "status": "preparing" }),
                json!({ "status": "delivered", "delivered_after_s": plan.minutes * 60 }),
            ],
            Outcome::Refunded => vec![
                json!({ "status": "preparing" }),
                json!({ "status": "delivered", "delivered_after_s": plan.minutes * 60 }),
                json!({ "status": "refunded", "refund_cents": plan.total_cents }),
            ],
        };
        for step in steps {
            timed(h, &mut writes, floe.update(key.clone(), step.clone())).await?;
        }
    }
    Ok(writes)
}

async fn timed(
    histogram: &mut hdrhistogram::Histogram<u64>,
    writes: &mut u64,
    write: impl Future<Output = floe::Result<floe::WriteAck>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    write.await?;
    report::record(histogram, started.elapsed());
    *writes += 1;
    Ok(())
}
