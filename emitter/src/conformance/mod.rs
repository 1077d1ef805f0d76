//! The pipeline conformance suite: the [`Pipeline`] contract as one generic
//! test body per clause, run unchanged against every backend.
//!
//! A backend's test file implements [`PipelineFactory`] (open a fresh store,
//! then reopen the same store) and either calls [`run_all`] or expands
//! [`pipeline_conformance_tests!`](crate::pipeline_conformance_tests), which
//! writes one `#[tokio::test]` per case:
//!
//! ```ignore
//! async fn file_log(partitions: u32) -> MyFactory { /* fresh dir */ }
//! floe_emitter::pipeline_conformance_tests!(file_log);
//! ```
//!
//! Retention is checked for real: the factory must configure the backend so
//! that [`delete_before_raises_the_low_watermark`] can delete something (small
//! segments for the file log; Kafka deletes records exactly). A store that
//! cannot delete at all (a broker without Kafka's `DeleteRecords`, such as
//! tansu) says so with [`PipelineFactory::supports_delete_before`]; the case
//! then checks [`delete_before_without_retention_keeps_everything`] instead.

use std::future::Future;
use std::time::Duration;

use floe_engine::{Event, EventKind, Json, Offset, Pipeline, Record, partition_for};
use uuid::Uuid;

mod cases;

pub use self::cases::*;

/// Partitions of the pipelines the suite asks for.
pub const PARTITIONS: u32 = 4;

/// Opens one backing store (a directory, a set of topics) as a pipeline, again
/// and again, for the restart cases.
pub trait PipelineFactory: Send {
    /// The backend under test.
    type Pipeline: Pipeline;

    /// Opens the store. The first call creates it (with the partition count
    /// the factory was made for); later calls reopen the same store after the
    /// suite closed the previous pipeline, and must find every acknowledged
    /// event.
    fn open(&mut self) -> impl Future<Output = floe_engine::Result<Self::Pipeline>> + Send;

    /// Whether the store deletes records on `delete_before`. `false` declares
    /// a store without retention (the pipeline then leaves the low watermark
    /// where it is), and the retention case checks exactly that instead.
    fn supports_delete_before(&self) -> bool {
        true
    }
}

/// Runs every case, each against a fresh store made by `make(PARTITIONS)`.
pub async fn run_all<M, Fut, F>(mut make: M)
where
    M: FnMut(u32) -> Fut,
    Fut: Future<Output = F>,
    F: PipelineFactory,
{
    for &case in Case::ALL {
        tracing::info!(case = case.name(), "pipeline conformance");
        let mut factory = make(PARTITIONS).await;
        case.run(&mut factory).await;
    }
}

/// One case of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Case {
    /// [`append_assigns_consecutive_offsets`]
    ConsecutiveOffsets,
    /// [`events_land_in_their_partition`]
    EventsLandInTheirPartition,
    /// [`order_is_kept_per_partition`]
    OrderKeptPerPartition,
    /// [`read_from_the_middle`]
    ReadFromTheMiddle,
    /// [`read_at_the_end_waits_then_returns_empty`]
    ReadAtTheEndWaits,
    /// [`read_beyond_the_high_watermark_fails`]
    ReadBeyondHighWatermark,
    /// [`read_is_woken_by_an_append`]
    ReadWokenByAppend,
    /// [`concurrent_appends_are_unique_and_durable`]
    ConcurrentAppends,
    /// [`watermarks_follow_appends`]
    Watermarks,
    /// [`reopen_keeps_everything`]
    ReopenKeepsEverything,
    /// [`delete_before_raises_the_low_watermark`], or
    /// [`delete_before_without_retention_keeps_everything`] for a store that
    /// declares it cannot delete
    DeleteBefore,
    /// [`appends_after_close_fail`]
    AppendsAfterClose,
    /// [`large_batch`]
    LargeBatch,
    /// [`events_roundtrip_exactly`]
    EventsRoundtrip,
    /// [`unknown_partition_is_an_error`]
    UnknownPartition,
}

impl Case {
    /// Every case, in the order [`run_all`] runs them.
    pub const ALL: &'static [Case] = &[
        Case::ConsecutiveOffsets,
        Case::EventsLandInTheirPartition,
        Case::OrderKeptPerPartition,
        Case::ReadFromTheMiddle,
        Case::ReadAtTheEndWaits,
        Case::ReadBeyondHighWatermark,
        Case::ReadWokenByAppend,
        Case::ConcurrentAppends,
        Case::Watermarks,
        Case::ReopenKeepsEverything,
        Case::DeleteBefore,
        Case::AppendsAfterClose,
        Case::LargeBatch,
        Case::EventsRoundtrip,
        Case::UnknownPartition,
    ];

    /// The name of the function that implements the case.
    pub fn name(self) -> &'static str {
        match self {
            Case::ConsecutiveOffsets => "append_assigns_consecutive_offsets",
            Case::EventsLandInTheirPartition => "events_land_in_their_partition",
            Case::OrderKeptPerPartition => "order_is_kept_per_partition",
            Case::ReadFromTheMiddle => "read_from_the_middle",
            Case::ReadAtTheEndWaits => "read_at_the_end_waits_then_returns_empty",
            Case::ReadBeyondHighWatermark => "read_beyond_the_high_watermark_fails",
            Case::ReadWokenByAppend => "read_is_woken_by_an_append",
            Case::ConcurrentAppends => "concurrent_appends_are_unique_and_durable",
            Case::Watermarks => "watermarks_follow_appends",
            Case::ReopenKeepsEverything => "reopen_keeps_everything",
            Case::DeleteBefore => "delete_before_raises_the_low_watermark",
            Case::AppendsAfterClose => "appends_after_close_fail",
            Case::LargeBatch => "large_batch",
            Case::EventsRoundtrip => "events_roundtrip_exactly",
            Case::UnknownPartition => "unknown_partition_is_an_error",
        }
    }

    /// Runs the case against a fresh store of `factory`, closing what it opens.
    pub async fn run<F: PipelineFactory>(self, factory: &mut F) {
        match self {
            Case::ConcurrentAppends => {
                return concurrent_appends_are_unique_and_durable(factory).await;
            }
            Case::ReopenKeepsEverything => return reopen_keeps_everything(factory).await,
            _ => {}
        }
        let p = open(factory).await;
        match self {
            Case::ConsecutiveOffsets => append_assigns_consecutive_offsets(&p).await,
            Case::EventsLandInTheirPartition => events_land_in_their_partition(&p).await,
            Case::OrderKeptPerPartition => order_is_kept_per_partition(&p).await,
            Case::ReadFromTheMiddle => read_from_the_middle(&p).await,
            Case::ReadAtTheEndWaits => read_at_the_end_waits_then_returns_empty(&p).await,
            Case::ReadBeyondHighWatermark => read_beyond_the_high_watermark_fails(&p).await,
            Case::ReadWokenByAppend => read_is_woken_by_an_append(&p).await,
            Case::Watermarks => watermarks_follow_appends(&p).await,
            Case::DeleteBefore if factory.supports_delete_before() => {
                delete_before_raises_the_low_watermark(&p).await
            }
            Case::DeleteBefore => delete_before_without_retention_keeps_everything(&p).await,
            Case::AppendsAfterClose => appends_after_close_fail(&p).await,
            Case::LargeBatch => large_batch(&p).await,
            Case::EventsRoundtrip => events_roundtrip_exactly(&p).await,
            Case::UnknownPartition => unknown_partition_is_an_error(&p).await,
            Case::ConcurrentAppends | Case::ReopenKeepsEverything => unreachable!(),
        }
        p.close().await.expect("close");
    }
}

/// Expands to one `#[tokio::test]` per conformance case. `$make` is called
/// with the partition count and returns a future of a fresh
/// [`PipelineFactory`](crate::conformance::PipelineFactory). The calling crate
/// needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! pipeline_conformance_tests {
    ($make:expr) => {
        $crate::pipeline_conformance_tests!(@cases $make;
            append_assigns_consecutive_offsets => ConsecutiveOffsets,
            events_land_in_their_partition => EventsLandInTheirPartition,
            order_is_kept_per_partition => OrderKeptPerPartition,
            read_from_the_middle => ReadFromTheMiddle,
            read_at_the_end_waits_then_returns_empty => ReadAtTheEndWaits,
            read_beyond_the_high_watermark_fails => ReadBeyondHighWatermark,
            read_is_woken_by_an_append => ReadWokenByAppend,
            concurrent_appends_are_unique_and_durable => ConcurrentAppends,
            watermarks_follow_appends => Watermarks,
            reopen_keeps_everything => ReopenKeepsEverything,
            delete_before_raises_the_low_watermark => DeleteBefore,
            appends_after_close_fail => AppendsAfterClose,
            large_batch => LargeBatch,
            events_roundtrip_exactly => EventsRoundtrip,
            unknown_partition_is_an_error => UnknownPartition,
        );
    };
    (@cases $make:expr; $($name:ident => $case:ident,)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let mut factory = ($make)($crate::conformance::PARTITIONS).await;
                $crate::conformance::Case::$case.run(&mut factory).await;
            }
        )*
    };
}

async fn open<F: PipelineFactory>(factory: &mut F) -> F::Pipeline {
    factory
        .open()
        .await
        .expect("the factory opens the pipeline")
}

/// A key hash that [`partition_for`] maps to `partition`; `salt` picks one of
/// many. Found by a deterministic search (about `partitions` tries): the
/// partition function mixes the hash, so hashes cannot be built directly.
pub fn key_hash_in(partition: u32, partitions: u32, salt: u64) -> u64 {
    assert!(
        partition < partitions,
        "partition {partition} of {partitions}"
    );
    let mut candidate = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(partition);
    loop {
        if partition_for(candidate, partitions) == partition {
            return candidate;
        }
        candidate = candidate
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
    }
}

/// A realistic event numbered `seq` (kept in `version` and the state) with
/// `key_hash`; about 300 bytes encoded.
pub fn sample_event(seq: u64, key_hash: u64) -> Event {
    let id = format!("order-{seq}");
    Event {
        event_id: Uuid::from_u128((u128::from(key_hash) << 64) | u128::from(seq)),
        idempotency_key: format!("tenant-a/Order/{id}@v{}", seq + 1),
        kind: EventKind::Updated,
        namespace: "tenant-a".into(),
        entity_type: "Order".into(),
        partition_key: format!("customer-{}", seq % 97),
        entity_id: id,
        key_hash,
        shard: (seq % 8) as u32,
        version: seq + 1,
        timestamp_us: 1_700_000_000_000_000 + seq as i64,
        request_fingerprint: None,
        owner_epoch: 0,
        state: Some(Json::from_trusted(format!(
            r#"{{"seq":{seq},"status":"paid","lines":[{{"sku":"A-{seq}","qty":2,"price":"19.90"}}],"note":"{}"}}"#,
            "x".repeat(120)
        ))),
    }
}

/// `count` events of `partition`, numbered from `first`.
fn events_in(partition: u32, partitions: u32, first: u64, count: u64) -> Vec<Event> {
    (first..first + count)
        .map(|seq| sample_event(seq, key_hash_in(partition, partitions, seq)))
        .collect()
}

/// Reads everything of `partition` from `from` to the high watermark.
async fn read_all<P: Pipeline>(p: &P, partition: u32, from: Offset) -> Vec<Record> {
    let high = p.high_watermark(partition).await.expect("high watermark");
    let mut out = Vec::new();
    let mut next = from;
    while next < high {
        let batch = p
            .read(partition, next, 500, Duration::ZERO)
            .await
            .expect("read");
        assert!(
            !batch.is_empty(),
            "read at {next} below the high watermark {high} returned nothing"
        );
        next = batch.last().map_or(next, |r| r.offset + 1);
        out.extend(batch);
    }
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.offset, from + i as Offset, "offsets are consecutive");
        assert_eq!(r.partition, partition);
    }
    out
}
