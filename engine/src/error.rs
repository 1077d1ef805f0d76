use std::fmt;

/// Result type of floe-engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in floe's core. Every bad input has its own
/// variant so that callers can match on it; nothing is half-applied when one
/// of these is returned from a write.
///
/// Every floe error (this crate's and the others') follows one convention: a
/// variant's message is the whole story, including the text of what caused
/// it, and `source()` is `None` (the cause is kept in a `cause` field for
/// matching, never exposed as `source`). A reporter that prints the chain, as
/// the `floe` binary does, prints each cause once; `Display` never prints
/// `Debug`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No partition key could be read: the key fields (and the fallback) are
    /// missing and strict mode forbids routing by id, or the request did not
    /// carry the entity data that the key is read from.
    #[error("entity {entity} has no partition key: none of the fields [{}] is present (strict mode forbids routing by id; a request without the entity's data must carry its partition key)", fields.join(", "))]
    MissingPartitionKey {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// The fields that were looked for.
        fields: Vec<String>,
    },

    /// The entity's data is not acceptable (not a JSON object, bad identifiers, ...).
    #[error("invalid entity {entity}: {reason}")]
    InvalidEntity {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// What is wrong with it.
        reason: String,
    },

    /// A caller's idempotency key that cannot serve as one: empty, longer
    /// than [`crate::MAX_IDEMPOTENCY_KEY_BYTES`], or holding a control
    /// character.
    #[error("invalid idempotency key for {entity}: {reason}")]
    InvalidIdempotencyKey {
        /// `namespace/type/id` of the entity written.
        entity: EntityKeyDisplay,
        /// What is wrong with the key.
        reason: String,
    },

    /// Bytes that should have been JSON were not.
    #[error("malformed JSON: {0}")]
    MalformedJson(serde_json::Error),

    /// The serialized entity is larger than the configured limit.
    #[error("payload of {size} bytes for {entity} exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// Size of the serialized state after the change.
        size: usize,
        /// Configured maximum.
        limit: usize,
    },

    /// Entity data (or a merge patch, or the result of one) nests objects and
    /// arrays deeper than the configured limit.
    #[error(
        "{what} of {entity} nests deeper than the limit of {limit} levels (shards.max_json_depth)"
    )]
    JsonTooDeep {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// What was too deep: `entity data`, `merge patch`, `patched entity`, `stored entity`.
        what: &'static str,
        /// Configured maximum nesting.
        limit: usize,
    },

    /// A JSON object names the same key twice: floe refuses it rather than
    /// keep one of the two values silently (parsers disagree on which).
    #[error("{what} of {entity} has the key {key:?} twice in one object; send each key once")]
    DuplicateJsonKey {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// `entity data` or `merge patch`.
        what: &'static str,
        /// The repeated key.
        key: String,
    },

    /// A write would route an existing entity by another partition key (a
    /// second copy on another shard): the partition key of an entity is
    /// immutable while the entity is live.
    #[error("partition key of {entity} is immutable: {reason}")]
    PartitionKeyImmutable {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// The partition key this write carries.
        attempted: String,
        /// What the stored entity has, and how to proceed.
        reason: String,
    },

    /// An idempotency key that was already used for a different request: the
    /// first request's outcome stands, this one is not executed.
    #[error(
        "idempotency key {key:?} was already used for a different request ({original}); a retry must repeat the original request exactly, a new request needs a new key"
    )]
    IdempotencyKeyReused {
        /// The reused key.
        key: String,
        /// What the key was first used for, e.g. `upsert of acme/Order/1`.
        original: String,
    },

    /// A shard id outside the topology.
    #[error("unknown shard {shard}: the topology has {shard_count} shards")]
    UnknownShard {
        /// The shard asked for.
        shard: u32,
        /// Shards in the current topology.
        shard_count: u32,
    },

    /// `expected_version` did not match the stored version.
    #[error("version conflict on {entity}: expected version {expected}, found {actual}")]
    VersionConflict {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// The version the caller expected.
        expected: u64,
        /// The version stored (0 when the entity does not exist).
        actual: u64,
    },

    /// A restore (an imported export) of a version this deployment's history
    /// already covers: nothing to do.
    #[error(
        "{entity} is already at version {current}, at or past the restored version {version}: nothing changed"
    )]
    AlreadyRestored {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// The version the restore carried.
        version: u64,
        /// The entity's version here (its tombstone's included).
        current: u64,
    },

    /// Create of an entity that already exists (and is not deleted).
    #[error("entity {entity} already exists at version {version}")]
    AlreadyExists {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
        /// Its current version.
        version: u64,
    },

    /// Update or delete of an entity that does not exist (or is deleted).
    #[error("entity {entity} not found")]
    NotFound {
        /// `namespace/type/id` of the entity.
        entity: EntityKeyDisplay,
    },

    /// A write routed under a routing epoch the shard no longer (or not
    /// yet) has: the routing changed between routing and arrival. The
    /// cluster re-routes it; callers see this only after many re-routes.
    #[error(
        "stale routing: request routed under routing epoch {routed_epoch}, the shard is at epoch {current_epoch}"
    )]
    StaleRouting {
        /// The routing epoch the request was routed under.
        routed_epoch: u64,
        /// The shard's routing epoch.
        current_epoch: u64,
    },

    /// Cluster mode: this node may not serve the shard now (another node
    /// owns it, or the handover to this node has not finished). Retryable:
    /// the same call succeeds later here or now at the owner.
    #[error("shard {shard} is not served by this node now: {refusal}")]
    NotOwner {
        /// The shard.
        shard: u32,
        /// Why, and who owns it.
        refusal: crate::cluster::OwnerRefusal,
    },

    /// A time-routed write whose partition key has no shard: its time is
    /// missing or does not parse, or its period has no shard yet. Nothing
    /// was written.
    #[error("partition key {partition_key:?} cannot be routed: {reason}")]
    Unroutable {
        /// The partition key.
        partition_key: String,
        /// Why, in words (the text of `miss`).
        reason: String,
        /// Why, for matching.
        miss: crate::routing::TimeMiss,
    },

    /// A write to an entity of a sealed or archived period (seed 002's
    /// archive window). Nothing was written.
    #[error(
        "partition key {partition_key:?} is in period {period}, which is {state}: writes to it are refused (reads are answered from the lake)"
    )]
    PeriodArchived {
        /// The partition key.
        partition_key: String,
        /// The period's label.
        period: String,
        /// Sealed or archived.
        state: crate::routing::PeriodState,
    },

    /// A topology document that cannot be used.
    #[error("invalid topology: {0}")]
    InvalidTopology(String),

    /// A configuration value that cannot be used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An event could not be encoded or decoded.
    #[error("event codec: {0}")]
    Codec(String),

    /// A shard snapshot is damaged (truncated, a flipped bit, not a
    /// snapshot): it is refused as a whole.
    #[error("corrupt shard snapshot: {reason}")]
    CorruptSnapshot {
        /// What was wrong.
        reason: String,
    },

    /// The pipeline (the write-ahead log) failed.
    #[error("pipeline {backend}: {message}")]
    Pipeline {
        /// Which backend (`file`, `kafka`).
        backend: &'static str,
        /// What happened.
        message: String,
        /// Whether the same call may succeed if tried again.
        retryable: bool,
        /// The backend's error, when there is one (its text is `message`).
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// An I/O error with what floe was doing at the time.
    #[error("{context}: {cause}")]
    Io {
        /// What floe was doing.
        context: String,
        /// The OS error.
        cause: std::io::Error,
    },

    /// The engine is shutting down or a shard worker has stopped.
    #[error("floe is closed: {0}")]
    Closed(String),
}

impl Error {
    /// Whether the same call may succeed if it is tried again unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Pipeline { retryable, .. } => *retryable,
            Error::StaleRouting { .. } | Error::NotOwner { .. } => true,
            _ => false,
        }
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::MalformedJson(e)
    }
}

/// `namespace/type/id`, the way errors name an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityKeyDisplay(pub String);

impl fmt::Display for EntityKeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
