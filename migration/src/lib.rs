//! Shard migrations: balance analysis, plans, the coordinator that runs a
//! live migration against a [`Deployment`] (a shard cluster, its pipeline,
//! the lake and a topology store), replay of the moving keys' history from
//! the Iceberg lake and the pipeline tail, the bounded write buffer, and the
//! persisted job record.
//!
//! [`Migrator`] is the entry point: it plans, starts, follows and cancels
//! migrations, one at a time. The `floe` crate only wires it to the data
//! directory (the job store and the file topology store).
//! `docs/migration.md` describes the protocol.
//!
//! ```
//! use floe_engine::{HashFunction, Strategy, Topology};
//! use floe_migration::{KeyLoad, plan_add_shard, validate};
//!
//! let topology = Topology::new(4, HashFunction::Xxh3, Strategy::JumpBack)?;
//! let keys: Vec<KeyLoad> = (0..100)
//!     .map(|i| {
//!         let key = format!("tenant-{i}");
//!         let hash = HashFunction::Xxh3.hash(key.as_bytes());
//!         let shard = floe_engine::Router::new(topology.clone())?.route(&key, hash);
//!         Ok(KeyLoad { partition_key: key, key_hash: hash, shard, entities: 1, events: 1, bytes: 10 })
//!     })
//!     .collect::<Result<_, floe_engine::Error>>()?;
//! let plan = plan_add_shard(&topology, &keys)?;
//! assert!(plan.moves.iter().all(|m| m.to == 4));
//! assert!(validate(&plan, &topology).is_valid());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod balance;
mod buffer;
mod config;
mod coordinator;
mod error;
mod job;
mod periods;
mod plan;
mod ranges;
mod replay;
mod shrink;

pub use balance::{BalanceAnalysis, ShardLoad, analyze_balance, check_threshold};
pub use buffer::{BufferStats, WriteBuffer};
#[cfg(feature = "failpoints")]
pub use config::FailPoint;
pub use config::{ArchivedWrites, MigrationConfig, MigrationOptions, MigrationReport};
pub use coordinator::{
    Deployment, JOBS_DIR, MigrationHandle, Migrator, Settle, Stage, Unblock, inventory, list_jobs,
    request_cancel,
};
pub use error::{Error, Result};
pub use floe_emitter::replay::{LakeSize, MAX_PUSHED_KEYS, ScanStats as ReplayStats, lake_size};
pub use floe_engine::{
    DigestComparison, DigestSummary, EntityDigest, compare_digests, digest_state, summarize_state,
};
pub use job::{JobStatus, JobStore, MigrationJob, Phase, Progress, now_ms};
pub use periods::{
    due_archival, due_drops, due_periods, plan_add_period, plan_archive_period, plan_drop_period,
    plan_isolate, plan_move_period, plan_reactivate_period,
};
pub use plan::{
    KeyLoad, KeyMove, MigrationPlan, Movement, PlanKind, REPLAY_EVENTS_PER_SEC, Validation,
    plan_add_shard, plan_move_keys, plan_rebalance, plan_split, plan_unpin, shard_loads, validate,
};
pub use ranges::{plan_add_range, plan_merge_ranges, plan_move_range, plan_split_range};
pub use shrink::{plan_merge, plan_remove_shard};
