//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/status`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::status::RolloutStatus;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Metrics,
    pub status: Arc<RwLock<RolloutStatus>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let status = state.status.read().map(|s| s.clone());
    match status {
        Ok(s) => axum::Json(s).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned").into_response(),
    }
}

/// Binds `addr` and serves until the process ends. Binding errors are returned at once so
/// `run` can say which address is taken.
pub async fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!("http server stopped: {e}");
        }
    });
    Ok(local)
}
