//! The write-integrity fixes of issue 11 over HTTP, against a real
//! `floe serve`: entities whose names need URL escapes, idempotency keys
//! reused for another request, partition keys of existing entities, and the
//! JSON limits on PUT, POST and PATCH.

#[path = "../support/server.rs"]
mod server;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{FloeServer, OPERATOR, VIEWER, error_code};

async fn call(
    server: &FloeServer,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    server.call(method, path, Some(OPERATOR), body).await
}

async fn with_key(
    server: &FloeServer,
    method: Method,
    path: &str,
    key: &str,
    body: &str,
) -> (StatusCode, Value) {
    let response = server
        .client
        .request(method, server.url(path))
        .bearer_auth(OPERATOR)
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_encoded_names_are_two_entities_with_two_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "[lake]\nenabled = false");
    let a = "/api/v1/entities/p/q%2Fr/s";
    let b = "/api/v1/entities/p%2Fq/r/s";
    let (status, ack_a) = call(&server, Method::PUT, a, Some(r#"{"who":"a"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{ack_a}");
    let (status, ack_b) = call(&server, Method::PUT, b, Some(r#"{"who":"b"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{ack_b}");
    assert_eq!(ack_a["idempotency_key"], "p/q%2Fr/s@v1");
    assert_eq!(ack_b["idempotency_key"], "p%2Fq/r/s@v1");
    for (path, who) in [(a, "a"), (b, "b")] {
        let (status, entity) = server.call(Method::GET, path, Some(VIEWER), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(entity["data"]["who"], who);
    }
}

/// What every reuse of `K` (first used for `PUT k1 {"n":1}`) must answer.
async fn check_reuse(server: &FloeServer, first: &Value) {
    let k1 = "/api/v1/entities/acme/Order/k1";
    let k2 = "/api/v1/entities/acme/Order/k2";
    // The issue's case: k1's key on a write of k2.
    let (status, body) = with_key(server, Method::PUT, k2, "K", r#"{"n":1}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "idempotency_key_reused");
    let (status, _) = server.call(Method::GET, k2, Some(VIEWER), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "k2 was not stored");
    for (method, body) in [
        (Method::PUT, r#"{"n":2}"#),
        (Method::POST, r#"{"n":1}"#),
        (Method::PATCH, r#"{"n":1}"#),
    ] {
        let (status, reply) = with_key(server, method.clone(), k1, "K", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {reply}");
    }
    // A true retry, also spelled differently, gets the original ack.
    let (status, retry) = with_key(server, Method::PUT, k1, "K", r#"{ "n" : 1 }"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&retry, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_answers_422_before_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lake_off = "[lake]\nenabled = false";
    let mut server = FloeServer::start(dir.path(), "", "", lake_off);
    let k1 = "/api/v1/entities/acme/Order/k1";
    let (status, first) = with_key(&server, Method::PUT, k1, "K", r#"{"n":1}"#).await;
    assert_eq!(status, StatusCode::OK);
    check_reuse(&server, &first).await;
    server.sigterm(Duration::from_secs(30));
    let server = FloeServer::start(dir.path(), "", "", lake_off);
    check_reuse(&server, &first).await;
    let (_, entity) = server.call(Method::GET, k1, Some(VIEWER), None).await;
    assert_eq!(
        (entity["version"].clone(), entity["data"].clone()),
        (json!(1), json!({"n": 1}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_partition_key_field_answers_409_and_keeps_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let rest = "[lake]\nenabled = false\n[partition_key]\nfields = [\"tenant_id\"]\nstrict = true";
    let server = FloeServer::start(dir.path(), "", "", rest);
    // Tenants on different shards (4 shards).
    let shard = |t: &str| {
        let server = &server;
        let t = t.to_string();
        async move {
            let (_, info) = server
                .call(
                    Method::GET,
                    &format!("/api/v1/shard-for-key?key={t}"),
                    Some(VIEWER),
                    None,
                )
                .await;
            info["shard"].as_u64().unwrap()
        }
    };
    let a = "t-0";
    let mut b = String::new();
    for i in 1.. {
        b = format!("t-{i}");
        if shard(&b).await != shard(a).await {
            break;
        }
    }
    let path = "/api/v1/entities/acme/Order/o-1";
    let (status, _) = call(
        &server,
        Method::PUT,
        path,
        Some(&json!({"tenant_id": a, "n": 1}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let moved = json!({"tenant_id": b, "n": 2}).to_string();
    let cases = [
        (Method::PUT, path.to_string(), Some(moved.clone())),
        (Method::POST, path.to_string(), Some(moved.clone())),
        (
            Method::PATCH,
            path.to_string(),
            Some(json!({"tenant_id": b}).to_string()),
        ),
        (
            Method::PATCH,
            format!("{path}?partition_key={a}"),
            Some(json!({"tenant_id": b}).to_string()),
        ),
        (Method::DELETE, format!("{path}?partition_key={b}"), None),
    ];
    for (method, path, body) in cases {
        let (status, reply) = call(&server, method.clone(), &path, body.as_deref()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {path}: {reply}");
        assert_eq!(error_code(&reply), "partition_key_immutable");
    }
    let (_, list) = server
        .call(
            Method::GET,
            "/api/v1/entities/acme/Order",
            Some(VIEWER),
            None,
        )
        .await;
    let entities = list["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 1, "{list}");
    assert_eq!(entities[0]["data"], json!({"tenant_id": a, "n": 1}));
    // Delete under its key, then re-create under the other: allowed.
    let (status, _) = call(
        &server,
        Method::DELETE,
        &format!("{path}?partition_key={a}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, ack) = call(&server, Method::POST, path, Some(&moved)).await;
    assert_eq!(status, StatusCode::CREATED, "{ack}");
    assert_eq!(ack["version"], 3);
}

/// `{"a":{"a":...{}}}` nested `depth` levels.
fn nested(depth: usize) -> String {
    "{\"a\":".repeat(depth - 1) + "{" + &"}".repeat(depth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_limits_hold_on_put_post_and_patch_and_the_entity_stays_updatable() {
    let dir = tempfile::tempdir().unwrap();
    let rest = "[lake]\nenabled = false\n[shards]\nmax_json_depth = 32\nmax_payload_bytes = 700000";
    let server = FloeServer::start(dir.path(), "", "", rest);
    let path = "/api/v1/entities/acme/Order/deep";
    let (status, _) = call(&server, Method::PUT, path, Some(r#"{"n":0}"#)).await;
    assert_eq!(status, StatusCode::OK);
    // The issue's body: ~600 KB nested 100,000 levels deep.
    let issue = format!(
        "{{\"x\":{}{}{}}}",
        "[".repeat(100_000),
        " ".repeat(400_000),
        "]".repeat(100_000)
    );
    let too_large = format!("{{\"pad\":\"{}\"}}", "x".repeat(700_000));
    let cases: [(String, StatusCode, &str); 5] = [
        (issue, StatusCode::BAD_REQUEST, "json_too_deep"),
        (nested(33), StatusCode::BAD_REQUEST, "json_too_deep"),
        (
            r#"{"a":1,"a":2}"#.into(),
            StatusCode::BAD_REQUEST,
            "duplicate_json_key",
        ),
        (
            r#"{"a":{"b":[{"c":1,"c":1}]}}"#.into(),
            StatusCode::BAD_REQUEST,
            "duplicate_json_key",
        ),
        (
            too_large,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, expected, code) in &cases {
        for (method, target) in [
            (Method::PUT, path),
            (Method::POST, "/api/v1/entities/acme/Order/new"),
            (Method::PATCH, path),
        ] {
            let (status, reply) = call(&server, method.clone(), target, Some(body)).await;
            assert_eq!(status, *expected, "{method} {code}: {reply}");
            assert_eq!(error_code(&reply), *code, "{method}");
        }
    }
    // Nothing written; the entity is still updatable, at the limit too.
    let (_, entity) = server.call(Method::GET, path, Some(VIEWER), None).await;
    assert_eq!(entity["version"], 1);
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v1/entities/acme/Order/new",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, reply) = call(&server, Method::PUT, path, Some(&nested(32))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = call(&server, Method::PATCH, path, Some(r#"{"n":1}"#)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["version"], 3);
}
