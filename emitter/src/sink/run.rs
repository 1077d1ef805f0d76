//! The sink loop: tail every pipeline partition from the committed offsets,
//! write Parquet, commit data files and offsets in one snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_engine::{Offset, Pipeline, Record};
use iceberg::spec::DataFile;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::catalog::Lake;
use super::commit::{CommittedOffsets, Lease};
use super::fence::CommitFence;
use super::lag::LagHandle;
use super::options::SinkOptions;
use super::writer::DataWriter;
use crate::error::{Error, Result};

/// Points in a landing round where a test can stop the sink as a crash would
/// (`failpoints` feature).
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkPhase {
    /// Data files are written to the warehouse; nothing is committed yet.
    FilesWritten,
    /// The snapshot with the files and offsets is committed; retention has
    /// not run and the sink's own bookkeeping is not updated.
    Committed,
}

#[cfg(feature = "failpoints")]
impl SinkPhase {
    /// The phase's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkPhase::FilesWritten => "files written, before commit",
            SinkPhase::Committed => "committed, before bookkeeping",
        }
    }
}

/// Called at every [`SinkPhase`]; an error stops the sink right there, as a
/// crash would (nothing after that point runs).
#[cfg(feature = "failpoints")]
pub type SinkHook = Arc<dyn Fn(SinkPhase) -> Result<()> + Send + Sync>;

/// Figures of what a sink landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LandStats {
    /// Events committed.
    pub events: u64,
    /// Iceberg commits with data.
    pub commits: u64,
    /// Data files committed.
    pub files: u64,
    /// Bytes of data files committed.
    pub bytes: u64,
}

impl LandStats {
    fn add(&mut self, other: LandStats) {
        self.events += other.events;
        self.commits += other.commits;
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// The only committer of `floe.events`: lands a pipeline exactly once.
pub struct Sink {
    lake: Lake,
    pipeline: Arc<dyn Pipeline>,
    options: SinkOptions,
    lease: Lease,
    writer: DataWriter,
    committed: CommittedOffsets,
    /// Next offset to read per partition (>= committed while a batch is open).
    read: Vec<Offset>,
    buffer: Vec<Record>,
    buffered_bytes: usize,
    first_buffered: Option<Instant>,
    last_renewal: Instant,
    /// A sealed batch whose files are being written, not yet committed.
    pending: Option<Pending>,
    lag: LagHandle,
    #[cfg(feature = "failpoints")]
    hook: Option<SinkHook>,
}

/// A sealed batch: its file-writing task and the offsets that end it.
struct Pending {
    write: JoinHandle<Result<Vec<DataFile>>>,
    next: Vec<Offset>,
    events: u64,
}

impl Drop for Pending {
    /// A sink dropped mid-batch (a crash) stops writing; the files it wrote
    /// are orphans that no snapshot references.
    fn drop(&mut self) {
        self.write.abort();
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("lake", &self.lake)
            .field("committed", &self.committed)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Takes the commit lease (failing with [`Error::Fenced`] if another sink
    /// holds it) and resumes from the offsets of the newest snapshot.
    pub async fn start(
        lake: Lake,
        pipeline: Arc<dyn Pipeline>,
        options: SinkOptions,
    ) -> Result<Sink> {
        Self::start_fenced(lake, pipeline, options, None).await
    }

    /// [`Sink::start`] for a sink elected outside the lake: `fence` is asked
    /// before every commit, and a fresh lease of another owner is taken over
    /// (the election deposed it; see [`CommitFence`]). Resumes from the
    /// offsets of the newest snapshot, as every sink does.
    pub async fn start_fenced(
        lake: Lake,
        pipeline: Arc<dyn Pipeline>,
        options: SinkOptions,
        fence: Option<Arc<dyn CommitFence>>,
    ) -> Result<Sink> {
        options.validate()?;
        let lease = Lease::acquire(&lake, &options.instance, options.lease, fence).await?;
        let table = lake.load_table().await?;
        let committed = CommittedOffsets::of(&table, pipeline.partitions())?;
        let writer = DataWriter::new(&table, options.target_file_bytes, options.zstd_level)?;
        tracing::info!(offsets = ?committed.offsets, snapshot = ?committed.snapshot_id, "sink resumes");
        Ok(Sink {
            lag: LagHandle::new(&committed.offsets),
            read: committed.offsets.clone(),
            committed,
            lake,
            pipeline,
            options,
            lease,
            writer,
            buffer: Vec::new(),
            buffered_bytes: 0,
            first_buffered: None,
            last_renewal: Instant::now(),
            pending: None,
            #[cfg(feature = "failpoints")]
            hook: None,
        })
    }

    /// Installs a hook called at every [`SinkPhase`] (crash tests).
    #[cfg(feature = "failpoints")]
    pub fn with_hook(mut self, hook: SinkHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// A handle that reports this sink's lag while it runs.
    pub fn lag_handle(&self) -> LagHandle {
        self.lag.clone()
    }

    /// The offsets committed so far (next offset per partition).
    pub fn committed(&self) -> &CommittedOffsets {
        &self.committed
    }

    /// Lands everything up to the pipeline's current head, committing whenever
    /// a batch reaches the size limit, then returns.
    pub async fn land_to_head(&mut self) -> Result<LandStats> {
        let mut heads = Vec::with_capacity(self.read.len());
        for p in 0..self.pipeline.partitions() {
            heads.push(
                self.pipeline
                    .high_watermark(p)
                    .await
                    .map_err(pipeline_error)?,
            );
        }
        let mut stats = LandStats::default();
        loop {
            if self.full() {
                stats.add(self.seal().await?);
            }
            if self.fill(Some(&heads)).await? == 0 {
                stats.add(self.seal().await?);
                break;
            }
        }
        stats.add(self.finish_pending().await?);
        Ok(stats)
    }

    /// Runs until `stop` turns true, committing by size and by interval; on
    /// stop, lands everything up to the pipeline's head and releases the lease.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<LandStats> {
        let mut stats = LandStats::default();
        loop {
            if *stop.borrow() {
                break;
            }
            let due = self
                .first_buffered
                .is_some_and(|t| t.elapsed() >= self.options.commit_interval);
            if self.full() || due {
                stats.add(self.seal().await?);
            }
            // Not full here, so 0 means the pipeline has nothing new.
            let read = self.fill(None).await?;
            if read == 0 {
                // Nothing more to overlap with: land the sealed batch now.
                stats.add(self.finish_pending().await?);
                if self.buffer.is_empty() && self.lease.due(self.last_renewal) {
                    self.lease.renew(&self.lake).await?;
                    self.last_renewal = Instant::now();
                }
                let idle = self.options.poll_interval;
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        stats.add(self.land_to_head().await?);
        self.lease.release(&self.lake).await?;
        Ok(stats)
    }

    /// Reads one chunk from every partition (up to `heads` if given), all
    /// partitions at once (the log decodes on blocking threads, so reads run
    /// in parallel); returns how many events were read. The chunks together
    /// never exceed the room left below `commit_events`, so every commit
    /// holds at most that many events.
    async fn fill(&mut self, heads: Option<&[Offset]>) -> Result<usize> {
        if self.full() {
            return Ok(0);
        }
        let chunk = self.options.read_chunk;
        let limit = |p: usize, from: Offset| match heads {
            Some(heads) => (heads[p].saturating_sub(from)).min(chunk as u64) as usize,
            None => chunk,
        };
        let partitions = self.read.len();
        let room = self.options.commit_events - self.buffer.len();
        let (mut wanted, mut skipped) = (Vec::with_capacity(partitions), Vec::new());
        for p in 0..partitions {
            let from = self.read[p];
            // An even share of the room (the first `room % partitions` get one more).
            let share = room / partitions + usize::from(p < room % partitions);
            let max = limit(p, from);
            if max > 0 && share > 0 {
                wanted.push((p, from, max.min(share)));
            } else if max > 0 {
                skipped.push(p);
            }
        }
        let pipeline = self.pipeline.clone();
        let reads = wanted
            .iter()
            .map(|&(p, from, max)| pipeline_read(&*pipeline, p, from, max));
        let mut read = 0;
        for ((p, _, _), records) in wanted.iter().zip(futures::future::join_all(reads).await) {
            read += self.take(*p, records?);
        }
        // Less room than partitions: the ones without a share go one by one,
        // so a partition with data is never left behind by a quiet one.
        for p in skipped {
            if read > 0 || self.full() {
                break;
            }
            let from = self.read[p];
            let max = limit(p, from).min(self.options.commit_events - self.buffer.len());
            let records = pipeline_read(&*pipeline, p, from, max).await?;
            read += self.take(p, records);
        }
        Ok(read)
    }

    /// Buffers records read from partition `p`; returns how many.
    fn take(&mut self, p: usize, records: Vec<Record>) -> usize {
        let Some(last) = records.last() else { return 0 };
        self.read[p] = last.offset + 1;
        self.buffered_bytes += records.iter().map(approx_size).sum::<usize>();
        self.first_buffered.get_or_insert_with(Instant::now);
        let n = records.len();
        self.buffer.extend(records);
        n
    }

    fn full(&self) -> bool {
        self.buffered_bytes >= self.options.commit_bytes
            || self.buffer.len() >= self.options.commit_events
    }

    /// Seals the buffered records into a batch and starts writing its files
    /// in the background; then finishes (commits) the batch sealed before, so
    /// that reading the next batch overlaps with encoding this one. Commits
    /// stay strictly in order.
    async fn seal(&mut self) -> Result<LandStats> {
        if self.buffer.is_empty() {
            return Ok(LandStats::default());
        }
        let records = std::mem::take(&mut self.buffer);
        let events = records.len() as u64;
        let writer = self.writer.clone();
        let write = tokio::spawn(async move { writer.write(records).await });
        self.buffered_bytes = 0;
        self.first_buffered = None;
        let stats = self.finish_pending().await?;
        self.pending = Some(Pending {
            write,
            next: self.read.clone(),
            events,
        });
        Ok(stats)
    }

    /// Waits for the sealed batch's files and commits them together with the
    /// offsets that end the batch.
    async fn finish_pending(&mut self) -> Result<LandStats> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(LandStats::default());
        };
        let files = (&mut pending.write)
            .await
            .map_err(|e| Error::Task(format!("the data file writer failed: {e}")))??;
        #[cfg(feature = "failpoints")]
        self.hook(SinkPhase::FilesWritten)?;
        let stats = LandStats {
            events: pending.events,
            commits: 1,
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.file_size_in_bytes()).sum(),
        };
        let committed = self
            .lease
            .commit(&self.lake, &self.committed, &pending.next, files)
            .await?;
        #[cfg(feature = "failpoints")]
        self.hook(SinkPhase::Committed)?;
        self.committed = committed;
        self.last_renewal = Instant::now();
        self.lag.committed(&self.committed.offsets);
        if self.options.retention {
            for (p, &offset) in (0u32..).zip(&self.committed.offsets) {
                self.pipeline
                    .delete_before(p, offset)
                    .await
                    .map_err(pipeline_error)?;
            }
        }
        Ok(stats)
    }

    #[cfg(feature = "failpoints")]
    fn hook(&self, phase: SinkPhase) -> Result<()> {
        match &self.hook {
            Some(hook) => hook(phase),
            None => Ok(()),
        }
    }

    /// Releases the commit lease without landing anything more.
    pub async fn release(self) -> Result<()> {
        self.lease.release(&self.lake).await
    }
}

async fn pipeline_read(
    pipeline: &dyn Pipeline,
    p: usize,
    from: Offset,
    max: usize,
) -> Result<Vec<Record>> {
    pipeline
        .read(p as u32, from, max, Duration::ZERO)
        .await
        .map_err(pipeline_error)
}

fn pipeline_error(source: floe_engine::Error) -> Error {
    Error::Pipeline { cause: source }
}

/// Bytes an event takes in Arrow, roughly: its strings plus fixed columns.
fn approx_size(record: &Record) -> usize {
    let e = &record.event;
    96 + e.idempotency_key.len()
        + e.namespace.len()
        + e.entity_type.len()
        + e.entity_id.len()
        + e.partition_key.len()
        + e.state.as_ref().map_or(0, |s| s.len())
}
