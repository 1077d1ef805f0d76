//! The pipeline tail: every event of a partition between two offsets, read
//! chunk by chunk (the per-partition watermark loop, written once).
//!
//! Only the pipeline is read here, so errors are the pipeline's own
//! ([`floe_engine::Error`]), unwrapped.

use std::sync::Arc;
use std::time::Duration;

use floe_engine::{Offset, Pipeline, Record, Result};

/// Reads one partition from `from` up to `to` (exclusive), at most `chunk`
/// events per pipeline call, never waiting for appends.
#[derive(Debug)]
pub struct PartitionTail {
    partition: u32,
    offset: Offset,
    end: Offset,
    chunk: usize,
}

impl PartitionTail {
    /// The tail of `partition` in `[from, to)`.
    pub fn new(partition: u32, from: Offset, to: Offset, chunk: usize) -> Self {
        PartitionTail {
            partition,
            offset: from,
            end: to,
            chunk: chunk.max(1),
        }
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The next chunk, `None` once `to` is reached (or the partition ends
    /// early, which only a pipeline that lost events could do).
    pub async fn next(&mut self, pipeline: &dyn Pipeline) -> Result<Option<Vec<Record>>> {
        if self.offset >= self.end {
            return Ok(None);
        }
        let max = self.chunk.min((self.end - self.offset) as usize);
        let mut records = pipeline
            .read(self.partition, self.offset, max, Duration::ZERO)
            .await?;
        let Some(last) = records.last() else {
            self.offset = self.end;
            return Ok(None);
        };
        self.offset = last.offset + 1;
        records.retain(|r| r.offset < self.end);
        Ok(Some(records))
    }
}

/// Every partition's tail in turn, from `from[p]` up to `to[p]`.
#[derive(Debug)]
pub struct PipelineTail {
    pipeline: Arc<dyn Pipeline>,
    tails: std::vec::IntoIter<PartitionTail>,
    current: Option<PartitionTail>,
    read: u64,
}

impl PipelineTail {
    /// The tails of all partitions between two offset vectors.
    pub fn new(pipeline: Arc<dyn Pipeline>, from: &[Offset], to: &[Offset], chunk: usize) -> Self {
        let tails: Vec<PartitionTail> = (0u32..)
            .zip(from.iter().zip(to))
            .map(|(p, (&start, &end))| PartitionTail::new(p, start, end, chunk))
            .collect();
        let mut tails = tails.into_iter();
        let current = tails.next();
        PipelineTail {
            pipeline,
            tails,
            current,
            read: 0,
        }
    }

    /// The next chunk of some partition, `None` when every tail is read.
    pub async fn next(&mut self) -> Result<Option<Vec<Record>>> {
        while let Some(tail) = &mut self.current {
            if let Some(records) = tail.next(&*self.pipeline).await? {
                self.read += records.len() as u64;
                return Ok(Some(records));
            }
            self.current = self.tails.next();
        }
        Ok(None)
    }

    /// Events read so far.
    pub fn events_read(&self) -> u64 {
        self.read
    }
}

/// The offset the next append of each partition gets: where a tail read
/// now ends.
pub async fn heads(pipeline: &dyn Pipeline) -> Result<Vec<Offset>> {
    let mut heads = Vec::with_capacity(pipeline.partitions() as usize);
    for p in 0..pipeline.partitions() {
        heads.push(pipeline.high_watermark(p).await?);
    }
    Ok(heads)
}

/// The lowest readable offset of each partition (above 0 once retention has
/// deleted landed events).
pub async fn low_watermarks(pipeline: &dyn Pipeline) -> Result<Vec<Offset>> {
    let mut lows = Vec::with_capacity(pipeline.partitions() as usize);
    for p in 0..pipeline.partitions() {
        lows.push(pipeline.low_watermark(p).await?);
    }
    Ok(lows)
}
