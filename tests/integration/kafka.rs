//! `Floe` on the Kafka pipeline against a real broker (tansu, started per
//! test): restart and rebuild from the topic, a broker outage during a write
//! stream, and an independent Python consumer. Without a broker binary or the
//! Python environment these tests fail, they never skip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use floe::{Config, EntityKey, EventKind, Floe, PartitionKeySpec, WriteRequest};
use floe_emitter::TansuBroker;
use floe_engine::{Event, Pipeline};
use serde_json::{Value, json};

const PARTITIONS: u32 = 4;

async fn broker() -> TansuBroker {
    tokio::task::spawn_blocking(TansuBroker::start)
        .await
        .expect("broker start task")
        .unwrap_or_else(|e| panic!("the Kafka tests need a broker: {e}"))
}

fn config(dir: &Path, broker: &TansuBroker, topic: &str) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.pipeline = format!(
        "kafka://{}/{topic}?partitions={PARTITIONS}",
        broker.bootstrap()
    );
    config.topology.shards = 4;
    config.partition_key.default = PartitionKeySpec::id();
    config
}

fn topic(name: &str) -> String {
    format!("floe-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Every event in the topic, read through the pipeline from offset 0.
async fn all_events(pipeline: &dyn Pipeline) -> Vec<Event> {
    let mut events = Vec::new();
    for partition in 0..pipeline.partitions() {
        let end = pipeline.high_watermark(partition).await.unwrap();
        let mut offset = 0;
        while offset < end {
            let records = pipeline
                .read(partition, offset, 1000, Duration::ZERO)
                .await
                .unwrap();
            offset = records
                .last()
                .expect("records below the high watermark")
                .offset
                + 1;
            events.extend(records.into_iter().map(|r| r.event));
        }
    }
    events
}

type Oracle = BTreeMap<EntityKey, Option<Value>>;

/// Writes, closes, reopens the same data directory (state rebuilt from the
/// topic), then opens a brand-new data directory on the same topic: both see
/// exactly the acknowledged state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floe_on_kafka_rebuilds_state_from_the_topic() {
    let broker = broker().await;
    let topic = topic("restart");
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), &broker, &topic))
        .await
        .unwrap();
    let mut oracle = Oracle::new();
    let mut events = 0u64;
    for i in 0..200u64 {
        let key = EntityKey::new("acme", "Order", format!("o-{}", i % 60));
        if i % 17 == 16 && oracle.get(&key).is_some_and(Option::is_some) {
            floe.delete(key.clone()).await.unwrap();
            oracle.insert(key, None);
        } else {
            let data = json!({ "i": i, "note": "ü".repeat((i % 7) as usize) });
            floe.put(key.clone(), data.clone()).await.unwrap();
            oracle.insert(key, Some(data));
        }
        events += 1;
    }
    floe.close().await.unwrap();

    for data_dir in [
        dir.path().to_path_buf(),
        tempfile::tempdir().unwrap().keep(),
    ] {
        let floe = Floe::open(config(&data_dir, &broker, &topic))
            .await
            .unwrap();
        assert_eq!(
            floe.recovery_stats().events,
            events,
            "replayed the whole topic"
        );
        for (key, expected) in &oracle {
            let got = floe
                .get(key)
                .await
                .unwrap()
                .map(|e| e.data.to_value().unwrap());
            assert_eq!(&got, expected, "{key}");
        }
        // Appends continue after the recovered offsets.
        let key = EntityKey::new("acme", "Order", "o-0");
        let ack = floe
            .put(key.clone(), json!({ "again": true }))
            .await
            .unwrap();
        assert!(ack.version >= 2);
        oracle.insert(key, Some(json!({ "again": true })));
        floe.close().await.unwrap();
        events += 1;
    }
}

/// Kills the broker in the middle of a stream of writes and starts it again:
/// writes wait (or fail retryably and are retried with the same idempotency
/// key); afterwards every acknowledged write is in the topic and no
/// idempotency key is there twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_loses_and_duplicates_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut broker = broker().await;
    let topic = topic("outage");
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), &broker, &topic))
        .await
        .unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let retryable_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8u64 {
        let (floe, acked, errors) = (floe.clone(), acked.clone(), retryable_errors.clone());
        writers.spawn(async move {
            for i in 0..150u64 {
                let key = EntityKey::new("t", "Thing", format!("w{writer}-{}", i % 20));
                let idempotency_key = format!("w{writer}-{i}");
                let request = WriteRequest::upsert(key, json!({ "writer": writer, "i": i }))
                    .idempotency_key(&idempotency_key);
                let mut attempts = 0;
                loop {
                    match floe.write(request.clone()).await {
                        Ok(ack) => {
                            assert_eq!(ack.idempotency_key, idempotency_key);
                            acked.lock().unwrap().push(idempotency_key);
                            break;
                        }
                        Err(e) => {
                            if !e.is_retryable() {
                                return Err(format!("a broker outage must be retryable: {e}"));
                            }
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            attempts += 1;
                            assert!(attempts < 100, "still failing after 100 retries: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        });
    }
    // Let the stream run, then take the broker away mid-stream.
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_stop = acked.lock().unwrap().len();
    broker = tokio::task::spawn_blocking(move || {
        broker.kill().expect("kill the broker");
        std::thread::sleep(Duration::from_secs(3));
        broker
    })
    .await
    .unwrap();
    let during_outage = acked.lock().unwrap().len();
    assert!(
        during_outage < 8 * 150,
        "the stream ended before the outage: increase its length"
    );
    broker = tokio::task::spawn_blocking(move || {
        broker.restart().expect("restart the broker");
        broker
    })
    .await
    .unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(joined) = writers.join_next().await {
            joined.expect("writer")?;
        }
        Ok::<_, String>(())
    })
    .await;
    if !matches!(finished, Ok(Ok(()))) {
        let kept = std::env::temp_dir().join("floe-outage-broker.log");
        let _ = std::fs::copy(broker.dir().join("broker.log"), &kept);
        eprintln!("the broker's whole log is kept in {}", kept.display());
    }
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}\nbroker log:\n{}", broker.log()),
        Err(_) => panic!(
            "writes did not finish within 90 s of the broker's restart ({} acked)\nbroker log:\n{}",
            acked.lock().unwrap().len(),
            broker.log()
        ),
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 8 * 150);
    eprintln!(
        "outage: {before_stop} acked before the stop, {} during it, {} retryable errors",
        during_outage - before_stop,
        retryable_errors.load(std::sync::atomic::Ordering::Relaxed)
    );

    let events = all_events(&*floe.pipeline()).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for event in &events {
        *seen.entry(&event.idempotency_key).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "idempotency keys in the topic more than once: {twice:?}"
    );
    for key in &acked {
        assert!(
            seen.contains_key(key.as_str()),
            "acknowledged write {key} lost"
        );
    }
    assert_eq!(
        events.len(),
        acked.len(),
        "nothing but the acknowledged writes"
    );
    floe.close().await.unwrap();
    drop(broker);
}

/// A Python consumer (confluent-kafka) reads the topic from the beginning and
/// sees exactly the events floe acknowledged: count, distinct idempotency
/// keys, a checksum over them and the sum of versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_consumer_sees_exactly_what_floe_acknowledged() {
    let python = std::env::var("FLOE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "FLOE_PYTHON is not set: the independent-reader test needs the Python environment of \
             scripts/python-env.sh (export FLOE_PYTHON=$(scripts/python-env.sh), as scripts/test.sh does)"
        )
    });
    let broker = broker().await;
    let topic = topic("python");
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), &broker, &topic))
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut version_sum = 0u64;
    for i in 0..300u64 {
        let key = EntityKey::new("tenant-ü", "Order", format!("o-{}", i % 90));
        let ack = if i % 11 == 10 {
            match floe.delete(key).await {
                Ok(ack) => ack,
                Err(_) => continue,
            }
        } else {
            floe.put(key, json!({ "i": i, "emoji": "🚀" }))
                .await
                .unwrap()
        };
        if ack.kind == EventKind::Deleted {
            assert!(ack.version > 1);
        }
        version_sum += ack.version;
        keys.push(ack.idempotency_key);
    }
    floe.close().await.unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/kafka_consumer.py");
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .args(["--bootstrap", &broker.bootstrap(), "--topic", &topic])
        .args(["--expect", &keys.len().to_string()]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        output.status.success(),
        "the Python consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    let distinct = keys.iter().collect::<HashSet<_>>().len();
    keys.sort();
    let crc = crc32fast::hash(keys.join("\n").as_bytes());
    assert_eq!(report["count"], keys.len() as u64, "{report}");
    assert_eq!(report["distinct_keys"], distinct as u64, "{report}");
    assert_eq!(report["crc32"], u64::from(crc), "{report}");
    assert_eq!(report["version_sum"], version_sum, "{report}");
}

/// Writes through the Kafka pipeline with the sink running (the lake on, as
/// by default) all land in the lake, exactly once, within a bound: the
/// count of events and of distinct idempotency keys in `floe.events` is
/// exactly the number of acknowledged writes. (Before the broker harness
/// indexed tansu's header table this crawled: docs/kafka.md, "Reading while
/// writing on tansu".)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_writes_land_through_kafka_with_the_sink_on() {
    const WRITES: u64 = 100_000;
    const CALLERS: u64 = 128;
    /// Landing may trail the last acknowledgement by this much.
    const LAND_BOUND: Duration = Duration::from_secs(60);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let broker = broker().await;
    let topic = topic("lake");
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), &broker, &topic))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (floe, next) = (floe.clone(), next.clone());
        callers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= WRITES {
                    return;
                }
                let key = EntityKey::new(format!("t-{}", i % 97), "Order", format!("o-{i}"));
                floe.put(key, json!({ "i": i, "status": "placed" }))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.expect("caller");
    }
    let written = started.elapsed();
    loop {
        let trailing = started.elapsed() - written;
        // The lag is a probe that reads the topic: on a loaded machine the
        // broker can be slow to answer it, which is retryable and says
        // nothing about what landed (the count below is the judge).
        let lag = match floe.sink_lag().await {
            Ok(lag) => lag,
            Err(e) if e.is_retryable() && trailing < LAND_BOUND => {
                eprintln!("sink lag probe: {e}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => panic!("sink lag: {e}"),
        };
        if lag.events == 0 {
            break;
        }
        assert!(
            trailing < LAND_BOUND,
            "{} events not landed {trailing:?} after the last acknowledgement ({lag:?})",
            lag.events
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let landed = started.elapsed();
    let result = floe
        .sql_with(
            "SELECT count(*), count(DISTINCT idempotency_key), count(DISTINCT entity_id) FROM events",
            &floe::QueryRequest::new().no_cache(),
        )
        .await
        .unwrap();
    let column = |i: usize| {
        result.batches[0]
            .column(i)
            .as_any()
            .downcast_ref::<floe_query::arrow::array::Int64Array>()
            .unwrap()
            .value(0) as u64
    };
    assert_eq!(column(0), WRITES, "events in the lake");
    assert_eq!(column(1), WRITES, "distinct idempotency keys in the lake");
    assert_eq!(column(2), WRITES, "distinct entities in the lake");
    eprintln!(
        "kafka + lake: {WRITES} writes acknowledged in {:.1} s, all landed after {:.1} s",
        written.as_secs_f64(),
        landed.as_secs_f64()
    );
    floe.close().await.unwrap();
}
