//! [`TopologyStore`]: where a deployment keeps the one topology in force.

use std::fmt;

use async_trait::async_trait;

use crate::error::Result;
use crate::topology::Topology;

/// The persisted topology document. A restart rebuilds every shard under
/// what the store holds, so a migration's cutover is the moment its new
/// topology is stored, and its rollback stores the old one again.
///
/// Implementations: a file in the data directory (the `floe` crate), and
/// (for scale-out) a key in etcd. `store` returns only once the document is
/// durable: a crash right after leaves the new one, a crash during leaves
/// the old or the new, never a mix.
#[async_trait]
pub trait TopologyStore: Send + Sync + fmt::Debug {
    /// The stored topology, `None` before the first `store`.
    async fn load(&self) -> Result<Option<Topology>>;

    /// Replaces the stored topology durably.
    async fn store(&self, topology: &Topology) -> Result<()>;
}
