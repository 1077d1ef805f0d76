//! The client: each call is routed by the cached shard map, sent, and on a
//! retryable failure sent again under the [`RetryPolicy`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use floe_engine::{Entity, EntityKey, KeyExtractor, WriteAck};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::map::{ClusterMap, Routes, parse_base};
use crate::retry::{Retry, RetryPolicy};
use crate::types::{
    MigrationKind, MigrationList, MigrationPlan, MigrationStatus, Page, SqlQuery, SqlResult,
    StartedMigration, Write, WriteOp,
};

/// Settings of a [`Client`]; [`ClientBuilder::build`] makes one.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    retry: RetryPolicy,
    request_timeout: Duration,
    connect_timeout: Duration,
    map_max_age: Duration,
    partition_keys: KeyExtractor,
}

impl ClientBuilder {
    /// A bearer token (`serve.tokens`): viewer for reads, operator for
    /// writes, admin for migrations.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// When and how long to retry (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long one attempt may wait for its answer (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one attempt may take to connect (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The age after which the shard map is fetched again before a call
    /// (default 30 s). A stale-routing answer or a write acknowledged by
    /// another shard than predicted refreshes it sooner.
    pub fn map_max_age(mut self, age: Duration) -> Self {
        self.map_max_age = age;
        self
    }

    /// How entities map to partition keys: the server's `[partition_key]`
    /// (default: by namespace, as floe's default). Only where calls are
    /// sent depends on it; a wrong guess costs a forward, not an error.
    pub fn partition_keys(mut self, extractor: KeyExtractor) -> Self {
        self.partition_keys = extractor;
        self
    }

    /// The client. Fetches nothing yet: the map is read on the first call.
    pub fn build(self) -> Result<Client> {
        let seed = parse_base(&self.base)?;
        let authorization = self
            .token
            .map(|t| {
                reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| Error::Config("the token is not a valid header value".into()))
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                seed,
                authorization,
                retry: self.retry,
                map_max_age: self.map_max_age,
                partition_keys: self.partition_keys,
                routes: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

/// An async client of floe's HTTP API. Cheap to clone; clones share the
/// connection pool and the cached shard map.
///
/// Every call is routed by the map (`GET /api/v1/cluster`): a keyed call
/// goes to the node that owns the key's shard, any other to any node. A
/// call that failed retryably is sent again with capped exponential
/// backoff until the policy's deadline; a stale-routing answer first
/// refreshes the map. Writes always carry an idempotency key, so a write
/// sent twice is applied once.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    seed: Url,
    authorization: Option<reqwest::header::HeaderValue>,
    retry: RetryPolicy,
    map_max_age: Duration,
    partition_keys: KeyExtractor,
    routes: RwLock<Option<Cached>>,
    /// One map fetch at a time; the others wait for its result.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct Cached {
    routes: Arc<Routes>,
    fetched: Instant,
}

/// One HTTP exchange, as the retry loop sends it (again).
struct Call<'a> {
    method: Method,
    path: Vec<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Option<String>,
    /// Where it goes.
    target: Target<'a>,
    /// Sending it twice cannot apply it twice.
    repeatable: bool,
    idempotency_key: Option<&'a str>,
}

enum Target<'a> {
    Any,
    Entity {
        key: &'a EntityKey,
        partition_key: Option<&'a str>,
        data: Option<&'a Value>,
    },
}

impl Client {
    /// Settings for a client of the node (or any node of the cluster) at
    /// `base`, `http://host:port`.
    pub fn builder(base: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base.into(),
            token: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            map_max_age: Duration::from_secs(30),
            partition_keys: KeyExtractor::tenant(),
        }
    }

    /// Creates or replaces an entity.
    pub async fn put(&self, key: EntityKey, data: Value) -> Result<WriteAck> {
        self.write(Write::put(key, data)).await
    }

    /// Creates an entity; [`Error::Conflict`] `already_exists` if it exists.
    pub async fn create(&self, key: EntityKey, data: Value) -> Result<WriteAck> {
        self.write(Write::create(key, data)).await
    }

    /// Applies a JSON merge patch to an entity.
    pub async fn update(&self, key: EntityKey, patch: Value) -> Result<WriteAck> {
        self.write(Write::update(key, patch)).await
    }

    /// Deletes an entity; [`Error::NotFound`] if there is none.
    pub async fn delete(&self, key: EntityKey) -> Result<WriteAck> {
        self.write(Write::delete(key)).await
    }

    /// One write with its options; returns once it is durable and applied.
    pub async fn write(&self, write: Write) -> Result<WriteAck> {
        let idempotency_key = write
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (method, data) = match &write.op {
            WriteOp::Put(data) => (Method::PUT, Some(data)),
            WriteOp::Create(data) => (Method::POST, Some(data)),
            WriteOp::Update(patch) => (Method::PATCH, Some(patch)),
            WriteOp::Delete => (Method::DELETE, None),
        };
        let mut query = Vec::new();
        if let Some(v) = write.expected_version {
            query.push(("expected_version", v.to_string()));
        }
        if let Some(pk) = &write.partition_key {
            query.push(("partition_key", pk.clone()));
        }
        let key = &write.key;
        let call = Call {
            method,
            path: entity_path(key),
            query,
            body: data.map(Value::to_string),
            target: Target::Entity {
                key,
                partition_key: write.partition_key.as_deref(),
                // A patch is not the entity's data: keys read from data
                // fields cannot be taken from it.
                data: match &write.op {
                    WriteOp::Update(_) => None,
                    _ => data,
                },
            },
            repeatable: true,
            idempotency_key: Some(&idempotency_key),
        };
        let answer = self.execute(&call).await?;
        let ack: WriteAck = answer.decode()?;
        // The owner acknowledged on another shard than the map predicts: the
        // topology has changed since the map was read.
        if answer.shard.is_some_and(|shard| shard != ack.shard) {
            self.invalidate(&answer.routes);
        }
        Ok(ack)
    }

    /// An entity, or `None` if it does not exist.
    pub async fn get(&self, key: &EntityKey) -> Result<Option<Entity>> {
        self.get_inner(key, None).await
    }

    /// [`Client::get`] for entities whose partition key comes from their data.
    pub async fn get_routed(&self, key: &EntityKey, partition_key: &str) -> Result<Option<Entity>> {
        self.get_inner(key, Some(partition_key)).await
    }

    async fn get_inner(
        &self,
        key: &EntityKey,
        partition_key: Option<&str>,
    ) -> Result<Option<Entity>> {
        let call = Call {
            method: Method::GET,
            path: entity_path(key),
            query: partition_key
                .map(|pk| vec![("partition_key", pk.to_string())])
                .unwrap_or_default(),
            body: None,
            target: Target::Entity {
                key,
                partition_key,
                data: None,
            },
            repeatable: true,
            idempotency_key: None,
        };
        match self.execute(&call).await {
            Ok(answer) => answer.decode().map(Some),
            Err(Error::NotFound { code, .. }) if code == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Live entities of a namespace and type in id order, after `after`, at
    /// most `limit` (the server's default page when `None`).
    pub async fn list(
        &self,
        namespace: &str,
        entity_type: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Page> {
        let mut query = Vec::new();
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let call = Call {
            query,
            ..Call::read(vec!["api", "v1", "entities", namespace, entity_type])
        };
        self.fetch(&call).await
    }

    /// One read-only SQL statement over every shard.
    pub async fn sql(&self, sql: &str) -> Result<SqlResult> {
        self.sql_with(&SqlQuery::new(sql)).await
    }

    /// [`Client::sql`] with options (fresh reads, time travel, a timeout).
    pub async fn sql_with(&self, query: &SqlQuery) -> Result<SqlResult> {
        let call = Call {
            method: Method::POST,
            body: Some(json_body(query)),
            ..Call::read(vec!["api", "v1", "sql"])
        };
        self.fetch(&call).await
    }

    /// Every migration the node knows and the running one.
    pub async fn migrations(&self) -> Result<MigrationList> {
        self.fetch(&Call::read(vec!["api", "v1", "migrations"]))
            .await
    }

    /// Plans a migration without starting it.
    pub async fn plan_migration(&self, kind: &MigrationKind) -> Result<MigrationPlan> {
        let call = Call {
            method: Method::POST,
            body: Some(json_body(kind)),
            ..Call::read(vec!["api", "v1", "migrations", "plan"])
        };
        self.fetch(&call).await
    }

    /// Plans and starts a migration; follow it with [`Client::migration`].
    /// [`Error::Conflict`] `already_migrating` while another runs. Starting
    /// is not idempotent: it is retried only when the request never left.
    pub async fn start_migration(&self, kind: &MigrationKind) -> Result<StartedMigration> {
        let call = Call {
            method: Method::POST,
            body: Some(json_body(kind)),
            repeatable: false,
            ..Call::read(vec!["api", "v1", "migrations"])
        };
        self.fetch(&call).await
    }

    /// A migration's record and live progress.
    pub async fn migration(&self, id: &str) -> Result<MigrationStatus> {
        self.fetch(&Call::read(vec!["api", "v1", "migrations", id]))
            .await
    }

    /// Asks the running migration `id` to stop (it rolls back unless it has
    /// cut over). A repeat changes nothing more, so it is retried; once the
    /// migration has ended, it answers [`Error::NotFound`].
    pub async fn cancel_migration(&self, id: &str) -> Result<()> {
        let call = Call {
            method: Method::POST,
            ..Call::read(vec!["api", "v1", "migrations", id, "cancel"])
        };
        self.fetch::<Value>(&call).await.map(|_| ())
    }

    /// The shard map, fetched now (and cached for the calls that follow);
    /// retried like any read, e.g. while the node is still recovering.
    pub async fn cluster_map(&self) -> Result<ClusterMap> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let error = match self.refresh(None).await {
                Ok(routes) => return Ok(routes.map().clone()),
                Err(e) => e,
            };
            match self
                .inner
                .retry
                .decide(&error, true, attempt, started.elapsed(), jitter())
            {
                Retry::No => return Err(error),
                Retry::After { delay, .. } => tokio::time::sleep(delay).await,
            }
            attempt += 1;
        }
    }

    /// The cached shard map, without a call; `None` before the first call.
    pub fn cached_map(&self) -> Option<ClusterMap> {
        self.cached().map(|c| c.routes.map().clone())
    }

    /// The shard the cached map puts an entity on (`data` for partition
    /// keys read from entity data); `None` without a map or a key.
    pub fn shard_of(&self, key: &EntityKey, data: Option<&Value>) -> Option<u32> {
        let cached = self.cached()?;
        cached
            .routes
            .shard_of(&self.inner.partition_keys, key, None, data)
    }

    async fn fetch<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<T> {
        self.execute(call).await?.decode()
    }

    /// Sends `call` until it succeeds or the policy gives up.
    async fn execute(&self, call: &Call<'_>) -> Result<Answer> {
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut stale: Option<Arc<Routes>> = None;
        loop {
            let outcome = match self.routes(stale.take()).await {
                Ok(routes) => {
                    let shard = match &call.target {
                        Target::Any => None,
                        Target::Entity {
                            key,
                            partition_key,
                            data,
                        } => {
                            routes.shard_of(&self.inner.partition_keys, key, *partition_key, *data)
                        }
                    };
                    let url = url_for(routes.node_for(shard), &call.path, &call.query);
                    match self.send(&url, call).await {
                        Ok(body) => {
                            return Ok(Answer {
                                routes,
                                shard,
                                url,
                                body,
                            });
                        }
                        Err(e) => (e, Some(routes)),
                    }
                }
                Err(e) => (e, None),
            };
            let (error, routes) = outcome;
            match self.inner.retry.decide(
                &error,
                call.repeatable,
                attempt,
                started.elapsed(),
                jitter(),
            ) {
                Retry::No => return Err(error),
                Retry::After { delay, refresh_map } => {
                    tracing::debug!(%error, attempt, delay_ms = delay.as_millis() as u64, "retrying a floe call");
                    // A node that does not answer may have lost its shards
                    // too: read the map again after transport failures.
                    if refresh_map || !matches!(error, Error::Unavailable { .. }) {
                        stale = routes;
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt of `call` at `url`.
    async fn send(&self, url: &Url, call: &Call<'_>) -> Result<Vec<u8>> {
        let mut request = self.inner.http.request(call.method.clone(), url.clone());
        if let Some(auth) = &self.inner.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        if let Some(key) = call.idempotency_key {
            // A key is UTF-8 text, which the server reads back as such; a
            // `&str` header would take visible ASCII only. What no header
            // can carry (control characters) the server would refuse too.
            let value = reqwest::header::HeaderValue::from_bytes(key.as_bytes()).map_err(|_| {
                Error::BadRequest {
                    status: 400,
                    code: "invalid_idempotency_key".into(),
                    message: format!("idempotency key {key:?}: it contains a control character"),
                }
            })?;
            request = request.header("idempotency-key", value);
        }
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::from_transport(url.as_str(), &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::from_transport(url.as_str(), &e))?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(Error::from_answer(status, &body))
        }
    }

    fn cached(&self) -> Option<Cached> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The routes to send by: the cached ones while fresh and not `stale`,
    /// else a newly fetched map.
    async fn routes(&self, stale: Option<Arc<Routes>>) -> Result<Arc<Routes>> {
        if let Some(cached) = self.cached()
            && cached.fetched.elapsed() < self.inner.map_max_age
            && !stale
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &cached.routes))
        {
            return Ok(cached.routes);
        }
        self.refresh(stale).await
    }

    /// Fetches the map, unless another task replaced `stale` meanwhile.
    async fn refresh(&self, stale: Option<Arc<Routes>>) -> Result<Arc<Routes>> {
        let _one = self.inner.refresh.lock().await;
        if let (Some(stale), Some(cached)) = (&stale, self.cached())
            && !Arc::ptr_eq(stale, &cached.routes)
            && cached.fetched.elapsed() < self.inner.map_max_age
        {
            return Ok(cached.routes);
        }
        // The seed first; if it does not answer, any other live node of the
        // last map (a client of a cluster outlives the node it started at).
        let mut sources = vec![self.inner.seed.clone()];
        if let Some(cached) = self.cached() {
            sources.extend(cached.routes.other_nodes(&self.inner.seed));
        }
        let mut last = None;
        for source in &sources {
            match self.fetch_map(source).await {
                Ok(routes) => return Ok(routes),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no node to read the cluster map from".into())))
    }

    /// Reads the map from the node at `base` and caches it.
    async fn fetch_map(&self, base: &Url) -> Result<Arc<Routes>> {
        let url = url_for(base, &["api", "v1", "cluster"], &[]);
        let mut request = self.inner.http.get(url.clone());
        if let Some(auth) = &self.inner.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::from_transport(url.as_str(), &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::from_transport(url.as_str(), &e))?;
        if status != StatusCode::OK {
            return Err(Error::from_answer(status, &body));
        }
        let map: ClusterMap = serde_json::from_slice(&body).map_err(|e| Error::Decode {
            url: url.to_string(),
            message: format!("the cluster map: {e}"),
        })?;
        tracing::debug!(
            routing_epoch = map.routing_epoch,
            topology_version = map.topology.version,
            "fetched the floe cluster map"
        );
        let routes = Arc::new(Routes::new(map, &self.inner.seed)?);
        *self.inner.routes.write().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            routes: routes.clone(),
            fetched: Instant::now(),
        });
        Ok(routes)
    }

    /// Forgets `routes` if they are still the cached ones: the next call
    /// fetches the map.
    fn invalidate(&self, routes: &Arc<Routes>) {
        let mut cached = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        if cached
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.routes, routes))
        {
            *cached = None;
        }
    }
}

impl<'a> Call<'a> {
    /// A GET to any node that may be repeated.
    fn read(path: Vec<&'a str>) -> Call<'a> {
        Call {
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            target: Target::Any,
            repeatable: true,
            idempotency_key: None,
        }
    }
}

fn entity_path(key: &EntityKey) -> Vec<&str> {
    vec![
        "api",
        "v1",
        "entities",
        &key.namespace,
        &key.entity_type,
        &key.id,
    ]
}

/// `base` with `path` appended segment by segment (each percent-encoded,
/// so ids with `/` or spaces stay one segment) and `query`.
fn url_for(base: &Url, path: &[&str], query: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    url
}

fn json_body<T: serde::Serialize>(value: &T) -> String {
    // Plain structs and enums of strings and numbers always serialize.
    serde_json::to_string(value).expect("a request body serializes to JSON")
}

/// A successful answer and how the call was routed.
struct Answer {
    routes: Arc<Routes>,
    /// The shard the routes predicted for the call's key.
    shard: Option<u32>,
    url: Url,
    body: Vec<u8>,
}

impl Answer {
    fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            url: self.url.to_string(),
            message: e.to_string(),
        })
    }
}

/// A fraction in `[0, 1)` from the random bits of a UUID v4.
fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped_one_by_one() {
        let base = parse_base("http://127.0.0.1:8080").unwrap();
        let key = EntityKey::new("acme co", "Order", "a/b?c");
        let url = url_for(
            &base,
            &entity_path(&key),
            &[("partition_key", "x&y".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/api/v1/entities/acme%20co/Order/a%2Fb%3Fc?partition_key=x%26y"
        );
        let prefixed = parse_base("http://proxy:1/floe/").unwrap();
        assert_eq!(
            url_for(&prefixed, &["api", "v1", "cluster"], &[]).as_str(),
            "http://proxy:1/floe/api/v1/cluster"
        );
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
