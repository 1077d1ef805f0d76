use std::io;
use std::path::PathBuf;

use floe_engine::Offset;

/// Result type of floe-emitter.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in floe's pipeline backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What the log was doing, e.g. `writing segment`.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Stored bytes that cannot be what the log wrote.
    #[error("corrupt log file {} at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte position of the bad data in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The log was created with another partition count, which is fixed at creation.
    #[error(
        "log {} was created with {existing} partitions but opened with {requested}: the partition count is fixed when a log is created",
        dir.display()
    )]
    PartitionMismatch {
        /// The log directory.
        dir: PathBuf,
        /// Partitions recorded in the log's meta file.
        existing: u32,
        /// Partitions asked for.
        requested: u32,
    },

    /// Another open log holds the directory.
    #[error("log {} is already open (its lock file is held)", dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },

    /// Options that cannot be used.
    #[error("invalid log options: {0}")]
    InvalidOptions(String),

    /// A partition number outside the log.
    #[error("unknown partition {partition}: the log has {partitions} partitions")]
    UnknownPartition {
        /// The partition asked for.
        partition: u32,
        /// Partitions of the log.
        partitions: u32,
    },

    /// A read below the low watermark: retention deleted those records.
    #[error(
        "offset {offset} of partition {partition} is below the low watermark {low_watermark}: deleted by retention"
    )]
    BelowLowWatermark {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: Offset,
        /// The lowest offset still stored.
        low_watermark: Offset,
    },

    /// A read beyond the high watermark: that offset has not been written.
    #[error(
        "offset {offset} of partition {partition} is beyond the high watermark {high_watermark}"
    )]
    BeyondHighWatermark {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: Offset,
        /// The offset the next append will get.
        high_watermark: Offset,
    },

    /// One encoded event is larger than a record may be.
    #[error("encoded event of {size} bytes exceeds the record limit of {limit} bytes")]
    RecordTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The log was closed.
    #[error("the log is closed")]
    Closed,

    /// A Kafka client call failed. `retryable` says whether the same call may
    /// succeed later (the broker unreachable, a timeout, a full local queue)
    /// or never will (authorization, configuration, a record too large).
    #[cfg(feature = "kafka")]
    #[error("{operation}: {source}{}", if *retryable { " (retryable)" } else { "" })]
    Kafka {
        /// What the backend was doing, e.g. `producing to floe-events`.
        operation: String,
        /// Whether the same call may succeed if tried again.
        retryable: bool,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// The topic exists with another partition count than the deployment's.
    #[cfg(feature = "kafka")]
    #[error(
        "topic {topic:?} has {existing} partitions but floe is configured with {requested}: the partition count is fixed when a deployment is created (use the existing count or another topic)"
    )]
    TopicPartitionMismatch {
        /// The topic.
        topic: String,
        /// Partitions the broker reports.
        existing: u32,
        /// Partitions asked for.
        requested: u32,
    },

    /// A record in the topic that is not a floe event.
    #[cfg(feature = "kafka")]
    #[error("record {offset} of {topic}/{partition} is not a floe event: {reason}")]
    UndecodableRecord {
        /// The topic.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: Offset,
        /// What is wrong.
        reason: String,
    },

    /// An event that cannot be written as a JSON record (its state is not
    /// valid JSON text).
    #[cfg(feature = "kafka")]
    #[error("event {event_id} cannot be serialized as JSON: {reason}")]
    UnencodableEvent {
        /// The event.
        event_id: uuid::Uuid,
        /// What is wrong.
        reason: String,
    },

    /// Kafka backend options that cannot be used.
    #[cfg(feature = "kafka")]
    #[error("invalid Kafka options: {0}")]
    InvalidKafkaOptions(String),

    /// A write or fsync failed earlier; what reached the disk is unknown, so
    /// the log refuses further appends until it is reopened (recovery then
    /// scans the tail).
    #[error("the log is poisoned and refuses appends until reopened: {reason}")]
    Poisoned {
        /// The failure that poisoned it.
        reason: String,
    },
}

impl Error {
    /// Whether the same call may succeed if it is tried again unchanged.
    ///
    /// Write and fsync failures poison the log, so only transient read-side
    /// conditions are retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Error::Locked { .. } => true,
            #[cfg(feature = "kafka")]
            Error::Kafka { retryable, .. } => *retryable,
            _ => false,
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

impl Error {
    /// The engine's pipeline error for this error, naming the backend
    /// (`file`, `kafka`) that raised it.
    pub fn into_pipeline_error(self, backend: &'static str) -> floe_engine::Error {
        floe_engine::Error::Pipeline {
            backend,
            message: self.to_string(),
            retryable: self.is_retryable(),
            source: Some(Box::new(self)),
        }
    }
}

/// Errors of the embedded log; the Kafka backend converts its own with
/// [`Error::into_pipeline_error`].
impl From<Error> for floe_engine::Error {
    fn from(e: Error) -> Self {
        e.into_pipeline_error("file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_engine_pipeline_error() {
        let e: floe_engine::Error = Error::Poisoned {
            reason: "fsync of /x failed".into(),
        }
        .into();
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "pipeline file: the log is poisoned and refuses appends until reopened: fsync of /x failed"
        );
        let e = Error::io(
            "writing segment",
            "/d/p-0000/0.seg",
            io::Error::from(io::ErrorKind::Interrupted),
        );
        assert!(
            e.to_string()
                .starts_with("writing segment /d/p-0000/0.seg: ")
        );
        assert!(floe_engine::Error::from(e).is_retryable());
    }
}
