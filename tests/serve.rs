//! `floe serve` over HTTP: a real process on 127.0.0.1 with an ephemeral
//! port per test (see tests/support/server.rs).

#[path = "support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe::{Config, EntityKey, Floe};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use server::{ADMIN, FloeServer, OPERATOR, VIEWER, parse_metrics, sum};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn call(
    client: &Client,
    server: &FloeServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_allowed_and_refused_where_it_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "fault_injection = true", "");
    let client = client();
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
    let (status, _) = call(
        &client,
        &server,
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
            let (status, body) = call(&client, &server, method.clone(), &path, token, *body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} as {who}: {body}"
            );
            assert_eq!(error_code(&body), "unauthorized");
        }
        for (role, token) in [("viewer", VIEWER), ("operator", OPERATOR), ("admin", ADMIN)] {
            let path = path.replace("{who}", role);
            let (status, body) =
                call(&client, &server, method.clone(), &path, Some(token), *body).await;
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
        let (status, _) = call(&client, &server, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // Refused writes wrote nothing: the viewer's entity does not exist.
    let (status, body) = call(
        &client,
        &server,
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
    let (_, body) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/entities/t/Thing/operator",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(body["data"], json!({"n": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_calls_are_audited_by_token_name_never_by_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "fault_injection = true", "");
    let client = client();
    call(
        &client,
        &server,
        Method::GET,
        "/api/v1/admin/health/system",
        Some(VIEWER),
        None,
    )
    .await;
    call(
        &client,
        &server,
        Method::GET,
        "/api/v1/topology",
        Some(OPERATOR),
        None,
    )
    .await;
    call(
        &client,
        &server,
        Method::PUT,
        "/api/v1/admin/faults/shards/2",
        Some(ADMIN),
        Some(r#"{"delay_ms":0}"#),
    )
    .await;
    call(
        &client,
        &server,
        Method::PUT,
        "/api/v1/admin/faults/shards/2",
        Some(OPERATOR),
        Some(r#"{"delay_ms":5}"#),
    )
    .await;
    call(
        &client,
        &server,
        Method::PUT,
        "/api/v1/admin/faults/shards/99",
        Some(ADMIN),
        Some(r#"{"delay_ms":5}"#),
    )
    .await;
    call(
        &client,
        &server,
        Method::PUT,
        "/api/v1/entities/t/Thing/a",
        Some(OPERATOR),
        Some("{}"),
    )
    .await;
    call(
        &client,
        &server,
        Method::PUT,
        "/api/v1/entities/t/Thing/b",
        Some(VIEWER),
        Some("{}"),
    )
    .await;
    call(
        &client,
        &server,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "max_body_bytes = 1024", "");
    let client = client();
    let path = "/api/v1/entities/t/Thing/x";
    let (status, _) = call(
        &client,
        &server,
        Method::PUT,
        path,
        Some(OPERATOR),
        Some(r#"{"v":1}"#),
    )
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
        let (status, reply) = call(
            &client,
            &server,
            method.clone(),
            path,
            Some(OPERATOR),
            Some(&body),
        )
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

    let (_, entity) = call(&client, &server, Method::GET, path, Some(VIEWER), None).await;
    assert_eq!(
        (entity["version"].as_u64(), &entity["data"]),
        (Some(1), &json!({"v": 1}))
    );
    let (_, y) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/entities/t/Thing/y",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(error_code(&y), "not_found");
    let (_, stats) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/shards",
        Some(VIEWER),
        None,
    )
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

async fn shard_status(client: &Client, server: &FloeServer, shard: u32) -> (String, Value) {
    let (status, body) = call(
        client,
        server,
        Method::GET,
        &format!("/api/v1/admin/health/shards/{shard}"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["status"].as_str().unwrap().to_string(), body)
}

async fn wait_for_status(client: &Client, server: &FloeServer, shard: u32, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = shard_status(client, server, shard).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard} never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shard_turns_degraded_then_unhealthy_and_back_to_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let health = "[health]\nwindow_ms = 1500\nprobe_interval_ms = 50\ndegraded_latency_ms = 100\nunhealthy_latency_ms = 500";
    let server = FloeServer::start(dir.path(), "", "fault_injection = true", health);
    let client = client();
    let fault = |ms: u64| {
        let client = client.clone();
        let server = &server;
        async move {
            let (status, body) = call(
                &client,
                server,
                Method::PUT,
                "/api/v1/admin/faults/shards/1",
                Some(ADMIN),
                Some(&format!(r#"{{"delay_ms":{ms}}}"#)),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    for shard in 0..4 {
        assert_eq!(shard_status(&client, &server, shard).await.0, "HEALTHY");
    }
    fault(250).await;
    let body = wait_for_status(&client, &server, 1, "DEGRADED").await;
    assert!(!body["reasons"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(body["fault_delay_ms"], 250.0);
    assert_eq!(shard_status(&client, &server, 0).await.0, "HEALTHY");
    let (_, system) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/admin/health/system",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(system["status"], "DEGRADED", "{system}");
    assert_eq!(system["degraded"], 1);

    fault(900).await;
    wait_for_status(&client, &server, 1, "UNHEALTHY").await;
    let (_, system) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/admin/health/system",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(system["status"], "UNHEALTHY", "{system}");
    let (_, metrics) = call(
        &client,
        &server,
        Method::GET,
        "/metrics",
        Some(VIEWER),
        None,
    )
    .await;
    let samples = parse_metrics(metrics.as_str().unwrap());
    assert_eq!(samples["floe_shard_health{shard=\"1\"}"], 2.0);
    assert_eq!(samples["floe_shard_health{shard=\"0\"}"], 0.0);

    fault(0).await;
    let body = wait_for_status(&client, &server, 1, "HEALTHY").await;
    assert!(body["fault_delay_ms"].is_null());
    let (_, system) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/admin/health/system",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(system["status"], "HEALTHY", "{system}");
}

async fn scrape(client: &Client, server: &FloeServer) -> BTreeMap<String, f64> {
    let response = client
        .get(server.url("/metrics"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    parse_metrics(&response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_scrape_parses_and_moves_after_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    let client = client();
    let before = scrape(&client, &server).await;
    assert_eq!(before["floe_ready"], 1.0);
    assert_eq!(sum(&before, "floe_shard_writes_total", &[]), 0.0);
    let n = 40;
    for i in 0..n {
        let path = format!("/api/v1/entities/tenant-{}/Thing/{i}", i % 8);
        let (status, _) = call(
            &client,
            &server,
            Method::PUT,
            &path,
            Some(OPERATOR),
            Some(r#"{"k":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = call(
        &client,
        &server,
        Method::PATCH,
        "/api/v1/entities/t/Thing/missing",
        Some(OPERATOR),
        Some("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let after = scrape(&client, &server).await;
    let n = n as f64;
    assert_eq!(
        sum(&after, "floe_shard_writes_total", &["outcome=\"ok\""]),
        n
    );
    assert_eq!(
        sum(&after, "floe_shard_writes_total", &["outcome=\"rejected\""]),
        1.0
    );
    assert_eq!(sum(&after, "floe_shard_ack_latency_seconds_count", &[]), n);
    assert_eq!(
        sum(
            &after,
            "floe_shard_ack_latency_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        n
    );
    assert_eq!(sum(&after, "floe_shard_entities", &[]), n);
    assert_eq!(sum(&after, "floe_routed_total", &[]), n + 1.0);
    assert!(sum(&after, "floe_shard_bytes", &[]) > 0.0);
    // 8 tenants on 4 shards: the routing distribution shows more than one shard.
    let busy = (0..4)
        .filter(|s| {
            after
                .get(&format!("floe_routed_total{{shard=\"{s}\"}}"))
                .is_some_and(|v| *v > 0.0)
        })
        .count();
    assert!(busy > 1, "{after:?}");
    assert!(
        sum(
            &after,
            "floe_http_requests_total",
            &["action=\"entity.put\""]
        ) >= n
    );
    for name in [
        "floe_shard_inbox_depth",
        "floe_shard_pipeline_wait_seconds",
        "floe_shard_up",
        "floe_sink_lag_events",
        "floe_sink_lag_seconds",
    ] {
        assert!(after.keys().any(|k| k.starts_with(name)), "no {name}");
    }
    assert_eq!(sum(&after, "floe_shard_up", &[]), 4.0);

    // Every metric the alert rules use is one floe exports.
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/alerts.yml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(rule["for"].as_str().is_some(), "{name}: for");
            assert!(
                ["warning", "critical"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            for metric in metric_names(expr) {
                assert!(
                    after
                        .keys()
                        .any(|k| k.split('{').next() == Some(metric.as_str())),
                    "alert {name} uses {metric}, which /metrics does not export"
                );
            }
            alerts.push(name.to_string());
        }
    }
    for wanted in [
        "FloeShardDown",
        "FloeShardHighLatency",
        "FloeShardUnbalancedLoad",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "no {wanted} alert in {alerts:?}"
        );
    }
}

/// `floe_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("floe_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

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
    let client = client();
    let (status, body) = call(&client, &server, Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["ready"].as_bool(), body["phase"].as_str()),
        (Some(false), Some("recovering"))
    );
    let (status, _) = call(&client, &server, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &client,
        &server,
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
    let (status, _) = call(
        &client,
        &server,
        Method::GET,
        "/api/v1/topology",
        None,
        None,
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FloeServer::start(dir.path(), "", "", "[lake]\ncommit_interval_ms = 200");
    let client = client();
    // Key -> (version, data) of the last acknowledged write.
    let acked: Arc<Mutex<BTreeMap<(u32, u32), (u64, Value)>>> = Arc::default();
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..8u32 {
        let client = client.clone();
        let acked = acked.clone();
        let total = total.clone();
        let base = server.base.clone();
        writers.push(tokio::spawn(async move {
            let mut failures = 0;
            for round in 0u32.. {
                let key = round % 25;
                let data = json!({ "writer": w, "round": round });
                let url = format!("{base}/api/v1/entities/t/Thing/w{w}-k{key}");
                let sent = client
                    .put(&url)
                    .bearer_auth(OPERATOR)
                    .body(data.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let ack: Value = r.json().await.unwrap();
                        let version = ack["version"].as_u64().unwrap();
                        acked.lock().unwrap().insert((w, key), (version, data));
                        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Refused or cut off while shutting down: not acknowledged.
                    _ => {
                        failures += 1;
                        if failures > 20 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    // Let the load run, then stop the server under it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 8 * 25 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The signal lands while writes are being acknowledged.
    let earlier = total.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_signal = total.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        at_signal > earlier,
        "the load is not running: {}",
        server.stderr()
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.sigterm(Duration::from_secs(60));
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert!(status.success(), "exit {status:?}: {}", server.stderr());
    for writer in writers {
        writer.await.unwrap();
    }
    let acks = total.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{acks} writes acknowledged, {} of them after the signal",
        acks - at_signal
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains("SIGTERM received") && stderr.contains("floe closed"),
        "{stderr}"
    );

    // Reopen the data directory: every acknowledged write is there.
    let config = Config::from_toml_file(&dir.path().join("floe.toml")).unwrap();
    let floe = Floe::open(config).await.unwrap();
    let acked = acked.lock().unwrap().clone();
    for ((w, key), (version, data)) in &acked {
        let entity = floe
            .get(&EntityKey::new("t", "Thing", format!("w{w}-k{key}")))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged w{w}-k{key} v{version} is lost"));
        // A write sent before the signal may have been applied and its
        // reply lost: the stored version is at least the acknowledged one.
        assert!(
            entity.version >= *version,
            "w{w}-k{key}: {} < {version}",
            entity.version
        );
        if entity.version == *version {
            assert_eq!(&entity.data.to_value().unwrap(), data);
        }
    }
    floe.close().await.unwrap();
}
