//! `POST /api/v1/entities:batch` against a real `floe serve`: JSON arrays
//! and NDJSON, one status per item, bad items failing alone, the batch
//! bounds of `[serve]`, and the same authentication as single writes.

#[path = "../support/server.rs"]
mod server;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{FloeServer, OPERATOR, VIEWER, error_code};

const BATCH: &str = "/api/v1/entities:batch";

async fn post(
    server: &FloeServer,
    token: Option<&str>,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let mut request = server
        .client
        .post(server.url(BATCH))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn statuses(answer: &Value) -> Vec<u64> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect()
}

async fn version(server: &FloeServer, id: &str) -> Option<u64> {
    let (status, entity) = server
        .call(
            Method::GET,
            &format!("/api/v1/entities/acme/Order/{id}"),
            Some(VIEWER),
            None,
        )
        .await;
    (status == StatusCode::OK).then(|| entity["version"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_item_and_bad_items_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "[lake]\nenabled = false");
    let items = json!([
        {"op": "create", "namespace": "acme", "entity_type": "Order", "id": "o1", "data": {"n": 1}, "idempotency_key": "c-o1"},
        {"namespace": "acme", "entity_type": "Order", "id": "o2", "version": 9, "data": {"n": 2}},
        {"op": "create", "namespace": "acme", "entity_type": "Order", "id": "o1", "data": {"n": 3}},
        {"op": "update", "namespace": "acme", "entity_type": "Order", "id": "o1", "patch": {"m": 1}, "expected_version": 1},
        {"op": "delete", "namespace": "acme", "entity_type": "Order", "id": "missing"},
        {"op": "merge", "namespace": "acme", "entity_type": "Order", "id": "o3", "data": {}},
        "DEEP",
        {"op": "create", "namespace": "acme", "entity_type": "Order", "id": "o1", "data": {"n": 1}, "idempotency_key": "c-o1"},
    ]);
    // Nested past shards.max_json_depth (64); json! cannot nest that deep.
    let deep = format!(
        r#"{{"op":"put","namespace":"acme","entity_type":"Order","id":"o4","data":{{"deep":{}1{}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let body = items.to_string().replace(r#""DEEP""#, &deep);
    let (status, answer) = post(&server, Some(OPERATOR), "application/json", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        statuses(&answer),
        [201, 200, 409, 200, 404, 400, 400, 201],
        "{answer}"
    );
    assert_eq!(
        (answer["ok"].clone(), answer["failed"].clone()),
        (json!(4), json!(4))
    );
    let results = &answer["results"];
    assert_eq!(results[5]["error"]["code"], "invalid_item");
    assert_eq!(results[6]["error"]["code"], "json_too_deep");
    assert_eq!(results[3]["ack"]["version"], 2);
    // The retry by key has the first ack.
    assert_eq!(results[7]["ack"], results[0]["ack"]);
    assert_eq!(results[7]["index"], 7);
    assert_eq!(version(&server, "o1").await, Some(2));
    assert_eq!(version(&server, "o2").await, Some(1));
    assert_eq!(version(&server, "o3").await, None);
    assert_eq!(version(&server, "o4").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_lines_report_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "[lake]\nenabled = false");
    let body = [
        r#"{"op":"put","namespace":"acme","entity_type":"Order","id":"n1","data":{"a":1}}"#,
        "",
        r#"{"op":"put","namespace":"acme","entity_type":"Order","id":"n2","data":{"a":"#,
        r#"{"op":"put","namespace":"acme","entity_type":"Order","id":"n3","data":{"a":3}}"#,
    ]
    .join("\n");
    let (status, answer) = post(&server, Some(OPERATOR), "application/x-ndjson", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(statuses(&answer), [200, 400, 200]);
    let results = &answer["results"];
    let lines: Vec<u64> = (0..3)
        .map(|i| results[i]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 3, 4]);
    assert_eq!(results[1]["error"]["code"], "malformed_json");
    assert_eq!(version(&server, "n1").await, Some(1));
    assert_eq!(version(&server, "n3").await, Some(1));
    // A body that starts with a UTF-8 byte order mark, in either format.
    let item = |id: &str| {
        format!(
            r#"{{"op":"put","namespace":"acme","entity_type":"Order","id":"{id}","data":{{"a":1}}}}"#
        )
    };
    for (content_type, body, id) in [
        (
            "application/x-ndjson",
            format!("\u{feff}{}", item("bom1")),
            "bom1",
        ),
        (
            "application/json",
            format!("\u{feff}[{}]", item("bom2")),
            "bom2",
        ),
    ] {
        let (status, answer) = post(&server, Some(OPERATOR), content_type, body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(statuses(&answer), [200], "{content_type}: {answer}");
        assert_eq!(version(&server, id).await, Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_and_guarded_like_single_writes() {
    let dir = tempfile::tempdir().unwrap();
    let serve = "max_batch_items = 3\nmax_batch_bytes = 2000";
    let server = FloeServer::start(dir.path(), "", serve, "[lake]\nenabled = false");
    let item = |i: usize| json!({"op": "put", "namespace": "acme", "entity_type": "Order", "id": format!("b{i}"), "data": {"i": i}});
    let four = Value::Array((0..4).map(item).collect()).to_string();
    let (status, answer) = post(&server, Some(OPERATOR), "application/json", four).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(error_code(&answer), "batch_too_large");
    let big = json!([{"op": "put", "namespace": "acme", "entity_type": "Order", "id": "big", "data": {"s": "x".repeat(3000)}}]);
    let (status, answer) = post(&server, Some(OPERATOR), "application/json", big.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_batch_bytes")
    );
    assert_eq!(
        version(&server, "b0").await,
        None,
        "nothing of a refused batch is applied"
    );
    let (status, answer) = post(&server, Some(OPERATOR), "application/json", "[{".into()).await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let (status, _) = post(&server, Some(OPERATOR), "text/csv", "a,b".into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let three = Value::Array((0..3).map(item).collect()).to_string();
    let (status, _) = post(&server, None, "application/json", three.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(&server, Some(VIEWER), "application/json", three.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(version(&server, "b0").await, None);
    let (status, answer) = post(&server, Some(OPERATOR), "application/json", three).await;
    assert_eq!((status, answer["ok"].clone()), (StatusCode::OK, json!(3)));
    // An empty batch is an empty answer.
    let (status, answer) = post(&server, Some(OPERATOR), "application/json", "[]".into()).await;
    assert_eq!(
        (status, answer["items"].clone()),
        (StatusCode::OK, json!(0))
    );
}
