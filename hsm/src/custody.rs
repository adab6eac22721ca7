//! Key custody (DESIGN.md section 3): what each issuer key must look like on the token, the
//! check that every pool and every ceremony runs before it uses a key, and the versions of the
//! key-encryption key (`mps-kek`, `mps-kek-2`, ...) that KEK rotation creates.
//!
//! The check reads the key's attributes and refuses, naming the key and the attribute, a key
//! that is public, not sensitive, extractable or allowed a use it does not need. For a KEK it
//! also proves that the module enforces its `CKA_UNWRAP_TEMPLATE`: it wraps a throwaway session
//! key and asks to unwrap it as a non-sensitive key, which must be refused. SoftHSM 2.6.1
//! enforces unwrap templates and does not know `CKA_DERIVE_TEMPLATE` (docs/HSM.md).

use std::os::raw::c_ulong;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::error::{HsmError, from_cryptoki, rv_of};
use crate::module::find_token_object;

/// `CKA_UNWRAP_TEMPLATE` (`CKF_ARRAY_ATTRIBUTE | 0x212`), which cryptoki 0.12 has no variant for.
const CKA_UNWRAP_TEMPLATE: c_ulong = 0x4000_0212;
/// `CKA_SENSITIVE`.
const CKA_SENSITIVE: c_ulong = 0x0000_0103;
/// `CK_TRUE`, with a fixed address for the nested template to point at.
static CK_TRUE: u8 = 1;

// A `CK_ATTRIBUTE` is `{ CK_ULONG type; void *pValue; CK_ULONG ulValueLen; }`; the nested
// template below is written as three machine words, which holds where a pointer and a
// `CK_ULONG` have the same size (every Unix PKCS#11 target).
const _: () = assert!(size_of::<c_ulong>() == size_of::<usize>());

/// The `CKA_UNWRAP_TEMPLATE` of every KEK: whatever it unwraps is `CKA_SENSITIVE = true`. It
/// does not force `CKA_EXTRACTABLE = false`: rewrapping a chain key under a newer KEK needs
/// the unwrapped key wrappable once more.
///
/// The attribute's value is an array of `CK_ATTRIBUTE` whose `pValue` points at a static
/// `CK_TRUE`: the module reads it during the call and copies it.
pub(crate) fn unwrap_template_forcing_sensitive() -> Attribute {
    let mut nested = Vec::with_capacity(3 * size_of::<usize>());
    nested.extend_from_slice(&CKA_SENSITIVE.to_ne_bytes());
    nested.extend_from_slice(&std::ptr::addr_of!(CK_TRUE).expose_provenance().to_ne_bytes());
    nested.extend_from_slice(&(1 as c_ulong).to_ne_bytes());
    Attribute::VendorDefined((AttributeType::VendorDefined(CKA_UNWRAP_TEMPLATE), nested))
}

/// What an issuer key is for; each role has exactly one set of allowed usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// `mps-kek-*`: wraps and unwraps chain keys. A KEK that `authz keys rewrap` drained has
    /// `CKA_UNWRAP` cleared, which is allowed (it only narrows the key).
    KeyEncryption,
    /// `mps-imk`: derives CK_0.
    IssuerMaster,
    /// `mps-pvk`: HMAC of password verification values.
    PasswordVerification,
    /// `mps-sign` private key: ECDSA signatures.
    Signing,
    /// `mps-tk-<vendor>`: wraps CK_0 for a SIM vendor.
    Transport,
}

impl KeyRole {
    fn class(self) -> ObjectClass {
        match self {
            Self::Signing => ObjectClass::PRIVATE_KEY,
            _ => ObjectClass::SECRET_KEY,
        }
    }

    fn key_type(self) -> KeyType {
        match self {
            Self::PasswordVerification => KeyType::GENERIC_SECRET,
            Self::Signing => KeyType::EC,
            _ => KeyType::AES,
        }
    }

    /// (attribute, required value); `None` for a usage that may be either (a drained KEK's
    /// UNWRAP).
    fn usage(self) -> [(AttributeType, &'static str, Option<bool>); 7] {
        let (encrypt, decrypt, sign, verify, wrap, unwrap, derive) = match self {
            Self::KeyEncryption => (false, false, false, false, Some(true), None, false),
            Self::IssuerMaster => (false, false, false, false, Some(false), Some(false), true),
            Self::PasswordVerification => (false, false, true, true, Some(false), Some(false), false),
            Self::Signing => (false, false, true, false, Some(false), Some(false), false),
            Self::Transport => (false, false, false, false, Some(true), Some(false), false),
        };
        [
            (AttributeType::Encrypt, "CKA_ENCRYPT", Some(encrypt)),
            (AttributeType::Decrypt, "CKA_DECRYPT", Some(decrypt)),
            (AttributeType::Sign, "CKA_SIGN", Some(sign)),
            // A private key has no CKA_VERIFY; absent counts as false.
            (AttributeType::Verify, "CKA_VERIFY", Some(verify)),
            (AttributeType::Wrap, "CKA_WRAP", wrap),
            (AttributeType::Unwrap, "CKA_UNWRAP", unwrap),
            (AttributeType::Derive, "CKA_DERIVE", Some(derive)),
        ]
    }
}

/// A key that is weaker than the policy of DESIGN.md section 3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key {label:?} fails the key policy: {attribute} is {found}, must be {required}. \
     An issuer key must be a private, sensitive, non-extractable token object with only its own \
     usage; replace it (docs/HSM.md: for mps-kek run `mps-hsm keys rotate-kek` then \
     `authz keys rewrap`)"
)]
pub struct PolicyViolation {
    /// The key's label.
    pub label: String,
    /// The PKCS#11 attribute, e.g. `CKA_PRIVATE`.
    pub attribute: &'static str,
    /// What the token says.
    pub found: String,
    /// What the policy requires.
    pub required: String,
}

/// The value of boolean attribute `wanted` among `attributes`, if the token returned it.
pub(crate) fn bool_attribute(attributes: &[Attribute], wanted: AttributeType) -> Option<bool> {
    attributes.iter().find(|a| a.attribute_type() == wanted).and_then(|a| match a {
        Attribute::Sensitive(v)
        | Attribute::Extractable(v)
        | Attribute::Trusted(v)
        | Attribute::Token(v)
        | Attribute::Private(v)
        | Attribute::AlwaysSensitive(v)
        | Attribute::NeverExtractable(v)
        | Attribute::WrapWithTrusted(v)
        | Attribute::Local(v)
        | Attribute::Modifiable(v)
        | Attribute::Copyable(v)
        | Attribute::Encrypt(v)
        | Attribute::Decrypt(v)
        | Attribute::Sign(v)
        | Attribute::Verify(v)
        | Attribute::Wrap(v)
        | Attribute::Unwrap(v)
        | Attribute::Derive(v) => Some(*v),
        _ => None,
    })
}

fn shown(value: Option<bool>) -> String {
    match value {
        Some(true) => "true".to_owned(),
        Some(false) => "false".to_owned(),
        None => "absent".to_owned(),
    }
}

/// Checks the attributes of the token key `handle` labelled `label` against `role`.
pub(crate) fn check_key(session: &Session, handle: ObjectHandle, label: &str, role: KeyRole) -> Result<(), HsmError> {
    let mut wanted = vec![
        AttributeType::Class,
        AttributeType::KeyType,
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
    ];
    wanted.extend(role.usage().iter().map(|(t, _, _)| *t));
    let attributes = session.get_attributes(handle, &wanted).map_err(from_cryptoki)?;
    let violation = |attribute: &'static str, found: String, required: &str| {
        HsmError::KeyPolicy(PolicyViolation {
            label: label.to_owned(),
            attribute,
            found,
            required: required.to_owned(),
        })
    };
    let class = attributes.iter().find_map(|a| if let Attribute::Class(c) = a { Some(*c) } else { None });
    if class != Some(role.class()) {
        return Err(violation("CKA_CLASS", format!("{class:?}"), &role.class().to_string()));
    }
    let key_type = attributes.iter().find_map(|a| if let Attribute::KeyType(t) = a { Some(*t) } else { None });
    if key_type != Some(role.key_type()) {
        return Err(violation("CKA_KEY_TYPE", format!("{key_type:?}"), &role.key_type().to_string()));
    }
    for (attribute_type, name, required) in [
        (AttributeType::Token, "CKA_TOKEN", true),
        (AttributeType::Private, "CKA_PRIVATE", true),
        (AttributeType::Sensitive, "CKA_SENSITIVE", true),
        (AttributeType::Extractable, "CKA_EXTRACTABLE", false),
    ] {
        let found = bool_attribute(&attributes, attribute_type);
        if found != Some(required) {
            return Err(violation(name, shown(found), &required.to_string()));
        }
    }
    for (attribute_type, name, required) in role.usage() {
        let found = bool_attribute(&attributes, attribute_type);
        // An attribute the key type does not have (CKA_VERIFY of a private key) is "false".
        let effective = found.unwrap_or(false);
        if let Some(required) = required
            && effective != required
        {
            return Err(violation(name, shown(found), &required.to_string()));
        }
    }
    Ok(())
}

/// Proves that the KEK `kek` (labelled `label`) carries an unwrap template that the module
/// enforces: a throwaway extractable session key is wrapped under it and unwrapping it as a
/// non-sensitive key must be refused. Every object made here is destroyed. A KEK whose
/// `CKA_UNWRAP` is cleared (drained) cannot unwrap at all, which is stronger still.
pub(crate) fn check_unwrap_template(session: &Session, kek: ObjectHandle, label: &str) -> Result<(), HsmError> {
    let unwrap = session.get_attributes(kek, &[AttributeType::Unwrap]).map_err(from_cryptoki)?;
    if bool_attribute(&unwrap, AttributeType::Unwrap) != Some(true) {
        return Ok(());
    }
    // A key shaped like a chain key on its way between KEKs: no usage, extractable, sensitive.
    let mut template = crate::templates::chain_key_in_transit();
    template.push(Attribute::ValueLen(32.into()));
    let probe = session.generate_key(&Mechanism::AesKeyGen, &template).map_err(from_cryptoki)?;
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, kek, probe).map_err(from_cryptoki);
    let _ = session.destroy_object(probe);
    let wrapped = wrapped?;
    let attempt = session.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        kek,
        &wrapped,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ],
    );
    match attempt {
        Err(e) if rv_of(&e) == Some(RvError::TemplateInconsistent) => Ok(()),
        Err(e) => Err(from_cryptoki(e)),
        Ok(clear) => {
            let _ = session.destroy_object(clear);
            Err(HsmError::KeyPolicy(PolicyViolation {
                label: label.to_owned(),
                attribute: "CKA_UNWRAP_TEMPLATE",
                found: "absent or not enforced (a non-sensitive unwrap succeeded)".to_owned(),
                required: "CKA_SENSITIVE = true, enforced".to_owned(),
            }))
        }
    }
}

/// A chain key as the ledger stores it: RFC 5649 (`CKM_AES_KEY_WRAP_PAD`) under the KEK of
/// `kek_version`. The ledger keeps the version beside the bytes so that a rotation can move
/// records to a newer KEK one at a time while the older one still unwraps the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WrappedChainKey {
    /// The KEK version ([`kek_label`] gives its label).
    pub kek_version: u32,
    /// The wrapped key.
    pub bytes: [u8; mps_protocol::perso::WRAPPED_KEY_LEN],
}

impl std::fmt::Debug for WrappedChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Wrapped bytes are not a secret in clear, but nothing gains from seeing them in logs.
        f.debug_struct("WrappedChainKey").field("kek_version", &self.kek_version).finish_non_exhaustive()
    }
}

/// The label of KEK `version`: version 1 is the configured base label (`mps-kek`), version
/// n >= 2 is `<base>-<n>` (`mps-kek-2`).
pub fn kek_label(base: &str, version: u32) -> String {
    if version <= 1 { base.to_owned() } else { format!("{base}-{version}") }
}

/// The highest KEK version a pool looks for; rotations beyond it are refused.
pub const KEK_VERSION_MAX: u32 = 999;

/// The version a label names, if it is a KEK label of `base`.
pub fn kek_version(base: &str, label: &str) -> Option<u32> {
    if label == base {
        return Some(1);
    }
    let digits = label.strip_prefix(base)?.strip_prefix('-')?;
    let version: u32 = digits.parse().ok()?;
    // One spelling per version: "mps-kek-2", never "mps-kek-02" or "mps-kek-1".
    ((2..=KEK_VERSION_MAX).contains(&version) && digits == version.to_string()).then_some(version)
}

/// Every secret token key the session can see, with its label (one search: a token holds a
/// handful of issuer keys, never per-SIM keys). Labels are read lossily as UTF-8.
pub(crate) fn token_secret_keys(session: &Session) -> Result<Vec<(String, ObjectHandle)>, HsmError> {
    let handles = {
        let _lookup = crate::module::key_lookup_lock();
        session
            .find_objects(&[Attribute::Token(true), Attribute::Class(ObjectClass::SECRET_KEY)])
            .map_err(from_cryptoki)?
    };
    let mut keys = Vec::with_capacity(handles.len());
    for handle in handles {
        let attributes = session.get_attributes(handle, &[AttributeType::Label]).map_err(from_cryptoki)?;
        let label = attributes
            .iter()
            .find_map(
                |a| if let Attribute::Label(l) = a { Some(String::from_utf8_lossy(l).into_owned()) } else { None },
            )
            .unwrap_or_default();
        keys.push((label, handle));
    }
    Ok(keys)
}

/// Every KEK version on the token, ascending, with its handle.
pub(crate) fn find_keks(session: &Session, base: &str) -> Result<Vec<(u32, ObjectHandle)>, HsmError> {
    let mut found = Vec::new();
    for (label, handle) in token_secret_keys(session)? {
        if let Some(version) = kek_version(base, &label) {
            if found.iter().any(|(v, _)| *v == version) {
                return Err(HsmError::DuplicateKey { label: kek_label(base, version) });
            }
            found.push((version, handle));
        }
    }
    found.sort_by_key(|(version, _)| *version);
    Ok(found)
}

/// Checks every key a pool uses: each KEK version (attributes, and its unwrap template where
/// it can still unwrap), mps-imk, mps-pvk and mps-sign. Returns the KEK versions, ascending.
pub(crate) fn check_pool_keys(
    session: &Session,
    labels: &crate::config::KeyLabels,
) -> Result<Vec<(u32, ObjectHandle)>, HsmError> {
    let keks = find_keks(session, &labels.key_encryption)?;
    let Some(&(newest, _)) = keks.last() else {
        return Err(HsmError::KeyNotFound { label: labels.key_encryption.clone() });
    };
    for &(version, handle) in &keks {
        let label = kek_label(&labels.key_encryption, version);
        match check_key(session, handle, &label, KeyRole::KeyEncryption)
            .and_then(|()| check_unwrap_template(session, handle, &label))
        {
            Ok(()) => {}
            // An older KEK that fails the policy (the public mps-kek of an earlier ceremony)
            // may still serve unwraps while `authz keys rewrap` moves its records to the
            // newest one: that is the upgrade path. New records never go under it.
            Err(HsmError::KeyPolicy(violation)) if version < newest => {
                tracing::warn!(
                    key = %label,
                    problem = %violation,
                    "an older KEK fails the key policy: it is used only to unwrap until `authz keys rewrap` \
                     has moved every record to the newest KEK; then retire it"
                );
            }
            Err(e) => return Err(e),
        }
    }
    let mut keys = vec![
        (&labels.issuer_master, KeyRole::IssuerMaster),
        (&labels.password_verification, KeyRole::PasswordVerification),
        (&labels.signing, KeyRole::Signing),
    ];
    if let Some(next) = &labels.signing_next {
        keys.push((next, KeyRole::Signing));
    }
    for (label, role) in keys {
        let handle = find_token_object(session, role.class(), label)?
            .ok_or_else(|| HsmError::KeyNotFound { label: label.clone() })?;
        check_key(session, handle, label, role)?;
    }
    Ok(keks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_labels_are_versioned_from_two() {
        assert_eq!(kek_label("mps-kek", 1), "mps-kek");
        assert_eq!(kek_label("mps-kek", 2), "mps-kek-2");
        assert_eq!(kek_label("bank-kek", 17), "bank-kek-17");
    }

    #[test]
    fn kek_versions_parse_back_from_labels() {
        assert_eq!(kek_version("mps-kek", "mps-kek"), Some(1));
        assert_eq!(kek_version("mps-kek", "mps-kek-2"), Some(2));
        assert_eq!(kek_version("mps-kek", "mps-kek-999"), Some(999));
        for other in ["mps-kek-1", "mps-kek-02", "mps-kek-", "mps-kek-x", "mps-kek2", "mps-imk", "mps-kek-1000"] {
            assert_eq!(kek_version("mps-kek", other), None, "{other}");
        }
    }

    #[test]
    fn the_unwrap_template_is_one_nested_attribute() {
        let Attribute::VendorDefined((AttributeType::VendorDefined(kind), bytes)) = unwrap_template_forcing_sensitive()
        else {
            unreachable!("the template is a raw array attribute")
        };
        assert_eq!(kind, CKA_UNWRAP_TEMPLATE);
        assert_eq!(bytes.len(), 3 * size_of::<usize>());
        assert_eq!(bytes[..size_of::<c_ulong>()], CKA_SENSITIVE.to_ne_bytes());
    }

    #[test]
    fn every_role_allows_only_its_usage() {
        let allowed = |role: KeyRole| -> Vec<&'static str> {
            role.usage().iter().filter(|(_, _, v)| *v != Some(false)).map(|(_, n, _)| *n).collect()
        };
        assert_eq!(allowed(KeyRole::KeyEncryption), ["CKA_WRAP", "CKA_UNWRAP"]);
        assert_eq!(allowed(KeyRole::IssuerMaster), ["CKA_DERIVE"]);
        assert_eq!(allowed(KeyRole::PasswordVerification), ["CKA_SIGN", "CKA_VERIFY"]);
        assert_eq!(allowed(KeyRole::Signing), ["CKA_SIGN"]);
        assert_eq!(allowed(KeyRole::Transport), ["CKA_WRAP"]);
    }
}
