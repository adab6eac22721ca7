//! The admin listener (plain HTTP, loopback by default): `/metrics`, `/healthz`, and
//! `/readyz` (200 when every issuer has at least one healthy instance; the text lists each).

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ops::metrics::Metrics;
use crate::route::table::RoutingTable;

/// State of the admin handlers.
pub struct AdminState {
    /// The routing table (its instances' health).
    pub table: Arc<RoutingTable>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The admin route table.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn healthz() -> &'static str {
    "alive\n"
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let mut text = String::new();
    for issuer in state.table.issuers() {
        for instance in &issuer.instances {
            let word = if instance.health.is_healthy() { "healthy" } else { "down" };
            let _ = writeln!(text, "issuer {} instance {}: {word}", issuer.iin, instance.url);
        }
    }
    let status = if state.table.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, text).into_response()
}
