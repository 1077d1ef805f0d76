//! `LogRepair` on real segment files: damage of unknown size, offsets fixed
//! by the next segment, records taken from the lake, declared gaps, and a
//! repair interrupted between its two renames.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_emitter::conformance::{key_hash_in, sample_event};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions, LogRepair};
use floe_engine::{Event, Record};

fn options(segment_bytes: u64) -> LogOptions {
    LogOptions {
        partitions: 1,
        segment_bytes,
        fsync: FsyncPolicy::Always,
    }
}

fn events(first: u64, count: u64) -> Vec<Event> {
    (first..first + count)
        .map(|seq| sample_event(seq, key_hash_in(0, 1, seq)))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("p-0000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

async fn write(dir: &Path, n: u64, segment_bytes: u64) -> Vec<Event> {
    let log = FileLog::open(dir, options(segment_bytes)).unwrap();
    let written = events(0, n);
    log.append(&written).await.unwrap();
    log.close().await.unwrap();
    written
}

async fn read_all(dir: &Path, segment_bytes: u64) -> Vec<Record> {
    let log = FileLog::open(dir, options(segment_bytes)).unwrap();
    let (low, high) = (
        log.low_watermark(0).unwrap(),
        log.high_watermark(0).unwrap(),
    );
    let mut out: Vec<Record> = Vec::new();
    let mut at = low;
    while at < high {
        let batch = log.read(0, at, 50, Duration::ZERO).await.unwrap();
        let Some(last) = batch.last() else { break };
        at = last.offset + 1;
        out.extend(batch);
    }
    log.close().await.unwrap();
    out
}

/// Second frame's byte position in a segment file.
fn second_frame(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize
}

fn damage_length(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at + 3] ^= 0x40; // a length of about 1 GiB: outside 1..=32 MiB
    fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn damage_of_unknown_size_in_the_last_segment_keeps_the_frames_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), 40, 1 << 20).await;
    let path = segments(dir.path()).pop().unwrap();
    damage_length(&path, second_frame(&path));
    let err = FileLog::open(dir.path(), options(1 << 20)).unwrap_err();
    assert!(
        matches!(err, Error::CorruptRecord { record: 1, .. }),
        "{err}"
    );

    let repair = LogRepair::open(dir.path(), options(1 << 20)).unwrap();
    let scan = repair.scan(0).unwrap();
    assert!(scan.is_damaged());
    // Nothing landed: the lake holds nothing, its committed offset is 0.
    let plan = scan.plan(Vec::new(), 0).unwrap();
    let report = &plan.report;
    assert_eq!(report.damage.len(), 1, "{report}");
    assert_eq!(report.damage[0].first_offset, Some(1));
    assert_eq!(report.from_log, 39, "every valid frame is kept: {report}");
    assert_eq!(
        report.renumbered, 38,
        "the frames after the damage: {report}"
    );
    assert!(report.new_high > 40, "past every offset the log handed out");
    assert_eq!(report.lost.len(), 1);
    assert_eq!(report.lost[0].offsets.start, 1);
    repair.apply(&plan).unwrap();
    drop(repair);

    let records = read_all(dir.path(), 1 << 20).await;
    let mut events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
    let mut expected = written.clone();
    expected.remove(1);
    events.sort_by_key(|e| e.version);
    assert_eq!(events, expected, "everything but the damaged record");
    assert_eq!(records[0].offset, 0);
    assert!(records[1].offset >= 40, "fresh offsets after the damage");
    // New appends go after everything.
    let log = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    let high = log.high_watermark(0).unwrap();
    assert_eq!(log.append(&events_from(100)).await.unwrap(), vec![high]);
    log.close().await.unwrap();
}

fn events_from(seq: u64) -> Vec<Event> {
    events(seq, 1)
}

#[tokio::test]
async fn the_next_segment_fixes_the_offsets_after_damage_in_a_sealed_one() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), 100, 4096).await;
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    damage_length(&files[1], second_frame(&files[1]));
    let base: u64 = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let repair = LogRepair::open(dir.path(), options(4096)).unwrap();
    // The lake holds the first 5 events only, at their offsets.
    let lake: Vec<Record> = written[..5]
        .iter()
        .enumerate()
        .map(|(i, e)| Record {
            partition: 0,
            offset: i as u64,
            event: e.clone(),
        })
        .collect();
    let plan = repair.scan(0).unwrap().plan(lake, 5).unwrap();
    let report = plan.report.clone();
    assert_eq!(report.from_lake, 5, "{report}");
    assert_eq!(
        report.renumbered, 0,
        "offsets counted back from the next segment: {report}"
    );
    assert_eq!(report.lost.len(), 1, "{report}");
    let lost = base + 1;
    assert_eq!(
        report.lost[0].offsets,
        lost..lost + 1,
        "exactly the damaged record"
    );
    assert_eq!(report.new_high, 100);
    repair.apply(&plan).unwrap();
    drop(repair);
    let records = read_all(dir.path(), 4096).await;
    assert_eq!(records.len(), 99);
    for r in &records {
        assert_ne!(r.offset, lost);
        assert_eq!(&r.event, &written[r.offset as usize], "record {}", r.offset);
    }
    // The damaged directory is kept beside the new one.
    assert!(fs::read_dir(dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("p-0000.damaged-")
    }));
}

#[tokio::test]
async fn a_gap_must_be_declared_and_an_interrupted_swap_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 30, 1 << 20).await;
    let path = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let at = second_frame(&path) + 20;
    bytes[at] ^= 1; // one record, a checksum failure
    fs::write(&path, bytes).unwrap();

    let repair = LogRepair::open(dir.path(), options(1 << 20)).unwrap();
    assert!(matches!(
        LogRepair::open(dir.path(), options(1 << 20)),
        Err(Error::Locked { .. })
    ));
    let plan = repair.scan(0).unwrap().plan(Vec::new(), 0).unwrap();
    assert_eq!(plan.report.lost.len(), 1);
    assert_eq!(plan.report.lost[0].offsets, 1..2);
    repair.apply(&plan).unwrap();
    drop(repair);
    assert_eq!(read_all(dir.path(), 1 << 20).await.len(), 29);

    // Without its gaps file the hole is a missing segment again.
    let gaps = dir.path().join("p-0000/gaps");
    let declared = fs::read(&gaps).unwrap();
    fs::remove_file(&gaps).unwrap();
    let err = FileLog::open(dir.path(), options(1 << 20)).unwrap_err();
    assert!(
        err.to_string().contains("but the one before it ends"),
        "{err}"
    );
    fs::write(&gaps, declared).unwrap();

    // A repair that stopped after moving the damaged partition away and
    // before moving the repaired one in: the next open finishes it.
    let partition = dir.path().join("p-0000");
    let building = dir.path().join("p-0000.repair");
    fs::rename(&partition, &building).unwrap();
    fs::write(building.join("REPAIRED"), b"").unwrap();
    assert_eq!(read_all(dir.path(), 1 << 20).await.len(), 29);
    assert!(!building.exists());
}
