//! The Kafka [`Pipeline`]: one topic per floe deployment, over `rdkafka`.
//!
//! - **Records** (see `codec.rs`): key = the partition key, value = the event
//!   as JSON, headers = idempotency key, kind and version; any Kafka client
//!   can read them.
//! - **Partitions**: every record's partition is set explicitly to
//!   `partition_for(key_hash, partitions)`, never left to librdkafka's
//!   partitioner, so the file log and Kafka place events alike. The topic is
//!   created with the configured count when missing; an existing topic with
//!   another count is a fatal [`Error::TopicPartitionMismatch`].
//! - **Durability**: an idempotent producer (`enable.idempotence=true`,
//!   `acks=all`); `append` enqueues the batch in order and returns when every
//!   delivery report has arrived, with the offsets from those reports. While
//!   the broker is unreachable librdkafka retries (the idempotent producer
//!   keeps the retries free of duplicates and in order) until
//!   `message.timeout.ms`; records that still fail with a retryable error
//!   (a broker shutting down answers "unknown server error") are re-sent by
//!   `append` itself for up to `append_retry`, and only then does the append
//!   fail, with a retryable error. A producer whose records timed out, or
//!   that librdkafka made fatal, is replaced by a new one (`slot.rs`: the
//!   local epoch bump that follows a timeout kills tansu 0.6, and a fatal
//!   producer would fail every later append).
//! - **Reads** (see `reader.rs`): assigned consumers, no group commits,
//!   watermarks from `ListOffsets`.
//! - **Retention**: `delete_before` is Kafka's `DeleteRecords` (unless
//!   [`KafkaOptions::delete_records`] is off, for brokers without it).
//!
//! [`TansuBroker`] starts a local Kafka-protocol broker for tests and
//! benchmarks.

mod admin;
mod broker;
mod codec;
mod errors;
mod options;
mod produce;
mod reader;
mod slot;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use floe_engine::{Event, Offset, Pipeline, Record};
use rdkafka::producer::Producer;

use self::admin::Admin;
pub use self::broker::{BrokerError, TansuBroker};
pub use self::codec::{HEADER_IDEMPOTENCY_KEY, HEADER_KIND, HEADER_VERSION};
use self::errors::kafka_error;
pub use self::options::KafkaOptions;
use self::reader::{ReadRequest, Readers};
use self::slot::ProducerSlot;
use crate::error::{Error, Result};

/// floe's [`Pipeline`] on a Kafka topic. See the module documentation for
/// the record layout and guarantees.
///
/// The inherent methods return this crate's [`Error`]; the [`Pipeline`]
/// implementation converts them to `floe_engine::Error::Pipeline` with
/// backend `kafka`.
pub struct KafkaPipeline {
    shared: Arc<Shared>,
}

struct Shared {
    options: KafkaOptions,
    /// The producer (replaced when its records time out or it becomes
    /// fatal, `slot.rs`); taken out (flushed and dropped) by `close`.
    producer: ProducerSlot,
    admin: Admin,
    readers: Readers,
    closed: AtomicBool,
}

impl KafkaPipeline {
    /// Connects, creates the topic with `options.partitions` partitions when
    /// it is missing, and checks an existing topic has exactly that many.
    pub async fn open(options: KafkaOptions) -> Result<KafkaPipeline> {
        options.validate()?;
        let admin: Admin = options
            .client_config()
            .create()
            .map_err(|e| kafka_error("creating the Kafka admin client", e))?;
        admin::ensure_topic(&admin, &options).await?;
        let producer = options
            .producer_config()
            .create()
            .map_err(|e| kafka_error("creating the Kafka producer", e))?;
        Ok(KafkaPipeline {
            shared: Arc::new(Shared {
                readers: Readers::new(options.partitions),
                options,
                producer: ProducerSlot::new(producer),
                admin,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The options the pipeline was opened with.
    pub fn options(&self) -> &KafkaOptions {
        &self.shared.options
    }

    /// Appends events, returning their Kafka offsets in input order, once
    /// every record of the batch is acknowledged by all in-sync replicas.
    ///
    /// Records that fail with a retryable error are sent again (only those)
    /// for up to [`KafkaOptions::append_retry`], so a short broker outage
    /// makes `append` wait rather than fail. On error, any subset of the batch
    /// may have been written.
    pub async fn append(&self, events: &[Event]) -> Result<Vec<Offset>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        produce::Batch::encode(events)?
            .send(&self.shared.options, &self.shared.producer)
            .await
    }

    /// Reads up to `max` records of `partition` from offset `from`, waiting
    /// up to `wait` for a new record when `from` is the high watermark.
    pub async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        self.check_partition(partition)?;
        let shared = Arc::clone(&self.shared);
        let request = ReadRequest {
            partition,
            from,
            max,
            wait,
        };
        blocking(move || {
            shared
                .readers
                .read(&shared.options, request, &shared.closed)
        })
        .await
    }

    /// The offset the next record of `partition` will get.
    pub async fn high_watermark(&self, partition: u32) -> Result<Offset> {
        Ok(self.watermarks(partition).await?.1)
    }

    /// The lowest offset of `partition` the broker still has.
    pub async fn low_watermark(&self, partition: u32) -> Result<Offset> {
        Ok(self.watermarks(partition).await?.0)
    }

    /// Deletes the records of `partition` below `offset` (at most up to the
    /// high watermark) and returns the new low watermark. Kafka deletes
    /// exactly, not by segment. With [`KafkaOptions::delete_records`] off,
    /// deletes nothing and returns the current low watermark.
    pub async fn delete_before(&self, partition: u32, offset: Offset) -> Result<Offset> {
        let (low, high) = self.watermarks(partition).await?;
        let offset = offset.min(high);
        if offset <= low || !self.shared.options.delete_records {
            return Ok(low);
        }
        admin::delete_records(&self.shared.admin, &self.shared.options, partition, offset).await
    }

    /// Waits for records in flight, then releases the producer and the
    /// readers. Every later call fails with [`Error::Closed`]; closing twice
    /// is a no-op.
    pub async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let producer = self.shared.producer.take();
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            shared.readers.clear();
            match producer {
                Some(producer) => producer
                    .flush(shared.options.request_timeout)
                    .map_err(|e| kafka_error("flushing the producer at close", e)),
                None => Ok(()),
            }
        })
        .await
    }

    async fn watermarks(&self, partition: u32) -> Result<(Offset, Offset)> {
        self.check_partition(partition)?;
        let producer = self.producer()?;
        let options = self.shared.options.clone();
        blocking(move || {
            let (low, high) = producer
                .client()
                .fetch_watermarks(&options.topic, partition as i32, options.request_timeout)
                .map_err(|e| {
                    kafka_error(
                        format!("fetching the watermarks of {}/{partition}", options.topic),
                        e,
                    )
                })?;
            Ok((low.max(0) as Offset, high.max(0) as Offset))
        })
        .await
    }

    fn producer(&self) -> Result<rdkafka::producer::FutureProducer> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(self.shared.producer.current()?.0)
    }

    fn check_partition(&self, partition: u32) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let partitions = self.shared.options.partitions;
        if partition >= partitions {
            return Err(Error::UnknownPartition {
                partition,
                partitions,
            });
        }
        Ok(())
    }
}

/// Runs a blocking client call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(Error::Closed),
        },
    }
}

impl fmt::Debug for KafkaPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPipeline")
            .field("brokers", &self.shared.options.brokers)
            .field("topic", &self.shared.options.topic)
            .field("partitions", &self.shared.options.partitions)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// Converts this backend's errors for the engine.
fn engine<T>(result: Result<T>) -> floe_engine::Result<T> {
    result.map_err(|e| e.into_pipeline_error("kafka"))
}

#[async_trait]
impl Pipeline for KafkaPipeline {
    fn partitions(&self) -> u32 {
        self.shared.options.partitions
    }

    async fn append(&self, events: &[Event]) -> floe_engine::Result<Vec<Offset>> {
        engine(KafkaPipeline::append(self, events).await)
    }

    async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> floe_engine::Result<Vec<Record>> {
        engine(KafkaPipeline::read(self, partition, from, max, wait).await)
    }

    async fn high_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        engine(KafkaPipeline::high_watermark(self, partition).await)
    }

    async fn low_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        engine(KafkaPipeline::low_watermark(self, partition).await)
    }

    async fn delete_before(&self, partition: u32, offset: Offset) -> floe_engine::Result<Offset> {
        engine(KafkaPipeline::delete_before(self, partition, offset).await)
    }

    async fn close(&self) -> floe_engine::Result<()> {
        engine(KafkaPipeline::close(self).await)
    }
}
