//! `floe serve` refusing bad input over HTTP: keys, oversized, chunked and
//! malformed bodies, each a 4xx that changes nothing (a real process on
//! 127.0.0.1, see tests/support/server.rs).

#[path = "../support/server.rs"]
mod server;

use floe::Config;
use reqwest::{Method, StatusCode};
use serde_json::json;
use server::{FloeServer, OPERATOR, VIEWER, error_code};
/// The engine validates keys (`EntityKey::validate`), so the HTTP API and
/// the library refuse the same keys with the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_and_the_library_refuse_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    let library_dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(library_dir.path());
    config.lake.enabled = false;
    let library = floe::Floe::open(config).await.unwrap();
    let long = "x".repeat(floe::EntityKey::MAX_PART_BYTES + 1);
    // (the id as the URL path carries it, the id)
    let cases = [
        ("o%01x", "o\u{1}x"),
        ("o%7F", "o\u{7f}"),
        ("a%0Ab", "a\nb"),
        (long.as_str(), long.as_str()),
    ];
    for (in_path, id) in cases {
        let path = format!("/api/v1/entities/t/Thing/{in_path}");
        let (status, reply) = server
            .call(Method::PUT, &path, Some(OPERATOR), Some(r#"{"v":1}"#))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {reply}");
        assert_eq!(error_code(&reply), "invalid_entity", "{path}");
        let refused = library
            .put(floe::EntityKey::new("t", "Thing", id), json!({"v": 1}))
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused.as_engine(),
                Some(floe_engine::Error::InvalidEntity { .. })
            ),
            "{refused}"
        );
        assert_eq!(reply["error"]["message"], refused.to_string(), "{path}");
    }
    // Nothing was written by either.
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v1/entities/t/Thing/o%01x",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stored: u64 = library
        .shard_stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.entities)
        .sum();
    assert_eq!(stored, 0);
    library.close().await.unwrap();
}

/// A caller's idempotency key is kept exactly or refused, never dropped:
/// a dropped key turns the caller's retry into a second write. Non-ASCII
/// keys in the header work; empty, overlong, control-character and
/// non-UTF-8 keys are a 400 that writes nothing, on every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_kept_exactly_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    let put = |id: &str, key: reqwest::header::HeaderValue| {
        server
            .client
            .put(server.url(&format!("/api/v1/entities/t/Thing/{id}")))
            .bearer_auth(OPERATOR)
            .header("idempotency-key", key)
            .body(r#"{"v":1}"#)
            .send()
    };
    // The same non-ASCII key twice: one write, the retry answered by it.
    let key = reqwest::header::HeaderValue::from_bytes("ключ-1".as_bytes()).unwrap();
    let mut acks = Vec::new();
    for _ in 0..2 {
        let response = put("u1", key.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        acks.push(response.json::<serde_json::Value>().await.unwrap());
    }
    assert_eq!(acks[0]["idempotency_key"], json!("ключ-1"), "{}", acks[0]);
    assert_eq!(acks[0], acks[1], "the retry is the first write's outcome");
    assert_eq!(acks[1]["version"], json!(1));

    // Header bytes that are not UTF-8.
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"cl\xe9").unwrap();
    let response = put("u2", latin1).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "invalid_idempotency_key", "{body}");
    let empty = reqwest::header::HeaderValue::from_static("");
    let response = put("u2", empty).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "invalid_idempotency_key", "{body}");

    // In the query string, and in a batch item.
    let long = "k".repeat(floe_engine::MAX_IDEMPOTENCY_KEY_BYTES + 1);
    for query in ["", "a%0Ab", long.as_str()] {
        let path = format!("/api/v1/entities/t/Thing/u2?idempotency_key={query}");
        let (status, reply) = server
            .call(Method::PUT, &path, Some(OPERATOR), Some(r#"{"v":1}"#))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}: {reply}");
        assert_eq!(error_code(&reply), "invalid_idempotency_key", "{reply}");
    }
    let batch = r#"[{"op": "put", "namespace": "t", "entity_type": "Thing", "id": "u2", "data": {"v": 1}, "idempotency_key": ""},
                    {"op": "put", "namespace": "t", "entity_type": "Thing", "id": "u3", "data": {"v": 1}}]"#;
    let (status, reply) = server
        .call(
            Method::POST,
            "/api/v1/entities:batch",
            Some(OPERATOR),
            Some(batch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["results"][0]["status"], json!(400), "{reply}");
    assert_eq!(
        reply["results"][0]["error"]["code"],
        json!("invalid_idempotency_key"),
        "{reply}"
    );
    assert_eq!(reply["results"][1]["status"], json!(200), "{reply}");
    // None of the refused writes landed.
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v1/entities/t/Thing/u2",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "max_body_bytes = 1024", "");
    let path = "/api/v1/entities/t/Thing/x";
    let (status, _) = server
        .call(Method::PUT, path, Some(OPERATOR), Some(r#"{"v":1}"#))
        .await;
    assert_eq!(status, StatusCode::OK);
    let big = format!(r#"{{"v":"{}"}}"#, "x".repeat(2000));
    let versioned = format!("{path}?expected_version=7");
    let bogus = format!("{path}?bogus=1");
    let cases: Vec<(Method, &str, String, StatusCode, &str)> = vec![
        (
            Method::PUT,
            path,
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Method::PATCH,
            path,
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Method::POST,
            "/api/v1/entities/t/Thing/y",
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Method::PUT,
            path,
            r#"{"v":"#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Method::PUT,
            path,
            "not json".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Method::PUT,
            path,
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
            "invalid_entity",
        ),
        (
            Method::PATCH,
            path,
            "{".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Method::PATCH,
            path,
            "3".into(),
            StatusCode::BAD_REQUEST,
            "invalid_entity",
        ),
        (
            Method::POST,
            path,
            r#"{"v":9}"#.into(),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            Method::PUT,
            &versioned,
            r#"{"v":9}"#.into(),
            StatusCode::CONFLICT,
            "version_conflict",
        ),
        (
            Method::PUT,
            &bogus,
            r#"{"v":9}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
    ];
    for (method, path, body, want, code) in cases {
        let (status, reply) = server
            .call(method.clone(), path, Some(OPERATOR), Some(&body))
            .await;
        assert_eq!(status, want, "{method} {path}: {reply}");
        assert_eq!(error_code(&reply), code, "{method} {path}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A chunked body (no Content-Length) past the limit is refused too.
    let status = raw_chunked_put(&server.base, path, OPERATOR, 4000).await;
    assert_eq!(status, 413);

    let (_, entity) = server.call(Method::GET, path, Some(VIEWER), None).await;
    assert_eq!(
        (entity["version"].as_u64(), &entity["data"]),
        (Some(1), &json!({"v": 1}))
    );
    let (_, y) = server
        .call(
            Method::GET,
            "/api/v1/entities/t/Thing/y",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(error_code(&y), "not_found");
    let (_, stats) = server
        .call(Method::GET, "/api/v1/shards", Some(VIEWER), None)
        .await;
    let writes: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["writes"].as_u64().unwrap())
        .sum();
    assert_eq!(writes, 1, "only the first put was written: {stats}");
}

/// Sends a PUT whose body comes in chunks without a Content-Length.
async fn raw_chunked_put(base: &str, path: &str, token: &str, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let body = format!(r#"{{"v":"{}"}}"#, "y".repeat(size));
    for chunk in body.as_bytes().chunks(500) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break; // the server may answer and close before the end
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    reply.split_whitespace().nth(1).unwrap().parse().unwrap()
}
