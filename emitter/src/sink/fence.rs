//! An outside authority over which sink may commit (cluster mode: the etcd
//! election of the sink, `docs/cluster.md`).
//!
//! The commit lease in the table's properties fences sinks that share a
//! lake but nothing else. A sink elected elsewhere gets a [`CommitFence`]:
//! it asks it right before every commit (data, lease renewal, release) and
//! stops with [`crate::Error::Deposed`] when the answer is no. With a fence
//! the sink also takes the table's lease over from another owner at start:
//! the election guarantees that owner's own fence says no by now, and a
//! commit it still had in flight was checked against an older table version,
//! which the catalog's compare-and-swap refuses (see `pinned`).

use async_trait::async_trait;

/// Whether this sink may still commit.
#[async_trait]
pub trait CommitFence: std::fmt::Debug + Send + Sync {
    /// `Ok` while this sink holds its election with time to spare for one
    /// commit; otherwise why not.
    async fn check(&self) -> std::result::Result<(), String>;
}
