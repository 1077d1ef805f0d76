//! `GET /api/v1/things`: seed 004's `query_things` over HTTP (viewer,
//! audited like SQL). Every parameter becomes a typed part of a
//! [`ThingsQuery`]; filters are parsed into conditions and planned with
//! literal values, never pasted into SQL.
//!
//! `?type=Order&namespace=acme&filter=status = paid&filter=total >= 1500
//! &order=total desc&limit=20&offset=40&fresh=true`

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json as AxumJson, Router};
use serde_json::{Value, json};

use super::AppState;
use super::errors::ApiError;
use super::routes::{guarded, policy};
use super::sql::request_timeout;
use super::sql::stats_json;
use crate::{OrderBy, QueryRequest, Thing, ThingsQuery};

/// Things per page when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 10_000;

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/things",
        guarded(state, policy::sql("things.query"), get(things)),
    )
}

/// The parameters of one call, as given.
#[derive(Debug, Default)]
pub(crate) struct ThingsParams {
    pub(crate) entity_type: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) filters: Vec<String>,
    pub(crate) order: Option<String>,
    pub(crate) limit: Option<usize>,
    pub(crate) offset: usize,
}

impl ThingsParams {
    /// The typed query; `Err` names the parameter at fault.
    pub(crate) fn query(&self) -> Result<ThingsQuery, (&'static str, String)> {
        let entity_type = self.entity_type.clone().filter(|t| !t.is_empty()).ok_or((
            "type",
            "the entity type is required (type=Order)".to_string(),
        ))?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err((
                "limit",
                format!("limit {limit} is above the maximum of {MAX_LIMIT}; page with offset"),
            ));
        }
        let mut query = ThingsQuery::new(entity_type)
            .limit(limit)
            .offset(self.offset);
        if let Some(namespace) = &self.namespace {
            query = query.namespace(namespace.clone());
        }
        for filter in &self.filters {
            query = query
                .parse_filter(filter)
                .map_err(|e| ("filter", format!("filter {filter:?}: {e}")))?;
        }
        if let Some(order) = &self.order {
            let (by, descending) = OrderBy::parse_directed(order)
                .map_err(|e| ("order", format!("order {order:?}: {e}")))?;
            query = query.order_by(by, descending);
        }
        Ok(query)
    }
}

/// One thing as JSON, the same shape over HTTP and in `floe things`.
pub(crate) fn thing_json(t: &Thing) -> Value {
    json!({
        "namespace": t.namespace,
        "type": t.entity_type,
        "id": t.id,
        "version": t.version,
        "partition_key": t.partition_key,
        "shard": t.shard,
        "updated_at_us": t.updated_at_us,
        "data": t.data,
    })
}

async fn things(
    State(state): State<Arc<AppState>>,
    raw: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<AxumJson<Value>, ApiError> {
    let Query(pairs) = raw.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let mut params = ThingsParams::default();
    let mut fresh = false;
    let mut timeout_ms = None;
    let number = |name: &str, value: &str| -> Result<usize, ApiError> {
        value.parse().map_err(|_| {
            ApiError::bad_request(
                "bad_query",
                format!("{name}={value:?}: expected a non-negative integer"),
            )
        })
    };
    for (name, value) in pairs {
        match name.as_str() {
            "type" => params.entity_type = Some(value),
            "namespace" => params.namespace = Some(value),
            "filter" => params.filters.push(value),
            "order" => params.order = Some(value),
            "limit" => params.limit = Some(number("limit", &value)?),
            "offset" => params.offset = number("offset", &value)?,
            "timeout_ms" => timeout_ms = Some(number("timeout_ms", &value)? as u64),
            "fresh" => {
                fresh = match value.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ApiError::bad_request(
                            "bad_query",
                            format!("fresh={other:?}: expected true or false"),
                        ));
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!(
                        "unknown parameter {other:?}: expected type, namespace, filter, order, limit, offset, fresh, timeout_ms"
                    ),
                ));
            }
        }
    }
    let query = params.query().map_err(|(param, message)| {
        let code = if param == "filter" || param == "order" {
            "invalid_filter"
        } else {
            "bad_query"
        };
        ApiError::bad_request(code, message)
    })?;
    let request = QueryRequest {
        fresh,
        timeout: request_timeout(timeout_ms, state.config.query.timeout_ms, "bad_query")?,
        ..QueryRequest::default()
    };
    let page = state.floe()?.query_things(&query, &request).await?;
    let things: Vec<Value> = page.things.iter().map(thing_json).collect();
    Ok(AxumJson(json!({
        "count": things.len(),
        "limit": query.limit,
        "offset": query.offset,
        "things": things,
        "stats": stats_json(&page.stats),
    })))
}
