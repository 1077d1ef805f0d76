//! The entity API (put, create, update, get, delete, list) and routing
//! lookups: the data plane.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};

use axum::routing::{get, post};
use axum::{Json as AxumJson, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::audit::{AuditEntry, rfc3339};
use super::auth::{self, Caller};
use super::errors::ApiError;
use super::forward::{self, Call};
use super::routes::{guarded, policy};
use crate::{EntityKey, WriteAck, WriteRequest};
use floe_config::Role;

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let one = guarded(state, policy::data_read("entity.get"), get(get_entity))
        .merge(guarded(
            state,
            policy::data_write("entity.put"),
            axum::routing::put(put_entity),
        ))
        .merge(guarded(
            state,
            policy::data_write("entity.create"),
            post(create_entity),
        ))
        .merge(guarded(
            state,
            policy::data_write("entity.update"),
            axum::routing::patch(update_entity),
        ))
        .merge(guarded(
            state,
            policy::data_write("entity.delete"),
            axum::routing::delete(delete_entity),
        ));
    Router::new()
        .route("/api/v1/entities/{namespace}/{entity_type}/{id}", one)
        .route(
            "/api/v1/entities/{namespace}/{entity_type}",
            guarded(state, policy::data_read("entity.list"), get(list_entities)),
        )
        .route(
            "/api/v1/shard-for-key",
            guarded(
                state,
                policy::data_read("routing.shard_for_key"),
                get(shard_for_key),
            ),
        )
}

type KeyPath = Result<Path<(String, String, String)>, PathRejection>;

fn key(path: KeyPath) -> Result<EntityKey, ApiError> {
    let Path((namespace, entity_type, id)) =
        path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    Ok(EntityKey::new(namespace, entity_type, id))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))
}

/// Options of a write, as query parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteParams {
    expected_version: Option<u64>,
    idempotency_key: Option<String>,
    partition_key: Option<String>,
    /// `DELETE ...?erase=true`: a GDPR erase (admin, audited).
    erase: Option<bool>,
}

impl WriteParams {
    fn apply(
        self,
        headers: &HeaderMap,
        mut request: WriteRequest,
    ) -> Result<WriteRequest, ApiError> {
        if let Some(v) = self.expected_version {
            request = request.expected_version(v);
        }
        // The `Idempotency-Key` header is the common HTTP spelling.
        let header_key = header_idempotency_key(headers)?;
        if let Some(k) = self.idempotency_key.or(header_key) {
            request = request.idempotency_key(k);
        }
        if let Some(k) = self.partition_key {
            request = request.partition_key(k);
        }
        Ok(request)
    }
}

/// The `Idempotency-Key` header: its bytes, read as UTF-8 (a header may
/// carry non-ASCII text). A header that is not UTF-8 is refused, never
/// dropped: without its key a client's retry would write a second time.
/// The shard checks the key itself (empty, too long, control characters).
fn header_idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match std::str::from_utf8(value.as_bytes()) {
        Ok(key) => Ok(Some(key.to_string())),
        Err(e) => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("the Idempotency-Key header is not UTF-8 text: {e}"),
        )),
    }
}

/// Reads a whole body of at most `limit` bytes: 413 past it (checked on
/// `Content-Length` first, then while reading), 400 if it is not UTF-8.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<String, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    // Counted while reading: a longer body without a Content-Length is
    // refused at the first chunk past the limit, never buffered whole.
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request("bad_body", format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::body_too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("malformed_json", "the body is not UTF-8"))
}

async fn write(state: &AppState, request: WriteRequest) -> Result<WriteAck, ApiError> {
    Ok(state.floe()?.write(request).await?)
}

/// The parts of a write call, taken apart once and put together again for
/// every attempt (cluster mode may try it more than once, here or at the
/// shard's owner: see `forward.rs`).
struct WriteCall {
    state: Arc<AppState>,
    key: EntityKey,
    params: WriteParams,
    headers: HeaderMap,
    call: Call,
}

impl WriteCall {
    fn new(
        state: &Arc<AppState>,
        method: Method,
        uri: &Uri,
        key: EntityKey,
        params: WriteParams,
        mut headers: HeaderMap,
    ) -> WriteCall {
        let has_key = params.idempotency_key.is_some();
        let call = Call::new(state, method, uri, &mut headers, true, has_key);
        WriteCall {
            state: state.clone(),
            key,
            params,
            headers,
            call,
        }
    }

    /// Runs the write built by `build` from the key, here or at the owner;
    /// `created` answers 201.
    async fn run(
        &self,
        body: Option<&str>,
        created: bool,
        build: impl Fn(EntityKey) -> WriteRequest,
    ) -> Result<Response, ApiError> {
        forward::serve(&self.state, &self.call, body, || {
            let request = self
                .params
                .clone()
                .apply(&self.headers, build(self.key.clone()));
            let state = self.state.clone();
            async move {
                let request = request?;
                let ack = AxumJson(write(&state, request).await?);
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok((status, ack))
            }
        })
        .await
    }
}

async fn put_entity(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    path: KeyPath,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    let params = query(params)?;
    state.floe()?;
    // Checked once, with the JSON limits, on the write path.
    let data: Arc<str> = read_body(&headers, body, state.config.serve.max_body_bytes)
        .await?
        .into();
    let call = WriteCall::new(&state, method, &uri, key, params, headers);
    call.run(Some(&*data), false, |key| {
        WriteRequest::upsert_text(key, data.clone())
    })
    .await
}

async fn create_entity(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    path: KeyPath,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    let params = query(params)?;
    state.floe()?;
    let data: Arc<str> = read_body(&headers, body, state.config.serve.max_body_bytes)
        .await?
        .into();
    let call = WriteCall::new(&state, method, &uri, key, params, headers);
    call.run(Some(&*data), true, |key| {
        WriteRequest::create_text(key, data.clone())
    })
    .await
}

async fn update_entity(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    path: KeyPath,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    let params = query(params)?;
    state.floe()?;
    let text = read_body(&headers, body, state.config.serve.max_body_bytes).await?;
    // The checks of entity data (size, depth, duplicate keys), then the tree.
    let patch: Value = state
        .config
        .shards
        .json_limits()
        .parse_patch(&key, &text)
        .map_err(crate::Error::from)?;
    let call = WriteCall::new(&state, method, &uri, key, params, headers);
    call.run(Some(text.as_str()), false, |key| {
        WriteRequest::update(key, patch.clone())
    })
    .await
}

#[allow(clippy::too_many_arguments, reason = "one axum extractor per argument")]
async fn delete_entity(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    path: KeyPath,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    let params = query(params)?;
    if params.erase == Some(true) {
        let arrived = SystemTime::now();
        let started = Instant::now();
        let caller = caller.map(|Extension(c)| c);
        let erased = erase(&state, key, params, caller.as_ref()).await;
        let response = match erased {
            Ok(report) => AxumJson(report).into_response(),
            Err(e) => e.into_response(),
        };
        // The erase is audited whatever its outcome (the record of the
        // request is kept; it names the entity, by design).
        let status = response.status().as_u16();
        state.audit.record(&AuditEntry {
            ts: rfc3339(arrived),
            who: caller.as_ref().map(|c| c.name.clone()),
            role: caller.as_ref().map(|c| c.role.as_str()),
            action: "entity.erase",
            method: "DELETE".into(),
            path: uri.path().to_string(),
            remote: remote.map(|Extension(ConnectInfo(a))| a.to_string()),
            status,
            outcome: match status {
                401 | 403 => "denied",
                500.. => "error",
                400.. => "rejected",
                _ => "ok",
            },
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        return Ok(response);
    }
    let call = WriteCall::new(&state, method, &uri, key, params, headers);
    call.run(None, false, WriteRequest::delete).await
}

/// `DELETE ...?erase=true`: admin only; takes no write options but the
/// partition key.
async fn erase(
    state: &AppState,
    key: EntityKey,
    params: WriteParams,
    caller: Option<&Caller>,
) -> Result<crate::EraseReport, ApiError> {
    let caller = caller.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "erase needs an admin token",
        )
    })?;
    auth::authorize(caller, Role::Admin, "entity.erase")?;
    if params.expected_version.is_some() || params.idempotency_key.is_some() {
        return Err(ApiError::bad_request(
            "bad_query",
            "erase takes no expected_version or idempotency_key (only partition_key)",
        ));
    }
    Ok(state.floe()?.erase(key, params.partition_key).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    partition_key: Option<String>,
}

async fn get_entity(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    path: KeyPath,
    params: Result<Query<GetParams>, QueryRejection>,
    mut headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    let params = query(params)?;
    let call = Call::new(&state, method, &uri, &mut headers, false, false);
    let (state_ref, params, key) = (&*state, &params, &key);
    forward::serve(state_ref, &call, None, move || async move {
        let floe = state_ref.floe()?;
        let read = floe
            .read(key, params.partition_key.as_deref())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("entity {key} not found")))?;
        // An archived entity's answer says so: it came from the lake.
        let mut body = serde_json::to_value(&read.entity).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("encoding entity {key}: {e}"),
            )
        })?;
        if let (
            crate::ReadSource::Lake {
                period,
                snapshot_id,
            },
            Some(fields),
        ) = (&read.source, body.as_object_mut())
        {
            fields.insert(
                "archived".into(),
                json!({ "period": period, "source": "lake", "snapshot_id": snapshot_id }),
            );
        }
        Ok::<_, ApiError>(AxumJson(body))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    after: Option<String>,
    limit: Option<usize>,
    /// List only this shard's entities (what a cluster-wide list asks of
    /// each shard's owner).
    shard: Option<u32>,
}

/// A page of entities in id order, and where the next one starts: a full
/// page may have more after it.
fn page<T: serde::Serialize>(entities: &[T], limit: usize, id: impl Fn(&T) -> Value) -> Value {
    let next_after = (entities.len() == limit)
        .then(|| entities.last().map(id))
        .flatten();
    json!({ "entities": entities, "next_after": next_after })
}

async fn list_entities(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    mut headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((namespace, entity_type)) =
        path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    let params = query(params)?;
    let max = state.config.serve.max_list_limit;
    let limit = params.limit.unwrap_or(100.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be 1..={max} (serve.max_list_limit)"),
        ));
    }
    let (ns, ty, after) = (&namespace, &entity_type, params.after.as_deref());
    let one_shard = |shard: u32| {
        let state = &state;
        async move {
            let entities = state
                .floe()?
                .list_shard(shard, ns, ty, after, limit)
                .await?;
            Ok::<_, ApiError>(AxumJson(page(&entities, limit, |e| json!(e.key.id))))
        }
    };
    let call = Call::new(&state, Method::GET, &uri, &mut headers, false, false);
    if let Some(shard) = params.shard {
        return forward::serve(&state, &call, None, || one_shard(shard)).await;
    }
    if !call.may_forward(&state) {
        let entities = state.floe()?.list(ns, ty, after, limit).await?;
        return Ok(AxumJson(page(&entities, limit, |e| json!(e.key.id))).into_response());
    }
    // Cluster mode: every shard's page from its owner (here or forwarded,
    // waiting out handovers as any call does), merged in id order.
    let shards = state.floe()?.topology().shard_count;
    let calls = (0..shards).map(|shard| {
        let call = call.for_shard_list(shard);
        let one_shard = &one_shard;
        let state = &state;
        async move { forward::serve(state, &call, None, || one_shard(shard)).await }
    });
    let mut entities = Vec::new();
    for answer in futures::future::join_all(calls).await {
        let answer = answer?;
        if answer.status() != StatusCode::OK {
            return Ok(answer);
        }
        let unreadable = |e: String| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_shard_page",
                format!("a shard's page of the list could not be read: {e}"),
            )
        };
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let mut shard_page: Value =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        if let Value::Array(items) = shard_page["entities"].take() {
            entities.extend(items);
        }
    }
    // An entity's key is flattened into it: `id` is the list's order.
    entities.sort_by(|a, b| {
        a["id"]
            .as_str()
            .unwrap_or_default()
            .cmp(b["id"].as_str().unwrap_or_default())
    });
    entities.truncate(limit);
    Ok(AxumJson(page(&entities, limit, |e| e["id"].clone())).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardForKeyParams {
    key: String,
}

async fn shard_for_key(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ShardForKeyParams>, QueryRejection>,
) -> Result<AxumJson<crate::ShardInfo>, ApiError> {
    let params = query(params)?;
    Ok(AxumJson(state.floe()?.shard_for_key(&params.key)))
}
