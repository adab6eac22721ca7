//! The route table of the merchant listener and its thin handlers: read the body (at most
//! `server.body_bytes_max`), take a token from the merchant's bucket, find the issuer, check the
//! body's merchant against the certificate's, forward, and pass the issuer's answer back byte
//! for byte, or refuse through [`Refusal`].

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::identity::MerchantIdentity;
use super::problem::Refusal;
use super::rate_limit::RateLimiter;
use crate::ops::metrics::Metrics;
use crate::route::destination::{self, Destination, DestinationError};
use crate::route::table::RoutingTable;
use crate::upstream::client::{Answer, JWS_HEADER, Outgoing};
use crate::upstream::forward::{self, Outcome};

/// Header carrying the gateway's own request id in every answer (the issuer's `x-request-id`
/// is passed back unchanged).
pub const GATEWAY_REQUEST_ID_HEADER: &str = "x-gateway-request-id";

/// Shared state of the handlers.
pub struct AppState {
    /// Issuers and their instances.
    pub table: Arc<RoutingTable>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-merchant token buckets.
    pub limiter: RateLimiter,
    /// Bounds requests being forwarded.
    pub in_flight: Semaphore,
    /// Largest issuer answer accepted.
    pub answer_bytes_max: usize,
}

/// The route table.
pub fn router(state: Arc<AppState>, body_bytes_max: usize) -> Router {
    Router::new()
        .route("/v1/authorizations", post(authorizations))
        .route("/v1/reversals", post(reversals))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// What a merchant asks for: where it goes upstream and how its destination is read.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Authorization,
    Reversal,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Self::Authorization => "/v1/authorizations",
            Self::Reversal => "/v1/reversals",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Authorization => "authorizations",
            Self::Reversal => "reversals",
        }
    }

    fn destination(self, body: &[u8]) -> Result<Destination, DestinationError> {
        match self {
            Self::Authorization => destination::of_authorization(body),
            Self::Reversal => destination::of_reversal(body),
        }
    }
}

async fn authorizations(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<MerchantIdentity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(&state, Kind::Authorization, &identity, &headers, body).await
}

async fn reversals(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<MerchantIdentity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(&state, Kind::Reversal, &identity, &headers, body).await
}

async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    count(&state, "other", Refusal::NotFound.into_response())
}

async fn method_not_allowed(State(state): State<Arc<AppState>>) -> Response {
    count(&state, "other", Refusal::MethodNotAllowed.into_response())
}

fn count(state: &AppState, route: &str, response: Response) -> Response {
    state.metrics.requests.with_label_values(&[route, response.status().as_str()]).inc();
    response
}

/// One request, in a span with its id; every answer is counted and carries the gateway's id.
async fn serve(
    state: &AppState,
    kind: Kind,
    identity: &MerchantIdentity,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request_id = hex::encode(rand::random::<[u8; 8]>());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route = kind.label(),
        merchant_id = %identity.merchant_id,
    );
    let response = async {
        let response = match forward_request(state, kind, identity, headers, body).await {
            Ok(response) => response,
            Err(refusal) => {
                tracing::info!(reason = %refusal, "refused");
                refusal.into_response()
            }
        };
        tracing::info!(status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis(), "answered");
        response
    }
    .instrument(span)
    .await;
    let mut response = count(state, kind.label(), response);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(GATEWAY_REQUEST_ID_HEADER, value);
    }
    response
}

async fn forward_request(
    state: &AppState,
    kind: Kind,
    identity: &MerchantIdentity,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let body = body.map_err(|rejection| Refusal::Body { status: rejection.status(), detail: rejection.body_text() })?;
    check_media_type(headers)?;
    state.limiter.check(&identity.merchant_id, Instant::now()).map_err(|retry_after| {
        state.metrics.rate_limited.inc();
        Refusal::RateLimited { retry_after }
    })?;
    let destination = kind.destination(&body)?;
    if destination.merchant_id != identity.merchant_id {
        return Err(Refusal::OtherMerchant);
    }
    let issuer = state.table.issuer(&destination.iin).ok_or(Refusal::UnknownIssuer(destination.iin))?;
    let Ok(_permit) = state.in_flight.try_acquire() else {
        state.metrics.overload.inc();
        return Err(Refusal::Overloaded);
    };
    let outgoing = Outgoing {
        path: kind.path(),
        body,
        signature: headers.get(JWS_HEADER).cloned(),
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
    };
    match forward::forward(issuer, &outgoing, &state.metrics, state.answer_bytes_max).await {
        Outcome::Answered { answer, attempts } => {
            tracing::info!(issuer = %issuer.iin, attempts, issuer_status = answer.status.as_u16(), "issuer answered");
            Ok(pass_back(answer))
        }
        Outcome::GaveUp { maybe_delivered, attempts } => {
            let outcome = if maybe_delivered { "unknown" } else { "not_sent" };
            state.metrics.gave_up.with_label_values(&[issuer.iin.as_str(), outcome]).inc();
            tracing::error!(issuer = %issuer.iin, attempts, maybe_delivered, "gave up: no answer from the issuer");
            Err(Refusal::IssuerUnavailable { maybe_delivered })
        }
    }
}

/// A request without `Content-Type` is read as JSON, as the issuer does.
fn check_media_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let is_json = content_type
        .to_str()
        .is_ok_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if is_json { Ok(()) } else { Err(Refusal::MediaType) }
}

/// The issuer's status, passed-back headers and body, unchanged.
fn pass_back(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value);
    }
    response
}
