//! GDPR erase end to end: after `Floe::erase` no file of the warehouse holds
//! a byte of the entity (searched raw and decoded by an independent Python
//! check), no snapshot pyiceberg or SQL can read has a row of it, every other
//! entity is intact, and the report names every copy left in the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "../support/server.rs"]
mod server;

use floe::{Config, EntityKey, Error, Floe, FsyncMode, PartitionKeySpec};
use floe_emitter::{FileLog, LogOptions};
use floe_engine::Pipeline;
use floe_query::arrow::array::AsArray;
use floe_query::arrow::datatypes::Int64Type;
use serde::Deserialize;
use serde_json::json;

const ID: &str = "victim-7f3a";
const MARKER: &str = "ERASE-ME-9d1c";

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.log.segment_bytes = 8 * 1024;
    config.partition_key.default = PartitionKeySpec::id();
    // Many small commits: the entity's events spread over many files.
    config.lake.commit_events = 40;
    config.lake.commit_interval_ms = 100;
    config
}

fn python() -> String {
    match std::env::var("FLOE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "FLOE_PYTHON is not set (the independent check is part of the contract): run FLOE_PYTHON=$(scripts/python-env.sh) or scripts/test.sh"
        ),
    }
}

fn count(result: &floe::QueryResult) -> i64 {
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

#[derive(Debug, Deserialize)]
struct Check {
    files: usize,
    raw_hits: Vec<String>,
    decoded_hits: Vec<String>,
    snapshots: usize,
    snapshot_hits: Vec<i64>,
    current_rows: BTreeMap<String, u64>,
}

fn check(dir: &Path) -> Check {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/erase_check.py");
    let dir = dir.canonicalize().unwrap();
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(dir.join("catalog.db"))
        .arg(dir.join("warehouse"))
        .arg(ID)
        .arg(MARKER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "erase check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Offsets of the entity's events in the data directory's log, by partition.
async fn log_offsets(dir: &Path) -> BTreeMap<u32, Vec<u64>> {
    let log = FileLog::open(&dir.join("log"), LogOptions::new(4)).unwrap();
    let mut found: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for p in 0..4 {
        let (mut at, high) = (
            log.low_watermark(p).unwrap(),
            log.high_watermark(p).unwrap(),
        );
        while at < high {
            let records = Pipeline::read(&log, p, at, 4096, Duration::ZERO)
                .await
                .unwrap();
            at = records.last().unwrap().offset + 1;
            for r in records.iter().filter(|r| r.event.entity_id == ID) {
                found.entry(p).or_default().push(r.offset);
            }
        }
    }
    log.close().await.unwrap();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_leaves_no_byte_of_the_entity_in_the_lake_and_reports_the_log_copies() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let floe = Floe::open(config.clone()).await.unwrap();
    let victim = EntityKey::new("t", "Person", ID);
    // Rows of every other entity, by id: what must survive the erase.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut victim_events = 0u64;
    for round in 0..6u64 {
        for i in 0..60u64 {
            let id = format!("p-{i:03}");
            floe.put(
                EntityKey::new("t", "Person", &id),
                json!({ "round": round, "name": format!("person {i}") }),
            )
            .await
            .unwrap();
            *expected.entry(id).or_default() += 1;
        }
        floe.put(
            victim.clone(),
            json!({ "round": round, "secret": MARKER, "email": format!("{MARKER}@example.com") }),
        )
        .await
        .unwrap();
        victim_events += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if round == 3 {
            // History the erase must expire: small files merged away.
            let report = floe::compact_lake(&config, false).await.unwrap();
            assert!(report.snapshot_id.is_some(), "{report:?}");
        }
    }
    let before = check(dir.path());
    assert!(
        !before.decoded_hits.is_empty(),
        "the victim is in the lake before"
    );
    assert!(!before.snapshot_hits.is_empty());

    // Erase while other writes keep the sink committing.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (floe, writing) = (floe.clone(), writing.clone());
        tokio::spawn(async move {
            let mut written = 0u64;
            while writing.load(Ordering::SeqCst) {
                floe.put(
                    EntityKey::new("t", "Person", "p-busy"),
                    json!({ "n": written }),
                )
                .await
                .unwrap();
                written += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    let report = floe.erase(victim.clone(), None).await.unwrap();
    writing.store(false, Ordering::SeqCst);
    let busy = writer.await.unwrap();
    expected.insert("p-busy".into(), busy);
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.tombstone_version, Some(victim_events + 1));
    assert_eq!(
        report.erased_rows,
        victim_events + 1,
        "every version and the tombstone"
    );
    assert!(report.snapshot_id.is_some());
    assert!(report.rewritten_files >= 2, "{report:?}");
    assert!(
        report.expired_snapshots > 0 && report.deleted_files > 0,
        "{report:?}"
    );
    assert!(floe.get(&victim).await.unwrap().is_none());

    // Erasing what floe has no trace of is a typed error that changes
    // nothing (once the sink landed the last busy writes).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let head = count(&floe.sql("SELECT count(*) AS n FROM events").await.unwrap());
    let err = floe
        .erase(EntityKey::new("t", "Person", "nobody-at-all"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownEntity { .. }), "{err}");
    assert!(err.to_string().contains("nobody-at-all"), "{err}");
    assert_eq!(
        count(&floe.sql("SELECT count(*) AS n FROM events").await.unwrap()),
        head
    );

    // SQL sees no row of it (the lake is landed to the head on close).
    let rows = floe
        .sql(&format!("SELECT * FROM events WHERE entity_id = '{ID}'"))
        .await
        .unwrap();
    assert_eq!(rows.num_rows(), 0);
    floe.close().await.unwrap();
    drop(floe);

    let after = check(dir.path());
    assert!(after.files > 0);
    assert!(
        after.raw_hits.is_empty(),
        "raw bytes of the entity in {:?}",
        after.raw_hits
    );
    assert!(
        after.decoded_hits.is_empty(),
        "decoded values of the entity in {:?}",
        after.decoded_hits
    );
    assert!(after.snapshots >= 1);
    assert!(
        after.snapshot_hits.is_empty(),
        "snapshots with rows of it: {:?}",
        after.snapshot_hits
    );
    assert_eq!(
        after.current_rows, expected,
        "the other entities are intact"
    );

    // The report names every copy the log still holds.
    let in_log = log_offsets(dir.path()).await;
    let mut reported: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for copy in &report.remaining {
        assert_eq!(copy.store, "embedded log");
        assert!(Path::new(&copy.location).exists(), "{}", copy.location);
        assert!(
            copy.until.contains("lake.retention is off"),
            "{}",
            copy.until
        );
        reported
            .entry(copy.partition)
            .or_default()
            .extend(&copy.offsets);
    }
    assert_eq!(reported, in_log);
    assert_eq!(
        in_log.values().map(Vec::len).sum::<usize>() as u64,
        victim_events + 1
    );

    // The SQL of a fresh session agrees.
    let query = floe::open_query(&config).await.unwrap();
    let rows = query
        .sql(&format!("SELECT * FROM events WHERE entity_id = '{ID}'"))
        .await
        .unwrap();
    assert_eq!(rows.num_rows(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_erase_is_admin_only_audited_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let server = server::FloeServer::start(
        dir.path(),
        "",
        "",
        "[lake]\ncommit_interval_ms = 100\ncommit_events = 50\n",
    );
    let path = format!("/api/v1/entities/t/Person/{ID}");
    server.put_ok(&path, json!({ "secret": MARKER })).await;
    server
        .put_ok("/api/v1/entities/t/Person/keep", json!({ "n": 1 }))
        .await;
    let erase = format!("{path}?erase=true");
    // An operator may delete but not erase.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &erase,
            Some(server::OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .call(reqwest::Method::DELETE, &erase, Some(server::ADMIN), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["tombstone_version"], 2, "{body}");
    assert_eq!(body["erased_rows"], 2, "{body}");
    assert!(!body["remaining"].as_array().unwrap().is_empty(), "{body}");
    // Unknown: a typed 404.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            "/api/v1/entities/t/Person/nobody?erase=true",
            Some(server::ADMIN),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
    assert_eq!(server::error_code(&body), "unknown_entity", "{body}");
    // The audit writer appends on its own thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let erasures = loop {
        let lines: Vec<serde_json::Value> = server
            .audit_lines()
            .into_iter()
            .filter(|l| l["action"] == "entity.erase")
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let outcomes: Vec<(&str, &str)> = erasures
        .iter()
        .map(|l| {
            (
                l["who"].as_str().unwrap_or(""),
                l["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("otto", "denied"), ("ada", "ok"), ("ada", "rejected")],
        "{erasures:?}"
    );
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/entities/t/Person/keep",
            Some(server::VIEWER),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
}
