//! The operator's HTTP endpoints: `/` (the live rollout page), `/timeline.svg`, `/metrics`,
//! `/healthz`, `/status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

mod limits;

use crate::metrics::Metrics;
use crate::page::html::PAGE;
use crate::page::timeline::{Timeline, parse_events_lenient};
use crate::status::RolloutStatus;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Metrics,
    pub status: Arc<RwLock<RolloutStatus>>,
    /// The events file (`--events`) the timeline is drawn from.
    pub events: Option<PathBuf>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/timeline.svg", get(timeline))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Encoding holds the registry's lock: off the async workers, which the loop runs on.
    let Ok(text) = tokio::task::spawn_blocking(move || state.metrics.encode()).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
            .into_response();
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
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

/// The timeline so far, its open steps drawn up to now. Without an events file there is
/// nothing to draw it from: the answer says how to get one.
async fn timeline(State(state): State<AppState>) -> Response {
    let Some(path) = state.events else {
        // An answer the page can show (not an error it would log each second).
        return svg_response(crate::page::render::message_svg(
            "No timeline: the operator was started without --events FILE.",
        ));
    };
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        // No step yet: the file is created with the first event.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            let message = format!("cannot read the events file {}: {e}\n", path.display());
            return (StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
        }
    };
    let events = parse_events_lenient(&text);
    let now = crate::clock::label_time();
    svg_response(crate::page::render::svg(&Timeline::from_events(
        &events,
        Some(now),
    )))
}

fn svg_response(svg: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response()
}

/// Binds `addr` and serves until the process ends. Binding errors are returned at once so
/// `run` can say which address is taken.
pub async fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(limits::serve_bounded(listener, router(state)));
    Ok(local)
}
