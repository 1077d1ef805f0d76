//! A damaged embedded log against a real data directory and its lake: what
//! floe truncates (a torn tail), what it refuses (a complete frame that fails
//! its checksum, a log behind the lake), and what `floe repair` rebuilds.

use std::path::{Path, PathBuf};

use crate::support;
use support::{Oracle, live, state_of};

#[path = "../support/run.rs"]
mod run;

use floe::{Config, EntityKey, Floe, FsyncMode, PartitionKeySpec, RepairReport};
use floe_emitter::Error as LogError;
use floe_query::arrow::array::AsArray;
use floe_query::arrow::datatypes::Int64Type;
use proptest::prelude::*;
use serde_json::{Value, json};

const PARTITIONS: u32 = 2;

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Always;
    config.topology.shards = 2;
    config.log.partitions = PARTITIONS;
    config.log.segment_bytes = 8 * 1024;
    config.partition_key.default = PartitionKeySpec::id();
    config.lake.commit_interval_ms = 100;
    config
}

fn key(name: &str) -> EntityKey {
    EntityKey::new("t", "Thing", name)
}

/// Puts `prefix-0..n` (every tenth one updated once more) and closes floe,
/// which lands everything in the lake (when the sink runs). Returns the
/// acknowledged state.
async fn write_and_close(config: &Config, prefix: &str, n: u64) -> Oracle {
    let floe = Floe::open(config.clone()).await.unwrap();
    let mut oracle = Oracle::new();
    for i in 0..n {
        let data = json!({ "i": i, "pad": "x".repeat((i % 30) as usize) });
        let ack = floe
            .put(key(&format!("{prefix}-{i}")), data.clone())
            .await
            .unwrap();
        oracle.insert(key(&format!("{prefix}-{i}")), (ack.version, data));
    }
    for i in (0..n).step_by(10) {
        let data = json!({ "i": i, "again": true });
        let ack = floe
            .put(key(&format!("{prefix}-{i}")), data.clone())
            .await
            .unwrap();
        oracle.insert(key(&format!("{prefix}-{i}")), (ack.version, data));
    }
    floe.close().await.unwrap();
    oracle
}

fn segments(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("log/p-{partition:04}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// The newest non-empty segment of `partition`.
fn newest_segment(dir: &Path, partition: u32) -> PathBuf {
    segments(dir, partition)
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .expect("the partition has a non-empty segment")
}

/// `(start, total length)` of every frame of a segment file.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, 8 + len));
        pos += 8 + len;
    }
    out
}

fn xor(path: &Path, at: usize, len: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    let end = (at + len).min(bytes.len());
    for b in &mut bytes[at..end] {
        *b ^= mask;
    }
    std::fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn open_err(config: &Config) -> floe::Error {
    match Floe::open(config.clone()).await {
        Ok(_) => panic!("floe opened a damaged data directory"),
        Err(e) => e,
    }
}

/// Asserts the refusal names the file, the byte and the partition.
fn assert_corrupt(err: &floe::Error, path: &Path, partition: u32) -> u64 {
    match err {
        floe::Error::CorruptLog(LogError::CorruptRecord {
            partition: p,
            path: bad,
            byte,
            ..
        }) => {
            assert_eq!((*p, bad.as_path()), (partition, path), "{err}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("at byte {byte}")), "{text}");
            assert!(text.contains("floe repair"), "{text}");
            *byte
        }
        other => panic!("expected a corrupt-log refusal, got {other:?}"),
    }
}

/// Events the lake holds whose entity id starts with `prefix`.
async fn landed(config: &Config, prefix: &str) -> i64 {
    let query = floe::open_query(config).await.unwrap();
    let result = query
        .sql(&format!(
            "SELECT count(*) FROM events WHERE entity_id LIKE '{prefix}-%'"
        ))
        .await
        .unwrap();
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn report(reports: &[RepairReport], partition: u32) -> &RepairReport {
    reports.iter().find(|r| r.partition == partition).unwrap()
}

/// After a repair: floe opens and serves `oracle`, and new writes land in
/// the lake (the sink skips none of them).
async fn serves_and_lands(config: &Config, oracle: &Oracle) {
    let floe = Floe::open(config.clone()).await.unwrap();
    assert_eq!(state_of(&floe).await, live(oracle));
    floe.close().await.unwrap();
    drop(floe);
    let new = write_and_close(config, "new", 20).await;
    assert_eq!(landed(config, "new").await, 22, "20 puts and 2 updates");
    let floe = Floe::open(config.clone()).await.unwrap();
    let mut all = oracle.clone();
    all.extend(new);
    assert_eq!(state_of(&floe).await, live(&all));
    floe.close().await.unwrap();
}

/// The scenario: 300 writes acknowledged and landed, 16 bytes flipped
/// in the middle of a partition's newest segment, restart. floe used to
/// start, serve about half the entities and then hand out offsets the lake
/// already had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_mid_segment_refuse_then_repair_from_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let oracle = write_and_close(&config, "k", 300).await;
    assert_eq!(landed(&config, "k").await, 330);
    let segment = newest_segment(dir.path(), 1);
    let size = std::fs::metadata(&segment).unwrap().len() as usize;
    xor(&segment, size / 2, 16, 0xff);
    let damaged = std::fs::read(&segment).unwrap();

    let err = open_err(&config).await;
    let byte = assert_corrupt(&err, &segment, 1);
    assert!(
        byte as usize <= size / 2,
        "the damage starts at or before {byte}"
    );

    let dry = floe::repair(&config, None, true).await.unwrap();
    let p1 = report(&dry, 1);
    assert!(p1.needed && p1.lost.is_empty(), "{p1}");
    assert!(!p1.damage.is_empty(), "{p1}");
    assert!(!report(&dry, 0).needed, "partition 0 is intact");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        damaged,
        "a dry run writes nothing"
    );
    assert!(open_err(&config).await.to_string().contains("corrupt"));

    let reports = floe::repair(&config, None, false).await.unwrap();
    assert_eq!(
        report(&reports, 1),
        p1,
        "the dry run said what the repair did"
    );
    assert!(p1.to_string().contains("unrecoverable: nothing"), "{p1}");
    serves_and_lands(&config, &oracle).await;
    assert_eq!(landed(&config, "k").await, 330, "nothing landed twice");
}

/// A frame flipped at each position of the newest segment: first, middle,
/// last complete; a torn partial frame at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_at_every_frame_position_of_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let oracle = write_and_close(&config(&original), "k", 120).await;
    let newest = newest_segment(&original, 0);
    let name = newest.strip_prefix(&original).unwrap().to_path_buf();
    let positions = frames(&newest);
    assert!(positions.len() >= 3, "the newest segment has {positions:?}");
    let cases = [
        ("first", positions[0]),
        ("middle", positions[positions.len() / 2]),
        ("last complete", positions[positions.len() - 1]),
    ];
    for (what, (start, len)) in cases {
        let case = dir.path().join(what.replace(' ', "-"));
        copy_dir(&original, &case);
        let config = config(&case);
        let segment = case.join(&name);
        // A flipped byte in the payload: the frame is whole, its checksum fails.
        xor(&segment, start + len / 2, 1, 0x20);
        let err = open_err(&config).await;
        assert_eq!(assert_corrupt(&err, &segment, 0), start as u64, "{what}");
        let reports = floe::repair(&config, Some(0), false).await.unwrap();
        let r = report(&reports, 0);
        assert!(r.needed && r.lost.is_empty(), "{what}: {r}");
        assert_eq!(r.damage.len(), 1, "{what}: {r}");
        assert_eq!(r.damage[0].records, 1..=1, "{what}: exactly one record");
        serves_and_lands(&config, &oracle).await;
    }

    // A torn partial frame after the last one: truncated, nothing refused.
    let case = dir.path().join("torn");
    copy_dir(&original, &case);
    let config = config(&case);
    let segment = case.join(&name);
    let (start, len) = positions[1];
    let bytes = std::fs::read(&segment).unwrap();
    let intact = bytes.len() as u64;
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[start..start + len / 2]);
    std::fs::write(&segment, torn).unwrap();
    let floe = Floe::open(config.clone()).await.unwrap();
    assert_eq!(state_of(&floe).await, live(&oracle));
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        intact,
        "truncated"
    );
    floe.close().await.unwrap();
    drop(floe);
    serves_and_lands(&config, &oracle).await;
}

/// A length prefix damaged so that it points past the end of the file:
/// followed by valid frames (a middle frame) or by its own whole event (the
/// last frame), it is corruption, not a torn write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_prefix_pointing_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let oracle = write_and_close(&config(&original), "k", 120).await;
    let newest = newest_segment(&original, 1);
    let name = newest.strip_prefix(&original).unwrap().to_path_buf();
    let positions = frames(&newest);
    for (what, (start, _)) in [
        ("middle", positions[positions.len() / 2]),
        ("last", positions[positions.len() - 1]),
    ] {
        let case = dir.path().join(what);
        copy_dir(&original, &case);
        let config = config(&case);
        let segment = case.join(&name);
        xor(&segment, start + 2, 1, 0x7f); // length += ~8 MB
        let err = open_err(&config).await;
        assert_eq!(assert_corrupt(&err, &segment, 1), start as u64, "{what}");
        floe::repair(&config, None, false).await.unwrap();
        serves_and_lands(&config, &oracle).await;
    }
}

/// Damage the lake does not cover: the repair keeps every valid frame and
/// reports exactly the offset it could not recover; floe then serves
/// everything else, and new writes get offsets past the lost one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_neither_the_lake_nor_the_log_holds_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.lake.sink = false; // nothing lands
    let mut oracle = write_and_close(&config, "k", 60).await;
    let segment = newest_segment(dir.path(), 0);
    let positions = frames(&segment);
    let (start, len) = positions[positions.len() / 2];
    let bytes = std::fs::read(&segment).unwrap();
    let lost = floe_engine::decode_event(&bytes[start + 8..start + len]).unwrap();
    let base: u64 = segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let offset = base + (positions.len() / 2) as u64;
    xor(&segment, start + len / 2, 1, 0x01);
    assert_corrupt(&open_err(&config).await, &segment, 0);

    let reports = floe::repair(&config, None, false).await.unwrap();
    let r = report(&reports, 0);
    assert_eq!(r.lost.len(), 1, "{r}");
    assert_eq!(r.lost[0].offsets, offset..offset + 1, "{r}");
    assert!(!r.lost[0].earlier);
    assert!(
        r.to_string()
            .contains(&format!("UNRECOVERABLE: offsets {offset}..")),
        "{r}"
    );

    // The entity of the lost event falls back to its previous version, or
    // is gone if that event created it.
    let lost_key = key(&lost.entity_id);
    if lost.version == 1 {
        oracle.remove(&lost_key);
    } else {
        let i: u64 = lost.entity_id["k-".len()..].parse().unwrap();
        let data = json!({ "i": i, "pad": "x".repeat((i % 30) as usize) });
        oracle.insert(lost_key, (lost.version - 1, data));
    }
    let floe = Floe::open(config.clone()).await.unwrap();
    assert_eq!(state_of(&floe).await, live(&oracle));
    let high = floe.pipeline().high_watermark(0).await.unwrap();
    assert!(high > offset, "new offsets are past the lost one");
    floe.close().await.unwrap();
    drop(floe);
    // The declared gap survives reopening; a second repair finds nothing new.
    let again = floe::repair(&config, None, true).await.unwrap();
    assert!(again.iter().all(|r| !r.needed), "{again:?}");
}

/// A log that ends below the lake's committed offset (truncated, or an old
/// copy restored) would hand out offsets the lake has: floe refuses to open,
/// and the repair rebuilds the missing records from the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_behind_the_lake_is_refused_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let oracle = write_and_close(&config, "k", 100).await;
    let segment = newest_segment(dir.path(), 0);
    let positions = frames(&segment);
    let cut_frames = positions.len().min(3);
    let (cut, _) = positions[positions.len() - cut_frames];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    match open_err(&config).await {
        floe::Error::LogBehindLake {
            partition,
            log_high,
            lake_committed,
        } => {
            assert_eq!(partition, 0);
            assert_eq!(lake_committed - log_high, cut_frames as u64);
        }
        other => panic!("expected LogBehindLake, got {other:?}"),
    }
    let reports = floe::repair(&config, None, false).await.unwrap();
    let r = report(&reports, 0);
    assert!(r.needed && r.lost.is_empty() && r.from_lake > 0, "{r}");
    serves_and_lands(&config, &oracle).await;
}

/// `floe repair` as an operator runs it: a dry run, then the repair.
#[test]
fn the_repair_command_reports_and_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = Config::with_data_dir(dir.path());
    runtime.block_on(async {
        let floe = Floe::open(config.clone()).await.unwrap();
        for i in 0..50 {
            floe.put(key(&format!("k-{i}")), json!({ "i": i }))
                .await
                .unwrap();
        }
        floe.close().await.unwrap();
    });
    let partition = (0..config.log.partitions)
        .find(|&p| {
            segments(dir.path(), p)
                .last()
                .is_some_and(|s| frames(s).len() >= 3)
        })
        .expect("some partition has three events in its newest segment");
    let segment = newest_segment(dir.path(), partition);
    let (start, len) = frames(&segment)[1];
    xor(&segment, start + len - 1, 1, 0x04);

    let out = run::floe(dir.path(), &["get", "t", "Thing", "k-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("floe repair"));
    let dry = run::ok(dir.path(), &["repair", "--dry-run"]);
    assert!(
        dry.contains(&format!("partition {partition}: log offsets")),
        "{dry}"
    );
    assert!(dry.contains("unrecoverable: nothing"), "{dry}");
    assert!(dry.contains("would repair 1 of"), "{dry}");
    let done = run::ok(
        dir.path(),
        &["repair", "--partition", &partition.to_string()],
    );
    assert!(
        done.contains("repaired 1 of 1 partitions; 0 offsets unrecoverable"),
        "{done}"
    );
    for i in 0..50 {
        let got = run::ok(dir.path(), &["get", "t", "Thing", &format!("k-{i}")]);
        let got: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(got["data"]["i"], i, "{got}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random damage anywhere in a partition's segments of a landed data
    /// directory: floe either refuses to open, or serves exactly what was
    /// acknowledged; never a smaller state. After a repair it always serves
    /// everything (the lake holds it all).
    #[test]
    fn random_damage_is_refused_or_harmless(
        partition in 0..PARTITIONS,
        file in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        len in 1usize..40,
        mask in 1u8..=255,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        runtime.block_on(async {
            let oracle = write_and_close(&config, "k", 80).await;
            let files: Vec<PathBuf> = segments(dir.path(), partition)
                .into_iter()
                .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
                .collect();
            let path = &files[file.index(files.len())];
            let size = std::fs::metadata(path).unwrap().len() as usize;
            xor(path, at.index(size), len, mask);
            match Floe::open(config.clone()).await {
                Ok(floe) => {
                    assert_eq!(state_of(&floe).await, live(&oracle), "a smaller state");
                    floe.close().await.unwrap();
                }
                Err(floe::Error::CorruptLog(_) | floe::Error::LogBehindLake { .. }) => {
                    floe::repair(&config, None, false).await.unwrap();
                    let floe = Floe::open(config.clone()).await.unwrap();
                    assert_eq!(state_of(&floe).await, live(&oracle), "after repair");
                    floe.close().await.unwrap();
                }
                Err(other) => panic!("an untyped refusal: {other:?}"),
            }
        });
    }
}
