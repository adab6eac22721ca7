//! The admin listener (plain HTTP, loopback by default): `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::decision::Authorizer;
use crate::ops::metrics::Metrics;
use crate::ops::revocation::Revocation;

/// State of the admin handlers.
pub struct AdminState {
    /// The decision (its HSM and ledger are probed for readiness).
    pub authorizer: Arc<Authorizer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The CRLs in force (their freshness is part of readiness).
    pub revocation: Arc<Revocation>,
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
    let hsm_ready = state.authorizer.hsm().is_ready();
    let ledger_ready = state.authorizer.ledger().health_check().await.is_ok();
    let crl = state.revocation.freshness(std::time::SystemTime::now());
    let text =
        format!("hsm: {}\nledger: {}\ncrl: {}\n", ready_word(hsm_ready), ready_word(ledger_ready), crl.describe());
    let ready = hsm_ready && ledger_ready && crl.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, text).into_response()
}

fn ready_word(ready: bool) -> &'static str {
    if ready { "ready" } else { "not ready" }
}
