//! Helpers of the library-level write tests (`tests/integration/writes.rs`,
//! `tests/integration/write_integrity.rs`).

use floe::{Error, Floe};

/// The engine error inside `e`; any other error fails the test.
pub(crate) fn engine_error(e: Error) -> floe_engine::Error {
    match e {
        Error::Engine(e) => e,
        other => panic!("expected an engine error, got {other}"),
    }
}

/// Each pipeline partition's high watermark.
pub(crate) async fn high_watermarks(floe: &Floe) -> Vec<u64> {
    let pipeline = floe.pipeline();
    let mut out = Vec::new();
    for p in 0..pipeline.partitions() {
        out.push(pipeline.high_watermark(p).await.unwrap());
    }
    out
}
