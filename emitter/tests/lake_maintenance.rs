//! Lake maintenance against a real SQLite catalog and local warehouse, with
//! pyiceberg as the independent reader: replace commits, compaction racing a
//! running sink, and expiry that deletes exactly the unreferenced files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use floe_emitter::conformance::sample_event;
use floe_emitter::lake::{CompactOptions, ExpireOptions, RewriteFiles, compact, expire};
use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation, Sink, SinkOptions, SinkPhase};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, Pipeline};
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder};
use iceberg::table::Table;
use serde::Deserialize;

const PARTITIONS: u32 = 4;

fn location(dir: &Path) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: format!("file://{}", dir.join("warehouse").display()),
        properties: HashMap::new(),
    }
}

fn options(commit_events: usize) -> SinkOptions {
    SinkOptions {
        commit_events,
        commit_interval: Duration::from_millis(50),
        poll_interval: Duration::from_millis(10),
        instance: "dir-1".into(),
        ..SinkOptions::default()
    }
}

fn open_log(dir: &Path) -> Arc<FileLog> {
    Arc::new(
        FileLog::open(
            &dir.join("log"),
            LogOptions {
                partitions: PARTITIONS,
                segment_bytes: 64 * 1024,
                fsync: FsyncPolicy::Never,
            },
        )
        .unwrap(),
    )
}

async fn append(log: &FileLog, first: u64, count: u64) -> Vec<Event> {
    let events: Vec<Event> = (first..first + count)
        .map(|seq| sample_event(seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)))
        .collect();
    log.append(&events).await.unwrap();
    events
}

fn full() -> CompactOptions {
    CompactOptions::default()
}

#[derive(Debug, Deserialize)]
struct Lakeview {
    current: Option<i64>,
    metadata_location: String,
    snapshots: Vec<SnapshotView>,
    history: Vec<HistoryView>,
    referenced: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct HistoryView {
    id: i64,
    parent: Option<i64>,
    operation: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SnapshotView {
    id: i64,
    operation: Option<String>,
    count: u64,
    distinct_keys: u64,
    distinct_positions: u64,
    key_hash_sum: u64,
    offsets_total: u64,
    files: u64,
    duplicate_files: u64,
    referenced: Vec<String>,
}

fn python() -> String {
    match std::env::var("FLOE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "FLOE_PYTHON is not set (the independent reader is part of the contract): run FLOE_PYTHON=$(scripts/python-env.sh) or scripts/test.sh"
        ),
    }
}

/// pyiceberg's view of the lake (`current`: only the current snapshot).
fn pyiceberg(dir: &Path, current: bool) -> Lakeview {
    pyiceberg_mode(dir, if current { "current" } else { "all" })
}

/// pyiceberg's view of the snapshots `mode` names (`current`, `replaces`:
/// the replace snapshots, their parents and the current one, or `all`).
fn pyiceberg_mode(dir: &Path, mode: &str) -> Lakeview {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/readers/lake_snapshots.py");
    let dir = dir.canonicalize().unwrap();
    let mut command = std::process::Command::new(python());
    command
        .arg(script)
        .arg(dir.join("catalog.db"))
        .arg(dir.join("warehouse"));
    command.arg(mode);
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "pyiceberg reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under the warehouse.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, into: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, into);
            } else {
                into.insert(path);
            }
        }
    }
    let mut files = BTreeSet::new();
    walk(&dir.canonicalize().unwrap().join("warehouse"), &mut files);
    files
}

fn paths<'a>(uris: impl IntoIterator<Item = &'a String>) -> BTreeSet<PathBuf> {
    uris.into_iter()
        .map(|u| {
            PathBuf::from(format!(
                "/{}",
                u.trim_start_matches("file:").trim_start_matches('/')
            ))
        })
        .collect()
}

fn key_hash_sum(events: &[Event]) -> u64 {
    events.iter().fold(0u64, |s, e| s.wrapping_add(e.key_hash))
}

/// A snapshot holds each landed event exactly once, and no file twice.
fn assert_consistent(s: &SnapshotView) {
    assert_eq!(s.count, s.distinct_keys, "duplicate rows in {s:?}");
    assert_eq!(
        s.count, s.distinct_positions,
        "duplicate positions in {s:?}"
    );
    assert_eq!(
        s.count, s.offsets_total,
        "rows and offsets disagree in {s:?}"
    );
    assert_eq!(s.duplicate_files, 0, "a file listed twice in {s:?}");
}

async fn land(lake: &Lake, log: &Arc<FileLog>, commit_events: usize) {
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let mut sink = Sink::start(lake.clone(), pipeline, options(commit_events))
        .await
        .unwrap();
    sink.land_to_head().await.unwrap();
    sink.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_replaces_small_files_keeping_rows_checksums_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let events = append(&log, 0, 2000).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    land(&lake, &log, 200).await;
    let before = pyiceberg(dir.path(), true);
    let before = &before.snapshots[0];
    assert_consistent(before);
    let offsets = lake.committed_offsets(PARTITIONS).await.unwrap();

    let report = compact(&lake, &full()).await.unwrap();
    assert!(report.removed_files > report.added_files, "{report:?}");
    assert_eq!(report.rows, 2000);
    // 16 buckets of one day: one file each.
    assert_eq!(report.files_after, 16, "{report:?}");

    let after = pyiceberg(dir.path(), true);
    let after = &after.snapshots[0];
    assert_consistent(after);
    assert_eq!(after.operation.as_deref(), Some("replace"));
    assert_eq!(after.count, 2000);
    assert_eq!(after.key_hash_sum, key_hash_sum(&events));
    assert_eq!(after.key_hash_sum, before.key_hash_sum);
    assert_eq!(after.files, 16);
    // The offsets carried over: same values, now read from the replace snapshot.
    let carried = lake.committed_offsets(PARTITIONS).await.unwrap();
    assert_eq!(carried.offsets, offsets.offsets);
    assert_eq!(carried.snapshot_id, Some(after.id));
    // The sink resumes from them: nothing more to land, nothing landed twice.
    let mut more = events.clone();
    more.extend(append(&log, 2000, 300).await);
    land(&lake, &log, 200).await;
    let last = pyiceberg(dir.path(), true);
    assert_consistent(&last.snapshots[0]);
    assert_eq!(last.snapshots[0].count, 2300);
    assert_eq!(last.snapshots[0].key_hash_sum, key_hash_sum(&more));
    // Nothing left to compact in full mode but the new small files.
    let again = compact(&lake, &full()).await.unwrap();
    assert_eq!(again.files_after, 16, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_of_a_file_that_is_not_live_or_that_drops_rows_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    append(&log, 0, 600).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    land(&lake, &log, 300).await;
    let head = lake
        .load_table()
        .await
        .unwrap()
        .metadata()
        .current_snapshot_id();

    let err = RewriteFiles::replace()
        .delete_file("file:///nowhere/floe-x.parquet")
        .commit(&lake)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FileNotLive { .. }), "{err}");
    assert!(err.to_string().contains("is not live"), "{err}");

    let table = lake.load_table().await.unwrap();
    let snapshot = table.metadata().current_snapshot().unwrap();
    let live = table.scan().build().unwrap();
    use futures::TryStreamExt;
    let tasks: Vec<_> = live
        .plan_files()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let victim = tasks[0].data_file_path.clone();
    // Removing a file without adding its rows back is not a replace.
    let err = RewriteFiles::replace()
        .delete_file(victim.clone())
        .commit(&lake)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RowsChanged { added: 0, .. }), "{err}");
    assert_eq!(
        lake.load_table()
            .await
            .unwrap()
            .metadata()
            .current_snapshot_id(),
        Some(snapshot.snapshot_id())
    );
    assert_eq!(head, Some(snapshot.snapshot_id()));
    // The lost attempts left no manifest behind.
    let current = pyiceberg(dir.path(), false);
    let referenced = paths(&current.referenced);
    let metadata_dir = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("warehouse/floe/events/metadata");
    let avro: BTreeSet<PathBuf> = listing(dir.path())
        .into_iter()
        .filter(|p| p.starts_with(&metadata_dir) && p.extension().is_some_and(|e| e == "avro"))
        .collect();
    assert!(
        avro.is_subset(&referenced),
        "stray manifests: {:?}",
        avro.difference(&referenced)
    );
}

/// The live data files of the table's current snapshot, read from its manifests.
async fn live_files(table: &Table) -> Vec<DataFile> {
    let snapshot = table.metadata().current_snapshot().unwrap();
    let list = table.manifest_list_reader(snapshot).load().await.unwrap();
    let mut files = Vec::new();
    for manifest in list.entries() {
        let loaded = manifest.load_manifest(table.file_io()).await.unwrap();
        files.extend(
            loaded
                .entries()
                .iter()
                .filter(|e| e.is_alive())
                .map(|e| e.data_file().clone()),
        );
    }
    files
}

/// A copy of `file` under a new name: the same rows, so replacing one by the
/// other is a valid `replace`.
fn copy_of(table: &Table, file: &DataFile) -> DataFile {
    let path = file.file_path().to_string();
    let copy = path.replace(".parquet", "-copy.parquet");
    std::fs::copy(
        paths([&path]).pop_first().unwrap(),
        paths([&copy]).pop_first().unwrap(),
    )
    .unwrap();
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(copy)
        .file_format(file.file_format())
        .partition(file.partition().clone())
        .partition_spec_id(table.metadata().default_partition_spec_id())
        .record_count(file.record_count())
        .file_size_in_bytes(file.file_size_in_bytes())
        .build()
        .unwrap()
}

/// Every manifest and manifest list in the warehouse is referenced by a snapshot.
fn assert_no_stray_manifests(dir: &Path) {
    let view = pyiceberg(dir, false);
    let referenced = paths(view.snapshots.iter().flat_map(|s| &s.referenced));
    let metadata_dir = dir
        .canonicalize()
        .unwrap()
        .join("warehouse/floe/events/metadata");
    let avro: BTreeSet<PathBuf> = listing(dir)
        .into_iter()
        .filter(|p| p.starts_with(&metadata_dir) && p.extension().is_some_and(|e| e == "avro"))
        .collect();
    assert!(
        avro.is_subset(&referenced),
        "stray manifests: {:?}",
        avro.difference(&referenced)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_that_lost_to_an_append_is_rebased_and_one_that_lost_to_a_rewrite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut events = append(&log, 0, 600).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    land(&lake, &log, 300).await;

    // Planned on a snapshot the sink then moves past.
    let stale = lake.load_table().await.unwrap();
    let victim = live_files(&stale).await.swap_remove(0);
    let copy = copy_of(&stale, &victim);
    events.extend(append(&log, 600, 300).await);
    land(&lake, &log, 300).await;
    let head = lake
        .load_table()
        .await
        .unwrap()
        .metadata()
        .current_snapshot_id();
    let mut rewrite = RewriteFiles::replace();
    rewrite
        .delete_file(victim.file_path())
        .add_file(copy.clone());
    let report = rewrite.commit_on(&lake, stale).await.unwrap();
    assert_eq!((report.attempts, report.rebases), (2, 1), "{report:?}");
    assert_eq!(report.parent_id, head, "rebased onto the sink's snapshot");
    assert_eq!(report.removed_rows, victim.record_count());
    let view = pyiceberg(dir.path(), true);
    let current = &view.snapshots[0];
    assert_consistent(current);
    assert_eq!(current.id, report.snapshot_id);
    assert_eq!(
        (current.count, current.key_hash_sum),
        (900, key_hash_sum(&events))
    );
    let referenced = paths(&current.referenced);
    assert!(referenced.contains(&paths([&copy.file_path().to_string()]).pop_first().unwrap()));
    assert!(
        !referenced.contains(
            &paths([&victim.file_path().to_string()])
                .pop_first()
                .unwrap()
        )
    );
    // The sink's offsets are the ones of the snapshot it rebased onto.
    let offsets = lake.committed_offsets(PARTITIONS).await.unwrap();
    assert_eq!(offsets.snapshot_id, Some(report.snapshot_id));
    for p in 0..PARTITIONS {
        assert_eq!(offsets.offsets[p as usize], log.high_watermark(p).unwrap());
    }
    assert_no_stray_manifests(dir.path());

    // Planned on a snapshot whose files a compaction then merges away: the
    // rebase sees its manifests replaced, re-plans and finds the file gone.
    let stale = lake.load_table().await.unwrap();
    let victim = live_files(&stale)
        .await
        .into_iter()
        .find(|f| f.file_path() != copy.file_path())
        .unwrap();
    let second = copy_of(&stale, &victim);
    let compacted = compact(&lake, &full()).await.unwrap();
    assert!(compacted.snapshot_id.is_some());
    let mut rewrite = RewriteFiles::replace();
    rewrite.delete_file(victim.file_path()).add_file(second);
    let err = rewrite.commit_on(&lake, stale).await.unwrap_err();
    assert!(matches!(err, Error::FileNotLive { .. }), "{err}");
    assert_eq!(
        lake.load_table()
            .await
            .unwrap()
            .metadata()
            .current_snapshot_id(),
        compacted.snapshot_id
    );
    let view = pyiceberg(dir.path(), true);
    assert_consistent(&view.snapshots[0]);
    assert_eq!(view.snapshots[0].key_hash_sum, key_hash_sum(&events));
    assert_no_stray_manifests(dir.path());
}

// Each lost race is rebased on the sink's new snapshot (one manifest list),
// so a round commits within a few attempts even on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_racing_a_running_sink_never_loses_or_doubles_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let lake = Lake::open(location(dir.path())).await.unwrap();
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let sink = Sink::start(lake.clone(), pipeline, options(150))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sink = tokio::spawn(sink.run(stopped));

    // A writer appends while the sink lands and compaction rewrites.
    let appended = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicU32::new(1));
    let writer = {
        let (log, appended, writing) = (log.clone(), appended.clone(), writing.clone());
        tokio::spawn(async move {
            let mut all = Vec::new();
            let mut seq = 0;
            while writing.load(Ordering::SeqCst) == 1 {
                let n = 20 + seq % 40;
                all.extend(append(&log, seq, n).await);
                seq += n;
                appended.store(seq, Ordering::SeqCst);
                // ~600 events/s: a sink commit every ~250 ms, about as long
                // as a compaction takes to plan here, so they race.
                tokio::time::sleep(Duration::from_millis(30 + seq % 50)).await;
            }
            all
        })
    };
    // Random interleavings: compaction starts at pseudo-random moments.
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    const ROUNDS: u32 = 8;
    let (mut compacted, mut raced, mut rebased) = (0, 0, 0);
    let mut reads = Vec::new();
    let started = std::time::Instant::now();
    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A few sink commits between rounds, a compaction at a random
        // moment of the sink's cycle.
        tokio::time::sleep(Duration::from_millis(400 + rng % 1200)).await;
        let at = std::time::Instant::now();
        let report = compact(&lake, &full())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!("round {round} ({:?}): {report:?}", at.elapsed());
        compacted += report.removed_files;
        raced += report.attempts.saturating_sub(1);
        rebased += report.rebases;
        // pyiceberg reads the round's snapshot while the next round runs.
        let (path, appended_now) = (dir.path().to_path_buf(), appended.load(Ordering::SeqCst));
        let id = match report.snapshot_id {
            Some(id) => id,
            None => {
                let table = lake.load_table().await.unwrap();
                table.metadata().current_snapshot_id().unwrap()
            }
        };
        let mode = format!("id={id}");
        reads.push(tokio::task::spawn_blocking(move || {
            let view = pyiceberg_mode(&path, &mode);
            let read = &view.snapshots[0];
            assert_consistent(read);
            assert!(read.count <= appended_now, "round {round}: {read:?}");
        }));
    }
    for read in reads {
        read.await.unwrap();
    }
    writing.store(0, Ordering::SeqCst);
    let acknowledged = writer.await.unwrap();
    stop.send(true).unwrap();
    sink.await.unwrap().unwrap();
    compact(&lake, &full()).await.unwrap();

    // Every replace against its parent (reading all of the few hundred
    // snapshots would take minutes), and the current one.
    let view = pyiceberg_mode(dir.path(), "replaces");
    let current = view
        .snapshots
        .iter()
        .find(|s| Some(s.id) == view.current)
        .unwrap();
    assert_consistent(current);
    assert_eq!(
        current.count,
        acknowledged.len() as u64,
        "acknowledged events"
    );
    assert_eq!(current.key_hash_sum, key_hash_sum(&acknowledged));
    for snapshot in &view.snapshots {
        assert_consistent(snapshot);
    }
    let read = |id: i64| view.snapshots.iter().find(|s| s.id == id).unwrap();
    let replaces: Vec<&HistoryView> = view
        .history
        .iter()
        .filter(|s| s.operation.as_deref() == Some("replace"))
        .collect();
    for replace in &replaces {
        let (after, before) = (read(replace.id), read(replace.parent.unwrap()));
        assert_eq!(
            (after.count, after.key_hash_sum, after.offsets_total),
            (before.count, before.key_hash_sum, before.offsets_total),
            "replace {} changed the rows of {}",
            replace.id,
            before.id
        );
    }
    let appends = view
        .history
        .iter()
        .filter(|s| s.operation.as_deref() == Some("append"))
        .count();
    let replaces = replaces.len();
    assert!(
        compacted > 0 && replaces >= 5,
        "compaction did work: {compacted} files, {replaces} replaces"
    );
    assert!(
        appends > replaces,
        "the sink kept committing: {appends} appends"
    );
    // Every sink commit after a replace rebased onto it: the sink never stopped.
    let offsets = lake.committed_offsets(PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(offsets.offsets[p as usize], log.high_watermark(p).unwrap());
    }
    eprintln!(
        "compaction raced the sink {raced} times over {ROUNDS} rounds ({rebased} rebased) in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_exactly_the_unreferenced_files_and_keeps_live_snapshots_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let events = append(&log, 0, 1200).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    // A sink that crashes after writing files: orphans.
    let seen = Arc::new(AtomicU32::new(0));
    let hook: floe_emitter::sink::SinkHook = Arc::new(move |at| {
        if at == SinkPhase::FilesWritten && seen.fetch_add(1, Ordering::SeqCst) == 1 {
            return Err(Error::Stopped(at.as_str()));
        }
        Ok(())
    });
    let mut crashing = Sink::start(lake.clone(), pipeline.clone(), options(300))
        .await
        .unwrap()
        .with_hook(hook);
    assert!(crashing.land_to_head().await.is_err());
    drop(crashing);
    land(&lake, &log, 300).await;
    // A compaction that dies mid-way (its task aborted): more orphans, maybe.
    for delay in [2u64, 15, 40] {
        let lake2 = lake.clone();
        let task = tokio::spawn(async move { compact(&lake2, &full()).await });
        tokio::time::sleep(Duration::from_millis(delay)).await;
        task.abort();
        let _ = task.await;
    }
    compact(&lake, &full()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let before = pyiceberg(dir.path(), false);
    for s in &before.snapshots {
        assert_consistent(s);
    }
    let files_before = listing(dir.path());
    assert!(before.snapshots.len() >= 4, "{}", before.snapshots.len());

    // Young files are protected by the grace period: snapshots go, files stay.
    let young = expire(
        &lake,
        &ExpireOptions {
            older_than: Duration::ZERO,
            retain_last: 2,
            orphan_grace: Duration::from_secs(3600),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(young.expired_snapshots.len(), before.snapshots.len() - 2);
    assert!(young.deleted_paths.is_empty(), "{:?}", young.deleted_paths);
    assert!(young.kept_young > 0);

    let report = expire(
        &lake,
        &ExpireOptions {
            older_than: Duration::ZERO,
            retain_last: 2,
            orphan_grace: Duration::ZERO,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    let after = pyiceberg(dir.path(), false);
    let files_after = listing(dir.path());
    // The two newest snapshots are left, exactly as they read before.
    assert_eq!(after.snapshots.len(), 2);
    for s in &after.snapshots {
        assert_consistent(s);
        let old = before.snapshots.iter().find(|b| b.id == s.id).unwrap();
        assert_eq!((s.count, s.key_hash_sum), (old.count, old.key_hash_sum));
        assert_eq!(s.referenced, old.referenced);
    }
    let current = after
        .snapshots
        .iter()
        .find(|s| Some(s.id) == after.current)
        .unwrap();
    assert_eq!(current.count, 1200);
    assert_eq!(current.key_hash_sum, key_hash_sum(&events));
    // Exactly the files the kept snapshots reference (read by pyiceberg
    // before expiry), plus the current metadata file, are left.
    let mut expected = paths(
        before
            .snapshots
            .iter()
            .filter(|b| after.snapshots.iter().any(|a| a.id == b.id))
            .flat_map(|b| &b.referenced),
    );
    expected.extend(paths([&after.metadata_location]));
    assert_eq!(files_after, expected);
    let deleted: BTreeSet<PathBuf> = files_before
        .iter()
        .filter(|f| !files_after.contains(*f))
        .cloned()
        .collect();
    let reported: BTreeSet<PathBuf> = report.deleted_paths.iter().map(PathBuf::from).collect();
    // The previous metadata files (the young round's included) went too.
    assert!(
        deleted.is_subset(&reported),
        "{:?}",
        deleted.difference(&reported)
    );
    assert!(
        report.deleted.data > 0 && report.deleted.manifests > 0 && report.deleted.metadata > 0,
        "{report:?}"
    );
    // Time travel to an expired snapshot is no longer possible.
    let expired = young.expired_snapshots[0];
    let table = lake.load_table().await.unwrap();
    assert!(table.metadata().snapshot_by_id(expired).is_none());
    assert!(table.scan().snapshot_id(expired).build().is_err());
    // The sink resumes from the kept offsets.
    let mut more = events.clone();
    more.extend(append(&log, 1200, 100).await);
    land(&lake, &log, 300).await;
    let last = pyiceberg(dir.path(), true);
    assert_consistent(&last.snapshots[0]);
    assert_eq!(last.snapshots[0].key_hash_sum, key_hash_sum(&more));
}
