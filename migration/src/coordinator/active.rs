//! The running migration as the write path sees it: which keys move, the
//! gate that lets writes to moving keys reach their old owner until the
//! buffer phase, and the buffer that holds them after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::buffer::WriteBuffer;
use crate::plan::Movement;
use floe_engine::{Admission, AdmissionGuard, Admit};
use tokio::sync::RwLock;

/// Installed in the routing table while a migration runs.
#[derive(Debug)]
pub(crate) struct ActiveMigration {
    pub(crate) id: String,
    pub(crate) movement: Movement,
    /// Held (shared) by each write to a moving key while it goes to the old
    /// owner; the buffer phase takes it exclusively once, so that every such
    /// write has finished (durable, in the pipeline) before the last
    /// catch-up reads the pipeline's head.
    gate: Arc<RwLock<()>>,
    buffering: AtomicBool,
    pub(crate) buffer: WriteBuffer,
}

impl ActiveMigration {
    pub(crate) fn new(id: String, movement: Movement, buffer_capacity: usize) -> Self {
        ActiveMigration {
            id,
            movement,
            gate: Arc::new(RwLock::new(())),
            buffering: AtomicBool::new(false),
            buffer: WriteBuffer::new(buffer_capacity),
        }
    }

    /// Starts buffering: from now on writes to moving keys wait in the
    /// buffer, and when this returns no write to a moving key is on its way
    /// to the old owner any more.
    pub(crate) async fn start_buffering(&self) {
        let _exclusive = self.gate.write().await;
        self.buffering.store(true, Ordering::Release);
    }
}

#[async_trait::async_trait]
impl Admission for ActiveMigration {
    fn owner(&self) -> &str {
        &self.id
    }

    #[inline]
    fn holds(&self, partition_key: &str, key_hash: u64) -> bool {
        self.movement.moves(partition_key, key_hash)
    }

    async fn admit(&self) -> Admit {
        if !self.buffering.load(Ordering::Acquire) {
            let guard = self.gate.clone().read_owned().await;
            // The buffer phase may have begun while this write waited.
            if !self.buffering.load(Ordering::Acquire) {
                return Admit::Direct(AdmissionGuard::new(guard));
            }
        }
        self.buffer.hold().await;
        Admit::Held
    }
}
