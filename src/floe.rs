//! [`Floe`]: the assembled engine on one machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use floe_emitter::FileLog;
use floe_emitter::sink::SinkLag;
use floe_engine::{
    Command, Entity, EntityKey, Json, JsonLimits, JsonRole, KeyExtractor, Operation, Pipeline,
    RebalanceHint, Routed, Router, RoutingMetricsSnapshot, RoutingTable, Shard, ShardCluster,
    ShardConfig, ShardInfo, ShardStats, ShardUtilization, Topology, WriteAck,
};
use floe_query::CrossShardQuery;
use serde_json::Value;

use crate::cluster::ClusterNode;
use crate::datadir::{self, DirLock};
use crate::error::Result;
use crate::lake::{self, SinkTask};
use crate::telemetry::{Outcome, Telemetry};
use floe_config::{Config, PipelineUrl};
use floe_emitter::replay::RecoveryStats;

mod archive;
mod batch;
mod checks;
mod erase;
mod export;
mod item;
mod locate;
mod periods;
mod probes;
mod request;
mod snapshots;
mod sql;

pub use archive::{ArchiveStats, EntityRead, ReadSource};
use checks::display;
pub use erase::{EraseReport, RemainingCopy};
#[cfg(feature = "server")]
pub(crate) use export::ExportPage;
pub use export::ExportReport;
pub use request::WriteRequest;
use request::{Data, WriteOp};
pub use snapshots::SnapshotReport;
use snapshots::Snapshots;

/// floe: shard workers over a durable pipeline (the embedded log or Kafka).
///
/// Cloning is cheap; every clone drives the same shards. Writes are
/// acknowledged only once their event is durable in the pipeline.
#[derive(Debug, Clone)]
pub struct Floe {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    /// The shards and the routing table that reaches them.
    cluster: Arc<ShardCluster>,
    extractor: KeyExtractor,
    pipeline: Arc<dyn Pipeline>,
    /// Migrations of this instance.
    migrations: floe_migration::Migrator,
    telemetry: Telemetry,
    recovery: RecoveryStats,
    /// The sink landing the pipeline in Iceberg, when it runs in-process.
    sink: Option<SinkTask>,
    /// Cross-shard SQL over the lake (with fresh mode over `pipeline`).
    query: Option<Arc<CrossShardQuery>>,
    /// The lake, when configured: where reads of archived periods go.
    lake: Option<floe_emitter::sink::Lake>,
    started: Instant,
    closed: AtomicBool,
    /// Released by `close`, so the directory can be reopened right away.
    lock: Mutex<Option<DirLock>>,
    /// Cluster mode: this node's membership and shard ownership.
    node: Option<Arc<ClusterNode>>,
    /// Shard state snapshots (inactive with Kafka and in cluster mode).
    snapshots: Arc<Snapshots>,
}

impl Floe {
    /// Opens (or creates) the data directory, rebuilds every shard's state
    /// from the pipeline and starts one worker per shard.
    pub async fn open(config: Config) -> Result<Floe> {
        if let Some(cluster) = &config.cluster {
            config.validate()?;
            let node = Arc::new(ClusterNode::join(cluster).await?);
            return Self::open_in_cluster(config, node).await;
        }
        Self::open_with(config, None, None).await
    }

    /// Opens floe as a node of a cluster it has joined (`[cluster]`): every
    /// shard starts empty and refuses calls; the shards granted to this node
    /// are restored from the lake and the pipeline and served once the
    /// previous owner has let go (docs/cluster.md). The topology is the one
    /// stored in etcd.
    pub async fn open_in_cluster(config: Config, node: Arc<ClusterNode>) -> Result<Floe> {
        Self::open_with(config, None, Some(node)).await
    }

    /// [`Floe::open`] with a custom partition-key extractor (for example a
    /// function that routes child entities by their parent's id).
    pub async fn open_with_extractor(config: Config, extractor: KeyExtractor) -> Result<Floe> {
        Self::open_with(config, Some(extractor), None).await
    }

    async fn open_with(
        config: Config,
        extractor: Option<KeyExtractor>,
        node: Option<Arc<ClusterNode>>,
    ) -> Result<Floe> {
        config.validate()?;
        let lock = DirLock::acquire(&config.data_dir)?;
        let persisted = datadir::load_topology(&config.data_dir)?;
        let pipeline = open_pipeline(&config).await?;
        let lake = lake::open(&config).await?;
        if let Some(lake) = &lake {
            lake::check_pipeline_covers_lake(&*pipeline, lake).await?;
        }
        if let Some(node) = node {
            return Self::open_node(config, extractor, node, lock, pipeline, lake).await;
        }
        let topology = match persisted {
            Some(topology) => {
                if topology.shard_count != config.topology.shards {
                    tracing::info!(
                        persisted = topology.shard_count,
                        configured = config.topology.shards,
                        "the data directory keeps its persisted topology; the configured one applies only to new directories"
                    );
                }
                topology
            }
            None => {
                // Only a directory without history starts from the config.
                let evidence =
                    datadir::history_without_topology(&config, pipeline.as_ref(), lake.as_ref())
                        .await?;
                if !evidence.is_empty() {
                    return Err(datadir::topology_missing(&config.data_dir, evidence));
                }
                let topology = config.topology.initial()?;
                datadir::store_topology(&config.data_dir, &topology)?;
                topology
            }
        };
        let router = Arc::new(Router::new(topology)?);
        let started = Instant::now();
        let snapshots = Arc::new(Snapshots::new(
            &config.data_dir,
            &config.snapshots,
            matches!(config.pipeline_url()?, PipelineUrl::File(_)),
        ));
        let (recovered, recovery) =
            snapshots::recover(&snapshots, &pipeline, &router, &config, lake.as_ref()).await?;
        tracing::info!(
            events = recovery.events,
            applied = recovery.applied,
            snapshot_shards = recovery.snapshot_shards,
            from_snapshots = recovery.from_snapshots,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered shard state from the pipeline"
        );
        // The sink starts before the workers: if it cannot take the commit
        // lease, open fails before anything is written.
        let sink = match &lake {
            Some(lake) if config.lake.sink => {
                Some(SinkTask::start(lake.clone(), pipeline.clone(), &config).await?)
            }
            _ => None,
        };
        let shard_count = router.topology().shard_count;
        let cluster = Arc::new(ShardCluster::start(
            router.topology().clone(),
            recovered,
            pipeline.clone(),
            config.shards,
        )?);
        let query = lake.as_ref().map(|lake| {
            let mut options = config.query_options();
            // A custom extractor may key entities by anything.
            options.namespace_is_partition_key &= extractor.is_none();
            let routing = cluster.clone();
            Arc::new(
                CrossShardQuery::new(lake.clone(), options)
                    .with_pipeline(pipeline.clone())
                    .with_router(Arc::new(move || routing.router())),
            )
        });
        let migrations = floe_migration::Migrator::open(
            floe_migration::Deployment {
                cluster: cluster.clone(),
                lake: lake.clone(),
                topology: Arc::new(datadir::FileTopologyStore::new(&config.data_dir)),
            },
            floe_migration::JobStore::new(config.data_dir.join(floe_migration::JOBS_DIR)),
            router.topology(),
            config.migration.clone(),
        )?;
        let telemetry = Telemetry::new(shard_count, &config.health);
        snapshots.start(cluster.clone(), pipeline.clone());
        let floe = Floe {
            inner: Arc::new(Inner {
                extractor: extractor.unwrap_or_else(|| config.partition_key.extractor()),
                config,
                cluster,
                pipeline,
                migrations,
                telemetry,
                recovery,
                sink,
                query,
                lake,
                started: Instant::now(),
                closed: AtomicBool::new(false),
                lock: Mutex::new(Some(lock)),
                node: None,
                snapshots,
            }),
        };
        floe.start_period_task();
        Ok(floe)
    }

    /// [`Floe::open_with`] for a cluster node: the topology from etcd, every
    /// shard empty and gated, restored when granted (see `crate::cluster`).
    async fn open_node(
        config: Config,
        extractor: Option<KeyExtractor>,
        node: Arc<ClusterNode>,
        lock: DirLock,
        pipeline: Arc<dyn Pipeline>,
        lake: Option<floe_emitter::sink::Lake>,
    ) -> Result<Floe> {
        let topology = node.topology(config.topology.initial()?).await?;
        let shard_count = topology.shard_count;
        let query = lake.as_ref().map(|lake| {
            let mut options = config.query_options();
            options.namespace_is_partition_key &= extractor.is_none();
            Arc::new(CrossShardQuery::new(lake.clone(), options).with_pipeline(pipeline.clone()))
        });
        let recovered = (0..shard_count)
            .map(|_| floe_engine::RecoveredShard::new(config.shards.dedup_window))
            .collect();
        let cluster = Arc::new(ShardCluster::start_gated(
            topology.clone(),
            recovered,
            pipeline.clone(),
            config.shards,
            Some(node.gate()),
        )?);
        node.start(
            cluster.clone(),
            pipeline.clone(),
            lake.clone(),
            config.shards.dedup_window,
        );
        // Every node with the lake and `lake.sink` is a candidate; the one
        // elected through etcd runs the sink (docs/cluster.md).
        if let Some(lake) = &lake
            && config.lake.sink
        {
            node.start_sink(lake.clone(), pipeline.clone(), &config);
        }
        // In cluster mode a migration is a reshard through etcd
        // (`Migrations::start`); the migrator still answers plans,
        // inventories and this directory's job lists.
        let migrations = floe_migration::Migrator::open(
            floe_migration::Deployment {
                cluster: cluster.clone(),
                lake: lake.clone(),
                topology: Arc::new(datadir::FileTopologyStore::new(&config.data_dir)),
            },
            floe_migration::JobStore::new(config.data_dir.join(floe_migration::JOBS_DIR)),
            &topology,
            config.migration.clone(),
        )?;
        let telemetry = Telemetry::new(shard_count, &config.health);
        let (data_dir, snapshot_config) = (config.data_dir.clone(), config.snapshots.clone());
        Ok(Floe {
            inner: Arc::new(Inner {
                extractor: extractor.unwrap_or_else(|| config.partition_key.extractor()),
                config,
                cluster,
                pipeline,
                migrations,
                telemetry,
                recovery: RecoveryStats::default(),
                sink: None,
                query,
                lake,
                started: Instant::now(),
                closed: AtomicBool::new(false),
                lock: Mutex::new(Some(lock)),
                node: Some(node),
                // Cluster mode restores granted shards from the shared
                // pipeline; a local snapshot of an earlier ownership term is
                // no proof of a prefix of it.
                snapshots: Arc::new(Snapshots::new(&data_dir, &snapshot_config, false)),
            }),
        })
    }

    /// This node's cluster membership, in cluster mode.
    pub fn cluster_node(&self) -> Option<&Arc<ClusterNode>> {
        self.inner.node.as_ref()
    }

    /// The configuration floe was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Creates an entity.
    pub async fn create(&self, key: EntityKey, data: Value) -> Result<WriteAck> {
        self.write(WriteRequest::create(key, data)).await
    }

    /// Creates or replaces an entity.
    pub async fn put(&self, key: EntityKey, data: Value) -> Result<WriteAck> {
        self.write(WriteRequest::upsert(key, data)).await
    }

    /// Applies a JSON merge patch to an entity.
    pub async fn update(&self, key: EntityKey, patch: Value) -> Result<WriteAck> {
        self.write(WriteRequest::update(key, patch)).await
    }

    /// Deletes an entity.
    pub async fn delete(&self, key: EntityKey) -> Result<WriteAck> {
        self.write(WriteRequest::delete(key)).await
    }

    /// Performs a write; returns once its event is durable and applied.
    pub async fn write(&self, request: WriteRequest) -> Result<WriteAck> {
        self.check_open()?;
        let request = self.resolve_partition_key(request).await?;
        let command = self.command(request)?;
        self.reactivate_for(&command.partition_key).await?;
        let routed = self.inner.cluster.write(command).await;
        self.record_write(&routed);
        Ok(routed.result?)
    }

    /// Checks a write request and turns it into the command a shard takes:
    /// the key, the JSON limits, the partition key.
    fn command(&self, request: WriteRequest) -> Result<Command> {
        // The shard handle checks the key too; checking first reports a bad
        // key before a missing partition key or a bad body.
        request.key.validate()?;
        // The same JSON limits on every path (docs/configuration.md, [shards]).
        let limits = self.inner.config.shards.json_limits();
        let (op, data) = match request.op {
            WriteOp::Create(data) => {
                let (json, value) = self.prepare_data(&request.key, data, limits)?;
                (Operation::Create(json), value)
            }
            WriteOp::Upsert(data) => {
                let (json, value) = self.prepare_data(&request.key, data, limits)?;
                (Operation::Upsert(json), value)
            }
            WriteOp::Update(patch) => {
                if !patch.is_object() {
                    return Err(floe_engine::Error::InvalidEntity {
                        entity: display(&request.key),
                        reason: "a merge patch must be a JSON object".into(),
                    }
                    .into());
                }
                limits.check_depth(&request.key, JsonRole::Patch, &patch)?;
                (Operation::Update(patch.clone()), Some(patch))
            }
            WriteOp::Delete => (Operation::Delete, None),
            WriteOp::Restore(data, version) => {
                if version == 0 {
                    return Err(floe_engine::Error::InvalidEntity {
                        entity: display(&request.key),
                        reason: "a restore carries the exported version, at least 1".into(),
                    }
                    .into());
                }
                let (json, value) = self.prepare_data(&request.key, data, limits)?;
                (
                    Operation::Restore {
                        data: json,
                        version,
                    },
                    value,
                )
            }
        };
        let partition_key = match request.partition_key {
            Some(key) => {
                // A patch may not rewrite the fields its key is read from.
                if let Operation::Update(patch) = &op {
                    self.inner
                        .extractor
                        .check_patch(&request.key, patch, &key)?;
                }
                key
            }
            None => self.inner.extractor.extract(&request.key, data.as_ref())?,
        };
        Ok(Command {
            key: request.key,
            op,
            expected_version: request.expected_version,
            idempotency_key: request.idempotency_key,
            partition_key,
            key_hash: 0,
        })
    }

    /// Counts a routed write's outcome for health and metrics.
    fn record_write(&self, routed: &Routed<WriteAck>) {
        let outcome = match &routed.result {
            Ok(_) => Outcome::Ok,
            Err(e) if is_server_side(e) => Outcome::Failed,
            Err(_) => Outcome::Rejected,
        };
        self.inner
            .telemetry
            .record_write(routed.shard, routed.elapsed, outcome);
    }

    /// Creates or replaces an entity from JSON text (see [`WriteRequest::upsert_json`]).
    pub async fn put_json(&self, key: EntityKey, data: Json) -> Result<WriteAck> {
        self.write(WriteRequest::upsert_json(key, data)).await
    }

    /// The JSON text to store, and the parsed tree when key extraction needs it.
    fn prepare_data(
        &self,
        key: &EntityKey,
        data: Data,
        limits: JsonLimits,
    ) -> Result<(Json, Option<Value>)> {
        match data {
            Data::Value(value) => Ok((limits.to_json(key, &value)?, Some(value))),
            Data::Json(json) => {
                limits.check_json(key, &json)?;
                self.with_value(key, json)
            }
            Data::Text(text) => {
                let trimmed = text.trim();
                // One pass: syntax, one object, and the limits.
                limits.check_text(key, JsonRole::Data, trimmed)?;
                let json = if trimmed.len() == text.len() {
                    Json::from_trusted(text)
                } else {
                    Json::from_trusted(trimmed)
                };
                self.with_value(key, json)
            }
        }
    }

    /// `json` with its parsed tree when key extraction needs it.
    fn with_value(&self, key: &EntityKey, json: Json) -> Result<(Json, Option<Value>)> {
        let value = if self.inner.extractor.needs_data(&key.entity_type) {
            Some(json.to_value()?)
        } else {
            None
        };
        Ok((json, value))
    }

    /// Reads a live entity from the shard that owns it (so a caller always
    /// reads its own acknowledged writes).
    /// Time-routed entities are found without their time field (see
    /// `docs/configuration.md`, *Time sharding*).
    /// Entities of archived periods are read from the lake
    /// ([`Floe::read`] says which answered).
    pub async fn get(&self, key: &EntityKey) -> Result<Option<Entity>> {
        Ok(self.read(key, None).await?.map(|read| read.entity))
    }

    /// [`Floe::get`] for entities whose partition key comes from their data.
    pub async fn get_routed(&self, key: &EntityKey, partition_key: &str) -> Result<Option<Entity>> {
        Ok(self
            .read(key, Some(partition_key))
            .await?
            .map(|read| read.entity))
    }

    /// Live entities of a namespace and type in id order, after `after`, at
    /// most `limit`; asks every shard and merges. Each shard lists only the
    /// entities the current topology gives it, so the copies a migration
    /// makes are never listed twice.
    pub async fn list(
        &self,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        self.check_open()?;
        Ok(self
            .inner
            .cluster
            .list(namespace, entity_type, after, limit)
            .await?)
    }

    /// Live entities of a namespace and type that shard `shard` owns, in id
    /// order (what [`Floe::list`] merges).
    pub async fn list_shard(
        &self,
        shard: u32,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        self.check_open()?;
        Ok(self
            .inner
            .cluster
            .list_shard(shard, namespace, entity_type, after, limit)
            .await?)
    }

    /// Where a partition key routes under the current topology.
    pub fn shard_for_key(&self, partition_key: &str) -> ShardInfo {
        self.router().shard_info(partition_key)
    }

    /// The partition key floe would use for an entity with this data.
    pub fn partition_key_of(&self, key: &EntityKey, data: Option<&Value>) -> Result<String> {
        Ok(self.inner.extractor.extract(key, data)?)
    }

    /// The topology in force.
    pub fn topology(&self) -> Topology {
        self.router().topology().clone()
    }

    /// Counters of every shard (while a migration copies, a target's counters
    /// include the copies).
    pub async fn shard_stats(&self) -> Result<Vec<ShardStats>> {
        Ok(self.inner.cluster.shard_stats().await?)
    }

    /// Counters of one shard.
    pub async fn shard(&self, shard: u32) -> Result<ShardStats> {
        Ok(self.inner.cluster.shard(shard)?.stats().await?)
    }

    /// Routing counters since open.
    pub fn routing_metrics(&self) -> RoutingMetricsSnapshot {
        self.inner.cluster.routing_metrics()
    }

    /// Shards with more than `threshold` accesses in the last `window_ms`.
    pub fn hot_shards(&self, threshold: u64, window_ms: u64) -> Vec<u32> {
        self.inner.cluster.hot_shards(threshold, window_ms)
    }

    /// Entity and byte utilization of every shard against the configured limits
    /// (as of the last [`Floe::shard_stats`] call or open).
    pub fn utilization(&self) -> Vec<ShardUtilization> {
        self.inner.cluster.utilization(&self.inner.config.limits)
    }

    /// Split and merge hints from the configured limits.
    pub fn rebalance_hints(&self) -> Vec<RebalanceHint> {
        self.inner
            .cluster
            .rebalance_hints(&self.inner.config.limits)
    }

    /// What recovery replayed when this instance opened.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.inner.recovery
    }

    /// The shard worker settings in force.
    pub fn shard_config(&self) -> ShardConfig {
        self.inner.config.shards
    }

    /// How far the Iceberg lake is behind the pipeline: events appended but
    /// not yet committed, and seconds since the lake last held everything.
    /// Fails when the sink does not run inside this instance.
    pub async fn sink_lag(&self) -> Result<SinkLag> {
        match &self.inner.sink {
            Some(sink) => sink.lag(&*self.inner.pipeline).await,
            None => Err(crate::Error::SinkNotRunning),
        }
    }

    /// The handle of a shard the current routing names.
    fn handle(&self, shard: u32) -> Result<Shard> {
        Ok(self.inner.cluster.shard(shard)?)
    }

    /// The pipeline this instance writes to. Events appended through it
    /// bypass the shards: after one, this instance writes no more shard
    /// snapshots (the next open replays them from the log).
    pub fn pipeline(&self) -> Arc<dyn Pipeline> {
        self.inner.snapshots.watch(self.inner.pipeline.clone())
    }

    /// Stops accepting requests, lets every shard finish what is queued,
    /// lets the sink land everything (a final commit), then closes the
    /// pipeline. Idempotent.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The last snapshot round runs while the shards still answer, and
        // ends (files complete, handles closed) before the directory's lock
        // is released below.
        let snapshots = &self.inner.snapshots;
        snapshots.stop().await;
        if snapshots.active() && self.inner.config.snapshots.on_close {
            match snapshots
                .round(&self.inner.cluster, &*self.inner.pipeline)
                .await
            {
                Ok(report) if !report.skipped.is_empty() => {
                    tracing::warn!(skipped = ?report.skipped, "shard snapshots skipped on close");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "shard snapshots on close failed"),
            }
        }
        self.inner.cluster.close().await;
        // The shards are stopped: leave the cluster so that the controller
        // re-places them now rather than after the lease TTL.
        if let Some(node) = &self.inner.node
            && let Err(e) = node.leave().await
        {
            tracing::warn!(error = %e, "leaving the cluster failed; the lease expires by itself");
        }
        // Every acknowledged write is in the pipeline now: land it all.
        if let Some(sink) = &self.inner.sink {
            sink.stop().await;
        }
        self.inner.pipeline.close().await?;
        self.inner
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Ok(())
    }

    fn router(&self) -> Arc<Router> {
        self.inner.cluster.router()
    }

    /// The routing table in force.
    pub(crate) fn routing(&self) -> Arc<RoutingTable> {
        self.inner.cluster.routing()
    }

    pub(crate) fn migrator(&self) -> &floe_migration::Migrator {
        &self.inner.migrations
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(floe_engine::Error::Closed("floe has been closed".into()).into());
        }
        Ok(())
    }
}

/// Opens the pipeline the configuration's URL names.
pub(crate) async fn open_pipeline(config: &Config) -> Result<Arc<dyn Pipeline>> {
    Ok(match config.pipeline_url()? {
        PipelineUrl::File(dir) => {
            let options = config.log.options();
            let log = tokio::task::spawn_blocking(move || FileLog::open(&dir, options))
                .await
                .map_err(|e| crate::Error::task("opening the log", e))?;
            match log {
                Ok(log) => Arc::new(log),
                Err(e @ floe_emitter::Error::CorruptRecord { .. }) => {
                    return Err(crate::Error::CorruptLog(e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        PipelineUrl::Kafka { .. } => open_kafka(config).await?,
    })
}

#[cfg(feature = "kafka")]
async fn open_kafka(config: &Config) -> Result<Arc<dyn Pipeline>> {
    let options = config
        .kafka_options()?
        .expect("open_kafka is called for kafka:// URLs only");
    let pipeline = floe_emitter::KafkaPipeline::open(options)
        .await
        .map_err(|e| e.into_pipeline_error("kafka"))?;
    Ok(Arc::new(pipeline))
}

#[cfg(not(feature = "kafka"))]
async fn open_kafka(config: &Config) -> Result<Arc<dyn Pipeline>> {
    Err(crate::Error::Config(format!(
        "pipeline URL {:?}: this floe was built without the `kafka` feature",
        config.pipeline
    )))
}

/// A failed replay as this crate reports it: the pipeline's own errors as
/// engine errors, deleted history without a lake as configuration, the rest
/// (the lake, or retention past what it holds) as the lake's.
pub(crate) fn replay_error(e: floe_emitter::Error) -> crate::Error {
    match e {
        floe_emitter::Error::Pipeline { cause } => crate::Error::Engine(cause),
        e @ floe_emitter::Error::HistoryNeedsLake { .. } => crate::Error::Config(e.to_string()),
        e => crate::Error::Lake(e),
    }
}

/// Whether a write failed on floe's side (health counts these) rather
/// than for the caller's input.
fn is_server_side(e: &floe_engine::Error) -> bool {
    use floe_engine::Error as E;
    matches!(
        e,
        E::Pipeline { .. } | E::Io { .. } | E::Closed(_) | E::Codec(_) | E::StaleRouting { .. }
    )
}
