//! RFC 7807 problem details (`application/problem+json`), and the one place that maps a
//! payment's or the order book's error to an HTTP status: the client learns what to do next,
//! the detail for operators goes to the logs.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::orders::BookError;
use crate::payment::PaymentError;

/// Media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_code: Option<&'a str>,
}

/// A problem response.
pub fn response(status: StatusCode, title: &str, detail: &str, response_code: Option<&str>) -> Response {
    let slug = title.to_ascii_lowercase().replace(' ', "-");
    let kind = format!("urn:mps:problem:{slug}");
    let problem = Problem { kind: &kind, title, status: status.as_u16(), detail, response_code };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// A payment that did not end in a verified answer, for the phone.
pub fn payment(error: &PaymentError) -> Response {
    let detail = error.to_string();
    match error {
        PaymentError::Malformed(_) => response(StatusCode::BAD_REQUEST, "Malformed packet", &detail, None),
        PaymentError::OtherMerchant(_) => response(StatusCode::BAD_REQUEST, "Wrong merchant", &detail, None),
        PaymentError::UnknownOrder(_) => response(StatusCode::NOT_FOUND, "Unknown order", &detail, None),
        PaymentError::Mismatch(_) => response(StatusCode::UNPROCESSABLE_ENTITY, "Order mismatch", &detail, None),
        PaymentError::AlreadyPaid(_) => response(StatusCode::CONFLICT, "Already paid", &detail, None),
        PaymentError::DuplicateUnanswered { .. } => response(StatusCode::CONFLICT, "Already paid", &detail, None),
        PaymentError::ApprovedTwice { .. } => response(
            StatusCode::BAD_GATEWAY,
            "Bank approved twice",
            "the bank approved a second payment of an order it had approved already; the merchant does not accept \
             it and the bank must reverse it",
            None,
        ),
        PaymentError::Reversed(_) => response(StatusCode::CONFLICT, "Payment reversed", &detail, None),
        PaymentError::Busy { .. } => response(StatusCode::CONFLICT, "Order busy", &detail, None),
        PaymentError::Refused { response_code, .. } => response(
            StatusCode::BAD_GATEWAY,
            "Refused by the bank",
            &format!("{detail}; the payment did not happen"),
            response_code.as_deref(),
        ),
        PaymentError::Unverified(_) => response(
            StatusCode::BAD_GATEWAY,
            "Bank answer not verified",
            "the bank's answer could not be verified, so the payment is not accepted; the order stays unpaid and \
             the merchant asks the bank to reverse it",
            None,
        ),
        PaymentError::NoAnswer { .. } => response(
            StatusCode::GATEWAY_TIMEOUT,
            "No answer from the bank",
            "the bank did not answer in time, so the payment failed; the order stays unpaid and the merchant asks \
             the bank to reverse it",
            Some("91"),
        ),
        PaymentError::Book(error) => book(error),
        PaymentError::Request(_) => {
            tracing::error!(error = %error, "cannot make the authorization request");
            response(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "the merchant cannot sign requests now", None)
        }
    }
}

/// An order book error, for the phone or the POS.
pub fn book(error: &BookError) -> Response {
    match error {
        BookError::Exists(_) => response(StatusCode::CONFLICT, "Order exists", &error.to_string(), None),
        BookError::NotFound(_) => response(StatusCode::NOT_FOUND, "Unknown order", &error.to_string(), None),
        BookError::Conflict { .. } => response(StatusCode::CONFLICT, "Order busy", &error.to_string(), None),
        _ => {
            tracing::error!(error = %error, "order book failed");
            let mut answer = response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Order book unavailable",
                "the order book cannot be read or written now; try again shortly",
                None,
            );
            answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            answer
        }
    }
}
