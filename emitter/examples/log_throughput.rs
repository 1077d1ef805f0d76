//! Quick throughput check of the embedded log: 16 tasks append 1M events of
//! about 600 bytes in batches of 256, with `FsyncPolicy::Always` and `Never`.
//! Also measures the raw fsync latency of the disk under the temp directory.
//!
//! ```text
//! cargo run --release -p floe-emitter --example log_throughput [partitions] [always|never]
//! ```

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_emitter::{FileLog, FsyncPolicy, LogOptions};
use floe_engine::{Event, EventKind, Json, encode_event};
use uuid::Uuid;

const TASKS: u64 = 16;
const BATCH: u64 = 256;
const BATCHES_PER_TASK: u64 = 256; // 16 * 256 * 256 = 1,048,576 events

#[tokio::main]
async fn main() {
    let partitions: u32 = std::env::args()
        .nth(1)
        .map_or(16, |a| a.parse().expect("partitions"));
    let only = std::env::args().nth(2);
    fsync_latency();
    for (name, fsync) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
    ] {
        if only.as_deref().is_none_or(|o| o == name) {
            run(partitions, fsync).await;
        }
    }
}

/// 4 KiB append + fdatasync, 200 times.
fn fsync_latency() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = File::create(dir.path().join("probe")).unwrap();
    let mut samples: Vec<Duration> = (0..200)
        .map(|_| {
            file.write_all(&[7; 4096]).unwrap();
            let start = Instant::now();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "fsync latency (4 KiB append + fdatasync): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(samples[100]),
        ms(samples[198]),
        ms(samples[199])
    );
}

async fn run(partitions: u32, fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        partitions,
        fsync,
        ..LogOptions::default()
    };
    let log = Arc::new(FileLog::open(dir.path(), options).unwrap());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = Arc::clone(&log);
        tasks.spawn(async move {
            // Four distinct batches per task, appended round-robin.
            let batches: Vec<Vec<Event>> = (0..4)
                .map(|b| {
                    (0..BATCH)
                        .map(|i| event((task << 32) | (b << 16) | i))
                        .collect()
                })
                .collect();
            let mut worst = Duration::ZERO;
            for n in 0..BATCHES_PER_TASK {
                let t = Instant::now();
                log.append(&batches[(n % 4) as usize]).await.unwrap();
                worst = worst.max(t.elapsed());
            }
            worst
        });
    }
    let mut worst = Duration::ZERO;
    while let Some(w) = tasks.join_next().await {
        worst = worst.max(w.unwrap());
    }
    let elapsed = start.elapsed();
    log.close().await.unwrap();
    let events = TASKS * BATCH * BATCHES_PER_TASK;
    let mut bytes = Vec::new();
    encode_event(&event(1), &mut bytes);
    println!(
        "{fsync:?}: {events} events of {} B in {:.2} s = {:.0} events/s ({:.0} MB/s of records), \
         {partitions} partitions, worst append {:.1} ms",
        bytes.len(),
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        (events * (bytes.len() as u64 + 8)) as f64 / elapsed.as_secs_f64() / 1e6,
        ms(worst),
    );
}

/// About 600 bytes encoded.
fn event(seq: u64) -> Event {
    let key_hash = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Event {
        event_id: Uuid::from_u64_pair(seq, key_hash),
        idempotency_key: format!("tenant-a/Order/order-{seq}@v1"),
        kind: EventKind::Updated,
        namespace: "tenant-a".into(),
        entity_type: "Order".into(),
        entity_id: format!("order-{seq}"),
        partition_key: format!("customer-{}", seq % 1000),
        key_hash,
        shard: 3,
        version: 1,
        timestamp_us: 1_700_000_000_000_000,
        request_fingerprint: None,
        owner_epoch: 0,
        state: Some(Json::from_trusted(format!(
            r#"{{"id":"order-{seq}","status":"paid","customer":"customer-{}","lines":[{{"sku":"A-1","qty":2,"price":"19.90"}},{{"sku":"B-7","qty":1,"price":"5.00"}}],"address":{{"street":"{}","city":"Lisbon"}}}}"#,
            seq % 1000,
            "x".repeat(300)
        ))),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
