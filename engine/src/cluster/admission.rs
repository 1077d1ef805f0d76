//! The hook a running migration installs in the routing table: which keys it
//! holds, and what a write to one of them does.

use std::fmt;

use async_trait::async_trait;

/// Decides what happens to writes to the keys a running migration moves.
/// Installed in the [`super::RoutingTable`] for the migration's duration.
#[async_trait]
pub trait Admission: Send + Sync + fmt::Debug {
    /// Who installed the hook (a migration's id), for error messages.
    fn owner(&self) -> &str;

    /// Whether writes to this key pass through [`Admission::admit`].
    fn holds(&self, partition_key: &str, key_hash: u64) -> bool;

    /// Lets a write go on to the owner the current routing names (holding
    /// the returned guard until the write returns), or waits until the
    /// routing has changed and returns [`Admit::Held`]: route again.
    async fn admit(&self) -> Admit;
}

/// What a write to a held key does.
#[derive(Debug)]
pub enum Admit {
    /// Go to the current owner, holding the guard until the write returns.
    Direct(AdmissionGuard),
    /// The write waited and has been released: route it again.
    Held,
}

/// Whatever a hook needs held while an admitted write is under way (a read
/// guard of a gate, say); dropped when the write returns.
pub struct AdmissionGuard(#[allow(dead_code, reason = "held for its drop")] Box<dyn Send + Sync>);

impl AdmissionGuard {
    /// Holds `guard` for the write's duration.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        AdmissionGuard(Box::new(guard))
    }
}

impl fmt::Debug for AdmissionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdmissionGuard")
    }
}
