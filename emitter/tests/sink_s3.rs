//! The lake on a real S3-compatible server (s3s-fs on loopback, started by
//! the test): the sink lands exactly once on `s3://` with the SQLite
//! catalog, and a wrong endpoint, wrong credentials or a missing bucket
//! fail at open with an error naming what to fix.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use floe_emitter::conformance::sample_event;
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink, SinkOptions};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions, S3Server};
use floe_engine::{Event, Record};

const PARTITIONS: u32 = 4;

/// The SQLite catalog in `dir`, the warehouse in bucket `lake` of `s3`.
fn location(dir: &Path, s3: &S3Server) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: "s3://lake/warehouse".into(),
        properties: s3.properties(),
    }
}

fn server() -> S3Server {
    let s3 = S3Server::start().unwrap_or_else(|e| panic!("{e}"));
    s3.create_bucket("lake").unwrap();
    s3
}

fn open_log(dir: &Path) -> Arc<FileLog> {
    let options = LogOptions {
        partitions: PARTITIONS,
        segment_bytes: 16 * 1024,
        fsync: FsyncPolicy::Never,
    };
    Arc::new(FileLog::open(&dir.join("log"), options).unwrap())
}

async fn append(log: &FileLog, first: u64, count: u64) -> Vec<Event> {
    let events: Vec<Event> = (first..first + count)
        .map(|seq| sample_event(seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    log.append(&events).await.unwrap();
    events
}

async fn landed(lake: &Lake) -> Vec<Record> {
    let committed = lake.committed_offsets(PARTITIONS).await.unwrap();
    let mut all = Vec::new();
    lake.scan_landed(&committed, |records| {
        all.extend(records);
        Ok(())
    })
    .await
    .unwrap();
    all
}

/// Every object key under `dir` (recursively), relative to it.
fn objects(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_lands_exactly_once_in_an_s3_warehouse() {
    let s3 = server();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut acknowledged = append(&log, 0, 900).await;
    let lake = Lake::open(location(dir.path(), &s3)).await.unwrap();
    let options = SinkOptions {
        commit_events: 400,
        instance: "s3-test".into(),
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(lake.clone(), log.clone(), options.clone())
        .await
        .unwrap();
    sink.land_to_head().await.unwrap();
    drop(sink);
    // A restart resumes from the offsets committed on S3.
    acknowledged.extend(append(&log, 900, 300).await);
    let lake = Lake::open(location(dir.path(), &s3)).await.unwrap();
    let mut sink = Sink::start(lake.clone(), log.clone(), options)
        .await
        .unwrap();
    let stats = sink.land_to_head().await.unwrap();
    assert_eq!(stats.events, 300);
    sink.release().await.unwrap();

    let rows = landed(&lake).await;
    let keys: BTreeSet<&str> = rows
        .iter()
        .map(|r| r.event.idempotency_key.as_str())
        .collect();
    let expected: BTreeSet<&str> = acknowledged
        .iter()
        .map(|e| e.idempotency_key.as_str())
        .collect();
    assert_eq!(rows.len(), acknowledged.len());
    assert_eq!(keys, expected);
    let committed = lake.committed_offsets(PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(
            committed.offsets[p as usize],
            log.high_watermark(p).unwrap()
        );
    }
    // The files are objects of the bucket, not local files.
    let stored = objects(&s3.root().join("lake"));
    let parquet = stored.iter().filter(|k| k.ends_with(".parquet")).count();
    let metadata = stored
        .iter()
        .filter(|k| k.ends_with(".metadata.json"))
        .count();
    assert!(parquet >= 2, "{stored:?}");
    assert!(metadata >= 2, "{stored:?}");
    assert!(
        stored.iter().all(|k| k.starts_with("warehouse/")),
        "{stored:?}"
    );
    assert!(!dir.path().join("warehouse").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_a_missing_bucket_or_a_dead_endpoint_fail_at_open() {
    let s3 = server();
    let dir = tempfile::tempdir().unwrap();
    let check = |err: Error, names: &str| {
        assert!(matches!(err, Error::WarehouseNotWritable { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(names), "{text}");
        assert!(text.contains("s3://"), "{text}");
    };

    let mut bad = location(dir.path(), &s3);
    bad.properties
        .insert("s3.secret-access-key".into(), "not-the-secret".into());
    check(Lake::open(bad).await.unwrap_err(), "credentials");

    // A missing bucket: s3s-fs would create it on the first write, so
    // the open must notice before writing anything (by listing).
    let mut missing = location(dir.path(), &s3);
    missing.warehouse = "s3://no-such-bucket/warehouse".into();
    let err = Lake::open(missing).await.unwrap_err();
    assert!(matches!(err, Error::BucketMissing { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("\"no-such-bucket\""), "{text}");
    assert!(text.contains(&s3.endpoint()), "{text}");
    assert!(text.contains("lake.warehouse"), "{text}");
    assert!(
        !s3.root().join("no-such-bucket").exists(),
        "the failed open created the bucket"
    );

    let mut bad = location(dir.path(), &s3);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    bad.properties = HashMap::from([
        ("s3.endpoint".into(), format!("http://127.0.0.1:{port}")),
        ("s3.access-key-id".into(), s3.access_key().into()),
        ("s3.secret-access-key".into(), s3.secret_key().into()),
        ("s3.region".into(), "us-east-1".into()),
        ("s3.path-style-access".into(), "true".into()),
    ]);
    let started = std::time::Instant::now();
    // Nothing answers there: an outage or a wrong endpoint, which look the
    // same; the error is retryable and names the endpoint and the key.
    let err = Lake::open(bad).await.unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err}");
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
    assert!(text.contains("s3.endpoint"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Nothing was created by the failed opens: the catalog opens cleanly.
    let lake = Lake::open(location(dir.path(), &s3)).await.unwrap();
    assert!(lake.load_table().await.is_ok());
}
