//! `floe serve`: the HTTP API over one [`Floe`](crate::Floe).
//!
//! The listener starts before recovery so that orchestrators can watch
//! `/readyz` (503 until `Floe::open` has finished); every API call answers
//! `503 not_ready` meanwhile. Routes are grouped by capability, one module
//! each; every route carries a [`routes::Policy`]: the role it needs and
//! whether it is audited. Migrations are admin calls, SQL a viewer call;
//! both are audited.

mod admin;
mod audit;
mod auth;
mod batch;
mod cluster;
mod entities;
mod errors;
mod export;
mod health;
mod lifecycle;
mod metrics;
mod migrations;
mod routes;
mod sql;
mod things;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

pub use lifecycle::Server;

use crate::{Config, Floe};
use audit::AuditLog;
use auth::Authenticator;
use errors::ApiError;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// `Floe::open` (recovery) has not finished.
    Recovering = 0,
    Ready = 1,
    /// SIGTERM: finishing in-flight requests, then closing floe.
    Draining = 2,
    /// `Floe::open` failed; the process is about to exit.
    Failed = 3,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Recovering => "recovering",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Failed => "failed",
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
struct AppState {
    config: Config,
    /// The bound listen address (port 0 resolved): what the cluster map
    /// advertises in single-node mode.
    listen: SocketAddr,
    floe: OnceLock<Floe>,
    phase: AtomicU8,
    auth: Authenticator,
    audit: AuditLog,
    metrics: metrics::Metrics,
}

impl AppState {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Recovering,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Failed,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.metrics.set_ready(phase == Phase::Ready);
    }

    /// The opened floe, or `503 not_ready` while it recovers. Requests
    /// already admitted keep working while draining: `Floe::close` runs only
    /// after the last of them has been answered.
    fn floe(&self) -> Result<&Floe, ApiError> {
        match (self.floe.get(), self.phase()) {
            (Some(floe), Phase::Ready | Phase::Draining) => Ok(floe),
            (_, phase) => Err(ApiError::not_ready(phase.name())),
        }
    }
}
