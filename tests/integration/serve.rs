//! `floe serve` over HTTP: a real process on 127.0.0.1 with an ephemeral
//! port per test (see tests/support/server.rs).

#[path = "../support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use floe::Config;
use reqwest::{Method, StatusCode};
use serde_json::json;
use server::{ADMIN, FloeServer, OPERATOR, VIEWER, error_code};

// Injects shard faults through the API: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_allowed_and_refused_where_it_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "fault_injection = true", "");
    // (method, path, body, the least role that may call it)
    let routes: Vec<(Method, String, Option<&str>, &str)> = vec![
        (
            Method::GET,
            "/api/v1/entities/t/Thing/seed".into(),
            None,
            "viewer",
        ),
        (
            Method::GET,
            "/api/v1/entities/t/Thing".into(),
            None,
            "viewer",
        ),
        (
            Method::GET,
            "/api/v1/shard-for-key?key=t".into(),
            None,
            "viewer",
        ),
        (Method::GET, "/api/v1/topology".into(), None, "viewer"),
        (Method::GET, "/api/v1/shards".into(), None, "viewer"),
        (Method::GET, "/api/v1/shards/1".into(), None, "viewer"),
        (Method::GET, "/api/v1/stats".into(), None, "viewer"),
        (
            Method::GET,
            "/api/v1/admin/health/system".into(),
            None,
            "viewer",
        ),
        (
            Method::GET,
            "/api/v1/admin/health/shards".into(),
            None,
            "viewer",
        ),
        (
            Method::GET,
            "/api/v1/admin/health/shards/0".into(),
            None,
            "viewer",
        ),
        (Method::GET, "/metrics".into(), None, "viewer"),
        (
            Method::PUT,
            "/api/v1/entities/t/Thing/{who}".into(),
            Some(r#"{"n":1}"#),
            "operator",
        ),
        (
            Method::PATCH,
            "/api/v1/entities/t/Thing/{who}".into(),
            Some(r#"{"n":2}"#),
            "operator",
        ),
        (
            Method::POST,
            "/api/v1/entities/t/Thing/{who}-new".into(),
            Some(r#"{"n":3}"#),
            "operator",
        ),
        (
            Method::DELETE,
            "/api/v1/entities/t/Thing/{who}-new".into(),
            None,
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/admin/faults/shards/0".into(),
            Some(r#"{"delay_ms":0}"#),
            "admin",
        ),
    ];
    let (status, _) = server
        .call(
            Method::PUT,
            "/api/v1/entities/t/Thing/seed",
            Some(ADMIN),
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rank = |role: &str| {
        ["viewer", "operator", "admin"]
            .iter()
            .position(|r| *r == role)
            .unwrap()
    };
    for (method, path, body, least) in &routes {
        for (who, token) in [
            ("nobody", None),
            ("forger", Some("not-a-real-token-at-all")),
        ] {
            let path = path.replace("{who}", who);
            let (status, body) = server.call(method.clone(), &path, token, *body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} as {who}: {body}"
            );
            assert_eq!(error_code(&body), "unauthorized");
        }
        for (role, token) in [("viewer", VIEWER), ("operator", OPERATOR), ("admin", ADMIN)] {
            let path = path.replace("{who}", role);
            let (status, body) = server.call(method.clone(), &path, Some(token), *body).await;
            if rank(role) >= rank(least) {
                assert!(
                    status.is_success(),
                    "{method} {path} as {role}: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {body}"
                );
                assert_eq!(error_code(&body), "forbidden");
            }
        }
    }
    // Liveness and readiness need no token.
    for path in ["/healthz", "/readyz"] {
        let (status, _) = server.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // Refused writes wrote nothing: the viewer's entity does not exist.
    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/entities/t/Thing/viewer",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (_, body) = server
        .call(
            Method::GET,
            "/api/v1/entities/t/Thing/operator",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(body["data"], json!({"n": 2}));
}

// Injects shard faults through the API: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_calls_are_audited_by_token_name_never_by_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "fault_injection = true", "");
    server
        .call(
            Method::GET,
            "/api/v1/admin/health/system",
            Some(VIEWER),
            None,
        )
        .await;
    server
        .call(Method::GET, "/api/v1/topology", Some(OPERATOR), None)
        .await;
    server
        .call(
            Method::PUT,
            "/api/v1/admin/faults/shards/2",
            Some(ADMIN),
            Some(r#"{"delay_ms":0}"#),
        )
        .await;
    server
        .call(
            Method::PUT,
            "/api/v1/admin/faults/shards/2",
            Some(OPERATOR),
            Some(r#"{"delay_ms":5}"#),
        )
        .await;
    server
        .call(
            Method::PUT,
            "/api/v1/admin/faults/shards/99",
            Some(ADMIN),
            Some(r#"{"delay_ms":5}"#),
        )
        .await;
    server
        .call(
            Method::PUT,
            "/api/v1/entities/t/Thing/a",
            Some(OPERATOR),
            Some("{}"),
        )
        .await;
    server
        .call(
            Method::PUT,
            "/api/v1/entities/t/Thing/b",
            Some(VIEWER),
            Some("{}"),
        )
        .await;
    server
        .call(
            Method::GET,
            "/api/v1/stats",
            Some("wrong-token-wrong-token"),
            None,
        )
        .await;

    // The writer thread appends asynchronously: wait for the 7 lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = server.audit_lines();
        if lines.len() >= 7 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seen: Vec<(String, String, u64, String)> = lines
        .iter()
        .map(|l| {
            for field in [
                "ts",
                "action",
                "method",
                "path",
                "status",
                "outcome",
                "remote",
                "duration_ms",
            ] {
                assert!(!l[field].is_null(), "audit line without {field}: {l}");
            }
            (
                l["who"].as_str().unwrap_or("-").to_string(),
                l["action"].as_str().unwrap().to_string(),
                l["status"].as_u64().unwrap(),
                l["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |who: &str, action: &str, status: u64, outcome: &str| {
        (
            who.to_string(),
            action.to_string(),
            status,
            outcome.to_string(),
        )
    };
    assert_eq!(
        seen,
        vec![
            expect("vera", "health.system", 200, "ok"),
            expect("otto", "topology.get", 200, "ok"),
            expect("ada", "faults.set", 200, "ok"),
            expect("otto", "faults.set", 403, "denied"),
            expect("ada", "faults.set", 404, "rejected"),
            // Data-plane writes are not audited unless refused.
            expect("vera", "entity.put", 403, "denied"),
            expect("-", "stats.get", 401, "denied"),
        ]
    );
    assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[0]["role"], "viewer");
    let text = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let logs = server.stderr();
    for secret in [VIEWER, OPERATOR, ADMIN, "wrong-token-wrong-token"] {
        assert!(!text.contains(secret), "a secret in the audit log");
        assert!(!logs.contains(secret), "a secret in the logs");
    }
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_false_until_recovery_finishes() {
    // A Kafka pipeline on a port where nothing listens: Floe::open waits
    // for the broker until `request_timeout_ms`, then fails. Meanwhile the
    // server answers, not ready.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let top = format!("pipeline = \"kafka://127.0.0.1:{port}/floe-test?partitions=2\"");
    let mut server = FloeServer::spawn(
        dir.path(),
        &top,
        "",
        "[kafka]\nrequest_timeout_ms = 3000\n[lake]\nenabled = false",
    );
    let (status, body) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["ready"].as_bool(), body["phase"].as_str()),
        (Some(false), Some("recovering"))
    );
    let (status, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/entities/t/Thing/a",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    // Auth still comes first.
    let (status, _) = server
        .call(Method::GET, "/api/v1/topology", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let exit = server.wait_exit(Duration::from_secs(60));
    assert!(!exit.success(), "open cannot succeed without a broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_tokens_or_with_open_auth_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path().join("data"));
    config.serve.listen = "127.0.0.1:0".into();
    let err = floe::serve::Server::bind(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no token is configured"), "{err}");
    config.serve.auth = floe::AuthMode::Disabled;
    config.serve.listen = "0.0.0.0:0".into();
    let err = floe::serve::Server::bind(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("loopback"), "{err}");
    config.serve.listen = "127.0.0.1:0".into();
    let server = floe::serve::Server::bind(config).await.unwrap();
    assert!(server.local_addr().ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_options_pagination_and_routing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "public_metrics = true", "");
    // A retry with the same Idempotency-Key returns the first outcome.
    let put = |body: &'static str| {
        server
            .client
            .put(server.url("/api/v1/entities/acme/Order/o-1"))
            .bearer_auth(OPERATOR)
            .header("Idempotency-Key", "pay-o-1")
            .body(body)
            .send()
    };
    let first: serde_json::Value = put(r#"{"n":1}"#).await.unwrap().json().await.unwrap();
    let retry: serde_json::Value = put(r#"{"n":1}"#).await.unwrap().json().await.unwrap();
    assert_eq!(first, retry);
    // The key on another body is refused: 422, as Stripe answers it.
    let reused = put(r#"{"n":2}"#).await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reused: serde_json::Value = reused.json().await.unwrap();
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(first["version"], 1);
    let (status, created) = server
        .call(
            Method::POST,
            "/api/v1/entities/acme/Order/o-2?expected_version=0",
            Some(OPERATOR),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (status, created["kind"].as_str()),
        (StatusCode::CREATED, Some("created"))
    );
    let (status, _) = server
        .call(
            Method::PATCH,
            "/api/v1/entities/acme/Order/o-2?expected_version=1",
            Some(OPERATOR),
            Some(r#"{"paid":true}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for i in 3..=5 {
        server
            .call(
                Method::PUT,
                &format!("/api/v1/entities/acme/Order/o-{i}"),
                Some(OPERATOR),
                Some("{}"),
            )
            .await;
    }
    let (_, page) = server
        .call(
            Method::GET,
            "/api/v1/entities/acme/Order?limit=2",
            Some(VIEWER),
            None,
        )
        .await;
    let ids: Vec<&str> = page["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (ids.as_slice(), page["next_after"].as_str()),
        (&["o-1", "o-2"][..], Some("o-2"))
    );
    let (_, page) = server
        .call(
            Method::GET,
            "/api/v1/entities/acme/Order?limit=10&after=o-2",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(page["entities"].as_array().unwrap().len(), 3);
    assert!(page["next_after"].is_null());
    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/entities/acme/Order?limit=100000",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_query")
    );
    // The default partition key is the namespace: every acme entity is on one shard.
    let (_, routed) = server
        .call(
            Method::GET,
            "/api/v1/shard-for-key?key=acme",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(routed["shard"], created["shard"]);
    assert_eq!(routed["shard"], first["shard"]);
    let (status, body) = server
        .call(Method::GET, "/api/v1/shard-for-key", Some(VIEWER), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_query")
    );
    let (_, topology) = server
        .call(Method::GET, "/api/v1/topology", Some(VIEWER), None)
        .await;
    assert_eq!(topology["shard_count"], 4);
    let (_, stats) = server
        .call(Method::GET, "/api/v1/stats", Some(VIEWER), None)
        .await;
    for field in [
        "shards",
        "utilization",
        "hot_shards",
        "rebalance_hints",
        "routing",
        "recovery",
    ] {
        assert!(!stats[field].is_null(), "stats without {field}: {stats}");
    }
    // public_metrics: a scraper needs no token.
    let (status, _) = server.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .call(Method::GET, "/api/v1/nothing-here", Some(VIEWER), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_viewers_in_json_and_arrow_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    for i in 0..30 {
        let path = format!("/api/v1/entities/t{}/Order/o{i}", i % 3);
        server.put_ok(&path, json!({ "n": i })).await;
    }
    // Fresh mode reads the acknowledged writes the sink has not landed yet.
    let count = r#"{"sql": "SELECT namespace, count(*) AS n FROM events GROUP BY namespace ORDER BY namespace", "fresh": true}"#;
    let (status, _) = server
        .call(Method::POST, "/api/v1/sql", None, Some(count))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = server
        .call(Method::POST, "/api/v1/sql", Some(VIEWER), Some(count))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rows"],
        json!([
            { "namespace": "t0", "n": 10 },
            { "namespace": "t1", "n": 10 },
            { "namespace": "t2", "n": 10 },
        ])
    );
    assert_eq!(body["columns"][1]["name"], json!("n"));
    assert_eq!(body["stats"]["pending_events"], json!(30));

    let response = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(VIEWER)
        .body(r#"{"sql": "SELECT entity_id FROM events ORDER BY entity_id", "fresh": true, "format": "arrow"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    assert!(response.headers().contains_key("x-floe-query-stats"));
    let bytes = response.bytes().await.unwrap();
    let reader =
        floe_query::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 30);

    for (sql, status, code) in [
        (
            r#"{"sql": "DROP TABLE events"}"#,
            StatusCode::FORBIDDEN,
            "read_only",
        ),
        (
            r#"{"sql": "INSERT INTO events SELECT * FROM events"}"#,
            StatusCode::FORBIDDEN,
            "read_only",
        ),
        (
            r#"{"sql": "SELECT nope FROM events"}"#,
            StatusCode::BAD_REQUEST,
            "bad_sql",
        ),
        (
            r#"{"query": "SELECT 1"}"#,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        // A timeout of 0 is bad input, not a query that timed out.
        (
            r#"{"sql": "SELECT 1", "timeout_ms": 0}"#,
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
    ] {
        let (got, body) = server
            .call(Method::POST, "/api/v1/sql", Some(ADMIN), Some(sql))
            .await;
        assert_eq!((got, error_code(&body)), (status, code), "{sql}: {body}");
    }
    // The SQL calls are audited, the refused one included.
    let audited = server
        .audit_lines()
        .iter()
        .filter(|l| l["action"] == json!("sql.query"))
        .count();
    assert!(audited >= 6, "{audited} sql audit lines");
    // Nothing was dropped or written by the refused statements.
    let (_, body) = server
        .call(Method::POST, "/api/v1/sql", Some(VIEWER), Some(count))
        .await;
    assert_eq!(body["rows"][0]["n"], json!(10));
}
