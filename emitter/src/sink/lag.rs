//! How far the lake is behind the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floe_engine::{Offset, Pipeline};

use crate::error::{Error, Result};

/// Sink lag: what the pipeline holds that the lake does not yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkLag {
    /// Events appended to the pipeline but not yet committed to Iceberg.
    pub events: u64,
    /// Age of the oldest event not yet in the lake, in seconds (by its
    /// timestamp; 0 when the lake holds everything).
    pub seconds: f64,
    /// Iceberg commits made by this sink since it started.
    pub commits: u64,
}

/// Shared view of a running sink's progress, read by health checks and metrics.
#[derive(Debug, Clone)]
pub struct LagHandle {
    inner: Arc<LagState>,
}

#[derive(Debug)]
struct LagState {
    committed: Vec<AtomicU64>,
    commits: AtomicU64,
}

fn now_us() -> i64 {
    floe_engine::now_us()
}

impl LagHandle {
    pub(crate) fn new(committed: &[Offset]) -> Self {
        LagHandle {
            inner: Arc::new(LagState {
                committed: committed.iter().map(|&o| AtomicU64::new(o)).collect(),
                commits: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn committed(&self, offsets: &[Offset]) {
        for (slot, &o) in self.inner.committed.iter().zip(offsets) {
            slot.store(o, Ordering::Release);
        }
        self.inner.commits.fetch_add(1, Ordering::AcqRel);
    }

    /// The committed offsets as the sink last reported them.
    pub fn committed_offsets(&self) -> Vec<Offset> {
        self.inner
            .committed
            .iter()
            .map(|o| o.load(Ordering::Acquire))
            .collect()
    }

    /// Compares the committed offsets with the pipeline's high watermarks and
    /// reads the first unlanded event of each lagging partition for its age.
    pub async fn lag(&self, pipeline: &dyn Pipeline) -> Result<SinkLag> {
        let mut events = 0;
        let mut oldest_us = i64::MAX;
        for (p, committed) in (0u32..).zip(self.committed_offsets()) {
            let head = pipeline
                .high_watermark(p)
                .await
                .map_err(|source| Error::Pipeline { cause: source })?;
            if head <= committed {
                continue;
            }
            events += head - committed;
            let first = pipeline
                .read(p, committed, 1, Duration::ZERO)
                .await
                .map_err(|source| Error::Pipeline { cause: source })?;
            if let Some(record) = first.first() {
                oldest_us = oldest_us.min(record.event.timestamp_us);
            }
        }
        let seconds = if oldest_us == i64::MAX {
            0.0
        } else {
            (now_us().saturating_sub(oldest_us)).max(0) as f64 / 1e6
        };
        Ok(SinkLag {
            events,
            seconds,
            commits: self.inner.commits.load(Ordering::Acquire),
        })
    }
}
