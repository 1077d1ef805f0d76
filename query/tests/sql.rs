//! SQL over a real lake: a SQLite catalog and a local warehouse filled by
//! the real sink from a real embedded log. Expected answers are computed
//! from the same events by plain Rust (an oracle), never written down.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink, SinkOptions};
use floe_emitter::{FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, EventKind, Json, Pipeline};
use floe_query::{
    AsOf, Compare, CrossShardQuery, Error, OrderBy, QueryOptions, QueryRequest, ThingsQuery,
};
use serde_json::{Value, json};

const PARTITIONS: u32 = 4;
const TENANTS: u32 = 24;
const ORDERS: u32 = 12;
const DAY_US: i64 = 86_400_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    lake: Lake,
    log: Arc<FileLog>,
    /// Every event appended, in order.
    events: Vec<Event>,
}

fn location(dir: &Path) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: format!("file://{}", dir.join("warehouse").display()),
        properties: HashMap::new(),
    }
}

fn fnv(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn event(tenant: u32, ty: &str, id: &str, version: u64, state: Option<Value>) -> Event {
    let namespace = format!("tenant-{tenant:02}");
    let kind = match (&state, version) {
        (None, _) => EventKind::Deleted,
        (Some(_), 1) => EventKind::Created,
        _ => EventKind::Updated,
    };
    Event {
        event_id: uuid::Uuid::new_v4(),
        idempotency_key: format!("{namespace}/{ty}/{id}@{version}"),
        kind,
        key_hash: fnv(&namespace),
        partition_key: namespace.clone(),
        namespace,
        entity_type: ty.into(),
        entity_id: id.into(),
        shard: tenant % 8,
        version,
        // Two days, so partitions are day x bucket.
        timestamp_us: 1_763_683_200_000_000 + i64::from(tenant % 2) * DAY_US + version as i64,
        request_fingerprint: None,
        owner_epoch: 0,
        state: state.map(|s| Json::from_trusted(s.to_string())),
    }
}

/// A day of orders per tenant: created, half of them delivered, some deleted.
fn history(round: u32) -> Vec<Event> {
    let mut events = Vec::new();
    for tenant in 0..TENANTS {
        if round == 0 {
            events.push(event(
                tenant,
                "Customer",
                "profile",
                1,
                Some(json!({"name": format!("c{tenant}"), "vip": tenant % 3 == 0})),
            ));
        }
        for order in 0..ORDERS {
            let id = format!("order-{round}-{order:02}");
            let total = i64::from(tenant * 100 + order * 7 + round);
            events.push(event(
                tenant,
                "Order",
                &id,
                1,
                Some(json!({"status": "placed", "total": total})),
            ));
            if order % 2 == 0 {
                events.push(event(
                    tenant,
                    "Order",
                    &id,
                    2,
                    Some(json!({"status": "delivered", "total": total})),
                ));
            }
            if order % 5 == 4 {
                events.push(event(tenant, "Order", &id, 3, None));
            }
        }
    }
    events
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            FileLog::open(
                &dir.path().join("log"),
                LogOptions {
                    partitions: PARTITIONS,
                    segment_bytes: 1 << 20,
                    fsync: FsyncPolicy::Never,
                },
            )
            .unwrap(),
        );
        let lake = Lake::open(location(dir.path())).await.unwrap();
        Fixture {
            _dir: dir,
            lake,
            log,
            events: Vec::new(),
        }
    }

    async fn append(&mut self, events: Vec<Event>) {
        self.log.append(&events).await.unwrap();
        self.events.extend(events);
    }

    /// Lands everything appended so far in one commit.
    async fn land(&self) {
        let pipeline: Arc<dyn Pipeline> = self.log.clone();
        let options = SinkOptions {
            instance: "query-tests".into(),
            ..SinkOptions::default()
        };
        let mut sink = Sink::start(self.lake.clone(), pipeline, options)
            .await
            .unwrap();
        sink.land_to_head().await.unwrap();
        sink.release().await.unwrap();
    }

    fn query(&self, options: QueryOptions) -> CrossShardQuery {
        CrossShardQuery::new(self.lake.clone(), options)
    }

    /// The live entities: highest version per key, deletions removed.
    fn oracle_things(&self) -> BTreeMap<(String, String, String), Value> {
        let mut latest: BTreeMap<(String, String, String), &Event> = BTreeMap::new();
        for e in &self.events {
            let key = (
                e.namespace.clone(),
                e.entity_type.clone(),
                e.entity_id.clone(),
            );
            if latest.get(&key).is_none_or(|old| old.version < e.version) {
                latest.insert(key, e);
            }
        }
        latest
            .into_iter()
            .filter_map(|(k, e)| {
                let state = e.state.as_ref()?;
                Some((k, serde_json::from_str(state.as_str()).unwrap()))
            })
            .collect()
    }
}

fn ints(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow_array::cast::as_primitive_array::<Int64Type>(b.column(column));
            c.values().to_vec()
        })
        .collect()
}

fn texts(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = datafusion_cast(b.column(column));
            (0..c.len())
                .map(|i| c.as_string::<i32>().value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn datafusion_cast(array: &arrow_array::ArrayRef) -> arrow_array::ArrayRef {
    arrow_cast(array)
}

fn arrow_cast(array: &arrow_array::ArrayRef) -> arrow_array::ArrayRef {
    datafusion::arrow::compute::cast(array, &arrow_schema::DataType::Utf8).unwrap()
}

async fn count(query: &CrossShardQuery, sql: &str, request: &QueryRequest) -> i64 {
    let result = query.sql_with(sql, request).await.unwrap();
    ints(&result.batches, 0)[0]
}

async fn landed_fixture() -> Fixture {
    let mut f = Fixture::new().await;
    f.append(history(0)).await;
    f.land().await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_match_the_events() {
    let f = landed_fixture().await;
    let q = f.query(QueryOptions::default());
    let r = q
        .sql("SELECT namespace, count(*) AS n, max(version) AS v FROM events GROUP BY namespace ORDER BY namespace")
        .await
        .unwrap();
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in &f.events {
        let slot = expected.entry(e.namespace.clone()).or_default();
        slot.0 += 1;
        slot.1 = slot.1.max(e.version as i64);
    }
    let names = texts(&r.batches, 0);
    let counts = ints(&r.batches, 1);
    let versions = ints(&r.batches, 2);
    let got: BTreeMap<String, (i64, i64)> = names
        .into_iter()
        .zip(counts.into_iter().zip(versions))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(r.stats.rows, u64::from(TENANTS));
    assert_eq!(r.stats.rows_scanned, f.events.len() as u64);
    assert!(r.stats.bytes_scanned > 0, "{}", r.stats);
    assert_eq!(r.stats.files_pruned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn things_hold_the_latest_live_state_after_updates_and_deletes() {
    let f = landed_fixture().await;
    let q = f.query(QueryOptions::default());
    let oracle = f.oracle_things();
    let r = q
        .sql("SELECT namespace, entity_type, entity_id, data FROM things ORDER BY namespace, entity_type, entity_id")
        .await
        .unwrap();
    let (ns, ty, id, data) = (
        texts(&r.batches, 0),
        texts(&r.batches, 1),
        texts(&r.batches, 2),
        texts(&r.batches, 3),
    );
    let got: BTreeMap<(String, String, String), Value> = (0..ns.len())
        .map(|i| {
            (
                (ns[i].clone(), ty[i].clone(), id[i].clone()),
                serde_json::from_str(&data[i]).unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), ns.len(), "one row per entity");
    assert_eq!(got, oracle);
    // Deletions really are gone, and some did happen.
    assert!(f.events.iter().any(|e| e.kind == EventKind::Deleted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_filters_and_top_n_across_shards() {
    let f = landed_fixture().await;
    let q = f.query(QueryOptions::default());
    let oracle = f.oracle_things();
    let delivered = oracle
        .values()
        .filter(|v| v["status"] == "delivered")
        .count() as i64;
    let n = count(
        &q,
        "SELECT count(*) FROM things WHERE json_get_str(data, 'status') = 'delivered'",
        &QueryRequest::new(),
    )
    .await;
    assert_eq!(n, delivered);

    let r = q
        .sql(
            "SELECT entity_id, json_get_int(data, 'total') AS total, shard FROM things \
              WHERE entity_type = 'Order' ORDER BY total DESC, entity_id LIMIT 5",
        )
        .await
        .unwrap();
    let mut totals: Vec<i64> = oracle
        .iter()
        .filter(|(k, _)| k.1 == "Order")
        .map(|(_, v)| v["total"].as_i64().unwrap())
        .collect();
    totals.sort_unstable_by(|a, b| b.cmp(a));
    totals.truncate(5);
    assert_eq!(ints(&r.batches, 1), totals);

    // The typed API: a namespace, a JSON filter, a numeric order, paging.
    let page = q
        .query_things(
            &ThingsQuery::new("Order")
                .namespace("tenant-07")
                .filter("status", Compare::Eq, "delivered")
                .order_by(OrderBy::Field(floe_query::JsonPath::field("total")), true)
                .limit(3)
                .offset(1),
        )
        .await
        .unwrap();
    let mut expected: Vec<(i64, String)> = oracle
        .iter()
        .filter(|(k, v)| k.0 == "tenant-07" && k.1 == "Order" && v["status"] == "delivered")
        .map(|(k, v)| (v["total"].as_i64().unwrap(), k.2.clone()))
        .collect();
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected
        .into_iter()
        .skip(1)
        .take(3)
        .map(|(_, id)| id)
        .collect();
    let got: Vec<String> = page.things.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got, expected);
    assert!(
        page.things
            .iter()
            .all(|t| t.data["status"] == "delivered" && t.version == 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_key_filters_read_at_most_an_eighth_of_the_files() {
    let mut f = landed_fixture().await;
    // A second commit: two files per partition.
    f.append(history(1)).await;
    f.land().await;
    let q = f.query(QueryOptions {
        namespace_is_partition_key: true,
        ..QueryOptions::default()
    });
    let expected = f
        .events
        .iter()
        .filter(|e| e.namespace == "tenant-05")
        .count() as i64;
    for sql in [
        "SELECT count(*) FROM events WHERE namespace = 'tenant-05'",
        "SELECT count(*) FROM events WHERE partition_key = 'tenant-05'",
    ] {
        let r = q
            .sql_with(sql, &QueryRequest::new().no_cache())
            .await
            .unwrap();
        assert_eq!(ints(&r.batches, 0)[0], expected, "{sql}");
        let s = &r.stats;
        assert!(s.partitions_total >= 8, "{s}");
        assert!(s.files_scanned * 8 <= s.files_total, "{sql}: {s}");
        assert_eq!(s.files_pruned, s.files_total - s.files_scanned);
        assert!(s.partitions_scanned * 8 <= s.partitions_total, "{sql}: {s}");
        assert!(s.bytes_planned > 0 && s.rows_scanned >= expected as u64);
    }
    // Without the namespace = partition key hint, only statistics prune, and
    // the answer is the same.
    let plain = f.query(QueryOptions::default());
    let r = plain
        .sql("SELECT count(*) FROM events WHERE namespace = 'tenant-05'")
        .await
        .unwrap();
    assert_eq!(ints(&r.batches, 0)[0], expected);
    // Things on one tenant prune too (the filter goes below the grouping).
    let r = q
        .sql("SELECT count(*) FROM things WHERE namespace = 'tenant-05'")
        .await
        .unwrap();
    let live = f
        .oracle_things()
        .keys()
        .filter(|k| k.0 == "tenant-05")
        .count() as i64;
    assert_eq!(ints(&r.batches, 0)[0], live);
    assert!(
        r.stats.files_scanned * 8 <= r.stats.files_total,
        "{}",
        r.stats
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_hits_on_repeat_and_misses_after_a_new_snapshot() {
    let mut f = landed_fixture().await;
    let q = f.query(QueryOptions::default());
    let sql = "SELECT count(*) FROM events";
    let first = q.sql(sql).await.unwrap();
    assert!(!first.stats.cache_hit);
    let second = q.sql(sql).await.unwrap();
    assert!(second.stats.cache_hit, "{}", second.stats);
    assert_eq!(ints(&second.batches, 0), ints(&first.batches, 0));
    f.append(history(1)).await;
    f.land().await;
    let third = q.sql(sql).await.unwrap();
    assert!(
        !third.stats.cache_hit,
        "a new snapshot must not be answered from the cache"
    );
    assert_eq!(ints(&third.batches, 0)[0], f.events.len() as i64);
    assert_ne!(third.stats.snapshot_id, first.stats.snapshot_id);
    // Disabled cache: never a hit.
    let uncached = f.query(QueryOptions {
        cache_enabled: false,
        ..QueryOptions::default()
    });
    uncached.sql(sql).await.unwrap();
    assert!(!uncached.sql(sql).await.unwrap().stats.cache_hit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_times_out_with_a_typed_error() {
    let f = landed_fixture().await;
    let q = f.query(QueryOptions::default());
    // Billions of joined rows: never finishes in 200 ms.
    let sql = "SELECT count(*) FROM events a, events b, events c WHERE a.version + b.version + c.version > 0";
    let started = std::time::Instant::now();
    let err = q
        .sql_with(
            sql,
            &QueryRequest::new().timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_and_change_nothing() {
    let f = landed_fixture().await;
    let q = f.query(QueryOptions::default());
    for sql in [
        "DROP TABLE events",
        "DROP VIEW things",
        "INSERT INTO events SELECT * FROM events",
        "CREATE TABLE copy AS SELECT * FROM events",
        "DELETE FROM events",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = q.sql(sql).await.unwrap_err();
        assert!(matches!(err, Error::ReadOnly { .. }), "{sql}: {err}");
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    let n = count(
        &q,
        "SELECT count(*) FROM events",
        &QueryRequest::new().no_cache(),
    )
    .await;
    assert_eq!(n, f.events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_returns_the_old_count() {
    let mut f = landed_fixture().await;
    let old_count = f.events.len() as i64;
    let q = f.query(QueryOptions::default());
    let old = q.sql("SELECT count(*) FROM events").await.unwrap();
    let old_snapshot = old.stats.snapshot_id.expect("landed");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(20)).await;
    f.append(history(1)).await;
    f.land().await;
    let sql = "SELECT count(*) FROM events";
    assert_eq!(
        count(&q, sql, &QueryRequest::new()).await,
        f.events.len() as i64
    );
    let by_id = QueryRequest::new().as_of(AsOf::Snapshot(old_snapshot));
    assert_eq!(count(&q, sql, &by_id).await, old_count);
    let by_time = QueryRequest::new().as_of(AsOf::TimestampMs(between));
    assert_eq!(count(&q, sql, &by_time).await, old_count);
    let things_then = count(&q, "SELECT count(*) FROM things", &by_id).await;
    assert!(things_then < count(&q, "SELECT count(*) FROM things", &QueryRequest::new()).await);
    let err = q
        .sql_with(sql, &QueryRequest::new().as_of(AsOf::Snapshot(42)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchSnapshot(_)), "{err}");
    let err = q
        .sql_with(sql, &QueryRequest::new().as_of(AsOf::TimestampMs(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchSnapshot(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_mode_sees_acknowledged_events_the_lake_does_not_hold() {
    let mut f = landed_fixture().await;
    let landed = f.events.len() as i64;
    f.append(history(1)).await;
    let pipeline: Arc<dyn Pipeline> = f.log.clone();
    let q = f.query(QueryOptions::default()).with_pipeline(pipeline);
    let sql = "SELECT count(*) FROM events";
    assert_eq!(count(&q, sql, &QueryRequest::new()).await, landed);
    let fresh = q.sql_with(sql, &QueryRequest::new().fresh()).await.unwrap();
    assert_eq!(ints(&fresh.batches, 0)[0], f.events.len() as i64);
    assert_eq!(
        fresh.stats.pending_events,
        f.events.len() as u64 - landed as u64
    );
    // Things in fresh mode are the oracle's, landed or not.
    let live = count(
        &q,
        "SELECT count(*) FROM things",
        &QueryRequest::new().fresh(),
    )
    .await;
    assert_eq!(live, f.oracle_things().len() as i64);
    // Once landed, nothing is counted twice.
    f.land().await;
    let again = q.sql_with(sql, &QueryRequest::new().fresh()).await.unwrap();
    assert_eq!(ints(&again.batches, 0)[0], f.events.len() as i64);
    assert_eq!(again.stats.pending_events, 0);
    // Without a pipeline, fresh mode is a clear error.
    let err = f
        .query(QueryOptions::default())
        .sql_with(sql, &QueryRequest::new().fresh())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}
