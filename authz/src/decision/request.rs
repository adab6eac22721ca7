//! Step 2 of the decision: the merchant's request body, parsed into typed fields (DESIGN.md
//! section 6). Anything malformed is a 400 with code 30 and changes nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_protocol::wire::PACKET_LEN;
use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The merchant's account at its acquirer: 1 to 34 characters (an IBAN fits), letters, digits,
/// spaces and hyphens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantAccount(String);

impl MerchantAccount {
    /// Longest accepted.
    pub const LEN_MAX: usize = 34;

    /// Parses the text.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > Self::LEN_MAX {
            return Err("merchant_account must have 1 to 34 characters");
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-') {
            return Err("merchant_account may contain only letters, digits, spaces and hyphens");
        }
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The request as it arrives: every field a string or number, parsed in [`parse`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    payer_packet: String,
    merchant_id: String,
    order_no: String,
    amount: u64,
    currency: u16,
    acquirer_iin: String,
    merchant_account: String,
    merchant_time: String,
}

/// A request whose every field has been parsed.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    /// The SIM's packet, exactly 113 bytes (decoded in step 4).
    pub payer_packet: Vec<u8>,
    /// Merchant id.
    pub merchant_id: MerchantId,
    /// Order number.
    pub order_no: OrderNo,
    /// Amount in minor units.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// The merchant's acquirer.
    pub acquirer_iin: Iin,
    /// The merchant's account at the acquirer.
    pub merchant_account: MerchantAccount,
    /// The merchant's clock.
    pub merchant_time: OffsetDateTime,
}

/// Why a body was refused; the text goes to the client in the problem's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// The largest amount the ledger can book: balances and postings are signed 64-bit minor units.
pub const AMOUNT_MAX: u64 = i64::MAX as u64;

/// An amount in minor units that the ledger can book; anything larger is a format error (30)
/// here, at step 2, and never reaches the HSM or the ledger.
pub fn bookable_amount(minor: u64) -> Result<Amount, BadRequest> {
    if minor > AMOUNT_MAX {
        return Err(BadRequest(format!("amount: at most {AMOUNT_MAX} minor units")));
    }
    Ok(Amount::from_minor(minor))
}

/// Parses the exact body bytes.
pub fn parse(body: &[u8]) -> Result<AuthorizationRequest, BadRequest> {
    let raw: RawRequest = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("body is not a valid authorization request: {e}")))?;
    let field = |name: &str, e: &dyn std::fmt::Display| BadRequest(format!("{name}: {e}"));
    let payer_packet = BASE64.decode(raw.payer_packet.as_bytes()).map_err(|e| field("payer_packet", &e))?;
    if payer_packet.len() != PACKET_LEN {
        return Err(BadRequest(format!("payer_packet must be {PACKET_LEN} bytes, got {}", payer_packet.len())));
    }
    Ok(AuthorizationRequest {
        payer_packet,
        merchant_id: MerchantId::new(&raw.merchant_id).map_err(|e| field("merchant_id", &e))?,
        order_no: OrderNo::new(&raw.order_no).map_err(|e| field("order_no", &e))?,
        amount: bookable_amount(raw.amount)?,
        currency: Currency::from_code(raw.currency).map_err(|e| field("currency", &e))?,
        acquirer_iin: Iin::new(&raw.acquirer_iin).map_err(|e| field("acquirer_iin", &e))?,
        merchant_account: MerchantAccount::new(&raw.merchant_account).map_err(|e| field("merchant_account", &e))?,
        merchant_time: OffsetDateTime::parse(&raw.merchant_time, &Rfc3339).map_err(|e| field("merchant_time", &e))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(packet_len: usize) -> String {
        format!(
            r#"{{"payer_packet":"{}","merchant_id":"SHOP-1","order_no":"A-1","amount":1250,"currency":978,"acquirer_iin":"500001","merchant_account":"DE89370400440532013000","merchant_time":"2026-11-26T12:00:00Z"}}"#,
            BASE64.encode(vec![0u8; packet_len])
        )
    }

    #[test]
    fn a_well_formed_body_parses() {
        let request = parse(body(113).as_bytes()).unwrap();
        assert_eq!(request.amount.minor(), 1250);
        assert_eq!(request.merchant_id.as_str(), "SHOP-1");
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        assert!(parse(b"not json").unwrap_err().0.contains("not a valid"));
        assert!(parse(body(112).as_bytes()).unwrap_err().0.contains("113 bytes"));
        let unknown_currency = body(113).replace("978", "999");
        assert!(parse(unknown_currency.as_bytes()).unwrap_err().0.starts_with("currency"));
        let extra_field = body(113).replace("}", r#","extra":1}"#);
        assert!(parse(extra_field.as_bytes()).is_err());
        let float_amount = body(113).replace("1250", "12.50");
        assert!(parse(float_amount.as_bytes()).is_err());
        let largest = body(113).replace("1250", &i64::MAX.to_string());
        assert_eq!(parse(largest.as_bytes()).unwrap().amount.minor(), AMOUNT_MAX);
        let above_i64 = body(113).replace("1250", &(AMOUNT_MAX + 1).to_string());
        assert!(parse(above_i64.as_bytes()).unwrap_err().0.starts_with("amount"));
        let bad_time = body(113).replace("2026-11-26T12:00:00Z", "yesterday");
        assert!(parse(bad_time.as_bytes()).unwrap_err().0.starts_with("merchant_time"));
    }
}
