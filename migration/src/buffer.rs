//! The write buffer: writes to moving keys wait here from the buffer phase
//! until the cutover (or a rollback) says where they go.
//!
//! A buffered write is parked, never dropped: the caller's request stays in
//! its own future, and [`WriteBuffer::hold`] returns once the buffer is
//! released, after which the caller routes it again under whatever topology
//! is then in force (the new one after a cutover: the drain on the new
//! owner; the old one after a rollback). Callers that were never acknowledged
//! carry no ordering promise among themselves, so the drain lets them go at
//! once, in parallel.
//!
//! Bounded: at most `capacity` writes are held; further callers wait for a
//! slot (back-pressure) and are counted as held from the moment they arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

/// Counters of a buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferStats {
    /// Writes that were held (in all).
    pub buffered: u64,
    /// Writes held right now.
    pub holding: u64,
    /// The longest a write was held, in microseconds.
    pub max_pause_us: u64,
    /// Writes that waited for a free slot first (the buffer was full).
    pub waited_for_slot: u64,
}

/// The bounded buffer of writes to moving keys.
#[derive(Debug)]
pub struct WriteBuffer {
    slots: Semaphore,
    released: watch::Sender<bool>,
    buffered: AtomicU64,
    holding: AtomicU64,
    max_pause_us: AtomicU64,
    waited: AtomicU64,
}

impl WriteBuffer {
    /// A buffer that holds at most `capacity` writes (at least 1).
    pub fn new(capacity: usize) -> Self {
        WriteBuffer {
            slots: Semaphore::new(capacity.max(1)),
            released: watch::channel(false).0,
            buffered: AtomicU64::new(0),
            holding: AtomicU64::new(0),
            max_pause_us: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        }
    }

    /// Holds the calling write until the buffer is released; returns how
    /// long it waited. Returns at once if the buffer is already released.
    pub async fn hold(&self) -> Duration {
        let started = Instant::now();
        let mut released = self.released.subscribe();
        if *released.borrow() {
            return Duration::ZERO;
        }
        self.buffered.fetch_add(1, Ordering::Relaxed);
        self.holding.fetch_add(1, Ordering::Relaxed);
        // A slot, or the release (which closes the semaphore).
        let permit = match self.slots.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.slots.acquire().await.ok()
            }
        };
        // `wait_for` returns at once if already released; the sender lives in
        // `self`, so it cannot be dropped while we wait.
        let _ = released.wait_for(|r| *r).await;
        drop(permit);
        self.holding.fetch_sub(1, Ordering::Relaxed);
        let paused = started.elapsed();
        self.max_pause_us
            .fetch_max(paused.as_micros() as u64, Ordering::Relaxed);
        paused
    }

    /// Lets every held write go (and every later `hold` return at once).
    pub fn release(&self) {
        self.released.send_replace(true);
        self.slots.close();
    }

    /// Whether the buffer has been released.
    pub fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    /// The counters.
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            buffered: self.buffered.load(Ordering::Relaxed),
            holding: self.holding.load(Ordering::Relaxed),
            max_pause_us: self.max_pause_us.load(Ordering::Relaxed),
            waited_for_slot: self.waited.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn holds_until_released_and_counts() {
        let buffer = Arc::new(WriteBuffer::new(2));
        let mut held = Vec::new();
        for _ in 0..5 {
            let b = buffer.clone();
            held.push(tokio::spawn(async move { b.hold().await }));
        }
        // Give them time to arrive: none may finish before the release.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(held.iter().all(|h| !h.is_finished()));
        let stats = buffer.stats();
        assert_eq!((stats.buffered, stats.holding), (5, 5));
        assert_eq!(
            stats.waited_for_slot, 3,
            "capacity 2: three wait for a slot"
        );
        // Every hold has begun (all five are holding), so each lasts at
        // least this long however late its task was first polled.
        tokio::time::sleep(Duration::from_millis(40)).await;
        buffer.release();
        for h in held {
            assert!(h.await.unwrap() >= Duration::from_millis(40));
        }
        let stats = buffer.stats();
        assert_eq!(stats.holding, 0);
        assert!(stats.max_pause_us >= 40_000);
        // Released: later writes pass at once and are not counted.
        assert_eq!(buffer.hold().await, Duration::ZERO);
        assert_eq!(buffer.stats().buffered, 5);
    }
}
