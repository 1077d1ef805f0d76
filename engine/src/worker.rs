use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::{OwnerRefusal, OwnershipGate};
use crate::command::{Command, WriteAck};
use crate::dedup::{DedupWindow, ack_for, reused};
use crate::error::{Error, Result};
use crate::event::{Event, now_us};
use crate::idempotency::IdempotencyIndex;
use crate::keyindex::{ClaimRefused, PartitionKeyIndex};
use crate::limits::{JsonLimits, MAX_JSON_DEPTH_CEILING};
use crate::pipeline::Pipeline;
use crate::state::{PrepareLimits, ShardState};

mod batch;
mod commit;
mod handle;

pub(crate) use batch::Outcome;
use batch::{GroupCommit, Outbox, Reply};
pub(crate) use handle::ShardHandle;
use handle::{OwnedRead, Request, StateTask, WorkerProbe};

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
    /// Deepest nesting of objects and arrays accepted in entity data, merge
    /// patches and patched entities (`{}` is depth 1); at most 100.
    pub max_json_depth: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            inbox_capacity: 4096,
            max_batch: 1024,
            dedup_window: 16_384,
            max_payload_bytes: 1 << 20,
            max_json_depth: 64,
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
            ("shards.max_json_depth", self.max_json_depth),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be at least 1")));
            }
        }
        if self.max_json_depth > MAX_JSON_DEPTH_CEILING {
            return Err(Error::InvalidConfig(format!(
                "shards.max_json_depth is {}, at most {MAX_JSON_DEPTH_CEILING} (what stored entities must stay parseable within)",
                self.max_json_depth
            )));
        }
        Ok(())
    }

    /// The JSON limits every write path applies.
    pub fn json_limits(&self) -> JsonLimits {
        JsonLimits {
            max_bytes: self.max_payload_bytes,
            max_depth: self.max_json_depth,
        }
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
    /// Appends that failed since start. Their events may be durable without
    /// being applied (the outcome is unknown until a restart replays the
    /// log), so a shard that had one takes no snapshot until then.
    pub append_failures: u64,
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
    /// The deployment's entity -> partition key index, shared by every shard.
    pub(crate) keys: Arc<PartitionKeyIndex>,
    /// The deployment's caller idempotency keys, shared by every shard.
    pub(crate) idempotency: Arc<IdempotencyIndex>,
    /// Cluster mode: whether this node may serve the shard (asked before a
    /// batch and again before acknowledging it). `None`: always.
    pub(crate) gate: Option<Arc<dyn OwnershipGate>>,
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
                    tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
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
    ///
    /// The writes of a [`Request::WriteMany`] are admitted one by one in
    /// their order, exactly as single writes arriving in that order would
    /// be, and all go into this one group commit; their outcomes are sent
    /// back together once it is settled.
    async fn process(
        &mut self,
        requests: &mut Vec<Request>,
        stats: &mut ShardStats,
        probe: &WorkerProbe,
    ) {
        let mut group = GroupCommit::default();
        let mut outbox = Outbox::default();
        let mut tasks: Vec<StateTask> = Vec::new();
        let mut reads: Vec<OwnedRead> = Vec::new();
        let limits = PrepareLimits {
            max_payload_bytes: self.config.max_payload_bytes,
            max_json_depth: self.config.max_json_depth,
        };
        let now = now_us();
        let current_epoch = self.epoch.load(Ordering::Acquire);
        // Cluster mode: the batch is served only under an ownership this node
        // holds now; its writes are acknowledged only if it still holds the
        // same one once they are durable (see `commit`).
        let owner = self.owner();
        group.owner_epoch = *owner.as_ref().unwrap_or(&0);
        for request in requests.drain(..) {
            match request {
                Request::Write {
                    command,
                    routed_epoch,
                    reply,
                } => {
                    if let Err(refusal) = &owner {
                        stats.write_errors += 1;
                        outbox.send(Reply::One(reply), Err(self.not_owner(refusal)));
                        continue;
                    }
                    if routed_epoch != current_epoch {
                        stats.write_errors += 1;
                        let _ = reply.send(Outcome::Stale(command));
                        continue;
                    }
                    let reply = Reply::One(reply);
                    self.admit_into(&mut group, &mut outbox, command, reply, now, limits, stats);
                }
                Request::WriteMany {
                    commands,
                    routed_epoch,
                    reply,
                } => {
                    if routed_epoch != current_epoch {
                        // Nothing admitted: every write goes back to be routed again.
                        stats.write_errors += commands.len() as u64;
                        let _ = reply.send(commands.into_iter().map(Outcome::Stale).collect());
                        continue;
                    }
                    let batch = outbox.open(reply, commands.len());
                    for (item, command) in commands.into_iter().enumerate() {
                        let reply = Reply::Item { batch, item };
                        if let Err(refusal) = &owner {
                            stats.write_errors += 1;
                            outbox.send(reply, Err(self.not_owner(refusal)));
                            continue;
                        }
                        // The single path checks keys in the handle.
                        if let Err(error) = command.key.validate() {
                            stats.write_errors += 1;
                            outbox.send(reply, Err(error));
                            continue;
                        }
                        self.admit_into(
                            &mut group,
                            &mut outbox,
                            command,
                            reply,
                            now,
                            limits,
                            stats,
                        );
                    }
                }
                Request::Get { key, reply } => {
                    let _ = reply.send(match &owner {
                        Ok(_) => Ok(self.state.get(&key)),
                        Err(refusal) => Err(self.not_owner(refusal)),
                    });
                }
                Request::List {
                    namespace,
                    entity_type,
                    after,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(match &owner {
                        Ok(_) => {
                            Ok(self
                                .state
                                .list(&namespace, &entity_type, after.as_deref(), limit))
                        }
                        Err(refusal) => Err(self.not_owner(refusal)),
                    });
                }
                Request::Stats { reply } => {
                    stats.entities = self.state.live_entities();
                    stats.bytes = self.state.live_bytes();
                    stats.tombstones = self.state.tombstones();
                    let _ = reply.send(*stats);
                }
                Request::Run(task) => tasks.push(task),
                Request::ReadOwned(read) => reads.push(read),
                Request::Stop => {}
            }
        }
        if !group.events.is_empty() {
            let epoch = *owner.as_ref().unwrap_or(&0);
            self.commit(group, &mut outbox, stats, probe, epoch).await;
        }
        outbox.flush();
        for task in tasks {
            task(&mut self.state, &mut self.dedup);
        }
        for read in reads {
            match &owner {
                Ok(_) => read(Ok(&self.state)),
                Err(refusal) => read(Err(self.not_owner(refusal))),
            }
        }
    }

    /// Admits one write (routed under the current epoch) into the group
    /// commit, or answers it right away (a retry, a refusal).
    #[allow(
        clippy::too_many_arguments,
        reason = "the worker's loop state, passed apart"
    )]
    fn admit_into(
        &self,
        group: &mut GroupCommit,
        outbox: &mut Outbox,
        command: Command,
        reply: Reply,
        now: i64,
        limits: PrepareLimits,
        stats: &mut ShardStats,
    ) {
        match self.admit(&command, group, now, limits) {
            Ok(Admission::Event(mut event)) => {
                event.owner_epoch = group.owner_epoch;
                group
                    .pending
                    .insert(command.key, (event.version, event.state.clone()));
                if let (Some(key), Some(fingerprint)) =
                    (command.idempotency_key, event.request_fingerprint)
                {
                    group
                        .batch_keys
                        .insert(key, (group.events.len(), fingerprint));
                }
                group.waiting.push((reply, group.events.len()));
                group.events.push(event);
            }
            Ok(Admission::Retry(ack)) => outbox.send(reply, Ok(ack)),
            Ok(Admission::InBatch(index)) => group.waiting.push((reply, index)),
            Err(error) => {
                stats.write_errors += 1;
                outbox.send(reply, Err(error));
            }
        }
    }

    /// The owner epoch this node serves the shard under now (0 without a gate).
    fn owner(&self) -> std::result::Result<u64, OwnerRefusal> {
        self.gate.as_ref().map_or(Ok(0), |g| g.check(self.shard))
    }

    fn not_owner(&self, refusal: &OwnerRefusal) -> Error {
        Error::NotOwner {
            shard: self.shard,
            refusal: refusal.clone(),
        }
    }

    /// Decides what a write (routed under the current topology) becomes: a
    /// retry of an acknowledged request, a retry of one earlier in this
    /// batch, or a new event. A new event holds a claim on the entity in the
    /// partition-key index until [`ShardWorker::commit`] settles it.
    fn admit(
        &self,
        command: &Command,
        group: &GroupCommit,
        now: i64,
        limits: PrepareLimits,
    ) -> Result<Admission> {
        command.check_idempotency_key()?;
        let fingerprint = command
            .idempotency_key
            .as_ref()
            .map(|_| command.fingerprint());
        if let (Some(key), Some(fingerprint)) = (&command.idempotency_key, fingerprint) {
            if let Some(ack) = self.dedup.check(key, command, fingerprint)? {
                return Ok(Admission::Retry(ack));
            }
            if let Some(&(index, first)) = group.batch_keys.get(key) {
                if first != fingerprint {
                    return Err(reused(key, &ack_for(&group.events[index])));
                }
                return Ok(Admission::InBatch(index));
            }
        }
        // A key another shard holds for another request (the windows are
        // per shard; this index spans them).
        if let (Some(key), Some(fingerprint)) = (&command.idempotency_key, fingerprint) {
            self.idempotency
                .claim(key, fingerprint, self.shard)
                .map_err(|shard| Error::IdempotencyKeyReused {
                    key: key.clone(),
                    original: format!("a request acknowledged by shard {shard}"),
                })?;
        }
        let release_key = || {
            if let Some(key) = &command.idempotency_key {
                self.idempotency.release(key);
            }
        };
        let floor = match self.keys.claim(&command.key, command.key_hash) {
            Ok(floor) => floor,
            Err(refused) => {
                release_key();
                return Err(moved(command, refused));
            }
        };
        match self
            .state
            .prepare(&group.pending, command, self.shard, now, limits, floor)
        {
            Ok(mut event) => {
                event.request_fingerprint = fingerprint;
                Ok(Admission::Event(event))
            }
            Err(error) => {
                self.keys.release(&command.key);
                release_key();
                Err(error)
            }
        }
    }
}

/// What [`ShardWorker::admit`] makes of a write.
enum Admission {
    /// A new change: its event, to append.
    Event(Event),
    /// A retry of an acknowledged request: its ack.
    Retry(WriteAck),
    /// A retry of the write whose event is at this index of the batch.
    InBatch(usize),
}

/// The refusal of a write that would give an entity another partition key.
fn moved(command: &Command, refused: ClaimRefused) -> Error {
    let reason = match refused {
        ClaimRefused::Live { version } => format!(
            "it exists at version {version} under another partition key, this {} carries {:?} (delete it first to re-create it under another key)",
            command.op.name(),
            command.partition_key
        ),
        ClaimRefused::InFlight => format!(
            "a write under another partition key is in flight for it, this {} carries {:?}",
            command.op.name(),
            command.partition_key
        ),
    };
    Error::PartitionKeyImmutable {
        entity: command.key.display(),
        attempted: command.partition_key.clone(),
        reason,
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
            cause: None,
        },
        other => Error::Pipeline {
            backend: "unknown",
            message: other.to_string(),
            retryable: other.is_retryable(),
            cause: None,
        },
    }
}

#[cfg(test)]
mod tests;
