//! The admin listener (plain HTTP, loopback by default): `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ops::metrics::Metrics;
use crate::orders::OrderBook;

/// State of the admin handlers.
pub struct AdminState {
    /// The order book (probed for readiness).
    pub book: OrderBook,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Prometheus text.
pub async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// The process is alive.
pub async fn healthz() -> &'static str {
    "alive\n"
}

/// 200 only when the order book takes a durable write.
pub async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    match state.book.call(|book| book.health_check()).await {
        Ok(()) => (StatusCode::OK, "order book: ready\n").into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "order book not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "order book: not ready\n").into_response()
        }
    }
}
