//! One body per lake contract, run against every lake backend for real:
//! {SQLite catalog + local files, floe's REST catalog + S3 (floe-s3-server)}.
//! The sink lands exactly once across crashes at both phases, recovery
//! rebuilds state from the lake after retention, a live migration replays
//! history from the lake, SQL answers with pruning,
//! `floe sql` gives the same answers on both, and pyiceberg (through the
//! same catalog and storage) reads exactly what floe wrote.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support;
use support::{Oracle, live, state_of};
#[path = "../support/server.rs"]
mod server;
use server::{FloeServer, VIEWER};
#[path = "../support/lakes.rs"]
mod lakes;
use lakes::{Backend, TestLake, pyiceberg};

use floe::{Config, EntityKey, Floe, FsyncMode, MigrationOptions, PartitionKeySpec, PlanKind};
use floe_emitter::conformance::sample_event;
use floe_emitter::sink::{Lake, Sink, SinkHook, SinkOptions, SinkPhase};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, Pipeline};
use floe_query::arrow::array::AsArray;
use floe_query::arrow::datatypes::Int64Type;
use serde_json::{Value, json};

fn config(dir: &Path, lake: &TestLake) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.log.segment_bytes = 8 * 1024;
    config.partition_key.default = PartitionKeySpec::id();
    config.lake.commit_events = 500;
    config.lake.commit_interval_ms = 200;
    lake.apply(&mut config);
    config
}

/// Puts, updates and deletes over 150 entities, the same sequence every
/// time; returns the acknowledged final state and the number of writes.
async fn write(floe: &Floe, writes: u64) -> (Oracle, u64) {
    let mut oracle = Oracle::new();
    let mut acked = 0;
    for i in 0..writes {
        let key = EntityKey::new("t", "Thing", format!("k-{}", (i * 7) % 150));
        if i % 11 == 10 {
            // A delete of an entity not (or no longer) there is refused.
            if let Ok(ack) = floe.delete(key.clone()).await {
                oracle.insert(key, (ack.version, Value::Null));
                acked += 1;
            }
            continue;
        }
        let data = json!({ "i": i, "pad": "p".repeat((i % 40) as usize) });
        let ack = floe.put(key.clone(), data.clone()).await.unwrap();
        oracle.insert(key, (ack.version, data));
        acked += 1;
    }
    (oracle, acked)
}

fn ints(result: &floe::QueryResult) -> Vec<i64> {
    let batch = &result.batches[0];
    (0..batch.num_columns())
        .map(|c| batch.column(c).as_primitive::<Int64Type>().value(0))
        .collect()
}

/// Land with retention, reopen (recovery from the lake), check state, SQL,
/// pruning and what pyiceberg reads.
async fn lands_recovers_and_reads(backend: Backend) {
    let lake = TestLake::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &lake);
    config.lake.retention = true;
    // The path under test: recovery through the lake. Shard snapshots
    // (tests/snapshots.rs) would start every shard past the deleted log.
    config.snapshots.enabled = false;
    let floe = Floe::open(config.clone()).await.unwrap();
    let (oracle, acked) = write(&floe, 2500).await;
    floe.close().await.unwrap();
    drop(floe);

    let floe = Floe::open(config.clone()).await.unwrap();
    let stats = floe.recovery_stats();
    assert!(
        stats.from_lake > 0,
        "retention left the log whole: {stats:?}"
    );
    assert_eq!(state_of(&floe).await, live(&oracle));

    let once_sql = "SELECT count(*), count(DISTINCT idempotency_key), \
         count(DISTINCT pipeline_partition * 1000000000 + pipeline_offset), \
         sum(version), sum(length(state)) FROM events";
    let once = floe.sql(once_sql).await.unwrap();
    let [count, keys, positions, version_sum, state_bytes] = ints(&once)[..] else {
        panic!("five columns");
    };
    let acked = acked as i64;
    assert_eq!((count, keys, positions), (acked, acked, acked));
    // The same scan again, past the result cache: on S3 the data files'
    // bytes now come from the query's data file cache, with the same answer.
    let cache_before = floe.query().unwrap().data_cache_stats();
    let again = floe
        .sql_with(once_sql, &floe::QueryRequest::new().no_cache())
        .await
        .unwrap();
    assert_eq!(ints(&again), ints(&once));
    let cache_after = floe.query().unwrap().data_cache_stats();
    match backend {
        Backend::SqliteLocal => assert_eq!(cache_after, None, "local files use the page cache"),
        Backend::RestS3 => {
            let (before, after) = (cache_before.unwrap(), cache_after.unwrap());
            assert!(before.misses > 0 && before.bytes > 0, "{before:?}");
            assert!(after.hits > before.hits, "{before:?} -> {after:?}");
            assert_eq!(after.misses, before.misses, "{before:?} -> {after:?}");
        }
    }
    let point = floe
        .sql("SELECT count(*) FROM events WHERE partition_key = 'k-7'")
        .await
        .unwrap();
    assert!(ints(&point)[0] > 0);
    assert!(
        point.stats.files_scanned < point.stats.files_total,
        "no pruning: {:?}",
        point.stats
    );
    let live_count = floe.sql("SELECT count(*) FROM things").await.unwrap();
    assert_eq!(ints(&live_count)[0], live(&oracle).len() as i64);
    floe.close().await.unwrap();

    let read = pyiceberg("read", &lake.pyiceberg_properties(dir.path())).await;
    assert_eq!(read["count"], json!(acked), "{read}");
    assert_eq!(read["distinct_keys"], json!(acked), "{read}");
    assert_eq!(read["distinct_positions"], json!(acked), "{read}");
    assert_eq!(read["offsets_total"], json!(acked), "{read}");
    assert_eq!(read["version_sum"], json!(version_sum), "{read}");
    assert_eq!(read["state_bytes"], json!(state_bytes), "{read}");
    assert!(
        read["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("floe"))
    );
    assert_eq!(read["tables"], json!(["floe.events"]));
    let location = read["location"].as_str().unwrap();
    match backend {
        Backend::SqliteLocal => assert!(location.starts_with("file://"), "{location}"),
        Backend::RestS3 => assert!(location.starts_with(lakes::WAREHOUSE), "{location}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lands_recovers_and_reads_on_sqlite_and_local_files() {
    lands_recovers_and_reads(Backend::SqliteLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lands_recovers_and_reads_on_rest_and_s3() {
    lands_recovers_and_reads(Backend::RestS3).await;
}

/// A hook that fails at `phase` on the `nth` time it gets there.
fn crash_at(phase: SinkPhase, nth: u32) -> SinkHook {
    let seen = Arc::new(AtomicU32::new(0));
    Arc::new(move |at| {
        if at == phase && seen.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            return Err(Error::Stopped(at.as_str()));
        }
        Ok(())
    })
}

/// The sink killed after writing files (before the commit) and right after
/// a commit; each time a restart lands every event exactly once.
async fn sink_exactly_once_across_crashes(backend: Backend) {
    for phase in [SinkPhase::FilesWritten, SinkPhase::Committed] {
        // A fresh lake per round: one table, `floe.events`, per catalog.
        let lake_backend = TestLake::start(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &lake_backend);
        let location = config.lake.location(dir.path()).unwrap();
        let log = Arc::new(
            FileLog::open(
                &dir.path().join("log"),
                LogOptions {
                    partitions: 4,
                    segment_bytes: 16 * 1024,
                    fsync: FsyncPolicy::Never,
                },
            )
            .unwrap(),
        );
        let pipeline: Arc<dyn Pipeline> = log.clone();
        let mut acknowledged: Vec<Event> = (0..1000).map(|s| sample_event(s, s * 7919)).collect();
        log.append(&acknowledged).await.unwrap();
        let lake = Lake::open(location).await.unwrap();
        let options = SinkOptions {
            commit_events: 250,
            instance: "crash-test".into(),
            ..SinkOptions::default()
        };
        let mut sink = Sink::start(lake.clone(), pipeline.clone(), options.clone())
            .await
            .unwrap()
            .with_hook(crash_at(phase, 2));
        let err = sink.land_to_head().await.unwrap_err();
        assert!(matches!(err, Error::Stopped(_)), "{err}");
        drop(sink);

        let more: Vec<Event> = (1000..1300).map(|s| sample_event(s, s * 7919)).collect();
        log.append(&more).await.unwrap();
        acknowledged.extend(more);
        let mut sink = Sink::start(lake.clone(), pipeline.clone(), options)
            .await
            .unwrap();
        sink.land_to_head().await.unwrap();
        sink.release().await.unwrap();

        let committed = lake.committed_offsets(4).await.unwrap();
        let mut rows = Vec::new();
        lake.scan_landed(&committed, |records| {
            rows.extend(records);
            Ok(())
        })
        .await
        .unwrap();
        let keys: BTreeSet<&str> = rows
            .iter()
            .map(|r| r.event.idempotency_key.as_str())
            .collect();
        let positions: BTreeSet<(u32, u64)> =
            rows.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(rows.len(), acknowledged.len(), "{phase:?}: row count");
        assert_eq!(keys.len(), acknowledged.len(), "{phase:?}: keys");
        assert_eq!(positions.len(), acknowledged.len(), "{phase:?}: positions");
        for p in 0..4 {
            assert_eq!(
                committed.offsets[p as usize],
                log.high_watermark(p).unwrap()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_exactly_once_across_crashes_on_sqlite_and_local_files() {
    sink_exactly_once_across_crashes(Backend::SqliteLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_exactly_once_across_crashes_on_rest_and_s3() {
    sink_exactly_once_across_crashes(Backend::RestS3).await;
}

/// `floe sql` over the configuration file, off the async runtime: whether
/// it succeeded, and its stdout (on success) or stderr.
async fn floe_sql_outcome(config_file: &Path, sql: &str) -> (bool, String) {
    let (file, statement) = (config_file.to_path_buf(), sql.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
            .arg("--config")
            .arg(file)
            .args(["sql", &statement])
            .env_remove("FLOE_CONFIG")
            .env_remove("FLOE_DATA")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    (out.status.success(), String::from_utf8(text).unwrap())
}

/// `floe sql` that must succeed; its stdout.
async fn floe_sql(config_file: &Path, sql: &str) -> String {
    let (ok, text) = floe_sql_outcome(config_file, sql).await;
    assert!(ok, "floe sql {sql:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floe_sql_answers_the_same_over_s3_as_over_local_files() {
    const QUERIES: [&str; 4] = [
        "SELECT kind, count(*) AS n, sum(version) AS v FROM events GROUP BY kind ORDER BY kind",
        "SELECT entity_id, max(version) AS v, count(*) AS n FROM events GROUP BY entity_id ORDER BY entity_id LIMIT 20",
        "SELECT entity_id, version, data FROM things WHERE entity_id IN ('k-1', 'k-7', 'k-70') ORDER BY entity_id",
        "SELECT count(*) AS n, count(DISTINCT idempotency_key) AS keys FROM events WHERE partition_key = 'k-7'",
    ];
    let mut answers = Vec::new();
    for backend in [Backend::SqliteLocal, Backend::RestS3] {
        let lake = TestLake::start(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &lake);
        let floe = Floe::open(config.clone()).await.unwrap();
        write(&floe, 1500).await;
        floe.close().await.unwrap();
        let file = dir.path().join("floe.toml");
        std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
        let mut these = Vec::new();
        for sql in QUERIES {
            these.push(floe_sql(&file, sql).await);
        }
        assert!(these[0].contains("created"), "{}", these[0]);
        answers.push(these);
    }
    assert_eq!(answers[0], answers[1]);
}

/// Every live entity is listed once, by the shard the topology routes it
/// to, and the whole is the acknowledged state.
async fn check_placement(floe: &Floe, oracle: &Oracle) {
    let mut seen = BTreeSet::new();
    for shard in 0..floe.topology().shard_count {
        for entity in floe
            .list_shard(shard, "t", "Thing", None, usize::MAX)
            .await
            .unwrap()
        {
            let owner = floe.shard_for_key(&entity.key.id).shard;
            assert_eq!(owner, shard, "{} is on the wrong shard", entity.key);
            assert!(seen.insert(entity.key.clone()), "{} twice", entity.key);
        }
    }
    assert_eq!(state_of(floe).await, live(oracle));
    assert_eq!(seen.len(), live(oracle).len());
}

/// A live migration (one more shard) rebuilds the moving keys from their
/// history: the lake first (retention deleted the landed part of the log),
/// then the pipeline tail. The new placement holds exactly the
/// acknowledged state, serves new writes, and survives a restart.
async fn migration_replays_history_from_the_lake(backend: Backend) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let lake = TestLake::start(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &lake);
    config.lake.retention = true;
    let floe = Floe::open(config.clone()).await.unwrap();
    let (mut oracle, _) = write(&floe, 1500).await;
    let lag = wait_landed(&floe, std::time::Duration::from_secs(60)).await;
    assert_eq!(lag.events, 0, "{lag:?}");
    // A tail the sink may not have landed when the migration reads it.
    for i in 0..200u64 {
        let key = EntityKey::new("t", "Thing", format!("tail-{i}"));
        let data = json!({ "tail": i });
        let ack = floe.put(key.clone(), data.clone()).await.unwrap();
        oracle.insert(key, (ack.version, data));
    }
    let migrations = floe.migrations();
    let plan = migrations.plan(PlanKind::AddShard {}).await.unwrap();
    assert!(!plan.moves.is_empty(), "the plan moves keys");
    let report = migrations
        .run(plan.clone(), MigrationOptions::default())
        .await
        .unwrap();
    assert!(
        report.lake_events > 0,
        "nothing replayed from the lake: {report:?}"
    );
    assert!(report.files_read > 0, "{report:?}");
    assert_eq!(floe.topology(), plan.to);
    check_placement(&floe, &oracle).await;
    // Writes after the cutover go to the new owners.
    for i in 0..100u64 {
        let key = EntityKey::new("t", "Thing", format!("k-{i}"));
        let data = json!({ "after": i });
        let ack = floe.put(key.clone(), data.clone()).await.unwrap();
        oracle.insert(key, (ack.version, data));
    }
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
    drop(floe);

    let floe = Floe::open(config).await.unwrap();
    assert_eq!(floe.topology(), plan.to);
    check_placement(&floe, &oracle).await;
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_replays_history_from_the_lake_on_sqlite_and_local_files() {
    migration_replays_history_from_the_lake(Backend::SqliteLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_replays_history_from_the_lake_on_rest_and_s3() {
    migration_replays_history_from_the_lake(Backend::RestS3).await;
}

/// Waits until the in-process sink has landed everything.
async fn wait_landed(floe: &Floe, within: std::time::Duration) -> floe::SinkLag {
    let deadline = std::time::Instant::now() + within;
    loop {
        let lag = floe.sink_lag().await.unwrap();
        if lag.events == 0 || std::time::Instant::now() > deadline {
            return lag;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_mid_run_delays_landing_and_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut lake = TestLake::start(Backend::RestS3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &lake);
    config.lake.commit_interval_ms = 100;
    config.lake.commit_events = 200;
    let floe = Floe::open(config.clone()).await.unwrap();
    let (_, first) = write(&floe, 600).await;
    let lag = wait_landed(&floe, std::time::Duration::from_secs(60)).await;
    assert_eq!(lag.events, 0, "{lag:?}");

    // The store goes away: writes are still acknowledged (the pipeline is
    // the write-ahead log), the sink fails and keeps retrying.
    lake.s3.as_mut().unwrap().stop().unwrap();
    let mut acked = first;
    for i in 0..600u64 {
        let key = EntityKey::new("t", "Thing", format!("outage-{i}"));
        floe.put(key, json!({ "i": i })).await.unwrap();
        acked += 1;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(floe.sink_lag().await.unwrap().events > 0);
    // SQL fails with a typed, retryable error naming what is down, both
    // in the library and through `floe sql` (a process of its own).
    let started = std::time::Instant::now();
    let failed = floe.sql("SELECT count(*) FROM events").await;
    let err = failed.expect_err("SQL answered without its object store");
    assert!(
        matches!(
            err,
            floe::Error::Query(floe_query::Error::LakeUnavailable { .. })
        ),
        "{err}"
    );
    assert!(err.is_retryable(), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let endpoints = lake.endpoints();
    let text = err.to_string();
    assert!(endpoints.iter().any(|e| text.contains(e)), "{text}");
    assert!(text.contains("retry"), "{text}");
    let file = dir.path().join("floe.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let (ok, stderr) = floe_sql_outcome(&file, "SELECT count(*) FROM events").await;
    assert!(!ok, "floe sql answered without its object store");
    let s3 = lake.s3.as_ref().unwrap().endpoint();
    assert!(stderr.contains(&s3), "{stderr}");
    assert!(stderr.contains("retry"), "{stderr}");

    lake.s3.as_mut().unwrap().start_again().unwrap();
    let lag = wait_landed(&floe, std::time::Duration::from_secs(120)).await;
    assert_eq!(lag.events, 0, "the sink did not recover: {lag:?}");
    let once = floe
        .sql(
            "SELECT count(*), count(DISTINCT idempotency_key), \
             count(DISTINCT pipeline_partition * 1000000000 + pipeline_offset) FROM events",
        )
        .await
        .unwrap();
    let acked = acked as i64;
    assert_eq!(ints(&once), vec![acked, acked, acked]);
    let count = floe_sql(&file, "SELECT count(*) AS n FROM events").await;
    assert!(count.contains(&acked.to_string()), "{count}");
    floe.close().await.unwrap();
}

/// `POST /api/v1/sql` of a `floe serve` over REST + S3: while the object
/// store is down, a 503 `lake_unavailable` marked retryable, naming the
/// endpoint; once it is back, the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_http_during_an_object_store_outage_is_a_retryable_503() {
    let mut lake = TestLake::start(Backend::RestS3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    lake.apply(&mut config);
    let properties: String = config
        .lake
        .properties
        .iter()
        .map(|(k, v)| format!("{k:?} = {v:?}\n"))
        .collect();
    let lake_toml = format!(
        "[lake]\ncatalog = {:?}\nwarehouse = {:?}\ncommit_interval_ms = 100\n\n[lake.properties]\n{properties}",
        config.lake.catalog, config.lake.warehouse
    );
    let server = FloeServer::start(dir.path(), "", "", &lake_toml);
    for i in 0..50 {
        server
            .put_ok(
                &format!("/api/v1/entities/t/Thing/k-{i}"),
                json!({ "i": i }),
            )
            .await;
    }
    let sql = |statement: &str| json!({ "sql": statement }).to_string();
    let count = sql("SELECT count(*) AS n FROM events");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/sql",
                Some(VIEWER),
                Some(&count),
            )
            .await;
        if status == reqwest::StatusCode::OK && body["rows"][0]["n"] == json!(50) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not landed: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    lake.s3.as_mut().unwrap().stop().unwrap();
    // A statement that must read data files (the count above may be
    // answered from the result cache, and the table's metadata from the
    // catalog's memory, without touching the store).
    let reads_data = sql("SELECT sum(length(state)) AS n FROM events");
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/sql",
            Some(VIEWER),
            Some(&reads_data),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], json!("lake_unavailable"), "{body}");
    assert_eq!(body["error"]["retryable"], json!(true), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        lake.endpoints().iter().any(|e| message.contains(e)),
        "{message}"
    );

    lake.s3.as_mut().unwrap().start_again().unwrap();
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/sql",
            Some(VIEWER),
            Some(&reads_data),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(body["rows"][0]["n"].as_i64().unwrap() > 0, "{body}");
}
