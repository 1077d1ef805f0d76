//! floe's configuration: defaults, validation, TOML.

#[cfg(test)]
mod defaults_tests;
mod error;
mod kafka;
mod lake;
mod maintenance;
mod partition_key;
mod query;
mod serve;
mod snapshots;

pub use self::error::{Error, Result};
pub use self::kafka::KafkaConfig;
pub use self::lake::LakeConfig;
pub use self::maintenance::MaintenanceConfig;
pub use self::partition_key::PartitionKeyConfig;
pub use self::query::QueryConfig;
pub use self::serve::{
    AuthMode, HealthConfig, Role, Secret, ServeConfig, TOKENS_ENV, Token, TokenConfig,
};
pub use self::snapshots::{MIN_SNAPSHOT_INTERVAL_MS, SnapshotConfig};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_emitter::{FsyncPolicy, LogOptions};
use floe_engine::{HashFunction, ShardConfig, ShardLimits, Strategy, Topology};
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
    use floe_emitter::sink::CatalogUrl;

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
