//! Serde helpers for the profile file: keys and packets as hex, account numbers as digits.
//!
//! Keys are encoded through a zeroized stack buffer and decoded by a visitor that borrows the
//! text, so no copy of a key's hex lingers in an unzeroized heap string, and a parse error never
//! quotes the key.

use std::fmt;

use mps_protocol::{Account, AesKey};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use zeroize::Zeroizing;

/// `#[serde(with = "serde_hex::key")]` for an [`AesKey`].
pub(crate) mod key {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(key: &AesKey, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Zeroizing::new([0u8; 64]);
        // 32 bytes always encode to 64 hex digits.
        hex::encode_to_slice(key.expose(), &mut text[..]).map_err(serde::ser::Error::custom)?;
        let text = std::str::from_utf8(&text[..]).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = AesKey;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an AES-256 key as 64 hex digits")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<AesKey, E> {
            let mut bytes = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text, &mut bytes[..]).map_err(|_| E::custom("invalid key: expected 64 hex digits"))?;
            Ok(AesKey::from_bytes(*bytes))
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AesKey, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

/// `#[serde(with = "serde_hex::bytes")]` for a fixed-size byte array.
pub(crate) mod bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    struct BytesVisitor<const N: usize>;

    impl<const N: usize> Visitor<'_> for BytesVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} hex digits", N * 2)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<[u8; N], E> {
            let mut out = [0u8; N];
            hex::decode_to_slice(text, &mut out).map_err(|_| E::custom(format!("expected {} hex digits", N * 2)))?;
            Ok(out)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        d.deserialize_str(BytesVisitor::<N>)
    }
}

/// `#[serde(with = "serde_hex::account")]` for an [`Account`]: the full digits (the profile is
/// the SIM's secure storage; everything else shows the masked form).
pub(crate) mod account {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(account: &Account, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(account.expose())
    }

    struct AccountVisitor;

    impl Visitor<'_> for AccountVisitor {
        type Value = Account;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an account number of 12 to 19 digits")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Account, E> {
            Account::new(text).map_err(|_| E::custom("invalid account number: expected 12 to 19 digits"))
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Account, D::Error> {
        d.deserialize_str(AccountVisitor)
    }
}

/// `#[serde(with = "serde_hex::rsn")]` for an [`Rsn`](mps_protocol::Rsn): 16 hex digits.
pub(crate) mod rsn {
    use super::*;
    use mps_protocol::Rsn;

    pub(crate) fn serialize<S: Serializer>(rsn: &Rsn, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rsn.to_hex())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rsn, D::Error> {
        super::bytes::deserialize::<D, 8>(d).map(Rsn)
    }
}
