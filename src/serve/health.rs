//! Liveness, readiness and the health endpoints of seed 000, plus the probe
//! tasks that keep shard health current without traffic.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json as AxumJson, Router};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::admin::shard_id;
use super::errors::ApiError;
use super::routes::{guarded, policy};
use super::{AppState, Phase};
use crate::{Floe, ShardHealth, SystemHealth};

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/healthz",
            guarded(state, policy::public("healthz"), get(live)),
        )
        .route(
            "/readyz",
            guarded(state, policy::public("readyz"), get(ready)),
        )
        .route(
            "/api/v1/admin/health/system",
            guarded(state, policy::control_read("health.system"), get(system)),
        )
        .route(
            "/api/v1/admin/health/shards",
            guarded(
                state,
                policy::control_read("health.shards"),
                get(all_shards),
            ),
        )
        .route(
            "/api/v1/admin/health/shards/{shard}",
            guarded(state, policy::control_read("health.shard"), get(one_shard)),
        )
}

/// The process answers: 200 whatever floe's state.
async fn live(State(state): State<Arc<AppState>>) -> AxumJson<Value> {
    AxumJson(json!({ "alive": true, "phase": state.phase().name() }))
}

/// 200 once recovery has finished, 503 before it and while draining.
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, AxumJson<Value>) {
    let phase = state.phase();
    let ready = phase == Phase::Ready;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let recovery = state.floe.get().map(|f| f.recovery_stats());
    (
        code,
        AxumJson(json!({ "ready": ready, "phase": phase.name(), "recovery": recovery })),
    )
}

async fn system(State(state): State<Arc<AppState>>) -> Result<AxumJson<SystemHealth>, ApiError> {
    Ok(AxumJson(state.floe()?.system_health().await))
}

async fn all_shards(State(state): State<Arc<AppState>>) -> Result<AxumJson<Value>, ApiError> {
    let floe = state.floe()?;
    let shards: Vec<ShardHealth> = (0..floe.topology().shard_count)
        .filter_map(|s| floe.shard_health(s).ok())
        .collect();
    Ok(AxumJson(json!({ "shards": shards })))
}

async fn one_shard(
    State(state): State<Arc<AppState>>,
    path: Result<Path<u32>, PathRejection>,
) -> Result<AxumJson<ShardHealth>, ApiError> {
    let shard = shard_id(path)?;
    Ok(AxumJson(state.floe()?.shard_health(shard)?))
}

/// One task per shard probes it every `health.probe_interval_ms`, so that a
/// shard that stops answering is seen even when no one writes to it. A
/// probe waits at most five times the UNHEALTHY latency; while it waits,
/// its age counts as the shard's latency.
pub(super) fn start_probes(floe: &Floe) -> Vec<JoinHandle<()>> {
    let health = &floe.config().health;
    let interval = Duration::from_millis(health.probe_interval_ms);
    let timeout = Duration::from_millis(health.unhealthy_latency_ms.saturating_mul(5))
        .max(Duration::from_secs(1));
    (0..floe.topology().shard_count)
        .map(|shard| {
            let floe = floe.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if floe.probe_shard(shard, timeout).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}
