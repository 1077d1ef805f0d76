//! Acknowledged means durable: state rebuilt after the process state is
//! dropped without `close`, with a torn record at a log tail.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support;
use support::{Oracle, live, state_of};

use floe::{Config, EntityKey, Floe, FsyncMode, PartitionKeySpec};
use serde_json::{Value, json};

fn config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Always;
    config.topology.shards = 8;
    config.log.partitions = 8;
    config.log.segment_bytes = 64 * 1024;
    config.partition_key.default = PartitionKeySpec::id();
    config
}

/// Writes in a runtime of its own and then tears that runtime down without
/// closing floe: the closest an in-process test gets to a crash.
fn write_then_crash(dir: &Path, writes: u64) -> Oracle {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let oracle = runtime.block_on(async {
        let floe = Floe::open(config(dir)).await.unwrap();
        let mut oracle = Oracle::new();
        let mut tasks = tokio::task::JoinSet::new();
        for caller in 0..8u64 {
            let floe = floe.clone();
            tasks.spawn(async move {
                let mut acked = Vec::new();
                for i in 0..writes / 8 {
                    let key = EntityKey::new("t", "Thing", format!("k-{}", (caller * 31 + i) % 97));
                    let data =
                        json!({ "caller": caller, "i": i, "pad": "x".repeat((i % 50) as usize) });
                    let ack = if i % 13 == 12 {
                        match floe.delete(key.clone()).await {
                            Ok(ack) => ack,
                            Err(_) => continue, // not found: nothing written
                        }
                    } else {
                        floe.put(key.clone(), data.clone()).await.unwrap()
                    };
                    acked.push((
                        key,
                        ack.version,
                        (ack.kind != floe::EventKind::Deleted).then_some(data),
                    ));
                }
                acked
            });
        }
        while let Some(acked) = tasks.join_next().await {
            for (key, version, data) in acked.unwrap() {
                let entry = oracle.entry(key).or_insert((0, Value::Null));
                if version > entry.0 {
                    *entry = (version, data.unwrap_or(Value::Null));
                }
            }
        }
        std::mem::forget(floe); // no close, no drop: as if the process died
        oracle
    });
    runtime.shutdown_background();
    oracle
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|p| {
            std::fs::read_dir(p.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
        })
        .filter(|p| {
            p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 0
        })
        .collect();
    segments.sort();
    segments.pop().expect("the log has a non-empty segment")
}

#[test]
fn acknowledged_writes_survive_a_crash_and_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    // The lock dies with the forgotten instance only when the process does, so
    // the crash happens in a child directory we then copy: the copy is what a
    // restarted process would find on disk.
    let crashed = dir.path().join("crashed");
    let oracle = write_then_crash(&crashed, 4000);
    let restarted = dir.path().join("restarted");
    copy_dir(&crashed, &restarted);
    std::fs::remove_file(restarted.join("floe.lock")).ok();

    // A torn record: a frame header promising more bytes than were written.
    let segment = last_segment(&restarted);
    let intact_len = std::fs::metadata(&segment).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&[0xff, 0x01, 0x00, 0x00, 0xde, 0xad])
        .unwrap();
    drop(file);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let floe = Floe::open(config(&restarted)).await.unwrap();
        assert_eq!(state_of(&floe).await, live(&oracle));
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            intact_len,
            "the torn tail was not truncated"
        );
        // The log is writable after the repair and keeps counting.
        floe.put(EntityKey::new("t", "Thing", "after"), json!({"ok": true}))
            .await
            .unwrap();
        floe.close().await.unwrap();
        drop(floe);
        let floe = Floe::open(config(&restarted)).await.unwrap();
        let mut expected = live(&oracle);
        expected.insert(
            EntityKey::new("t", "Thing", "after"),
            (1, json!({"ok": true})),
        );
        assert_eq!(state_of(&floe).await, expected);
        floe.close().await.unwrap();
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
