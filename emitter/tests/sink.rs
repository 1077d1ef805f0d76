//! The Iceberg sink against a real SQLite catalog and a local warehouse:
//! exactly-once across crashes at every phase, fencing, file statistics and
//! clear errors for bad configuration.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use floe_emitter::conformance::sample_event;
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink, SinkOptions, SinkPhase, layout};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, Pipeline, Record};
use iceberg::spec::Datum;

const PARTITIONS: u32 = 4;

fn location(dir: &Path) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: format!("file://{}", dir.join("warehouse").display()),
        properties: HashMap::new(),
    }
}

fn options(instance: &str) -> SinkOptions {
    SinkOptions {
        commit_events: 250,
        instance: instance.into(),
        ..SinkOptions::default()
    }
}

fn open_log(dir: &Path) -> Arc<FileLog> {
    Arc::new(
        FileLog::open(
            &dir.join("log"),
            LogOptions {
                partitions: PARTITIONS,
                segment_bytes: 16 * 1024,
                fsync: FsyncPolicy::Never,
            },
        )
        .unwrap(),
    )
}

/// Appends `count` events with sequence numbers from `first`; returns them.
async fn append(log: &FileLog, first: u64, count: u64) -> Vec<Event> {
    let events: Vec<Event> = (first..first + count)
        .map(|seq| sample_event(seq, xxhash(seq)))
        .collect();
    log.append(&events).await.unwrap();
    events
}

fn xxhash(seq: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Every landed record, read back through an Iceberg scan.
async fn landed(lake: &Lake) -> Vec<Record> {
    landed_of(lake, PARTITIONS).await
}

/// [`landed`] of a pipeline of `partitions` partitions.
async fn landed_of(lake: &Lake, partitions: u32) -> Vec<Record> {
    let committed = lake.committed_offsets(partitions).await.unwrap();
    let mut all = Vec::new();
    lake.scan_landed(&committed, |records| {
        all.extend(records);
        Ok(())
    })
    .await
    .unwrap();
    all
}

/// Count, distinct idempotency keys and distinct pipeline positions all equal
/// the acknowledged events, and the offsets cover exactly them.
async fn assert_exactly_once(lake: &Lake, log: &FileLog, acknowledged: &[Event]) {
    let rows = landed(lake).await;
    let keys: BTreeSet<&str> = rows
        .iter()
        .map(|r| r.event.idempotency_key.as_str())
        .collect();
    let positions: BTreeSet<(u32, u64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    let expected: BTreeSet<&str> = acknowledged
        .iter()
        .map(|e| e.idempotency_key.as_str())
        .collect();
    assert_eq!(rows.len(), acknowledged.len(), "row count");
    assert_eq!(keys, expected, "idempotency keys");
    assert_eq!(positions.len(), acknowledged.len(), "distinct positions");
    let committed = lake.committed_offsets(PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(
            committed.offsets[p as usize],
            log.high_watermark(p).unwrap()
        );
    }
}

/// A hook that fails at `phase` on the `nth` time it gets there.
fn crash_at(phase: SinkPhase, nth: u32) -> floe_emitter::sink::SinkHook {
    let seen = Arc::new(AtomicU32::new(0));
    Arc::new(move |at| {
        if at == phase && seen.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            return Err(Error::Stopped(at.as_str()));
        }
        Ok(())
    })
}

async fn crash_and_restart(phase: SinkPhase) {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let acknowledged = append(&log, 0, 1000).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();

    let mut sink = Sink::start(lake.clone(), pipeline.clone(), options("dir-1"))
        .await
        .unwrap()
        .with_hook(crash_at(phase, 2));
    let err = sink.land_to_head().await.unwrap_err();
    assert!(matches!(err, Error::Stopped(_)), "{err}");
    // The crash: the sink is dropped where it stopped, its lease not released.
    drop(sink);
    let after_crash = landed(&lake).await.len();
    let expected = if phase == SinkPhase::FilesWritten {
        250
    } else {
        500
    };
    assert_eq!(after_crash, expected, "rows committed before the crash");

    let mut acknowledged = acknowledged;
    acknowledged.extend(append(&log, 1000, 300).await);
    // A restart of the same instance takes the crashed run's lease over.
    let mut sink = Sink::start(lake.clone(), pipeline.clone(), options("dir-1"))
        .await
        .unwrap();
    let stats = sink.land_to_head().await.unwrap();
    assert_eq!(stats.events, 1300 - expected as u64);
    sink.release().await.unwrap();
    assert_exactly_once(&lake, &log, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_when_killed_after_writing_files_before_commit() {
    crash_and_restart(SinkPhase::FilesWritten).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_when_killed_right_after_commit() {
    crash_and_restart(SinkPhase::Committed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_when_the_task_is_dropped_mid_round() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let acknowledged = append(&log, 0, 2000).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    // Abort the task at arbitrary points of its work, several times.
    for delay_ms in [5u64, 20, 60] {
        let (lake2, pipeline2) = (lake.clone(), pipeline.clone());
        let task = tokio::spawn(async move {
            let mut sink = Sink::start(lake2, pipeline2, options("dir-1"))
                .await
                .unwrap();
            sink.land_to_head().await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        task.abort();
        let _ = task.await;
    }
    let mut sink = Sink::start(lake.clone(), pipeline, options("dir-1"))
        .await
        .unwrap();
    sink.land_to_head().await.unwrap();
    sink.release().await.unwrap();
    assert_exactly_once(&lake, &log, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sink_is_fenced_and_a_stale_owner_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let pipeline: Arc<dyn Pipeline> = log.clone();
    append(&log, 0, 600).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    let first = Sink::start(lake.clone(), pipeline.clone(), options("host-a"))
        .await
        .unwrap();
    let err = Sink::start(lake.clone(), pipeline.clone(), options("host-b"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("holds the commit lease"), "{err}");
    assert!(!err.is_retryable());

    // A short lease that expires: the second sink takes over, and the first
    // (a zombie that slept through its lease) is refused at its next commit.
    first.release().await.unwrap();
    let mut zombie = Sink::start(lake.clone(), pipeline.clone(), options("host-a"))
        .await
        .unwrap();
    let mut expired = options("host-b");
    expired.lease = Duration::from_secs(1);
    let mut taker = loop {
        match Sink::start(lake.clone(), pipeline.clone(), expired.clone()).await {
            Ok(sink) => break sink,
            Err(Error::Fenced { .. }) => {
                // host-a's 60 s lease is fresh: make it stale by hand.
                let table = lake.load_table().await.unwrap();
                let tx = iceberg::transaction::Transaction::new(&table);
                use iceberg::transaction::ApplyTransactionAction;
                let tx = tx
                    .update_table_properties()
                    .set(layout::HEARTBEAT_PROPERTY.into(), "1".into())
                    .apply(tx)
                    .unwrap();
                tx.commit(&**lake.catalog()).await.unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    };
    let err = zombie.land_to_head().await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let stats = taker.land_to_head().await.unwrap();
    assert_eq!(stats.events, 600);
    assert_eq!(landed(&lake).await.len(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_sorted_by_key_hash_with_bounds_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    append(&log, 0, 3000).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    let mut sink = Sink::start(lake.clone(), log.clone(), options("dir-1"))
        .await
        .unwrap();
    sink.land_to_head().await.unwrap();
    let table = lake.load_table().await.unwrap();
    let metadata = table.metadata();
    let snapshot = metadata.current_snapshot().unwrap();
    let list = table.manifest_list_reader(snapshot).load().await.unwrap();
    let mut files = 0;
    for manifest in list.entries() {
        let manifest = manifest.load_manifest(table.file_io()).await.unwrap();
        for entry in manifest.entries() {
            let file = entry.data_file();
            assert!(file.file_path().contains("/floe-"), "{}", file.file_path());
            let (Some(Datum { .. }), Some(_)) = (
                file.lower_bounds().get(&8).cloned(),
                file.upper_bounds().get(&8).cloned(),
            ) else {
                panic!("no key_hash bounds in {}", file.file_path());
            };
            assert!(file.lower_bounds()[&8] <= file.upper_bounds()[&8]);
            files += 1;
        }
    }
    assert!(files >= 2, "partitioned into several files, got {files}");
    // Within a scanned batch (one file), rows come sorted by key hash.
    let mut stream = table.scan().build().unwrap().to_arrow().await.unwrap();
    use futures::TryStreamExt;
    while let Some(batch) = stream.try_next().await.unwrap() {
        let hashes: Vec<i64> = floe_emitter::sink::batch_to_records(&batch)
            .unwrap()
            .iter()
            .map(|r| r.event.key_hash as i64)
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] <= w[1]), "unsorted file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_fails_at_open_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A warehouse below a regular file cannot be created.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let mut bad = location(dir.path());
    bad.warehouse = format!("file://{}/file/warehouse", dir.path().display());
    let err = Lake::open(bad).await.unwrap_err().to_string();
    assert!(err.contains("warehouse"), "{err}");
    // Nothing listens on port 9 of loopback.
    let mut bad = location(dir.path());
    bad.catalog = CatalogUrl::Rest("http://127.0.0.1:9".into());
    let err = Lake::open(bad).await.unwrap_err();
    assert!(matches!(err, Error::CatalogUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("http://127.0.0.1:9"), "{err}");
    let err = CatalogUrl::parse("mysql://x", "/d")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported scheme"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_unlanded_events_and_their_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    append(&log, 0, 700).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    let mut sink = Sink::start(lake, log.clone(), options("dir-1"))
        .await
        .unwrap();
    let handle = sink.lag_handle();
    let lag = handle.lag(&*log).await.unwrap();
    assert_eq!(lag.events, 700);
    // sample events are stamped in November 2023.
    assert!(lag.seconds > 3600.0 * 24.0 * 365.0, "{lag:?}");
    assert_eq!(lag.commits, 0);
    sink.land_to_head().await.unwrap();
    let lag = handle.lag(&*log).await.unwrap();
    assert_eq!((lag.events, lag.seconds, lag.commits), (0, 0.0, 3));
}

fn python() -> String {
    match std::env::var("FLOE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "FLOE_PYTHON is not set (the independent reader is part of the contract): run FLOE_PYTHON=$(scripts/python-env.sh) or scripts/test.sh"
        ),
    }
}

/// Runs `tests/readers/<script>` with `args`; returns its standard output.
fn run_reader(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/readers")
        .join(script);
    let out = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A lake written before `owner_epoch` and `request_fingerprint` existed
/// (pyiceberg writes it as floe did then: 14 columns, 20 landed events):
/// opening it adds both columns in a new schema, once; the old rows read
/// back as epoch 0 without a fingerprint, the sink lands new events with
/// theirs, and pyiceberg reads old and new rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_from_before_the_epoch_column_is_upgraded_at_open_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, warehouse) = (dir.path().join("catalog.db"), dir.path().join("warehouse"));
    run_reader(
        "old_events_table.py",
        &[catalog.as_os_str(), warehouse.as_os_str(), "20".as_ref()],
    );

    let lake = Lake::open(location(dir.path())).await.unwrap();
    let table = lake.load_table().await.unwrap();
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    assert_eq!(
        metadata.schemas_iter().count(),
        2,
        "the old schema and the upgraded one"
    );
    assert_ne!(schema.schema_id(), 0);
    for column in ["owner_epoch", "request_fingerprint"] {
        let field = schema.field_by_name(column).expect(column);
        assert!(!field.required, "{column} is optional: old files lack it");
    }
    assert_eq!(schema.as_struct().fields().len(), 16);
    let upgraded = table.metadata_location().unwrap().to_string();
    // Opening it again changes nothing.
    let again = Lake::open(location(dir.path())).await.unwrap();
    let reloaded = again.load_table().await.unwrap();
    assert_eq!(reloaded.metadata_location().unwrap(), upgraded);

    // The pipeline the old lake landed: its 20 events, then new ones written
    // under owner epoch 7, half of them with a caller's key's fingerprint.
    let pipeline = Arc::new(floe_emitter::MemPipeline::new(1));
    let old: Vec<Event> = (0..20u64)
        .map(|i| {
            let mut event = sample_event(i, i);
            event.idempotency_key = format!("old-{i}");
            event
        })
        .collect();
    pipeline.append(&old).await.unwrap();
    let new: Vec<Event> = (20..50u64)
        .map(|i| {
            let mut event = sample_event(i, xxhash(i));
            event.owner_epoch = 7;
            event.request_fingerprint = (i % 2 == 0).then_some(u64::MAX - i);
            event
        })
        .collect();
    pipeline.append(&new).await.unwrap();
    let mut sink = Sink::start(lake.clone(), pipeline.clone(), options("dir-1"))
        .await
        .unwrap();
    assert_eq!(sink.land_to_head().await.unwrap().events, 30);
    sink.release().await.unwrap();

    let mut rows = landed_of(&lake, 1).await;
    rows.sort_by_key(|r| r.offset);
    assert_eq!(rows.len(), 50);
    for row in &rows[..20] {
        assert_eq!(
            (row.event.owner_epoch, row.event.request_fingerprint),
            (0, None),
            "a row from before the upgrade: {}",
            row.event.idempotency_key
        );
    }
    for (row, event) in rows[20..].iter().zip(&new) {
        assert_eq!(row.event.idempotency_key, event.idempotency_key);
        assert_eq!(row.event.owner_epoch, 7);
        assert_eq!(row.event.request_fingerprint, event.request_fingerprint);
    }

    // pyiceberg reads both kinds of files through the upgraded schema.
    let judged: serde_json::Value = serde_json::from_slice(&run_reader(
        "cluster_lake.py",
        &[
            catalog.canonicalize().unwrap().as_os_str(),
            warehouse.canonicalize().unwrap().as_os_str(),
        ],
    ))
    .unwrap();
    assert_eq!(judged["count"], 50);
    assert_eq!(
        judged["epochless_count"], 20,
        "only the old rows lack an epoch"
    );
    assert_eq!(judged["duplicate_key_count"], 0);
}
