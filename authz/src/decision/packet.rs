//! Step 4 of the decision: the payer packet's layout, its issuer, and its clear fields against
//! the merchant's body. A packet that does not decode is code 30; one for another issuer, or
//! whose clear fields differ from the body (a merchant changing what the payer approved), is
//! code 12. Either way nothing changes.

use mps_protocol::wire::{PayerPacket, WireError};
use mps_protocol::{Iin, ResponseCode};

use super::request::AuthorizationRequest;

/// Why the packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketRefusal {
    /// Layout or field format (code 30).
    #[error("payer_packet is malformed: {0}")]
    Malformed(#[from] WireError),
    /// Another issuer's packet (code 12).
    #[error("payer_packet is for issuer {0}, not this one")]
    OtherIssuer(Iin),
    /// A clear field differs from the body (code 12).
    #[error("payer_packet field {0} differs from the request body")]
    FieldMismatch(&'static str),
}

impl PacketRefusal {
    /// The ISO 8583 code of this refusal.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Self::Malformed(_) => ResponseCode::FormatError,
            Self::OtherIssuer(_) | Self::FieldMismatch(_) => ResponseCode::InvalidTransaction,
        }
    }
}

/// Decodes the packet and checks it belongs to us and says what the body says.
pub fn check(request: &AuthorizationRequest, our_iin: Iin) -> Result<PayerPacket, PacketRefusal> {
    let packet = PayerPacket::decode(&request.payer_packet)?;
    let fields = &packet.fields;
    if fields.iin != our_iin {
        return Err(PacketRefusal::OtherIssuer(fields.iin));
    }
    let mismatch = [
        ("merchant_id", fields.merchant_id != request.merchant_id),
        ("order_no", fields.order_no != request.order_no),
        ("amount", fields.amount != request.amount),
        ("currency", fields.currency != request.currency),
    ]
    .into_iter()
    .find(|(_, differs)| *differs);
    if let Some((name, _)) = mismatch {
        return Err(PacketRefusal::FieldMismatch(name));
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use mps_protocol::wire::ClearFields;
    use mps_protocol::{Amount, Counter, Currency, MerchantId, OrderNo, SimId};

    use super::*;
    use crate::decision::request::MerchantAccount;

    fn our_iin() -> Iin {
        Iin::new("400012").unwrap()
    }

    fn packet(iin: Iin) -> PayerPacket {
        PayerPacket {
            fields: ClearFields {
                iin,
                sim_id: SimId::new("8949000000000000001").unwrap(),
                counter: Counter::new(1).unwrap(),
                merchant_id: MerchantId::new("SHOP-001").unwrap(),
                order_no: OrderNo::new("O-1").unwrap(),
                amount: Amount::from_minor(1_250),
                currency: Currency::EUR,
            },
            iv: [1; 16],
            ciphertext: [2; 32],
            mac: [3; 8],
        }
    }

    /// The body a merchant sends with `packet`, saying what the packet says.
    fn request(packet: &PayerPacket) -> AuthorizationRequest {
        AuthorizationRequest {
            payer_packet: packet.encode().to_vec(),
            merchant_id: packet.fields.merchant_id,
            order_no: packet.fields.order_no,
            amount: packet.fields.amount,
            currency: packet.fields.currency,
            acquirer_iin: Iin::new("500001").unwrap(),
            merchant_account: MerchantAccount::new("DE89370400440532013000").unwrap(),
            merchant_time: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_packet_for_us_that_says_what_the_body_says_passes() {
        let packet = packet(our_iin());
        assert_eq!(check(&request(&packet), our_iin()), Ok(packet));
    }

    #[test]
    fn a_packet_for_another_issuer_is_refused_with_12() {
        let theirs = Iin::new("400013").unwrap();
        let refusal = check(&request(&packet(theirs)), our_iin()).unwrap_err();
        assert_eq!(refusal, PacketRefusal::OtherIssuer(theirs));
        assert_eq!(refusal.response_code(), ResponseCode::InvalidTransaction);
    }

    #[test]
    fn each_clear_field_that_differs_from_the_body_is_named() {
        let genuine = request(&packet(our_iin()));
        let changed: [(&str, AuthorizationRequest); 4] = [
            (
                "merchant_id",
                AuthorizationRequest { merchant_id: MerchantId::new("SHOP-002").unwrap(), ..genuine.clone() },
            ),
            ("order_no", AuthorizationRequest { order_no: OrderNo::new("O-2").unwrap(), ..genuine.clone() }),
            ("amount", AuthorizationRequest { amount: Amount::from_minor(1_251), ..genuine.clone() }),
            ("currency", AuthorizationRequest { currency: Currency::USD, ..genuine.clone() }),
        ];
        for (field, request) in changed {
            let refusal = check(&request, our_iin()).unwrap_err();
            assert_eq!(refusal, PacketRefusal::FieldMismatch(field));
            assert_eq!(refusal.response_code(), ResponseCode::InvalidTransaction);
        }
    }

    #[test]
    fn a_packet_that_does_not_decode_is_a_format_error() {
        let garbage = AuthorizationRequest { payer_packet: vec![0; 113], ..request(&packet(our_iin())) };
        let refusal = check(&garbage, our_iin()).unwrap_err();
        assert!(matches!(refusal, PacketRefusal::Malformed(_)), "{refusal:?}");
        assert_eq!(refusal.response_code(), ResponseCode::FormatError);
    }
}
