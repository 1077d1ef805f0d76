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

    /// A group commit of `shard` under `epoch` failed with an unknown outcome
    /// (some of its events may be durable, none was applied here). The gate
    /// must stop serving the shard until it is restored from the pipeline:
    /// otherwise a caller's retry of such a write (same idempotency key)
    /// would not find it and would write it a second time.
    fn outcome_unknown(&self, _shard: u32, _epoch: u64) {}
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::cluster::{RecoveredShard, ShardCluster};
    use crate::command::{Command, Operation};
    use crate::entity::EntityKey;
    use crate::error::{Error, Result};
    use crate::event::Event;
    use crate::json::Json;
    use crate::pipeline::{Offset, Pipeline, Record};
    use crate::topology::Topology;
    use crate::worker::ShardConfig;

    /// Serves under `epoch` while it is >= 0; refuses, naming node "n2", below.
    #[derive(Debug)]
    struct TestGate(AtomicI64);

    impl OwnershipGate for TestGate {
        fn check(&self, _shard: u32) -> Result<u64, OwnerRefusal> {
            match self.0.load(Ordering::SeqCst) {
                e if e >= 0 => Ok(e as u64),
                _ => Err(OwnerRefusal {
                    reason: "the shard is not granted to this node".into(),
                    owner: Some("n2".into()),
                    owner_addr: Some("127.0.0.1:7002".into()),
                }),
            }
        }
    }

    /// Keeps what it is given; each append waits for a permit.
    #[derive(Debug)]
    struct Log {
        events: Mutex<Vec<Event>>,
        permits: Semaphore,
    }

    #[async_trait::async_trait]
    impl Pipeline for Log {
        fn partitions(&self) -> u32 {
            1
        }
        async fn append(&self, events: &[Event]) -> Result<Vec<Offset>> {
            self.permits.acquire().await.expect("open").forget();
            let mut log = self.events.lock().unwrap();
            log.extend_from_slice(events);
            Ok((0..events.len() as u64).collect())
        }
        async fn read(&self, _: u32, _: Offset, _: usize, _: Duration) -> Result<Vec<Record>> {
            Ok(Vec::new())
        }
        async fn high_watermark(&self, _: u32) -> Result<Offset> {
            Ok(0)
        }
        async fn low_watermark(&self, _: u32) -> Result<Offset> {
            Ok(0)
        }
        async fn delete_before(&self, _: u32, _: Offset) -> Result<Offset> {
            Ok(0)
        }
        async fn close(&self) -> Result<()> {
            Ok(())
        }
    }

    fn put(id: &str) -> Command {
        Command {
            key: EntityKey::new("t", "T", id),
            op: Operation::Upsert(Json::parse("{}").unwrap()),
            expected_version: None,
            idempotency_key: None,
            partition_key: "t".into(),
            key_hash: 0,
        }
    }

    fn gated(epoch: i64) -> (ShardCluster, Arc<Log>, Arc<TestGate>) {
        let log = Arc::new(Log {
            events: Mutex::new(Vec::new()),
            permits: Semaphore::new(1000),
        });
        let gate = Arc::new(TestGate(AtomicI64::new(epoch)));
        let cluster = ShardCluster::start_gated(
            Topology::new(
                1,
                crate::routing::HashFunction::Xxh3,
                crate::routing::Strategy::JumpBack,
            )
            .unwrap(),
            vec![RecoveredShard::new(16)],
            log.clone(),
            ShardConfig::default(),
            Some(gate.clone()),
        )
        .unwrap();
        (cluster, log, gate)
    }

    #[tokio::test]
    async fn a_shard_not_owned_refuses_reads_and_writes_and_writes_nothing() {
        let (cluster, log, _) = gated(-1);
        let error = cluster.write(put("a")).await.result.unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            "shard 0 is not served by this node now: the shard is not granted to this node; \
             the owner is node \"n2\" at 127.0.0.1:7002"
        );
        let read = cluster.get(&put("a").key, "t").await.unwrap_err();
        assert!(matches!(read, Error::NotOwner { shard: 0, .. }), "{read}");
        assert!(log.events.lock().unwrap().is_empty());
        cluster.close().await;
    }

    /// A node keeps the worker (and its last copy of the state) of a shard
    /// it lost: a list must refuse, as a get does, rather than answer from
    /// that copy, which the new owner's writes no longer reach.
    #[tokio::test]
    async fn a_shard_served_elsewhere_refuses_lists_instead_of_answering_from_its_copy() {
        let (cluster, _log, gate) = gated(7);
        cluster.write(put("a")).await.result.unwrap();
        let listed = cluster.list("t", "T", None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        gate.0.store(-1, Ordering::SeqCst);
        let error = cluster.list("t", "T", None, 10).await.unwrap_err();
        assert!(matches!(error, Error::NotOwner { shard: 0, .. }), "{error}");
        let error = cluster.list_shard(0, "t", "T", None, 10).await.unwrap_err();
        assert!(matches!(error, Error::NotOwner { shard: 0, .. }), "{error}");
        let error = cluster.list_namespace("t", None, 10).await.unwrap_err();
        assert!(matches!(error, Error::NotOwner { shard: 0, .. }), "{error}");
        gate.0.store(9, Ordering::SeqCst);
        assert_eq!(cluster.list("t", "T", None, 10).await.unwrap(), listed);
        cluster.close().await;
    }

    #[tokio::test]
    async fn events_carry_the_owner_epoch_they_were_acknowledged_under() {
        let (cluster, log, _) = gated(7);
        cluster.write(put("a")).await.result.unwrap();
        assert_eq!(log.events.lock().unwrap()[0].owner_epoch, 7);
        assert!(cluster.get(&put("a").key, "t").await.unwrap().is_some());
        cluster.close().await;
    }

    #[tokio::test]
    async fn a_write_durable_after_the_ownership_was_lost_is_not_acknowledged() {
        let (cluster, log, gate) = gated(7);
        log.permits.forget_permits(1000);
        let cluster = Arc::new(cluster);
        let write = tokio::spawn({
            let cluster = cluster.clone();
            async move { cluster.write(put("a")).await.result }
        });
        // The batch passed the first check and waits in the append.
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.0.store(-1, Ordering::SeqCst);
        log.permits.add_permits(1);
        let error = write.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::NotOwner { .. }), "{error}");
        // Durable all the same: the next owner restores it from the pipeline.
        assert_eq!(log.events.lock().unwrap().len(), 1);
        // Granted again under a new epoch: that is another ownership too.
        gate.0.store(9, Ordering::SeqCst);
        log.permits.add_permits(1000);
        cluster.write(put("b")).await.result.unwrap();
        cluster.close().await;
    }
}
