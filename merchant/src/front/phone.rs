//! `POST /v1/payments`: the SIM hands over its packet (docs/SIM.md, the `--send` contract).
//! Thin: read the body, bound the payments in flight, run the payment in its own task, map the
//! result to the reply the SIM reads (`payer_answer`, `response_code`) or a problem.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_protocol::ResponseCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::problem;
use crate::payment::{Payments, PhoneReply};

/// State of the phone handler.
pub struct PhoneState {
    /// The payment flow.
    pub payments: Arc<Payments>,
    /// Bounds payments in flight (`phone.in_flight_max`).
    pub in_flight: Arc<Semaphore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentRequest {
    payer_packet: String,
}

#[derive(Serialize)]
struct PaymentReply<'a> {
    payer_answer: Option<String>,
    response_code: &'a str,
    meaning: &'static str,
    auth_code: Option<&'a str>,
    txn_id: Option<&'a str>,
    order_no: &'a str,
    amount: u64,
    currency: u16,
    status: &'static str,
}

/// The handler.
pub async fn pay(State(state): State<Arc<PhoneState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return problem::response(rejection.status(), "Unreadable body", &rejection.body_text(), None);
        }
    };
    let Ok(request) = serde_json::from_slice::<PaymentRequest>(&body) else {
        return problem::response(
            StatusCode::BAD_REQUEST,
            "Malformed request",
            "the body must be {\"payer_packet\": \"<base64 of the 113 packet bytes>\"}",
            None,
        );
    };
    let Ok(packet) = BASE64.decode(request.payer_packet.trim()) else {
        return problem::response(StatusCode::BAD_REQUEST, "Malformed packet", "payer_packet is not base64", None);
    };
    let Ok(permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        let mut answer =
            problem::response(StatusCode::SERVICE_UNAVAILABLE, "Busy", "too many payments in flight; try again", None);
        answer.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return answer;
    };
    // Its own task: a phone that hangs up must not cut a payment between bank and order book.
    let payments = Arc::clone(&state.payments);
    let task = tokio::spawn(async move {
        let _permit = permit;
        payments.pay(packet).await
    });
    match task.await {
        Ok(Ok(reply)) => reply_json(&reply),
        Ok(Err(error)) => {
            tracing::info!(error = %error, "payment not completed");
            problem::payment(&error)
        }
        Err(_) => {
            problem::response(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "the payment task failed", None)
        }
    }
}

fn reply_json(reply: &PhoneReply) -> Response {
    let order = &reply.order;
    let meaning = ResponseCode::parse(&reply.response_code).map_or("", |code| code.meaning());
    let body = PaymentReply {
        payer_answer: reply.payer_answer.as_ref().map(|bytes| BASE64.encode(bytes)),
        response_code: &reply.response_code,
        meaning,
        auth_code: reply.auth_code.as_deref(),
        txn_id: reply.txn_id.as_deref(),
        order_no: order.order_no.as_str(),
        amount: order.amount.minor(),
        currency: order.currency.code(),
        status: reply.status.as_str(),
    };
    (StatusCode::OK, Json(body)).into_response()
}
