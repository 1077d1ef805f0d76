//! The hook cluster mode installs in every shard worker: may this node serve
//! the shard now, and under which owner epoch?
//!
//! The engine knows nothing of etcd. The wiring (`floe` in cluster mode)
//! implements [`OwnershipGate`] over its ownership lease; a worker asks it
//! once before a group commit (reads and writes of the batch are served only
//! if it says yes) and once more after the batch is durable and right before
//! acknowledging: a write is acknowledged only if both answers are yes with
//! the same epoch. Without a gate (one node), every shard is always served.

use std::fmt;

/// Why this node may not serve a shard now, and who may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRefusal {
    /// What stops this node (not granted, waiting for the previous owner,
    /// restoring, lease expiring, ...).
    pub reason: String,
    /// The node the latest grant names, when known.
    pub owner: Option<String>,
    /// That node's advertised `host:port`, when known.
    pub owner_addr: Option<String>,
}

impl fmt::Display for OwnerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(owner) = &self.owner {
            write!(f, "; the owner is node {owner:?}")?;
            if let Some(addr) = &self.owner_addr {
                write!(f, " at {addr}")?;
            }
        }
        Ok(())
    }
}

/// Answers, for one node, whether it may serve a shard now.
pub trait OwnershipGate: Send + Sync + fmt::Debug {
    /// The owner epoch under which this node may serve `shard` right now, or
    /// why not. Must be cheap: it is asked twice per group commit.
    fn check(&self, shard: u32) -> Result<u64, OwnerRefusal>;
}
