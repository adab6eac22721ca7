//! The authorization's answer body (DESIGN.md section 6), serialized once: these exact bytes
//! are signed, stored for retransmission and sent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_protocol::{AuthCode, ResponseCode, TxnId};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::request::AuthorizationRequest;

#[derive(Serialize)]
struct Body<'a> {
    response_code: &'a str,
    auth_code: Option<&'a str>,
    txn_id: String,
    merchant_id: &'a str,
    order_no: &'a str,
    amount: u64,
    currency: u16,
    issuer_time: String,
    payer_answer: Option<String>,
}

/// The JSON bytes of an answer. `payer_answer` is the 79-byte answer for the SIM, or None when
/// the packet could not be authenticated.
pub fn body(
    request: &AuthorizationRequest,
    code: ResponseCode,
    auth_code: AuthCode,
    txn_id: TxnId,
    now: OffsetDateTime,
    payer_answer: Option<&[u8]>,
) -> Vec<u8> {
    let body = Body {
        response_code: code.as_str(),
        auth_code: (code == ResponseCode::Approved).then(|| auth_code.as_str()),
        txn_id: txn_id.to_hex(),
        merchant_id: request.merchant_id.as_str(),
        order_no: request.order_no.as_str(),
        amount: request.amount.minor(),
        currency: request.currency.code(),
        issuer_time: now.format(&Rfc3339).unwrap_or_default(),
        payer_answer: payer_answer.map(|bytes| BASE64.encode(bytes)),
    };
    // A struct of strings and integers always serializes.
    serde_json::to_vec(&body).unwrap_or_default()
}
