//! The control thread: a small tokio runtime off the packet path that
//! serves HTTP (`/metrics`, `/healthz`, the admin API) and pings the
//! systemd watchdog while every shard is alive.

pub mod admin_api;
pub mod metrics;
pub mod status;

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tracing::{error, warn};

use crate::server::Shared;
use metrics::Sources;

/// What the HTTP handlers share.
pub struct ControlState {
    pub sources: Arc<Sources>,
    pub registry: Registry,
    pub admin: admin_api::Admin,
}

impl ControlState {
    /// The registry over `sources`, and the admin API sending to `jobs`.
    pub fn new(
        sources: Sources,
        jobs: crossbeam_channel::Sender<crate::server::jobs::Job>,
    ) -> Self {
        let sources = Arc::new(sources);
        ControlState {
            registry: metrics::registry(sources.clone()),
            admin: admin_api::Admin {
                token: sources.shared.config.http.admin_token.clone(),
                jobs,
            },
            sources,
        }
    }
}

/// Binds `http.listen` (when HTTP is on), so a taken port fails the start
/// instead of a thread later.
pub fn bind(
    config: &crate::config::HttpConfig,
) -> Result<Option<TcpListener>, crate::server::ServeError> {
    if !config.enabled {
        return Ok(None);
    }
    let addr = config.listen;
    TcpListener::bind(addr)
        .map(Some)
        .map_err(|source| crate::server::ServeError::Http { addr, source })
}

/// Starts the control thread on the listener [`bind`] made.
pub fn spawn(
    listener: Option<TcpListener>,
    state: Arc<ControlState>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    error!("control thread: cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(run(listener, state));
        })
}

async fn run(listener: Option<TcpListener>, state: Arc<ControlState>) {
    let shared = state.sources.shared.clone();
    let watchdog = tokio::spawn(watchdog(shared.clone()));
    let summary = tokio::spawn(unknown_nas_summary(shared.clone()));
    if let Some(listener) = listener {
        let serve = async {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app = router(state.clone());
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown(shared.clone()))
                .await
        };
        if let Err(e) = serve.await {
            error!("HTTP listener failed: {e}");
        }
    }
    shutdown(shared.clone()).await;
    watchdog.abort();
    summary.abort();
    report_suppressed(&shared);
}

/// Once a minute: how many `unknown NAS` lines the budget suppressed.
async fn unknown_nas_summary(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        report_suppressed(&shared);
    }
}

fn report_suppressed(shared: &Shared) {
    let n = shared.unknown_nas.take_unreported();
    if n > 0 {
        warn!(
            "unknown NAS: {n} more lines suppressed (at most {} a minute; every packet is counted in shardius_unknown_nas_packets_total)",
            crate::server::shard::unknown_nas::LINES_PER_MINUTE
        );
    }
}

fn router(state: Arc<ControlState>) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler));
    admin_api::routes(router).with_state(state)
}

/// Resolves once the server is shutting down.
async fn shutdown(shared: Arc<Shared>) {
    while !shared.shutdown.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_handler(State(state): State<Arc<ControlState>>) -> Response {
    let body = metrics::encode(&state.registry);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn health_handler(State(state): State<Arc<ControlState>>) -> Response {
    let (healthy, body) = metrics::health(&state.sources.shared);
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Pings the systemd watchdog (`WatchdogSec=`) at half its interval, but
/// only while every shard is publishing: a stuck shard stops the pings and
/// systemd restarts the service.
async fn watchdog(shared: Arc<Shared>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    let mut warned = false;
    loop {
        tick.tick().await;
        let status = shared.status();
        if status.shards_alive == status.shards {
            warned = false;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else if !warned {
            warned = true;
            warn!(
                alive = status.shards_alive,
                shards = status.shards,
                "a shard stopped answering: watchdog pings withheld"
            );
        }
    }
}
