//! Archival over HTTP: an admin archives a month, a viewer follows it; the
//! archived entity's GET says it came from the lake; its writes are `409
//! period_archived`; stats and metrics show active against archived.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "../support/server.rs"]
mod server;
use server::{ADMIN, FloeServer, OPERATOR, VIEWER, error_code, parse_metrics};

const TIME_TOPOLOGY: &str = r#"
[topology.strategy]
kind = "time"
period = "month"
time_part = 1
tenant_part = 0

[topology.strategy.periods]
"2024-01" = 0
"2024-02" = 1

[partition_key]
fields = ["team_id", "created_at"]

[lake]
commit_interval_ms = 100

[migration]
period_lead_time_ms = 0
"#;

fn incident(month: u32, i: u32) -> (String, Value) {
    (
        format!("/api/v1/entities/acme/Incident/inc-{month}-{i}"),
        json!({"team_id": "team-a", "created_at": format!("2024-{month:02}-{:02}T08:00:00Z", i + 1), "n": i}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_month_is_read_from_the_lake_and_refuses_writes_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = FloeServer::start(dir.path(), "", "", TIME_TOPOLOGY);
    for month in [1, 2] {
        for i in 0..3 {
            let (path, data) = incident(month, i);
            server.put_ok(&path, data).await;
        }
    }
    let body = r#"{"kind":"archive_period","period":"2024-01"}"#;
    let (status, refused) = server
        .call(Method::POST, "/api/v1/migrations", Some(VIEWER), Some(body))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, started) = server
        .call(Method::POST, "/api/v1/migrations", Some(ADMIN), Some(body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // A monitoring script follows it with a viewer token.
    let job = server.wait_migration(&id, VIEWER).await;
    assert_eq!(job["status"], json!("completed"), "{job}");
    assert_eq!(job["evicted"], json!(3), "{job}");

    let (path, data) = incident(1, 1);
    let (status, read) = server.call(Method::GET, &path, Some(VIEWER), None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["data"], data);
    assert_eq!(read["version"], json!(1));
    assert_eq!(read["archived"]["period"], json!("2024-01"), "{read}");
    assert_eq!(read["archived"]["source"], json!("lake"), "{read}");
    let (path_active, _) = incident(2, 1);
    let (status, active) = server
        .call(Method::GET, &path_active, Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{active}");
    assert!(active.get("archived").is_none(), "{active}");

    for (method, body) in [
        (Method::PATCH, Some(r#"{"n": 99}"#)),
        (Method::DELETE, None),
    ] {
        let (status, refused) = server
            .call(method.clone(), &path, Some(OPERATOR), body)
            .await;
        assert_eq!(
            (status, error_code(&refused)),
            (StatusCode::CONFLICT, "period_archived"),
            "{method}: {refused}"
        );
    }
    let (status, read) = server.call(Method::GET, &path, Some(VIEWER), None).await;
    assert_eq!((status, &read["data"]), (StatusCode::OK, &data));

    let (status, stats) = server
        .call(Method::GET, "/api/v1/stats", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["archive"]["active_entities"], json!(3), "{stats}");
    assert_eq!(stats["archive"]["archived_entities"], json!(3), "{stats}");
    assert_eq!(stats["archive"]["periods"]["2024-01"], json!("archived"));
    let (_, metrics) = server
        .call(Method::GET, "/metrics", Some(VIEWER), None)
        .await;
    let metrics = parse_metrics(metrics.as_str().unwrap());
    assert_eq!(
        metrics.get("floe_archive{figure=\"archived_periods\"}"),
        Some(&1.0),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.get("floe_archive{figure=\"active_entities\"}"),
        Some(&3.0)
    );
}
