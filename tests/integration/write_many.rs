//! `Floe::write_many`: one outcome per request, each request atomic and
//! idempotent on its own, and acknowledged means durable across a real
//! process crash in the middle of batches.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use floe::{Config, EntityKey, Floe, FsyncMode, PartitionKeySpec, WriteRequest};
use floe_engine::Error as EngineError;
use serde_json::json;

#[path = "../support/writes.rs"]
#[allow(dead_code, reason = "shared with other tests")]
mod writes_support;

use writes_support::high_watermarks;

fn config(dir: &Path, fsync: FsyncMode) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = fsync;
    config.topology.shards = 4;
    config.log.partitions = 4;
    config.lake.enabled = false;
    // Entities spread over every shard.
    config.partition_key.default = PartitionKeySpec::id();
    config
}

fn key(id: &str) -> EntityKey {
    EntityKey::new("t", "Thing", id)
}

fn engine(outcome: &floe::Result<floe::WriteAck>) -> &EngineError {
    match outcome {
        Err(e) => e
            .as_engine()
            .unwrap_or_else(|| panic!("not an engine error: {e}")),
        Ok(ack) => panic!("expected a refusal, got {ack:?}"),
    }
}

/// Every event the log holds, by entity id.
async fn events_by_id(floe: &Floe) -> BTreeMap<String, Vec<floe_engine::Event>> {
    let pipeline = floe.pipeline();
    let mut out: BTreeMap<String, Vec<floe_engine::Event>> = BTreeMap::new();
    for partition in 0..pipeline.partitions() {
        let end = pipeline.high_watermark(partition).await.unwrap();
        let mut from = 0;
        while from < end {
            let records = pipeline
                .read(partition, from, 10_000, Duration::ZERO)
                .await
                .unwrap();
            assert!(
                !records.is_empty(),
                "partition {partition} ends before {end}"
            );
            from = records.last().unwrap().offset + 1;
            for record in records {
                out.entry(record.event.entity_id.clone())
                    .or_default()
                    .push(record.event);
            }
        }
    }
    out
}

#[tokio::test]
async fn every_request_of_a_batch_gets_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), FsyncMode::Never))
        .await
        .unwrap();
    floe.put(key("old"), json!({"v": 0})).await.unwrap();
    let before: u64 = high_watermarks(&floe).await.iter().sum();
    let requests = vec![
        // 0: a plain create.
        WriteRequest::create(key("a"), json!({"v": 1})).idempotency_key("k-a"),
        // 1: the same request again in the batch: a retry, same outcome.
        WriteRequest::create(key("a"), json!({"v": 1})).idempotency_key("k-a"),
        // 2: the key again for another request (on the same shard, so that
        // item 0 is surely first): refused.
        WriteRequest::create(key("other"), json!({"v": 1}))
            .idempotency_key("k-a")
            .partition_key("a"),
        // 3: a second create of `a` (no key): it exists by now.
        WriteRequest::create(key("a"), json!({"v": 2})),
        // 4: an update expecting the version item 0 made: applies, version 2.
        WriteRequest::update(key("a"), json!({"w": true})).expected_version(1),
        // 5: another one expecting version 1: conflict (item 4 moved it on).
        WriteRequest::update(key("a"), json!({"x": true})).expected_version(1),
        // 6: a bad key.
        WriteRequest::upsert(key(""), json!({"v": 1})),
        // 7: a merge patch that is not an object.
        WriteRequest::update(key("old"), json!([1, 2])),
        // 8: entity data that is not an object.
        WriteRequest::upsert(key("b"), json!("text")),
        // 9: delete of something that does not exist.
        WriteRequest::delete(key("never")),
        // 10: good writes on other entities (other shards) go on.
        WriteRequest::upsert(key("b"), json!({"v": 3})),
        WriteRequest::delete(key("old")).expected_version(1),
    ];
    let outcomes = floe.write_many(requests).await;
    assert_eq!(outcomes.len(), 12);
    let first = outcomes[0].as_ref().unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(outcomes[1].as_ref().unwrap(), first, "a retry in the batch");
    assert!(
        matches!(
            engine(&outcomes[2]),
            EngineError::IdempotencyKeyReused { .. }
        ),
        "{:?}",
        outcomes[2]
    );
    assert!(matches!(
        engine(&outcomes[3]),
        EngineError::AlreadyExists { .. }
    ));
    assert_eq!(outcomes[4].as_ref().unwrap().version, 2);
    assert!(matches!(
        engine(&outcomes[5]),
        EngineError::VersionConflict { .. }
    ));
    for bad in [6, 7] {
        assert!(
            matches!(engine(&outcomes[bad]), EngineError::InvalidEntity { .. }),
            "{bad}: {:?}",
            outcomes[bad]
        );
    }
    assert!(outcomes[8].is_err());
    assert!(matches!(engine(&outcomes[9]), EngineError::NotFound { .. }));
    assert_eq!(outcomes[10].as_ref().unwrap().version, 1);
    assert_eq!(outcomes[11].as_ref().unwrap().version, 2);
    // Exactly the acknowledged changes reached the log: a create, an update,
    // an upsert and a delete.
    let after: u64 = high_watermarks(&floe).await.iter().sum();
    assert_eq!(after - before, 4);
    // A second batch retrying the first request by key: the first outcome.
    let again = floe
        .write_many(vec![
            WriteRequest::create(key("a"), json!({"v": 1})).idempotency_key("k-a"),
        ])
        .await;
    assert_eq!(again[0].as_ref().unwrap(), first);
    let expect = |floe: Floe| async move {
        let a = floe.get(&key("a")).await.unwrap().unwrap();
        assert_eq!(
            (a.version, a.data.to_value().unwrap()),
            (2, json!({"v": 1, "w": true}))
        );
        assert!(floe.get(&key("old")).await.unwrap().is_none());
        assert!(floe.get_routed(&key("other"), "a").await.unwrap().is_none());
        assert_eq!(floe.get(&key("b")).await.unwrap().unwrap().version, 1);
        floe.close().await.unwrap();
    };
    expect(floe).await;
    expect(
        Floe::open(config(dir.path(), FsyncMode::Never))
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_batch_shares_group_commits_and_an_empty_one_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), FsyncMode::Always))
        .await
        .unwrap();
    assert!(floe.write_many(Vec::new()).await.is_empty());
    let requests = (0..400)
        .map(|i| WriteRequest::upsert(key(&format!("g-{i}")), json!({"i": i})))
        .collect();
    let outcomes = floe.write_many(requests).await;
    assert!(outcomes.iter().all(Result::is_ok));
    let stats = floe.shard_stats().await.unwrap();
    let (writes, batches) = stats
        .iter()
        .fold((0, 0), |(w, b), s| (w + s.writes, b + s.batches));
    assert_eq!(writes, 400);
    // One group commit per shard: 4 shards, 400 writes.
    assert_eq!(batches, 4, "{stats:?}");
    floe.close().await.unwrap();
}

// ------------------------------------------------- a crash in mid-batch

const CHILD_DIR: &str = "FLOE_WRITE_MANY_CHILD_DIR";
const CALLERS: u64 = 4;
const BATCH: u64 = 50;

/// The requests of batch `b`: 50 creates with their own idempotency keys,
/// item 7 repeated (a retry inside the batch), and one request reusing
/// item 0's key for another entity (refused, never written).
fn batch(b: u64) -> Vec<(String, WriteRequest)> {
    let mut out: Vec<(String, WriteRequest)> = (0..BATCH)
        .map(|i| {
            let idem = format!("b{b}-i{i}");
            let request = WriteRequest::create(key(&format!("e-{b}-{i}")), json!({"b": b, "i": i}))
                .idempotency_key(&idem);
            (idem, request)
        })
        .collect();
    out.push(out[7].clone());
    out.push((
        format!("b{b}-i0"),
        // Routed with item 0, so that item 0 is surely admitted first.
        WriteRequest::create(key(&format!("bad-{b}")), json!({"b": b}))
            .idempotency_key(format!("b{b}-i0"))
            .partition_key(format!("e-{b}-0")),
    ));
    out
}

/// The child process: writes batches from several callers until it is
/// killed, printing every outcome as soon as it has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_crash_in_the_middle_of_batches_loses_nothing_acknowledged"]
async fn write_many_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by the crash test");
    let floe = Floe::open(config(Path::new(&dir), FsyncMode::Always))
        .await
        .unwrap();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let floe = floe.clone();
        callers.spawn(async move {
            for b in (caller..100_000).step_by(CALLERS as usize) {
                let (idems, requests): (Vec<_>, Vec<_>) = batch(b).into_iter().unzip();
                let outcomes = floe.write_many(requests).await;
                let mut lines = String::new();
                for (idem, outcome) in idems.iter().zip(outcomes) {
                    match outcome {
                        Ok(ack) => {
                            lines.push_str(&format!("ack {idem} {} {}\n", ack.key.id, ack.event_id))
                        }
                        Err(e) => lines.push_str(&format!(
                            "err {idem} {}\n",
                            e.to_string().replace('\n', " ")
                        )),
                    }
                }
                let mut out = std::io::stdout().lock();
                out.write_all(lines.as_bytes()).unwrap();
                out.flush().unwrap();
            }
        });
    }
    while callers.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_batches_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "write_many::write_many_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut read_line =
        |line: &mut String, acked: &mut BTreeMap<_, _>, refused: &mut BTreeSet<_>| {
            line.clear();
            if stdout.read_line(line).unwrap() == 0 {
                return false;
            }
            let parts: Vec<&str> = line.trim_end().splitn(4, ' ').collect();
            match parts[0] {
                "ack" => {
                    let ack = (parts[2].to_string(), parts[3].to_string());
                    // A retry inside a batch is acknowledged with the same event.
                    if let Some(previous) = acked.insert(parts[1].to_string(), ack.clone()) {
                        assert_eq!(previous, ack, "{line}");
                    }
                }
                "err" => {
                    refused.insert(parts[1].to_string());
                }
                _ => {} // the test harness's own lines
            }
            true
        };
    // Kill it while batches are in flight: it never stops writing by itself.
    while acked.len() < 3_000 {
        assert!(
            read_line(&mut line, &mut acked, &mut refused),
            "the child stopped early"
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it printed before dying was acknowledged too.
    while read_line(&mut line, &mut acked, &mut refused) {}
    assert!(refused.len() * 40 < acked.len(), "one refusal per batch");

    let floe = Floe::open(config(dir.path(), FsyncMode::Always))
        .await
        .unwrap();
    let events = events_by_id(&floe).await;
    println!(
        "acknowledged {} items, {} durable after the crash",
        acked.len(),
        events.len()
    );
    for (idem, (id, event_id)) in &acked {
        let found = &events
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged {idem} ({id}) is lost"));
        assert_eq!(found.len(), 1, "{id} written {} times", found.len());
        assert_eq!(&found[0].event_id.to_string(), event_id, "{idem}");
        assert_eq!(floe.get(&key(id)).await.unwrap().unwrap().version, 1);
    }
    assert!(
        events.keys().all(|id| !id.starts_with("bad-")),
        "a refused request was written"
    );
    // Everything durable is whole batches' items, each once; some durable
    // items may not have been acknowledged (the crash came first).
    let highest = acked
        .values()
        .map(|(id, _)| id.split('-').nth(1).unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    // Resubmit every batch the child may have started: each item is there
    // once afterwards, acknowledged ones with their first event.
    for b in 0..=highest + CALLERS {
        let (idems, requests): (Vec<_>, Vec<_>) = batch(b).into_iter().unzip();
        let outcomes = floe.write_many(requests).await;
        for (i, (idem, outcome)) in idems.iter().zip(&outcomes).enumerate() {
            if i as u64 == BATCH + 1 {
                assert!(outcome.is_err(), "the reused key is refused again");
                continue;
            }
            let ack = outcome.as_ref().unwrap_or_else(|e| panic!("{idem}: {e}"));
            if let Some((_, event_id)) = acked.get(idem) {
                assert_eq!(&ack.event_id.to_string(), event_id, "{idem} applied twice");
            }
        }
    }
    let events = events_by_id(&floe).await;
    let expected = (highest + CALLERS + 1) * BATCH;
    assert_eq!(events.len() as u64, expected);
    assert!(
        events.values().all(|e| e.len() == 1),
        "an item was applied twice"
    );
    let state: BTreeSet<String> = floe
        .list("t", "Thing", None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key.id)
        .collect();
    assert_eq!(state.len() as u64, expected);
    floe.close().await.unwrap();
}
