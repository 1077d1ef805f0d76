use super::*;
use std::time::Duration;

use crate::command::Operation;
use crate::entity::EntityKey;
use crate::json::Json;
use crate::pipeline::{Offset, Record};
use tokio::sync::Semaphore;

/// A pipeline whose appends wait for a permit: the test decides when a
/// group commit becomes durable.
#[derive(Debug)]
struct GatedPipeline {
    gate: Semaphore,
}

#[async_trait::async_trait]
impl Pipeline for GatedPipeline {
    fn partitions(&self) -> u32 {
        1
    }
    async fn append(&self, events: &[Event]) -> Result<Vec<Offset>> {
        self.gate.acquire().await.expect("open").forget();
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

fn worker(pipeline: Arc<GatedPipeline>) -> (ShardHandle, JoinHandle<crate::ShardState>) {
    ShardWorker {
        shard: 0,
        state: crate::ShardState::new(),
        dedup: DedupWindow::new(16),
        pipeline,
        config: ShardConfig::default(),
        epoch: Arc::new(AtomicU64::new(1)),
        keys: Arc::new(PartitionKeyIndex::new()),
        idempotency: Arc::new(IdempotencyIndex::new(16)),
        gate: None,
    }
    .spawn()
}

fn put(id: &str) -> Command {
    Command {
        key: EntityKey::new("t", "T", id),
        op: Operation::Upsert(Json::parse("{}").unwrap()),
        expected_version: None,
        idempotency_key: None,
        partition_key: "t".into(),
        key_hash: 1,
    }
}

#[tokio::test]
async fn a_group_commit_waiting_on_the_pipeline_shows_as_pipeline_wait() {
    let pipeline = Arc::new(GatedPipeline {
        gate: Semaphore::new(0),
    });
    let (handle, task) = worker(pipeline.clone());
    assert_eq!(handle.pipeline_wait(), Duration::ZERO);
    let write = tokio::spawn({
        let handle = handle.clone();
        async move { handle.write(put("a"), 1).await }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    let waited = handle.pipeline_wait();
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
    pipeline.gate.add_permits(1);
    write.await.unwrap().unwrap();
    assert_eq!(handle.pipeline_wait(), Duration::ZERO);
    assert!(handle.last_append() >= Duration::from_millis(40));
    handle.stop().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_write_of_an_invalid_key_is_refused_before_the_pipeline() {
    // No permits: a write that reached the pipeline would hang.
    let pipeline = Arc::new(GatedPipeline {
        gate: Semaphore::new(0),
    });
    let (handle, task) = worker(pipeline);
    for id in ["", "o\u{0}1"] {
        let err = handle.write(put(id), 1).await.unwrap_err();
        assert!(matches!(err, Error::InvalidEntity { .. }), "{err}");
    }
    assert!(
        handle
            .get(EntityKey::new("t", "T", ""))
            .await
            .unwrap()
            .is_none()
    );
    handle.stop().await;
    task.await.unwrap();
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn an_injected_delay_slows_every_batch_until_cleared() {
    let pipeline = Arc::new(GatedPipeline {
        gate: Semaphore::new(100),
    });
    let (handle, task) = worker(pipeline);
    handle.set_fault_delay(Duration::from_millis(80));
    assert_eq!(handle.fault_delay(), Duration::from_millis(80));
    let started = std::time::Instant::now();
    handle.stats().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(80));
    handle.set_fault_delay(Duration::ZERO);
    let started = std::time::Instant::now();
    handle.write(put("b"), 1).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(80));
    handle.stop().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_batch_routed_under_a_stale_epoch_comes_back_whole() {
    // No permits: anything that reached the pipeline would hang.
    let pipeline = Arc::new(GatedPipeline {
        gate: Semaphore::new(0),
    });
    let (handle, task) = worker(pipeline);
    let commands = vec![put("a"), put("b"), put("")];
    let outcomes = handle.write_many(commands.clone(), 7, 2).await;
    assert_eq!(outcomes.len(), 3);
    for (outcome, command) in outcomes.into_iter().zip(commands) {
        match outcome {
            Outcome::Stale(back) => assert_eq!(back, command),
            Outcome::Done(r) => panic!("admitted under a stale epoch: {r:?}"),
        }
    }
    assert_eq!(handle.stats().await.unwrap().batches, 0);
    handle.stop().await;
    task.await.unwrap();
}

#[tokio::test]
async fn a_batch_is_one_group_commit_and_a_bad_key_fails_alone() {
    let pipeline = Arc::new(GatedPipeline {
        gate: Semaphore::new(1),
    });
    let (handle, task) = worker(pipeline);
    let outcomes = handle
        .write_many(vec![put("a"), put(""), put("a"), put("b")], 1, 1024)
        .await;
    let versions: Vec<Option<u64>> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Done(Ok(ack)) => Some(ack.version),
            Outcome::Done(Err(Error::InvalidEntity { .. })) => None,
            other => panic!("{other:?}"),
        })
        .collect();
    // In order: `a` twice (versions 1 and 2), the bad key refused alone.
    assert_eq!(versions, [Some(1), None, Some(2), Some(1)]);
    let stats = handle.stats().await.unwrap();
    assert_eq!((stats.batches, stats.writes, stats.write_errors), (1, 3, 1));
    handle.stop().await;
    task.await.unwrap();
}
