//! The lake end to end: the in-process sink, recovery through retention, the
//! standalone `floe sink`, sink lag, and pyiceberg as an independent reader.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;
use support::{Oracle, live, state_of};

use floe::{Config, EntityKey, Floe, FsyncMode, PartitionKeySpec};
use floe_emitter::{FileLog, LogOptions};
use floe_engine::{Event, Pipeline};
use serde_json::{Value, json};

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.log.segment_bytes = 8 * 1024;
    config.partition_key.default = PartitionKeySpec::id();
    config.lake.commit_events = 500;
    config.lake.commit_interval_ms = 200;
    config
}

/// Puts, updates and deletes over 150 entities; returns the acknowledged
/// final state and the number of acknowledged writes.
async fn write(floe: &Floe, writes: u64) -> (Oracle, u64) {
    let mut oracle = Oracle::new();
    let mut acked = 0;
    for i in 0..writes {
        let key = EntityKey::new("t", "Thing", format!("k-{}", (i * 7) % 150));
        if i % 11 == 10 {
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

/// Every event still in the data directory's log, with each partition's low watermark.
async fn log_events(dir: &Path) -> (Vec<Event>, Vec<u64>) {
    let log = FileLog::open(&dir.join("log"), LogOptions::new(4)).unwrap();
    let (mut events, mut lows) = (Vec::new(), Vec::new());
    for p in 0..4 {
        let low = log.low_watermark(p).unwrap();
        lows.push(low);
        let high = log.high_watermark(p).unwrap();
        let mut at = low;
        while at < high {
            let records = Pipeline::read(&log, p, at, 4096, Duration::ZERO)
                .await
                .unwrap();
            at = records.last().unwrap().offset + 1;
            events.extend(records.into_iter().map(|r| r.event));
        }
    }
    log.close().await.unwrap();
    (events, lows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_through_retention_rebuilds_state_from_iceberg_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.lake.retention = true;
    // The path under test: recovery through the lake. Shard snapshots
    // (tests/snapshots.rs) would start every shard past the deleted log.
    config.snapshots.enabled = false;
    let floe = Floe::open(config.clone()).await.unwrap();
    let (oracle, _) = write(&floe, 3000).await;
    floe.close().await.unwrap();
    drop(floe);
    let (_, lows) = log_events(dir.path()).await;
    assert!(
        lows.iter().any(|&l| l > 0),
        "retention deleted no segment: {lows:?}"
    );

    let floe = Floe::open(config.clone()).await.unwrap();
    let stats = floe.recovery_stats();
    assert!(stats.from_lake > 0, "{stats:?}");
    assert_eq!(state_of(&floe).await, live(&oracle));
    // Writes go on from the recovered versions.
    let key = EntityKey::new("t", "Thing", "k-0");
    let before = oracle[&key].0;
    let ack = floe.put(key, json!({"after": true})).await.unwrap();
    assert_eq!(ack.version, before + 1);
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_lag_drops_to_zero_once_landed() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    write(&floe, 800).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let lag = loop {
        let lag = floe.sink_lag().await.unwrap();
        if lag.events == 0 || Instant::now() > deadline {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lag.events, 0, "{lag:?}");
    assert_eq!(lag.seconds, 0.0);
    assert!(lag.commits >= 1, "{lag:?}");
    floe.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_floe_cannot_share_the_lake_of_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = Floe::open(config(&dir.path().join("a"))).await.unwrap();
    // Another data directory pointed at the same catalog and warehouse.
    let mut other = config(&dir.path().join("b"));
    other.lake.catalog = format!("sqlite://{}", dir.path().join("a/catalog.db").display());
    other.lake.warehouse = format!("file://{}", dir.path().join("a/warehouse").display());
    let err = Floe::open(other).await.unwrap_err().to_string();
    assert!(err.contains("holds the commit lease"), "{err}");
    first.close().await.unwrap();
}

/// Figures the Python reader prints.
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Figures {
    count: u64,
    distinct_keys: u64,
    key_hash_sum: u64,
    version_sum: u64,
    state_bytes: u64,
    offsets_total: u64,
    duckdb_count: u64,
}

fn figures(events: &[Event]) -> Figures {
    let keys: BTreeSet<&str> = events.iter().map(|e| e.idempotency_key.as_str()).collect();
    Figures {
        count: events.len() as u64,
        distinct_keys: keys.len() as u64,
        key_hash_sum: events.iter().fold(0u64, |s, e| s.wrapping_add(e.key_hash)),
        version_sum: events.iter().map(|e| e.version).sum(),
        state_bytes: events
            .iter()
            .map(|e| e.state.as_ref().map_or(0, |s| s.len()) as u64)
            .sum(),
        offsets_total: events.len() as u64,
        duckdb_count: events.len() as u64,
    }
}

fn python() -> String {
    match std::env::var("FLOE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => {
            let why = if std::env::var_os("FLOE_REQUIRE_SERVICES").is_some()
                || std::env::var_os("CI").is_some()
            {
                "FLOE_REQUIRE_SERVICES/CI is set"
            } else {
                "the independent reader is part of the contract"
            };
            panic!(
                "FLOE_PYTHON is not set ({why}): run FLOE_PYTHON=$(scripts/python-env.sh) or scripts/test.sh"
            )
        }
    }
}

fn read_with_pyiceberg(dir: &Path) -> Figures {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/iceberg_reader.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_reads_exactly_what_floe_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path())).await.unwrap();
    let (_, acked) = write(&floe, 2500).await;
    floe.close().await.unwrap();
    drop(floe);
    let (events, lows) = log_events(dir.path()).await;
    assert!(lows.iter().all(|&l| l == 0), "retention is off by default");
    assert_eq!(events.len() as u64, acked);
    let path = dir.path().canonicalize().unwrap();
    assert_eq!(read_with_pyiceberg(&path), figures(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lake_configuration_fails_open_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut unreachable = config(&dir.path().join("a"));
    unreachable.lake.catalog = "rest://127.0.0.1:9".into();
    let err = Floe::open(unreachable).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot open the Iceberg catalog http://127.0.0.1:9"),
        "{err}"
    );
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let mut unwritable = config(&dir.path().join("b"));
    unwritable.lake.warehouse = format!("file://{}/file/warehouse", dir.path().display());
    let err = Floe::open(unwritable).await.unwrap_err().to_string();
    assert!(err.contains("warehouse"), "{err}");
    // The directory is usable right after with a good configuration.
    let floe = Floe::open(config(&dir.path().join("b"))).await.unwrap();
    floe.close().await.unwrap();
}

#[test]
fn floe_sink_once_lands_a_pipeline_written_without_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.lake.sink = false;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let acked = runtime.block_on(async {
        let floe = Floe::open(config.clone()).await.unwrap();
        let (_, acked) = write(&floe, 1200).await;
        assert!(floe.sink_lag().await.is_err(), "no sink runs in-process");
        floe.close().await.unwrap();
        acked
    });
    let file = dir.path().join("floe.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
            .args(["--config", file.to_str().unwrap(), "sink", "--once"])
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("landed {acked} events")),
        "{stdout}"
    );
    // Nothing new: a second run lands nothing and duplicates nothing.
    let out = run();
    assert!(String::from_utf8_lossy(&out.stdout).contains("landed 0 events"));
    let path = dir.path().canonicalize().unwrap();
    assert_eq!(read_with_pyiceberg(&path).count, acked);
}
