//! A client of floe's HTTP API for other processes: entities, SQL and
//! migrations, each call sent straight to the node that owns the key's
//! shard, retried when that is safe.
//!
//! The client reads the shard map (`GET /api/v1/cluster`, docs/client.md),
//! computes a key's shard itself with floe-engine's router over the map's
//! topology and sends the call to the shard's owner. A stale-routing answer
//! (`503 stale_routing` or `not_owner`) refreshes the map and retries;
//! other retryable failures (`503 not_ready`, refused or reset connections,
//! timeouts) are retried with capped exponential backoff until the
//! [`RetryPolicy`]'s deadline. Every write carries an idempotency key, so a
//! write whose answer was lost is applied once however often it is sent.
//!
//! ```no_run
//! # async fn demo() -> floe_client::Result<()> {
//! use floe_client::{Client, EntityKey};
//! use serde_json::json;
//!
//! let floe = Client::builder("http://127.0.0.1:8080")
//!     .token("operator-secret")
//!     .build()?;
//! let key = EntityKey::new("acme", "Customer", "c-1");
//! let ack = floe.put(key.clone(), json!({ "name": "Ada" })).await?;
//! let customer = floe.get(&key).await?.expect("read your own write");
//! assert_eq!(customer.version, ack.version);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod client;
mod error;
mod map;
mod retry;
mod types;

pub use client::{Client, ClientBuilder};
pub use error::{Error, Result};
pub use map::{ClusterMap, Mode, Node, ShardOwner, ShardState};
pub use retry::{Retry, RetryPolicy};
pub use types::{
    JobStatus, MigrationJob, MigrationKind, MigrationList, MigrationPlan, MigrationStatus, Page,
    SqlColumn, SqlQuery, SqlResult, StartedMigration, Write,
};

pub use floe_engine::{Entity, EntityKey, KeyExtractor, PartitionKeySpec, Topology, WriteAck};
