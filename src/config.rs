//! floe's configuration: defaults, validation, TOML.

mod kafka;

pub use self::kafka::KafkaConfig;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_emitter::{FsyncPolicy, LogOptions};
use floe_engine::{
    HashFunction, KeyExtractor, PartitionKeySpec, ShardConfig, ShardLimits, Strategy, Topology,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    pub(crate) fn options(&self) -> LogOptions {
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
    /// Routing strategy.
    pub strategy: Strategy,
    /// Partition keys pinned to shards.
    pub overrides: BTreeMap<String, u32>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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

/// Where the pipeline lives, parsed from [`Config::pipeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::from_toml(&text).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
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
            return Err(Error::Config("data_dir must not be empty".into()));
        }
        self.pipeline_url()?;
        #[cfg(feature = "kafka")]
        self.kafka_options()?;
        if self.kafka.request_timeout_ms == 0 {
            return Err(Error::Config(
                "kafka.request_timeout_ms must be at least 1".into(),
            ));
        }
        if self.log.partitions == 0 {
            return Err(Error::Config("log.partitions must be at least 1".into()));
        }
        if self.log.segment_bytes < 4096 {
            return Err(Error::Config(
                "log.segment_bytes must be at least 4096".into(),
            ));
        }
        if self.log.fsync == FsyncMode::Interval && self.log.fsync_interval_ms == 0 {
            return Err(Error::Config(
                "log.fsync_interval_ms must be at least 1 with fsync = \"interval\"".into(),
            ));
        }
        self.shards.validate()?;
        self.topology.initial()?;
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
        Err(Error::Config(format!(
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

    #[test]
    fn bad_values_are_clear_errors() {
        let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        assert!(err("pipeline = \"ftp://x\"").contains("unsupported scheme \"ftp\""));
        assert!(err("[log]\npartitions = 0").contains("log.partitions"));
        assert!(err("[topology]\nshards = 0").contains("shard"));
        assert!(err("[shards]\nmax_batch = 0").contains("shards.max_batch"));
        assert!(err("bogus = 1").contains("bogus"));
    }
}
