use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::command::{Command, WriteAck};
use crate::entity::{Entity, EntityKey};
use crate::error::{Error, Result};
use crate::event::{Event, now_us};
use crate::pipeline::Pipeline;
use crate::state::{PendingChanges, PrepareLimits, ShardState};

/// How a shard worker behaves; the same for every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// Requests a shard's inbox holds before callers wait (back-pressure).
    pub inbox_capacity: usize,
    /// Most writes one group commit takes from the inbox.
    pub max_batch: usize,
    /// Caller idempotency keys remembered per shard; a retry whose key has
    /// left the window is applied again (see docs/architecture.md).
    pub dedup_window: usize,
    /// Largest entity accepted, in bytes of JSON.
    pub max_payload_bytes: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            inbox_capacity: 4096,
            max_batch: 1024,
            dedup_window: 16_384,
            max_payload_bytes: 1 << 20,
        }
    }
}

impl ShardConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("shards.inbox_capacity", self.inbox_capacity),
            ("shards.max_batch", self.max_batch),
            ("shards.max_payload_bytes", self.max_payload_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// Caller idempotency keys a shard has acknowledged recently, with their
/// outcomes. Bounded: the oldest key leaves when a new one arrives at capacity.
#[derive(Debug, Default)]
pub(crate) struct DedupWindow {
    capacity: usize,
    outcomes: HashMap<String, WriteAck>,
    order: VecDeque<String>,
}

impl DedupWindow {
    /// An empty window of `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        DedupWindow {
            capacity,
            outcomes: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The outcome recorded for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&WriteAck> {
        self.outcomes.get(key)
    }

    /// Remembers an outcome, evicting the oldest key at capacity.
    pub(crate) fn insert(&mut self, ack: WriteAck) {
        if self.capacity == 0 || self.outcomes.contains_key(&ack.idempotency_key) {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.outcomes.remove(&oldest);
        }
        self.order.push_back(ack.idempotency_key.clone());
        self.outcomes.insert(ack.idempotency_key.clone(), ack);
    }

    /// Remembers the outcome of a replayed event when its key came from a
    /// caller (floe's derived keys need no window: they are unique per version).
    pub(crate) fn observe(&mut self, event: &Event) {
        if !event.has_derived_key() {
            self.insert(ack_for(event, event.entity_key()));
        }
    }
}

fn ack_for(event: &Event, key: EntityKey) -> WriteAck {
    WriteAck {
        key,
        version: event.version,
        kind: event.kind,
        event_id: event.event_id,
        idempotency_key: event.idempotency_key.clone(),
        shard: event.shard,
    }
}

/// Counters a shard worker publishes after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardStats {
    /// The shard.
    pub shard: u32,
    /// Live entities.
    pub entities: u64,
    /// Bytes of live entity data.
    pub bytes: u64,
    /// Tombstones kept.
    pub tombstones: u64,
    /// Writes acknowledged since start.
    pub writes: u64,
    /// Writes refused since start (validation errors and pipeline failures).
    pub write_errors: u64,
    /// Group commits since start.
    pub batches: u64,
    /// Requests waiting in the inbox.
    pub inbox_depth: u64,
}

enum Request {
    Write {
        command: Command,
        routed_epoch: u64,
        reply: oneshot::Sender<Result<WriteAck>>,
    },
    Get {
        key: EntityKey,
        reply: oneshot::Sender<Option<Entity>>,
    },
    List {
        namespace: String,
        entity_type: String,
        after: Option<String>,
        limit: usize,
        reply: oneshot::Sender<Vec<Entity>>,
    },
    Stats {
        reply: oneshot::Sender<ShardStats>,
    },
    /// Runs on the worker with its state, after the batch it arrives in has
    /// been appended and applied (so it doubles as a barrier: every write
    /// queued before it is durable and applied when it runs).
    Run(StateTask),
    /// Finish what is queued, refuse anything new, then stop.
    Stop,
}

/// A closure run by a shard worker on its state (see [`ShardHandle::with_state`]).
type StateTask = Box<dyn FnOnce(&mut ShardState, &mut DedupWindow) + Send>;

/// The sending side of a shard's inbox. Cloning is cheap.
#[derive(Debug, Clone)]
pub(crate) struct ShardHandle {
    shard: u32,
    inbox: mpsc::Sender<Request>,
    probe: Arc<WorkerProbe>,
}

/// What a worker shares with health checks, and the one fault it can be
/// told to simulate. Atomics only: the worker never waits on a reader.
#[derive(Debug, Default)]
struct WorkerProbe {
    /// When the group commit now waiting on the pipeline started, in
    /// microseconds since the Unix epoch; 0 when none is waiting.
    append_started_us: AtomicU64,
    /// Duration of the last completed pipeline append, in microseconds.
    last_append_us: AtomicU64,
    /// Fault injection: extra delay before every batch, in microseconds.
    #[cfg(feature = "failpoints")]
    fault_delay_us: AtomicU64,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Write { command, .. } => write!(f, "Write({})", command.key),
            Request::Get { key, .. } => write!(f, "Get({key})"),
            Request::List { .. } => f.write_str("List"),
            Request::Stats { .. } => f.write_str("Stats"),
            Request::Run(_) => f.write_str("Run"),
            Request::Stop => f.write_str("Stop"),
        }
    }
}

impl ShardHandle {
    /// The shard this handle reaches.
    pub(crate) fn shard(&self) -> u32 {
        self.shard
    }

    async fn send(&self, request: Request) -> Result<()> {
        self.inbox
            .send(request)
            .await
            .map_err(|_| Error::Closed(format!("shard {} has stopped", self.shard)))
    }

    fn stopped(&self) -> Error {
        Error::Closed(format!("shard {} stopped before replying", self.shard))
    }

    /// Sends a write and waits for its acknowledgement, which comes only after
    /// the event is durable in the pipeline and applied.
    pub(crate) async fn write(&self, command: Command, routed_epoch: u64) -> Result<WriteAck> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Write {
            command,
            routed_epoch,
            reply,
        })
        .await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Reads one live entity.
    pub(crate) async fn get(&self, key: EntityKey) -> Result<Option<Entity>> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Get { key, reply }).await?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Lists live entities of a namespace and type in id order.
    pub(crate) async fn list(
        &self,
        namespace: String,
        entity_type: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::List {
            namespace,
            entity_type,
            after,
            limit,
            reply,
        })
        .await?;
        rx.await.map_err(|_| self.stopped())
    }

    /// The shard's counters.
    pub(crate) async fn stats(&self) -> Result<ShardStats> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Stats { reply }).await?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Runs `task` on the worker with exclusive access to its state and
    /// idempotency window, after every request queued before it has been
    /// answered (writes durable and applied), and returns its result.
    ///
    /// Used by migrations to copy events into a shard, evict moved entities
    /// and compute digests without a second owner of the state. `task` runs
    /// on the worker's task: keep it short or split it into chunks.
    pub(crate) async fn with_state<R: Send + 'static>(
        &self,
        task: impl FnOnce(&mut ShardState, &mut DedupWindow) -> R + Send + 'static,
    ) -> Result<R> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Run(Box::new(move |state, dedup| {
            let _ = reply.send(task(state, dedup));
        })))
        .await?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Asks the worker to stop once the requests queued before this one are
    /// done; requests sent afterwards fail with [`Error::Closed`].
    pub(crate) async fn stop(&self) {
        // Already stopped is fine: stopping is idempotent.
        let _ = self.inbox.send(Request::Stop).await;
    }

    /// Requests queued in the inbox right now.
    pub(crate) fn inbox_depth(&self) -> usize {
        self.inbox.max_capacity() - self.inbox.capacity()
    }

    /// How long the group commit now in the pipeline has been waiting for
    /// durability (zero when none is): a stalled disk or broker shows here
    /// before any write completes.
    pub(crate) fn pipeline_wait(&self) -> Duration {
        let started = self.probe.append_started_us.load(Ordering::Acquire);
        if started == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros((now_us().max(0) as u64).saturating_sub(started))
    }

    /// How long the last completed pipeline append took.
    pub(crate) fn last_append(&self) -> Duration {
        Duration::from_micros(self.probe.last_append_us.load(Ordering::Acquire))
    }

    /// Fault injection for tests and drills: the worker sleeps this long
    /// before every batch it processes (reads, stats and writes alike), as a
    /// shard on a failing disk would. `Duration::ZERO` turns it off.
    #[cfg(feature = "failpoints")]
    pub(crate) fn set_fault_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.probe.fault_delay_us.store(micros, Ordering::Release);
    }

    /// The injected delay in force (zero without the `failpoints` feature).
    pub(crate) fn fault_delay(&self) -> Duration {
        #[cfg(feature = "failpoints")]
        return Duration::from_micros(self.probe.fault_delay_us.load(Ordering::Acquire));
        #[cfg(not(feature = "failpoints"))]
        Duration::ZERO
    }
}

/// Everything a shard worker starts from.
#[derive(Debug)]
pub(crate) struct ShardWorker {
    /// The shard's id.
    pub(crate) shard: u32,
    /// Its recovered state.
    pub(crate) state: ShardState,
    /// Its recovered idempotency window.
    pub(crate) dedup: DedupWindow,
    /// Where its events go.
    pub(crate) pipeline: Arc<dyn Pipeline>,
    /// Its settings.
    pub(crate) config: ShardConfig,
    /// The routing epoch in force; writes routed under another are refused
    /// as stale so the caller re-routes them.
    pub(crate) epoch: Arc<AtomicU64>,
}

impl ShardWorker {
    /// Starts the worker task. It runs until every handle is dropped, finishes
    /// the requests already queued, and returns its state.
    pub(crate) fn spawn(self) -> (ShardHandle, JoinHandle<ShardState>) {
        let (tx, rx) = mpsc::channel(self.config.inbox_capacity);
        let probe = Arc::new(WorkerProbe::default());
        let handle = ShardHandle {
            shard: self.shard,
            inbox: tx,
            probe: probe.clone(),
        };
        (handle, tokio::spawn(self.run(rx, probe)))
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Request>,
        probe: Arc<WorkerProbe>,
    ) -> ShardState {
        let mut stats = ShardStats {
            shard: self.shard,
            ..ShardStats::default()
        };
        let mut requests = Vec::with_capacity(self.config.max_batch);
        while inbox.recv_many(&mut requests, self.config.max_batch).await > 0 {
            stats.inbox_depth = inbox.len() as u64;
            let stopping = requests.iter().any(|r| matches!(r, Request::Stop));
            if stopping {
                // Refuse new sends, then answer everything already queued.
                inbox.close();
                while let Ok(request) = inbox.try_recv() {
                    requests.push(request);
                }
            }
            #[cfg(feature = "failpoints")]
            {
                let delay = probe.fault_delay_us.load(Ordering::Acquire);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_micros(delay)).await;
                }
            }
            // While stopping, the batch may exceed `max_batch` (by at most the
            // inbox capacity): one last group commit.
            self.process(&mut requests, &mut stats, &probe).await;
            if stopping {
                break;
            }
        }
        self.state
    }

    /// One group commit: answer reads, validate writes against the state plus
    /// the batch's earlier writes, append all events in one call, wait until
    /// durable, apply, reply.
    async fn process(
        &mut self,
        requests: &mut Vec<Request>,
        stats: &mut ShardStats,
        probe: &WorkerProbe,
    ) {
        let mut pending = PendingChanges::new();
        let mut events = Vec::new();
        let mut waiting: Vec<(oneshot::Sender<Result<WriteAck>>, usize)> = Vec::new();
        // A retry may arrive in the same batch as its original.
        let mut batch_keys: HashMap<String, usize> = HashMap::new();
        let mut duplicates: Vec<(oneshot::Sender<Result<WriteAck>>, usize)> = Vec::new();
        let mut tasks: Vec<StateTask> = Vec::new();
        let limits = PrepareLimits {
            max_payload_bytes: self.config.max_payload_bytes,
        };
        let now = now_us();
        let current_epoch = self.epoch.load(Ordering::Acquire);
        for request in requests.drain(..) {
            match request {
                Request::Write {
                    command,
                    routed_epoch,
                    reply,
                } => {
                    if routed_epoch != current_epoch {
                        stats.write_errors += 1;
                        let _ = reply.send(Err(Error::StaleRouting {
                            routed_epoch,
                            current_epoch,
                        }));
                        continue;
                    }
                    if let Some(key) = &command.idempotency_key {
                        if let Some(ack) = self.dedup.get(key) {
                            let _ = reply.send(Ok(ack.clone()));
                            continue;
                        }
                        if let Some(&index) = batch_keys.get(key) {
                            duplicates.push((reply, index));
                            continue;
                        }
                    }
                    match self
                        .state
                        .prepare(&pending, &command, self.shard, now, limits)
                    {
                        Ok(event) => {
                            pending.insert(command.key, (event.version, event.state.clone()));
                            if let Some(key) = command.idempotency_key {
                                batch_keys.insert(key, events.len());
                            }
                            waiting.push((reply, events.len()));
                            events.push(event);
                        }
                        Err(error) => {
                            stats.write_errors += 1;
                            let _ = reply.send(Err(error));
                        }
                    }
                }
                Request::Get { key, reply } => {
                    let _ = reply.send(self.state.get(&key));
                }
                Request::List {
                    namespace,
                    entity_type,
                    after,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.state.list(
                        &namespace,
                        &entity_type,
                        after.as_deref(),
                        limit,
                    ));
                }
                Request::Stats { reply } => {
                    stats.entities = self.state.live_entities();
                    stats.bytes = self.state.live_bytes();
                    stats.tombstones = self.state.tombstones();
                    let _ = reply.send(*stats);
                }
                Request::Run(task) => tasks.push(task),
                Request::Stop => {}
            }
        }
        if !events.is_empty() {
            self.commit(events, waiting, duplicates, stats, probe).await;
        }
        for task in tasks {
            task(&mut self.state, &mut self.dedup);
        }
    }

    /// Appends a batch's events, applies them and replies to their callers.
    async fn commit(
        &mut self,
        events: Vec<Event>,
        waiting: Vec<(oneshot::Sender<Result<WriteAck>>, usize)>,
        duplicates: Vec<(oneshot::Sender<Result<WriteAck>>, usize)>,
        stats: &mut ShardStats,
        probe: &WorkerProbe,
    ) {
        stats.batches += 1;
        let started = now_us().max(1) as u64;
        probe.append_started_us.store(started, Ordering::Release);
        let appended = self.pipeline.append(&events).await;
        probe.append_started_us.store(0, Ordering::Release);
        probe.last_append_us.store(
            (now_us().max(0) as u64).saturating_sub(started),
            Ordering::Release,
        );
        match appended {
            Ok(_) => {
                let count = events.len() as u64;
                let mut acks = Vec::with_capacity(events.len());
                for event in events {
                    self.dedup.observe(&event);
                    acks.push(ack_for(&event, event.entity_key()));
                    self.state.apply_owned(event);
                }
                stats.writes += count;
                for (reply, index) in waiting.into_iter().chain(duplicates) {
                    let _ = reply.send(Ok(acks[index].clone()));
                }
            }
            Err(error) => {
                // The outcome is unknown (some events may be durable); nothing
                // is applied here, and a restart replays whatever was durable.
                stats.write_errors += (waiting.len() + duplicates.len()) as u64;
                tracing::warn!(shard = self.shard, %error, events = events.len(), "append failed");
                for (reply, _) in waiting.into_iter().chain(duplicates) {
                    let _ = reply.send(Err(copy_pipeline_error(&error)));
                }
            }
        }
    }
}

/// `Error` is not `Clone` (it may hold an `io::Error`); every caller of a
/// failed batch gets the same message and retryability.
fn copy_pipeline_error(error: &Error) -> Error {
    match error {
        Error::Pipeline {
            backend,
            message,
            retryable,
            ..
        } => Error::Pipeline {
            backend,
            message: message.clone(),
            retryable: *retryable,
            source: None,
        },
        other => Error::Pipeline {
            backend: "unknown",
            message: other.to_string(),
            retryable: other.is_retryable(),
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Operation;
    use crate::json::Json;
    use crate::pipeline::{Offset, Record};
    use tokio::sync::Semaphore;

    /// A pipeline whose appends wait for a permit: the test decides when a
    /// group commit becomes durable.
    #[derive(Debug)]
    struct GatedPipeline {
        gate: Semaphore,
    }

    #[async_trait::async_trait]
    impl Pipeline for GatedPipeline {
        fn partitions(&self) -> u32 {
            1
        }
        async fn append(&self, events: &[Event]) -> Result<Vec<Offset>> {
            self.gate.acquire().await.expect("open").forget();
            Ok((0..events.len() as u64).collect())
        }
        async fn read(&self, _: u32, _: Offset, _: usize, _: Duration) -> Result<Vec<Record>> {
            Ok(Vec::new())
        }
        async fn high_watermark(&self, _: u32) -> Result<Offset> {
            Ok(0)
        }
        async fn low_watermark(&self, _: u32) -> Result<Offset> {
            Ok(0)
        }
        async fn delete_before(&self, _: u32, _: Offset) -> Result<Offset> {
            Ok(0)
        }
        async fn close(&self) -> Result<()> {
            Ok(())
        }
    }

    fn worker(pipeline: Arc<GatedPipeline>) -> (ShardHandle, JoinHandle<crate::ShardState>) {
        ShardWorker {
            shard: 0,
            state: crate::ShardState::new(),
            dedup: DedupWindow::new(16),
            pipeline,
            config: ShardConfig::default(),
            epoch: Arc::new(AtomicU64::new(1)),
        }
        .spawn()
    }

    fn put(id: &str) -> Command {
        Command {
            key: EntityKey::new("t", "T", id),
            op: Operation::Upsert(Json::parse("{}").unwrap()),
            expected_version: None,
            idempotency_key: None,
            partition_key: "t".into(),
            key_hash: 1,
        }
    }

    #[tokio::test]
    async fn a_group_commit_waiting_on_the_pipeline_shows_as_pipeline_wait() {
        let pipeline = Arc::new(GatedPipeline {
            gate: Semaphore::new(0),
        });
        let (handle, task) = worker(pipeline.clone());
        assert_eq!(handle.pipeline_wait(), Duration::ZERO);
        let write = tokio::spawn({
            let handle = handle.clone();
            async move { handle.write(put("a"), 1).await }
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
        let waited = handle.pipeline_wait();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        pipeline.gate.add_permits(1);
        write.await.unwrap().unwrap();
        assert_eq!(handle.pipeline_wait(), Duration::ZERO);
        assert!(handle.last_append() >= Duration::from_millis(40));
        handle.stop().await;
        task.await.unwrap();
    }

    #[cfg(feature = "failpoints")]
    #[tokio::test]
    async fn an_injected_delay_slows_every_batch_until_cleared() {
        let pipeline = Arc::new(GatedPipeline {
            gate: Semaphore::new(100),
        });
        let (handle, task) = worker(pipeline);
        handle.set_fault_delay(Duration::from_millis(80));
        assert_eq!(handle.fault_delay(), Duration::from_millis(80));
        let started = std::time::Instant::now();
        handle.stats().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(80));
        handle.set_fault_delay(Duration::ZERO);
        let started = std::time::Instant::now();
        handle.write(put("b"), 1).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(80));
        handle.stop().await;
        task.await.unwrap();
    }
}
