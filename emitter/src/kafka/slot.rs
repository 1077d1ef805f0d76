//! The pipeline's producer, and its replacement once librdkafka can no
//! longer be trusted to keep it in step with the broker.
//!
//! Why a producer is replaced: when records of the idempotent producer time
//! out (`message.timeout.ms`, which cluster mode sets to `write_timeout_ms`,
//! so a broker down for longer than that times records out), librdkafka
//! bumps the producer's epoch *locally* and sends the records that follow
//! under the new epoch, which the broker never assigned. Kafka accepts that;
//! tansu 0.6, the test broker, does not: its storage panics on the unknown
//! epoch ("more or less than one row") and answers nothing from then on, so a
//! broker restarted under load died again at the first such record. A
//! producer whose records timed out, or that librdkafka made fatal (every
//! later send would fail), is therefore swapped for a new one, which asks the
//! broker for a fresh producer id, and the old one is purged so it sends
//! nothing more. The records it still held fail (retryable, outcome unknown,
//! as every failed append), and the next append goes through the new one.
//!
//! Nothing is ever enqueued into a retired producer: a record is handed to
//! librdkafka only under the read lock and only if the producer it was meant
//! for is still the current one, and the swap takes the write lock, so every
//! record enqueued into the old producer was enqueued before its purge.

use std::sync::{PoisonError, RwLock};

use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::util::Timeout;

use super::KafkaOptions;
use super::errors::kafka_error;
use crate::error::{Error, Result};

/// Which producer a round of sends uses; a round whose generation was retired
/// sends nothing more.
pub(crate) type Generation = u64;

/// The current producer and how many were retired before it. `None` once the
/// pipeline closed.
#[derive(Default)]
pub(crate) struct ProducerSlot {
    current: RwLock<Option<(FutureProducer, Generation)>>,
}

/// What sending one record came to.
pub(crate) enum Sent<'a> {
    /// Enqueued; the delivery report follows.
    Enqueued(DeliveryFuture),
    /// Refused by librdkafka; the record is handed back.
    Refused(KafkaError, FutureRecord<'a, [u8], Vec<u8>>),
    /// The producer was replaced since the round began: nothing was sent.
    Retired,
}

impl ProducerSlot {
    pub(crate) fn new(producer: FutureProducer) -> Self {
        ProducerSlot {
            current: RwLock::new(Some((producer, 0))),
        }
    }

    /// The current producer and its generation; [`Error::Closed`] after
    /// [`ProducerSlot::take`].
    pub(crate) fn current(&self) -> Result<(FutureProducer, Generation)> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::Closed)
    }

    /// Hands `record` to the producer of `generation` if it is still the
    /// current one (under the read lock: see the module documentation).
    pub(crate) fn send<'a>(
        &self,
        generation: Generation,
        record: FutureRecord<'a, [u8], Vec<u8>>,
    ) -> Sent<'a> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((producer, g)) if *g == generation => match producer.send_result(record) {
                Ok(delivery) => Sent::Enqueued(delivery),
                Err((e, record)) => Sent::Refused(e, record),
            },
            _ => Sent::Retired,
        }
    }

    /// Whether librdkafka made the producer of `generation` fatal.
    pub(crate) fn is_fatal(&self, generation: Generation) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((producer, g)) if *g == generation => producer.client().fatal_error().is_some(),
            _ => false,
        }
    }

    /// Replaces the producer of `generation` with a new one (unless it was
    /// replaced already or the pipeline closed) and purges the old one off
    /// the async workers. `why` is logged.
    pub(crate) fn retire(
        &self,
        options: &KafkaOptions,
        generation: Generation,
        why: &str,
    ) -> Result<()> {
        let fresh: FutureProducer = options
            .producer_config()
            .create()
            .map_err(|e| kafka_error("creating a Kafka producer to replace one", e))?;
        let old = {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            match current.take() {
                Some((old, g)) if g == generation => {
                    *current = Some((fresh, g + 1));
                    old
                }
                other => {
                    // Replaced by another append already, or closed.
                    *current = other;
                    return Ok(());
                }
            }
        };
        tracing::warn!(
            topic = %options.topic,
            retired = generation,
            error = why,
            "replaced the Kafka producer: its records timed out or it became fatal (the records it still held fail, retryable)"
        );
        // Purging waits for the broker threads and dropping the client joins
        // them: not on an async worker.
        std::thread::spawn(move || {
            old.purge(PurgeConfig::default().queue().inflight());
            let _ = old.flush(Timeout::After(std::time::Duration::ZERO));
        });
        Ok(())
    }

    /// Takes the producer out for `close`; every later call fails with
    /// [`Error::Closed`].
    pub(crate) fn take(&self) -> Option<FutureProducer> {
        self.current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|(producer, _)| producer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No broker is needed: creating a producer and enqueueing a record do
    /// not connect (the record would wait in librdkafka's queue).
    fn options() -> KafkaOptions {
        KafkaOptions::new("127.0.0.1:1", "t", 1)
    }

    fn record(value: &Vec<u8>) -> FutureRecord<'_, [u8], Vec<u8>> {
        FutureRecord::to("t")
            .key(&b"k"[..])
            .payload(value)
            .partition(0)
    }

    #[test]
    fn a_retired_generation_sends_nothing_and_a_stale_retirement_changes_nothing() {
        let options = options();
        let slot = ProducerSlot::new(options.producer_config().create().unwrap());
        let value = b"v".to_vec();
        let (_, first) = slot.current().unwrap();
        assert!(matches!(
            slot.send(first, record(&value)),
            Sent::Enqueued(_)
        ));
        assert!(!slot.is_fatal(first));

        slot.retire(&options, first, "records timed out").unwrap();
        let (_, second) = slot.current().unwrap();
        assert_ne!(first, second);
        // A round that began on the retired producer sends nothing more.
        assert!(matches!(slot.send(first, record(&value)), Sent::Retired));
        assert!(matches!(
            slot.send(second, record(&value)),
            Sent::Enqueued(_)
        ));

        // Two appends failing on the same producer replace it once.
        slot.retire(&options, first, "records timed out").unwrap();
        assert_eq!(slot.current().unwrap().1, second);

        // Closed: nothing is sent and nothing is replaced.
        assert!(slot.take().is_some());
        assert!(matches!(slot.current(), Err(Error::Closed)));
        assert!(matches!(slot.send(second, record(&value)), Sent::Retired));
        slot.retire(&options, second, "records timed out").unwrap();
        assert!(matches!(slot.current(), Err(Error::Closed)));
    }
}
