//! `append`: send a batch through the idempotent producer and wait for every
//! delivery report, re-sending records that failed with a retryable error.

use std::time::{Duration, Instant};

use floe_engine::{Event, Offset, partition_for};
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use super::KafkaOptions;
use super::codec;
use super::errors::kafka_error;
use super::slot::{Generation, ProducerSlot, Sent};
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
    /// passed or the pipeline closed; a fatal error returns at once. Records
    /// already acknowledged are never sent twice. A round whose records
    /// timed out, or whose producer became fatal, replaces the producer
    /// (`slot.rs`), and the next round (or append) uses the new one.
    pub(crate) async fn send(
        mut self,
        options: &KafkaOptions,
        slot: &ProducerSlot,
    ) -> Result<Vec<Offset>> {
        let deadline = Instant::now() + options.append_retry;
        let mut pending: Vec<usize> = (0..self.events.len()).collect();
        let mut backoff = RETRY_BACKOFF.0;
        loop {
            let mut round = self.round(options, slot, &pending).await?;
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

    /// Sends the `pending` records once through the current producer;
    /// returns those that failed with a retryable error.
    async fn round(
        &mut self,
        options: &KafkaOptions,
        slot: &ProducerSlot,
        pending: &[usize],
    ) -> Result<Vec<(usize, Error)>> {
        let topic = &options.topic;
        let (_, generation) = slot.current()?;
        let mut failed = Vec::new();
        let mut deliveries: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(pending.len());
        let mut retired = false;
        for &i in pending {
            let event = &self.events[i];
            let partition = partition_for(event.key_hash, options.partitions) as i32;
            if retired {
                failed.push((i, replaced(topic, partition)));
                continue;
            }
            let mut record = FutureRecord::to(topic)
                .key(event.partition_key.as_bytes())
                .payload(&self.values[i])
                .partition(partition)
                .headers(codec::encode_headers(event));
            // Enqueued in input order, so records of one partition keep it.
            loop {
                match slot.send(generation, record) {
                    Sent::Enqueued(delivery) => {
                        deliveries.push((i, delivery));
                        break;
                    }
                    Sent::Refused(
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                        back,
                    ) => {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                    }
                    Sent::Refused(e, _) => {
                        let e = kafka_error(format!("producing to {topic}/{partition}"), e);
                        if !e.is_retryable() {
                            return Err(self.fatal(options, slot, generation, e));
                        }
                        failed.push((i, e));
                        break;
                    }
                    // Never sent: the records after it go to the new producer
                    // in the next round, in order.
                    Sent::Retired => {
                        retired = true;
                        failed.push((i, replaced(topic, partition)));
                        break;
                    }
                }
            }
        }
        let (indices, futures): (Vec<usize>, Vec<DeliveryFuture>) = deliveries.into_iter().unzip();
        let mut fatal = None;
        let mut timed_out = None;
        for (i, delivery) in indices
            .into_iter()
            .zip(futures::future::join_all(futures).await)
        {
            match delivery {
                Ok(Ok(delivery)) => self.offsets[i] = Some(delivery.offset as Offset),
                Ok(Err((e, message))) => {
                    let is_timeout =
                        e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                    let e = kafka_error(format!("producing to {topic}/{}", message.partition()), e);
                    if is_timeout && timed_out.is_none() {
                        timed_out = Some(e.to_string());
                    }
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
            return Err(self.fatal(options, slot, generation, e));
        }
        if let Some(why) = timed_out {
            // librdkafka bumps the epoch of a producer whose records timed
            // out; a new producer asks the broker for its id instead.
            slot.retire(options, generation, &why)?;
        }
        failed.sort_by_key(|(i, _)| *i);
        Ok(failed)
    }

    /// A non-retryable failure; if it is the producer's own (librdkafka made
    /// it fatal), the producer is replaced and the append may be retried.
    fn fatal(
        &self,
        options: &KafkaOptions,
        slot: &ProducerSlot,
        generation: Generation,
        e: Error,
    ) -> Error {
        if !slot.is_fatal(generation) {
            return e;
        }
        let why = e.to_string();
        if let Err(replacing) = slot.retire(options, generation, &why) {
            return replacing;
        }
        match e {
            Error::Kafka {
                operation, cause, ..
            } => Error::Kafka {
                operation,
                retryable: true,
                cause,
            },
            other => other,
        }
    }
}

/// The error of a record never sent because its round's producer was
/// replaced meanwhile: it certainly is not in the topic.
fn replaced(topic: &str, partition: i32) -> Error {
    kafka_error(
        format!(
            "producing to {topic}/{partition}: the producer was replaced before the record was sent"
        ),
        KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue),
    )
}
