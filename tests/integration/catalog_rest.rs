//! `floe catalog serve` checked against independent clients: pyiceberg's
//! RestCatalog lists, loads and scans what floe wrote and gets its stale
//! commit refused as the spec says; raw HTTP commits with failed
//! requirements are 409 `CommitFailedException` and change nothing; the
//! binary serves an embedded data directory's lake; a catalog answering
//! 5xx is a clear error at open.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

#[path = "../support/lakes.rs"]
mod lakes;
use lakes::{Backend, TestLake, pyiceberg};

use floe::{Config, EntityKey, Floe, FsyncMode};
use serde_json::{Value, json};

fn config(dir: &Path, lake: &TestLake) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.log.partitions = 2;
    config.topology.shards = 2;
    config.lake.commit_interval_ms = 100;
    lake.apply(&mut config);
    config
}

async fn write(floe: &Floe, n: usize) {
    for i in 0..n {
        let key = EntityKey::new("t", "Thing", format!("k-{i}"));
        floe.put(key, json!({ "i": i })).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_gets_a_stale_commit_refused_as_the_spec_says() {
    let lake = TestLake::start(Backend::RestS3).await;
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), &lake)).await.unwrap();
    write(&floe, 50).await;
    floe.close().await.unwrap();
    let outcome = pyiceberg("conflict", &lake.pyiceberg_properties(dir.path())).await;
    assert_eq!(outcome["first_rows"], json!(6), "{outcome}");
    assert_eq!(
        outcome["stale"],
        json!("CommitFailedException"),
        "{outcome}"
    );
    assert_eq!(outcome["rows_after"], json!(6), "{outcome}");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .contains("another commit landed first")
            || outcome["message"]
                .as_str()
                .unwrap()
                .contains("Requirement failed"),
        "{outcome}"
    );
    let read = pyiceberg("read", &lake.pyiceberg_properties(dir.path())).await;
    assert_eq!(read["count"], json!(50), "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_with_failed_requirements_are_409_and_change_nothing() {
    let lake = TestLake::start(Backend::RestS3).await;
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::open(config(dir.path(), &lake)).await.unwrap();
    write(&floe, 20).await;
    floe.close().await.unwrap();

    let uri = &lake.rest.as_ref().unwrap().uri;
    let table = format!("{uri}/v1/namespaces/floe/tables/events");
    let http = reqwest::Client::new();
    let loaded: Value = http.get(&table).send().await.unwrap().json().await.unwrap();
    let location = loaded["metadata-location"].as_str().unwrap().to_string();
    let snapshot = loaded["metadata"]["current-snapshot-id"].as_i64().unwrap();
    let uuid = loaded["metadata"]["table-uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let set = json!([{ "action": "set-properties", "updates": { "x": "1" } }]);

    for requirement in [
        json!({ "type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": snapshot + 1 }),
        json!({ "type": "assert-table-uuid", "uuid": "00000000-0000-0000-0000-000000000000" }),
        json!({ "type": "assert-create" }),
    ] {
        let body = json!({ "requirements": [requirement], "updates": set });
        let reply = http.post(&table).json(&body).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), 409, "{requirement}");
        let error: Value = reply.json().await.unwrap();
        assert_eq!(error["error"]["type"], json!("CommitFailedException"));
        assert_eq!(error["error"]["code"], json!(409));
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    let after: Value = http.get(&table).send().await.unwrap().json().await.unwrap();
    assert_eq!(after["metadata-location"].as_str(), Some(location.as_str()));

    // Requirements that hold: the commit lands and names the next version.
    let body = json!({
        "requirements": [
            { "type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": snapshot },
            { "type": "assert-table-uuid", "uuid": uuid },
        ],
        "updates": set,
    });
    let reply = http.post(&table).json(&body).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let committed: Value = reply.json().await.unwrap();
    assert_eq!(committed["metadata"]["properties"]["x"], json!("1"));
    assert_ne!(
        committed["metadata-location"].as_str(),
        Some(location.as_str())
    );

    let missing = http
        .get(format!("{uri}/v1/namespaces/floe/tables/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["type"], json!("NoSuchTableException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floe_catalog_serve_serves_an_embedded_lake_to_pyiceberg() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = TestLake::start(Backend::SqliteLocal).await;
    let floe = Floe::open(config(dir.path(), &embedded)).await.unwrap();
    write(&floe, 30).await;
    floe.close().await.unwrap();
    drop(floe);

    let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("--data")
        .arg(dir.path())
        .args(["catalog", "serve", "--listen", "127.0.0.1:0"])
        .env_remove("FLOE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let uri = first
        .trim()
        .strip_prefix("floe catalog listening on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    let data = dir.path().canonicalize().unwrap();
    let read = pyiceberg(
        "read",
        &json!({
            "type": "rest",
            "uri": uri,
            "warehouse": format!("file://{}/warehouse", data.display()),
        }),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(read["count"], json!(30), "{read}");
    assert_eq!(read["distinct_keys"], json!(30), "{read}");
    assert_eq!(read["tables"], json!(["floe.events"]));
}

/// A real HTTP server on loopback whose every answer is `status` with an
/// Iceberg REST error body, as an overloaded or broken catalog (or the proxy
/// in front of it) gives. Stops when the returned sender is dropped.
async fn failing_catalog(status: u16) -> (String, tokio::sync::oneshot::Sender<()>) {
    use axum::http::StatusCode;
    let status = StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || async move {
        let body = json!({ "error": {
            "message": "catalog overloaded",
            "type": "ServiceUnavailableException",
            "code": status.as_u16(),
        }});
        (status, axum::Json(body))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr.to_string(), stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_answering_5xx_is_a_clear_error_at_open() {
    for status in [500, 503] {
        let (addr, _stop) = failing_catalog(status).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path());
        config.lake.catalog = format!("rest://{addr}");
        let err = Floe::open(config).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("cannot open the Iceberg catalog http://{addr}")),
            "{err}"
        );
        assert!(err.contains("lake.catalog"), "{err}");
        assert!(err.contains(&status.to_string()), "{err}");
        assert!(err.contains("catalog overloaded"), "{err}");
    }
}
