//! The REST catalog routes (Iceberg REST catalog OpenAPI spec, `/v1`, no
//! prefix) and its error model: `{"error": {"message", "type", "code"}}`.
//!
//! A multi-level namespace travels in one path segment, its parts joined
//! by the unit separator (0x1F), as the spec says. HEAD requests are
//! answered by the GET routes without a body (axum does that), which is
//! what "exists" checks need.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use iceberg::{Catalog, NamespaceIdent, TableIdent};
use iceberg_catalog_rest::{
    CommitTableRequest, CommitTableResponse, CreateNamespaceRequest, CreateTableRequest,
    ErrorModel, ListNamespaceResponse, ListTablesResponse, LoadTableResult, NamespaceResponse,
};
use serde::{Deserialize, Serialize};

use crate::server::CatalogServer;

/// The namespace part separator in URLs.
const SEPARATOR: char = '\u{1f}';

pub(crate) fn router(server: CatalogServer) -> Router {
    Router::new()
        .route("/v1/config", get(config))
        .route(
            "/v1/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/v1/namespaces/{namespace}",
            get(load_namespace).delete(drop_namespace),
        )
        .route(
            "/v1/namespaces/{namespace}/tables",
            get(list_tables).post(create_table),
        )
        .route(
            "/v1/namespaces/{namespace}/tables/{table}",
            get(load_table).post(commit_table).delete(drop_table),
        )
        .fallback(unknown_route)
        .with_state(server)
}

/// An error as the REST spec returns it.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "BadRequestException",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, message: impl ToString) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind,
            message: message.to_string(),
        }
    }

    pub(crate) fn already_exists(message: impl ToString) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            kind: "AlreadyExistsException",
            message: message.to_string(),
        }
    }

    /// `409`: a requirement failed or another commit won; nothing changed.
    pub(crate) fn commit_failed(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            kind: "CommitFailedException",
            message: message.into(),
        }
    }

    /// `503`: storage or the catalog database failed; nothing changed, the
    /// client may retry.
    pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "ServiceUnavailableException",
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "InternalServerError",
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorModel,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "REST catalog request failed");
        }
        let body = ErrorBody {
            error: ErrorModel {
                message: self.message,
                r#type: self.kind.to_string(),
                code: self.status.as_u16(),
                stack: None,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn namespace(segment: &str) -> ApiResult<NamespaceIdent> {
    NamespaceIdent::from_strs(segment.split(SEPARATOR))
        .map_err(|e| ApiError::bad_request(format!("namespace {segment:?}: {e}")))
}

fn table(ns: &str, name: &str) -> ApiResult<TableIdent> {
    Ok(TableIdent::new(namespace(ns)?, name.to_string()))
}

/// `CatalogConfig`: no overrides; the warehouse as a default, which the
/// client's own `warehouse` setting overrides.
#[derive(Serialize)]
struct ConfigResponse {
    defaults: HashMap<String, String>,
    overrides: HashMap<String, String>,
}

async fn config(State(server): State<CatalogServer>) -> Json<ConfigResponse> {
    Json(ConfigResponse {
        defaults: HashMap::from([("warehouse".to_string(), server.warehouse().to_string())]),
        overrides: HashMap::new(),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    parent: Option<String>,
}

async fn list_namespaces(
    State(server): State<CatalogServer>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<ListNamespaceResponse>> {
    let parent = query.parent.as_deref().map(namespace).transpose()?;
    let namespaces = server.list_namespaces(parent.as_ref()).await?;
    Ok(Json(ListNamespaceResponse {
        namespaces,
        next_page_token: None,
    }))
}

async fn create_namespace(
    State(server): State<CatalogServer>,
    Json(request): Json<CreateNamespaceRequest>,
) -> ApiResult<Json<NamespaceResponse>> {
    let created = server
        .catalog()
        .create_namespace(&request.namespace, request.properties)
        .await?;
    Ok(Json(NamespaceResponse::from(&created)))
}

async fn load_namespace(
    State(server): State<CatalogServer>,
    Path(ns): Path<String>,
) -> ApiResult<Json<NamespaceResponse>> {
    let found = server.catalog().get_namespace(&namespace(&ns)?).await?;
    Ok(Json(NamespaceResponse::from(&found)))
}

async fn drop_namespace(
    State(server): State<CatalogServer>,
    Path(ns): Path<String>,
) -> ApiResult<StatusCode> {
    server.catalog().drop_namespace(&namespace(&ns)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tables(
    State(server): State<CatalogServer>,
    Path(ns): Path<String>,
) -> ApiResult<Json<ListTablesResponse>> {
    let identifiers = server.catalog().list_tables(&namespace(&ns)?).await?;
    Ok(Json(ListTablesResponse {
        identifiers,
        next_page_token: None,
    }))
}

async fn create_table(
    State(server): State<CatalogServer>,
    Path(ns): Path<String>,
    Json(request): Json<CreateTableRequest>,
) -> ApiResult<Json<LoadTableResult>> {
    Ok(Json(server.create_table(&namespace(&ns)?, request).await?))
}

async fn load_table(
    State(server): State<CatalogServer>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<LoadTableResult>> {
    Ok(Json(server.load_table(&table(&ns, &name)?).await?))
}

async fn commit_table(
    State(server): State<CatalogServer>,
    Path((ns, name)): Path<(String, String)>,
    Json(request): Json<CommitTableRequest>,
) -> ApiResult<Json<CommitTableResponse>> {
    Ok(Json(server.commit(&table(&ns, &name)?, request).await?))
}

async fn drop_table(
    State(server): State<CatalogServer>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    server.catalog().drop_table(&table(&ns, &name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(
        "NotFoundException",
        format!("{uri}: not an endpoint of this catalog"),
    )
}
