//! `floe bench ingest --pipeline kafka://...`: acknowledged writes/s through
//! `Floe` on the Kafka pipeline against a raw rdkafka producer sending the
//! same number of same-sized records to the same broker in the same run.
//!
//! The broker (tansu's SQLite engine in tests) bounds both, so the claim is
//! the ratio, not the absolute figures.

use std::time::{Duration, Instant};

use anyhow::Context;
use floe::{Config, EventKind};
use floe_emitter::{KafkaOptions, KafkaPipeline, TansuBroker};
use floe_engine::{Event, Json};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{IngestArgs, ingest_once, payload};

/// Longest a floe run may take before it is reported unfinished.
const LAKE_BOUND: Duration = Duration::from_secs(600);
use crate::cli::report;

pub(super) async fn ingest(config: Config, args: IngestArgs) -> anyhow::Result<()> {
    let broker = if args.start_broker {
        let broker = tokio::task::spawn_blocking(TansuBroker::start)
            .await?
            .context("starting a temporary tansu broker (--start-broker)")?;
        println!(
            "started tansu on {} (data in {})",
            broker.bootstrap(),
            broker.dir().display()
        );
        Some(broker)
    } else {
        None
    };
    let url = match (&args.pipeline, &broker) {
        (Some(url), Some(broker)) => {
            // --start-broker: the URL gives topic and options, the broker its address.
            let rest = url.trim_start_matches("kafka://");
            let path = rest.split_once('/').map_or("floe-bench", |(_, path)| path);
            format!("kafka://{}/{path}", broker.bootstrap())
        }
        (Some(url), None) => url.clone(),
        (None, Some(broker)) => format!("kafka://{}/floe-bench?partitions=16", broker.bootstrap()),
        (None, None) => {
            anyhow::bail!("a Kafka ingest run needs --pipeline kafka://... or --start-broker")
        }
    };
    let mut config = config;
    config.pipeline = url;
    config.validate().context("checking --pipeline")?;
    let base = config
        .kafka_options()?
        .context("--pipeline is not a kafka:// URL")?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let floe_topic = format!("{}-floe-{}", base.topic, &run[..8]);
    let raw_topic = format!("{}-raw-{}", base.topic, &run[..8]);
    let record_bytes = record_size(args.payload_bytes)?;
    println!(
        "ingest: {} writes of ~{} B JSON ({} B records), {} callers, {} shards, Kafka {} ({} partitions)",
        args.writes,
        args.payload_bytes,
        record_bytes,
        args.callers,
        args.shards,
        base.brokers,
        base.partitions
    );

    // The raw producer first, on its own fresh topic.
    let raw_options = KafkaOptions {
        topic: raw_topic,
        ..base.clone()
    };
    KafkaPipeline::open(raw_options.clone())
        .await?
        .close()
        .await?;
    let raw = raw_produce(&raw_options, args.writes, record_bytes).await?;
    let raw_rate = report::per_second(args.writes, raw);
    println!(
        "  raw rdkafka producer  {raw_rate:>10.0} acked records/s  ({} records in {:.2} s, idempotent, acks=all)",
        args.writes,
        raw.as_secs_f64()
    );

    // Lake off: the write path alone. Lake on (the default): the in-process
    // sink tails the topic while the writes run; the run ends when `close`
    // has landed everything, or is reported unfinished after LAKE_BOUND.
    for lake in [false, true] {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        let mut config = config.clone();
        config.data_dir = dir.path().to_path_buf();
        config.topology.shards = args.shards;
        config.pipeline = format!(
            "kafka://{}/{floe_topic}-{}?partitions={}",
            base.brokers,
            if lake { "lake" } else { "nolake" },
            base.partitions
        );
        config.kafka.properties = base.properties.clone();
        config.lake.enabled = lake;
        let label = if lake { "lake on " } else { "lake off" };
        let started = Instant::now();
        match tokio::time::timeout(LAKE_BOUND, ingest_once(config, &args, args.callers, 1)).await {
            Ok(figures) => {
                let floe = figures?;
                println!(
                    "  floe on Kafka, {label} {:>10.0} acked writes/s   {}  ({:.0} writes per append; {:.1} s until closed{})",
                    floe.writes_per_s,
                    report::latency_summary(&floe.histogram),
                    floe.writes_per_batch,
                    started.elapsed().as_secs_f64(),
                    if lake { ", everything landed" } else { "" }
                );
                println!(
                    "ingest kafka {label}: floe {:.0} writes/s, raw producer {raw_rate:.0} records/s, ratio {:.2}x",
                    floe.writes_per_s,
                    floe.writes_per_s / raw_rate
                );
            }
            Err(_) => println!(
                "ingest kafka {label}: not finished (acknowledged and landed) after {} s: no figure",
                LAKE_BOUND.as_secs()
            ),
        }
    }
    drop(broker);
    Ok(())
}

/// Bytes of the JSON value of one event the ingest run writes.
fn record_size(payload_bytes: usize) -> anyhow::Result<usize> {
    let event = Event {
        event_id: uuid::Uuid::now_v7(),
        idempotency_key: "tenant-1234/Order/o-123456@v1".into(),
        kind: EventKind::Created,
        namespace: "tenant-1234".into(),
        entity_type: "Order".into(),
        entity_id: "o-123456".into(),
        partition_key: "tenant-1234".into(),
        key_hash: u64::MAX / 3,
        shard: 7,
        version: 1,
        timestamp_us: floe_engine::now_us(),
        request_fingerprint: None,
        owner_epoch: 0,
        state: Some(Json::from_value(&payload(123_456, payload_bytes))?),
    };
    Ok(serde_json::to_vec(&event)?.len())
}

/// Sends `count` records of `bytes` bytes (keys and headers like floe's) as
/// fast as the producer takes them, and returns the time until the last
/// delivery report.
async fn raw_produce(options: &KafkaOptions, count: u64, bytes: usize) -> anyhow::Result<Duration> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &options.brokers);
    for (key, value) in &options.properties {
        client.set(key, value);
    }
    client.set("enable.idempotence", "true").set("acks", "all");
    let producer: FutureProducer = client.create().context("creating the raw producer")?;
    let value = vec![b'x'; bytes];
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(count as usize);
    for i in 0..count {
        let key = format!("tenant-{}", i % 10_000);
        let version = "1";
        let idempotency_key = format!("{key}/Order/o-{i}@v1");
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "floe.idempotency_key",
                value: Some(&idempotency_key),
            })
            .insert(Header {
                key: "floe.kind",
                value: Some("created"),
            })
            .insert(Header {
                key: "floe.version",
                value: Some(version),
            });
        let mut record = FutureRecord::to(&options.topic)
            .key(&key)
            .payload(&value)
            .partition((i % u64::from(options.partitions)) as i32)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e).context("raw producer"),
            }
        }
    }
    for delivery in futures::future::join_all(deliveries).await {
        delivery
            .context("raw producer closed")?
            .map_err(|(e, _)| e)
            .context("raw producer delivery")?;
    }
    Ok(started.elapsed())
}
