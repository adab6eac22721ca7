//! The route tables, one per listener: the phone's (`POST /v1/payments`), the shop's
//! (`/v1/orders`) and the admin's (`/metrics`, `/healthz`, `/readyz`).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use super::{admin, phone, pos, problem};

/// The phone listener.
pub fn phone_router(state: Arc<phone::PhoneState>, body_bytes_max: usize) -> Router {
    Router::new()
        .route("/v1/payments", post(phone::pay))
        .fallback(|| not_found("the phone's only resource is POST /v1/payments"))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// The POS listener.
pub fn pos_router(state: Arc<pos::PosState>, body_bytes_max: usize) -> Router {
    Router::new()
        .route("/v1/orders", post(pos::create).get(pos::export))
        .route("/v1/orders/{order_no}", get(pos::show))
        .fallback(|| not_found("resources: POST /v1/orders, GET /v1/orders/{order_no}, GET /v1/orders?day=YYYY-MM-DD"))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// The admin listener.
pub fn admin_router(state: Arc<admin::AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .with_state(state)
}

async fn not_found(detail: &'static str) -> Response {
    problem::response(StatusCode::NOT_FOUND, "Not found", detail, None)
}
