//! `FileLog` behaviour beyond the pipeline contract: recovery, segments,
//! corruption, the directory lock and poisoning.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_emitter::conformance::{key_hash_in, sample_event};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, Json, Pipeline};

fn options(partitions: u32, segment_bytes: u64) -> LogOptions {
    LogOptions {
        partitions,
        segment_bytes,
        fsync: FsyncPolicy::Always,
    }
}

fn events(partition: u32, partitions: u32, first: u64, count: u64) -> Vec<Event> {
    (first..first + count)
        .map(|seq| sample_event(seq, key_hash_in(partition, partitions, seq)))
        .collect()
}

/// The segment files of a partition, in offset order.
fn segments(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(format!("p-{partition:04}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

async fn read_all(log: &FileLog, partition: u32) -> Vec<Event> {
    let high = log.high_watermark(partition).unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < high {
        let batch = log
            .read(partition, out.len() as u64, 77, Duration::ZERO)
            .await
            .unwrap();
        assert!(!batch.is_empty());
        out.extend(batch.into_iter().map(|r| r.event));
    }
    out
}

/// Appends `n` events to partition 0 of a one-partition log and closes it;
/// returns them and the size of the last segment.
async fn write_and_close(dir: &Path, n: u64) -> (Vec<Event>, u64) {
    let log = FileLog::open(dir, options(1, 1 << 20)).unwrap();
    let written = events(0, 1, 0, n);
    log.append(&written).await.unwrap();
    log.close().await.unwrap();
    let last = segments(dir, 0).pop().unwrap();
    (written, fs::metadata(last).unwrap().len())
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// The first frame of a segment file, as stored.
fn first_frame(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[..8 + len].to_vec()
}

#[tokio::test]
async fn torn_tails_are_truncated_and_never_replayed() {
    let truncated_frame = |path: &Path| {
        let frame = first_frame(path);
        frame[..frame.len() / 2].to_vec()
    };
    type Tail<'a> = &'a dyn Fn(&Path) -> Vec<u8>;
    let tails: [(&str, Tail<'_>); 3] = [
        ("a truncated frame", &truncated_frame),
        ("a torn header", &|_| vec![0x20, 0x01, 0x00]),
        ("zeros", &|_| vec![0; 4096]),
    ];
    for (what, tail) in tails {
        let dir = tempfile::tempdir().unwrap();
        let (written, size) = write_and_close(dir.path(), 10).await;
        let path = segments(dir.path(), 0).pop().unwrap();
        append_raw(&path, &tail(&path));

        let log = FileLog::open(dir.path(), options(1, 1 << 20)).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            size,
            "{what}: truncated to the last whole frame"
        );
        assert_eq!(log.high_watermark(0).unwrap(), 10, "{what}");
        assert_eq!(read_all(&log, 0).await, written, "{what}");
        let next = events(0, 1, 10, 1);
        assert_eq!(log.append(&next).await.unwrap(), vec![10], "{what}");
        log.close().await.unwrap();

        let log = FileLog::open(dir.path(), options(1, 1 << 20)).unwrap();
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 11, "{what}");
        assert_eq!(all[10], next[0], "{what}: the torn record is not replayed");
        log.close().await.unwrap();
    }
}

/// A complete last frame whose checksum fails is not a torn write (a torn
/// write is a prefix of a frame): the log refuses to open, naming the file,
/// the byte and the partition, and leaves the file as it was.
#[tokio::test]
async fn a_complete_last_frame_with_a_bad_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, size) = write_and_close(dir.path(), 10).await;
    let path = segments(dir.path(), 0).pop().unwrap();
    let mut frame = first_frame(&path);
    let last = frame.len() - 1;
    frame[last] ^= 0x40;
    append_raw(&path, &frame);
    let err = FileLog::open(dir.path(), options(1, 1 << 20)).unwrap_err();
    match &err {
        Error::CorruptRecord {
            partition,
            path: bad,
            byte,
            record,
            reason,
        } => {
            assert_eq!((*partition, bad, *byte, *record), (0, &path, size, 10));
            assert!(reason.contains("checksum mismatch"), "{reason}");
        }
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    assert!(err.to_string().contains("floe repair"), "{err}");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        size + frame.len() as u64,
        "nothing is truncated"
    );
}

/// Bytes floe cannot have written (neither a prefix of a frame nor zeros)
/// are not a torn write either.
#[tokio::test]
async fn a_garbage_tail_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, size) = write_and_close(dir.path(), 10).await;
    let path = segments(dir.path(), 0).pop().unwrap();
    append_raw(&path, b"\x13\x37 not a frame at all, just garbage");
    let err = FileLog::open(dir.path(), options(1, 1 << 20)).unwrap_err();
    assert!(
        matches!(&err, Error::CorruptRecord { byte, record: 10, .. } if *byte == size),
        "{err:?}"
    );
}

#[tokio::test]
async fn rolls_over_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path(), options(2, 4096)).unwrap();
    let mut written = Vec::new();
    for batch in 0..10 {
        let evs = events(1, 2, batch * 30, 30);
        log.append(&evs).await.unwrap();
        written.extend(evs);
    }
    let files = segments(dir.path(), 1);
    assert!(files.len() > 10, "only {} segments", files.len());
    for file in &files[..files.len() - 1] {
        assert!(fs::metadata(file).unwrap().len() <= 4096);
    }
    assert_eq!(segments(dir.path(), 0).len(), 1, "partition 0 untouched");
    for from in [0, 1, 13, 14, 15, 100, 299] {
        for max in [1, 7, 40, 1000] {
            let records = log.read(1, from, max, Duration::ZERO).await.unwrap();
            assert_eq!(records.len(), max.min(300 - from as usize));
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.offset, from + i as u64);
                assert_eq!(r.event, written[r.offset as usize]);
            }
        }
    }
    log.close().await.unwrap();
    let log = FileLog::open(dir.path(), options(2, 4096)).unwrap();
    assert_eq!(read_all(&log, 1).await, written);
    // A record larger than a segment gets a segment of its own.
    let mut big = events(1, 2, 300, 1);
    big[0].state = Some(Json::from_trusted(format!(
        r#"{{"b":"{}"}}"#,
        "z".repeat(10_000)
    )));
    assert_eq!(log.append(&big).await.unwrap(), vec![300]);
    assert_eq!(
        log.read(1, 300, 5, Duration::ZERO).await.unwrap()[0].event,
        big[0]
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn sparse_index_seeks_match_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let written = events(0, 1, 0, 3000);
    let check = |log: FileLog, what: &'static str| {
        let written = &written;
        async move {
            for from in (0..3000).step_by(37) {
                let r = log.read(0, from, 3, Duration::ZERO).await.unwrap();
                assert_eq!(r[0].offset, from, "{what}");
                assert_eq!(r[0].event, written[from as usize], "{what}");
            }
            log.close().await.unwrap();
            let r = log.read(0, 0, 1, Duration::ZERO).await;
            assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        }
    };
    // One segment of about 1 MiB: reads seek by the index the writer
    // maintains, then by the one rebuilt on open.
    let log = FileLog::open(dir.path(), options(1, 8 << 20)).unwrap();
    for chunk in written.chunks(500) {
        log.append(chunk).await.unwrap();
    }
    assert_eq!(segments(dir.path(), 0).len(), 1);
    check(log, "live").await;
    check(
        FileLog::open(dir.path(), options(1, 8 << 20)).unwrap(),
        "reopened",
    )
    .await;
}

#[tokio::test]
async fn corruption_in_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    log.append(&events(0, 1, 0, 100)).await.unwrap();
    log.close().await.unwrap();
    let files = segments(dir.path(), 0);
    assert!(files.len() >= 3);
    let mut bytes = fs::read(&files[1]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&files[1], &bytes).unwrap();

    let err = FileLog::open(dir.path(), options(1, 4096)).unwrap_err();
    match &err {
        Error::CorruptRecord {
            path,
            reason,
            partition: 0,
            ..
        } => {
            assert_eq!(path, &files[1]);
            assert!(reason.contains("sealed segment"), "{reason}");
        }
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_missing_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    log.append(&events(0, 1, 0, 100)).await.unwrap();
    log.close().await.unwrap();
    fs::remove_file(&segments(dir.path(), 0)[2]).unwrap();
    let err = FileLog::open(dir.path(), options(1, 4096)).unwrap_err();
    assert!(
        err.to_string()
            .contains("but the one before it ends at offset"),
        "{err}"
    );
}

#[tokio::test]
async fn the_partition_count_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    FileLog::open(dir.path(), options(4, 4096))
        .unwrap()
        .close()
        .await
        .unwrap();
    let err = FileLog::open(dir.path(), options(3, 4096)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PartitionMismatch {
                existing: 4,
                requested: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("fixed when a log is created"),
        "{err}"
    );
    FileLog::open(dir.path(), options(4, 4096))
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn one_open_log_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    let err = FileLog::open(dir.path(), options(1, 4096)).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    log.append(&events(0, 1, 0, 3)).await.unwrap();
    drop(log); // without close: the writer still syncs and releases the lock
    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    assert_eq!(log.high_watermark(0).unwrap(), 3);
}

#[tokio::test]
async fn a_write_error_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    FileLog::open(dir.path(), options(1, 4096))
        .unwrap()
        .close()
        .await
        .unwrap();
    // Every write to /dev/full fails with ENOSPC.
    let active = segments(dir.path(), 0).pop().unwrap();
    fs::remove_file(&active).unwrap();
    std::os::unix::fs::symlink("/dev/full", &active).unwrap();

    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    let err = log.append(&events(0, 1, 0, 1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Poisoned { reason } if reason.contains("writing segment")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let engine_err = Pipeline::append(&log, &events(0, 1, 1, 1))
        .await
        .unwrap_err();
    assert!(!engine_err.is_retryable());
    assert!(
        engine_err
            .to_string()
            .starts_with("pipeline file: the log is poisoned"),
        "{engine_err}"
    );
    assert_eq!(
        log.high_watermark(0).unwrap(),
        0,
        "nothing of the failed round is visible"
    );
    assert!(matches!(log.close().await, Err(Error::Poisoned { .. })));
}

#[tokio::test]
async fn typed_errors_for_reads_outside_the_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    log.append(&events(0, 1, 0, 100)).await.unwrap();
    let low = log.delete_before(0, 50).await.unwrap();
    assert!(low > 0 && low <= 50);
    let below = log.read(0, low - 1, 1, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(below, Error::BelowLowWatermark { low_watermark, .. } if low_watermark == low)
    );
    let beyond = log.read(0, 101, 1, Duration::ZERO).await.unwrap_err();
    assert!(matches!(
        beyond,
        Error::BeyondHighWatermark {
            high_watermark: 100,
            ..
        }
    ));
    log.close().await.unwrap();
    let log = FileLog::open(dir.path(), options(1, 4096)).unwrap();
    assert_eq!(
        log.low_watermark(0).unwrap(),
        low,
        "deleted segments stay deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_waiting_readers() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(FileLog::open(dir.path(), options(1, 4096)).unwrap());
    let reader = {
        let log = log.clone();
        tokio::spawn(async move { log.read(0, 0, 10, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.close().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
}

#[tokio::test]
async fn interval_and_never_policies_ack_and_recover() {
    for fsync in [
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            fsync,
            ..options(2, 4096)
        };
        let log = FileLog::open(dir.path(), opts.clone()).unwrap();
        for i in 0..20 {
            log.append(&events(1, 2, i * 10, 10)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        log.close().await.unwrap();
        let log = FileLog::open(dir.path(), opts).unwrap();
        assert_eq!(read_all(&log, 1).await, events(1, 2, 0, 200), "{fsync:?}");
    }
}

#[tokio::test]
async fn rejects_bad_options_and_oversized_records() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        options(0, 4096),
        options(1, 10),
        LogOptions {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            ..options(1, 4096)
        },
    ] {
        let err = FileLog::open(dir.path(), bad).unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{err:?}");
    }
    let log = FileLog::open(dir.path(), LogOptions::new(1)).unwrap();
    let mut huge = events(0, 1, 0, 2);
    huge[1].state = Some(Json::from_trusted(format!(
        r#"{{"b":"{}"}}"#,
        "h".repeat(33 << 20)
    )));
    let err = log.append(&huge).await.unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err:?}");
    assert_eq!(
        log.high_watermark(0).unwrap(),
        0,
        "nothing of a rejected batch is written"
    );
    log.close().await.unwrap();
}
