//! The bodies the merchant signs: the authorization request of DESIGN.md section 6 (the packet
//! plus our acquirer and account) and the reversal of section 6.1; each signed as a detached JWS
//! (ES256, x5c = our chain) over its exact bytes, which every retry sends again unchanged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_pki::jws::JwsError;
use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo};
use serde::Serialize;

use super::BankLink;

/// A body and its signature, ready to send (and to store for retransmission).
#[derive(Debug, Clone)]
pub struct SignedBody {
    /// The exact bytes.
    pub body: Vec<u8>,
    /// Detached JWS over them (header `x-jws-signature`).
    pub signature: String,
}

/// Why a body could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// JSON serialisation failed.
    #[error("cannot serialise the request body")]
    Json(#[from] serde_json::Error),
    /// Signing failed.
    #[error("cannot sign the request body")]
    Sign(#[from] JwsError),
}

#[derive(Serialize)]
struct AuthorizationBody<'a> {
    payer_packet: String,
    merchant_id: &'a str,
    order_no: &'a str,
    amount: u64,
    currency: u16,
    acquirer_iin: &'a str,
    merchant_account: &'a str,
    merchant_time: String,
}

#[derive(Serialize)]
struct ReversalBody<'a> {
    merchant_id: &'a str,
    order_no: &'a str,
    amount: u64,
    currency: u16,
    acquirer_iin: &'a str,
    issuer_iin: &'a str,
    txn_id: Option<&'a str>,
    reason: &'a str,
    merchant_time: String,
}

/// What a reversal is about.
#[derive(Debug, Clone, Copy)]
pub struct ReversalFacts<'a> {
    /// The order.
    pub order_no: OrderNo,
    /// Its amount.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// The issuer of the packet (the gateway routes by it).
    pub issuer_iin: Iin,
    /// The issuer's transaction id, when an answer named one.
    pub txn_id: Option<&'a str>,
}

/// Who we are, for the bodies.
#[derive(Debug, Clone, Copy)]
pub struct MerchantFacts<'a> {
    /// Our id.
    pub merchant_id: MerchantId,
    /// Our acquirer.
    pub acquirer_iin: Iin,
    /// Our account at the acquirer.
    pub merchant_account: &'a str,
}

fn merchant_time() -> String {
    crate::orders::now_text()
}

impl BankLink {
    /// The signed authorization request for `packet` (DESIGN.md section 6).
    pub fn authorization(
        &self,
        merchant: MerchantFacts<'_>,
        packet: &[u8],
        order_no: OrderNo,
        amount: Amount,
        currency: Currency,
    ) -> Result<SignedBody, RequestError> {
        let body = serde_json::to_vec(&AuthorizationBody {
            payer_packet: BASE64.encode(packet),
            merchant_id: merchant.merchant_id.as_str(),
            order_no: order_no.as_str(),
            amount: amount.minor(),
            currency: currency.code(),
            acquirer_iin: merchant.acquirer_iin.as_str(),
            merchant_account: merchant.merchant_account,
            merchant_time: merchant_time(),
        })?;
        self.sign(body)
    }

    /// The signed reversal of an order whose outcome is not known (DESIGN.md section 6.1).
    pub fn reversal(&self, merchant: MerchantFacts<'_>, facts: ReversalFacts<'_>) -> Result<SignedBody, RequestError> {
        let body = serde_json::to_vec(&ReversalBody {
            merchant_id: merchant.merchant_id.as_str(),
            order_no: facts.order_no.as_str(),
            amount: facts.amount.minor(),
            currency: facts.currency.code(),
            acquirer_iin: merchant.acquirer_iin.as_str(),
            issuer_iin: facts.issuer_iin.as_str(),
            txn_id: facts.txn_id,
            reason: "timeout",
            merchant_time: merchant_time(),
        })?;
        self.sign(body)
    }

    fn sign(&self, body: Vec<u8>) -> Result<SignedBody, RequestError> {
        let signature = mps_pki::jws::sign_detached(&body, &self.chain, &self.signer)?;
        Ok(SignedBody { body, signature })
    }
}
