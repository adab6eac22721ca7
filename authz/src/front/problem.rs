//! RFC 7807 problem details for refused requests (`application/problem+json`). The client
//! learns what to fix; internal detail stays in the logs.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mps_protocol::ResponseCode;
use serde::Serialize;

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
pub fn response(status: StatusCode, title: &str, detail: &str, code: Option<ResponseCode>) -> Response {
    let slug = title.to_ascii_lowercase().replace(' ', "-");
    let kind = format!("urn:mps:problem:{slug}");
    let problem =
        Problem { kind: &kind, title, status: status.as_u16(), detail, response_code: code.map(|c| c.as_str()) };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
