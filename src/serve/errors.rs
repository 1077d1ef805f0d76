//! The one error shape of the HTTP API:
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;

/// An error as the API returns it. `code` is stable (clients match on it);
/// `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Cluster mode, `not_owner`: the node that owns the shard and its
    /// advertised address, when known (clients retry there).
    pub(crate) owner: Option<(String, Option<String>)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            owner: None,
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds serve.max_body_bytes ({limit} bytes)"),
        )
    }

    pub(crate) fn not_ready(phase: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("floe is {phase}; retry when /readyz answers 200"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        // The retryable marker: a 503 is a service that did not answer or
        // a state that passes; the same request may succeed later.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            error["retryable"] = json!(true);
        }
        if let Some((node_id, addr)) = self.owner {
            error["owner"] = json!({ "node_id": node_id, "addr": addr });
        }
        let body = json!({ "error": error });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            Error::Engine(e) => engine_status(e),
            Error::Lake(e) if e.is_retryable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "lake_unavailable")
            }
            Error::Lake(e) => lake_status(e),
            Error::Locked { .. } | Error::ConfigFile { .. } | Error::Config(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "configuration")
            }
            // The data directory lost its topology: an operator's problem to
            // resolve (docs/operations.md), never a silent default.
            Error::TopologyMissing { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "topology_missing")
            }
            // What this deployment does not do: not the caller's fault, not
            // a failure either, and retrying will not help.
            Error::LakeDisabled { .. } => (StatusCode::CONFLICT, "lake_disabled"),
            Error::NoLake { .. } => (StatusCode::NOT_FOUND, "no_lake"),
            Error::SinkNotRunning => (StatusCode::CONFLICT, "sink_not_running"),
            Error::UnknownEntity { .. } => (StatusCode::NOT_FOUND, "unknown_entity"),
            Error::EraseNotLanded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "sink_behind"),
            Error::SinkNotStarted => (StatusCode::SERVICE_UNAVAILABLE, "sink_starting"),
            Error::TaskFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
            Error::Snapshot(_) => (StatusCode::INTERNAL_SERVER_ERROR, "snapshot"),
            Error::CorruptLog(_) | Error::LogBehindLake { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_log")
            }
            Error::InvalidWriteItem(_) => (StatusCode::BAD_REQUEST, "invalid_item"),
            Error::Migration(e) => migration_status(e),
            Error::Query(e) => query_status(e),
            Error::Cluster(e) if e.is_retryable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable")
            }
            Error::ClusterUnsupported { .. } => (StatusCode::CONFLICT, "cluster_unsupported"),
            Error::Cluster(floe_cluster::Error::ReshardRunning { .. }) => {
                (StatusCode::CONFLICT, "already_migrating")
            }
            Error::Cluster(floe_cluster::Error::TopologyMoved { .. }) => {
                (StatusCode::CONFLICT, "topology_changed")
            }
            Error::Cluster(floe_cluster::Error::ReshardFinished { .. }) => {
                (StatusCode::CONFLICT, "migration_finished")
            }
            Error::ReshardAborted { .. } => (StatusCode::CONFLICT, "migration_aborted"),
            Error::Cluster(floe_cluster::Error::UnknownNode { .. }) => {
                (StatusCode::NOT_FOUND, "unknown_node")
            }
            Error::Cluster(floe_cluster::Error::LastLiveNode { .. }) => {
                (StatusCode::CONFLICT, "last_live_node")
            }
            Error::Cluster(_) | Error::ClusterNeedsKafka { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "configuration")
            }
            Error::WarmShardMissing { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() && code != "not_owner" {
            tracing::warn!(code, error = %message, "request failed");
        }
        let mut api = ApiError::new(status, code, message);
        if let Some(floe_engine::Error::NotOwner { refusal, .. }) = e.as_engine()
            && let Some(owner) = &refusal.owner
        {
            api.owner = Some((owner.clone(), refusal.owner_addr.clone()));
        }
        api
    }
}

/// The lake's errors that are not plain I/O: the replay invariants.
fn lake_status(e: &floe_emitter::Error) -> (StatusCode, &'static str) {
    use floe_emitter::Error as L;
    match e {
        // Acknowledged events that cannot be recovered: the one failure an
        // operator must not mistake for a setting.
        L::RetentionAboveCommitted { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "data_loss"),
        L::HistoryNeedsLake { .. } => (StatusCode::CONFLICT, "lake_disabled"),
        L::Task(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "lake_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "lake_error"),
    }
}

fn query_status(e: &floe_query::Error) -> (StatusCode, &'static str) {
    use floe_query::Error as Q;
    match e {
        Q::ReadOnly { .. } => (StatusCode::FORBIDDEN, "read_only"),
        Q::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "query_timeout"),
        // Planning errors: unknown tables or columns, syntax, types.
        Q::Sql(_) => (StatusCode::BAD_REQUEST, "bad_sql"),
        Q::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
        Q::InvalidFilter(_) => (StatusCode::BAD_REQUEST, "invalid_filter"),
        Q::Unsupported(_) => (StatusCode::BAD_REQUEST, "unsupported"),
        Q::NoSuchSnapshot(_) => (StatusCode::NOT_FOUND, "no_such_snapshot"),
        Q::Pipeline(e) => engine_status(e),
        Q::Lake(e) if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "lake_unavailable"),
        Q::LakeUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "lake_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "query_error"),
    }
}

fn migration_status(e: &floe_migration::Error) -> (StatusCode, &'static str) {
    use floe_migration::Error as M;
    match e {
        M::AlreadyMigrating { .. } => (StatusCode::CONFLICT, "already_migrating"),
        M::InvalidPlan(_) => (StatusCode::BAD_REQUEST, "invalid_plan"),
        M::UnknownShard { .. } => (StatusCode::NOT_FOUND, "unknown_shard"),
        M::MergeWithItself { .. } => (StatusCode::BAD_REQUEST, "merge_with_itself"),
        M::InvalidThreshold { .. } => (StatusCode::BAD_REQUEST, "invalid_threshold"),
        M::LastShard { .. } => (StatusCode::CONFLICT, "last_shard"),
        M::RangeOverlap(_) => (StatusCode::BAD_REQUEST, "range_overlap"),
        M::RangeGap(_) => (StatusCode::BAD_REQUEST, "range_gap"),
        M::RangeBound(_) => (StatusCode::BAD_REQUEST, "range_bound"),
        M::NotFound(_) => (StatusCode::NOT_FOUND, "migration_not_found"),
        M::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "migration_timeout"),
        M::NotLanded { .. } => (StatusCode::GATEWAY_TIMEOUT, "not_landed"),
        M::Cancelled { .. } => (StatusCode::CONFLICT, "migration_cancelled"),
        M::VerifyMismatch { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "verify_mismatch"),
        M::Engine(e) => engine_status(e),
        M::Failed { .. } => (StatusCode::CONFLICT, "migration_failed"),
        M::TaskFailed { .. } | M::NoOutcome(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        M::InvalidConfig(_) => (StatusCode::INTERNAL_SERVER_ERROR, "configuration"),
        M::Lake(e) => lake_status(e),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "migration_error"),
    }
}

fn engine_status(e: &floe_engine::Error) -> (StatusCode, &'static str) {
    use floe_engine::Error as E;
    match e {
        E::MissingPartitionKey { .. } => (StatusCode::BAD_REQUEST, "missing_partition_key"),
        // The request is well-formed but its time has no shard (yet).
        E::Unroutable { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unroutable"),
        // The entity exists (in the lake) but its period takes no writes.
        E::PeriodArchived { .. } => (StatusCode::CONFLICT, "period_archived"),
        E::InvalidEntity { .. } => (StatusCode::BAD_REQUEST, "invalid_entity"),
        E::InvalidIdempotencyKey { .. } => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
        E::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        E::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        E::JsonTooDeep { .. } => (StatusCode::BAD_REQUEST, "json_too_deep"),
        E::DuplicateJsonKey { .. } => (StatusCode::BAD_REQUEST, "duplicate_json_key"),
        E::PartitionKeyImmutable { .. } => (StatusCode::CONFLICT, "partition_key_immutable"),
        // As Stripe answers it: the request is well-formed, but the key
        // belongs to another request.
        E::IdempotencyKeyReused { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
        }
        E::UnknownShard { .. } => (StatusCode::NOT_FOUND, "unknown_shard"),
        E::VersionConflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
        E::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
        E::AlreadyRestored { .. } => (StatusCode::CONFLICT, "already_restored"),
        E::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        E::StaleRouting { .. } => (StatusCode::SERVICE_UNAVAILABLE, "stale_routing"),
        // Cluster mode: the shard is owned elsewhere or changing hands; the
        // message names the owner when known. Retry (here, or at the owner).
        E::NotOwner { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_owner"),
        E::Pipeline {
            retryable: true, ..
        } => (StatusCode::SERVICE_UNAVAILABLE, "pipeline_unavailable"),
        E::Pipeline { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "pipeline_error"),
        E::Closed(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        E::InvalidTopology(_) | E::InvalidConfig(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "configuration")
        }
        E::Codec(_) => (StatusCode::INTERNAL_SERVER_ERROR, "codec"),
        E::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::{EntityKeyDisplay, Error as E};

    fn status(e: E) -> (u16, &'static str) {
        let api = ApiError::from(Error::Engine(e));
        (api.status.as_u16(), api.code)
    }

    #[test]
    fn engine_errors_map_to_stable_codes() {
        let entity = || EntityKeyDisplay("t/T/1".into());
        assert_eq!(status(E::NotFound { entity: entity() }), (404, "not_found"));
        assert_eq!(
            status(E::VersionConflict {
                entity: entity(),
                expected: 1,
                actual: 2
            }),
            (409, "version_conflict")
        );
        assert_eq!(
            status(E::PayloadTooLarge {
                entity: entity(),
                size: 9,
                limit: 1
            }),
            (413, "payload_too_large")
        );
        assert_eq!(
            status(E::UnknownShard {
                shard: 9,
                shard_count: 2
            }),
            (404, "unknown_shard")
        );
        assert_eq!(status(E::Closed("x".into())), (503, "shutting_down"));
        assert_eq!(
            status(E::JsonTooDeep {
                entity: entity(),
                what: "entity data",
                limit: 64
            }),
            (400, "json_too_deep")
        );
        assert_eq!(
            status(E::DuplicateJsonKey {
                entity: entity(),
                what: "entity data",
                key: "a".into()
            }),
            (400, "duplicate_json_key")
        );
        assert_eq!(
            status(E::PartitionKeyImmutable {
                entity: entity(),
                attempted: "b".into(),
                reason: "r".into()
            }),
            (409, "partition_key_immutable")
        );
        assert_eq!(
            status(E::IdempotencyKeyReused {
                key: "k".into(),
                original: "t/T/1 created at version 1".into()
            }),
            (422, "idempotency_key_reused")
        );
        assert_eq!(
            status(E::PeriodArchived {
                partition_key: "team:2024-01-02".into(),
                period: "2024-01".into(),
                state: floe_engine::PeriodState::Archived,
            }),
            (409, "period_archived")
        );
        assert_eq!(
            status(E::InvalidIdempotencyKey {
                entity: entity(),
                reason: "it is empty".into()
            }),
            (400, "invalid_idempotency_key")
        );
        let pipeline = |retryable| E::Pipeline {
            backend: "file",
            message: "disk".into(),
            retryable,
            cause: None,
        };
        assert_eq!(status(pipeline(true)), (503, "pipeline_unavailable"));
        assert_eq!(status(pipeline(false)), (500, "pipeline_error"));
    }

    fn floe_status(e: Error) -> (u16, &'static str) {
        let api = ApiError::from(e);
        (api.status.as_u16(), api.code)
    }

    #[test]
    fn what_is_not_configuration_is_not_reported_as_configuration() {
        assert_eq!(
            floe_status(Error::Lake(floe_emitter::Error::RetentionAboveCommitted {
                partition: 1,
                low_watermark: 9,
                committed: 4
            })),
            (500, "data_loss")
        );
        assert_eq!(
            floe_status(Error::TaskFailed {
                task: "the lake replay task",
                message: "panicked".into()
            }),
            (500, "internal")
        );
        assert_eq!(
            floe_status(Error::LakeDisabled { needs: "SQL" }),
            (409, "lake_disabled")
        );
        assert_eq!(floe_status(Error::SinkNotStarted), (503, "sink_starting"));
        assert_eq!(
            floe_status(Error::SinkNotRunning),
            (409, "sink_not_running")
        );
        assert_eq!(
            floe_status(Error::Migration(floe_migration::Error::Failed {
                id: "m-1".into(),
                message: "cancelled".into(),
            })),
            (409, "migration_failed")
        );
        assert_eq!(
            floe_status(Error::Config("log.partitions must be at least 1".into())),
            (500, "configuration")
        );
    }
}
