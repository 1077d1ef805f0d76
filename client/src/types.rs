//! What calls take and return beyond floe-engine's entity types.

use floe_engine::{Entity, EntityKey, Topology};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One write: what it does and its options. The client gives every write
/// an idempotency key (a fresh UUID unless one is set here), so a retry
/// after a lost answer is applied once.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub(crate) key: EntityKey,
    pub(crate) op: WriteOp,
    pub(crate) expected_version: Option<u64>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) partition_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WriteOp {
    Put(Value),
    Create(Value),
    Update(Value),
    Delete,
}

impl Write {
    fn new(key: EntityKey, op: WriteOp) -> Write {
        Write {
            key,
            op,
            expected_version: None,
            idempotency_key: None,
            partition_key: None,
        }
    }

    /// Creates or replaces the entity with `data` (a JSON object).
    pub fn put(key: EntityKey, data: Value) -> Write {
        Write::new(key, WriteOp::Put(data))
    }

    /// Creates the entity; `already_exists` if it exists.
    pub fn create(key: EntityKey, data: Value) -> Write {
        Write::new(key, WriteOp::Create(data))
    }

    /// Applies a JSON merge patch (RFC 7386) to the entity.
    pub fn update(key: EntityKey, patch: Value) -> Write {
        Write::new(key, WriteOp::Update(patch))
    }

    /// Deletes the entity.
    pub fn delete(key: EntityKey) -> Write {
        Write::new(key, WriteOp::Delete)
    }

    /// Applies only if the entity is at `version` (0: does not exist).
    pub fn expected_version(mut self, version: u64) -> Write {
        self.expected_version = Some(version);
        self
    }

    /// The key that makes repeats of this write one write. Use the same
    /// key when the caller itself retries the same logical change.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Write {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The partition key, for entities whose key comes from data the call
    /// does not carry.
    pub fn partition_key(mut self, key: impl Into<String>) -> Write {
        self.partition_key = Some(key.into());
        self
    }
}

/// One page of [`Client::list`](crate::Client::list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Live entities in id order.
    pub entities: Vec<Entity>,
    /// Where the next page starts; `None` on the last page.
    pub next_after: Option<String>,
}

/// A SQL query with its options.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SqlQuery {
    /// One read-only statement.
    pub sql: String,
    /// Also read acknowledged events the lake has not landed yet.
    pub fresh: bool,
    /// Read the lake as of this snapshot id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_snapshot: Option<i64>,
    /// Read the lake as of this time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_time_ms: Option<i64>,
    /// A timeout shorter than the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl SqlQuery {
    /// `sql` with no options.
    pub fn new(sql: impl Into<String>) -> SqlQuery {
        SqlQuery {
            sql: sql.into(),
            ..SqlQuery::default()
        }
    }
}

/// The rows of a SQL query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SqlResult {
    /// Name and Arrow type of each column.
    pub columns: Vec<SqlColumn>,
    /// One JSON object per row (null columns absent).
    pub rows: Vec<Map<String, Value>>,
    /// What the query read (snapshot, files, rows, time).
    pub stats: Value,
}

/// A column of a [`SqlResult`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SqlColumn {
    /// Its name.
    pub name: String,
    /// Its Arrow type, e.g. `Utf8` or `Int64`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A topology change (the body of a plan or start call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MigrationKind {
    /// One more shard.
    AddShard,
    /// The highest shard leaves.
    RemoveShard {
        /// The shard that leaves.
        shard: u32,
    },
    /// Keys move from hot to cold shards.
    Rebalance {
        /// A shard this fraction above the mean load is hot.
        threshold: f64,
    },
    /// A new shard takes about half of `shard`'s keys.
    Split {
        /// The shard split.
        shard: u32,
    },
    /// Shard `from` (the highest) leaves; its keys go to `into`.
    Merge {
        /// The shard that leaves.
        from: u32,
        /// The shard that takes its keys.
        into: u32,
    },
}

/// A planned migration, not started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MigrationPlan {
    /// The plan: kind, topologies before and after, moving keys.
    pub plan: Value,
    /// Its checks (warnings, estimated cost).
    pub validation: Value,
}

/// A started migration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StartedMigration {
    /// Its id, for [`Client::migration`](crate::Client::migration).
    pub id: String,
    /// The plan it runs.
    pub plan: Value,
    /// The plan's checks.
    pub validation: Value,
}

/// A migration's record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MigrationJob {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: MigrationKind,
    /// The topology before.
    pub from: Topology,
    /// The topology after.
    pub to: Topology,
    /// Running, completed or rolled back.
    pub status: JobStatus,
    /// The last phase entered (`copy`, `cutover`, `done`, ...).
    pub phase: String,
    /// Why it rolled back.
    pub error: Option<String>,
    /// Start, ms since the epoch.
    pub started_at_ms: u64,
    /// End, ms since the epoch.
    pub finished_at_ms: Option<u64>,
}

/// How a migration ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Running.
    Running,
    /// The new topology is in force.
    Completed,
    /// The old topology is in force.
    RolledBack,
}

/// A migration and, while it runs here, its live progress.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MigrationStatus {
    /// The record.
    pub job: MigrationJob,
    /// Live progress; `None` once it has ended.
    pub progress: Option<Value>,
}

/// Every migration the node knows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MigrationList {
    /// The id of the running one.
    pub running: Option<String>,
    /// Their records.
    pub migrations: Vec<MigrationJob>,
}
