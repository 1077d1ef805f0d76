//! [`ShardCluster`]: the shards of a deployment and the routing table that
//! sends each request to one of them.
//!
//! The cluster owns the routing table (router, shard handles, routing epoch
//! and the admission hook of a running migration), spawns and retires
//! shards, and runs the write path's re-route loop:
//!
//! ```text
//! write ─► routing table ─► key hash ─► shard ─► [admission: direct | held] ─► Shard::write(epoch)
//!              ▲                                                                   │
//!              └──────────── StaleRouting (the table changed meanwhile) ◄──────────┘
//! ```
//!
//! Every routing change (a migration's install, cutover, rollback, a shard
//! leaving) swaps the whole table under a new epoch and publishes that epoch
//! to the local workers under the same lock: a write routed under the old
//! table is refused as stale and re-routed, and no write routed under the
//! new one is refused.

mod admission;
mod ownership;
mod shard;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

pub use admission::{Admission, AdmissionGuard, Admit};
pub use ownership::{OwnerRefusal, OwnershipGate};
pub use shard::{KeyLoad, MovingDigests, Shard};

use crate::assigner::{AccessKind, LoadTracker, RebalanceHint, ShardLimits, ShardUtilization};
use crate::command::{Command, WriteAck};
use crate::dedup::DedupWindow;
use crate::entity::{Entity, EntityKey};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::idempotency::IdempotencyIndex;
use crate::keyindex::PartitionKeyIndex;
use crate::pipeline::Pipeline;
use crate::routing::{Router, RoutingMetrics, RoutingMetricsSnapshot};
use crate::state::ShardState;
use crate::topology::Topology;
use crate::worker::{Outcome, ShardConfig, ShardStats, ShardWorker};

/// How often a write is re-routed after its shard reports a routing change.
/// A migration changes routing at most twice (install, cutover or rollback),
/// so a write re-routed more often than this is in a loop.
pub const MAX_REROUTES: usize = 8;

/// Ratio to the mean accesses above which [`ShardCluster::skewed_shards`]
/// reports a shard, from the seeds' runbooks.
pub const DEFAULT_SKEW_RATIO: f64 = LoadTracker::DEFAULT_SKEW_RATIO;

/// What writes route by: a router, the shard handles (indexed by shard id,
/// including shards a running migration added), the routing epoch, and the
/// admission hook of a running migration. Replaced as a whole.
#[derive(Debug)]
pub struct RoutingTable {
    router: Arc<Router>,
    shards: Arc<Vec<Shard>>,
    epoch: u64,
    admission: Option<Arc<dyn Admission>>,
}

impl RoutingTable {
    /// The router in force.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Every shard, indexed by id (also shards a migration added and the
    /// router does not name yet).
    pub fn shards(&self) -> &Arc<Vec<Shard>> {
        &self.shards
    }

    /// The routing epoch: one more at every change of this table.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The admission hook of the running migration, if any.
    pub fn admission(&self) -> Option<&Arc<dyn Admission>> {
        self.admission.as_ref()
    }

    /// The shard with id `shard`.
    pub fn shard(&self, shard: u32) -> Result<&Shard> {
        self.shards.get(shard as usize).ok_or(Error::UnknownShard {
            shard,
            shard_count: self.shards.len() as u32,
        })
    }
}

/// The parts of the next [`RoutingTable`]; its epoch is assigned by
/// [`ShardCluster::swap_routing`].
#[derive(Debug)]
pub struct NextRouting {
    /// The router.
    pub router: Arc<Router>,
    /// The shards, indexed by id.
    pub shards: Arc<Vec<Shard>>,
    /// The admission hook of a running migration.
    pub admission: Option<Arc<dyn Admission>>,
}

/// A routed call's outcome with where it went and how long the shard took
/// (for the caller's telemetry).
#[derive(Debug)]
pub struct Routed<T> {
    /// The shard that answered (the last one tried).
    pub shard: u32,
    /// How long that shard took.
    pub elapsed: Duration,
    /// The answer.
    pub result: Result<T>,
}

/// A shard's state rebuilt from history, ready to start a shard with.
#[derive(Debug, Default)]
pub struct RecoveredShard {
    state: ShardState,
    dedup: DedupWindow,
}

impl RecoveredShard {
    /// An empty shard remembering up to `dedup_window` caller idempotency
    /// keys.
    pub fn new(dedup_window: usize) -> Self {
        RecoveredShard {
            state: ShardState::new(),
            dedup: DedupWindow::new(dedup_window),
        }
    }

    /// Applies one replayed event (highest version wins) and remembers its
    /// caller idempotency key; whether it changed state.
    pub fn apply(&mut self, event: Event) -> bool {
        self.dedup.observe(&event);
        self.state.apply_owned(event)
    }

    /// The state rebuilt so far.
    pub fn state(&self) -> &ShardState {
        &self.state
    }

    /// The idempotency window rebuilt so far.
    pub fn dedup(&self) -> &DedupWindow {
        &self.dedup
    }

    pub(crate) fn from_parts(state: ShardState, dedup: DedupWindow) -> Self {
        RecoveredShard { state, dedup }
    }

    /// Drops the records of archived periods: history replays them (the
    /// log and the lake still hold their events), but they live in the lake
    /// only. Returns how many went.
    pub fn drop_archived(&mut self, router: &Router) -> usize {
        if !router.has_archived() {
            return 0;
        }
        self.state
            .retain(|_, record| !router.is_archived(&record.partition_key))
    }
}

impl ShardCluster {
    /// Replaces shard `shard`'s state and idempotency window with a
    /// restored one (cluster mode: a node taking a shard over rebuilds it
    /// from the lake and the pipeline first), and records its entities in
    /// the deployment's partition-key index.
    pub async fn restore(&self, shard: u32, mut recovered: RecoveredShard) -> Result<()> {
        recovered.drop_archived(&self.router());
        let RecoveredShard { state, dedup } = recovered;
        for (key, record) in state.iter() {
            self.keys
                .observe(key, record.key_hash, record.version, record.data.is_some());
        }
        self.shard(shard)?
            .run(move |current, window| {
                *current = state;
                *window = dedup;
            })
            .await
    }

    /// Returns once every request queued on shard `shard` before this call
    /// has been answered: its group commits are durable or failed. Cluster
    /// mode: a node that stopped serving a shard waits for this before it
    /// releases the shard to the next owner.
    pub async fn quiesce(&self, shard: u32) -> Result<()> {
        self.shard(shard)?.run(|_, _| ()).await
    }
}

/// The shards of a deployment, their routing table and load.
#[derive(Debug)]
pub struct ShardCluster {
    /// Copy on write: readers clone the `Arc`, changes swap it.
    routing: RwLock<Arc<RoutingTable>>,
    /// The routing epoch every local worker checks writes against. Stored
    /// only while `routing`'s write lock is held, together with it.
    epoch: Arc<AtomicU64>,
    pipeline: Arc<dyn Pipeline>,
    config: ShardConfig,
    /// Entity -> partition key, shared by every shard worker (so no write
    /// gives an existing entity a second copy on another shard).
    keys: Arc<PartitionKeyIndex>,
    /// Caller idempotency keys of every shard, with request fingerprints.
    idempotency: Arc<IdempotencyIndex>,
    workers: Mutex<Vec<JoinHandle<ShardState>>>,
    /// Shards that left the routing (removed, or added by a migration that
    /// rolled back). They keep running, refusing stale writes so that their
    /// callers re-route, until `close`.
    retired: Mutex<Vec<Shard>>,
    load: LoadTracker,
    metrics: RoutingMetrics,
    started: Instant,
    closed: AtomicBool,
    /// Cluster mode: which shards this node may serve now.
    gate: Option<Arc<dyn OwnershipGate>>,
}

impl ShardCluster {
    /// Starts one local shard per recovered state (shard `i` from
    /// `recovered[i]`), routed by `topology`.
    pub fn start(
        topology: Topology,
        recovered: Vec<RecoveredShard>,
        pipeline: Arc<dyn Pipeline>,
        config: ShardConfig,
    ) -> Result<ShardCluster> {
        Self::start_gated(topology, recovered, pipeline, config, None)
    }

    /// [`ShardCluster::start`] for cluster mode: every shard worker serves
    /// reads and acknowledges writes only while `gate` says this node owns
    /// the shard (see [`OwnershipGate`]).
    pub fn start_gated(
        topology: Topology,
        recovered: Vec<RecoveredShard>,
        pipeline: Arc<dyn Pipeline>,
        config: ShardConfig,
        gate: Option<Arc<dyn OwnershipGate>>,
    ) -> Result<ShardCluster> {
        let router = Arc::new(Router::new(topology)?);
        let shard_count = router.topology().shard_count;
        if recovered.len() != shard_count as usize {
            return Err(Error::InvalidTopology(format!(
                "{} recovered shards for a topology of {shard_count}",
                recovered.len()
            )));
        }
        let mut recovered = recovered;
        for shard in &mut recovered {
            shard.drop_archived(&router);
        }
        let epoch = Arc::new(AtomicU64::new(1));
        let keys = Arc::new(PartitionKeyIndex::rebuild(
            recovered.iter().map(|r| &r.state),
        ));
        let idempotency = Arc::new(IdempotencyIndex::rebuild(
            config.dedup_window * recovered.len(),
            (0u32..).zip(recovered.iter().map(|r| &r.dedup)),
        ));
        let load = LoadTracker::new(shard_count);
        let mut shards = Vec::with_capacity(recovered.len());
        let mut workers = Vec::with_capacity(recovered.len());
        for (shard, recovered) in (0u32..).zip(recovered) {
            load.set_entity_stats(
                shard,
                recovered.state.live_entities(),
                recovered.state.live_bytes(),
            );
            let (handle, worker) = ShardWorker {
                shard,
                state: recovered.state,
                dedup: recovered.dedup,
                pipeline: pipeline.clone(),
                config,
                epoch: epoch.clone(),
                keys: keys.clone(),
                idempotency: idempotency.clone(),
                gate: gate.clone(),
            }
            .spawn();
            shards.push(Shard::local(handle));
            workers.push(worker);
        }
        Ok(ShardCluster {
            routing: RwLock::new(Arc::new(RoutingTable {
                router,
                shards: Arc::new(shards),
                epoch: 1,
                admission: None,
            })),
            epoch,
            pipeline,
            config,
            keys,
            idempotency,
            workers: Mutex::new(workers),
            retired: Mutex::new(Vec::new()),
            load,
            metrics: RoutingMetrics::new(shard_count),
            started: Instant::now(),
            closed: AtomicBool::new(false),
            gate,
        })
    }

    /// The routing table in force.
    pub fn routing(&self) -> Arc<RoutingTable> {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The router in force.
    pub fn router(&self) -> Arc<Router> {
        self.routing().router.clone()
    }

    /// The topology in force.
    pub fn topology(&self) -> Topology {
        self.router().topology().clone()
    }

    /// The pipeline the shards write to.
    pub fn pipeline(&self) -> &Arc<dyn Pipeline> {
        &self.pipeline
    }

    /// The shard worker settings.
    pub fn config(&self) -> ShardConfig {
        self.config
    }

    /// The handle of shard `shard` in the routing in force.
    pub fn shard(&self, shard: u32) -> Result<Shard> {
        self.routing().shard(shard).cloned()
    }

    /// Routes a write (by its partition key under the table in force) and
    /// sends it; re-routes it when the table changed before the shard saw
    /// it. A write to a key a running migration moves passes its admission
    /// hook first: it goes to its old owner holding the hook's guard, or
    /// waits until the hook releases it and routes again.
    pub async fn write(&self, mut command: Command) -> Routed<WriteAck> {
        let mut attempts = 0;
        loop {
            let routing = self.routing();
            let router = &routing.router;
            command.key_hash = router.key_hash(&command.partition_key);
            let shard = router.route(&command.partition_key, command.key_hash);
            // A time-routed key without a shard is refused before anything
            // is written.
            if let Err(e) = router.check_write(&command.partition_key) {
                self.metrics.record_error();
                return Routed {
                    shard,
                    elapsed: Duration::ZERO,
                    result: Err(e),
                };
            }
            let mut _guard = None;
            if let Some(admission) = &routing.admission
                && admission.holds(&command.partition_key, command.key_hash)
            {
                match admission.admit().await {
                    Admit::Direct(guard) => _guard = Some(guard),
                    Admit::Held => continue,
                }
            }
            self.metrics.record(shard);
            self.load
                .record_access(shard, AccessKind::Write, self.now_ms());
            let started = Instant::now();
            let outcome = routing.shards[shard as usize]
                .write(command, routing.epoch)
                .await;
            let result = match outcome {
                Outcome::Stale(back) if attempts < MAX_REROUTES => {
                    attempts += 1;
                    command = back;
                    continue;
                }
                Outcome::Stale(_) => Err(Error::StaleRouting {
                    routed_epoch: routing.epoch,
                    current_epoch: self.epoch.load(Ordering::Acquire),
                }),
                Outcome::Done(result) => result,
            };
            if result.is_err() {
                self.metrics.record_error();
            }
            return Routed {
                shard,
                elapsed: started.elapsed(),
                result,
            };
        }
    }

    /// Routes and sends many writes at once; one outcome per command, in
    /// order. Each shard gets its writes as one request (up to
    /// `shards.max_batch` per group commit), where they are admitted one by
    /// one in their order: each write stays atomic and idempotent on its own,
    /// exactly as if sent alone in that order. Writes refused as stale are
    /// routed again (at most [`MAX_REROUTES`] times); writes to keys a
    /// running migration holds go through [`ShardCluster::write`] one by one.
    pub async fn write_many(&self, commands: Vec<Command>) -> Vec<Routed<WriteAck>> {
        let mut out: Vec<Routed<WriteAck>> = std::iter::repeat_with(|| Routed {
            shard: 0,
            elapsed: Duration::ZERO,
            result: Err(Error::Closed("the write was not answered".into())),
        })
        .take(commands.len())
        .collect();
        let mut todo: Vec<(usize, Command)> = commands.into_iter().enumerate().collect();
        let mut attempts = 0;
        while !todo.is_empty() {
            let routing = self.routing();
            let router = &routing.router;
            let now = self.now_ms();
            let mut by_shard: BTreeMap<u32, (Vec<usize>, Vec<Command>)> = BTreeMap::new();
            let mut held = Vec::new();
            for (index, mut command) in todo.drain(..) {
                command.key_hash = router.key_hash(&command.partition_key);
                if let Err(e) = router.check_write(&command.partition_key) {
                    self.metrics.record_error();
                    out[index] = Routed {
                        shard: router.route(&command.partition_key, command.key_hash),
                        elapsed: Duration::ZERO,
                        result: Err(e),
                    };
                    continue;
                }
                if let Some(admission) = &routing.admission
                    && admission.holds(&command.partition_key, command.key_hash)
                {
                    held.push((index, command));
                    continue;
                }
                let shard = router.route(&command.partition_key, command.key_hash);
                self.metrics.record(shard);
                self.load.record_access(shard, AccessKind::Write, now);
                let (indices, commands) = by_shard.entry(shard).or_default();
                indices.push(index);
                commands.push(command);
            }
            let max_batch = self.config.max_batch;
            let batches = by_shard.into_iter().map(|(shard, (indices, commands))| {
                let routing = &routing;
                async move {
                    let started = Instant::now();
                    let outcomes = routing.shards[shard as usize]
                        .write_many(commands, routing.epoch, max_batch)
                        .await;
                    (shard, started.elapsed(), indices, outcomes)
                }
            });
            let singles = held
                .into_iter()
                .map(|(index, command)| async move { (index, self.write(command).await) });
            let (batches, singles) = futures::future::join(
                futures::future::join_all(batches),
                futures::future::join_all(singles),
            )
            .await;
            for (index, routed) in singles {
                out[index] = routed;
            }
            for (shard, elapsed, indices, outcomes) in batches {
                for (index, outcome) in indices.into_iter().zip(outcomes) {
                    let result = match outcome {
                        Outcome::Done(result) => result,
                        Outcome::Stale(command) if attempts < MAX_REROUTES => {
                            todo.push((index, command));
                            continue;
                        }
                        Outcome::Stale(_) => Err(Error::StaleRouting {
                            routed_epoch: routing.epoch,
                            current_epoch: self.epoch.load(Ordering::Acquire),
                        }),
                    };
                    if result.is_err() {
                        self.metrics.record_error();
                    }
                    out[index] = Routed {
                        shard,
                        elapsed,
                        result,
                    };
                }
            }
            // Stale writes go back in input order, as they were sent.
            todo.sort_unstable_by_key(|(index, _)| *index);
            attempts += 1;
        }
        out
    }

    /// Reads a live entity from the shard its partition key routes to.
    pub async fn get(&self, key: &EntityKey, partition_key: &str) -> Result<Option<Entity>> {
        let routing = self.routing();
        let router = &routing.router;
        router.check(partition_key)?;
        let shard = router.route(partition_key, router.key_hash(partition_key));
        self.load
            .record_access(shard, AccessKind::Read, self.now_ms());
        routing.shards[shard as usize].get(key.clone()).await
    }

    /// The live entity `key` with its partition key, found by asking every
    /// shard (each answers only for what the routing in force gives it, so
    /// a migration's copies never answer). What gets, updates and deletes of
    /// time-routed entities use when the request does not carry the time
    /// field: the shards' own records are the entity -> partition key index,
    /// rebuilt with them on every restore and replay. One in-memory lookup
    /// per shard.
    pub async fn locate(&self, key: &EntityKey) -> Result<Option<(Entity, String)>> {
        let routing = self.routing();
        let requests = routing
            .shards
            .iter()
            .map(|shard| shard.locate_owned((*routing.router).clone(), key.clone()));
        let mut found = None;
        for answer in futures::future::join_all(requests).await {
            if let Some(hit) = answer? {
                found = Some(hit);
            }
        }
        if let Some((_, partition_key)) = &found {
            let shard = routing
                .router
                .route(partition_key, routing.router.key_hash(partition_key));
            self.load
                .record_access(shard, AccessKind::Read, self.now_ms());
        }
        Ok(found)
    }

    /// Live entities of a namespace and type in id order, after `after`, at
    /// most `limit`, from every shard. Each shard lists only the entities the
    /// router gives it, so the copies a migration makes are never listed
    /// twice.
    pub async fn list(
        &self,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        let routing = self.routing();
        let requests = routing.shards.iter().map(|shard| {
            shard.list_owned(
                (*routing.router).clone(),
                namespace.to_string(),
                entity_type.to_string(),
                after.map(str::to_string),
                limit,
            )
        });
        let mut all = Vec::new();
        for page in futures::future::join_all(requests).await {
            all.extend(page?);
        }
        all.sort_by(|a, b| a.key.id.cmp(&b.key.id));
        all.truncate(limit);
        Ok(all)
    }

    /// Live entities of a namespace, every type, in (type, id) order after
    /// `after`, at most `limit`, each with its partition key; asks every
    /// shard and merges, each listing only what the current topology gives
    /// it (as [`ShardCluster::list`]).
    pub async fn list_namespace(
        &self,
        namespace: &str,
        after: Option<&EntityKey>,
        limit: usize,
    ) -> Result<Vec<(Entity, String)>> {
        let routing = self.routing();
        let requests = routing.shards.iter().map(|shard| {
            shard.list_namespace_owned(
                (*routing.router).clone(),
                namespace.to_string(),
                after.cloned(),
                limit,
            )
        });
        let mut all = Vec::new();
        for page in futures::future::join_all(requests).await {
            all.extend(page?);
        }
        all.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        all.truncate(limit);
        Ok(all)
    }

    /// [`ShardCluster::list`] on one shard.
    pub async fn list_shard(
        &self,
        shard: u32,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        let routing = self.routing();
        routing
            .shard(shard)?
            .list_owned(
                (*routing.router).clone(),
                namespace.to_string(),
                entity_type.to_string(),
                after.map(str::to_string),
                limit,
            )
            .await
    }

    /// Counters of every shard; also publishes their entity totals to the
    /// load tracker.
    pub async fn shard_stats(&self) -> Result<Vec<ShardStats>> {
        let routing = self.routing();
        let mut stats = Vec::with_capacity(routing.shards.len());
        for page in futures::future::join_all(routing.shards.iter().map(Shard::stats)).await {
            let page = page?;
            self.load
                .set_entity_stats(page.shard, page.entities, page.bytes);
            stats.push(page);
        }
        Ok(stats)
    }

    /// Applies events replayed from the lake to shard `shard` and records
    /// their entities in the partition-key index: what a reactivated
    /// period's entities take (archival forgot them there). Returns how
    /// many changed state.
    pub async fn ingest_restored(&self, shard: u32, events: Vec<Event>) -> Result<u64> {
        for event in &events {
            self.keys.observe_event(event);
        }
        self.shard(shard)?.ingest(events).await
    }

    /// Drops the entities of archived periods from every shard and from the
    /// partition-key index (archival's last step, once the lake holds all
    /// of their history); returns how many records (live and tombstones)
    /// went.
    pub async fn evict_archived(&self) -> Result<u64> {
        let routing = self.routing();
        let mut evicted = 0;
        for shard in routing.shards.iter() {
            let (router, keys) = (routing.router.clone(), self.keys.clone());
            evicted += shard
                .run(move |state, _| {
                    state.retain(|key, record| {
                        let archived = router.is_archived(&record.partition_key);
                        if archived {
                            keys.forget(key, record.key_hash);
                        }
                        !archived
                    }) as u64
                })
                .await?;
        }
        self.keys.shrink();
        Ok(evicted)
    }

    /// Waits until every request sent to any shard of `routing` before this
    /// call has been answered.
    pub async fn barrier(routing: &RoutingTable) -> Result<()> {
        for done in futures::future::join_all(routing.shards.iter().map(Shard::barrier)).await {
            done?;
        }
        Ok(())
    }

    /// Replaces the routing table with `change(current)` under the next
    /// epoch, and publishes the epoch to the workers before any writer can
    /// see the new table (both under the write lock).
    pub fn swap_routing(
        &self,
        change: impl FnOnce(&RoutingTable) -> NextRouting,
    ) -> Arc<RoutingTable> {
        let mut guard = self.routing.write().unwrap_or_else(|p| p.into_inner());
        let next = change(&guard);
        let next = Arc::new(RoutingTable {
            router: next.router,
            shards: next.shards,
            epoch: guard.epoch + 1,
            admission: next.admission,
        });
        self.epoch.store(next.epoch, Ordering::Release);
        *guard = next.clone();
        let shard_count = next.router.topology().shard_count;
        if self.load.shard_count() < shard_count {
            self.load.resize(shard_count);
        }
        next
    }

    /// Starts an empty local shard (a migration's new shard); it joins the
    /// routing when a [`ShardCluster::swap_routing`] names it.
    pub fn spawn_shard(&self, shard: u32) -> Shard {
        let (handle, worker) = ShardWorker {
            shard,
            state: ShardState::new(),
            dedup: DedupWindow::new(self.config.dedup_window),
            pipeline: self.pipeline.clone(),
            config: self.config,
            epoch: self.epoch.clone(),
            keys: self.keys.clone(),
            idempotency: self.idempotency.clone(),
            gate: self.gate.clone(),
        }
        .spawn();
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(worker);
        Shard::local(handle)
    }

    /// Keeps a shard that left the routing running until
    /// [`ShardCluster::close`] (it refuses stale writes meanwhile, so that
    /// their callers re-route).
    pub fn retire(&self, shard: Shard) {
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shard);
    }

    /// Shrinks the load tracker after shards left for good.
    pub fn resize_load(&self, shard_count: u32) {
        self.load.resize(shard_count);
    }

    /// Stops every shard once it has answered what is queued, and waits for
    /// the local workers. Idempotent.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let retired = std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        for shard in self.routing().shards.iter().chain(&retired) {
            shard.stop().await;
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "a shard worker panicked");
            }
        }
    }

    /// Routing counters since start.
    pub fn routing_metrics(&self) -> RoutingMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shards with at least `threshold` accesses in the last `window_ms`,
    /// hottest first.
    pub fn hot_shards(&self, threshold: u64, window_ms: u64) -> Vec<u32> {
        self.load.hot_shards(threshold, window_ms, self.now_ms())
    }

    /// Shards with more than `ratio` times the mean accesses in the last
    /// `window_ms`, hottest first.
    pub fn skewed_shards(&self, ratio: f64, window_ms: u64) -> Vec<u32> {
        self.load.skewed_shards(ratio, window_ms, self.now_ms())
    }

    /// Entity and byte utilization of every shard against `limits` (as of
    /// the last [`ShardCluster::shard_stats`] or start).
    pub fn utilization(&self, limits: &ShardLimits) -> Vec<ShardUtilization> {
        self.load.utilization(limits)
    }

    /// Split and merge hints from `limits`.
    pub fn rebalance_hints(&self, limits: &ShardLimits) -> Vec<RebalanceHint> {
        self.load.rebalance_hints(limits)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
