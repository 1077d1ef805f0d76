//! The router: every route with its policy, the guard that enforces it
//! (authentication, role, audit, request counting) and the JSON fallbacks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::audit::{AuditEntry, rfc3339};
use super::auth::{self, Caller};
use super::errors::ApiError;
use super::{
    AppState, admin, batch, cluster, entities, export, health, metrics, migrations, sql, things,
};
use floe_config::Role;

/// What a route needs and whether its calls go to the audit log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Names the call in the audit log and in `floe_http_requests_total`.
    pub(super) action: &'static str,
    /// `None`: no token needed (liveness, readiness).
    pub(super) role: Option<Role>,
    /// Control-plane calls are audited; data-plane calls (entities, routing
    /// lookups) and scrapes are not, except when refused (401/403).
    pub(super) audited: bool,
}

/// Policies by capability.
pub(super) mod policy {
    use super::{Policy, Role};

    pub(in crate::serve) const fn public(action: &'static str) -> Policy {
        Policy {
            action,
            role: None,
            audited: false,
        }
    }

    /// Reads of entities and routing: viewer, not audited.
    pub(in crate::serve) const fn data_read(action: &'static str) -> Policy {
        Policy {
            action,
            role: Some(Role::Viewer),
            audited: false,
        }
    }

    /// Entity writes: operator, not audited (they are in the pipeline).
    pub(in crate::serve) const fn data_write(action: &'static str) -> Policy {
        Policy {
            action,
            role: Some(Role::Operator),
            audited: false,
        }
    }

    /// Control-plane reads (topology, stats, health): viewer, audited.
    pub(in crate::serve) const fn control_read(action: &'static str) -> Policy {
        Policy {
            action,
            role: Some(Role::Viewer),
            audited: true,
        }
    }

    /// SQL queries: viewer, audited.
    pub(in crate::serve) const fn sql(action: &'static str) -> Policy {
        control_read(action)
    }

    /// Control-plane changes (migrations, topology, fault injection):
    /// admin, audited.
    pub(in crate::serve) const fn admin(action: &'static str) -> Policy {
        Policy {
            action,
            role: Some(Role::Admin),
            audited: true,
        }
    }
}

/// Wraps a method router in the guard for `policy`.
pub(super) fn guarded(
    state: &Arc<AppState>,
    policy: Policy,
    route: MethodRouter<Arc<AppState>>,
) -> MethodRouter<Arc<AppState>> {
    route.route_layer(middleware::from_fn_with_state(
        (state.clone(), policy),
        guard,
    ))
}

/// The whole API.
pub(super) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(health::routes(&state))
        .merge(metrics::routes(&state))
        .merge(entities::routes(&state))
        .merge(batch::routes(&state))
        .merge(export::routes(&state))
        .merge(admin::routes(&state))
        .merge(cluster::routes(&state))
        .merge(migrations::routes(&state))
        .merge(sql::routes(&state))
        .merge(things::routes(&state))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(state)
}

async fn guard(
    State((state, policy)): State<(Arc<AppState>, Policy)>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let arrived = SystemTime::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let mut caller: Option<Caller> = None;
    let checked = match policy.role {
        None => Ok(()),
        Some(needed) => state.auth.authenticate(request.headers()).and_then(|c| {
            let allowed = auth::authorize(&c, needed, policy.action);
            caller = Some(c);
            allowed
        }),
    };
    let response = match checked {
        Ok(()) => {
            if let Some(c) = &caller {
                request.extensions_mut().insert(c.clone());
            }
            next.run(request).await
        }
        Err(refused) => refused.into_response(),
    };
    let status = response.status().as_u16();
    state.metrics.count_request(policy.action, status);
    tracing::debug!(
        action = policy.action,
        status,
        who = caller.as_ref().map(|c| c.name.as_str()),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    let denied = status == 401 || status == 403;
    if policy.audited || denied {
        state.audit.record(&AuditEntry {
            ts: rfc3339(arrived),
            who: caller.as_ref().map(|c| c.name.clone()),
            role: caller.as_ref().map(|c| c.role.as_str()),
            action: policy.action,
            method,
            path,
            remote,
            status,
            outcome: match status {
                401 | 403 => "denied",
                500.. => "error",
                400.. => "rejected",
                _ => "ok",
            },
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
    response
}
