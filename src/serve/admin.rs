//! Control-plane reads (topology, per-shard stats, rebalance hints) and
//! fault injection. Migrations and topology changes join here (admin).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, put};
use axum::{Json as AxumJson, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::entities::read_body;
use super::errors::ApiError;
use super::routes::{guarded, policy};

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/v1/topology",
            guarded(state, policy::control_read("topology.get"), get(topology)),
        )
        .route(
            "/api/v1/shards",
            guarded(state, policy::control_read("shards.list"), get(shards)),
        )
        .route(
            "/api/v1/shards/{shard}",
            guarded(state, policy::control_read("shards.get"), get(shard)),
        )
        .route(
            "/api/v1/stats",
            guarded(state, policy::control_read("stats.get"), get(stats)),
        )
        .route(
            "/api/v1/admin/faults/shards/{shard}",
            guarded(state, policy::admin("faults.set"), put(set_fault)),
        )
}

pub(super) fn shard_id(path: Result<Path<u32>, PathRejection>) -> Result<u32, ApiError> {
    path.map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request("bad_path", e.body_text()))
}

async fn topology(
    State(state): State<Arc<AppState>>,
) -> Result<AxumJson<crate::Topology>, ApiError> {
    Ok(AxumJson(state.floe()?.topology()))
}

async fn shards(State(state): State<Arc<AppState>>) -> Result<AxumJson<Value>, ApiError> {
    let floe = state.floe()?;
    let stats = floe.shard_stats().await?;
    Ok(AxumJson(
        json!({ "shards": stats, "utilization": floe.utilization() }),
    ))
}

async fn shard(
    State(state): State<Arc<AppState>>,
    path: Result<Path<u32>, PathRejection>,
) -> Result<AxumJson<Value>, ApiError> {
    let shard = shard_id(path)?;
    let floe = state.floe()?;
    let stats = floe.shard(shard).await?;
    let utilization = floe.utilization().into_iter().find(|u| u.shard == shard);
    Ok(AxumJson(
        json!({ "stats": stats, "utilization": utilization }),
    ))
}

/// Everything an operator looks at before rebalancing: per-shard counters,
/// utilization against the limits, hot shards over the health window,
/// split/merge hints and the routing distribution.
async fn stats(State(state): State<Arc<AppState>>) -> Result<AxumJson<Value>, ApiError> {
    let floe = state.floe()?;
    let shards = floe.shard_stats().await?;
    let health = &state.config.health;
    Ok(AxumJson(json!({
        "shards": shards,
        "archive": floe.archive_stats().await?,
        "utilization": floe.utilization(),
        "hot_shards": floe.hot_shards(health.hot_shard_accesses, health.window_ms),
        "hot_shard_threshold": { "accesses": health.hot_shard_accesses, "window_ms": health.window_ms },
        "rebalance_hints": floe.rebalance_hints(),
        "routing": floe.routing_metrics(),
        "recovery": floe.recovery_stats(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    /// Extra delay before every batch of the shard; 0 heals it.
    delay_ms: u64,
}

async fn set_fault(
    State(state): State<Arc<AppState>>,
    path: Result<Path<u32>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<AxumJson<Value>, ApiError> {
    if !state.config.serve.fault_injection {
        return Err(ApiError::not_found(
            "fault injection is off (serve.fault_injection = false)",
        ));
    }
    let shard = shard_id(path)?;
    let text = read_body(&headers, body, state.config.serve.max_body_bytes).await?;
    let fault: Fault = serde_json::from_str(&text).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("expected {{\"delay_ms\": N}}: {e}"),
        )
    })?;
    inject_delay(state.floe()?, shard, Duration::from_millis(fault.delay_ms))?;
    Ok(AxumJson(
        json!({ "shard": shard, "delay_ms": fault.delay_ms }),
    ))
}

/// The shard's injected delay (a drill). Builds without the `failpoints`
/// feature have no fault injection: the endpoint says so.
#[cfg(feature = "failpoints")]
fn inject_delay(floe: &crate::Floe, shard: u32, delay: Duration) -> Result<(), ApiError> {
    floe.inject_shard_delay(shard, delay)?;
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
fn inject_delay(_: &crate::Floe, _: u32, _: Duration) -> Result<(), ApiError> {
    Err(ApiError::not_found(
        "fault injection needs a floe built with the `failpoints` feature",
    ))
}
