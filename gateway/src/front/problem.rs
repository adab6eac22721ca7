//! Every refusal the gateway itself makes, and the one place it becomes an HTTP status, a
//! problem title and an ISO 8583 code (RFC 7807 `application/problem+json`). Answers of the
//! issuer never pass through here: they go back byte for byte.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::route::destination::DestinationError;

/// Media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// ISO 8583 code 15, "no such issuer": the IIN is not in the routing table.
pub const NO_SUCH_ISSUER: &str = "15";

/// Why the gateway refused a request or gave up on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The body could not be read (too large, or the connection broke).
    #[error("{detail}")]
    Body {
        /// 413 for a body over the limit, else 400.
        status: StatusCode,
        /// What axum says.
        detail: String,
    },
    /// A `Content-Type` other than `application/json`.
    #[error("send Content-Type: application/json")]
    MediaType,
    /// The body names no issuer the gateway can read.
    #[error("{0}")]
    Destination(#[from] DestinationError),
    /// The body's `merchant_id` is not the merchant of the TLS certificate.
    #[error("merchant_id of the body differs from the merchant id of your TLS certificate")]
    OtherMerchant,
    /// The merchant is over its rate limit.
    #[error("rate limit exceeded; retry after {} s", retry_after_seconds(*.retry_after))]
    RateLimited {
        /// When a token is free again.
        retry_after: Duration,
    },
    /// The IIN is not in the routing table.
    #[error("no issuer with IIN {0} is routed by this gateway")]
    UnknownIssuer(mps_protocol::Iin),
    /// Too many requests in flight.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// No answer from the issuer within the limits.
    #[error("{}", unavailable_detail(*.maybe_delivered))]
    IssuerUnavailable {
        /// Whether the issuer may have received the request.
        maybe_delivered: bool,
    },
    /// Another path.
    #[error("the resources are POST /v1/authorizations and POST /v1/reversals")]
    NotFound,
    /// Another method.
    #[error("use POST")]
    MethodNotAllowed,
}

fn retry_after_seconds(retry_after: Duration) -> u64 {
    retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
}

fn unavailable_detail(maybe_delivered: bool) -> &'static str {
    if maybe_delivered {
        "the issuer did not answer in time; the outcome is unknown: send the identical body again \
         (same bytes, same x-jws-signature) to get the issuer's answer, or reverse the payment"
    } else {
        "no instance of the issuer is reachable; the request was not forwarded and nothing was \
         authorized: retry later"
    }
}

impl Refusal {
    /// The one mapping: HTTP status, problem title and ISO 8583 code.
    fn status(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        let format_error = Some(mps_protocol::ResponseCode::FormatError.as_str());
        let unavailable = Some(mps_protocol::ResponseCode::IssuerUnavailable.as_str());
        match self {
            Self::Body { status, .. } => (*status, "Unreadable body", format_error),
            Self::MediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", None),
            Self::Destination(_) => (StatusCode::BAD_REQUEST, "Malformed request", format_error),
            Self::OtherMerchant => (
                StatusCode::FORBIDDEN,
                "Merchant mismatch",
                Some(mps_protocol::ResponseCode::SecurityViolation.as_str()),
            ),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "Rate limited", None),
            Self::UnknownIssuer(_) => (StatusCode::NOT_FOUND, "No such issuer", Some(NO_SUCH_ISSUER)),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "Overloaded", None),
            Self::IssuerUnavailable { maybe_delivered: true } => {
                (StatusCode::GATEWAY_TIMEOUT, "Issuer unavailable", unavailable)
            }
            Self::IssuerUnavailable { maybe_delivered: false } => {
                (StatusCode::SERVICE_UNAVAILABLE, "Issuer unavailable", unavailable)
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found", None),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", None),
        }
    }

    /// Seconds for a `Retry-After` header, where one applies.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => Some(retry_after_seconds(*retry_after).max(1)),
            Self::Overloaded | Self::IssuerUnavailable { maybe_delivered: false } => Some(1),
            _ => None,
        }
    }
}

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

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, title, code) = self.status();
        let slug = title.to_ascii_lowercase().replace(' ', "-");
        let kind = format!("urn:mps:problem:{slug}");
        let detail = self.to_string();
        let problem = Problem { kind: &kind, title, status: status.as_u16(), detail: &detail, response_code: code };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_after_sending_is_a_504_with_91_and_says_what_to_do() {
        let response = Refusal::IssuerUnavailable { maybe_delivered: true }.into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        let refusal = Refusal::IssuerUnavailable { maybe_delivered: true };
        assert_eq!(refusal.status().2, Some("91"));
        assert!(refusal.to_string().contains("outcome is unknown"));
        assert!(refusal.to_string().contains("reverse"));
    }

    #[test]
    fn rate_limited_rounds_retry_after_up() {
        let refusal = Refusal::RateLimited { retry_after: Duration::from_millis(1_200) };
        assert_eq!(refusal.retry_after(), Some(2));
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
