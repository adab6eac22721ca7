//! Verifying the bank's answers before trusting them: the detached JWS over the exact body must
//! chain to the scheme CA (CRLs checked) with the role bank-signing, the certificate's IIN must
//! be the packet's issuer, and the body must echo our merchant id, order, amount and currency.
//! Only a verified answer moves an order to paid, declined or reversed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_pki::Role;
use mps_pki::jws::JwsError;
use mps_protocol::wire::ANSWER_LEN;
use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo, ResponseCode};
use rustls_pki_types::UnixTime;
use serde::Deserialize;

use super::submit::RawAnswer;
use crate::orders::{BankOutcome, ReversalOutcome};

/// Why an answer is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// No `x-jws-signature` header.
    #[error("the answer is not signed")]
    Unsigned,
    /// The signature or its certificate is refused.
    #[error("the answer's signature is refused: {0}")]
    Signature(#[from] JwsError),
    /// Signed by another bank than the packet's issuer.
    #[error("the answer is signed by bank {signer:?}, the packet's issuer is {expected}")]
    WrongBank {
        /// IIN in the signer's certificate.
        signer: Option<String>,
        /// The packet's IIN.
        expected: String,
    },
    /// Not the JSON of an answer.
    #[error("the signed answer is not the expected JSON")]
    Shape,
    /// A field does not echo the request.
    #[error("the signed answer's {0} differs from the order")]
    Mismatch(&'static str),
    /// A field is malformed.
    #[error("the signed answer's {0} is malformed")]
    Field(&'static str),
}

/// What the answer must echo.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// Our id.
    pub merchant_id: MerchantId,
    /// The order.
    pub order_no: OrderNo,
    /// Its amount.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// The packet's issuer.
    pub issuer_iin: Iin,
}

#[derive(Deserialize)]
struct AuthorizationJson {
    response_code: String,
    auth_code: Option<String>,
    txn_id: String,
    merchant_id: String,
    order_no: String,
    amount: u64,
    currency: u16,
    payer_answer: Option<String>,
}

#[derive(Deserialize)]
struct ReversalJson {
    response_code: String,
    reversal_id: Option<String>,
    merchant_id: String,
    order_no: String,
}

/// A refusal's RFC 7807 body (unsigned; informative only).
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    /// Short title.
    pub title: Option<String>,
    /// Detail.
    pub detail: Option<String>,
    /// ISO 8583 code, when one applies.
    pub response_code: Option<String>,
}

impl Problem {
    /// Reads a problem body; anything else gives an empty problem.
    pub fn read(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// Checks the signature and the signer's IIN.
fn verify_signature(
    answer: &RawAnswer,
    trust: &mps_pki::TrustStore,
    issuer_iin: Iin,
    now: UnixTime,
) -> Result<String, AnswerError> {
    let signature = answer.signature.as_deref().ok_or(AnswerError::Unsigned)?;
    let identity = mps_pki::jws::verify_detached(signature, &answer.body, trust, Role::BankSigning, now)?;
    if identity.bank_iin != Some(issuer_iin) {
        return Err(AnswerError::WrongBank {
            signer: identity.bank_iin.map(|iin| iin.as_str().to_owned()),
            expected: issuer_iin.as_str().to_owned(),
        });
    }
    Ok(signature.to_owned())
}

/// Verifies a 200 answer to an authorization and returns what the order book records.
pub fn verify_authorization(
    answer: &RawAnswer,
    trust: &mps_pki::TrustStore,
    expected: &Expected,
    now: UnixTime,
) -> Result<BankOutcome, AnswerError> {
    let signature = verify_signature(answer, trust, expected.issuer_iin, now)?;
    let json: AuthorizationJson = serde_json::from_slice(&answer.body).map_err(|_| AnswerError::Shape)?;
    if json.merchant_id != expected.merchant_id.as_str() {
        return Err(AnswerError::Mismatch("merchant_id"));
    }
    if json.order_no != expected.order_no.as_str() {
        return Err(AnswerError::Mismatch("order_no"));
    }
    if json.amount != expected.amount.minor() {
        return Err(AnswerError::Mismatch("amount"));
    }
    if json.currency != expected.currency.code() {
        return Err(AnswerError::Mismatch("currency"));
    }
    let code = ResponseCode::parse(&json.response_code).ok_or(AnswerError::Field("response_code"))?;
    let auth_code_ok =
        |text: &str| text.len() == 6 && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    match (code, json.auth_code.as_deref()) {
        (ResponseCode::Approved, Some(text)) if auth_code_ok(text) => {}
        (ResponseCode::Approved, _) => return Err(AnswerError::Field("auth_code")),
        (_, None) => {}
        (_, Some(_)) => return Err(AnswerError::Field("auth_code")),
    }
    if json.txn_id.len() != 32 || !json.txn_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(AnswerError::Field("txn_id"));
    }
    let payer_answer = json
        .payer_answer
        .map(|text| BASE64.decode(text).ok().filter(|bytes| bytes.len() == ANSWER_LEN))
        .map(|decoded| decoded.ok_or(AnswerError::Field("payer_answer")))
        .transpose()?;
    Ok(BankOutcome {
        response_code: code.as_str().to_owned(),
        auth_code: json.auth_code,
        txn_id: json.txn_id,
        body: answer.body.clone(),
        signature,
        payer_answer,
    })
}

/// Verifies a 200 answer to a reversal: 00, 25 or 12, signed by the order's issuer.
pub fn verify_reversal(
    answer: &RawAnswer,
    trust: &mps_pki::TrustStore,
    merchant_id: MerchantId,
    order_no: OrderNo,
    issuer_iin: Iin,
    now: UnixTime,
) -> Result<ReversalOutcome, AnswerError> {
    let signature = verify_signature(answer, trust, issuer_iin, now)?;
    let json: ReversalJson = serde_json::from_slice(&answer.body).map_err(|_| AnswerError::Shape)?;
    if json.merchant_id != merchant_id.as_str() {
        return Err(AnswerError::Mismatch("merchant_id"));
    }
    if json.order_no != order_no.as_str() {
        return Err(AnswerError::Mismatch("order_no"));
    }
    if !matches!(json.response_code.as_str(), "00" | "25" | "12") {
        return Err(AnswerError::Field("response_code"));
    }
    Ok(ReversalOutcome {
        response_code: json.response_code,
        reversal_id: json.reversal_id,
        body: answer.body.clone(),
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_leniently() {
        let problem = Problem::read(br#"{"title":"Bad","detail":"d","response_code":"30","status":400}"#);
        assert_eq!(problem.response_code.as_deref(), Some("30"));
        assert!(Problem::read(b"garbage").title.is_none());
    }
}
