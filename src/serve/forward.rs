//! Cluster mode: every node accepts every call. A call this node cannot
//! serve because another node owns its shard is sent on to the owner over
//! HTTP, one hop at most, with the cluster token; during a handover it waits
//! and tries again (here or at the new owner) until `cluster.forward_timeout_ms`,
//! then answers a retryable `503 not_owner`, never a wrong answer.
//!
//! The rules (headers, token check, which answers to wait out, backoff) are
//! `floe_cluster::forward`'s; this module is the HTTP edge. It tries the call
//! locally first: the shard's gate refuses before anything is written when
//! this node does not own it, and its refusal names the owner from the grants
//! this node follows. So a forwarded call costs one local refusal plus one
//! hop, and a call for a local shard costs nothing extra.
//!
//! Retrying is safe: before the first attempt every write gets an
//! idempotency key if it has none (the same one for every attempt, here and at
//! the owner), so a write whose answer was lost is applied once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use floe_cluster::{
    CLUSTER_TOKEN_HEADER, ClusterToken, FORWARDED_BY, FORWARDED_TO, check_forwarded,
    forward_backoff, is_retry_answer,
};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::errors::ApiError;
use floe_config::Role;

/// Longest wait for one forwarded attempt's answer (a deadline still bounds it).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends calls on to their shard's owner.
#[derive(Debug)]
pub(super) struct Forwarder {
    http: reqwest::Client,
    token: ClusterToken,
    node_id: String,
    timeout: Duration,
}

impl Forwarder {
    pub(super) fn new(
        token: ClusterToken,
        node_id: String,
        timeout: Duration,
    ) -> crate::Result<Forwarder> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| crate::Error::Config(format!("building the forwarding client: {e}")))?;
        Ok(Forwarder {
            http,
            token,
            node_id,
            timeout,
        })
    }

    /// One attempt at `owner` (`addr` is its `host:port`): the owner's answer
    /// to pass back, or why to try again.
    async fn send(
        &self,
        state: &AppState,
        owner: &str,
        addr: &str,
        call: &Call,
        body: Option<&str>,
        remaining: Duration,
    ) -> Result<Response, String> {
        let url = format!("http://{addr}{}", call.path_and_query);
        let mut request = self
            .http
            .request(call.method.clone(), &url)
            .timeout(remaining.min(ATTEMPT_TIMEOUT))
            .header(FORWARDED_BY, &self.node_id)
            .header(CLUSTER_TOKEN_HEADER, self.token.expose());
        if let Some(key) = &call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(content_type) = &call.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, content_type, bytes))
        };
        let (status, content_type, bytes) = match answer.await {
            Ok(answer) => answer,
            Err(e) => {
                state.metrics.count_forward("retried");
                return Err(format!("calling node {owner:?} at {addr}: {}", chain(&e)));
            }
        };
        let code = error_code(&bytes);
        if is_retry_answer(status.as_u16(), code.as_deref()) {
            state.metrics.count_forward("retried");
            return Err(format!(
                "node {owner:?} at {addr} answered {status} {}",
                code.unwrap_or_default()
            ));
        }
        state.metrics.count_forward("forwarded");
        if status == StatusCode::UNAUTHORIZED {
            // Not the caller's token: this node's. An operator's problem.
            return Ok(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "forward_refused",
                format!(
                    "node {owner:?} refused this node's cluster token: cluster.token differs between nodes"
                ),
            )
            .into_response());
        }
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        if let Ok(owner) = HeaderValue::from_str(owner) {
            response.headers_mut().insert(FORWARDED_TO, owner);
        }
        Ok(response)
    }

    fn gave_up(&self, state: &AppState, why: &str) -> ApiError {
        state.metrics.count_forward("gave_up");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_owner",
            format!(
                "no owner of the call's shard served it within cluster.forward_timeout_ms ({} ms; \
                 a handover in progress); retry: {why}",
                self.timeout.as_millis()
            ),
        )
    }
}

/// The caller a call marked as forwarded proves: another node of the
/// cluster, with the operator role (data reads and writes, never admin
/// calls), or 401 without the right cluster token. `None`: not forwarded.
pub(super) fn inbound(state: &AppState, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    let by = headers.get(FORWARDED_BY).map(|v| v.to_str().unwrap_or("?"));
    let token = headers.get(CLUSTER_TOKEN_HEADER).map(HeaderValue::as_bytes);
    let configured = state.forwarder.as_ref().map(|f| &f.token);
    match check_forwarded(configured, by, token) {
        Ok(None) => Ok(None),
        Ok(Some(forwarded)) => Ok(Some(Caller {
            name: format!("node:{}", forwarded.by),
            role: Role::Operator,
        })),
        Err(refused) => Err(ApiError::unauthorized(refused.to_string())),
    }
}

/// What a call needs to be sent again, here or at the owner.
#[derive(Debug)]
pub(super) struct Call {
    method: Method,
    path_and_query: String,
    idempotency_key: Option<HeaderValue>,
    content_type: Option<HeaderValue>,
    /// It came from another node: serve it here or refuse, never forward it.
    forwarded: bool,
}

impl Call {
    /// The call `method uri` with `headers`. In cluster mode a write
    /// (`write` set) without an idempotency key (`has_key`: one in the query)
    /// gets one here, in `headers` too, so the local attempts use it.
    pub(super) fn new(
        state: &AppState,
        method: Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        write: bool,
        has_key: bool,
    ) -> Call {
        let forwarded = headers.contains_key(FORWARDED_BY);
        // The caller's header goes on as sent (the owner decodes and checks
        // it): one that is not visible ASCII is still the caller's key.
        let mut idempotency_key = headers.get("idempotency-key").cloned();
        if state.forwarder.is_some() && !forwarded && write && !has_key && idempotency_key.is_none()
        {
            let key = uuid::Uuid::new_v4().to_string();
            if let Ok(value) = HeaderValue::from_str(&key) {
                headers.insert("idempotency-key", value.clone());
                idempotency_key = Some(value);
            }
        }
        Call {
            method,
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string()),
            idempotency_key,
            content_type: headers.get(header::CONTENT_TYPE).cloned(),
            forwarded,
        }
    }

    /// A batch: whatever the caller sent, the owners get a JSON array.
    pub(super) fn with_json_body(mut self) -> Call {
        self.content_type = Some(HeaderValue::from_static("application/json"));
        self
    }

    /// Whether this call may be sent on to other nodes: cluster mode, and it
    /// did not come from another node (one hop).
    pub(super) fn may_forward(&self, state: &AppState) -> bool {
        state.forwarder.is_some() && !self.forwarded
    }

    /// The list call this one is, restricted to `shard` (`?shard=N` added):
    /// what a cluster-wide list asks of each shard's owner.
    pub(super) fn for_shard_list(&self, shard: u32) -> Call {
        let separator = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        Call {
            method: Method::GET,
            path_and_query: format!("{}{separator}shard={shard}", self.path_and_query),
            idempotency_key: None,
            content_type: None,
            forwarded: false,
        }
    }

    /// The forwarder, unless this call must be served here.
    fn forwarder<'a>(&self, state: &'a AppState) -> Option<&'a Forwarder> {
        if self.forwarded {
            state.metrics.count_forward("received");
            return None;
        }
        state.forwarder.as_ref()
    }
}

/// Serves `call` by `local` (one attempt here, callable again), or, while
/// this node answers `not_owner`, at the owner its refusal names, until
/// `cluster.forward_timeout_ms`.
///
/// While this node is itself taking the shard over (its refusal names this
/// node), the call waits here and is tried again as soon as a shard starts
/// serving on this node, not after a backoff step: a planned handover's
/// pause is then what the cutover takes, not that rounded up to the next
/// retry. A call forwarded by another node waits so too (up to
/// [`HOLD_FORWARDED`]), and is otherwise answered at once: the forwarding
/// node does the retrying, and a forwarded call is never forwarded again.
pub(super) async fn serve<R, F, Fut>(
    state: &AppState,
    call: &Call,
    body: Option<&str>,
    mut local: F,
) -> Result<Response, ApiError>
where
    R: IntoResponse,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
{
    let Some(forwarder) = state.forwarder.as_ref() else {
        return local().await.map(IntoResponse::into_response);
    };
    if call.forwarded {
        state.metrics.count_forward("received");
    }
    let served = state
        .floe()
        .ok()
        .and_then(|floe| floe.cluster_node())
        .map(|node| node.shard_served());
    let timeout = if call.forwarded {
        HOLD_FORWARDED.min(forwarder.timeout)
    } else {
        forwarder.timeout
    };
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let shard_served = served.as_ref().map(|s| s.notified());
        tokio::pin!(shard_served);
        if let Some(notified) = shard_served.as_mut().as_pin_mut() {
            notified.enable();
        }
        let refused = match local().await {
            Ok(answer) => return Ok(answer.into_response()),
            Err(e) if e.code == "not_owner" => e,
            Err(e) => return Err(e),
        };
        // A node whose lease is gone follows no grants any more: its view
        // of the owners is stale, and callers must go to another node.
        if lease_lost(state) {
            return Err(refused);
        }
        let taking_over = matches!(&refused.owner, Some((owner, _)) if *owner == forwarder.node_id);
        let remaining = timeout.saturating_sub(started.elapsed());
        let why = match &refused.owner {
            _ if call.forwarded && !taking_over => return Err(refused),
            Some((owner, Some(addr))) if *owner != forwarder.node_id => {
                match forwarder
                    .send(state, owner, addr, call, body, remaining)
                    .await
                {
                    Ok(response) => return Ok(response),
                    Err(why) => why,
                }
            }
            // No owner yet, or this node is taking the shard over: wait.
            _ => refused.message.clone(),
        };
        let delay = forward_backoff(attempt);
        if started.elapsed() + delay >= timeout {
            if call.forwarded {
                return Err(refused);
            }
            return Err(forwarder.gave_up(state, &why));
        }
        match shard_served.as_pin_mut() {
            Some(notified) if taking_over => {
                let _ = tokio::time::timeout(delay, notified).await;
            }
            _ => tokio::time::sleep(delay).await,
        }
        attempt += 1;
    }
}

/// How long a call forwarded to this node waits for a shard this node is
/// taking over: well under the forwarding node's own deadline, so that it
/// can still try elsewhere if the grant moves on.
const HOLD_FORWARDED: Duration = Duration::from_secs(2);

/// Whether this node has lost its cluster membership (see `ClusterNode::lease_lost`).
fn lease_lost(state: &AppState) -> bool {
    state
        .floe()
        .ok()
        .and_then(|floe| floe.cluster_node())
        .is_some_and(|node| node.lease_lost())
}

/// The owner a batch item's `not_owner` outcome names: (node id, `host:port`).
fn owner_of(outcome: &Value) -> Option<(String, String)> {
    let error = &outcome["error"];
    if outcome["status"] != 503 || error["code"] != "not_owner" {
        return None;
    }
    Some((
        error["owner"]["node_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        error["owner"]["addr"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

/// The items of a batch, written by `local` (one attempt here for the items
/// given, one outcome each, as the batch answers them) and, for the items
/// this node does not own, by their owners: grouped per owner into one
/// forwarded batch each, retried until `cluster.forward_timeout_ms` while
/// owners answer `not_owner`. One outcome per item, in order.
pub(super) async fn batch<'a, F, Fut>(
    state: &AppState,
    call: &Call,
    items: Vec<Cow<'a, str>>,
    mut local: F,
) -> Vec<Value>
where
    F: FnMut(Vec<Cow<'a, str>>) -> Fut,
    Fut: Future<Output = Vec<Value>>,
{
    let Some(forwarder) = call.forwarder(state) else {
        return local(items).await;
    };
    // Every item keeps one idempotency key over every attempt.
    let items: Vec<Cow<'a, str>> = items.into_iter().map(with_idempotency_key).collect();
    let mut outcomes: Vec<Option<Value>> = vec![None; items.len()];
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut why = String::new();
    while !pending.is_empty() {
        let here = local(pending.iter().map(|&i| items[i].clone()).collect()).await;
        let mut by_owner: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        let mut waiting = Vec::new();
        for (&i, outcome) in pending.iter().zip(here) {
            match owner_of(&outcome) {
                Some((owner, addr)) if !addr.is_empty() && owner != forwarder.node_id => {
                    by_owner.entry((owner, addr)).or_default().push(i);
                }
                Some(_) => {
                    why = outcome["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    waiting.push(i);
                }
                None => outcomes[i] = Some(outcome),
            }
        }
        if lease_lost(state) {
            for i in waiting.drain(..).chain(by_owner.into_values().flatten()) {
                outcomes[i] = Some(json!({
                    "status": 503,
                    "error": { "code": "not_owner", "message": "this node's lease is gone from etcd; call another node" },
                }));
            }
            break;
        }
        let remaining = forwarder.timeout.saturating_sub(started.elapsed());
        let sends = by_owner.into_iter().map(|((owner, addr), group)| {
            let body = format!(
                "[{}]",
                group
                    .iter()
                    .map(|&i| items[i].as_ref())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            async move {
                let answer = forwarder
                    .send(state, &owner, &addr, call, Some(&body), remaining)
                    .await;
                (group, answer)
            }
        });
        for (group, answer) in futures::future::join_all(sends).await {
            match answer {
                Ok(response) => match sub_batch_outcomes(response, group.len()).await {
                    Ok(results) => {
                        for (i, outcome) in group.into_iter().zip(results) {
                            match owner_of(&outcome) {
                                Some(_) => waiting.push(i),
                                None => outcomes[i] = Some(outcome),
                            }
                        }
                    }
                    // The owner refused the batch as a whole (e.g. a cluster
                    // token mismatch): that is every item's outcome.
                    Err(outcome) => {
                        for i in group {
                            outcomes[i] = Some(outcome.clone());
                        }
                    }
                },
                Err(e) => {
                    why = e;
                    waiting.extend(group);
                }
            }
        }
        pending = waiting;
        pending.sort_unstable();
        if pending.is_empty() {
            break;
        }
        let delay = forward_backoff(attempt);
        if started.elapsed() + delay >= forwarder.timeout {
            let e = forwarder.gave_up(state, &why);
            for &i in &pending {
                outcomes[i] = Some(json!({
                    "status": e.status.as_u16(),
                    "error": { "code": e.code, "message": e.message },
                }));
            }
            break;
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(
                || json!({"status": 500, "error": {"code": "internal", "message": "not answered"}}),
            )
        })
        .collect()
}

/// The per-item outcomes of an owner's batch answer, or the one outcome of
/// every item when the owner refused the batch whole.
async fn sub_batch_outcomes(response: Response, items: usize) -> Result<Vec<Value>, Value> {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let error = if body["error"].is_object() {
            body["error"].clone()
        } else {
            json!({"code": "forward_failed", "message": String::from_utf8_lossy(&bytes)})
        };
        return Err(json!({ "status": status.as_u16(), "error": error }));
    }
    match body["results"].as_array() {
        Some(results) if results.len() == items => Ok(results
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(o) = r.as_object_mut() {
                    o.remove("index");
                    o.remove("line");
                }
                r
            })
            .collect()),
        _ => Err(json!({
            "status": 502,
            "error": {"code": "forward_failed", "message": "the owner's batch answer does not list one result per item"},
        })),
    }
}

/// `item` with an `idempotency_key` if it is a JSON object without one
/// (anything else is left for the write path to refuse).
fn with_idempotency_key(item: Cow<'_, str>) -> Cow<'_, str> {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&item) else {
        return item;
    };
    if object.contains_key("idempotency_key") {
        return item;
    }
    object.insert(
        "idempotency_key".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    Cow::Owned(Value::Object(object).to_string())
}

/// The `error.code` of an API error body.
fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["error"]["code"].as_str().map(str::to_string)
}

/// An error with its causes (reqwest's own text says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_get_a_key_once_and_keep_their_own() {
        let keyed = with_idempotency_key(Cow::Borrowed(r#"{"id":"a","idempotency_key":"k"}"#));
        assert_eq!(keyed, r#"{"id":"a","idempotency_key":"k"}"#);
        let added = with_idempotency_key(Cow::Borrowed(r#"{"id":"a","data":{"x":1}}"#));
        let value: Value = serde_json::from_str(&added).unwrap();
        assert!(
            value["idempotency_key"]
                .as_str()
                .is_some_and(|k| k.len() == 36)
        );
        assert_eq!(value["data"], json!({"x": 1}));
        let broken = with_idempotency_key(Cow::Borrowed("{not json"));
        assert_eq!(broken, "{not json");
    }

    #[test]
    fn only_not_owner_outcomes_name_an_owner() {
        let refused = json!({"status": 503, "error": {"code": "not_owner", "message": "m",
            "owner": {"node_id": "n2", "addr": "127.0.0.1:7"}}});
        assert_eq!(
            owner_of(&refused),
            Some(("n2".to_string(), "127.0.0.1:7".to_string()))
        );
        let waiting = json!({"status": 503, "error": {"code": "not_owner", "message": "m"}});
        assert_eq!(owner_of(&waiting), Some((String::new(), String::new())));
        let conflict =
            json!({"status": 409, "error": {"code": "version_conflict", "message": "m"}});
        assert_eq!(owner_of(&conflict), None);
        assert_eq!(owner_of(&json!({"status": 200, "ack": {}})), None);
    }
}
