//! The new owner's side of a planned handover (the rules are
//! `floe_cluster::HandoverStage`): warm the shards the leader asks this node to
//! take over while their old owners still serve, keep them current by reading
//! the pipeline on, record "ready" in etcd, and at cutover hand the warm state
//! over after one last catch-up to the high watermark read then. Warm standbys
//! go the same way without an intent: the shards this node would be granted if
//! their owner failed are kept warm, and a failover's grant takes the warm
//! state like a cutover does.
//!
//! Shards asked for together are warmed together (one read of the history for
//! all of them). A warm state is only a read of the log up to some offsets: it
//! stays valid whatever happens to the intent, so it is used by whichever grant
//! of the shard to this node activates first, and dropped once the shard is
//! neither intended for nor granted to this node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_cluster::{
    HandoverEvent, HandoverIntent, HandoverStage, Held, NodeRecord, OwnerEpoch, ShardId,
};
use floe_emitter::replay::ShardReplay;
use floe_emitter::sink::Lake;
use floe_engine::{Pipeline, RecoveredShard, Router};
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// How often a warm state of a planned handover reads the pipeline on: the
/// cutover then reads at most this much of the tail.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// How often a warm state kept only as a standby reads the pipeline on. A
/// failover waits out the lease TTL (seconds) anyway, and then reads at most
/// this much of the tail; every read of each standby on every node is a
/// fetch the broker serves beside the producers' appends (at 100 ms, the
/// release `bench cluster` lost half its write throughput to them).
const STANDBY_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// The pause before a failed warm-up starts over.
const RETRY: Duration = Duration::from_millis(500);
/// How long the standby set must stay the same before its new shards are
/// warmed and its old ones dropped: a join or a drain changes the grants in
/// several steps, and each intermediate set would otherwise start (and soon
/// drop) a read of the lake. A node's failure leaves the set as it was (the
/// standby of an orphaned shard is the node it goes to), so failovers wait
/// for nothing.
const STANDBY_SETTLE: Duration = Duration::from_secs(1);
/// How long a grant waits for a warm-up still under way before it restores
/// in full instead. The warm-up started earlier than a restore would, and
/// reads the same, so waiting for it is the shorter way unless it is stuck.
const WARMING_WAIT: Duration = Duration::from_secs(60);

/// What a warm-up reads from.
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) pipeline: Arc<dyn Pipeline>,
    pub(crate) router: Arc<Router>,
    pub(crate) lake: Option<Lake>,
    pub(crate) dedup_window: usize,
}

/// Shards warmed together: one replay, one task reading on. The task holds
/// the group weakly: once the group is dropped it sees it gone at its next
/// check and ends. It is never aborted: aborting it in the middle of a lake
/// read would cancel iceberg-rust 0.10.1's reader, whose file tasks then panic
/// on a closed channel (`arrow/reader/pipeline.rs`, `delete_filter_rx.await.unwrap()`).
struct Group {
    replay: tokio::sync::Mutex<Option<ShardReplay>>,
    /// The topology the replay routes by. A reshard replaces it: a shard
    /// id then names other keys, so a warm state of the old topology must
    /// never be served under the new one.
    topology: floe_engine::Topology,
    /// Set when a warm-up attempt failed (it starts over): a grant waiting
    /// for it restores in full instead.
    failed: std::sync::atomic::AtomicBool,
}

struct Entry {
    stage: HandoverStage,
    group: Arc<Group>,
    /// The grant epoch the ready record was written for.
    ready_for: Option<OwnerEpoch>,
}

/// The warm-ups of this node.
#[derive(Default)]
pub(crate) struct Warmer {
    entries: Arc<Mutex<BTreeMap<ShardId, Entry>>>,
    /// Woken when a warm-up finishes (the restore loop records it in etcd).
    warmed: Arc<Notify>,
    standby: Mutex<StandbySettle>,
    /// Reads of the history (warm-ups and restores) under way. A process
    /// that exits in the middle of one drops iceberg-rust's reader tasks in
    /// an order its file tasks panic at (see [`Group`]), so a leaving node
    /// waits for them ([`Warmer::quiesce`]).
    reading: Arc<std::sync::atomic::AtomicUsize>,
    /// Set once the node leaves: no warm-up starts any more.
    closed: std::sync::atomic::AtomicBool,
}

/// One read of the history under way, counted in [`Warmer::reading`].
pub(crate) struct Reading(Arc<std::sync::atomic::AtomicUsize>);

impl Reading {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Reading {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Reading(count.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The standby set as last computed, since when, and the set in force (the
/// last one that stayed the same for [`STANDBY_SETTLE`]).
#[derive(Default)]
struct StandbySettle {
    seen: BTreeSet<ShardId>,
    since: Option<std::time::Instant>,
    settled: BTreeSet<ShardId>,
}

impl StandbySettle {
    fn update(&mut self, now: BTreeSet<ShardId>) -> BTreeSet<ShardId> {
        let at = std::time::Instant::now();
        if self.since.is_none() || now != self.seen {
            self.seen = now;
            self.since = Some(at);
        }
        if self
            .since
            .is_some_and(|since| at.duration_since(since) >= STANDBY_SETTLE)
        {
            self.settled = self.seen.clone();
        }
        self.settled.clone()
    }
}

impl std::fmt::Debug for Warmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: BTreeMap<ShardId, HandoverStage> =
            self.lock().iter().map(|(s, e)| (*s, e.stage)).collect();
        f.debug_struct("Warmer").field("stages", &stages).finish()
    }
}

impl Warmer {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShardId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes when a warm-up has finished.
    pub(crate) fn warmed(&self) -> Arc<Notify> {
        self.warmed.clone()
    }

    /// Counts a read of the history (a restore) until the guard drops.
    pub(crate) fn reading(&self) -> Reading {
        Reading::start(&self.reading)
    }

    /// Starts no warm-up any more and waits (up to `within`) until no read
    /// of the history is under way.
    pub(crate) async fn quiesce(&self, within: Duration) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let until = std::time::Instant::now() + within;
        while self.reading.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= until {
                tracing::warn!(
                    reads = self.reading.load(std::sync::atomic::Ordering::Acquire),
                    "leaving with reads of the history still under way"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Follows the leader's intents, this node's grants and the shards it
    /// stands by for (`standby`: it would take them over if their owner
    /// failed, [`floe_cluster::standbys`]): starts warming the shards newly
    /// asked of `me` or newly in `standby`, notes grants, drops warm states
    /// that no intent, grant or standby needs. Returns the intents (to `me`,
    /// current) whose shard is warm and not yet recorded as ready for that
    /// epoch.
    pub(crate) fn sync(
        &self,
        me: &NodeRecord,
        intents: &BTreeMap<ShardId, HandoverIntent>,
        held: &BTreeMap<ShardId, Held>,
        standby: &BTreeSet<ShardId>,
        sources: &Sources,
    ) -> Vec<HandoverIntent> {
        let mine: BTreeMap<ShardId, &HandoverIntent> = intents
            .iter()
            .filter(|(_, i)| i.to_node == me.node_id && i.to_lease == me.lease_id)
            .map(|(s, i)| (*s, i))
            .collect();
        let standby = &self
            .standby
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(standby.clone());
        let mut entries = self.lock();
        // Warm states of another topology (a reshard cut over): of no use.
        entries.retain(|shard, entry| {
            let current = entry.group.topology == *sources.router.topology();
            if !current {
                tracing::info!(shard, "the topology changed; dropping the warm state");
            }
            current
        });
        // Warm states nobody needs any more.
        entries.retain(|shard, entry| {
            let needed =
                mine.contains_key(shard) || held.contains_key(shard) || standby.contains(shard);
            if !needed {
                entry.stage = entry
                    .stage
                    .on(HandoverEvent::Withdrawn)
                    .unwrap_or(HandoverStage::Abandoned);
                tracing::info!(
                    shard,
                    "neither handed over nor standing by; dropping the warm state"
                );
            }
            needed
        });
        for (shard, h) in held {
            if let Some(entry) = entries.get_mut(shard)
                && !matches!(entry.stage, HandoverStage::Granted { epoch, .. } if epoch == h.grant.epoch)
            {
                match entry.stage.on(HandoverEvent::Granted(h.grant.epoch)) {
                    Ok(next) => entry.stage = next,
                    Err(e) => tracing::debug!(shard, error = %e, "ignoring a grant"),
                }
            }
        }
        // Shards asked of this node or stood by for that are not warming yet
        // (and not already served here: a grant to this node that is active
        // needs no warm-up).
        let fresh: BTreeSet<ShardId> = mine
            .keys()
            .chain(standby)
            .filter(|s| !entries.contains_key(*s) && !held.get(*s).is_some_and(|h| h.active))
            .copied()
            .collect();
        if !fresh.is_empty() && !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            let group = Arc::new(Group {
                replay: tokio::sync::Mutex::new(None),
                topology: sources.router.topology().clone(),
                failed: std::sync::atomic::AtomicBool::new(false),
            });
            for shard in &fresh {
                entries.insert(
                    *shard,
                    Entry {
                        stage: HandoverStage::Warming,
                        group: group.clone(),
                        ready_for: None,
                    },
                );
            }
            tracing::info!(shards = ?fresh, "warming shards up while their owners serve (handovers and standbys)");
            // A group with a planned handover in it follows closely (its
            // cutover pauses writes); one of standbys alone, lazily.
            let follow = if fresh.iter().any(|s| mine.contains_key(s)) {
                FOLLOW_INTERVAL
            } else {
                STANDBY_FOLLOW_INTERVAL
            };
            tokio::spawn(warm(
                Arc::downgrade(&group),
                follow,
                fresh,
                self.entries.clone(),
                self.warmed.clone(),
                sources.clone(),
                self.reading.clone(),
            ));
        }
        mine.iter()
            .filter(|(shard, intent)| {
                entries.get(*shard).is_some_and(|e| {
                    e.stage.keeps_warm_state() && e.ready_for != Some(intent.from_epoch)
                })
            })
            .map(|(_, intent)| (*intent).clone())
            .collect()
    }

    /// Notes that the ready record of `intent` is written.
    pub(crate) fn recorded(&self, intent: &HandoverIntent) {
        if let Some(entry) = self.lock().get_mut(&intent.shard) {
            entry.ready_for = Some(intent.from_epoch);
        }
    }

    /// The grant of `shard` at `epoch` became active here (the old owner let
    /// go): reads the rest of the tail to the high watermark read now and
    /// hands the state over. `None` when the shard has no warm state (the
    /// caller restores it in full).
    pub(crate) async fn take(
        &self,
        shard: ShardId,
        epoch: OwnerEpoch,
        sources: &Sources,
    ) -> Option<Result<RecoveredShard>> {
        let started = std::time::Instant::now();
        let group = {
            let mut entries = self.lock();
            let entry = entries.get_mut(&shard)?;
            if entry.group.topology != *sources.router.topology() {
                // Warmed under the topology before a reshard: restore in full.
                entries.remove(&shard);
                return None;
            }
            // Granted first if the grant was not noted yet.
            if !matches!(entry.stage, HandoverStage::Granted { .. }) {
                entry.stage = entry.stage.on(HandoverEvent::Granted(epoch)).ok()?;
            }
            entry.group.clone()
        };
        // Still warming (a standby whose owner failed soon after the grants
        // changed, a cutover after handover_timeout_ms): wait for it.
        loop {
            let warm = self.lock().get(&shard)?.stage.keeps_warm_state();
            if warm {
                break;
            }
            if group.failed.load(std::sync::atomic::Ordering::Acquire)
                || started.elapsed() >= WARMING_WAIT
            {
                // The caller restores in full; this warm-up is of no use any more.
                self.lock().remove(&shard);
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waited_ms = started.elapsed().as_millis() as u64;
        {
            let mut entries = self.lock();
            let entry = entries.get_mut(&shard)?;
            entry.stage = entry.stage.on(HandoverEvent::LetGo).ok()?;
        }
        let mut replay = group.replay.lock().await;
        let locked_ms = started.elapsed().as_millis() as u64;
        let result = match replay.as_mut() {
            None => None,
            Some(replay) => Some(match replay.catch_up(&sources.pipeline).await {
                Ok(read) => {
                    tracing::debug!(
                        shard,
                        waited_ms,
                        locked_ms,
                        read,
                        catch_up_ms = started.elapsed().as_millis() as u64,
                        "caught a warm shard up"
                    );
                    replay.take(shard).ok_or(Error::WarmShardMissing { shard })
                }
                Err(e) => Err(Error::from(e)),
            }),
        };
        drop(replay);
        // Served from here on, or (on failure) restored in full by the caller:
        // either way this shard's warm state is of no use any more.
        self.lock().remove(&shard);
        result
    }
}

/// Warms `shards` up, then reads on every `follow` while the group
/// lives; starts over after a failure.
async fn warm(
    group: std::sync::Weak<Group>,
    follow: Duration,
    shards: BTreeSet<ShardId>,
    entries: Arc<Mutex<BTreeMap<ShardId, Entry>>>,
    warmed: Arc<Notify>,
    sources: Sources,
    reading: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mark = |event: HandoverEvent| {
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        for shard in &shards {
            if let Some(entry) = entries.get_mut(shard)
                && let Ok(next) = entry.stage.on(event)
            {
                entry.stage = next;
            }
        }
    };
    loop {
        let started = std::time::Instant::now();
        let read = Reading::start(&reading);
        let recovered = ShardReplay::recover(
            sources.pipeline.clone(),
            sources.router.clone(),
            &shards.iter().copied().collect::<Vec<_>>(),
            sources.dedup_window,
            sources.lake.as_ref(),
        )
        .await;
        drop(read);
        let Some(strong) = group.upgrade() else {
            return;
        };
        match recovered {
            Ok(replay) => {
                tracing::info!(
                    shards = ?shards,
                    events = replay.stats.events,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "warmed shards up; following the pipeline until the cutover"
                );
                *strong.replay.lock().await = Some(replay);
                mark(HandoverEvent::WarmedUp);
                warmed.notify_one();
                drop(strong);
                break;
            }
            Err(e) => {
                tracing::warn!(shards = ?shards, error = %e, "warming shards up failed; retrying");
                strong
                    .failed
                    .store(true, std::sync::atomic::Ordering::Release);
                mark(HandoverEvent::Failed);
                drop(strong);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    loop {
        tokio::time::sleep(follow).await;
        let Some(strong) = group.upgrade() else {
            return;
        };
        let mut replay = strong.replay.lock().await;
        if let Some(r) = replay.as_mut()
            && let Err(e) = r.catch_up(&sources.pipeline).await
        {
            // The positions are unchanged: the next round reads the same again.
            tracing::debug!(error = %e, "reading on for a warm shard failed");
        }
    }
}
