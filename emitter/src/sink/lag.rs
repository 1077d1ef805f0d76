//! How far the lake is behind the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use floe_engine::{Offset, Pipeline};

use crate::error::{Error, Result};

/// Sink lag: what the pipeline holds that the lake does not yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkLag {
    /// Events appended to the pipeline but not yet committed to Iceberg.
    pub events: u64,
    /// Seconds since the lake last held everything the pipeline had (0 when
    /// it does now).
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
    caught_up_ms: AtomicU64,
    commits: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl LagHandle {
    pub(crate) fn new(committed: &[Offset]) -> Self {
        LagHandle {
            inner: Arc::new(LagState {
                committed: committed.iter().map(|&o| AtomicU64::new(o)).collect(),
                caught_up_ms: AtomicU64::new(now_ms()),
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

    pub(crate) fn caught_up(&self) {
        self.inner.caught_up_ms.store(now_ms(), Ordering::Release);
    }

    /// The committed offsets as the sink last reported them.
    pub fn committed_offsets(&self) -> Vec<Offset> {
        self.inner
            .committed
            .iter()
            .map(|o| o.load(Ordering::Acquire))
            .collect()
    }

    /// Compares the committed offsets with the pipeline's high watermarks.
    pub async fn lag(&self, pipeline: &dyn Pipeline) -> Result<SinkLag> {
        let mut events = 0;
        for (p, committed) in (0u32..).zip(self.committed_offsets()) {
            let head = pipeline
                .high_watermark(p)
                .await
                .map_err(|source| Error::Pipeline { source })?;
            events += head.saturating_sub(committed);
        }
        let seconds = if events == 0 {
            0.0
        } else {
            now_ms().saturating_sub(self.inner.caught_up_ms.load(Ordering::Acquire)) as f64 / 1000.0
        };
        Ok(SinkLag {
            events,
            seconds,
            commits: self.inner.commits.load(Ordering::Acquire),
        })
    }
}
