//! Sinks elected outside the lake ([`CommitFence`]): a deposed sink commits
//! nothing, and a sink whose checks passed just before another sink
//! committed cannot land its batch on top of that commit (the commit is made
//! against the table version it checked). Real SQLite catalog, local
//! warehouse, embedded log.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use floe_emitter::conformance::sample_event;
use floe_emitter::sink::{CatalogUrl, CommitFence, Lake, LakeLocation, Sink, SinkOptions};
use floe_emitter::{Error, FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, Pipeline};
use futures::future::BoxFuture;

const PARTITIONS: u32 = 4;

fn location(dir: &Path) -> LakeLocation {
    LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.join("catalog.db")),
        warehouse: format!("file://{}", dir.join("warehouse").display()),
        properties: HashMap::new(),
    }
}

fn options(instance: &str) -> SinkOptions {
    SinkOptions {
        commit_events: 250,
        instance: instance.into(),
        ..SinkOptions::default()
    }
}

async fn log_with(dir: &Path, count: u64) -> (Arc<FileLog>, Vec<Event>) {
    let log = Arc::new(
        FileLog::open(
            &dir.join("log"),
            LogOptions {
                partitions: PARTITIONS,
                segment_bytes: 16 * 1024,
                fsync: FsyncPolicy::Never,
            },
        )
        .unwrap(),
    );
    let events: Vec<Event> = (0..count)
        .map(|seq| sample_event(seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    log.append(&events).await.unwrap();
    (log, events)
}

/// A fence that says yes while `held`, and runs `interleave` (once) inside
/// its `nth` check, before answering.
#[derive(Default)]
struct TestFence {
    held: AtomicBool,
    checks: AtomicU32,
    nth: u32,
    interleave: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for TestFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestFence").finish_non_exhaustive()
    }
}

#[async_trait]
impl CommitFence for TestFence {
    async fn check(&self) -> Result<(), String> {
        let n = self.checks.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.nth {
            let work = self.interleave.lock().unwrap().take();
            if let Some(work) = work {
                work.await;
            }
        }
        if self.held.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("the election was lost".into())
        }
    }
}

/// Every row's idempotency key and pipeline position, and the count.
async fn rows(lake: &Lake) -> (usize, BTreeSet<String>, BTreeSet<(u32, u64)>) {
    let committed = lake.committed_offsets(PARTITIONS).await.unwrap();
    let mut all = Vec::new();
    lake.scan_landed(&committed, |records| {
        all.extend(records);
        Ok(())
    })
    .await
    .unwrap();
    let keys = all
        .iter()
        .map(|r| r.event.idempotency_key.clone())
        .collect();
    let positions = all.iter().map(|r| (r.partition, r.offset)).collect();
    (all.len(), keys, positions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_sink_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(dir.path(), 300).await;
    let lake = Lake::open(location(dir.path())).await.unwrap();
    let fence = Arc::new(TestFence::default());
    fence.held.store(true, Ordering::SeqCst);
    let mut sink = Sink::start_fenced(lake.clone(), log.clone(), options("a"), Some(fence.clone()))
        .await
        .unwrap();
    fence.held.store(false, Ordering::SeqCst);
    let err = sink.land_to_head().await.unwrap_err();
    assert!(matches!(err, Error::Deposed { .. }), "{err}");
    assert!(err.to_string().contains("the election was lost"), "{err}");
    assert_eq!(rows(&lake).await.0, 0, "nothing landed");
    let committed = lake.committed_offsets(PARTITIONS).await.unwrap();
    assert_eq!(committed.snapshot_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_whose_checks_went_stale_cannot_land_its_batch_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (log, events) = log_with(dir.path(), 1000).await;
    let pipeline: Arc<dyn Pipeline> = log.clone();
    let lake = Lake::open(location(dir.path())).await.unwrap();

    // Sink A is elected and has read its first batch; its next fence check
    // (the one right before its first data commit) is where it stalls. Then
    // sink B is elected, takes the lease over and lands everything. A's
    // check still answers yes: the worst case, a check that passed just
    // before A lost the election.
    let stale = Arc::new(TestFence {
        nth: 2,
        ..TestFence::default()
    });
    stale.held.store(true, Ordering::SeqCst);
    let (lake_b, pipeline_b) = (lake.clone(), pipeline.clone());
    let landed_by_b = Arc::new(AtomicU32::new(0));
    let b_count = landed_by_b.clone();
    *stale.interleave.lock().unwrap() = Some(Box::pin(async move {
        let fence = Arc::new(TestFence::default());
        fence.held.store(true, Ordering::SeqCst);
        let mut b = Sink::start_fenced(lake_b, pipeline_b, options("b"), Some(fence))
            .await
            .expect("the elected sink takes the lease over");
        let stats = b.land_to_head().await.unwrap();
        b_count.store(stats.events as u32, Ordering::SeqCst);
    }));
    let mut a = Sink::start_fenced(lake.clone(), pipeline.clone(), options("a"), Some(stale))
        .await
        .unwrap();
    let err = a.land_to_head().await.unwrap_err();
    assert!(
        matches!(err, Error::Fenced { .. } | Error::ConcurrentCommit { .. }),
        "{err}"
    );
    assert_eq!(landed_by_b.load(Ordering::SeqCst), 1000);

    // Exactly once: every event once, nothing of A's batch on top.
    let (count, keys, positions) = rows(&lake).await;
    assert_eq!(count, events.len(), "row count");
    assert_eq!(keys.len(), events.len(), "distinct idempotency keys");
    assert_eq!(positions.len(), events.len(), "distinct positions");
    let committed = lake.committed_offsets(PARTITIONS).await.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(
            committed.offsets[p as usize],
            log.high_watermark(p).unwrap()
        );
    }
}
