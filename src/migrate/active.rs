//! The running migration as the write path sees it: which keys move, the
//! gate that lets writes to moving keys reach their old owner until the
//! buffer phase, and the buffer that holds them after.

use std::sync::atomic::{AtomicBool, Ordering};

use floe_migration::{Movement, WriteBuffer};
use tokio::sync::{RwLock, RwLockReadGuard};

/// Installed in the routing while a migration runs.
#[derive(Debug)]
pub(crate) struct ActiveMigration {
    pub(crate) id: String,
    pub(crate) movement: Movement,
    /// Held (shared) by each write to a moving key while it goes to the old
    /// owner; the buffer phase takes it exclusively once, so that every such
    /// write has finished (durable, in the pipeline) before the last
    /// catch-up reads the pipeline's head.
    gate: RwLock<()>,
    buffering: AtomicBool,
    pub(crate) buffer: WriteBuffer,
}

/// What a write to a moving key does.
pub(crate) enum Admit<'a> {
    /// Go to the old owner, holding the gate until the write returns.
    Direct(#[allow(dead_code, reason = "held for its drop")] RwLockReadGuard<'a, ()>),
    /// It waited in the buffer, which has been released: route it again.
    Held,
}

impl ActiveMigration {
    pub(crate) fn new(id: String, movement: Movement, buffer_capacity: usize) -> Self {
        ActiveMigration {
            id,
            movement,
            gate: RwLock::new(()),
            buffering: AtomicBool::new(false),
            buffer: WriteBuffer::new(buffer_capacity),
        }
    }

    #[inline]
    pub(crate) fn moves(&self, partition_key: &str, key_hash: u64) -> bool {
        self.movement.moves(partition_key, key_hash)
    }

    pub(crate) async fn admit(&self) -> Admit<'_> {
        if !self.buffering.load(Ordering::Acquire) {
            let guard = self.gate.read().await;
            // The buffer phase may have begun while this write waited.
            if !self.buffering.load(Ordering::Acquire) {
                return Admit::Direct(guard);
            }
        }
        self.buffer.hold().await;
        Admit::Held
    }

    /// Starts buffering: from now on writes to moving keys wait in the
    /// buffer, and when this returns no write to a moving key is on its way
    /// to the old owner any more.
    pub(crate) async fn start_buffering(&self) {
        let _exclusive = self.gate.write().await;
        self.buffering.store(true, Ordering::Release);
    }
}
