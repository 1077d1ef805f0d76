//! A query's timeout stops its work: CPU-bound plans (a cross join, a
//! nested loop join, a three-way join) over generated rows answer the
//! timeout error on time, and the process stops spending CPU on them.
//!
//! One test function runs the cases one after the other, because it reads
//! the CPU time of the whole process: another test running beside it would
//! count too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use floe_emitter::sink::{CatalogUrl, Lake, LakeLocation};
use floe_query::{CrossShardQuery, Error, QueryOptions, QueryRequest};

/// CPU time (user + system) of this process so far, from /proc/self/stat.
/// Linux reports it in clock ticks of 1/100 s (USER_HZ).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

async fn query() -> (tempfile::TempDir, CrossShardQuery) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(LakeLocation {
        catalog: CatalogUrl::Sqlite(dir.path().join("catalog.db")),
        warehouse: format!("file://{}", dir.path().join("warehouse").display()),
        properties: HashMap::new(),
    })
    .await
    .unwrap();
    let options = QueryOptions {
        cache_enabled: false,
        ..QueryOptions::default()
    };
    (dir, CrossShardQuery::new(lake, options))
}

const TIMEOUT: Duration = Duration::from_millis(1000);
/// The answer may come this much after the timeout (10% + 100 ms).
const ANSWER_SLACK: Duration = Duration::from_millis(200);
/// CPU the process may still spend in the second after the answer.
const CPU_AFTER: Duration = Duration::from_millis(100);

#[test]
fn cpu_bound_queries_stop_at_their_timeout() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_dir, query) = query().await;
        // Each would run for hours.
        for (name, sql) in [
            (
                "cross join",
                "SELECT sum(a.value * b.value) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b",
            ),
            (
                "nested loop join",
                // 10^11 pairs. The work between two checks of a nested loop
                // join is one probe row against the buffered side (see
                // `cancel.rs`): 10^5 buffered rows here.
                "SELECT count(*) FROM generate_series(1, 100000) a JOIN generate_series(1, 1000000) b ON a.value + b.value < 0",
            ),
            (
                "three-way join",
                "SELECT count(*) FROM generate_series(1, 2000) a, generate_series(1, 2000) b, generate_series(1, 2000) c WHERE a.value + b.value + c.value > 0",
            ),
        ] {
            let cpu_before = cpu_time();
            let started = Instant::now();
            let err = query
                .sql_with(sql, &QueryRequest::new().timeout(TIMEOUT))
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert!(matches!(err, Error::Timeout { .. }), "{name}: {err}");
            assert!(err.is_retryable());
            assert!(took >= TIMEOUT, "{name}: answered after {took:?}");
            assert!(
                took <= TIMEOUT + ANSWER_SLACK,
                "{name}: the timeout answered after {took:?}"
            );
            let cpu_at_answer = cpu_time();
            // The query did burn CPU (so stopping it is what is tested;
            // the bound is low because the machine may be shared).
            assert!(
                cpu_at_answer - cpu_before >= Duration::from_millis(100),
                "{name}: only {:?} of CPU while running",
                cpu_at_answer - cpu_before
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = cpu_time() - cpu_at_answer;
            eprintln!(
                "{name}: answered after {took:?}, {:?} of CPU while running, {after:?} in the second after",
                cpu_at_answer - cpu_before
            );
            assert!(
                after < CPU_AFTER,
                "{name}: {after:?} of CPU in the second after the timeout"
            );
        }
        // The session still answers.
        let result = query.sql("SELECT count(*) FROM generate_series(1, 10)").await.unwrap();
        assert_eq!(result.num_rows(), 1);
    });
}
