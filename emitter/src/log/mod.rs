//! The embedded segment log: floe's [`Pipeline`] on one machine.
//!
//! Each partition is a directory of segment files named by the offset of their
//! first record (`dir/p-0000/00000000000000000000.seg`). A segment is a run of
//! frames (`u32 length | u32 CRC-32 | codec bytes`, see `frame.rs`); a record's
//! offset is implicit, the segment's base offset plus its index, so the files
//! hold no offsets and recovery only counts frames.
//!
//! Writes go through one writer thread that group-commits every pending
//! `append` (see `writer.rs`); readers use positioned reads on shared file
//! handles, seek with a sparse in-memory index and see only committed records.
//! Opening scans every segment (checksums, index, counts), truncates a torn
//! tail in the last segment of each partition and refuses any other damage
//! with [`Error::CorruptRecord`]; [`LogRepair`] rebuilds a damaged partition
//! from the lake and the valid frames (`docs/embedded-log.md`, "What floe
//! refuses, repairs and truncates").

mod batch;
mod frame;
mod gaps;
mod options;
mod repair;
mod segment;
mod store;
mod writer;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use async_trait::async_trait;
use floe_engine::{Event, Offset, Pipeline, Record};
use tokio::sync::{oneshot, watch};

use self::batch::Batch;
pub use self::options::{FsyncPolicy, LogOptions};
pub use self::repair::{
    DamagedRegion, LogRepair, LostRange, PartitionScan, RepairPlan, RepairReport, TornTail,
};
use self::segment::{ReadSlice, Segment};
use self::writer::{AppendRequest, Command, Writer};
use crate::error::{Error, Result};

/// The embedded, file-backed [`Pipeline`]: partitioned segment files in one
/// directory with group commit. See the module documentation for the layout.
///
/// The inherent methods return this crate's [`Error`]; the [`Pipeline`]
/// implementation converts them to `floe_engine::Error::Pipeline`.
pub struct FileLog {
    shared: Arc<Shared>,
    tx: Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by the handle, the writer thread and readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    partitions: Vec<Partition>,
    closed: AtomicBool,
    /// Why the log refuses appends, once a write or fsync has failed.
    poisoned: OnceLock<String>,
    /// Frame buffers handed back by the writer, reused by `append` to avoid
    /// fresh (page-faulting) allocations on the hot path.
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse, and the largest one kept.
const POOLED_BUFFERS: usize = 64;
const POOLED_BUFFER_BYTES: usize = 4 << 20;

impl Shared {
    fn buffer(&self) -> Vec<u8> {
        let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        buffers.pop().unwrap_or_default()
    }

    fn recycle(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() <= POOLED_BUFFER_BYTES {
            buffer.clear();
            let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
            if buffers.len() < POOLED_BUFFERS {
                buffers.push(buffer);
            }
        }
    }

    /// Poisons the log (the first reason sticks) and returns the reason.
    fn poison(&self, error: &Error) -> String {
        let reason = self.poisoned.get_or_init(|| error.to_string()).clone();
        tracing::error!(dir = %self.dir.display(), %reason, "the log is poisoned");
        reason
    }

    /// The error for a request the writer did not answer.
    fn stopped(&self) -> Error {
        match self.poisoned.get() {
            Some(reason) => Error::Poisoned {
                reason: reason.clone(),
            },
            None => Error::Closed,
        }
    }

    /// Wakes every waiting reader (they then see `closed`).
    fn wake_readers(&self) {
        for partition in &self.partitions {
            partition.high.send_modify(|_| {});
        }
    }
}

#[derive(Debug)]
struct Partition {
    state: Mutex<PartitionState>,
    /// The committed high watermark, for readers waiting at the end.
    high: watch::Sender<Offset>,
}

impl Partition {
    fn lock(&self) -> MutexGuard<'_, PartitionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What readers see of a partition: committed records only.
#[derive(Debug)]
struct PartitionState {
    /// In offset order; never empty; the last one is (or was, until the
    /// writer's next publish) the active segment and is never deleted.
    segments: Vec<Segment>,
}

impl PartitionState {
    fn low(&self) -> Offset {
        self.segments[0].base
    }

    fn high(&self) -> Offset {
        self.segments.last().map_or(0, Segment::end_offset)
    }
}

impl FileLog {
    /// Opens the log in `dir`, creating it with `options.partitions`
    /// partitions if it does not exist, and recovers it: every segment is
    /// scanned, a torn tail in the last segment of a partition is truncated
    /// (and logged), any other damage is an error.
    ///
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn open(dir: &Path, options: LogOptions) -> Result<FileLog> {
        options.validate()?;
        let store = store::open(dir, options.partitions)?;
        let partitions = store
            .partitions
            .into_iter()
            .map(|segments| {
                let state = PartitionState { segments };
                Partition {
                    high: watch::Sender::new(state.high()),
                    state: Mutex::new(state),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            partitions,
            closed: AtomicBool::new(false),
            poisoned: OnceLock::new(),
            buffers: Mutex::new(Vec::new()),
        });
        let (tx, rx) = mpsc::channel();
        let dirs = writer::partition_dirs(dir, shared.options.partitions);
        let writer = Writer::new(Arc::clone(&shared), rx, store.lock, dirs);
        let handle = thread::Builder::new()
            .name("floe-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io("starting the writer thread for", dir, e))?;
        Ok(FileLog {
            shared,
            tx,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The segment files of `partition` of the log in `log_dir`, `(base
    /// offset, path)` in offset order; the last is the active one. What an
    /// erase reports as the places an entity's events still are.
    pub fn segment_files(log_dir: &Path, partition: u32) -> Result<Vec<(Offset, PathBuf)>> {
        let dir = store::partition_dir(log_dir, partition);
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("listing segments in", &dir, e))?;
        let mut segments = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing segments in", &dir, e))?;
            let name = entry.file_name();
            if let Some(base) = name.to_str().and_then(segment::parse_file_name) {
                segments.push((base, entry.path()));
            }
        }
        segments.sort();
        Ok(segments)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.shared.options
    }

    /// Appends events durably (per the [`FsyncPolicy`]), returning their
    /// offsets in input order. Each event goes to `partition_for(key_hash)`.
    pub async fn append(&self, events: &[Event]) -> Result<Vec<Offset>> {
        self.check_open()?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let frames = self.shared.buffer();
        let (batch, frames, chunks) =
            Batch::encode(events, self.shared.options.partitions, frames)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            frames,
            chunks,
            reply,
        };
        self.tx
            .send(Command::Append(request))
            .map_err(|_| self.shared.stopped())?;
        let firsts = answer.await.map_err(|_| self.shared.stopped())??;
        Ok(batch.offsets(&firsts))
    }

    /// Reads up to `max` records of `partition` from offset `from`, waiting up
    /// to `wait` for an append when `from` is the high watermark.
    pub async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        let part = self.partition(partition)?;
        let slices = match self.plan(part, partition, from, max)? {
            Some(slices) => slices,
            None if wait.is_zero() || max == 0 => return Ok(Vec::new()),
            None => {
                let mut high = part.high.subscribe();
                let closed = &self.shared.closed;
                // Dropped at once: the watch guard must not live across an await.
                let _ = tokio::time::timeout(
                    wait,
                    high.wait_for(|&h| h > from || closed.load(Ordering::Acquire)),
                )
                .await;
                self.check_readable()?;
                match self.plan(part, partition, from, max)? {
                    Some(slices) => slices,
                    None => return Ok(Vec::new()),
                }
            }
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(max.min(4096));
            for slice in slices {
                slice.read(partition, from, max, &mut out)?;
            }
            Ok(out)
        })
        .await
        .unwrap_or_else(blocking_task_failed)
    }

    /// The offset the next record of `partition` will get (committed records only).
    pub fn high_watermark(&self, partition: u32) -> Result<Offset> {
        Ok(self.partition(partition)?.lock().high())
    }

    /// The lowest offset of `partition` still stored.
    pub fn low_watermark(&self, partition: u32) -> Result<Offset> {
        Ok(self.partition(partition)?.lock().low())
    }

    /// Deletes the segments of `partition` whose every record is below
    /// `offset`, never the active one, and returns the new low watermark.
    pub async fn delete_before(&self, partition: u32, offset: Offset) -> Result<Offset> {
        let part = self.partition(partition)?;
        let (removed, low) = {
            let mut state = part.lock();
            let sealed = state.segments.len() - 1;
            let n = state.segments[..sealed].partition_point(|s| s.end_offset() <= offset);
            let removed: Vec<PathBuf> = state.segments.drain(..n).map(|s| s.path).collect();
            (removed, state.low())
        };
        if !removed.is_empty() {
            tokio::task::spawn_blocking(move || {
                removed.iter().try_for_each(|path| {
                    fs::remove_file(path).map_err(|e| Error::io("deleting segment", path, e))
                })
            })
            .await
            .unwrap_or_else(blocking_task_failed)?;
        }
        Ok(low)
    }

    /// Waits for pending appends, fsyncs (unless [`FsyncPolicy::Never`]),
    /// stops the writer and releases the directory. Every later call fails
    /// with [`Error::Closed`]; closing twice is a no-op.
    pub async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.wake_readers();
        let (reply, answer) = oneshot::channel();
        let result = match self.tx.send(Command::Close(reply)) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(self.shared.stopped())),
            Err(_) => Err(self.shared.stopped()),
        };
        self.join_writer();
        result
    }

    fn join_writer(&self) {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The writer answers `Close` as its very last act.
            let _ = handle.join();
        }
    }

    fn check_readable(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        self.check_readable()?;
        match self.shared.poisoned.get() {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn partition(&self, partition: u32) -> Result<&Partition> {
        self.check_readable()?;
        self.shared
            .partitions
            .get(partition as usize)
            .ok_or(Error::UnknownPartition {
                partition,
                partitions: self.shared.options.partitions,
            })
    }

    /// What to read for `from`, or `None` when `from` is the high watermark.
    fn plan(
        &self,
        part: &Partition,
        partition: u32,
        from: Offset,
        max: usize,
    ) -> Result<Option<Vec<ReadSlice>>> {
        let state = part.lock();
        let (low, high) = (state.low(), state.high());
        Error::check_read_range(partition, from, low, high)?;
        if from == high {
            return Ok(None);
        }
        let first = state.segments.partition_point(|s| s.end_offset() <= from);
        let mut remaining = max as u64;
        let mut slices = Vec::new();
        for segment in &state.segments[first..] {
            if remaining == 0 {
                break;
            }
            let start = from.max(segment.base);
            slices.push(ReadSlice::of(segment, start));
            remaining -= remaining.min(segment.end_offset() - start);
        }
        Ok(Some(slices))
    }
}

/// What opening the log decides about one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentVerdict {
    /// Every byte belongs to a valid frame.
    Clean,
    /// A torn tail from byte `at` on, which opening truncates.
    TornTail {
        /// Where the torn bytes start.
        at: u64,
        /// What they look like.
        reason: String,
    },
    /// Corruption at byte `at`: opening refuses.
    Corrupt {
        /// Where the damage starts.
        at: u64,
        /// Why it is not a torn tail.
        reason: String,
    },
}

/// [`check_segment`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// Byte ranges of the payloads of the valid frames before the verdict's
    /// position, in order.
    pub payloads: Vec<std::ops::Range<usize>>,
    /// How the frames end.
    pub verdict: SegmentVerdict,
}

/// Checks the bytes of a segment file exactly as opening the log does, with
/// `last` telling whether it is the last (active) segment of its partition.
/// Pure and in memory: for tests and the fuzz targets in `fuzz/`.
pub fn check_segment(bytes: &[u8], last: bool) -> SegmentCheck {
    let mut payloads = Vec::new();
    let checked = segment::check(
        bytes,
        Path::new("<memory>"),
        bytes.len() as u64,
        0,
        last,
        |pos, payload| {
            let start = pos as usize + frame::HEADER_LEN;
            payloads.push(start..start + payload.len());
        },
    )
    .expect("reads from memory within its length cannot fail");
    let verdict = match checked.outcome {
        segment::Outcome::Clean => SegmentVerdict::Clean,
        segment::Outcome::Torn { pos, reason } => SegmentVerdict::TornTail { at: pos, reason },
        segment::Outcome::Corrupt { pos, reason } => SegmentVerdict::Corrupt { at: pos, reason },
    };
    SegmentCheck { payloads, verdict }
}

/// A blocking task that did not finish: re-raise its panic; otherwise the
/// runtime is shutting down.
fn blocking_task_failed<T>(e: tokio::task::JoinError) -> Result<T> {
    match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => Err(Error::Closed),
    }
}

impl Drop for FileLog {
    /// Stops the writer as `close` would (blocking until it has synced).
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.shared.wake_readers();
            let (reply, _) = oneshot::channel();
            let _ = self.tx.send(Command::Close(reply));
        }
        self.join_writer();
    }
}

impl fmt::Debug for FileLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLog")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.options)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .field("poisoned", &self.shared.poisoned.get())
            .finish()
    }
}

#[async_trait]
impl Pipeline for FileLog {
    fn partitions(&self) -> u32 {
        self.shared.options.partitions
    }

    async fn append(&self, events: &[Event]) -> floe_engine::Result<Vec<Offset>> {
        Ok(FileLog::append(self, events).await?)
    }

    async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> floe_engine::Result<Vec<Record>> {
        Ok(FileLog::read(self, partition, from, max, wait).await?)
    }

    async fn high_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        Ok(FileLog::high_watermark(self, partition)?)
    }

    async fn low_watermark(&self, partition: u32) -> floe_engine::Result<Offset> {
        Ok(FileLog::low_watermark(self, partition)?)
    }

    async fn delete_before(&self, partition: u32, offset: Offset) -> floe_engine::Result<Offset> {
        Ok(FileLog::delete_before(self, partition, offset).await?)
    }

    async fn close(&self) -> floe_engine::Result<()> {
        Ok(FileLog::close(self).await?)
    }
}
