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
