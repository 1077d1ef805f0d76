//! Live shard migrations over HTTP: plan, start and cancel are admin; the
//! list, a migration's status and the balance analysis are control-plane
//! reads (viewer, audited), so a monitoring script can poll them.
//!
//! A started migration runs in the background of this process; its record
//! (`DATA/migrations/`) is what `GET /api/v1/migrations/{id}` returns, with
//! the live progress while it runs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json as AxumJson, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::entities::read_body;
use super::errors::ApiError;
use super::routes::{guarded, policy};
use crate::{MigrationOptions, PlanKind};

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/v1/migrations",
            guarded(state, policy::control_read("migrations.list"), get(list)).merge(guarded(
                state,
                policy::admin("migrations.start"),
                post(start),
            )),
        )
        .route(
            "/api/v1/migrations/plan",
            guarded(state, policy::admin("migrations.plan"), post(plan)),
        )
        .route(
            "/api/v1/migrations/balance",
            guarded(
                state,
                policy::control_read("migrations.balance"),
                get(balance),
            ),
        )
        .route(
            "/api/v1/migrations/{id}",
            guarded(state, policy::control_read("migrations.get"), get(status)),
        )
        .route(
            "/api/v1/migrations/{id}/cancel",
            guarded(state, policy::admin("migrations.cancel"), post(cancel)),
        )
}

/// The body of a plan or start call: the kind of change, tagged as
/// `{"kind": "add_shard"}`, `{"kind": "remove_shard", "shard": 3}`,
/// `{"kind": "rebalance", "threshold": 0.2}`, `{"kind": "split", "shard": 1}`,
/// `{"kind": "merge", "from": 4, "into": 2}`, `{"kind": "pin", "key":
/// "acme", "shard": 3}`, `{"kind": "move_keys", "moves": {"acme": 3, "globex":
/// 1}}`, `{"kind": "unpin", "keys": ["acme"]}`, and on range topologies
/// `{"kind": "add_range", "start": 100, "end": 200}` (optional `"shard"`),
/// `{"kind": "split_range", "at": 150}`, `{"kind": "merge_ranges", "at":
/// 150}` or `{"kind": "move_range", "at": 150, "shard": 2}`, on time
/// topologies `{"kind": "add_period", "period": "2024-04"}` (optional
/// `"shard"`) or `{"kind": "move_period", "period": "2024-04", "shard": 2}`,
/// and on every topology `{"kind": "isolate", "tenant": "acme"}` (a new
/// shard, and all of the tenant's keys move there).
async fn plan_kind(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<PlanKind, ApiError> {
    let text = read_body(headers, body, state.config.serve.max_body_bytes).await?;
    // PlanKind refuses fields its kind does not take: a misspelled
    // parameter is an error, not a plan made without it.
    serde_json::from_str(&text).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!(
                "expected {{\"kind\": \"add_shard\" | \"remove_shard\" | \"rebalance\" | \"split\" | \"merge\" | \"pin\" | \"move_keys\" | \"unpin\" | \"add_range\" | \"split_range\" | \"merge_ranges\" | \"move_range\" | \"add_period\" | \"move_period\" | \"archive_period\" | \"reactivate_period\" | \"drop_period\" | \"isolate\", ...}}: {e}"
            ),
        )
    })
}

/// The plan and its validation, without starting anything.
async fn plan(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<AxumJson<Value>, ApiError> {
    let kind = plan_kind(&state, &headers, body).await?;
    let migrations = state.floe()?.migrations();
    let plan = migrations.plan(kind).await?;
    let validation = migrations.validate(&plan);
    Ok(AxumJson(json!({ "plan": plan, "validation": validation })))
}

/// Plans and starts a migration: `202 Accepted` with its id; follow it with
/// `GET /api/v1/migrations/{id}`. `409 already_migrating` while another runs.
async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, AxumJson<Value>), ApiError> {
    let kind = plan_kind(&state, &headers, body).await?;
    let migrations = state.floe()?.migrations();
    let plan = migrations.plan(kind).await?;
    let validation = migrations.validate(&plan);
    let handle = migrations
        .start(plan.clone(), MigrationOptions::default())
        .await?;
    tracing::info!(id = %handle.id, kind = plan.kind.name(), moves = plan.moves.len(), "migration started over HTTP");
    Ok((
        StatusCode::ACCEPTED,
        AxumJson(json!({ "id": handle.id, "plan": plan, "validation": validation })),
    ))
}

async fn list(State(state): State<Arc<AppState>>) -> Result<AxumJson<Value>, ApiError> {
    let migrations = state.floe()?.migrations();
    Ok(AxumJson(json!({
        "running": migrations.running(),
        "migrations": migrations.list()?,
    })))
}

async fn status(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<AxumJson<Value>, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    let migrations = state.floe()?.migrations();
    let job = migrations.status(&id)?;
    let progress = migrations.subscribe(&id).ok().map(|rx| rx.borrow().clone());
    Ok(AxumJson(json!({ "job": job, "progress": progress })))
}

/// Asks the running migration to stop: it rolls back, unless it has already
/// cut over (then it finishes). `404` when `id` is not running here.
async fn cancel(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, AxumJson<Value>), ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    state.floe()?.migrations().cancel_any(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        AxumJson(json!({ "id": id, "cancel": "requested" })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceQuery {
    /// 0.2: a shard 20% above the mean load is hot.
    #[serde(default = "default_threshold")]
    threshold: f64,
}

fn default_threshold() -> f64 {
    0.2
}

async fn balance(
    State(state): State<Arc<AppState>>,
    query: Result<Query<BalanceQuery>, QueryRejection>,
) -> Result<AxumJson<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let analysis = state
        .floe()?
        .migrations()
        .analyze_balance(query.threshold)
        .await?;
    Ok(AxumJson(json!(analysis)))
}
