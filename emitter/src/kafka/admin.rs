//! Topic creation and checks, and record deletion, through the admin client.

use std::time::{Duration, Instant};

use floe_engine::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use super::KafkaOptions;
use super::errors::kafka_error;
use crate::error::{Error, Result};

/// The admin client floe uses.
pub(crate) type Admin = AdminClient<DefaultClientContext>;

fn admin_options(options: &KafkaOptions) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(options.request_timeout))
        .operation_timeout(Some(options.request_timeout))
}

/// Creates the topic with `options.partitions` partitions unless it exists,
/// then checks that the broker reports exactly that many partitions.
///
/// Creating first (and accepting "already exists") rather than looking first
/// avoids a metadata request for a missing topic, which brokers with
/// `auto.create.topics.enable` answer by creating it with their default
/// partition count.
pub(crate) async fn ensure_topic(admin: &Admin, options: &KafkaOptions) -> Result<()> {
    let topic = &options.topic;
    let new_topic = NewTopic::new(
        topic,
        options.partitions as i32,
        TopicReplication::Fixed(options.replication_factor),
    );
    let results = admin
        .create_topics([&new_topic], &admin_options(options))
        .await
        .map_err(|e| kafka_error(format!("creating topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, partitions = options.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(kafka_error(
                    format!("creating topic {topic}"),
                    KafkaError::AdminOp(code),
                ));
            }
        }
    }
    // A topic just created may take a moment to appear in metadata.
    let deadline = Instant::now() + options.request_timeout;
    loop {
        let existing = partition_count(admin, options)?;
        match existing {
            Some(n) if n == options.partitions => return Ok(()),
            Some(n) if n > 0 => {
                return Err(Error::TopicPartitionMismatch {
                    topic: topic.clone(),
                    existing: n,
                    requested: options.partitions,
                });
            }
            _ if Instant::now() >= deadline => {
                return Err(kafka_error(
                    format!("waiting for topic {topic} to appear in the broker's metadata"),
                    KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Partitions of the topic as the broker reports them; `None` while the
/// broker does not know it.
fn partition_count(admin: &Admin, options: &KafkaOptions) -> Result<Option<u32>> {
    let topic = &options.topic;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), options.request_timeout)
        .map_err(|e| kafka_error(format!("fetching metadata of topic {topic}"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as u32))
}

/// Deletes the records of `partition` below `offset` (Kafka's DeleteRecords)
/// and returns the partition's new low watermark.
pub(crate) async fn delete_records(
    admin: &Admin,
    options: &KafkaOptions,
    partition: u32,
    offset: Offset,
) -> Result<Offset> {
    let topic = &options.topic;
    let operation = || format!("deleting records of {topic}/{partition} below offset {offset}");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition as i32, KafkaOffset::Offset(offset as i64))
        .map_err(|e| kafka_error(operation(), e))?;
    let result = admin
        .delete_records(&list, &admin_options(options))
        .await
        .map_err(|e| kafka_error(operation(), e))?;
    let element = result
        .find_partition(topic, partition as i32)
        .ok_or_else(|| {
            kafka_error(
                operation(),
                KafkaError::AdminOp(RDKafkaErrorCode::UnknownTopicOrPartition),
            )
        })?;
    element.error().map_err(|e| kafka_error(operation(), e))?;
    match element.offset() {
        KafkaOffset::Offset(low) if low >= 0 => Ok(low as Offset),
        other => Err(kafka_error(
            format!(
                "{}: the broker answered low watermark {other:?}",
                operation()
            ),
            KafkaError::AdminOp(RDKafkaErrorCode::InvalidRecord),
        )),
    }
}
