//! Start and stop: bind first, then open floe (readiness false meanwhile);
//! on shutdown stop accepting, answer the requests in flight, then close
//! floe (drain every shard inbox, final sink commit) and the audit log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::audit::AuditLog;
use super::auth::Authenticator;
use super::forward::Forwarder;
use super::metrics::Metrics;
use super::{AppState, Phase, health, routes};
use crate::error::{Error, Result};
use crate::{ClusterNode, Config, Floe};
use floe_config::{AuthMode, TOKENS_ENV};

/// A bound `floe serve`: [`Server::bind`], then [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    /// Cluster mode: joined before listening, so a node etcd refuses (wrong
    /// cluster id, node id in use) never serves anything.
    node: Option<Arc<ClusterNode>>,
}

impl Server {
    /// Checks the configuration (tokens resolved from it and the process
    /// environment), opens the audit log and binds `serve.listen`. Refuses
    /// to start without tokens unless `serve.auth = "disabled"`, and refuses
    /// disabled auth on anything but a loopback address.
    pub async fn bind(config: Config) -> Result<Server> {
        config.validate()?;
        let serve = &config.serve;
        let listen = serve.listen_addr()?;
        let tokens = serve.resolve_tokens(|var| std::env::var(var).ok())?;
        match serve.auth {
            AuthMode::Tokens if tokens.is_empty() => {
                return Err(Error::Config(format!(
                    "serve.auth = \"tokens\" but no token is configured (serve.tokens or {TOKENS_ENV}); \
                     set serve.auth = \"disabled\" only for a loopback-only setup"
                )));
            }
            AuthMode::Disabled if !listen.ip().is_loopback() => {
                return Err(Error::Config(format!(
                    "serve.auth = \"disabled\" is allowed only on a loopback address, not {listen}"
                )));
            }
            AuthMode::Disabled => {
                tracing::warn!("authentication is disabled: every local caller is an admin");
            }
            AuthMode::Tokens => {}
        }
        // Cluster mode: the token nodes forward calls with is checked before
        // joining, so a node that could not forward joins nothing.
        let forwarder = match &config.cluster {
            Some(cluster) => {
                let token = cluster
                    .resolve_token(|var| std::env::var(var).ok())
                    .map_err(Error::Cluster)?;
                Some(Forwarder::new(
                    token,
                    cluster.node_id.clone(),
                    cluster.forward_timeout(),
                )?)
            }
            None => None,
        };
        let node = match &config.cluster {
            Some(cluster) => Some(Arc::new(ClusterNode::join(cluster).await?)),
            None => None,
        };
        let audit = AuditLog::open(&serve.audit_path(&config.data_dir))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let state = Arc::new(AppState {
            auth: Authenticator::new(serve.auth, tokens),
            config,
            listen: addr,
            floe: OnceLock::new(),
            phase: AtomicU8::new(Phase::Recovering as u8),
            audit,
            metrics: Metrics::new(),
            forwarder,
        });
        Ok(Server {
            listener,
            addr,
            state,
            node,
        })
    }

    /// The address the server listens on (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then drains and closes floe.
    /// Fails if floe cannot be opened or closed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            state,
            node,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        {
            let stop_tx = stop_tx.clone();
            tokio::spawn(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            });
        }
        // The HTTP server stops after the cluster drain (below), so the node
        // serves and forwards while its shards move off.
        let (http_tx, mut http_stop) = watch::channel(false);
        // Answers go out as they are written: with Nagle's algorithm a
        // response sent in two writes waits ~40 ms for the client's delayed
        // ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY refused on an accepted connection");
            }
        });
        let server = tokio::spawn(
            axum::serve(
                listener,
                routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
        );

        let opened = match node {
            Some(node) => Floe::open_in_cluster(state.config.clone(), node).await,
            None => Floe::open(state.config.clone()).await,
        };
        let floe = match opened {
            Ok(floe) => floe,
            Err(e) => {
                state.set_phase(Phase::Failed);
                let _ = stop_tx.send(true);
                let _ = http_tx.send(true);
                let _ = server.await;
                state.audit.close();
                return Err(e);
            }
        };
        state.metrics.attach(&floe);
        let _ = state.floe.set(floe.clone());
        let probes = health::start_probes(&floe);
        state.set_phase(Phase::Ready);
        let recovery = floe.recovery_stats();
        tracing::info!(
            events = recovery.events,
            from_lake = recovery.from_lake,
            "floe is ready"
        );

        let mut stopped = stop_rx.clone();
        let _ = stopped.wait_for(|stop| *stop).await;
        // Cluster mode: hand this node's shards over (planned, warmed up on
        // their new owners) while it still serves and forwards, then stop.
        if let Some(node) = floe.cluster_node() {
            node.drain_before_leaving().await;
        }
        let _ = http_tx.send(true);
        state.set_phase(Phase::Draining);
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        let grace = Duration::from_millis(state.config.serve.shutdown_timeout_ms);
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the HTTP server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server task panicked"),
            Err(_) => tracing::warn!(
                timeout_ms = grace.as_millis() as u64,
                "requests still in flight after serve.shutdown_timeout_ms; closing floe anyway"
            ),
        }
        for probe in probes {
            probe.abort();
        }
        // Every admitted write has been answered (or the grace period is
        // over): drain the inboxes, land the pipeline, close it.
        let closed = floe.close().await;
        state.audit.close();
        tracing::info!("floe closed");
        closed
    }
}
