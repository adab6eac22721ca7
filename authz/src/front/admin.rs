//! The admin listener (plain HTTP, loopback by default): `/metrics`, `/healthz`, `/readyz`, and
//! the read-only operator's console (`/console`), a page that reads `/metrics` and the most
//! recent decisions (`/console/decisions`) and shows them. Every route is GET only.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::decision::Authorizer;
use crate::ops::metrics::Metrics;
use crate::ops::recent::RecentDecisions;
use crate::ops::revocation::Revocation;

/// State of the admin handlers.
pub struct AdminState {
    /// The decision (its HSM and ledger are probed for readiness).
    pub authorizer: Arc<Authorizer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The CRLs in force (their freshness is part of readiness).
    pub revocation: Arc<Revocation>,
    /// The last answers, for the console.
    pub recent: Arc<RecentDecisions>,
}

/// The admin route table.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/console", get(console_page))
        .route("/console/console.js", get(console_script))
        .route("/console/console.css", get(console_style))
        .route("/console/decisions", get(recent_decisions))
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

/// The console's files, built into the binary: the page loads nothing from anywhere else.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Headers of every console answer: only this origin's script, style and fetches (no inline
/// script, no CDN), never framed, never cached.
const CONSOLE_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

fn console_file(content_type: &'static str, body: &'static str) -> Response {
    with_console_headers(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn with_console_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in CONSOLE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn console_page() -> Response {
    console_file("text/html; charset=utf-8", CONSOLE_HTML)
}

async fn console_script() -> Response {
    console_file("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn console_style() -> Response {
    console_file("text/css; charset=utf-8", CONSOLE_CSS)
}

async fn recent_decisions(State(state): State<Arc<AdminState>>) -> Response {
    with_console_headers(Json(state.recent.newest_first()).into_response())
}
