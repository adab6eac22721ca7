//! Certificate roles of the scheme and their profiles: key usage, extended key usage and the private
//! MPS key-purpose OIDs that name a role (docs/PKI.md, "Roles and OIDs").

use std::fmt;

use serde::{Deserialize, Serialize};

/// DER content of the MPS OID arc `2.25.257204730236683699390176674850572015653` (a UUID OID,
/// ITU-T X.667; no registration needed). Key purposes live under `<arc>.1`.
const MPS_ARC_DER: [u8; 20] = [
    0x69, 0x83, 0x82, 0xff, 0xea, 0x91, 0xa4, 0xd6, 0xe2, 0x8b, 0xc1, 0xab, 0xec, 0x87, 0x9e, 0xbf, 0xca, 0xbc, 0xb0,
    0x25,
];

/// Dotted form of the MPS OID arc, for documentation and display.
pub const MPS_ARC: &str = "2.25.257204730236683699390176674850572015653";

const fn purpose_oid(purpose: u8) -> [u8; 22] {
    let mut out = [0u8; 22];
    let mut index = 0;
    while index < MPS_ARC_DER.len() {
        out[index] = MPS_ARC_DER[index];
        index += 1;
    }
    out[20] = 0x01;
    out[21] = purpose;
    out
}

const OID_AUTHZ_SERVER: [u8; 22] = purpose_oid(1);
const OID_GATEWAY_SERVER: [u8; 22] = purpose_oid(2);
const OID_GATEWAY_CLIENT: [u8; 22] = purpose_oid(3);
const OID_MERCHANT: [u8; 22] = purpose_oid(4);
const OID_AUTHORIZATION_SIGNING: [u8; 22] = purpose_oid(5);

/// DER content of id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
pub(crate) const OID_SERVER_AUTH: [u8; 8] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// DER content of id-kp-clientAuth (1.3.6.1.5.5.7.3.2).
pub(crate) const OID_CLIENT_AUTH: [u8; 8] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// What a certificate is for. Every end-entity certificate of the scheme has exactly one role,
/// named by a private key-purpose OID in its extended key usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// TLS server certificate of the issuer's authorization server (serverAuth, DNS and IP SANs).
    AuthzServer,
    /// TLS server certificate of the gateway, presented to merchants (serverAuth).
    GatewayServer,
    /// TLS client certificate of the gateway towards the authorization server (clientAuth).
    GatewayClient,
    /// Merchant certificate: mTLS to the gateway and detached JWS over requests
    /// (digitalSignature, clientAuth, SAN URI `urn:mps:merchant:<merchant_id>`).
    Merchant,
    /// The issuing bank's signing certificate for the HSM key `mps-sign`: authorizations and
    /// clearing files (digitalSignature, nonRepudiation, SAN URI `urn:mps:bank:<iin>`).
    BankSigning,
}

/// The key usage bits a role's certificate carries (RFC 5280 section 4.2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyUsageBit {
    DigitalSignature,
    NonRepudiation,
}

/// The standard TLS purpose a role's certificate carries next to its MPS purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsPurpose {
    ServerAuth,
    ClientAuth,
}

impl TlsPurpose {
    pub(crate) fn oid_der(self) -> &'static [u8] {
        match self {
            TlsPurpose::ServerAuth => &OID_SERVER_AUTH,
            TlsPurpose::ClientAuth => &OID_CLIENT_AUTH,
        }
    }
}

impl Role {
    /// All roles, in a fixed order.
    pub const ALL: [Role; 5] =
        [Role::AuthzServer, Role::GatewayServer, Role::GatewayClient, Role::Merchant, Role::BankSigning];

    /// The DER content (without tag and length) of the role's MPS key-purpose OID.
    pub fn purpose_oid_der(self) -> &'static [u8] {
        match self {
            Role::AuthzServer => &OID_AUTHZ_SERVER,
            Role::GatewayServer => &OID_GATEWAY_SERVER,
            Role::GatewayClient => &OID_GATEWAY_CLIENT,
            Role::Merchant => &OID_MERCHANT,
            Role::BankSigning => &OID_AUTHORIZATION_SIGNING,
        }
    }

    /// The dotted form of the role's MPS key-purpose OID.
    pub fn purpose_oid(self) -> String {
        let purpose = match self {
            Role::AuthzServer => 1,
            Role::GatewayServer => 2,
            Role::GatewayClient => 3,
            Role::Merchant => 4,
            Role::BankSigning => 5,
        };
        format!("{MPS_ARC}.1.{purpose}")
    }

    /// The role whose MPS key-purpose OID is `oid_der`, if any.
    pub fn from_purpose_oid_der(oid_der: &[u8]) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.purpose_oid_der() == oid_der)
    }

    /// The kebab-case name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Role::AuthzServer => "authz-server",
            Role::GatewayServer => "gateway-server",
            Role::GatewayClient => "gateway-client",
            Role::Merchant => "merchant",
            Role::BankSigning => "bank-signing",
        }
    }

    pub(crate) fn tls_purpose(self) -> Option<TlsPurpose> {
        match self {
            Role::AuthzServer | Role::GatewayServer => Some(TlsPurpose::ServerAuth),
            Role::GatewayClient | Role::Merchant => Some(TlsPurpose::ClientAuth),
            Role::BankSigning => None,
        }
    }

    pub(crate) fn key_usages(self) -> &'static [KeyUsageBit] {
        match self {
            Role::BankSigning => &[KeyUsageBit::DigitalSignature, KeyUsageBit::NonRepudiation],
            _ => &[KeyUsageBit::DigitalSignature],
        }
    }

    /// The purposes the role's certificate must list in its extended key usage, as OID DER
    /// contents: the standard TLS purpose (if any) and the role's MPS purpose.
    pub(crate) fn required_purposes(self) -> Vec<&'static [u8]> {
        let mut purposes = Vec::with_capacity(2);
        if let Some(tls) = self.tls_purpose() {
            purposes.push(tls.oid_der());
        }
        purposes.push(self.purpose_oid_der());
        purposes
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// DER of the extendedKeyUsage extension value (`SEQUENCE OF KeyPurposeId`) for the role.
///
/// rcgen only takes OID arcs that fit a `u64`; the MPS arc is a UUID (128 bits), so the
/// extension is written here and passed to rcgen as a custom extension.
pub(crate) fn extended_key_usage_der(role: Role) -> Vec<u8> {
    let mut content = Vec::new();
    for oid in role.required_purposes() {
        content.push(0x06);
        push_der_length(&mut content, oid.len());
        content.extend_from_slice(oid);
    }
    let mut out = vec![0x30];
    push_der_length(&mut out, content.len());
    out.extend_from_slice(&content);
    out
}

/// Appends a DER definite length.
pub(crate) fn push_der_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
        return;
    }
    let bytes = length.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent decoder of OID content octets (base 128, first octet 40 * a + b, a = 2 here).
    fn dotted(der: &[u8]) -> String {
        let mut arcs: Vec<u128> = Vec::new();
        let mut value: u128 = 0;
        for byte in der {
            value = (value << 7) | u128::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                arcs.push(value);
                value = 0;
            }
        }
        let first = arcs.remove(0);
        let mut parts = vec!["2".to_owned(), (first - 80).to_string()];
        parts.extend(arcs.iter().map(u128::to_string));
        parts.join(".")
    }

    #[test]
    fn purpose_oids_decode_to_the_documented_dotted_form() {
        for role in Role::ALL {
            assert_eq!(dotted(role.purpose_oid_der()), role.purpose_oid());
            assert_eq!(Role::from_purpose_oid_der(role.purpose_oid_der()), Some(role));
        }
        assert_eq!(Role::BankSigning.purpose_oid(), "2.25.257204730236683699390176674850572015653.1.5");
        assert_eq!(Role::from_purpose_oid_der(&OID_SERVER_AUTH), None);
    }

    #[test]
    fn extended_key_usage_lists_tls_then_mps_purpose() {
        let der = extended_key_usage_der(Role::Merchant);
        assert_eq!(der[0], 0x30);
        assert_eq!(der[1] as usize, der.len() - 2);
        assert_eq!(&der[2..4], &[0x06, 0x08]);
        assert_eq!(&der[4..12], &OID_CLIENT_AUTH);
        assert_eq!(&der[12..14], &[0x06, 22]);
        assert_eq!(&der[14..], &OID_MERCHANT);
        let bank = extended_key_usage_der(Role::BankSigning);
        assert_eq!(bank.len(), 2 + 2 + 22);
    }

    #[test]
    fn long_der_lengths_use_the_long_form() {
        let mut out = Vec::new();
        push_der_length(&mut out, 0x7f);
        push_der_length(&mut out, 0x80);
        push_der_length(&mut out, 0x1234);
        assert_eq!(out, vec![0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }
}
