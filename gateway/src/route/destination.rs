//! Where a merchant's body goes: the issuer IIN (from the payer packet of an authorization, from
//! `issuer_iin` of a reversal) and the merchant id the body claims. The body is read only this
//! far; the issuer checks everything else, and the bytes are forwarded unchanged.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_protocol::wire::PayerPacket;
use mps_protocol::{Iin, MerchantId};
use serde::Deserialize;

/// Why a body has no destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Not a JSON object, or a field the gateway reads has the wrong type.
    #[error("the body is not a JSON object of the documented shape")]
    NotJson,
    /// `payer_packet` is missing or not a string.
    #[error("payer_packet is missing")]
    MissingPacket,
    /// `payer_packet` is not standard base64.
    #[error("payer_packet is not standard base64")]
    PacketNotBase64,
    /// The packet does not decode (length, type or a clear field).
    #[error("payer_packet is not a valid payer packet: {0}")]
    Packet(mps_protocol::WireError),
    /// `issuer_iin` is missing or not 6 digits.
    #[error("issuer_iin must be a string of 6 digits")]
    IssuerIin,
    /// `merchant_id` is missing or not a merchant id.
    #[error("merchant_id must be 1 to 15 printable ASCII characters")]
    MerchantId,
}

/// The destination of a body, and who it says sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The issuer to route to.
    pub iin: Iin,
    /// The merchant id in the body.
    pub merchant_id: MerchantId,
}

/// The fields the gateway reads; every other field is ignored (the issuer refuses unknown ones).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    payer_packet: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    issuer_iin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    merchant_id: Option<Cow<'a, str>>,
}

fn envelope(body: &[u8]) -> Result<Envelope<'_>, DestinationError> {
    serde_json::from_slice(body).map_err(|_| DestinationError::NotJson)
}

fn merchant_id(envelope: &Envelope<'_>) -> Result<MerchantId, DestinationError> {
    let text = envelope.merchant_id.as_deref().ok_or(DestinationError::MerchantId)?;
    MerchantId::new(text).map_err(|_| DestinationError::MerchantId)
}

/// The destination of an authorization body: the IIN of its payer packet.
pub fn of_authorization(body: &[u8]) -> Result<Destination, DestinationError> {
    let envelope = envelope(body)?;
    let packet = envelope.payer_packet.as_deref().ok_or(DestinationError::MissingPacket)?;
    let bytes = BASE64.decode(packet).map_err(|_| DestinationError::PacketNotBase64)?;
    let packet = PayerPacket::decode(&bytes).map_err(DestinationError::Packet)?;
    Ok(Destination { iin: packet.fields.iin, merchant_id: merchant_id(&envelope)? })
}

/// The destination of a reversal body: its `issuer_iin`.
pub fn of_reversal(body: &[u8]) -> Result<Destination, DestinationError> {
    let envelope = envelope(body)?;
    let iin = envelope.issuer_iin.as_deref().ok_or(DestinationError::IssuerIin)?;
    let iin = Iin::new(iin).map_err(|_| DestinationError::IssuerIin)?;
    Ok(Destination { iin, merchant_id: merchant_id(&envelope)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packet of DESIGN.md's appendix (IIN 400012, merchant COFFEE-SHOP-01).
    const PACKET: &str = "AUAAEolJASNFZ4kBI08AAAAAAAFDT0ZGRUUtU0hPUC0wMSBPUkQtMDAwMDAwMSAAAAAAAAAE4gPSEBESExQVFhcYGRobHB0eH8J5/NOeF5pcKcKJLP7RvSQ0ApR/9rux2ad3JuyxKIuPHZ9x7xgJ200=";

    #[test]
    fn an_authorization_goes_to_its_packets_issuer() {
        let body = format!(r#"{{"payer_packet":"{PACKET}","merchant_id":"COFFEE-SHOP-01","amount":1250}}"#);
        let destination = of_authorization(body.as_bytes()).unwrap();
        assert_eq!(destination.iin.as_str(), "400012");
        assert_eq!(destination.merchant_id.as_str(), "COFFEE-SHOP-01");
    }

    #[test]
    fn escaped_json_strings_are_read_too() {
        // JSON may escape "/" as "\/" (base64 has slashes): the value is the same.
        let escaped = PACKET.replace('/', "\\/");
        let body = format!(r#"{{"payer_packet":"{escaped}","merchant_id":"COFFEE-SHOP-01"}}"#);
        assert!(body.contains("\\/"));
        assert_eq!(of_authorization(body.as_bytes()).unwrap().iin.as_str(), "400012");
    }

    #[test]
    fn an_authorization_without_a_packet_has_no_destination() {
        assert_eq!(of_authorization(b"not json"), Err(DestinationError::NotJson));
        assert_eq!(of_authorization(b"[1]"), Err(DestinationError::NotJson));
        assert_eq!(of_authorization(br#"{"merchant_id":"A"}"#), Err(DestinationError::MissingPacket));
        assert_eq!(
            of_authorization(br#"{"payer_packet":"***","merchant_id":"A"}"#),
            Err(DestinationError::PacketNotBase64)
        );
        assert!(matches!(
            of_authorization(br#"{"payer_packet":"AAAA","merchant_id":"A"}"#),
            Err(DestinationError::Packet(_))
        ));
        let body = format!(r#"{{"payer_packet":"{PACKET}"}}"#);
        assert_eq!(of_authorization(body.as_bytes()), Err(DestinationError::MerchantId));
    }

    #[test]
    fn a_reversal_goes_to_its_issuer_iin() {
        let destination = of_reversal(br#"{"issuer_iin":"400012","merchant_id":"SHOP-1","txn_id":null}"#).unwrap();
        assert_eq!(destination.iin.as_str(), "400012");
        assert_eq!(of_reversal(br#"{"issuer_iin":"40001","merchant_id":"SHOP-1"}"#), Err(DestinationError::IssuerIin));
        assert_eq!(of_reversal(br#"{"issuer_iin":400012,"merchant_id":"SHOP-1"}"#), Err(DestinationError::NotJson));
    }
}
