use std::io;
use std::path::PathBuf;

use floe_engine::Offset;

/// Result type of floe-emitter.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in floe's pipeline backends and the Iceberg sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("{context} {}: {cause}", path.display())]
    Io {
        /// What the log was doing, e.g. `writing segment`.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
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

    /// A segment holds damaged records: a complete frame whose checksum
    /// fails, or damage that cannot be a torn write (see
    /// `docs/embedded-log.md`). The log refuses to open rather than serve a
    /// smaller state.
    #[error(
        "partition {partition} of the log is corrupt: {} at byte {byte} (record offset {record}): {reason}; the log refuses to open so that no acknowledged record is silently dropped: `floe repair --partition {partition}` rebuilds the partition from the lake and reports what is unrecoverable",
        path.display()
    )]
    CorruptRecord {
        /// The pipeline partition.
        partition: u32,
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damage in the file.
        byte: u64,
        /// Offset the first damaged record would have.
        record: Offset,
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
    #[error("{operation}: {cause}{}", if *retryable { " (retryable)" } else { "" })]
    Kafka {
        /// What the backend was doing, e.g. `producing to floe-events`.
        operation: String,
        /// Whether the same call may succeed if tried again.
        retryable: bool,
        /// The client's error.
        cause: rdkafka::error::KafkaError,
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

    /// A lake (catalog, warehouse or sink) setting that cannot be used.
    #[error("invalid lake configuration: {0}")]
    LakeConfig(String),

    /// The Iceberg catalog could not be opened or reached.
    #[cfg(feature = "sink")]
    #[error(
        "cannot open the Iceberg catalog {catalog} (check lake.catalog, and that the catalog server is running and healthy): {cause}"
    )]
    CatalogUnavailable {
        /// The catalog as configured.
        catalog: String,
        /// What the catalog client reported.
        cause: Box<iceberg::Error>,
    },

    /// The warehouse refused a test write at start.
    #[cfg(feature = "sink")]
    #[error(
        "the warehouse {warehouse} is not writable (check lake.warehouse; for s3://, that the bucket exists and the s3.endpoint and s3.* credentials in [lake.properties]): {cause}"
    )]
    WarehouseNotWritable {
        /// The warehouse URL.
        warehouse: String,
        /// What the storage reported.
        cause: Box<iceberg::Error>,
    },

    /// The warehouse's object store did not answer at open (down,
    /// unreachable or overloaded, or `s3.endpoint` names the wrong place).
    #[cfg(feature = "sink")]
    #[error(
        "the object store {endpoint} of the warehouse {warehouse} did not answer (down, unreachable or overloaded; retry when it is back, or check s3.endpoint in [lake.properties]): {cause}"
    )]
    StoreUnavailable {
        /// The object store asked (`s3.endpoint`).
        endpoint: String,
        /// The warehouse URL.
        warehouse: String,
        /// What the storage reported.
        cause: Box<iceberg::Error>,
    },

    /// The warehouse's bucket does not exist on the object store.
    #[cfg(feature = "sink")]
    #[error(
        "the bucket {bucket:?} of the warehouse {warehouse} does not exist at {endpoint}: create it (for example `aws s3 mb s3://{bucket}`), or point lake.warehouse at an existing bucket"
    )]
    BucketMissing {
        /// The bucket named by the warehouse URL.
        bucket: String,
        /// The warehouse URL.
        warehouse: String,
        /// The object store asked (`s3.endpoint`).
        endpoint: String,
    },

    /// An Iceberg operation failed.
    #[cfg(feature = "sink")]
    #[error("{context}: {cause}")]
    Iceberg {
        /// What the sink was doing.
        context: &'static str,
        /// The Iceberg error.
        cause: Box<iceberg::Error>,
    },

    /// Building or reading Arrow data failed.
    #[cfg(feature = "sink")]
    #[error("{context}: {cause}")]
    Arrow {
        /// What the sink was doing.
        context: &'static str,
        /// The Arrow error.
        cause: arrow_schema::ArrowError,
    },

    /// Data in `floe.events` that does not fit floe's table layout.
    #[error("floe.events does not match floe's layout: {0}")]
    Layout(String),

    /// Another sink holds the commit lease of `floe.events`.
    #[error(
        "another sink ({owner}) holds the commit lease of floe.events (last renewed {heartbeat_age_ms} ms ago, lease {lease_ms} ms): stop it, or wait until its lease expires"
    )]
    Fenced {
        /// The owner token in the table properties.
        owner: String,
        /// Time since the owner last renewed.
        heartbeat_age_ms: u64,
        /// Lease duration.
        lease_ms: u64,
    },

    /// The sink's [`crate::sink::CommitFence`] said no: it lost the election
    /// that let it commit. Nothing was committed after that.
    #[error("this sink lost its election and stops before committing: {reason}")]
    Deposed {
        /// Why the fence refused.
        reason: String,
    },

    /// Someone else committed to `floe.events` between this sink's check and
    /// its commit.
    #[error(
        "concurrent commit to floe.events: expected snapshot {}, found {}; this sink stops and a restart resumes from the lake's offsets",
        snapshot(*expected),
        snapshot(*found)
    )]
    ConcurrentCommit {
        /// The snapshot this sink checked.
        expected: Option<i64>,
        /// The snapshot it found.
        found: Option<i64>,
    },

    /// A maintenance commit (compaction, expiry, erase) lost the catalog's
    /// compare-and-swap: someone committed between its read and its swap.
    /// Retryable: the caller re-plans against the new metadata.
    #[cfg(feature = "sink")]
    #[error("{operation} commit to floe.events lost the race with another commit: {reason}")]
    CommitConflict {
        /// The operation, e.g. `replace`.
        operation: &'static str,
        /// What changed underneath.
        reason: String,
    },

    /// A rewrite would remove a data file that the table no longer holds
    /// (another rewrite removed it, or it never was part of the table).
    /// Nothing was committed.
    #[cfg(feature = "sink")]
    #[error(
        "cannot rewrite floe.events: data file {file} is not live in snapshot {}; another rewrite removed it or it never belonged to the table (nothing was committed)",
        snapshot(*snapshot_id)
    )]
    FileNotLive {
        /// The data file.
        file: String,
        /// The snapshot it was looked for in.
        snapshot_id: Option<i64>,
    },

    /// A replace commit whose added files do not hold exactly the rows of the
    /// files it removes (a replace may reorganise rows, never drop or add one).
    #[cfg(feature = "sink")]
    #[error(
        "refusing a replace commit that removes {removed} rows and adds {added}: a replace must keep every row"
    )]
    RowsChanged {
        /// Rows in the files removed.
        removed: u64,
        /// Rows in the files added.
        added: u64,
    },

    /// A lake operation this catalog cannot do (yet).
    #[error("{operation} is not supported with the {catalog} catalog: {reason}")]
    Unsupported {
        /// The operation.
        operation: &'static str,
        /// The catalog kind.
        catalog: String,
        /// Why, and what to do instead.
        reason: String,
    },

    /// The pipeline the sink reads failed.
    #[error("reading the pipeline: {cause}")]
    Pipeline {
        /// The pipeline's error.
        cause: floe_engine::Error,
    },

    /// A sink hook stopped the sink at a phase (crash tests).
    #[error("sink stopped by its hook at {0}")]
    Stopped(&'static str),

    /// Replay: a lake snapshot holds an event at or beyond the offsets its
    /// summary says it covers (the sink's exactly-once invariant is broken:
    /// replaying it and the pipeline from those offsets would apply it twice).
    #[error(
        "lake snapshot {snapshot} holds offset {offset} of partition {partition}, beyond its committed offsets ({committed})"
    )]
    SnapshotBeyondCommitted {
        /// The snapshot.
        snapshot: i64,
        /// The partition of the event.
        partition: u32,
        /// Its offset.
        offset: u64,
        /// What the snapshot says it covers (`none` for an unknown partition).
        committed: String,
    },

    /// Replay: retention deleted pipeline events the lake does not hold
    /// (the low watermark is above the lake's committed offset), so the
    /// events in between are lost.
    #[error(
        "partition {partition} starts at offset {low_watermark} but the lake holds only offsets below {committed}: events in between are lost"
    )]
    RetentionAboveCommitted {
        /// The partition.
        partition: u32,
        /// Its lowest readable offset.
        low_watermark: u64,
        /// The lake's committed offset for it.
        committed: u64,
    },

    /// Replay: the pipeline's retention deleted events (the low watermark is
    /// above 0) and no lake is configured to read them from.
    #[error(
        "partition {partition} starts at offset {low_watermark}: retention deleted the history before it, and reading it needs the lake (turn lake.enabled on)"
    )]
    HistoryNeedsLake {
        /// The partition.
        partition: u32,
        /// Its lowest readable offset.
        low_watermark: u64,
    },

    /// Replay: a per-shard restore was asked for a shard the topology does
    /// not have.
    #[error("shard {shard} does not exist: the topology has {shard_count} shards")]
    UnknownShard {
        /// The shard asked for.
        shard: u32,
        /// Shards of the topology.
        shard_count: u32,
    },

    /// Replay: the lake's committed offset of a partition is beyond the
    /// pipeline's high watermark (the topic was recreated or truncated under
    /// a lake that outlived it), so the tail cannot start where the lake
    /// ends.
    #[error(
        "the lake holds partition {partition} up to offset {committed}, beyond the pipeline's high watermark {head}: the pipeline lost events the lake has"
    )]
    CommittedBeyondHead {
        /// The partition.
        partition: u32,
        /// The lake's committed offset for it.
        committed: u64,
        /// The pipeline's high watermark.
        head: u64,
    },

    /// A shard snapshot file is damaged (checksum, truncation, format).
    #[error("shard snapshot {}: {cause}", path.display())]
    ShardSnapshotCorrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder found.
        cause: floe_engine::Error,
    },

    /// A shard snapshot file holds another shard than its directory names.
    #[error("shard snapshot {} holds shard {found}, expected shard {expected}", path.display())]
    ShardSnapshotWrongShard {
        /// The file.
        path: PathBuf,
        /// The shard its directory names.
        expected: u32,
        /// The shard its header names.
        found: u32,
    },

    /// A shard snapshot was taken under another topology than the one in
    /// force: it may hold keys the shard no longer owns or lack keys it
    /// gained, so it is not used.
    #[error(
        "shard snapshot {} was taken under topology version {snapshot_version}, the topology in force is version {current_version}",
        path.display()
    )]
    ShardSnapshotTopology {
        /// The file.
        path: PathBuf,
        /// The topology version it was taken under.
        snapshot_version: u64,
        /// The topology version in force.
        current_version: u64,
    },

    /// A shard snapshot names another number of pipeline partitions than
    /// the pipeline has.
    #[error("shard snapshot {} covers {snapshot} partitions, the pipeline has {pipeline}", path.display())]
    ShardSnapshotPartitions {
        /// The file.
        path: PathBuf,
        /// Partitions in the snapshot.
        snapshot: usize,
        /// Partitions of the pipeline.
        pipeline: u32,
    },

    /// A shard snapshot claims offsets beyond what the log holds (the log
    /// lost its tail after the snapshot, or was replaced): using it would
    /// skip whatever is written at those offsets next.
    #[error(
        "shard {shard}'s snapshot covers partition {partition} up to offset {offset}, beyond the log's committed end {high}"
    )]
    ShardSnapshotBeyondLog {
        /// The shard.
        shard: u32,
        /// The partition.
        partition: u32,
        /// What the snapshot covers.
        offset: u64,
        /// The log's high watermark.
        high: u64,
    },

    /// Retention deleted events above a shard snapshot's offsets: the tail
    /// it needs is gone from the log.
    #[error(
        "shard {shard}'s snapshot needs partition {partition} from offset {offset}, but the log starts at {low}"
    )]
    ShardSnapshotBelowRetention {
        /// The shard.
        shard: u32,
        /// The partition.
        partition: u32,
        /// Where its tail starts.
        offset: u64,
        /// The log's low watermark.
        low: u64,
    },

    /// The event just below a shard snapshot's offset is not the one the
    /// snapshot recorded: the log was rebuilt or replaced since.
    #[error(
        "shard {shard}'s snapshot recorded event {expected} at offset {offset} of partition {partition}, the log holds {found}"
    )]
    ShardSnapshotFence {
        /// The shard.
        shard: u32,
        /// The partition.
        partition: u32,
        /// The offset checked (one below the snapshot's).
        offset: u64,
        /// The event id the snapshot recorded.
        expected: String,
        /// What the log holds there.
        found: String,
    },

    /// A background task failed.
    #[error("{0}")]
    Task(String),
}

impl Error {
    /// Whether the same call may succeed if it is tried again unchanged.
    ///
    /// Write and fsync failures poison the log, so only transient read-side
    /// conditions are retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { cause, .. } => matches!(
                cause.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Error::Locked { .. } => true,
            #[cfg(feature = "kafka")]
            Error::Kafka { retryable, .. } => *retryable,
            #[cfg(feature = "sink")]
            Error::CatalogUnavailable { cause, .. } => {
                cause.retryable() || crate::outage(cause.as_ref()).is_some()
            }
            #[cfg(feature = "sink")]
            Error::StoreUnavailable { .. } => true,
            #[cfg(feature = "sink")]
            Error::Iceberg { cause, .. } => cause.retryable() || is_storage_failure(cause),
            Error::Pipeline { cause } => cause.is_retryable(),
            #[cfg(feature = "sink")]
            Error::CommitConflict { .. } => true,
            _ => false,
        }
    }

    /// Whether this error comes from the Iceberg side (catalog, warehouse,
    /// sink) rather than the embedded log.
    pub fn is_lake(&self) -> bool {
        match self {
            #[cfg(feature = "sink")]
            Error::CatalogUnavailable { .. }
            | Error::WarehouseNotWritable { .. }
            | Error::StoreUnavailable { .. }
            | Error::BucketMissing { .. }
            | Error::Iceberg { .. }
            | Error::Arrow { .. }
            | Error::CommitConflict { .. }
            | Error::FileNotLive { .. }
            | Error::RowsChanged { .. } => true,
            Error::LakeConfig(_)
            | Error::Layout(_)
            | Error::Fenced { .. }
            | Error::Deposed { .. }
            | Error::ConcurrentCommit { .. }
            | Error::Stopped(_)
            | Error::Unsupported { .. } => true,
            _ => false,
        }
    }

    #[cfg(feature = "sink")]
    pub(crate) fn iceberg(context: &'static str, cause: iceberg::Error) -> Self {
        Error::Iceberg {
            context,
            cause: Box::new(cause),
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, cause: io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            cause,
        }
    }
}

impl Error {
    /// The read contract every backend shares: a read may start anywhere in
    /// `low..=high` (at `high` it waits for the next append).
    pub(crate) fn check_read_range(partition: u32, from: u64, low: u64, high: u64) -> Result<()> {
        if from < low {
            return Err(Error::BelowLowWatermark {
                partition,
                offset: from,
                low_watermark: low,
            });
        }
        if from > high {
            return Err(Error::BeyondHighWatermark {
                partition,
                offset: from,
                high_watermark: high,
            });
        }
        Ok(())
    }

    /// The engine's pipeline error for this error, naming the backend
    /// (`file`, `kafka`) that raised it.
    pub fn into_pipeline_error(self, backend: &'static str) -> floe_engine::Error {
        floe_engine::Error::Pipeline {
            backend,
            message: self.to_string(),
            retryable: self.is_retryable(),
            cause: Some(Box::new(self)),
        }
    }
}

/// A snapshot id as the messages print it.
fn snapshot(id: Option<i64>) -> String {
    id.map_or_else(|| "none".into(), |id| id.to_string())
}

/// Errors of the embedded log; the Kafka backend converts its own with
/// [`Error::into_pipeline_error`].
impl From<Error> for floe_engine::Error {
    fn from(e: Error) -> Self {
        let backend = if e.is_lake() { "iceberg" } else { "file" };
        e.into_pipeline_error(backend)
    }
}

/// An object-store request that failed after the storage layer's own
/// retries (iceberg-storage-opendal reports every such failure with this
/// message and no retryable flag): the store was unreachable, slow or
/// refused for a while. Nothing was committed by the failed call, so the
/// sink may try again; a wrong configuration fails at open instead (the
/// warehouse probe).
#[cfg(feature = "sink")]
fn is_storage_failure(cause: &iceberg::Error) -> bool {
    cause.kind() == iceberg::ErrorKind::Unexpected
        && cause.message() == "Failure in doing io operation"
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
