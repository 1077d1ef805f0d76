//! floe: an event-sourced sharding engine.
//!
//! Entities live in the memory of the shard that owns them. Every change is an
//! idempotent event made durable in a pipeline (the embedded log here) before
//! it is acknowledged, and opening a data directory rebuilds every shard from
//! that pipeline.
//!
//! ```no_run
//! # async fn demo() -> floe::Result<()> {
//! use floe::{Config, EntityKey, Floe};
//! use serde_json::json;
//!
//! let floe = Floe::open(Config::with_data_dir("/tmp/floe-example")).await?;
//! let key = EntityKey::new("acme", "Customer", "c-1");
//! let ack = floe.put(key.clone(), json!({ "name": "Ada" })).await?;
//! assert_eq!(ack.version, 1);
//! let customer = floe.get(&key).await?.expect("read your own write");
//! println!("{} is on shard {}", customer.key, ack.shard);
//! floe.close().await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod cluster;
mod datadir;
mod error;
mod floe;
mod health;
mod lake;
mod maintain;
mod migrate;
mod repair;
#[cfg(feature = "server")]
pub mod serve;
mod telemetry;

pub use cluster::ClusterNode;
pub use error::{Error, Result};
pub use floe::{
    ArchiveStats, EntityRead, EraseReport, ExportReport, Floe, ReadSource, RemainingCopy,
    SnapshotReport, WriteRequest,
};
pub use floe_config::{
    AuthMode, Config, FsyncMode, HealthConfig, KafkaConfig, LakeConfig, LogConfig,
    MaintenanceConfig, PartitionKeyConfig, PipelineUrl, QueryConfig, Role, Secret, ServeConfig,
    SnapshotConfig, TOKENS_ENV, Token, TokenConfig, TopologyConfig,
};
pub use floe_emitter::lake::{CompactReport, ExpireOptions, ExpireReport};
pub use floe_emitter::replay::RecoveryStats;
pub use floe_emitter::sink::{LandStats, SinkLag};
pub use floe_emitter::{DamagedRegion, LostRange, RepairReport, TornTail};
pub use floe_migration::{
    BalanceAnalysis, Error as MigrationError, JobStatus, KeyLoad, KeyMove, MigrationJob,
    MigrationPlan, Phase, PlanKind, Progress, ShardLoad, Validation,
};
pub use floe_query::{
    AsOf, Compare, Condition, CrossShardQuery, DataCacheStats, FilterError, JsonPath, OrderBy,
    QueryOptions, QueryRequest, QueryResult, QueryStats, Scalar, Thing, ThingsPage, ThingsQuery,
    parse_filter,
};
pub use health::{HealthStatus, ShardHealth, SinkHealth, SystemHealth};
pub use lake::{SinkMode, open_query, run_sink};
pub use maintain::{compact_lake, expire_lake};
#[cfg(feature = "failpoints")]
pub use migrate::FailPoint;
pub use migrate::{
    ArchivedWrites, JOBS_DIR, MigrationConfig, MigrationHandle, MigrationOptions, MigrationReport,
    Migrations, PlanRequest, list_jobs, request_cancel,
};
pub use repair::repair;
pub use telemetry::{ProbeState, WriteWindow};

pub use floe_engine::{
    Entity, EntityKey, EventKind, HashFunction, Json, KeyExtractor, PartitionKeySpec, Period,
    PeriodState, RangeBound, RangeKey, RangeRule, RebalanceHint, RoutingMetricsSnapshot,
    ShardConfig, ShardInfo, ShardLimits, ShardStats, ShardUtilization, Strategy, Topology,
    WriteAck,
};
