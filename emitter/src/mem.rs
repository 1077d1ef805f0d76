//! [`MemPipeline`]: the [`Pipeline`] contract in memory, for tests that
//! need a real pipeline in milliseconds (feature `test-util`).
//!
//! It passes the same conformance suite as the file log and Kafka. Its
//! events live in a store shared by every [`MemPipeline::reopen`] of it, so
//! a test can close a pipeline (a process stopping) and open it again (a
//! restart) with everything acknowledged still there. Nothing is written to
//! disk: "durable" means "in the store", which outlives every pipeline
//! opened on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use floe_engine::{Event, Offset, Pipeline, Record, partition_for};
use tokio::sync::Notify;

use crate::error::Error;

const BACKEND: &str = "memory";

/// An in-memory pipeline. See the module documentation.
#[derive(Debug)]
pub struct MemPipeline {
    store: Arc<Store>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Store {
    partitions: Vec<Mutex<Partition>>,
    /// Woken on every append to the partition.
    appended: Vec<Notify>,
}

#[derive(Debug, Default)]
struct Partition {
    /// The offset of `events[0]`: events below it were deleted.
    low: Offset,
    events: VecDeque<Event>,
}

impl Partition {
    fn high(&self) -> Offset {
        self.low + self.events.len() as u64
    }
}

impl MemPipeline {
    /// A new, empty store of `partitions` partitions, opened.
    pub fn new(partitions: u32) -> MemPipeline {
        assert!(partitions > 0, "a pipeline has at least one partition");
        MemPipeline {
            store: Arc::new(Store {
                partitions: (0..partitions).map(|_| Mutex::default()).collect(),
                appended: (0..partitions).map(|_| Notify::new()).collect(),
            }),
            closed: AtomicBool::new(false),
        }
    }

    /// Opens the same store again (after a close: a restart), with every
    /// appended event.
    pub fn reopen(&self) -> MemPipeline {
        MemPipeline {
            store: self.store.clone(),
            closed: AtomicBool::new(false),
        }
    }

    fn partition(&self, partition: u32) -> floe_engine::Result<&Mutex<Partition>> {
        self.store
            .partitions
            .get(partition as usize)
            .ok_or_else(|| {
                Error::UnknownPartition {
                    partition,
                    partitions: self.partitions(),
                }
                .into_pipeline_error(BACKEND)
            })
    }
}

fn lock(partition: &Mutex<Partition>) -> std::sync::MutexGuard<'_, Partition> {
    partition.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Pipeline for MemPipeline {
    fn partitions(&self) -> u32 {
        self.store.partitions.len() as u32
    }

    async fn append(&self, events: &[Event]) -> floe_engine::Result<Vec<Offset>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed.into_pipeline_error(BACKEND));
        }
        let n = self.partitions();
        let mut offsets = Vec::with_capacity(events.len());
        let mut touched = vec![false; n as usize];
        for event in events {
            let p = partition_for(event.key_hash, n);
            let mut partition = lock(&self.store.partitions[p as usize]);
            offsets.push(partition.high());
            partition.events.push_back(event.clone());
            touched[p as usize] = true;
        }
        for (p, touched) in touched.into_iter().enumerate() {
            if touched {
                self.store.appended[p].notify_waiters();
            }
        }
        Ok(offsets)
    }

    async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> floe_engine::Result<Vec<Record>> {
        let slot = self.partition(partition)?;
        let deadline = Instant::now() + wait;
        loop {
            // Registered before the check, so an append between the check
            // and the wait still wakes this read.
            let appended = self.store.appended[partition as usize].notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            {
                let p = lock(slot);
                Error::check_read_range(partition, from, p.low, p.high())
                    .map_err(|e| e.into_pipeline_error(BACKEND))?;
                if from < p.high() {
                    let start = (from - p.low) as usize;
                    return Ok(p
                        .events
                        .range(start..)
                        .take(max)
                        .enumerate()
                        .map(|(i, event)| Record {
                            partition,
                            offset: from + i as u64,
                            event: event.clone(),
                        })
                        .collect());
                }
            }
            let now = Instant::now();
            if now >= deadline || max == 0 {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(deadline - now, appended).await;
        }
    }

    async fn high_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        Ok(lock(self.partition(partition)?).high())
    }

    async fn low_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        Ok(lock(self.partition(partition)?).low)
    }

    /// Deletes exactly the events below `offset` (up to the high watermark).
    async fn delete_before(&self, partition: u32, offset: Offset) -> floe_engine::Result<Offset> {
        let mut p = lock(self.partition(partition)?);
        let target = offset.min(p.high());
        while p.low < target {
            p.events.pop_front();
            p.low += 1;
        }
        Ok(p.low)
    }

    async fn close(&self) -> floe_engine::Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reopened_store_keeps_its_events_and_a_closed_one_refuses_appends() {
        let p = MemPipeline::new(2);
        let event = Event {
            event_id: uuid::Uuid::now_v7(),
            idempotency_key: "k".into(),
            kind: floe_engine::EventKind::Created,
            namespace: "t".into(),
            entity_type: "T".into(),
            entity_id: "e".into(),
            partition_key: "t".into(),
            key_hash: 7,
            shard: 0,
            version: 1,
            timestamp_us: 0,
            state: None,
            request_fingerprint: None,
            owner_epoch: 0,
        };
        p.append(std::slice::from_ref(&event)).await.unwrap();
        p.close().await.unwrap();
        assert!(p.append(std::slice::from_ref(&event)).await.is_err());
        let again = p.reopen();
        let partition = partition_for(event.key_hash, 2);
        assert_eq!(again.high_watermark(partition).await.unwrap(), 1);
        assert_eq!(again.append(&[event]).await.unwrap(), vec![1]);
    }
}
