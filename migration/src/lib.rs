//! Shard migrations: balance analysis, plans, replay of the moving keys'
//! history from the Iceberg lake and the pipeline tail, the bounded write
//! buffer, verification digests, and the persisted job record.
//!
//! The parts here are the pure ones and the readers; the `floe` crate wires
//! them into a running deployment (routing switch, shard workers, the data
//! directory). `docs/migration.md` describes the protocol.
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
mod error;
mod job;
mod plan;
mod replay;

pub use balance::{BalanceAnalysis, ShardLoad, analyze_balance};
pub use buffer::{BufferStats, WriteBuffer};
pub use error::{Error, Result};
pub use floe_engine::{
    DigestComparison, DigestSummary, EntityDigest, compare_digests, digest_state, summarize_state,
};
pub use job::{JobStatus, JobStore, MigrationJob, Phase, Progress, now_ms};
pub use plan::{
    KeyLoad, KeyMove, MigrationPlan, Movement, PlanKind, REPLAY_EVENTS_PER_SEC, Validation,
    plan_add_shard, plan_merge, plan_rebalance, plan_remove_shard, plan_split, shard_loads,
    validate,
};
pub use replay::{LakeReplay, LakeSize, MAX_PUSHED_KEYS, ReplayStats, lake_size, replay_tail};
