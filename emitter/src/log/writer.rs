//! The group-commit writer: one thread owns every active segment.
//!
//! Callers encode their events into frames (in parallel, on their own tasks)
//! and send one request per `append`. Each round the writer takes every
//! request that is waiting, gathers their frames per partition and issues one
//! `writev` per touched partition (plus one per segment rollover),
//! fsyncs the touched files once and concurrently (`FsyncPolicy::Always`),
//! then publishes the new committed lengths and high watermarks to readers
//! and only then answers the requests. A reader can therefore never see a
//! record that a crash could take back, and an acknowledged record is on disk.
//!
//! Any write or fsync error poisons the log: after a failed fsync the kernel
//! may have dropped the dirty pages and cleared the error, so what is on disk
//! is unknown and only a reopen (which scans the tail) can tell.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::mem;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use floe_engine::Offset;
use tokio::sync::oneshot;

use super::frame;
use super::segment::{self, INDEX_INTERVAL, IndexEntry, Segment};
use super::{FsyncPolicy, Shared};
use crate::error::{Error, Result};

/// A round stops taking requests once it holds this many bytes.
const MAX_ROUND_BYTES: usize = 64 << 20;

/// Most threads that write and fsync a round's files concurrently. Fsyncs in
/// parallel share journal commits and keep the device's queue full: on the
/// development VM (ext4 on virtio, ~4 ms per fsync) 16 partitions took 60 ms
/// to fsync one after the other and about 5 ms four at a time, and the
/// throughput example with 16 partitions went from about 120k events/s with
/// 2 threads to 370k-480k with 16.
const SYNC_THREADS: usize = 16;

/// Without fsync, writes go parallel only from this many bytes in a round
/// (thread start-up costs tens of microseconds), on at most as many threads
/// as there are cores.
const PARALLEL_WRITE_BYTES: usize = 1 << 20;

/// What the writer thread is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    Append(AppendRequest),
    /// Sync what is pending, release the directory and stop.
    Close(oneshot::Sender<Result<()>>),
}

/// The frames of one `append`, grouped by partition.
#[derive(Debug)]
pub(super) struct AppendRequest {
    pub(super) frames: Vec<u8>,
    pub(super) chunks: Vec<Chunk>,
    /// Answered with the first offset of each chunk.
    pub(super) reply: oneshot::Sender<Result<Vec<Offset>>>,
}

/// Consecutive frames of `AppendRequest::frames` bound for one partition.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) partition: u32,
    pub(super) range: Range<usize>,
}

/// A segment as written, possibly ahead of what readers see.
#[derive(Debug)]
struct Tail {
    base: Offset,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes, including those staged but not yet written.
    len: u64,
    records: u64,
    /// Index entries not yet published.
    new_index: Vec<IndexEntry>,
    last_indexed: u64,
}

impl Tail {
    fn of(segment: &Segment) -> Tail {
        Tail {
            base: segment.base,
            path: segment.path.clone(),
            file: Arc::clone(&segment.file),
            len: segment.len,
            records: segment.records,
            new_index: Vec::new(),
            last_indexed: segment.index.last().map_or(0, |e| e.pos),
        }
    }
}

#[derive(Debug)]
struct PartitionWriter {
    dir: PathBuf,
    active: Tail,
    /// Segments sealed this round, not yet published.
    sealed: Vec<Tail>,
    /// Frames for `active` not yet written: (request, byte range) of the round.
    pending: Vec<(usize, Range<usize>)>,
    pending_bytes: usize,
    /// Written this round: publish at commit.
    touched: bool,
    /// Written since the active segment was last fsync'd.
    unsynced: bool,
}

impl PartitionWriter {
    fn next_offset(&self) -> Offset {
        self.active.base + self.active.records
    }

    /// Stages the frames of `batch[request]` in `range` (whole frames) for
    /// the active segment, rolling over to new segments at `segment_bytes`.
    fn stage(
        &mut self,
        batch: &[AppendRequest],
        request: usize,
        range: Range<usize>,
        segment_bytes: u64,
        policy: FsyncPolicy,
    ) -> Result<()> {
        let frames = &batch[request].frames;
        let mut run_start = range.start;
        let mut at = range.start;
        while at < range.end {
            let len = frame::frame_len(&frames[at..]);
            if self.active.len > 0 && self.active.len + len as u64 > segment_bytes {
                self.pending.push((request, run_start..at));
                self.pending_bytes += at - run_start;
                run_start = at;
                self.roll(batch, policy)?;
            }
            let pos = self.active.len;
            if pos - self.active.last_indexed >= INDEX_INTERVAL {
                self.active.new_index.push(IndexEntry {
                    offset: self.next_offset(),
                    pos,
                });
                self.active.last_indexed = pos;
            }
            self.active.len += len as u64;
            self.active.records += 1;
            at += len;
        }
        self.pending.push((request, run_start..range.end));
        self.pending_bytes += range.end - run_start;
        self.touched = true;
        Ok(())
    }

    /// Writes the pending frames to the active segment in one `writev`.
    fn flush(&mut self, batch: &[AppendRequest]) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = self
            .pending
            .drain(..)
            .filter(|(_, range)| !range.is_empty())
            .map(|(request, range)| IoSlice::new(&batch[request].frames[range]))
            .collect();
        self.pending_bytes = 0;
        write_all_vectored(&self.active.file, &mut slices)
            .map_err(|e| Error::io("writing segment", &self.active.path, e))?;
        self.unsynced = true;
        Ok(())
    }

    /// Fsyncs the active segment.
    fn sync(&mut self) -> Result<()> {
        self.active
            .file
            .sync_data()
            .map_err(|e| Error::io("fsyncing segment", &self.active.path, e))?;
        self.unsynced = false;
        Ok(())
    }

    /// Seals the active segment and starts the next one. Unless the policy is
    /// `Never`, the sealed segment is fsync'd before the new one gets a byte,
    /// so that after a crash only the last segment of a partition can be torn.
    fn roll(&mut self, batch: &[AppendRequest], policy: FsyncPolicy) -> Result<()> {
        self.flush(batch)?;
        if policy != FsyncPolicy::Never {
            self.sync()?;
        }
        let base = self.next_offset();
        let (path, file) = segment::create(&self.dir, base)?;
        if policy != FsyncPolicy::Never {
            segment::sync_dir(&self.dir)?;
        }
        let next = Tail {
            base,
            path,
            file: Arc::new(file),
            len: 0,
            records: 0,
            new_index: Vec::new(),
            last_indexed: 0,
        };
        self.sealed.push(mem::replace(&mut self.active, next));
        Ok(())
    }

    /// Makes this round's segments visible to readers.
    fn publish(&mut self, segments: &mut Vec<Segment>) {
        for tail in self.sealed.iter_mut().chain(Some(&mut self.active)) {
            match segments.last_mut() {
                Some(last) if last.base == tail.base => {
                    last.len = tail.len;
                    last.records = tail.records;
                    last.index.append(&mut tail.new_index);
                }
                _ => segments.push(Segment {
                    base: tail.base,
                    path: tail.path.clone(),
                    file: Arc::clone(&tail.file),
                    len: tail.len,
                    records: tail.records,
                    index: mem::take(&mut tail.new_index),
                }),
            }
        }
        self.sealed.clear();
        self.touched = false;
    }
}

/// The writer thread's state.
#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Command>,
    policy: FsyncPolicy,
    segment_bytes: u64,
    parts: Vec<PartitionWriter>,
    last_sync: Instant,
    /// Threads for writes without fsync.
    cores: usize,
    /// Held until the writer stops: the directory stays ours while it writes.
    _lock: File,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Command>,
        lock: File,
        dirs: Vec<PathBuf>,
    ) -> Writer {
        let parts = shared
            .partitions
            .iter()
            .zip(dirs)
            .map(|(partition, dir)| {
                let state = partition.lock();
                PartitionWriter {
                    dir,
                    active: Tail::of(state.segments.last().expect("a partition has a segment")),
                    sealed: Vec::new(),
                    pending: Vec::new(),
                    pending_bytes: 0,
                    touched: false,
                    unsynced: false,
                }
            })
            .collect();
        Writer {
            policy: shared.options.fsync,
            segment_bytes: shared.options.segment_bytes,
            shared,
            rx,
            parts,
            last_sync: Instant::now(),
            cores: thread::available_parallelism().map_or(1, usize::from),
            _lock: lock,
        }
    }

    /// Runs rounds until closed, disconnected or poisoned.
    pub(super) fn run(mut self) {
        while let Some(first) = self.next_command() {
            let mut batch = Vec::new();
            let mut close = None;
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(request) => {
                        bytes += request.frames.len();
                        batch.push(request);
                    }
                    Command::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if bytes < MAX_ROUND_BYTES {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() && !self.round(batch) {
                return; // poisoned: dropping the receiver fails the queued requests
            }
            if let FsyncPolicy::Interval(every) = self.policy
                && self.last_sync.elapsed() >= every
                && self.sync_or_poison().is_err()
            {
                return;
            }
            if let Some(reply) = close {
                let result = self.sync_on_close();
                drop(self); // releases the lock before `close` returns
                let _ = reply.send(result);
                return;
            }
        }
        // Every `FileLog` handle is gone (or an interval fsync poisoned the
        // log): sync like a close would, unless poisoned.
        if self.shared.poisoned.get().is_none() {
            let _ = self.sync_on_close();
        }
    }

    /// Waits for a command; with `FsyncPolicy::Interval`, fsyncs when the
    /// interval passes while idle. `None` when the log is gone or poisoned.
    fn next_command(&mut self) -> Option<Command> {
        loop {
            let every = match self.policy {
                FsyncPolicy::Interval(every) if self.parts.iter().any(|p| p.unsynced) => every,
                _ => return self.rx.recv().ok(),
            };
            let wait = every.saturating_sub(self.last_sync.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(RecvTimeoutError::Timeout) => self.sync_or_poison().ok()?,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Writes, syncs, publishes and answers one round; false if it poisoned the log.
    fn round(&mut self, batch: Vec<AppendRequest>) -> bool {
        match self.write(&batch) {
            Ok(firsts) => {
                for (i, part) in self.parts.iter_mut().enumerate() {
                    if part.touched {
                        let high = {
                            let mut state = self.shared.partitions[i].lock();
                            part.publish(&mut state.segments);
                            part.next_offset()
                        };
                        self.shared.partitions[i].high.send_replace(high);
                    }
                }
                for (request, firsts) in batch.into_iter().zip(firsts) {
                    self.shared.recycle(request.frames);
                    let _ = request.reply.send(Ok(firsts));
                }
                true
            }
            Err(e) => {
                let reason = self.shared.poison(&e);
                for request in batch {
                    let _ = request.reply.send(Err(Error::Poisoned {
                        reason: reason.clone(),
                    }));
                }
                false
            }
        }
    }

    fn write(&mut self, batch: &[AppendRequest]) -> Result<Vec<Vec<Offset>>> {
        let mut firsts = Vec::with_capacity(batch.len());
        for (i, request) in batch.iter().enumerate() {
            let mut offsets = Vec::with_capacity(request.chunks.len());
            for chunk in &request.chunks {
                let part = &mut self.parts[chunk.partition as usize];
                offsets.push(part.next_offset());
                part.stage(
                    batch,
                    i,
                    chunk.range.clone(),
                    self.segment_bytes,
                    self.policy,
                )?;
            }
            firsts.push(offsets);
        }
        self.flush_and_sync(batch, self.policy == FsyncPolicy::Always)?;
        Ok(firsts)
    }

    /// Fsyncs every active segment written since its last fsync.
    fn sync(&mut self) -> Result<()> {
        self.flush_and_sync(&[], true)
    }

    /// Writes each partition's pending frames and, if `sync`, fsyncs each
    /// partition written since its last fsync. Partitions are spread over
    /// threads when there is enough to do: concurrent fsyncs share journal
    /// commits, and without fsync the kernel's copy into the page cache is
    /// the bottleneck of a single thread.
    fn flush_and_sync(&mut self, batch: &[AppendRequest], sync: bool) -> Result<()> {
        let mut dirty: Vec<&mut PartitionWriter> = self
            .parts
            .iter_mut()
            .filter(|p| !p.pending.is_empty() || (sync && p.unsynced))
            .collect();
        let bytes: usize = dirty.iter().map(|p| p.pending_bytes).sum();
        let work = |part: &mut PartitionWriter| -> Result<()> {
            part.flush(batch)?;
            if sync { part.sync() } else { Ok(()) }
        };
        let threads = match sync {
            true => dirty.len().min(SYNC_THREADS),
            false if bytes < PARALLEL_WRITE_BYTES => 1,
            false => dirty.len().min(self.cores),
        };
        if threads <= 1 {
            dirty.iter_mut().try_for_each(|p| work(p))?;
        } else {
            let mut stripes: Vec<Vec<&mut PartitionWriter>> =
                (0..threads).map(|_| Vec::new()).collect();
            for (i, part) in dirty.into_iter().enumerate() {
                stripes[i % threads].push(part);
            }
            let work = &work;
            thread::scope(|scope| {
                let handles: Vec<_> = stripes
                    .into_iter()
                    .map(|stripe| scope.spawn(move || stripe.into_iter().try_for_each(work)))
                    .collect();
                // The scope joins every thread even if one failed early.
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("log I/O thread panicked"))
            })?;
        }
        if sync {
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn sync_or_poison(&mut self) -> Result<(), ()> {
        self.sync().map_err(|e| {
            self.shared.poison(&e);
        })
    }

    fn sync_on_close(&mut self) -> Result<()> {
        if self.policy == FsyncPolicy::Never {
            return Ok(());
        }
        self.sync().map_err(|e| Error::Poisoned {
            reason: self.shared.poison(&e),
        })
    }
}

/// `write_all` for several buffers (`Write::write_all_vectored` is unstable).
fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The directories of the writer's partitions, in partition order.
pub(super) fn partition_dirs(dir: &Path, partitions: u32) -> Vec<PathBuf> {
    (0..partitions)
        .map(|p| super::store::partition_dir(dir, p))
        .collect()
}
