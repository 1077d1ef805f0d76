//! Where DataFusion reads the lake's Parquet files from: the local
//! filesystem for a `file://` warehouse, an S3 object store built from the
//! `[lake]` properties (the same `s3.*` keys Iceberg's storage reads) for an
//! `s3://` one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use floe_emitter::sink::LakeLocation;
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::error::{Error, Result};
use crate::file_cache::{CacheHandle, CachedStore};

/// Attempts of one object-store request (the first plus retries) before a
/// query fails with a retryable error: an unreachable store fails a query
/// within seconds rather than the client's default of minutes.
const MAX_RETRIES: usize = 3;
/// Bound on one request's retries.
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
/// Connecting to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A data file as DataFusion addresses it: the store and the path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileAddress {
    pub(crate) store: ObjectStoreUrl,
    pub(crate) path: String,
}

/// Splits an Iceberg data file location into store and path:
/// `file:///d/x.parquet` -> (`file://`, `/d/x.parquet`),
/// `s3://bucket/k/x.parquet` -> (`s3://bucket`, `k/x.parquet`).
pub(crate) fn address(location: &str) -> Result<FileAddress> {
    if let Some(path) = location.strip_prefix("file://") {
        return Ok(FileAddress {
            store: ObjectStoreUrl::local_filesystem(),
            path: path.to_string(),
        });
    }
    let rest = ["s3://", "s3a://", "s3n://"]
        .iter()
        .find_map(|scheme| location.strip_prefix(scheme));
    if let Some(rest) = rest
        && let Some((bucket, key)) = rest.split_once('/')
        && !bucket.is_empty()
        && !key.is_empty()
    {
        return Ok(FileAddress {
            store: s3_url(bucket)?,
            path: key.to_string(),
        });
    }
    Err(Error::Unsupported(format!(
        "data file {location}: SQL reads file:// and s3://bucket/key locations"
    )))
}

fn s3_url(bucket: &str) -> Result<ObjectStoreUrl> {
    ObjectStoreUrl::parse(format!("s3://{bucket}"))
        .map_err(|e| Error::ObjectStore(format!("bucket {bucket:?} is not a valid URL host: {e}")))
}

/// Registers the warehouse's object store in `runtime` (nothing to do for
/// `file://`, which DataFusion always has), behind a cache of the data
/// files' bytes of at most `cache_bytes` (0: none). Returns the cache.
pub(crate) fn register(
    runtime: &RuntimeEnv,
    location: &LakeLocation,
    cache_bytes: u64,
) -> Result<Option<CacheHandle>> {
    let warehouse = &location.warehouse;
    let Some(rest) = warehouse.strip_prefix("s3://") else {
        return Ok(None);
    };
    let bucket = rest.split('/').next().unwrap_or_default();
    let store = Arc::new(s3_store(bucket, &location.properties)?);
    let url = s3_url(bucket)?;
    if cache_bytes == 0 {
        runtime.register_object_store(url.as_ref(), store);
        return Ok(None);
    }
    let cached = CachedStore::new(store, cache_bytes);
    let handle = cached.handle();
    runtime.register_object_store(url.as_ref(), Arc::new(cached));
    Ok(Some(handle))
}

/// An S3 client for `bucket` from Iceberg's `s3.*` properties.
fn s3_store(
    bucket: &str,
    properties: &HashMap<String, String>,
) -> Result<object_store::aws::AmazonS3> {
    let get = |key: &str| {
        properties
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let flag = |key: &str| -> Result<Option<bool>> {
        get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Error::ObjectStore(format!(
                    "lake property {key} = {v:?}: expected true or false"
                ))),
            })
            .transpose()
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        // Iceberg's storage (OpenDAL) defaults to virtual-hosted addressing;
        // so does this, unless `s3.path-style-access` says otherwise.
        .with_virtual_hosted_style_request(!flag("s3.path-style-access")?.unwrap_or(false))
        .with_region(
            get("client.region")
                .or_else(|| get("s3.region"))
                .unwrap_or("us-east-1"),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
        })
        .with_client_options(ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT));
    if let Some(endpoint) = get("s3.endpoint") {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(key) = get("s3.access-key-id") {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = get("s3.secret-access-key") {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = get("s3.session-token") {
        builder = builder.with_token(token);
    }
    builder
        .build()
        .map_err(|e| Error::ObjectStore(format!("configuring S3 for bucket {bucket}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_s3_locations_split_into_store_and_path() {
        let local = address("file:///data/w/floe/events/data/a.parquet").unwrap();
        assert_eq!(local.store, ObjectStoreUrl::local_filesystem());
        assert_eq!(local.path, "/data/w/floe/events/data/a.parquet");
        let s3 = address("s3://lake/warehouse/floe/events/data/a.parquet").unwrap();
        assert_eq!(s3.store.as_str(), "s3://lake/");
        assert_eq!(s3.path, "warehouse/floe/events/data/a.parquet");
        assert_eq!(address("s3a://b/k").unwrap().store.as_str(), "s3://b/");
        for bad in ["gs://b/k", "s3://", "s3://bucket", "s3:///k", "relative/x"] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn s3_properties_configure_the_store_and_bad_flags_are_refused() {
        let props = HashMap::from([
            (
                "s3.endpoint".to_string(),
                "http://127.0.0.1:9000".to_string(),
            ),
            ("s3.access-key-id".to_string(), "ak".to_string()),
            ("s3.secret-access-key".to_string(), "sk".to_string()),
            ("s3.path-style-access".to_string(), "true".to_string()),
        ]);
        let store = s3_store("lake", &props).unwrap();
        assert!(store.to_string().contains("lake"), "{store}");
        let mut bad = props.clone();
        bad.insert("s3.path-style-access".into(), "yes".into());
        let err = s3_store("lake", &bad).unwrap_err().to_string();
        assert!(err.contains("s3.path-style-access"), "{err}");
    }
}
