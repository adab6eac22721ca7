//! The personalisation record of DESIGN.md section 9: what the bank's registration writes for
//! the over-the-air push to one SIM, and what `sim personalise` imports.
//!
//! JSON, one object (documented in `docs/PERSONALISATION.md`):
//!
//! ```json
//! {
//!   "format": "mps-perso/1",
//!   "iin": "400012",
//!   "sim_id": "8949012345678901234",
//!   "transport_key": "mps-tk-demo",
//!   "wrapped_chain_key": "<base64 of CK_0 wrapped with RFC 5649 under the transport key>",
//!   "rsn": "<16 hex digits: RSN_1>",
//!   "counter": 0,
//!   "bank_certificate_pem": "-----BEGIN CERTIFICATE-----\n..."
//! }
//! ```
//!
//! `wrapped_chain_key` is always 40 bytes: RFC 5649 (AES key wrap with padding) of a 32-byte
//! key, equal to PKCS#11 `CKM_AES_KEY_WRAP_PAD` output for 32-byte keys.

use aes_kw::KekAes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::{Counter, Iin, Rsn, SimId};
use crate::keys::AesKey;

/// The format tag of version 1.
pub const FORMAT_V1: &str = "mps-perso/1";
/// Length of a 32-byte key wrapped with RFC 5649.
pub const WRAPPED_KEY_LEN: usize = 40;

/// Why a personalisation record was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersoError {
    /// Not JSON of the documented shape.
    #[error("personalisation record is not valid JSON of format {FORMAT_V1}: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format tag.
    #[error("personalisation record has format {0:?}, this build reads {FORMAT_V1:?}")]
    Format(String),
    /// A field that does not parse.
    #[error("personalisation record field {field} is invalid: {reason}")]
    Field {
        /// JSON field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The transport key does not unwrap the chain key (wrong key, or a damaged record).
    #[error("the chain key does not unwrap under this transport key: wrong transport key or a damaged record")]
    Unwrap,
}

/// A personalisation record as stored in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersoRecord {
    /// Always [`FORMAT_V1`].
    pub format: String,
    /// Issuer identification number.
    pub iin: String,
    /// The SIM's ICCID.
    pub sim_id: String,
    /// Label of the transport key CK_0 is wrapped under (informational for the SIM vendor).
    pub transport_key: String,
    /// Base64 of CK_0 wrapped with RFC 5649 under the transport key.
    pub wrapped_chain_key: String,
    /// RSN_1 in hex.
    pub rsn: String,
    /// The counter the SIM starts at: 0.
    pub counter: u64,
    /// The bank's signing certificate (and chain), PEM.
    pub bank_certificate_pem: String,
}

/// A record whose fields have been parsed.
#[derive(Debug, Clone)]
pub struct ParsedPerso {
    /// Issuer identification number.
    pub iin: Iin,
    /// The SIM's ICCID.
    pub sim_id: SimId,
    /// Transport key label.
    pub transport_key: String,
    /// CK_0 wrapped under the transport key.
    pub wrapped_chain_key: [u8; WRAPPED_KEY_LEN],
    /// RSN_1.
    pub rsn: Rsn,
    /// Starting counter (0).
    pub counter: Counter,
    /// Bank certificate PEM.
    pub bank_certificate_pem: String,
}

impl PersoRecord {
    /// Builds a record from its parts.
    pub fn new(
        iin: Iin,
        sim_id: &SimId,
        transport_key: &str,
        wrapped_chain_key: &[u8; WRAPPED_KEY_LEN],
        rsn: Rsn,
        bank_certificate_pem: &str,
    ) -> Self {
        Self {
            format: FORMAT_V1.to_owned(),
            iin: iin.as_str().to_owned(),
            sim_id: sim_id.as_str().to_owned(),
            transport_key: transport_key.to_owned(),
            wrapped_chain_key: BASE64.encode(wrapped_chain_key),
            rsn: rsn.to_hex(),
            counter: 0,
            bank_certificate_pem: bank_certificate_pem.to_owned(),
        }
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Self, PersoError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field.
    pub fn parse(&self) -> Result<ParsedPerso, PersoError> {
        let bad = |field: &'static str, reason: String| PersoError::Field { field, reason };
        if self.format != FORMAT_V1 {
            return Err(PersoError::Format(self.format.clone()));
        }
        let wrapped = BASE64.decode(&self.wrapped_chain_key).map_err(|e| bad("wrapped_chain_key", e.to_string()))?;
        let wrapped_chain_key: [u8; WRAPPED_KEY_LEN] = wrapped.try_into().map_err(|v: Vec<u8>| {
            bad("wrapped_chain_key", format!("must be {WRAPPED_KEY_LEN} bytes, got {}", v.len()))
        })?;
        if self.counter != 0 {
            return Err(bad("counter", "a personalisation record starts at counter 0".into()));
        }
        if !self.bank_certificate_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad("bank_certificate_pem", "no PEM certificate".into()));
        }
        if self.transport_key.is_empty() {
            return Err(bad("transport_key", "empty".into()));
        }
        Ok(ParsedPerso {
            iin: Iin::new(&self.iin).map_err(|e| bad("iin", e.to_string()))?,
            sim_id: SimId::new(&self.sim_id).map_err(|e| bad("sim_id", e.to_string()))?,
            transport_key: self.transport_key.clone(),
            wrapped_chain_key,
            rsn: Rsn::from_hex(&self.rsn).map_err(|e| bad("rsn", e.to_string()))?,
            counter: Counter::ZERO,
            bank_certificate_pem: self.bank_certificate_pem.clone(),
        })
    }
}

/// RFC 5649 wrap of a 32-byte key (software; tests, and SIM-vendor tooling).
pub fn wrap_key(transport_key: &AesKey, key: &AesKey) -> [u8; WRAPPED_KEY_LEN] {
    let kek = KekAes256::from(*transport_key.expose());
    let mut out = [0u8; WRAPPED_KEY_LEN];
    // A 32-byte input always wraps to 40 bytes into a 40-byte buffer.
    let _ = kek.wrap_with_padding(key.expose(), &mut out);
    out
}

/// RFC 5649 unwrap of a 32-byte key.
pub fn unwrap_key(transport_key: &AesKey, wrapped: &[u8; WRAPPED_KEY_LEN]) -> Result<AesKey, PersoError> {
    let kek = KekAes256::from(*transport_key.expose());
    let mut out = Zeroizing::new([0u8; WRAPPED_KEY_LEN - 8]);
    let key = kek.unwrap_with_padding(wrapped, &mut out[..]).map_err(|_| PersoError::Unwrap)?;
    let key: [u8; 32] = key.try_into().map_err(|_| PersoError::Unwrap)?;
    Ok(AesKey::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_then_unwrap() {
        let tk = AesKey::from_bytes([1; 32]);
        let key = AesKey::from_bytes([2; 32]);
        let wrapped = wrap_key(&tk, &key);
        assert_eq!(unwrap_key(&tk, &wrapped).unwrap().expose(), key.expose());
        assert!(matches!(unwrap_key(&AesKey::from_bytes([3; 32]), &wrapped), Err(PersoError::Unwrap)));
    }

    #[test]
    fn record_round_trips_and_rejects_bad_fields() {
        let tk = AesKey::from_bytes([1; 32]);
        let wrapped = wrap_key(&tk, &AesKey::from_bytes([2; 32]));
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let record = PersoRecord::new(
            Iin::new("400012").unwrap(),
            &SimId::new("8949012345678901234").unwrap(),
            "mps-tk-demo",
            &wrapped,
            Rsn([5; 8]),
            pem,
        );
        let back = PersoRecord::from_json(&record.to_json()).unwrap();
        assert_eq!(back, record);
        let parsed = back.parse().unwrap();
        assert_eq!(parsed.wrapped_chain_key, wrapped);

        let mut bad = record.clone();
        bad.iin = "40001".into();
        assert!(matches!(bad.parse(), Err(PersoError::Field { field: "iin", .. })));
        let mut bad = record.clone();
        bad.format = "other".into();
        assert!(matches!(bad.parse(), Err(PersoError::Format(_))));
        assert!(PersoRecord::from_json("{\"format\":1}").is_err());
    }
}
