//! The Kafka pipeline's configuration: the `[kafka]` table and `kafka://` URLs.

use std::collections::BTreeMap;
#[cfg(feature = "kafka")]
use std::time::Duration;

#[cfg(feature = "kafka")]
use floe_emitter::KafkaOptions;
use serde::{Deserialize, Serialize};

use super::{Config, PipelineUrl};
use crate::error::{Error, Result};

/// Settings of the Kafka pipeline, for a `kafka://` pipeline URL.
///
/// ```toml
/// pipeline = "kafka://127.0.0.1:9092/floe-events?partitions=16"
/// [kafka]
/// replication_factor = 3
/// properties = { "linger.ms" = "5", "compression.type" = "lz4" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Extra librdkafka properties for floe's producer, readers and admin
    /// client. Query parameters of the URL override them. Properties that
    /// would break floe's guarantees (`acks` other than `all`,
    /// `enable.idempotence`, `transactional.id`, `partitioner`,
    /// `enable.auto.commit`, `bootstrap.servers`) are refused.
    pub properties: BTreeMap<String, String>,
    /// Replication factor of the topic when floe creates it (`-1`: the
    /// broker's default).
    pub replication_factor: i32,
    /// Timeout of metadata, watermark and admin requests, in milliseconds.
    pub request_timeout_ms: u64,
    /// Whether retention (`delete_before`) sends Kafka's `DeleteRecords`.
    /// Set `false` for brokers without it (tansu): nothing is then deleted by
    /// floe and the topic's own retention settings apply.
    pub delete_records: bool,
    /// How long an append keeps re-sending records that failed with a
    /// retryable error (a broker outage) before it fails, in milliseconds.
    pub append_retry_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            properties: BTreeMap::new(),
            replication_factor: 1,
            request_timeout_ms: 30_000,
            delete_records: true,
            append_retry_ms: 60_000,
        }
    }
}

impl Config {
    /// The Kafka backend's options, when the pipeline is a `kafka://` URL.
    #[cfg(feature = "kafka")]
    pub fn kafka_options(&self) -> Result<Option<KafkaOptions>> {
        let PipelineUrl::Kafka {
            brokers,
            topic,
            partitions,
            properties,
        } = self.pipeline_url()?
        else {
            return Ok(None);
        };
        let mut properties = properties;
        let mut append_retry = Duration::from_millis(self.kafka.append_retry_ms);
        if let Some(cluster) = &self.cluster {
            // Cluster mode: an append that cannot complete within the write
            // timeout (under the lease's safety margin) fails instead of
            // landing late, after this node may have lost the shard
            // (docs/cluster.md, "Fencing").
            properties.insert(
                "message.timeout.ms".into(),
                cluster.write_timeout_ms.to_string(),
            );
            append_retry = Duration::ZERO;
        }
        let options = KafkaOptions {
            properties,
            replication_factor: self.kafka.replication_factor,
            request_timeout: Duration::from_millis(self.kafka.request_timeout_ms),
            delete_records: self.kafka.delete_records,
            append_retry,
            ..KafkaOptions::new(brokers, topic, partitions)
        };
        options
            .validate()
            .map_err(|e| Error::Invalid(format!("pipeline URL {:?}: {e}", self.pipeline)))?;
        Ok(Some(options))
    }

    pub(super) fn kafka_url(&self, url: &str, rest: &str) -> Result<PipelineUrl> {
        let bad = |why: String| Err(Error::Invalid(format!("pipeline URL {url:?}: {why}")));
        let (brokers, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (topic, query) = path.split_once('?').unwrap_or((path, ""));
        if brokers.is_empty() {
            return bad("no broker: expected kafka://host:port[,host:port]/topic".into());
        }
        for broker in brokers.split(',') {
            let port = broker
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return bad(format!("broker {broker:?} is not host:port"));
            }
        }
        if topic.is_empty() {
            return bad("the topic is missing: expected kafka://host:port/topic".into());
        }
        let mut partitions = self.log.partitions;
        let mut properties = self.kafka.properties.clone();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return bad(format!("query parameter {pair:?} is not key=value"));
            };
            if key == "partitions" {
                partitions = match value.parse::<u32>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return bad(format!(
                            "partitions={value} must be a whole number of at least 1"
                        ));
                    }
                };
            } else {
                properties.insert(key.to_string(), value.to_string());
            }
        }
        Ok(PipelineUrl::Kafka {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            partitions,
            properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(url: &str) -> Result<PipelineUrl> {
        Config {
            pipeline: url.into(),
            ..Config::default()
        }
        .pipeline_url()
    }

    #[test]
    fn kafka_urls_parse() {
        let url =
            kafka("kafka://127.0.0.1:9092,b2:9093/floe-events?partitions=8&client.id=x").unwrap();
        assert_eq!(
            url,
            PipelineUrl::Kafka {
                brokers: "127.0.0.1:9092,b2:9093".into(),
                topic: "floe-events".into(),
                partitions: 8,
                properties: BTreeMap::from([("client.id".into(), "x".into())]),
            }
        );
        let PipelineUrl::Kafka { partitions, .. } = kafka("kafka://h:1/t").unwrap() else {
            panic!("not kafka")
        };
        assert_eq!(partitions, 16, "defaults to log.partitions");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_table_properties_are_overridden_by_the_url() {
        let config = Config::from_toml(
            r#"
            pipeline = "kafka://h:9092/events?linger.ms=1"
            [kafka]
            replication_factor = 3
            properties = { "linger.ms" = "5", "compression.type" = "lz4" }
            "#,
        )
        .unwrap();
        let options = config.kafka_options().unwrap().unwrap();
        assert_eq!(options.replication_factor, 3);
        assert_eq!(options.properties["linger.ms"], "1");
        assert_eq!(options.properties["compression.type"], "lz4");
        assert_eq!(options.topic, "events");
        assert!(Config::default().kafka_options().unwrap().is_none());
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn bad_kafka_urls_are_clear_config_errors() {
        let err = |url: &str| {
            Config::from_toml(&format!("pipeline = {url:?}"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("kafka://h:9092").contains("topic is missing"));
        assert!(err("kafka://h:9092/").contains("topic is missing"));
        assert!(err("kafka:///t").contains("no broker"));
        assert!(err("kafka://h/t").contains("not host:port"));
        assert!(err("kafka://h:x/t").contains("not host:port"));
        assert!(err("kafka://h:1/t?partitions=0").contains("partitions=0"));
        assert!(err("kafka://h:1/t?partitions=-2").contains("partitions=-2"));
        assert!(err("kafka://h:1/t?linger.ms").contains("not key=value"));
        assert!(err("kafka://h:1/a%2Fb").contains("not legal"));
        assert!(err("kafka://h:1/t?acks=1").contains("acks"));
        let zero = Config::from_toml("[kafka]\nrequest_timeout_ms = 0").unwrap_err();
        assert!(zero.to_string().contains("kafka.request_timeout_ms"));
    }
}
