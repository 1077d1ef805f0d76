//! `POST /api/v1/sql`: one read-only SQL statement across every shard, over
//! the Iceberg lake (viewer, audited). The answer is JSON rows, or an Arrow
//! IPC stream for clients that want columns (`"format": "arrow"` or
//! `Accept: application/vnd.apache.arrow.stream`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json as AxumJson, Router, extract::State};
use floe_query::arrow;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::entities::read_body;
use super::errors::ApiError;
use super::routes::{guarded, policy};
use crate::{AsOf, QueryRequest, QueryResult, QueryStats};

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/sql",
        guarded(state, policy::sql("sql.query"), post(query)),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
    /// `json` (the default) or `arrow`.
    #[serde(default)]
    format: Option<String>,
    /// Also read acknowledged events not landed yet.
    #[serde(default)]
    fresh: bool,
    #[serde(default)]
    as_of_snapshot: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    as_of_time_ms: Option<i64>,
    /// Shorter than `query.timeout_ms`; never longer.
    #[serde(default)]
    timeout_ms: Option<u64>,
}

async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let text = read_body(&headers, body, state.config.serve.max_body_bytes).await?;
    let body: SqlBody = serde_json::from_str(&text).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("expected {{\"sql\": \"SELECT ...\", \"format\": \"json\" | \"arrow\", \"fresh\": bool, \"as_of_snapshot\": id, \"as_of_time_ms\": ms, \"timeout_ms\": ms}}: {e}"),
        )
    })?;
    let wants_arrow = match body.format.as_deref() {
        Some("arrow") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_body",
                format!("format {other:?}: expected \"json\" or \"arrow\""),
            ));
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(ARROW_STREAM)),
    };
    let as_of = match (body.as_of_snapshot, body.as_of_time_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_body",
                "give as_of_snapshot or as_of_time_ms, not both",
            ));
        }
        (Some(id), None) => Some(AsOf::Snapshot(id)),
        (None, Some(ms)) => Some(AsOf::TimestampMs(ms)),
        (None, None) => None,
    };
    let request = QueryRequest {
        as_of,
        fresh: body.fresh,
        timeout: request_timeout(body.timeout_ms, state.config.query.timeout_ms, "bad_body")?,
        ..QueryRequest::default()
    };
    let result = state.floe()?.sql_with(&body.sql, &request).await?;
    if wants_arrow {
        arrow_stream(&result)
    } else {
        json_rows(&result)
    }
}

/// A caller's `timeout_ms`: at least 1 (0 is refused with `code`, not
/// run as a query that times out at once), at most `ceiling`
/// (`query.timeout_ms`).
pub(super) fn request_timeout(
    ms: Option<u64>,
    ceiling: u64,
    code: &'static str,
) -> Result<Option<Duration>, ApiError> {
    match ms {
        Some(0) => Err(ApiError::bad_request(
            code,
            format!("timeout_ms must be at least 1 (at most {ceiling}, query.timeout_ms)"),
        )),
        ms => Ok(ms.map(|ms| Duration::from_millis(ms.min(ceiling)))),
    }
}

fn json_rows(result: &QueryResult) -> Result<Response, ApiError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let batches: Vec<_> = result.batches.iter().collect();
    writer.write_batches(&batches).map_err(internal)?;
    writer.finish().map_err(internal)?;
    let bytes = writer.into_inner();
    let rows: Value = if bytes.is_empty() {
        json!([])
    } else {
        serde_json::from_slice(&bytes).map_err(internal)?
    };
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    Ok(AxumJson(json!({
        "columns": columns,
        "rows": rows,
        "stats": stats_json(&result.stats),
    }))
    .into_response())
}

/// The result as one Arrow IPC stream; the figures go in a header.
fn arrow_stream(result: &QueryResult) -> Result<Response, ApiError> {
    let mut bytes = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &result.schema)
            .map_err(internal)?;
        for batch in &result.batches {
            writer.write(batch).map_err(internal)?;
        }
        writer.finish().map_err(internal)?;
    }
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
    if let Ok(value) = HeaderValue::from_str(&stats_json(&result.stats).to_string()) {
        headers.insert("x-floe-query-stats", value);
    }
    Ok(response)
}

pub(super) fn stats_json(s: &QueryStats) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "partitions_total": s.partitions_total,
        "partitions_scanned": s.partitions_scanned,
        "partitions_pruned": s.partitions_pruned,
        "files_total": s.files_total,
        "files_scanned": s.files_scanned,
        "files_pruned": s.files_pruned,
        "row_groups_scanned": s.row_groups_scanned,
        "row_groups_pruned": s.row_groups_pruned,
        "bytes_scanned": s.bytes_scanned,
        "bytes_planned": s.bytes_planned,
        "rows_scanned": s.rows_scanned,
        "pending_events": s.pending_events,
        "rows": s.rows,
        "cache_hit": s.cache_hit,
        "elapsed_ms": s.elapsed.as_secs_f64() * 1000.0,
    })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("encoding the result: {e}"),
    )
}
