//! The route table of the gateway-facing listener, and its one handler.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::problem;
use crate::decision::packet::PacketRefusal;
use crate::decision::{Authorizer, Dependency, Refusal, Reply};
use crate::ops::metrics::Metrics;

/// Header carrying detached JWS signatures, both ways.
pub const JWS_HEADER: &str = "x-jws-signature";
/// Header carrying the request id in answers.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Shared state of the handlers.
pub struct AppState {
    /// The decision.
    pub authorizer: Arc<Authorizer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bounds authorizations in flight.
    pub in_flight: Semaphore,
    /// Whole-request deadline.
    pub request_timeout: std::time::Duration,
}

/// The route table.
pub fn router(state: Arc<AppState>, body_bytes_max: usize) -> Router {
    Router::new()
        .route("/v1/authorizations", post(authorize))
        .route("/v1/reversals", post(reverse))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

async fn not_found() -> Response {
    problem::response(
        StatusCode::NOT_FOUND,
        "Not found",
        "the resources are POST /v1/authorizations and POST /v1/reversals",
        None,
    )
}

/// What a request asks the issuer to do.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Authorize,
    Reverse,
}

async fn authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    serve(state, headers, body, Operation::Authorize).await
}

async fn reverse(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    serve(state, headers, body, Operation::Reverse).await
}

async fn serve(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    operation: Operation,
) -> Response {
    let started = Instant::now();
    let request_id = hex::encode(rand::random::<[u8; 8]>());
    let span = match operation {
        Operation::Authorize => tracing::info_span!("authorization", request_id = %request_id),
        Operation::Reverse => tracing::info_span!("reversal", request_id = %request_id),
    };
    let response = handle(&state, &headers, body, operation).instrument(span).await;
    let status = response.status();
    state.metrics.http_status.with_label_values(&[status.as_str()]).inc();
    state.metrics.request_seconds.with_label_values(&[status.as_str()]).observe(started.elapsed().as_secs_f64());
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    operation: Operation,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            return problem::response(
                status,
                "Unreadable body",
                &rejection.body_text(),
                Some(mps_protocol::ResponseCode::FormatError),
            );
        }
    };
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let is_json = content_type
            .to_str()
            .is_ok_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
        if !is_json {
            return problem::response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "send application/json",
                None,
            );
        }
    }
    let Ok(_permit) = state.in_flight.try_acquire() else {
        state.metrics.overload.inc();
        let mut response = problem::response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Overloaded",
            "too many authorizations in flight; retry shortly",
            None,
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let jws = headers.get(JWS_HEADER).and_then(|v| v.to_str().ok());
    state.metrics.in_flight.inc();
    let _in_flight = InFlight(&state.metrics.in_flight);
    let decided = async {
        match operation {
            Operation::Authorize => state.authorizer.authorize(&body, jws).await,
            Operation::Reverse => state.authorizer.reverse(&body, jws).await,
        }
    };
    let reply = match tokio::time::timeout(state.request_timeout, decided).await {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("authorization timed out");
            Reply::Unavailable(Dependency::Deadline)
        }
    };
    into_response(state, reply)
}

fn into_response(state: &AppState, reply: Reply) -> Response {
    match reply {
        Reply::Processed { body, signature, code } => {
            state.metrics.responses.with_label_values(&[code.as_str()]).inc();
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(value) = HeaderValue::from_str(&signature) {
                headers.insert(JWS_HEADER, value);
            }
            response
        }
        Reply::Refused(refusal) => {
            let code = refusal.response_code();
            state.metrics.responses.with_label_values(&[code.as_str()]).inc();
            let (status, title) = refusal_status(&refusal);
            problem::response(status, title, &refusal.to_string(), Some(code))
        }
        Reply::Unavailable(dependency) => {
            let detail = format!(
                "the issuer cannot decide now ({} unavailable); nothing was approved, retry later",
                dependency.as_str()
            );
            let mut response = problem::response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Issuer unavailable",
                &detail,
                Some(mps_protocol::ResponseCode::IssuerUnavailable),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// The one place a refusal becomes an HTTP status and a problem title; the ISO 8583 code
/// comes from [`Refusal::response_code`].
fn refusal_status(refusal: &Refusal) -> (StatusCode, &'static str) {
    match refusal {
        Refusal::Format(_) => (StatusCode::BAD_REQUEST, "Malformed request"),
        Refusal::Signature(_) => (StatusCode::UNAUTHORIZED, "Signature refused"),
        Refusal::Packet(PacketRefusal::Malformed(_)) => (StatusCode::BAD_REQUEST, "Malformed request"),
        Refusal::Packet(PacketRefusal::OtherIssuer(_) | PacketRefusal::FieldMismatch(_)) => {
            (StatusCode::BAD_REQUEST, "Invalid transaction")
        }
        Refusal::OtherMerchant => (StatusCode::FORBIDDEN, "Another merchant's order"),
    }
}

/// Decrements the in-flight gauge when the authorization ends, however it ends.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
