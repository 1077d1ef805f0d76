//! Reading partitions from an offset: a small pool of assigned consumers.
//!
//! A reader is a `BaseConsumer` with one partition assigned manually (no
//! group membership, no offset commits: floe tracks offsets itself). After a
//! read it goes back to its partition's pool positioned at the offset after
//! the last record it returned, so sequential reads (recovery reads each
//! partition from start to end; the sink tails) reuse one client, its
//! connection and what it has prefetched instead of creating one per call.
//! A reader that reached the high watermark is paused in the pool, so idle
//! readers do not poll the broker; one with records left keeps fetching
//! (a fresh fetch costs tansu seconds on a partition with thousands of
//! records after the offset, so a reader is never paused mid-partition).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use floe_engine::{Offset, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset as KafkaOffset, TopicPartitionList};

use super::KafkaOptions;
use super::codec;
use super::errors::kafka_error;
use crate::error::{Error, Result};

/// Idle readers kept per partition.
const IDLE_PER_PARTITION: usize = 2;
/// A blocked poll wakes this often to notice `close`.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// The pools of idle readers, one per partition.
#[derive(Debug)]
pub(crate) struct Readers {
    idle: Vec<Mutex<Vec<Reader>>>,
}

/// What one read asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadRequest {
    pub(crate) partition: u32,
    pub(crate) from: Offset,
    pub(crate) max: usize,
    pub(crate) wait: Duration,
}

impl Readers {
    pub(crate) fn new(partitions: u32) -> Self {
        Readers {
            idle: (0..partitions).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Reads per [`floe_engine::Pipeline::read`]'s contract. Blocking.
    ///
    /// Below the low watermark and beyond the high watermark are errors. From
    /// an offset below the high watermark the read waits for records (up to
    /// the request timeout) whatever `wait` says, because they exist: it
    /// returns up to `max` of them, stopping at the high watermark seen when
    /// the read started. At the high watermark it waits up to `wait` for the
    /// first new record.
    pub(crate) fn read(
        &self,
        options: &KafkaOptions,
        request: ReadRequest,
        closed: &AtomicBool,
    ) -> Result<Vec<Record>> {
        let pool = &self.idle[request.partition as usize];
        let reader = pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut reader = match reader {
            Some(reader) => reader,
            None => Reader::new(options)?,
        };
        // A reader that failed is dropped: its client state is unknown.
        let (records, at_end) = reader.read(options, request, closed)?;
        if !at_end || reader.park(options, request.partition).is_ok() {
            let mut idle = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_PER_PARTITION && !closed.load(Ordering::Acquire) {
                idle.push(reader);
            }
        }
        Ok(records)
    }

    /// Drops every idle reader (their clients disconnect).
    pub(crate) fn clear(&self) {
        for pool in &self.idle {
            pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

/// One consumer and the offset its assignment will deliver next.
struct Reader {
    consumer: BaseConsumer,
    /// The next offset the (paused) assignment delivers; `None` when nothing
    /// is assigned.
    next: Option<Offset>,
    /// Fetching is paused ([`Reader::park`]): the reader stopped at the end.
    parked: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("next", &self.next).finish()
    }
}

impl Reader {
    fn new(options: &KafkaOptions) -> Result<Self> {
        let consumer: BaseConsumer = options
            .consumer_config()
            .create()
            .map_err(|e| kafka_error(format!("creating a reader of {}", options.topic), e))?;
        Ok(Reader {
            consumer,
            next: None,
            parked: false,
        })
    }

    /// One read; also says whether the reader is at the high watermark.
    fn read(
        &mut self,
        options: &KafkaOptions,
        request: ReadRequest,
        closed: &AtomicBool,
    ) -> Result<(Vec<Record>, bool)> {
        let ReadRequest {
            partition,
            from,
            max,
            wait,
        } = request;
        let topic = &options.topic;
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition as i32, options.request_timeout)
            .map_err(|e| {
                kafka_error(format!("fetching the watermarks of {topic}/{partition}"), e)
            })?;
        let (low, high) = (low.max(0) as Offset, high.max(0) as Offset);
        Error::check_read_range(partition, from, low, high)?;
        if max == 0 || (from == high && wait.is_zero()) {
            return Ok((Vec::new(), self.next.is_none_or(|n| n >= high)));
        }
        self.position(options, partition, from)?;
        // Records below `high` exist, so the read waits for them as long as a
        // request may take; at the end it waits `wait` for a new one.
        let (end, patience) = if from < high {
            (
                high.min(from.saturating_add(max as u64)),
                options.request_timeout,
            )
        } else {
            (from + 1, wait)
        };
        let deadline = Instant::now() + patience;
        let mut records = Vec::with_capacity(max.min((end - from) as usize).min(8192));
        let mut next = from;
        while next < end && records.len() < max {
            if closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let Some(polled) = self.consumer.poll(POLL_SLICE.min(deadline - now)) else {
                continue;
            };
            let message = polled
                .map_err(|e| kafka_error(format!("reading {topic}/{partition} at {next}"), e))?;
            if message.partition() != partition as i32 || (message.offset() as Offset) < next {
                continue; // left over from an earlier assignment
            }
            let (offset, event) = codec::decode(topic, &message)?;
            next = offset + 1;
            self.next = Some(next);
            records.push(Record {
                partition,
                offset,
                event,
            });
        }
        if records.is_empty() && from < high {
            return Err(kafka_error(
                format!(
                    "reading {topic}/{partition}: no record arrived within {:?} although the high watermark is {high}",
                    options.request_timeout
                ),
                rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
                ),
            ));
        }
        Ok((records, next >= high))
    }

    /// Makes the assignment deliver `from` next. A reader that goes on
    /// where it stopped, still fetching, keeps its assignment (and what it
    /// prefetched). A reader with nothing assigned is assigned `from`. Any
    /// other keeps its assignment and seeks, after a resume if it was
    /// parked: a resume alone left the partition's fetcher asleep until
    /// librdkafka's next one-second wakeup (every read of a few new records
    /// took ~1.1 s), and the seek restarts the fetch at once. Re-assigning
    /// instead crashed the process: librdkafka up to 2.15 asserts
    /// (`rktp->rktp_started`, rdkafka_assignment.c) when an assignment is
    /// replaced while the stop of the one before is still pending
    /// (confluentinc/librdkafka#5573), which a broker outage makes likely.
    fn position(&mut self, options: &KafkaOptions, partition: u32, from: Offset) -> Result<()> {
        if !self.parked && self.next == Some(from) {
            return Ok(());
        }
        let topic = &options.topic;
        if self.next.is_none() {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic, partition as i32, KafkaOffset::Offset(from as i64))
                .map_err(|e| kafka_error("building an assignment", e))?;
            self.consumer
                .assign(&list)
                .map_err(|e| kafka_error(format!("assigning {topic}/{partition} at {from}"), e))?;
            self.next = Some(from);
            return Ok(());
        }
        if self.parked {
            let mut list = TopicPartitionList::new();
            list.add_partition(topic, partition as i32);
            self.consumer
                .resume(&list)
                .map_err(|e| kafka_error(format!("resuming {topic}/{partition}"), e))?;
            self.parked = false;
        }
        self.consumer
            .seek(
                topic,
                partition as i32,
                KafkaOffset::Offset(from as i64),
                options.request_timeout,
            )
            .map_err(|e| kafka_error(format!("seeking {topic}/{partition} to {from}"), e))?;
        self.next = Some(from);
        Ok(())
    }

    /// Pauses fetching until the next read.
    fn park(&mut self, options: &KafkaOptions, partition: u32) -> Result<()> {
        if self.next.is_none() || self.parked {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(&options.topic, partition as i32);
        self.consumer
            .pause(&list)
            .map_err(|e| kafka_error("pausing a reader", e))?;
        self.parked = true;
        Ok(())
    }
}
