//! How a [`KafkaPipeline`](super::KafkaPipeline) is opened: brokers, topic,
//! partitions and extra librdkafka properties.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::{Error, Result};

/// Where floe's events live in Kafka and how the clients talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// The one topic of this floe deployment.
    pub topic: String,
    /// Partitions of the topic: used to create it when it is missing, and
    /// checked against an existing topic (the count is fixed at creation).
    pub partitions: u32,
    /// Replication factor when floe creates the topic (`-1`: the broker's
    /// default).
    pub replication_factor: i32,
    /// Extra librdkafka properties, given to the producer, the readers and the
    /// admin client (`linger.ms`, `client.id`, `security.protocol`, ...).
    /// Properties that would break floe's guarantees are refused, see
    /// [`KafkaOptions::validate`].
    pub properties: BTreeMap<String, String>,
    /// Timeout of metadata, watermark and admin requests, and of a read that
    /// knows records exist but has not received them yet.
    pub request_timeout: Duration,
    /// Whether `delete_before` sends Kafka's `DeleteRecords`. Turn it off for
    /// brokers that lack it (tansu 0.6 panics on it and its storage stops
    /// answering): `delete_before` then deletes nothing and returns the
    /// current low watermark, and retention is left to the topic's
    /// `retention.ms` / `retention.bytes`.
    pub delete_records: bool,
    /// How long `append` keeps re-sending records that failed with a
    /// retryable error before it gives up and returns that error.
    pub append_retry: Duration,
}

/// Properties floe sets itself and refuses to have overridden, with why.
const RESERVED: &[(&str, &str)] = &[
    (
        "bootstrap.servers",
        "the brokers come from the pipeline URL",
    ),
    (
        "enable.idempotence",
        "floe's producer is always idempotent (no duplicates on internal retries)",
    ),
    (
        "transactional.id",
        "floe does not use transactions (and the test broker has none)",
    ),
    (
        "partitioner",
        "floe chooses every record's partition itself (partition_for)",
    ),
    (
        "enable.auto.commit",
        "floe tracks read offsets itself and never commits them to the broker",
    ),
    (
        "enable.partition.eof",
        "floe's readers rely on the watermarks, not on EOF events",
    ),
];

impl KafkaOptions {
    /// Default replication factor of a topic floe creates: 1, which suits a
    /// single test broker; set 3 (or -1) for a production cluster.
    pub const DEFAULT_REPLICATION_FACTOR: i32 = 1;
    /// Default timeout of metadata, watermark and admin requests.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`KafkaOptions::append_retry`].
    pub const DEFAULT_APPEND_RETRY: Duration = Duration::from_secs(60);
    /// Largest record floe's producer sends unless `message.max.bytes` is set:
    /// an event holds an entity's whole state, up to `shards.max_payload_bytes`
    /// (1 MiB by default) plus its envelope.
    pub const DEFAULT_MESSAGE_MAX_BYTES: u32 = 8 << 20;

    /// Options for `topic` with `partitions` partitions on `brokers`, every
    /// other value at its default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, partitions: u32) -> Self {
        KafkaOptions {
            brokers: brokers.into(),
            topic: topic.into(),
            partitions,
            replication_factor: Self::DEFAULT_REPLICATION_FACTOR,
            properties: BTreeMap::new(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            delete_records: true,
            append_retry: Self::DEFAULT_APPEND_RETRY,
        }
    }

    /// Adds a librdkafka property (see [`KafkaOptions::properties`]).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Checks that the options can be used: brokers and a legal topic name,
    /// at least one partition, and no property that would weaken durability
    /// (`acks` other than `all`) or that floe owns (see the list in the
    /// error message).
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidKafkaOptions(m));
        if self.brokers.split(',').any(|b| b.trim().is_empty()) {
            return invalid(format!(
                "brokers {:?} must be host:port[,host:port]",
                self.brokers
            ));
        }
        check_topic_name(&self.topic)?;
        if self.partitions == 0 {
            return invalid("partitions must be at least 1".into());
        }
        if self.partitions > i32::MAX as u32 {
            return invalid(format!("partitions {} is too large", self.partitions));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return invalid(format!(
                "replication factor {} must be at least 1 (or -1 for the broker default)",
                self.replication_factor
            ));
        }
        if self.request_timeout.is_zero() {
            return invalid("the request timeout must be longer than zero".into());
        }
        for (key, value) in &self.properties {
            if let Some((_, why)) = RESERVED.iter().find(|(k, _)| k == key) {
                return invalid(format!("property {key} cannot be set: {why}"));
            }
            if (key == "acks" || key == "request.required.acks")
                && !matches!(&**value, "all" | "-1")
            {
                return invalid(format!(
                    "property {key} = {value:?}: floe acknowledges a write only once every in-sync replica has it, so acks must be \"all\""
                ));
            }
        }
        Ok(())
    }

    /// The configuration shared by every client: brokers, then the user's
    /// properties.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("socket.keepalive.enable", "true");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The idempotent producer: `acks=all`, records only ever retried with
    /// their sequence numbers, and large enough for an entity's full state.
    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        if !self.properties.contains_key("message.max.bytes") {
            config.set(
                "message.max.bytes",
                Self::DEFAULT_MESSAGE_MAX_BYTES.to_string(),
            );
        }
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
        config
    }

    /// A reader: assigned partitions only, no group, no commits.
    pub(crate) fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        if !self.properties.contains_key("group.id") {
            config.set("group.id", format!("floe-reader-{}", self.topic));
        }
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        config.set("enable.partition.eof", "false");
        if !self.properties.contains_key("max.partition.fetch.bytes") {
            // A producer batch can hold thousands of records; tansu answers a
            // fetch smaller than the batch with nothing useful, and librdkafka
            // then grows its fetch size slowly (seconds per partition).
            config.set("max.partition.fetch.bytes", (32 << 20).to_string());
        }
        if !self.properties.contains_key("fetch.wait.max.ms") {
            // A reader waiting at the end sees a new record this soon, and
            // a read just assigned gets its first records this soon (tansu
            // holds a fetch for up to this long: at 100 ms every short tail
            // read took ~110 ms, emitter/tests/kafka.rs).
            config.set("fetch.wait.max.ms", "10");
        }
        config
    }
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(topic: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() {
        return Err(Error::InvalidKafkaOptions(
            "the topic name is missing".into(),
        ));
    }
    if topic.len() > 249 || topic == "." || topic == ".." || !topic.chars().all(legal) {
        return Err(Error::InvalidKafkaOptions(format!(
            "topic name {topic:?} is not legal in Kafka: 1-249 characters of a-z A-Z 0-9 . _ -"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_what_floe_cannot_honour() {
        let ok = KafkaOptions::new("127.0.0.1:9092", "floe-events", 16);
        ok.validate().unwrap();
        let err = |o: KafkaOptions| o.validate().unwrap_err().to_string();
        assert!(err(KafkaOptions::new("", "t", 1)).contains("brokers"));
        assert!(err(KafkaOptions::new("h:1", "", 1)).contains("topic name is missing"));
        assert!(err(KafkaOptions::new("h:1", "a/b", 1)).contains("not legal"));
        assert!(err(KafkaOptions::new("h:1", "t", 0)).contains("at least 1"));
        assert!(err(ok.clone().property("acks", "1")).contains("acks must be \"all\""));
        assert!(err(ok.clone().property("enable.idempotence", "false")).contains("idempotent"));
        ok.clone().property("acks", "all").validate().unwrap();
        ok.property("linger.ms", "5").validate().unwrap();
    }

    #[test]
    fn floe_settings_win_over_properties() {
        let options = KafkaOptions::new("h:1", "t", 1).property("linger.ms", "7");
        let producer = options.producer_config();
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("linger.ms"), Some("7"));
        assert_eq!(producer.get("bootstrap.servers"), Some("h:1"));
        let consumer = options.consumer_config();
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("group.id"), Some("floe-reader-t"));
    }
}
