//! `GET /api/v1/namespaces/{namespace}/export` (admin, audited): what
//! `floe export` writes, from a running server, as NDJSON streamed page by
//! page (docs/operations.md, "Moving a tenant to another deployment").

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::stream;

use super::AppState;
use super::errors::ApiError;
use super::routes::{guarded, policy};
use crate::floe::ExportPage;

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/namespaces/{namespace}/export",
        guarded(state, policy::admin("namespace.export"), get(export)),
    )
}

/// Where the streamed body stands.
enum Next {
    /// This page is to be sent.
    Page(ExportPage),
    /// Reading the next page failed: end the body with an error.
    Failed(String),
    Done,
}

async fn export(
    State(state): State<Arc<AppState>>,
    namespace: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(namespace) =
        namespace.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    let floe = state.floe()?.clone();
    // The first page is read before the answer starts, so a bad namespace
    // or a closed floe is a status, not a cut-off body.
    let first = floe.export_page(&namespace, None).await?;
    let pages = stream::unfold(Next::Page(first), move |next| {
        let (floe, namespace) = (floe.clone(), namespace.clone());
        async move {
            match next {
                Next::Page(page) => {
                    let after = match &page.next {
                        None => Next::Done,
                        Some(key) => match floe.export_page(&namespace, Some(key)).await {
                            Ok(page) => Next::Page(page),
                            Err(e) => Next::Failed(e.to_string()),
                        },
                    };
                    Some((Ok(page.lines), after))
                }
                // An error in the body cuts the connection: the client sees
                // a broken transfer, never a short export that looks whole.
                Next::Failed(message) => Some((Err(std::io::Error::other(message)), Next::Done)),
                Next::Done => None,
            }
        }
    });
    let mut response = Body::from_stream(pages).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
