//! Cross-shard SQL through the assembled system: `Floe::sql` with fresh mode
//! on a live instance, and the `floe sql` command on a data directory.

use floe::{Compare, Config, EntityKey, Floe, QueryRequest, ThingsQuery};
use floe_query::arrow::array::AsArray;
use floe_query::arrow::datatypes::Int64Type;
use serde_json::{Value, json};

#[path = "../support/run.rs"]
mod run;
use run::{floe, ok};

fn count(result: &floe::QueryResult) -> i64 {
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_mode_sees_every_acknowledged_write_before_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    // No sink: nothing lands while the instance runs.
    config.lake.sink = false;
    let floe = Floe::open(config).await.unwrap();
    for i in 0..20 {
        let key = EntityKey::new(format!("t-{}", i % 4), "Order", format!("o-{i}"));
        floe.put(key, json!({"status": "placed", "n": i}))
            .await
            .unwrap();
    }
    floe.update(
        EntityKey::new("t-1", "Order", "o-1"),
        json!({"status": "paid"}),
    )
    .await
    .unwrap();
    floe.delete(EntityKey::new("t-2", "Order", "o-2"))
        .await
        .unwrap();

    let landed = floe.sql("SELECT count(*) FROM events").await.unwrap();
    assert_eq!(count(&landed), 0, "nothing is landed without the sink");
    let fresh = QueryRequest::new().fresh();
    let events = floe
        .sql_with("SELECT count(*) FROM events", &fresh)
        .await
        .unwrap();
    assert_eq!(count(&events), 22);
    assert_eq!(events.stats.pending_events, 22);
    let live = floe
        .sql_with("SELECT count(*) FROM things", &fresh)
        .await
        .unwrap();
    assert_eq!(count(&live), 19);
    let page = floe
        .query_things(
            &ThingsQuery::new("Order")
                .namespace("t-1")
                .filter("status", Compare::Eq, "paid"),
            &fresh,
        )
        .await
        .unwrap();
    assert_eq!(page.things.len(), 1);
    assert_eq!(page.things[0].id, "o-1");
    assert_eq!(page.things[0].version, 2);
    floe.close().await.unwrap();
}

#[test]
fn floe_sql_reads_what_the_cli_wrote_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let err = floe(data, &["sql", "SELECT 1"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no lake"));

    ok(
        data,
        &[
            "put",
            "acme",
            "Order",
            "o-1",
            r#"{"status":"placed","total":5}"#,
        ],
    );
    ok(
        data,
        &[
            "put",
            "acme",
            "Order",
            "o-2",
            r#"{"status":"placed","total":7}"#,
        ],
    );
    ok(
        data,
        &[
            "put",
            "beta",
            "Order",
            "o-3",
            r#"{"status":"placed","total":9}"#,
        ],
    );
    // Every CLI write closes floe, and close lands everything.
    let first = ok(
        data,
        &[
            "sql",
            "--format",
            "json",
            "--stats",
            "SELECT count(*) AS n FROM events",
        ],
    );
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first, json!([{"n": 3}]));
    let out = floe(
        data,
        &["sql", "--stats", "SELECT count(*) AS n FROM events"],
    );
    let stats = String::from_utf8_lossy(&out.stderr).to_string();
    let snapshot: i64 = stats
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("stats name the snapshot: {stats}"));

    ok(
        data,
        &["update", "acme", "Order", "o-1", r#"{"status":"paid"}"#],
    );
    ok(data, &["delete", "acme", "Order", "o-2"]);
    let rows = ok(
        data,
        &[
            "sql",
            "--format",
            "json",
            "SELECT entity_id, json_get_str(data, 'status') AS status, version FROM things ORDER BY entity_id",
        ],
    );
    let rows: Value = serde_json::from_str(&rows).unwrap();
    assert_eq!(
        rows,
        json!([
            {"entity_id": "o-1", "status": "paid", "version": 2},
            {"entity_id": "o-3", "status": "placed", "version": 1},
        ])
    );
    let csv = ok(
        data,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT namespace, count(*) AS n FROM things GROUP BY namespace ORDER BY namespace",
        ],
    );
    assert_eq!(csv, "namespace,n\nacme,1\nbeta,1\n");
    let table = ok(
        data,
        &[
            "sql",
            "SELECT namespace FROM things WHERE namespace = 'beta'",
        ],
    );
    assert!(table.contains("| beta"), "{table}");

    // Time travel: the first snapshot still has three events and o-2.
    let old = ok(
        data,
        &[
            "sql",
            "--format",
            "json",
            "--as-of-snapshot",
            &snapshot.to_string(),
            "SELECT count(*) AS n FROM things",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&old).unwrap(),
        json!([{"n": 3}])
    );

    let refused = floe(data, &["sql", "DROP TABLE events"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read-only"));
    let fresh = ok(
        data,
        &[
            "sql",
            "--fresh",
            "--format",
            "json",
            "SELECT count(*) AS n FROM events",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&fresh).unwrap(),
        json!([{"n": 5}])
    );
}

/// Each layer (DataFusion, floe-query, floe, the CLI) names the parser error
/// at most once: the message says it once, and nothing repeats it as a
/// `source()` or as `Debug` (`ParserError("...")`).
#[test]
fn a_bad_statement_prints_the_parser_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(
        data,
        &["put", "acme", "Order", "o-1", r#"{"status":"placed"}"#],
    );
    for args in [&["sql", "SELEC 1"][..], &["sql", "--fresh", "SELEC 1"]] {
        let out = floe(data, args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches("sql parser error").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.matches("SELEC").count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("ParserError("), "{args:?}: {stderr}");
        // One line: `error: [query: ]sql parser error: Expected: ...`.
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn floe_things_filters_orders_and_refuses_bad_filters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for (ns, id, body) in [
        (
            "acme",
            "o-1",
            r#"{"status":"paid","total":-5,"address":{"city":"Oslo"}}"#,
        ),
        (
            "acme",
            "o-2",
            r#"{"status":"paid","total":7.5,"address":{"city":"Lima"}}"#,
        ),
        (
            "acme",
            "o-3",
            r#"{"status":"placed","total":9,"address":{"city":"Oslo"}}"#,
        ),
        (
            "beta",
            "o-4",
            r#"{"status":"paid","total":11,"address":{"city":"Oslo"}}"#,
        ),
    ] {
        ok(data, &["put", ns, "Order", id, body]);
    }
    let out = ok(
        data,
        &[
            "things",
            "Order",
            "--namespace",
            "acme",
            "-f",
            "status = paid",
            "--order",
            "total desc",
            "--format",
            "json",
        ],
    );
    let page: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = page["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o-2", "o-1"], "{page}");
    let out = ok(
        data,
        &[
            "things",
            "Order",
            "-f",
            "address.city IN (Oslo) AND total < 10",
            "--format",
            "json",
        ],
    );
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["count"], json!(2), "{page}");
    let err = floe(data, &["things", "Order", "-f", "status = 'paid"]);
    assert!(!err.status.success());
    let message = String::from_utf8_lossy(&err.stderr).to_string();
    assert!(message.contains("quoted text is not closed"), "{message}");
    assert_eq!(
        message.matches("not closed").count(),
        1,
        "said once: {message}"
    );
}
