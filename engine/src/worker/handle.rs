//! The sending side of a shard worker: the requests its inbox takes, the
//! handle callers send them through, and the probe the worker shares with
//! health checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::ShardStats;
use super::batch::Outcome;
use crate::command::Command;
use crate::dedup::DedupWindow;
use crate::entity::{Entity, EntityKey};
use crate::error::{Error, Result};
use crate::event::now_us;
use crate::state::ShardState;

pub(super) enum Request {
    Write {
        command: Command,
        routed_epoch: u64,
        reply: oneshot::Sender<Outcome>,
    },
    Get {
        key: EntityKey,
        reply: oneshot::Sender<Result<Option<Entity>>>,
    },
    List {
        namespace: String,
        entity_type: String,
        after: Option<String>,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Entity>>>,
    },
    Stats {
        reply: oneshot::Sender<ShardStats>,
    },
    /// Writes of one caller, answered together (one outcome each, in order).
    WriteMany {
        commands: Vec<Command>,
        routed_epoch: u64,
        reply: oneshot::Sender<Vec<Outcome>>,
    },
    /// Runs on the worker with its state, after the batch it arrives in has
    /// been appended and applied (so it doubles as a barrier: every write
    /// queued before it is durable and applied when it runs).
    Run(StateTask),
    /// A caller's read of the state (lists), answered like `Get`: only
    /// while this node serves the shard. Unlike `Run`, which migrations use
    /// on shards they drive, it never reads a state this node does not own
    /// (in cluster mode, an empty or stale copy).
    ReadOwned(OwnedRead),
    /// Finish what is queued, refuse anything new, then stop.
    Stop,
}

/// A closure run by a shard worker on its state (see [`ShardHandle::with_state`]).
pub(super) type StateTask = Box<dyn FnOnce(&mut ShardState, &mut DedupWindow) + Send>;

/// A read run by a shard worker on its state, or told why it may not (see
/// [`ShardHandle::read_owned`]).
pub(super) type OwnedRead = Box<dyn FnOnce(Result<&ShardState>) + Send>;

/// The sending side of a shard's inbox. Cloning is cheap.
#[derive(Debug, Clone)]
pub(crate) struct ShardHandle {
    pub(super) shard: u32,
    pub(super) inbox: mpsc::Sender<Request>,
    pub(super) probe: Arc<WorkerProbe>,
}

/// What a worker shares with health checks, and the one fault it can be
/// told to simulate. Atomics only: the worker never waits on a reader.
#[derive(Debug, Default)]
pub(super) struct WorkerProbe {
    /// When the group commit now waiting on the pipeline started, in
    /// microseconds since the Unix epoch; 0 when none is waiting.
    pub(super) append_started_us: AtomicU64,
    /// Duration of the last completed pipeline append, in microseconds.
    pub(super) last_append_us: AtomicU64,
    /// Fault injection: extra delay before every batch, in microseconds.
    #[cfg(feature = "failpoints")]
    pub(super) fault_delay_us: AtomicU64,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Write { command, .. } => write!(f, "Write({})", command.key),
            Request::WriteMany { commands, .. } => write!(f, "WriteMany({})", commands.len()),
            Request::Get { key, .. } => write!(f, "Get({key})"),
            Request::List { .. } => f.write_str("List"),
            Request::Stats { .. } => f.write_str("Stats"),
            Request::Run(_) => f.write_str("Run"),
            Request::ReadOwned(_) => f.write_str("ReadOwned"),
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
    /// the event is durable in the pipeline and applied. A key that fails
    /// [`EntityKey::validate`] is refused here, before it reaches the shard.
    #[cfg(test)]
    pub(crate) async fn write(
        &self,
        command: Command,
        routed_epoch: u64,
    ) -> Result<crate::command::WriteAck> {
        match self.write_routed(command, routed_epoch).await {
            Outcome::Done(result) => result,
            Outcome::Stale(_) => Err(Error::StaleRouting {
                routed_epoch,
                current_epoch: 0,
            }),
        }
    }

    /// [`ShardHandle::write`] for the cluster's re-route loop: a write
    /// routed under a stale epoch comes back as [`Outcome::Stale`] with its
    /// command, so the caller routes it again without having kept a copy.
    pub(crate) async fn write_routed(&self, command: Command, routed_epoch: u64) -> Outcome {
        if let Err(e) = command.key.validate() {
            return Outcome::Done(Err(e));
        }
        let (reply, rx) = oneshot::channel();
        let sent = self
            .send(Request::Write {
                command,
                routed_epoch,
                reply,
            })
            .await;
        match sent {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Outcome::Done(Err(self.stopped()))),
            Err(e) => Outcome::Done(Err(e)),
        }
    }

    /// Sends writes routed under `routed_epoch` and waits for their outcomes,
    /// one per command in order. Up to `max_batch` go in one request, so
    /// they share one group commit; a longer batch goes in several requests,
    /// queued in order. A write routed under a stale epoch comes back as
    /// [`Outcome::Stale`]; a shard that stopped answers every write of its
    /// requests with [`Error::Closed`].
    pub(crate) async fn write_many(
        &self,
        mut commands: Vec<Command>,
        routed_epoch: u64,
        max_batch: usize,
    ) -> Vec<Outcome> {
        let mut chunks = Vec::with_capacity(commands.len().div_ceil(max_batch.max(1)));
        while !commands.is_empty() {
            let rest = commands.split_off(commands.len().min(max_batch.max(1)));
            chunks.push(std::mem::replace(&mut commands, rest));
        }
        // Every chunk is queued before any reply is awaited: the chunks run
        // in order, and they can share group commits.
        let mut replies = Vec::with_capacity(chunks.len());
        for commands in chunks {
            let len = commands.len();
            let (reply, rx) = oneshot::channel();
            let sent = self
                .send(Request::WriteMany {
                    commands,
                    routed_epoch,
                    reply,
                })
                .await;
            replies.push((len, sent.map(|()| rx)));
        }
        let mut outcomes = Vec::new();
        for (len, rx) in replies {
            let answer = match rx {
                Ok(rx) => rx.await.map_err(|_| self.stopped()),
                Err(e) => Err(e),
            };
            match answer {
                Ok(answer) => outcomes.extend(answer),
                Err(e) => outcomes.extend(
                    (0..len).map(|_| Outcome::Done(Err(Error::Closed(closed_message(&e))))),
                ),
            }
        }
        outcomes
    }

    /// Reads one live entity.
    pub(crate) async fn get(&self, key: EntityKey) -> Result<Option<Entity>> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Get { key, reply }).await?;
        rx.await.map_err(|_| self.stopped())?
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
        rx.await.map_err(|_| self.stopped())?
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

    /// Runs `read` on the worker's state after every request queued before
    /// it has been answered, if this node serves the shard now; otherwise
    /// [`Error::NotOwner`], as a get would answer. For callers' reads
    /// (lists) in cluster mode, where a shard's worker runs on every node
    /// but only the owner's holds its state.
    pub(crate) async fn read_owned<R: Send + 'static>(
        &self,
        read: impl FnOnce(&ShardState) -> R + Send + 'static,
    ) -> Result<R> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::ReadOwned(Box::new(move |state| {
            let _ = reply.send(state.map(read));
        })))
        .await?;
        rx.await.map_err(|_| self.stopped())?
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

/// The message of a [`Error::Closed`], to copy to every write it fails.
fn closed_message(error: &Error) -> String {
    match error {
        Error::Closed(message) => message.clone(),
        other => other.to_string(),
    }
}
