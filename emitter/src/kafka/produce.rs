//! `append`: send a batch through the idempotent producer and wait for every
//! delivery report, re-sending records that failed with a retryable error.

use std::time::{Duration, Instant};

use floe_engine::{Event, Offset, partition_for};
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::KafkaOptions;
use super::codec;
use super::errors::kafka_error;
use crate::error::{Error, Result};

/// How long `append` waits before retrying a record refused because the
/// producer's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);
/// First and longest pause between two rounds of re-sending failed records.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// One batch being appended.
pub(crate) struct Batch<'a> {
    events: &'a [Event],
    values: Vec<Vec<u8>>,
    offsets: Vec<Option<Offset>>,
}

impl<'a> Batch<'a> {
    /// Serializes every event first, so a batch that cannot be encoded sends
    /// nothing.
    pub(crate) fn encode(events: &'a [Event]) -> Result<Self> {
        Ok(Batch {
            events,
            values: events
                .iter()
                .map(codec::encode_value)
                .collect::<Result<_>>()?,
            offsets: vec![None; events.len()],
        })
    }

    /// Sends every record and waits for all delivery reports. Records that
    /// fail with a retryable error (the broker unreachable, shutting down, a
    /// timeout) are sent again, in input order, until `append_retry` has
    /// passed or `producer()` says the pipeline closed; a fatal error returns
    /// at once. Records already acknowledged are never sent twice.
    pub(crate) async fn send(
        mut self,
        options: &KafkaOptions,
        mut producer: impl FnMut() -> Result<FutureProducer>,
    ) -> Result<Vec<Offset>> {
        let deadline = Instant::now() + options.append_retry;
        let mut pending: Vec<usize> = (0..self.events.len()).collect();
        let mut backoff = RETRY_BACKOFF.0;
        loop {
            let mut round = self.round(options, &producer()?, &pending).await?;
            if round.is_empty() {
                break;
            }
            if Instant::now() + backoff >= deadline {
                return Err(round.swap_remove(0).1);
            }
            tracing::warn!(
                topic = %options.topic,
                records = round.len(),
                error = %round[0].1,
                "re-sending records that failed with a retryable error"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF.1);
            pending = round.into_iter().map(|(i, _)| i).collect();
        }
        Ok(self
            .offsets
            .into_iter()
            .map(|o| o.expect("every record was acknowledged"))
            .collect())
    }

    /// Sends the `pending` records once; returns those that failed with a
    /// retryable error.
    async fn round(
        &mut self,
        options: &KafkaOptions,
        producer: &FutureProducer,
        pending: &[usize],
    ) -> Result<Vec<(usize, Error)>> {
        let topic = &options.topic;
        let mut failed = Vec::new();
        let mut deliveries: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(pending.len());
        for &i in pending {
            let event = &self.events[i];
            let partition = partition_for(event.key_hash, options.partitions) as i32;
            let mut record = FutureRecord::to(topic)
                .key(event.partition_key.as_bytes())
                .payload(&self.values[i])
                .partition(partition)
                .headers(codec::encode_headers(event));
            // Enqueued in input order, so records of one partition keep it.
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push((i, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                    }
                    Err((e, _)) => {
                        let e = kafka_error(format!("producing to {topic}/{partition}"), e);
                        if !e.is_retryable() {
                            return Err(e);
                        }
                        failed.push((i, e));
                        break;
                    }
                }
            }
        }
        let (indices, futures): (Vec<usize>, Vec<DeliveryFuture>) = deliveries.into_iter().unzip();
        let mut fatal = None;
        for (i, delivery) in indices
            .into_iter()
            .zip(futures::future::join_all(futures).await)
        {
            match delivery {
                Ok(Ok(delivery)) => self.offsets[i] = Some(delivery.offset as Offset),
                Ok(Err((e, message))) => {
                    let e = kafka_error(format!("producing to {topic}/{}", message.partition()), e);
                    if e.is_retryable() {
                        failed.push((i, e));
                    } else {
                        fatal.get_or_insert(e);
                    }
                }
                Err(_) => {
                    fatal.get_or_insert(kafka_error(
                        format!("producing to {topic}: the producer was closed"),
                        KafkaError::Canceled,
                    ));
                }
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        failed.sort_by_key(|(i, _)| *i);
        Ok(failed)
    }
}
