//! The route table of the gateway-facing listener, and its one handler. Each answer is also
//! counted in the metrics and summarised for the operator's console as it leaves.

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
use crate::decision::attempt::{Attempt, GaveUp};
use crate::decision::packet::PacketRefusal;
use crate::decision::summary::About;
use crate::decision::{Authorizer, Dependency, Refusal, Reply};
use crate::ops::metrics::Metrics;
use crate::ops::recent::{self, DecisionSummary, RecentDecisions};

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
    /// The last answers, for the operator's console.
    pub recent: Arc<RecentDecisions>,
    /// Bounds authorizations in flight, counting those whose caller has gone but whose
    /// booking is still completing.
    pub in_flight: Arc<Semaphore>,
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

impl Operation {
    fn summarised(self) -> recent::Operation {
        match self {
            Self::Authorize => recent::Operation::Authorization,
            Self::Reverse => recent::Operation::Reversal,
        }
    }
}

/// What [`into_response`] leaves in the response's extensions for [`serve`] to summarise: the
/// ISO 8583 code the answer carries and what the decision was about.
#[derive(Debug, Clone)]
struct Answered {
    code: mps_protocol::ResponseCode,
    about: Box<About>,
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
    let mut response = handle(&state, &headers, body, operation).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics.http_status.with_label_values(&[status.as_str()]).inc();
    state.metrics.request_seconds.with_label_values(&[status.as_str()]).observe(elapsed.as_secs_f64());
    let answered = response.extensions_mut().remove::<Answered>();
    let code = answered.as_ref().map(|answered| answered.code.as_str());
    let about = answered.map(|answered| answered.about).unwrap_or_default();
    state.recent.record(DecisionSummary::new(operation.summarised(), status.as_u16(), code, &about, elapsed));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn handle(
    state: &Arc<AppState>,
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
    let Ok(permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
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
    let jws = headers.get(JWS_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // The decision runs in a task of its own: neither the deadline nor a client that goes
    // away can cancel a booking half-way or release its locks early (decision::attempt).
    let attempt = Arc::new(Attempt::new());
    let task = {
        let (state, attempt) = (Arc::clone(state), Arc::clone(&attempt));
        async move {
            let _permit = permit;
            state.metrics.in_flight.inc();
            let _in_flight = InFlight(&state.metrics.in_flight);
            match operation {
                Operation::Authorize => state.authorizer.authorize(&body, jws.as_deref(), &attempt).await,
                Operation::Reverse => state.authorizer.reverse(&body, jws.as_deref(), &attempt).await,
            }
        }
    };
    let task = tokio::spawn(task.in_current_span());
    // A client that disconnects or resets its stream drops this future: the decision then
    // stops before booking, or completes its booking if it had queued it.
    let _gone = GiveUpOnDrop(&attempt);
    let reply = match tokio::time::timeout(state.request_timeout, task).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(join_error)) => {
            tracing::error!(error = %join_error, "the decision task failed");
            gave_up(&attempt)
        }
        Err(_) => {
            tracing::error!("the request deadline passed before the decision");
            gave_up(&attempt)
        }
    };
    into_response(state, reply)
}

/// What a caller that stops waiting may say: "nothing was approved" only when the decision had
/// not queued its booking.
fn gave_up(attempt: &Attempt) -> Reply {
    match attempt.give_up() {
        GaveUp::NothingBooked => Reply::Unavailable(Dependency::Deadline),
        GaveUp::OutcomeUnknown => Reply::OutcomeUnknown,
    }
}

/// Gives the attempt up when the request's future is dropped before it has its reply.
struct GiveUpOnDrop<'a>(&'a Attempt);

impl Drop for GiveUpOnDrop<'_> {
    fn drop(&mut self) {
        // After a reply this changes nothing: the decision is past its booking or has ended.
        let _ = self.0.give_up();
    }
}

fn into_response(state: &AppState, reply: Reply) -> Response {
    match reply {
        Reply::Processed { body, signature, code, about } => {
            state.metrics.responses.with_label_values(&[code.as_str()]).inc();
            let mut response = (StatusCode::OK, body).into_response();
            response.extensions_mut().insert(Answered { code, about });
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
            let mut response = problem::response(status, title, &refusal.to_string(), Some(code));
            response.extensions_mut().insert(Answered { code, about: Box::default() });
            if matches!(refusal, Refusal::Throttled) {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            response
        }
        Reply::Unavailable(dependency) => {
            let detail = format!(
                "the issuer cannot decide now ({} unavailable); nothing was approved, retry later",
                dependency.as_str()
            );
            let code = mps_protocol::ResponseCode::IssuerUnavailable;
            let mut response =
                problem::response(StatusCode::SERVICE_UNAVAILABLE, "Issuer unavailable", &detail, Some(code));
            response.extensions_mut().insert(Answered { code, about: Box::default() });
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Reply::OutcomeUnknown => {
            state.metrics.outcome_unknown.inc();
            let mut response = problem::response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Outcome unknown",
                "the deadline passed after the issuer queued the booking, which completes: send the same packet \
                 again, and its retransmission gets the stored answer (or reverse the order)",
                Some(mps_protocol::ResponseCode::IssuerUnavailable),
            );
            let code = mps_protocol::ResponseCode::IssuerUnavailable;
            response.extensions_mut().insert(Answered { code, about: Box::default() });
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
        Refusal::Throttled => (StatusCode::TOO_MANY_REQUESTS, "Too many failed packets"),
    }
}

/// Decrements the in-flight gauge when the authorization ends, however it ends.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
