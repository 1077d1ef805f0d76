//! The cases of the suite, one contract clause each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_engine::{Event, EventKind, Json, Offset, Pipeline, partition_for};
use uuid::Uuid;

use super::{PipelineFactory, events_in, key_hash_in, open, read_all, sample_event};

/// Offsets in each partition start at 0 and grow by one per event, across batches.
pub async fn append_assigns_consecutive_offsets<P: Pipeline>(p: &P) {
    let n = p.partitions();
    for partition in 0..n {
        let mut next = 0;
        for size in [1, 5, 3] {
            let offsets = p
                .append(&events_in(partition, n, next, size))
                .await
                .expect("append");
            assert_eq!(offsets, (next..next + size).collect::<Vec<_>>());
            next += size;
        }
        assert_eq!(p.high_watermark(partition).await.unwrap(), next);
    }
}

/// Each event lands in `partition_for(key_hash)` at the offset `append` returned.
pub async fn events_land_in_their_partition<P: Pipeline>(p: &P) {
    let n = p.partitions();
    let events: Vec<Event> = (0..200u64)
        .map(|seq| sample_event(seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    let offsets = p.append(&events).await.expect("append");
    assert_eq!(offsets.len(), events.len());
    let mut total = 0;
    for partition in 0..n {
        let records = read_all(p, partition, 0).await;
        total += records.len();
        for r in &records {
            assert_eq!(partition_for(r.event.key_hash, n), partition);
            let i = r.event.version as usize - 1;
            assert_eq!(r.event, events[i]);
            assert_eq!(
                r.offset, offsets[i],
                "event {i} is at the offset append returned"
            );
        }
    }
    assert_eq!(total, events.len());
}

/// Events keep their append order within a partition, across interleaved batches.
pub async fn order_is_kept_per_partition<P: Pipeline>(p: &P) {
    let n = p.partitions();
    let mut seq = 0u64;
    for _ in 0..10 {
        let batch: Vec<Event> = (0..20)
            .map(|i| {
                seq += 1;
                sample_event(seq, key_hash_in(i % n, n, seq))
            })
            .collect();
        p.append(&batch).await.expect("append");
    }
    for partition in 0..n {
        let seqs: Vec<u64> = read_all(p, partition, 0)
            .await
            .iter()
            .map(|r| r.event.version)
            .collect();
        assert_eq!(seqs.len(), 50);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "out of order: {seqs:?}"
        );
    }
}

/// A read from an offset in the middle returns that record and the ones after it.
pub async fn read_from_the_middle<P: Pipeline>(p: &P) {
    let events = events_in(1, p.partitions(), 0, 100);
    p.append(&events).await.expect("append");
    let records = p.read(1, 37, 10, Duration::ZERO).await.expect("read");
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (37..47).collect::<Vec<_>>()
    );
    assert_eq!(records[0].event, events[37]);
    let tail = p
        .read(1, 95, 10, Duration::from_secs(5))
        .await
        .expect("read");
    assert_eq!(
        tail.len(),
        5,
        "a read returns what there is without waiting for `max`"
    );
    assert_eq!(tail[4].event, events[99]);
}

/// A read at the high watermark waits about `wait`, then returns nothing.
pub async fn read_at_the_end_waits_then_returns_empty<P: Pipeline>(p: &P) {
    let wait = Duration::from_millis(300);
    let start = Instant::now();
    assert!(p.read(2, 0, 10, wait).await.expect("read").is_empty());
    assert!(
        start.elapsed() >= wait / 2,
        "returned after {:?}",
        start.elapsed()
    );
    p.append(&events_in(2, p.partitions(), 0, 3))
        .await
        .expect("append");
    let start = Instant::now();
    assert!(p.read(2, 3, 10, wait).await.expect("read").is_empty());
    assert!(start.elapsed() >= wait / 2);
    let start = Instant::now();
    assert_eq!(
        p.read(2, 0, 10, Duration::from_secs(30))
            .await
            .expect("read")
            .len(),
        3
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a read with data must not wait"
    );
}

/// A read from beyond the high watermark is an error, not a wait.
pub async fn read_beyond_the_high_watermark_fails<P: Pipeline>(p: &P) {
    p.append(&events_in(0, p.partitions(), 0, 2))
        .await
        .expect("append");
    assert!(p.read(0, 3, 10, Duration::from_millis(10)).await.is_err());
}

/// A read waiting at the end returns as soon as an event is appended.
pub async fn read_is_woken_by_an_append<P: Pipeline>(p: &P) {
    let n = p.partitions();
    p.append(&events_in(3, n, 0, 2)).await.expect("append");
    let event = events_in(3, n, 2, 1);
    let start = Instant::now();
    let (read, _) = tokio::join!(p.read(3, 2, 10, Duration::from_secs(30)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.append(&event).await.expect("append")
    });
    let read = read.expect("read");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the reader was not woken"
    );
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].offset, &read[0].event), (2, &event[0]));
}

/// Appends from many tasks at once get unique, gap-free offsets, and every
/// acknowledged event is there after a reopen.
pub async fn concurrent_appends_are_unique_and_durable<F: PipelineFactory>(factory: &mut F) {
    let p = Arc::new(open(factory).await);
    let n = p.partitions();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16u64 {
        let p = Arc::clone(&p);
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for round in 0..20u64 {
                let batch: Vec<Event> = (0..1 + (task + round) % 7)
                    .map(|i| {
                        let seq = task * 1_000_000 + round * 1_000 + i;
                        sample_event(seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    })
                    .collect();
                let offsets = p.append(&batch).await.expect("append");
                acked.extend(batch.into_iter().zip(offsets));
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(result) = tasks.join_next().await {
        acked.extend(result.expect("append task"));
    }
    let mut seen = HashSet::new();
    for (event, offset) in &acked {
        let partition = partition_for(event.key_hash, n);
        assert!(
            seen.insert((partition, *offset)),
            "offset {offset} of partition {partition} given twice"
        );
    }
    for partition in 0..n {
        let count = acked
            .iter()
            .filter(|(e, _)| partition_for(e.key_hash, n) == partition)
            .count();
        assert_eq!(
            p.high_watermark(partition).await.unwrap(),
            count as Offset,
            "no gaps"
        );
    }
    p.close().await.expect("close");
    drop(p);
    let p = open(factory).await;
    for partition in 0..n {
        let records = read_all(&p, partition, 0).await;
        for (event, offset) in acked
            .iter()
            .filter(|(e, _)| partition_for(e.key_hash, n) == partition)
        {
            assert_eq!(
                &records[*offset as usize].event, event,
                "acknowledged event lost or moved"
            );
        }
    }
    p.close().await.expect("close");
}

/// Low watermarks stay at 0 and high watermarks count the appended events.
pub async fn watermarks_follow_appends<P: Pipeline>(p: &P) {
    let n = p.partitions();
    for partition in 0..n {
        assert_eq!(p.low_watermark(partition).await.unwrap(), 0);
        assert_eq!(p.high_watermark(partition).await.unwrap(), 0);
    }
    for partition in 0..n {
        p.append(&events_in(partition, n, 0, u64::from(partition) + 1))
            .await
            .expect("append");
    }
    for partition in 0..n {
        assert_eq!(p.low_watermark(partition).await.unwrap(), 0);
        assert_eq!(
            p.high_watermark(partition).await.unwrap(),
            u64::from(partition) + 1
        );
    }
}

/// Closing and reopening keeps every event and offset; appends continue after them.
pub async fn reopen_keeps_everything<F: PipelineFactory>(factory: &mut F) {
    let p = open(factory).await;
    let n = p.partitions();
    let mut expected = Vec::new();
    for partition in 0..n {
        let events = events_in(partition, n, 0, 30);
        p.append(&events).await.expect("append");
        expected.push(events);
    }
    p.close().await.expect("close");
    drop(p);
    let p = open(factory).await;
    assert_eq!(p.partitions(), n);
    for partition in 0..n {
        let events: Vec<Event> = read_all(&p, partition, 0)
            .await
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(events, expected[partition as usize]);
    }
    let offsets = p
        .append(&events_in(0, n, 30, 2))
        .await
        .expect("append after reopen");
    assert_eq!(offsets, vec![30, 31]);
    p.close().await.expect("close");
}

/// Retention deletes a prefix: the low watermark rises to at most the asked
/// offset, reads below it fail, reads from it and the high watermark are intact.
pub async fn delete_before_raises_the_low_watermark<P: Pipeline>(p: &P) {
    let events = events_in(0, p.partitions(), 0, 1000);
    for chunk in events.chunks(100) {
        p.append(chunk).await.expect("append");
    }
    assert_eq!(p.delete_before(0, 0).await.expect("delete_before"), 0);
    let low = p.delete_before(0, 600).await.expect("delete_before");
    assert!(
        low > 0,
        "nothing was deleted: configure the backend to retain less (small segments)"
    );
    assert!(
        low <= 600,
        "deleted past the asked offset: low watermark {low}"
    );
    assert_eq!(p.low_watermark(0).await.unwrap(), low);
    assert_eq!(p.high_watermark(0).await.unwrap(), 1000);
    assert!(
        p.read(0, low - 1, 10, Duration::ZERO).await.is_err(),
        "read below the low watermark"
    );
    assert!(p.read(0, 0, 10, Duration::ZERO).await.is_err());
    let records = read_all(p, 0, low).await;
    assert_eq!(records.len() as u64, 1000 - low);
    assert_eq!(records[0].event, events[low as usize]);
    assert!(
        p.delete_before(0, 300).await.expect("delete_before") >= low,
        "never lowers"
    );
    assert_eq!(
        p.low_watermark(1).await.unwrap(),
        0,
        "other partitions untouched"
    );
    assert_eq!(
        p.append(&events_in(0, p.partitions(), 1000, 1))
            .await
            .expect("append"),
        vec![1000]
    );
}

/// A store without retention: `delete_before` deletes nothing, reports the
/// unchanged low watermark, and every record stays readable.
pub async fn delete_before_without_retention_keeps_everything<P: Pipeline>(p: &P) {
    let events = events_in(0, p.partitions(), 0, 1000);
    for chunk in events.chunks(100) {
        p.append(chunk).await.expect("append");
    }
    assert_eq!(p.delete_before(0, 0).await.expect("delete_before"), 0);
    assert_eq!(p.delete_before(0, 600).await.expect("delete_before"), 0);
    assert_eq!(p.low_watermark(0).await.unwrap(), 0);
    assert_eq!(p.high_watermark(0).await.unwrap(), 1000);
    let records = read_all(p, 0, 0).await;
    assert_eq!(records.len(), 1000);
    assert_eq!(records[600].event, events[600]);
    assert!(p.delete_before(p.partitions(), 0).await.is_err());
    assert_eq!(
        p.append(&events_in(0, p.partitions(), 1000, 1))
            .await
            .expect("append"),
        vec![1000]
    );
}

/// After `close`, appends fail (not retryable); closing again is harmless.
pub async fn appends_after_close_fail<P: Pipeline>(p: &P) {
    let n = p.partitions();
    p.append(&events_in(0, n, 0, 1)).await.expect("append");
    p.close().await.expect("close");
    let err = p
        .append(&events_in(0, n, 1, 1))
        .await
        .expect_err("append after close");
    assert!(!err.is_retryable(), "{err}");
    p.close().await.expect("close twice");
}

/// One append of 10,000 events plus a 1 MiB state, read back whole.
pub async fn large_batch<P: Pipeline>(p: &P) {
    let n = p.partitions();
    let mut events: Vec<Event> = (0..10_000u64)
        .map(|seq| sample_event(seq, key_hash_in((seq % u64::from(n)) as u32, n, seq)))
        .collect();
    events[5_000].state = Some(Json::from_trusted(format!(
        r#"{{"blob":"{}"}}"#,
        "y".repeat(1 << 20)
    )));
    let offsets = p.append(&events).await.expect("append");
    let mut back = Vec::new();
    for partition in 0..n {
        back.extend(read_all(p, partition, 0).await);
    }
    assert_eq!(back.len(), events.len());
    for r in back {
        let i = r.event.version as usize - 1;
        assert_eq!(r.offset, offsets[i]);
        assert_eq!(r.event, events[i]);
    }
}

/// Every field survives the pipeline: kinds, extremes, unicode, empty
/// strings, and no state on a delete.
pub async fn events_roundtrip_exactly<P: Pipeline>(p: &P) {
    let n = p.partitions();
    let mut created = sample_event(1, key_hash_in(1, n, 1));
    created.kind = EventKind::Created;
    created.namespace = "tenant-ü/日本".into();
    created.entity_id = String::new();
    created.state = Some(Json::from_trusted(
        r#"{"name":"Zoë 🚀","n":-1.5e300,"nested":{"a":[null,true]}}"#,
    ));
    created.timestamp_us = i64::MIN;
    let mut deleted = sample_event(2, key_hash_in(1, n, u64::MAX));
    deleted.kind = EventKind::Deleted;
    deleted.state = None;
    deleted.version = u64::MAX;
    deleted.shard = u32::MAX;
    deleted.timestamp_us = i64::MAX;
    deleted.event_id = Uuid::max();
    let events = vec![created, sample_event(3, key_hash_in(1, n, 3)), deleted];
    p.append(&events).await.expect("append");
    let back: Vec<Event> = read_all(p, 1, 0)
        .await
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(back, events);
    assert!(back[2].state.is_none());
}

/// Every operation on a partition outside the pipeline is an error.
pub async fn unknown_partition_is_an_error<P: Pipeline>(p: &P) {
    let n = p.partitions();
    assert!(p.read(n, 0, 1, Duration::ZERO).await.is_err());
    assert!(p.high_watermark(n).await.is_err());
    assert!(p.low_watermark(n).await.is_err());
    assert!(p.delete_before(n, 0).await.is_err());
}
