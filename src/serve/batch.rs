//! `POST /api/v1/entities:batch`: many writes in one request, one status
//! per write in the answer.
//!
//! The body is a JSON array of write items (`application/json`, the
//! default) or one item per line (`application/x-ndjson`); an item is an
//! entity or a command (see `WriteRequest::from_item`). The batch is
//! bounded by `serve.max_batch_items` and `serve.max_batch_bytes` (413
//! before anything is applied). Then every item stands alone: a malformed
//! or refused item gets its own error status and the others are applied,
//! each atomic and idempotent by its key, in body order per entity.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json as AxumJson;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::routing::post;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::entities::read_body;
use super::errors::ApiError;
use super::forward::{self, Call};
use super::routes::{guarded, policy};
use crate::{Error, Floe, WriteRequest};

pub(super) fn routes(state: &Arc<AppState>) -> axum::Router<Arc<AppState>> {
    axum::Router::new().route(
        "/api/v1/entities:batch",
        guarded(state, policy::data_write("entity.batch"), post(write_batch)),
    )
}

/// How the body lists its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Array,
    Lines,
}

fn format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Array);
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "" | "application/json" => Ok(Format::Array),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(Format::Lines),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "a batch is application/json (an array of items) or application/x-ndjson (one item per line), not {other}"
            ),
        )),
    }
}

async fn write_batch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Body,
) -> Result<AxumJson<Value>, ApiError> {
    let format = format(&headers)?;
    let floe = state.floe()?;
    let serve = &state.config.serve;
    let text = read_body(&headers, body, serve.max_batch_bytes)
        .await
        .map_err(|e| match e.status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                e.status,
                "body_too_large",
                format!(
                    "the batch body exceeds serve.max_batch_bytes ({} bytes)",
                    serve.max_batch_bytes
                ),
            ),
            _ => e,
        })?;
    // A leading byte order mark (editors on Windows write one) is not part
    // of the first item.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // (line of the body, or none for an array element; the item)
    let items: Vec<(Option<usize>, &str)> = match format {
        Format::Array => serde_json::from_str::<Vec<&RawValue>>(text)
            .map_err(|e| {
                ApiError::bad_request(
                    "malformed_json",
                    format!("the batch is not a JSON array of items: {e}"),
                )
            })?
            .into_iter()
            .map(|raw| (None, raw.get()))
            .collect(),
        Format::Lines => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| (Some(i + 1), line))
            .collect(),
    };
    if items.len() > serve.max_batch_items {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "the batch holds {} items, serve.max_batch_items is {}",
                items.len(),
                serve.max_batch_items
            ),
        ));
    }
    // Cluster mode: the items of shards other nodes own go to them, one
    // batch per owner (forward.rs); each item's outcome is as if sent there.
    let call = Call::new(&state, method, &uri, &mut headers, false, true).with_json_body();
    let texts = items.iter().map(|(_, item)| Cow::Borrowed(*item)).collect();
    let results = forward::batch(&state, &call, texts, |texts| local_batch(floe, texts)).await;
    let ok = results
        .iter()
        .filter(|r| r["status"] == 200 || r["status"] == 201)
        .count();
    let results: Vec<Value> = results
        .into_iter()
        .zip(&items)
        .enumerate()
        .map(|(index, (mut result, (line, _)))| {
            result["index"] = json!(index);
            if let Some(line) = line {
                result["line"] = json!(line);
            }
            result
        })
        .collect();
    Ok(AxumJson(json!({
        "items": results.len(),
        "ok": ok,
        "failed": results.len() - ok,
        "results": results,
    })))
}

/// Writes `items` here: one outcome each (`{"status", "ack"}` or
/// `{"status", "error"}`), in order.
async fn local_batch(floe: &Floe, items: Vec<Cow<'_, str>>) -> Vec<Value> {
    let mut results: Vec<Option<Value>> = Vec::with_capacity(items.len());
    let mut requests = Vec::with_capacity(items.len());
    let mut creates = Vec::with_capacity(items.len());
    for item in &items {
        match WriteRequest::from_item(item) {
            Ok(request) => {
                creates.push(request.is_create());
                requests.push(request);
                results.push(None);
            }
            Err(e) => results.push(Some(failed(e))),
        }
    }
    let mut outcomes = floe.write_many(requests).await.into_iter().zip(creates);
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        let Some((outcome, create)) = outcomes.next() else {
            break;
        };
        *slot = Some(match outcome {
            Ok(ack) => {
                let status = if create { 201 } else { 200 };
                json!({ "status": status, "ack": ack })
            }
            Err(e) => failed(e),
        });
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| failed(Error::InvalidWriteItem("not answered".into()))))
        .collect()
}

/// An item's error as the single-write routes would answer it (with the
/// owner a `not_owner` names, as they do).
fn failed(e: Error) -> Value {
    let e = ApiError::from(e);
    let mut error = json!({ "code": e.code, "message": e.message });
    if let Some((node_id, addr)) = e.owner {
        error["owner"] = json!({ "node_id": node_id, "addr": addr });
    }
    json!({ "status": e.status.as_u16(), "error": error })
}
