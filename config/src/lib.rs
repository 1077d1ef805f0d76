//! floe's configuration: defaults, validation, TOML.

#[cfg(test)]
mod defaults_tests;
mod error;
mod kafka;
mod maintenance;
mod serve;
mod snapshots;

pub use self::error::{Error, Result};
pub use self::kafka::KafkaConfig;
pub use self::maintenance::MaintenanceConfig;
pub use self::serve::{
    AuthMode, HealthConfig, Role, Secret, ServeConfig, TOKENS_ENV, Token, TokenConfig,
};
pub use self::snapshots::{MIN_SNAPSHOT_INTERVAL_MS, SnapshotConfig};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_emitter::sink::{CatalogUrl, LakeLocation, SinkOptions};
use floe_emitter::{FsyncPolicy, LogOptions};
use floe_engine::{
    HashFunction, KeyExtractor, PartitionKeySpec, ShardConfig, ShardLimits, Strategy, Topology,
};
use serde::{Deserialize, Serialize};

/// Everything floe needs to open a data directory. Every field has a default;
/// `docs/configuration.md` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where floe keeps its lock, topology and (for `file://`) its log.
    pub data_dir: PathBuf,
    /// The pipeline by URL: `file://` (the log under `data_dir/log`),
    /// `file:///some/dir`, or a Kafka topic:
    /// `kafka://host:port[,host:port]/topic?partitions=16&linger.ms=5`
    /// (query parameters other than `partitions` are librdkafka properties;
    /// `partitions` defaults to `log.partitions`).
    pub pipeline: String,
    /// Settings of the embedded log.
    pub log: LogConfig,
    /// Settings of the Kafka pipeline (used with a `kafka://` URL).
    pub kafka: KafkaConfig,
    /// The topology a new data directory starts with. An existing directory
    /// keeps its persisted topology; changing it takes a migration.
    pub topology: TopologyConfig,
    /// How entities map to partition keys.
    pub partition_key: PartitionKeyConfig,
    /// Shard worker settings.
    pub shards: ShardConfig,
    /// Limits that drive utilization and rebalance hints.
    pub limits: ShardLimits,
    /// The Iceberg lake and the sink that lands the pipeline in it.
    pub lake: LakeConfig,
    /// How shard health is judged (health endpoints, probes).
    pub health: HealthConfig,
    /// The HTTP server of `floe serve`.
    pub serve: ServeConfig,
    /// How live shard migrations run.
    pub migration: floe_migration::MigrationConfig,
    /// Cross-shard SQL over the lake.
    pub query: QueryConfig,
    /// Shard state snapshots (embedded log, one node).
    pub snapshots: SnapshotConfig,
    /// Cluster mode (`[cluster]`): this node joins the cluster named there
    /// on etcd and serves the shards granted to it. Absent: one node, no etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<floe_cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("floe-data"),
            pipeline: "file://".into(),
            log: LogConfig::default(),
            kafka: KafkaConfig::default(),
            topology: TopologyConfig::default(),
            partition_key: PartitionKeyConfig::default(),
            shards: ShardConfig::default(),
            limits: ShardLimits::default(),
            lake: LakeConfig::default(),
            health: HealthConfig::default(),
            serve: ServeConfig::default(),
            migration: floe_migration::MigrationConfig::default(),
            query: QueryConfig::default(),
            snapshots: SnapshotConfig::default(),
            cluster: None,
        }
    }
}

/// When the embedded log calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Once per group commit, before any write of the group is acknowledged.
    Always,
    /// In the background every `fsync_interval_ms`: acknowledged writes survive
    /// a process crash but not a power loss.
    Interval,
    /// Never (tests, benchmarks): acknowledged writes survive a process crash
    /// only as far as the OS page cache does.
    Never,
}

/// Settings of the embedded log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Pipeline partitions, fixed when the data directory is created.
    pub partitions: u32,
    /// Size at which a partition's segment file rolls over.
    pub segment_bytes: u64,
    /// When to fsync.
    pub fsync: FsyncMode,
    /// Interval for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            partitions: 16,
            segment_bytes: 64 << 20,
            fsync: FsyncMode::Always,
            fsync_interval_ms: 10,
        }
    }
}

impl LogConfig {
    pub fn options(&self) -> LogOptions {
        LogOptions {
            partitions: self.partitions,
            segment_bytes: self.segment_bytes,
            fsync: match self.fsync {
                FsyncMode::Always => FsyncPolicy::Always,
                FsyncMode::Interval => {
                    FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
                }
                FsyncMode::Never => FsyncPolicy::Never,
            },
        }
    }
}

/// The topology of a new deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    /// Number of shards.
    pub shards: u32,
    /// Hash of partition keys.
    pub hash: HashFunction,
    /// Routing strategy: a table (`{ kind = "ring", virtual_nodes = 64 }`)
    /// or a name alone, as the seeds spell it (`"hash"`, `"consistent-hash"`).
    #[serde(deserialize_with = "strategy_or_name")]
    pub strategy: Strategy,
    /// Partition keys pinned to shards.
    pub overrides: BTreeMap<String, u32>,
}

/// A strategy table, or a strategy's name with its defaults.
fn strategy_or_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Strategy, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Strategy;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a strategy name (\"jump_back\", \"hash\", \"consistent-hash\", ...) or table ({ kind = \"ring\", ... })")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> std::result::Result<Strategy, E> {
            name.parse().map_err(E::custom)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            map: A,
        ) -> std::result::Result<Strategy, A::Error> {
            Strategy::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(Visitor)
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            shards: 16,
            hash: HashFunction::Xxh3,
            strategy: Strategy::JumpBack,
            overrides: BTreeMap::new(),
        }
    }
}

impl TopologyConfig {
    /// The version-1 topology document this describes.
    pub fn initial(&self) -> Result<Topology> {
        let mut topology = Topology::new(self.shards, self.hash, self.strategy.clone())?;
        for (key, shard) in &self.overrides {
            topology = topology.with_override(key, *shard)?;
        }
        topology.version = 1;
        topology.validate()?;
        Ok(topology)
    }
}

/// Partition-key extraction: a default spec and per-type specs.
///
/// A partial table changes only the keys it names: `[partition_key]` with
/// only `strict = true` keeps the `$namespace` key, and a
/// `[partition_key.types.T]` table takes the keys it does not name from the
/// default spec (so `[partition_key.types.OrderItem]` alone leaves every
/// other type routed exactly as before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PartitionKeyToml")]
pub struct PartitionKeyConfig {
    /// The spec for types without their own.
    #[serde(flatten)]
    pub default: PartitionKeySpec,
    /// Specs by entity type.
    pub types: BTreeMap<String, PartitionKeySpec>,
}

impl Default for PartitionKeyConfig {
    fn default() -> Self {
        PartitionKeyConfig {
            default: PartitionKeySpec::tenant(),
            types: BTreeMap::new(),
        }
    }
}

/// `[partition_key]` as written: every key optional, so that what is absent
/// takes its default instead of [`PartitionKeySpec`]'s own (`$id`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionKeyToml {
    fields: Option<OneOrMany>,
    fallback: Option<floe_engine::KeyField>,
    strict: Option<bool>,
    #[serde(default)]
    types: BTreeMap<String, SpecToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecToml {
    fields: Option<OneOrMany>,
    fallback: Option<floe_engine::KeyField>,
    strict: Option<bool>,
}

/// `fields = "a"` or `fields = ["a", "b"]` (an untagged enum would lose the
/// key field's own error, such as an unknown `$` name).
struct OneOrMany(Vec<floe_engine::KeyField>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key field or a list of key fields")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.parse().map_err(E::custom)?]))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<OneOrMany, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = seq.next_element()? {
                    fields.push(field);
                }
                Ok(OneOrMany(fields))
            }
        }
        d.deserialize_any(Fields)
    }
}

impl SpecToml {
    /// `base` with the keys this table names replaced.
    fn over(self, base: &PartitionKeySpec) -> std::result::Result<PartitionKeySpec, String> {
        let mut spec = base.clone();
        if let Some(OneOrMany(fields)) = self.fields {
            spec.fields = fields;
        }
        if let Some(fallback) = self.fallback {
            spec.fallback = Some(fallback);
        }
        if let Some(strict) = self.strict {
            spec.strict = strict;
        }
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

impl TryFrom<PartitionKeyToml> for PartitionKeyConfig {
    type Error = String;

    fn try_from(toml: PartitionKeyToml) -> std::result::Result<Self, String> {
        let default = SpecToml {
            fields: toml.fields,
            fallback: toml.fallback,
            strict: toml.strict,
        }
        .over(&PartitionKeyConfig::default().default)
        .map_err(|e| format!("partition_key: {e}"))?;
        let types = toml
            .types
            .into_iter()
            .map(|(name, spec)| {
                let spec = spec
                    .over(&default)
                    .map_err(|e| format!("partition_key.types.{name}: {e}"))?;
                Ok((name, spec))
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(PartitionKeyConfig { default, types })
    }
}

impl PartitionKeyConfig {
    /// The extractor this configuration describes.
    pub fn extractor(&self) -> KeyExtractor {
        let mut extractor = KeyExtractor::new(self.default.clone());
        for (entity_type, spec) in &self.types {
            extractor = extractor.with_type(entity_type, spec.clone());
        }
        extractor
    }
}

/// The Iceberg lake (`[lake]`): where the pipeline lands and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeConfig {
    /// Use the lake at all: recovery reads landed events from it and the
    /// sink can run. Off: floe keeps everything in the pipeline only.
    pub enabled: bool,
    /// Run the sink inside `Floe` (started by open, flushed by close). Off:
    /// run `floe sink` separately.
    pub sink: bool,
    /// The catalog by URL: `sqlite://` (default: `DATA/catalog.db`),
    /// `sqlite:///path/catalog.db`, `rest://host:port` or `http(s)://...`.
    pub catalog: String,
    /// The warehouse: empty for `file://DATA/warehouse`, `file:///dir`, or
    /// `s3://bucket/prefix`.
    pub warehouse: String,
    /// Catalog and storage properties (`s3.endpoint`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.region`, `s3.path-style-access`, `token`...).
    pub properties: BTreeMap<String, String>,
    /// Commit at least this often while events arrive.
    pub commit_interval_ms: u64,
    /// Commit when buffered events reach about this many bytes.
    pub commit_bytes: u64,
    /// Commit when this many events are buffered.
    pub commit_events: u64,
    /// Roll data files over at about this size.
    pub target_file_bytes: u64,
    /// zstd level of the Parquet files.
    pub zstd_level: i32,
    /// The sink's commit lease: another sink may take over only after this
    /// long without renewal.
    pub lease_ms: u64,
    /// Delete embedded-log segments wholly below the committed offsets.
    pub retention: bool,
    /// Compaction and expiry beside the sink (`[lake.maintenance]`).
    pub maintenance: MaintenanceConfig,
}

impl Default for LakeConfig {
    fn default() -> Self {
        let sink = SinkOptions::default();
        LakeConfig {
            enabled: true,
            sink: true,
            catalog: "sqlite://".into(),
            warehouse: String::new(),
            properties: BTreeMap::new(),
            commit_interval_ms: sink.commit_interval.as_millis() as u64,
            commit_bytes: sink.commit_bytes as u64,
            commit_events: sink.commit_events as u64,
            target_file_bytes: sink.target_file_bytes as u64,
            zstd_level: sink.zstd_level,
            lease_ms: sink.lease.as_millis() as u64,
            retention: sink.retention,
            maintenance: MaintenanceConfig::default(),
        }
    }
}

impl LakeConfig {
    /// The sink settings this describes.
    pub fn sink_options(&self) -> SinkOptions {
        SinkOptions {
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            commit_bytes: self.commit_bytes as usize,
            commit_events: self.commit_events as usize,
            target_file_bytes: self.target_file_bytes as usize,
            zstd_level: self.zstd_level,
            lease: Duration::from_millis(self.lease_ms),
            retention: self.retention,
            ..SinkOptions::default()
        }
    }

    /// The catalog and warehouse, with defaults resolved inside `data_dir`.
    pub fn location(&self, data_dir: &Path) -> Result<LakeLocation> {
        let data_dir = std::path::absolute(data_dir)
            .map_err(|e| Error::io(format!("resolving {}", data_dir.display()), e))?;
        let lake_error = |e: floe_emitter::Error| Error::Invalid(format!("lake: {e}"));
        let catalog =
            CatalogUrl::parse(&self.catalog, data_dir.join("catalog.db")).map_err(lake_error)?;
        let warehouse = if self.warehouse.trim().is_empty() {
            format!("file://{}", data_dir.join("warehouse").display())
        } else {
            // Checked as written, so the error names what the user wrote
            // (`s3://` names no bucket; trimmed it would be `s3:`).
            let written = self.warehouse.trim();
            floe_emitter::sink::check_warehouse(written).map_err(lake_error)?;
            let trimmed = written.trim_end_matches('/');
            if trimmed.ends_with(':') {
                written.to_string()
            } else {
                trimmed.to_string()
            }
        };
        floe_emitter::sink::check_warehouse(&warehouse).map_err(lake_error)?;
        Ok(LakeLocation {
            catalog,
            warehouse,
            properties: self.properties.clone().into_iter().collect(),
        })
    }
}

/// Cross-shard SQL (`[query]`): how `Floe::sql` and `floe sql` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// A query running longer is cancelled with a timeout error.
    pub timeout_ms: u64,
    /// Cache results by SQL text and snapshot.
    pub cache: bool,
    /// How long a cached result is served.
    pub cache_ttl_ms: u64,
    /// Most results cached.
    pub cache_max_entries: usize,
    /// Most bytes of cached results.
    pub cache_max_bytes: u64,
    /// Parallel scan partitions; 0 = one per core.
    pub target_partitions: usize,
    /// Files read at once from an object store (`s3://` warehouses): the
    /// scan is spread over at least this many groups, since remote reads
    /// wait on the network rather than a core. At least 1.
    pub remote_read_concurrency: usize,
    /// Most bytes of an object-store warehouse's data files kept in memory
    /// for later queries; 0 = no cache. Local files use the page cache.
    pub data_cache_bytes: u64,
    /// Let a namespace filter prune the `bucket(partition_key)` partitions
    /// when the configured partition key is the namespace for every type.
    /// Turn off if writes pass explicit partition keys other than the namespace.
    pub namespace_pruning: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let options = floe_query::QueryOptions::default();
        QueryConfig {
            timeout_ms: options.timeout.as_millis() as u64,
            cache: options.cache_enabled,
            cache_ttl_ms: options.cache_ttl.as_millis() as u64,
            cache_max_entries: options.cache_max_entries,
            cache_max_bytes: options.cache_max_bytes as u64,
            target_partitions: options.target_partitions,
            remote_read_concurrency: options.remote_read_concurrency,
            data_cache_bytes: options.data_cache_bytes,
            namespace_pruning: true,
        }
    }
}

impl Config {
    /// The query settings this configuration describes; namespace pruning
    /// only when every type's partition key is its namespace.
    pub fn query_options(&self) -> floe_query::QueryOptions {
        let q = &self.query;
        floe_query::QueryOptions {
            timeout: Duration::from_millis(q.timeout_ms),
            cache_enabled: q.cache,
            cache_ttl: Duration::from_millis(q.cache_ttl_ms),
            cache_max_entries: q.cache_max_entries,
            cache_max_bytes: q.cache_max_bytes as usize,
            target_partitions: q.target_partitions,
            remote_read_concurrency: q.remote_read_concurrency,
            data_cache_bytes: q.data_cache_bytes,
            namespace_is_partition_key: q.namespace_pruning
                && self.partition_key.default == PartitionKeySpec::tenant()
                && self.partition_key.types.is_empty(),
        }
    }
}

/// Where the pipeline lives, parsed from [`Config::pipeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineUrl {
    /// The embedded log in this directory.
    File(PathBuf),
    /// A Kafka topic: `kafka://host:port[,host:port]/topic?partitions=N&key=value`.
    Kafka {
        /// Bootstrap brokers, `host:port[,host:port]`.
        brokers: String,
        /// The deployment's topic.
        topic: String,
        /// Its partition count (`partitions=`; else `log.partitions`).
        partitions: u32,
        /// librdkafka properties: the `[kafka]` table's, overridden by the
        /// URL's query parameters.
        properties: BTreeMap<String, String>,
    },
}

impl Config {
    /// Reads a TOML file; absent keys take their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::from_toml(&text).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// A config for `data_dir` with every other value at its default.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }

    /// Checks every value; `Floe::open` calls it too.
    pub fn validate(&self) -> Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(Error::Invalid("data_dir must not be empty".into()));
        }
        self.pipeline_url()?;
        #[cfg(feature = "kafka")]
        self.kafka_options()?;
        if self.kafka.request_timeout_ms == 0 {
            return Err(Error::Invalid(
                "kafka.request_timeout_ms must be at least 1".into(),
            ));
        }
        if self.log.partitions == 0 {
            return Err(Error::Invalid("log.partitions must be at least 1".into()));
        }
        if self.log.segment_bytes < 4096 {
            return Err(Error::Invalid(
                "log.segment_bytes must be at least 4096".into(),
            ));
        }
        if self.log.fsync == FsyncMode::Interval && self.log.fsync_interval_ms == 0 {
            return Err(Error::Invalid(
                "log.fsync_interval_ms must be at least 1 with fsync = \"interval\"".into(),
            ));
        }
        self.shards.validate()?;
        self.migration.validate()?;
        self.topology.initial()?;
        self.health.validate()?;
        self.serve.validate()?;
        self.snapshots.validate()?;
        if self.query.timeout_ms == 0 {
            return Err(Error::Invalid("query.timeout_ms must be at least 1".into()));
        }
        if self.query.remote_read_concurrency == 0 {
            return Err(Error::Invalid(
                "query.remote_read_concurrency must be at least 1".into(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            self.validate_cluster(cluster)?;
        }
        if self.lake.enabled {
            self.lake.location(&self.data_dir)?;
            self.lake
                .sink_options()
                .validate()
                .map_err(|e| Error::Invalid(format!("lake: {e}")))?;
            if let Some(m) = self.lake.maintenance_options() {
                m.validate()
                    .map_err(|e| Error::Invalid(format!("lake.maintenance: {e}")))?;
            }
        }
        Ok(())
    }

    /// Cluster mode needs a pipeline every node shares (Kafka) and a valid
    /// `[cluster]`. Nodes with `lake.sink` are candidates of the sink's
    /// election: it runs on one of them (docs/cluster.md).
    fn validate_cluster(&self, cluster: &floe_cluster::ClusterConfig) -> Result<()> {
        cluster.validate().map_err(Error::Cluster)?;
        if let PipelineUrl::File(_) = self.pipeline_url()? {
            return Err(Error::ClusterNeedsKafka {
                pipeline: self.pipeline.clone(),
            });
        }
        Ok(())
    }

    /// The parsed pipeline URL.
    pub fn pipeline_url(&self) -> Result<PipelineUrl> {
        let url = self.pipeline.trim();
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(PipelineUrl::File(if path.is_empty() {
                self.data_dir.join("log")
            } else {
                PathBuf::from(path)
            }));
        }
        if let Some(rest) = url.strip_prefix("kafka://") {
            return self.kafka_url(url, rest);
        }
        let scheme = url.split("://").next().unwrap_or(url);
        Err(Error::Invalid(format!(
            "pipeline URL {url:?}: unsupported scheme {scheme:?} (expected file:// or kafka://)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_roundtrip_through_toml() {
        let config = Config::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), config);
    }

    #[test]
    fn strategies_are_accepted_by_the_seeds_names_alone_or_as_tables() {
        let ring = Strategy::Ring { virtual_nodes: 150 };
        for (given, expected) in [
            (r#""hash""#, Strategy::Modulo),
            (r#""tenant""#, Strategy::Modulo),
            (r#""consistent-hash""#, ring.clone()),
            (r#""consistent""#, ring.clone()),
            (r#""jump_back""#, Strategy::JumpBack),
            (
                r#"{ kind = "consistent-hash", virtual_nodes = 64 }"#,
                Strategy::Ring { virtual_nodes: 64 },
            ),
            (r#"{ kind = "tenant" }"#, Strategy::Modulo),
        ] {
            let config = Config::from_toml(&format!("[topology]\nstrategy = {given}")).unwrap();
            assert_eq!(config.topology.strategy, expected, "{given}");
        }
        for bad in [
            r#""range""#,
            r#""maglev""#,
            r#"{ kind = "ring", vnodes = 3 }"#,
        ] {
            let err = Config::from_toml(&format!("[topology]\nstrategy = {bad}")).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn query_settings_reach_the_query_options_and_zero_concurrency_is_refused() {
        let config = Config::from_toml("[query]\nremote_read_concurrency = 4").unwrap();
        assert_eq!(config.query_options().remote_read_concurrency, 4);
        for (warehouse, expected) in [
            ("s3://", "names no bucket"),
            ("s3:///x", "names no bucket"),
            ("gs://b/x", "unsupported scheme"),
        ] {
            let err = Config::from_toml(&format!("[lake]\nwarehouse = \"{warehouse}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{warehouse}: {err}");
            assert!(
                err.contains(&format!("{warehouse:?}")),
                "{warehouse}: {err}"
            );
        }
        let config = Config::from_toml("[lake]\nwarehouse = \"s3://b/w/\"").unwrap();
        assert_eq!(
            config.lake.location(Path::new("/d")).unwrap().warehouse,
            "s3://b/w"
        );
        let config = Config::from_toml("[query]\ndata_cache_bytes = 0").unwrap();
        assert_eq!(config.query_options().data_cache_bytes, 0);
        assert_eq!(
            Config::default().query_options().data_cache_bytes,
            floe_query::QueryOptions::default().data_cache_bytes
        );
        let err = Config::from_toml("[query]\nremote_read_concurrency = 0").unwrap_err();
        assert!(
            err.to_string()
                .contains("query.remote_read_concurrency must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn partial_toml_keeps_defaults() {
        let config = Config::from_toml(
            r#"
            data_dir = "/tmp/x"
            [log]
            fsync = "never"
            [topology]
            shards = 4
            strategy = { kind = "ring", virtual_nodes = 150 }
            [partition_key]
            fields = ["tenant_id"]
            fallback = "$id"
            strict = true
            [partition_key.types.OrderItem]
            fields = ["order_id"]
            "#,
        )
        .unwrap();
        assert_eq!(config.log.fsync, FsyncMode::Never);
        assert_eq!(config.log.partitions, 16);
        assert_eq!(config.topology.shards, 4);
        assert_eq!(
            config.topology.strategy,
            Strategy::Ring { virtual_nodes: 150 }
        );
        assert!(config.partition_key.default.strict);
        assert!(config.partition_key.types.contains_key("OrderItem"));
        assert_eq!(
            config.pipeline_url().unwrap(),
            PipelineUrl::File(PathBuf::from("/tmp/x/log"))
        );
    }

    /// docs/configuration.md shows every key with its default: it must parse
    /// and equal `Config::default()` apart from the example per-type spec.
    #[test]
    fn the_documented_configuration_is_the_default() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let block = &doc[start..start + doc[start..].find("```").expect("closed block")];
        let mut config = Config::from_toml(block).unwrap();
        assert!(config.partition_key.types.remove("OrderItem").is_some());
        assert_eq!(config, Config::default());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        assert!(err("pipeline = \"ftp://x\"").contains("unsupported scheme \"ftp\""));
        assert!(err("[log]\npartitions = 0").contains("log.partitions"));
        assert!(err("[topology]\nshards = 0").contains("shard"));
        assert!(err("[shards]\nmax_batch = 0").contains("shards.max_batch"));
        assert!(err("bogus = 1").contains("bogus"));
        assert!(err("[lake]\ncatalog = \"mysql://x\"").contains("unsupported scheme \"mysql\""));
        assert!(err("[lake]\nwarehouse = \"gs://b\"").contains("warehouse"));
        assert!(err("[lake]\nzstd_level = 0").contains("zstd"));
    }

    #[test]
    fn lake_defaults_live_in_the_data_dir() {
        let config = Config::with_data_dir("/tmp/d");
        let location = config.lake.location(&config.data_dir).unwrap();
        assert_eq!(
            location.catalog,
            CatalogUrl::Sqlite(PathBuf::from("/tmp/d/catalog.db"))
        );
        assert_eq!(location.warehouse, "file:///tmp/d/warehouse");
        let mut config = config;
        config.lake.catalog = "rest://localhost:8181".into();
        config.lake.warehouse = "s3://bucket/prefix/".into();
        let location = config.lake.location(&config.data_dir).unwrap();
        assert_eq!(
            location.catalog,
            CatalogUrl::Rest("http://localhost:8181".into())
        );
        assert_eq!(location.warehouse, "s3://bucket/prefix");
    }
}
