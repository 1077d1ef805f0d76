//! Kafka-specific behaviour beyond the shared conformance suite, on a real
//! broker (tansu, started per test).

use std::time::Duration;

use floe_emitter::{Error, KafkaOptions, KafkaPipeline, TansuBroker};

fn broker() -> TansuBroker {
    TansuBroker::start().unwrap_or_else(|e| panic!("the Kafka tests need a broker: {e}"))
}

fn topic() -> String {
    format!("floe-kafka-{}", uuid::Uuid::new_v4().simple())
}

/// The partition count is fixed when the topic is created: reopening it with
/// another count is a clear, fatal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_with_another_partition_count_is_refused() {
    let broker = broker();
    let options = KafkaOptions::new(broker.bootstrap(), topic(), 4);
    KafkaPipeline::open(options.clone())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let err = KafkaPipeline::open(KafkaOptions {
        partitions: 8,
        ..options.clone()
    })
    .await
    .expect_err("8 partitions on a 4-partition topic");
    assert!(
        matches!(
            err,
            Error::TopicPartitionMismatch {
                existing: 4,
                requested: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains("has 4 partitions but floe is configured with 8"),
        "{err}"
    );
    // The same count opens again.
    KafkaPipeline::open(options)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

/// No broker at the address: opening fails with a retryable error within
/// the request timeout instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_is_a_retryable_error() {
    let mut broker = broker();
    let bootstrap = broker.bootstrap();
    broker.kill().unwrap();
    let mut options = KafkaOptions::new(bootstrap, topic(), 2);
    options.request_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = KafkaPipeline::open(options).await.expect_err("no broker");
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// Options that would break floe's guarantees are refused before connecting.
#[tokio::test]
async fn unsafe_options_are_refused_at_open() {
    let options = KafkaOptions::new("127.0.0.1:1", "t", 1).property("acks", "0");
    let err = KafkaPipeline::open(options).await.expect_err("acks=0");
    assert!(matches!(err, Error::InvalidKafkaOptions(_)), "{err}");
}

/// Reading on from where the last read ended (a warm shard following the
/// pipeline, a cutover's catch-up) returns the few new records at once:
/// with the parked reader only resumed, each such read took ~1.1 s
/// (librdkafka's fetcher slept until its next wakeup).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_on_from_the_end_returns_new_records_without_a_fetch_delay() {
    use floe_emitter::conformance::sample_event;
    use floe_engine::Pipeline;
    use std::sync::Arc;

    const PARTITIONS: u32 = 6;
    let broker = broker();
    let pipeline: Arc<dyn Pipeline> = Arc::new(
        KafkaPipeline::open(KafkaOptions::new(broker.bootstrap(), topic(), PARTITIONS))
            .await
            .unwrap(),
    );
    let mut positions = [0u64; PARTITIONS as usize];
    let mut seq = 0u64;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let events: Vec<_> = (0..30)
            .map(|_| {
                seq += 1;
                sample_event(seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            })
            .collect();
        pipeline.append(&events).await.unwrap();
        let started = std::time::Instant::now();
        let mut reads = tokio::task::JoinSet::new();
        for partition in 0..PARTITIONS {
            let (pipeline, from) = (pipeline.clone(), positions[partition as usize]);
            reads.spawn(async move {
                let head = pipeline.high_watermark(partition).await.unwrap();
                let mut next = from;
                while next < head {
                    let records = pipeline
                        .read(partition, next, 8192, Duration::ZERO)
                        .await
                        .unwrap();
                    next = records.last().map_or(head, |r| r.offset + 1);
                }
                (partition, head)
            });
        }
        let mut read = 0;
        while let Some(joined) = reads.join_next().await {
            let (partition, head) = joined.unwrap();
            read += head - positions[partition as usize];
            positions[partition as usize] = head;
        }
        assert_eq!(read, 30);
        slowest = slowest.max(started.elapsed());
    }
    // ~40 ms in a debug build on 2 cores; 1.1 s before.
    assert!(
        slowest < Duration::from_millis(500),
        "reading 30 new records over {PARTITIONS} partitions took up to {slowest:?}"
    );
}

/// Cluster mode's producer settings (records time out after 1 s, `append`
/// does not re-send) through a broker killed under load and restarted on
/// its data 3 s later. Records time out during the outage, and librdkafka
/// bumps the epoch of such a producer locally; tansu 0.6's storage panics on
/// the first record carrying that epoch and answers nothing from then on.
/// The pipeline replaces a producer whose records timed out, so after the
/// restart appends succeed again, and every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_succeed_again_after_the_broker_restarts_under_load_with_a_short_message_timeout() {
    use floe_emitter::conformance::sample_event;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const PARTITIONS: u32 = 4;
    let mut broker = broker();
    let mut options = KafkaOptions::new(broker.bootstrap(), topic(), PARTITIONS)
        .property("message.timeout.ms", "1000");
    options.append_retry = Duration::ZERO;
    options.request_timeout = Duration::from_secs(5);
    let pipeline = Arc::new(KafkaPipeline::open(options).await.unwrap());
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u32, u64, String)>::new()));
    let (stop, seq, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (pipeline, acked, stop, seq, failed) = (
            pipeline.clone(),
            acked.clone(),
            stop.clone(),
            seq.clone(),
            failed.clone(),
        );
        writers.spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let event = sample_event(n, n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let partition = floe_engine::partition_for(event.key_hash, PARTITIONS);
                match pipeline.append(std::slice::from_ref(&event)).await {
                    Ok(offsets) => acked.lock().unwrap().push((
                        partition,
                        offsets[0],
                        event.idempotency_key.clone(),
                    )),
                    Err(e) => {
                        assert!(e.is_retryable(), "a broker outage is retryable: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    let count = |acked: &std::sync::Mutex<Vec<(u32, u64, String)>>| acked.lock().unwrap().len();
    while count(&acked) < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker = tokio::task::spawn_blocking(move || {
        broker.kill().expect("kill the broker");
        std::thread::sleep(Duration::from_secs(3));
        broker.restart().expect("restart the broker");
        broker
    })
    .await
    .unwrap();
    let restarted = count(&acked);
    let failed_in_outage = failed.load(Ordering::Relaxed);
    assert!(
        failed_in_outage > 0,
        "appends failed while the broker was down"
    );
    // After the restart the writers go on: 200 more acknowledgements, soon.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    while count(&acked) < restarted + 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} appends acknowledged within 45 s of the broker's restart ({} failed)\nbroker log:\n{}",
            count(&acked) - restarted,
            failed.load(Ordering::Relaxed) - failed_in_outage,
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    while let Some(joined) = writers.join_next().await {
        joined.expect("writer");
    }
    // Every acknowledged record is where its offset says.
    let mut stored = HashSet::new();
    for partition in 0..PARTITIONS {
        let head = pipeline.high_watermark(partition).await.unwrap();
        let mut next = 0;
        while next < head {
            let records = pipeline
                .read(partition, next, 8192, Duration::ZERO)
                .await
                .unwrap();
            next = records.last().map_or(head, |r| r.offset + 1);
            stored.extend(
                records
                    .into_iter()
                    .map(|r| (partition, r.offset, r.event.idempotency_key)),
            );
        }
    }
    let acked = acked.lock().unwrap().clone();
    for record in &acked {
        assert!(
            stored.contains(record),
            "acknowledged {record:?} not read back"
        );
    }
    eprintln!(
        "broker restart: {restarted} acked before, {} after, {failed_in_outage} failed during the outage",
        acked.len() - restarted
    );
    pipeline.close().await.unwrap();
}
