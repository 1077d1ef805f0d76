//! `floe serve` operations over HTTP: shard health under an injected
//! fault, the metrics scrape and the alert rules, SIGTERM under load. A real
//! process on 127.0.0.1 with an ephemeral port per test.

#[path = "../support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe::{Config, EntityKey, Floe};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{ADMIN, FloeServer, OPERATOR, VIEWER, error_code, parse_metrics, sum};

async fn shard_status(server: &FloeServer, shard: u32) -> (String, Value) {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/api/v1/admin/health/shards/{shard}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["status"].as_str().unwrap().to_string(), body)
}

async fn wait_for_status(server: &FloeServer, shard: u32, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = shard_status(server, shard).await;
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

// Injects shard faults through the API: needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shard_turns_degraded_then_unhealthy_and_back_to_healthy() {
    let dir = tempfile::tempdir().unwrap();
    // Thresholds well above scheduling noise on a loaded CI machine.
    let health = "[health]\nwindow_ms = 2000\nprobe_interval_ms = 50\ndegraded_latency_ms = 250\nunhealthy_latency_ms = 1000";
    let server = FloeServer::start(dir.path(), "", "fault_injection = true", health);
    let fault = |ms: u64| {
        let server = &server;
        async move {
            let (status, body) = server
                .call(
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
        assert_eq!(shard_status(&server, shard).await.0, "HEALTHY");
    }
    fault(500).await;
    let body = wait_for_status(&server, 1, "DEGRADED").await;
    assert!(!body["reasons"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(body["fault_delay_ms"], 500.0);
    assert_eq!(shard_status(&server, 0).await.0, "HEALTHY");
    let (_, system) = server
        .call(
            Method::GET,
            "/api/v1/admin/health/system",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(system["status"], "DEGRADED", "{system}");
    assert_eq!(system["degraded"], 1);

    fault(1600).await;
    wait_for_status(&server, 1, "UNHEALTHY").await;
    let (_, system) = server
        .call(
            Method::GET,
            "/api/v1/admin/health/system",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(system["status"], "UNHEALTHY", "{system}");
    let (_, metrics) = server
        .call(Method::GET, "/metrics", Some(VIEWER), None)
        .await;
    let samples = parse_metrics(metrics.as_str().unwrap());
    assert_eq!(samples["floe_shard_health{shard=\"1\"}"], 2.0);
    assert_eq!(samples["floe_shard_health{shard=\"0\"}"], 0.0);

    fault(0).await;
    let body = wait_for_status(&server, 1, "HEALTHY").await;
    assert!(body["fault_delay_ms"].is_null());
    let (_, system) = server
        .call(
            Method::GET,
            "/api/v1/admin/health/system",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(system["status"], "HEALTHY", "{system}");
}

async fn scrape(server: &FloeServer) -> BTreeMap<String, f64> {
    let response = server
        .client
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
    let before = scrape(&server).await;
    assert_eq!(before["floe_ready"], 1.0);
    assert_eq!(sum(&before, "floe_shard_writes_total", &[]), 0.0);
    let n = 40;
    for i in 0..n {
        let path = format!("/api/v1/entities/tenant-{}/Thing/{i}", i % 8);
        let (status, _) = server
            .call(Method::PUT, &path, Some(OPERATOR), Some(r#"{"k":1}"#))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = server
        .call(
            Method::PATCH,
            "/api/v1/entities/t/Thing/missing",
            Some(OPERATOR),
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let after = scrape(&server).await;
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

/// (writer, key) -> (version, data) of the last acknowledged write.
type Acked = BTreeMap<(u32, u32), (u64, Value)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FloeServer::start(dir.path(), "", "", "[lake]\ncommit_interval_ms = 600000");
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..8u32 {
        let client = server.client.clone();
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
    // The sink commits only every 10 minutes here, so an empty lag after
    // reopening means the shutdown made the final commit.
    let lag = floe.sink_lag().await.unwrap();
    assert_eq!(lag.events, 0, "{lag:?}");
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

/// docker-compose.yml and deploy/floe.toml agree: every service floe needs
/// is there, floe's configuration parses and points at those services, and
/// the bucket it writes to is the one the init container creates. (No
/// Docker engine runs here; this is what can be checked without one.)
#[test]
fn the_compose_file_and_the_deploy_config_agree() {
    let root = env!("CARGO_MANIFEST_DIR");
    let compose: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let services = compose["services"].as_mapping().expect("services");
    for name in ["kafka", "minio", "minio-init", "catalog", "floe"] {
        let service = &compose["services"][name];
        assert!(service.is_mapping(), "no {name} service");
        assert!(
            service["image"].as_str().is_some() || service["build"].as_str().is_some(),
            "{name}: image or build"
        );
    }
    assert!(services.len() >= 5);
    let kafka = &compose["services"]["kafka"]["environment"];
    assert_eq!(
        kafka["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    assert!(
        kafka["KAFKA_ADVERTISED_LISTENERS"]
            .as_str()
            .unwrap()
            .contains("PLAINTEXT://kafka:9092")
    );
    let init = compose["services"]["minio-init"]["command"][0]
        .as_str()
        .unwrap();
    let rest = &compose["services"]["catalog"];
    let floe = &compose["services"]["floe"];
    let mounts: Vec<&str> = floe["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        mounts.contains(&"./deploy/floe.toml:/etc/floe/floe.toml:ro"),
        "{mounts:?}"
    );
    assert!(
        floe["environment"]["FLOE_TOKENS"]
            .as_str()
            .unwrap()
            .starts_with("${FLOE_TOKENS:?")
    );
    // Every depends_on names a service.
    for (name, service) in services {
        if let Some(deps) = service["depends_on"].as_mapping() {
            for dep in deps.keys() {
                assert!(
                    services.contains_key(dep),
                    "{name:?} depends on unknown {dep:?}"
                );
            }
        }
    }

    let text = std::fs::read_to_string(format!("{root}/deploy/floe.toml")).unwrap();
    let config = Config::from_toml(&text).unwrap();
    match config.pipeline_url().unwrap() {
        floe::PipelineUrl::Kafka { brokers, .. } => assert_eq!(brokers, "kafka:9092"),
        other => panic!("the compose deployment uses Kafka, not {other:?}"),
    }
    assert_eq!(config.lake.catalog, "rest://catalog:8181");
    let bucket = config
        .lake
        .warehouse
        .strip_prefix("s3://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        init.contains(&format!("mc mb --ignore-existing lake/{bucket}")),
        "{init}"
    );
    // The catalog is `floe catalog serve` on its own configuration: the
    // same warehouse and storage keys as floe's.
    let command: Vec<&str> = rest["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        command,
        [
            "--config",
            "/etc/floe/catalog.toml",
            "catalog",
            "serve",
            "--listen",
            "0.0.0.0:8181"
        ]
    );
    assert!(
        rest["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some("./deploy/catalog.toml:/etc/floe/catalog.toml:ro"))
    );
    let catalog_config =
        Config::from_toml(&std::fs::read_to_string(format!("{root}/deploy/catalog.toml")).unwrap())
            .unwrap();
    assert!(catalog_config.lake.catalog.starts_with("sqlite:///"));
    assert_eq!(catalog_config.lake.warehouse, config.lake.warehouse);
    assert!(
        config
            .lake
            .warehouse
            .starts_with(&format!("s3://{bucket}/"))
    );
    assert_eq!(catalog_config.lake.properties, config.lake.properties);
    assert_eq!(config.lake.properties["s3.endpoint"], "http://minio:9000");
    let minio = &compose["services"]["minio"]["environment"];
    assert_eq!(
        config.lake.properties["s3.access-key-id"],
        minio["MINIO_ROOT_USER"].as_str().unwrap()
    );
    assert_eq!(config.serve.listen, "0.0.0.0:8080");
    assert!(
        config.serve.tokens.is_empty(),
        "tokens come from FLOE_TOKENS, never the file"
    );

    let prometheus: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("floe:8080")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_is_added_over_http_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", "");
    for i in 0..200 {
        let path = format!("/api/v1/entities/t{}/Order/o{i}", i % 20);
        server.put_ok(&path, json!({ "n": i })).await;
    }
    // Only an admin may plan or start; a viewer may read the balance.
    let add = r#"{"kind":"add_shard"}"#;
    for token in [VIEWER, OPERATOR] {
        let (status, _) = server
            .call(Method::POST, "/api/v1/migrations", Some(token), Some(add))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, balance) = server
        .call(
            Method::GET,
            "/api/v1/migrations/balance",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{balance}");
    // A negative tolerance would call a shard hot and cold at once.
    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/migrations/balance?threshold=-3",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_threshold"),
        "{body}"
    );
    let (status, planned) = server
        .call(
            Method::POST,
            "/api/v1/migrations/plan",
            Some(ADMIN),
            Some(add),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{planned}");
    assert_eq!(planned["plan"]["to"]["shard_count"], json!(5));
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/migrations",
            Some(ADMIN),
            Some(r#"{"kind":"teleport"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // An absent optional parameter may be sent as null.
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/migrations/plan",
            Some(ADMIN),
            Some(r#"{"kind":"add_period","period":"2024-01","shard":null}"#),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_plan"),
        "a hash topology has no periods: {body}"
    );
    // A parameter the kind does not take is refused, not ignored.
    for bad in [
        r#"{"kind":"add_shard","shard":3}"#,
        r#"{"kind":"remove_shard","shard":3,"into":1}"#,
    ] {
        let (status, body) = server
            .call(
                Method::POST,
                "/api/v1/migrations/plan",
                Some(ADMIN),
                Some(bad),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "malformed_json"),
            "{bad}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field"),
            "{body}"
        );
    }

    // Writers keep going while the shard is added.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let writer = {
        let (client, base) = (server.client.clone(), server.base.clone());
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut n = 1000u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                n += 1;
                let path = format!("/api/v1/entities/t{}/Order/o{}", n % 20, n % 200);
                let response = client
                    .put(format!("{base}{path}"))
                    .bearer_auth(OPERATOR)
                    .body(json!({ "n": n }).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                acked.lock().unwrap().insert(path, n);
            }
        })
    };
    let (status, started) = server
        .call(Method::POST, "/api/v1/migrations", Some(ADMIN), Some(add))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let job = server.wait_migration(&id, ADMIN).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    writer.await.unwrap();
    assert_eq!(job["status"], json!("completed"), "{job}");
    let (_, topology) = server
        .call(Method::GET, "/api/v1/topology", Some(VIEWER), None)
        .await;
    assert_eq!(topology["shard_count"], json!(5));
    // Every acknowledged write reads back, wherever its key lives now.
    let acked = acked.lock().unwrap().clone();
    for (path, n) in &acked {
        let (status, body) = server.call(Method::GET, path, Some(VIEWER), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["data"], json!({ "n": n }), "{path}");
    }
    let (status, listed) = server
        .call(Method::GET, "/api/v1/migrations", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["migrations"][0]["id"], json!(id));
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/migrations/m-nope/cancel",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let audited: Vec<String> = server
        .audit_lines()
        .iter()
        .filter_map(|l| l["action"].as_str().map(str::to_string))
        .collect();
    for action in ["migrations.plan", "migrations.start", "migrations.get"] {
        assert!(audited.iter().any(|a| a == action), "{action} not audited");
    }
    let metrics = scrape(&server).await;
    assert_eq!(
        metrics.get("floe_migration{figure=\"running\"}"),
        Some(&0.0)
    );
}
