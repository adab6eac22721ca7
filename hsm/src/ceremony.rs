//! The key ceremony: creates the issuer keys of DESIGN.md section 3 on the token, exactly
//! once, and lists what the token holds (never a value).
//!
//! `mps-kek` and the transport keys carry `CKA_TRUSTED`, which only the security officer can
//! set, and SoftHSM lets the SO create only public token objects: they are public, sensitive,
//! not extractable. The SO PIN is needed only while one of them is missing. The other keys
//! are private token objects created as the user. Keys that exist are kept and reported,
//! never overwritten or duplicated.
//!
//! The SO cannot log in while a read-only session is open in the process (PKCS#11), so run
//! the ceremony before starting a pool, or in its own process (`mps-hsm keys init`).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};

use crate::config::{HsmConfig, Pin};
use crate::error::{HsmError, from_cryptoki};
use crate::module::{self, OwnedSession, find_slot, find_token_object, login};
use crate::templates::P256_OID_DER;

/// Label prefix of SIM vendors' transport keys: `mps-tk-<vendor>`.
pub const TRANSPORT_KEY_PREFIX: &str = "mps-tk-";

/// Why the ceremony stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// A trusted key must be created and no SO PIN was given.
    #[error("the security officer PIN is needed to create {labels:?} (CKA_TRUSTED keys)")]
    SoPinRequired {
        /// The trusted keys that are missing.
        labels: Vec<String>,
    },
    /// A vendor name that cannot be part of a label.
    #[error("transport key vendor {0:?} must be 1 to 32 characters of a-z, 0-9 and '-'")]
    InvalidVendor(String),
    /// The token holds half of something (one half of the signing key pair).
    #[error("key {label:?} is inconsistent on the token: {reason}; fix it by hand, the ceremony never overwrites")]
    Inconsistent {
        /// The label.
        label: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The HSM failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

/// What the ceremony did with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Created now.
    Created,
    /// Existed and was kept; `compliant` tells whether it is sensitive and not extractable
    /// (and trusted where it must be).
    Kept {
        /// Whether the existing key meets the policy.
        compliant: bool,
    },
}

/// The ceremony's report: one line per key, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyReport {
    /// Label and outcome.
    pub keys: Vec<(String, KeyOutcome)>,
}

/// Checks a vendor name and returns its transport key label.
pub fn transport_key_label(vendor: &str) -> Result<String, CeremonyError> {
    let ok = (1..=32).contains(&vendor.len())
        && vendor.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(format!("{TRANSPORT_KEY_PREFIX}{vendor}"))
    } else {
        Err(CeremonyError::InvalidVendor(vendor.to_owned()))
    }
}

fn label_attr(label: &str) -> [Attribute; 2] {
    [Attribute::Label(label.as_bytes().to_vec()), Attribute::Id(label.as_bytes().to_vec())]
}

/// A trusted AES-256 wrapping key, created by the SO: public token object, sensitive.
fn trusted_wrapping_key(label: &str, unwrap: bool) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Trusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(unwrap),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    template.extend(label_attr(label));
    template
}

/// A private, sensitive, non-extractable secret key of the user.
fn user_secret_key(label: &str, key_type: KeyType, sign_verify: bool, derive: bool) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(sign_verify),
        Attribute::Verify(sign_verify),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(derive),
    ];
    template.extend(label_attr(label));
    template
}

fn signing_pair(label: &str) -> (Vec<Attribute>, Vec<Attribute>) {
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::EcParams(P256_OID_DER.to_vec()),
    ];
    public.extend(label_attr(label));
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    private.extend(label_attr(label));
    (public, private)
}

fn bool_attribute(attributes: &[Attribute], wanted: AttributeType) -> Option<bool> {
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

fn kept(session: &Session, handle: ObjectHandle, trusted: bool) -> Result<KeyOutcome, HsmError> {
    let attributes = session
        .get_attributes(handle, &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Trusted])
        .map_err(from_cryptoki)?;
    let compliant = bool_attribute(&attributes, AttributeType::Sensitive) == Some(true)
        && bool_attribute(&attributes, AttributeType::Extractable) == Some(false)
        && (!trusted || bool_attribute(&attributes, AttributeType::Trusted) == Some(true));
    Ok(KeyOutcome::Kept { compliant })
}

/// Runs the ceremony: creates `mps-kek` and `mps-tk-<vendor>` for each of
/// `transport_vendors` as the SO (only if missing, and then `so_pin` is required), then
/// `mps-imk`, `mps-pvk` and the `mps-sign` pair as the user. Labels come from
/// `config.keys`.
pub fn init_keys(
    config: &HsmConfig,
    user_pin: &Pin,
    so_pin: Option<&Pin>,
    transport_vendors: &[String],
) -> Result<CeremonyReport, CeremonyError> {
    let labels = &config.keys;
    let mut trusted = vec![(labels.key_encryption.clone(), true)];
    for vendor in transport_vendors {
        let label = transport_key_label(vendor)?;
        if !trusted.iter().any(|(l, _)| *l == label) {
            trusted.push((label, false));
        }
    }
    let initialised = module::initialise(&config.module_path)?;
    let slot = find_slot(&initialised.pkcs11, &config.token_label)?;
    let mut report = Vec::new();

    // Trusted keys, as the security officer, only if one is missing.
    {
        let probe = OwnedSession::open(&initialised, slot, true)?;
        let mut missing = Vec::new();
        for (label, unwrap) in &trusted {
            match find_token_object(probe.get()?, ObjectClass::SECRET_KEY, label)? {
                Some(handle) => report.push((label.clone(), kept(probe.get()?, handle, true)?)),
                None => missing.push((label.clone(), *unwrap)),
            }
        }
        drop(probe);
        if !missing.is_empty() {
            let so_pin = so_pin.ok_or_else(|| CeremonyError::SoPinRequired {
                labels: missing.iter().map(|(l, _)| l.clone()).collect(),
            })?;
            let so = OwnedSession::open(&initialised, slot, true)?;
            let session = so.get()?;
            login(session, UserType::So, so_pin)?;
            let created = missing.iter().try_for_each(|(label, unwrap)| {
                session
                    .generate_key(&Mechanism::AesKeyGen, &trusted_wrapping_key(label, *unwrap))
                    .map(|_| report.push((label.clone(), KeyOutcome::Created)))
                    .map_err(from_cryptoki)
            });
            let _ = session.logout();
            created?;
        }
    }

    // User keys.
    let user = OwnedSession::open(&initialised, slot, true)?;
    let session = user.get()?;
    login(session, UserType::User, user_pin)?;
    for (label, key_type, mechanism, sign_verify, derive) in [
        (&labels.issuer_master, KeyType::AES, Mechanism::AesKeyGen, false, true),
        (&labels.password_verification, KeyType::GENERIC_SECRET, Mechanism::GenericSecretKeyGen, true, false),
    ] {
        match find_token_object(session, ObjectClass::SECRET_KEY, label)? {
            Some(handle) => report.push((label.clone(), kept(session, handle, false)?)),
            None => {
                session
                    .generate_key(&mechanism, &user_secret_key(label, key_type, sign_verify, derive))
                    .map_err(from_cryptoki)?;
                report.push((label.clone(), KeyOutcome::Created));
            }
        }
    }
    let private = find_token_object(session, ObjectClass::PRIVATE_KEY, &labels.signing)?;
    let public = find_token_object(session, ObjectClass::PUBLIC_KEY, &labels.signing)?;
    match (private, public) {
        (Some(handle), Some(_)) => report.push((labels.signing.clone(), kept(session, handle, false)?)),
        (None, None) => {
            let (public, private) = signing_pair(&labels.signing);
            session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private).map_err(from_cryptoki)?;
            report.push((labels.signing.clone(), KeyOutcome::Created));
        }
        (Some(_), None) => {
            return Err(CeremonyError::Inconsistent {
                label: labels.signing.clone(),
                reason: "the private key exists without its public key",
            });
        }
        (None, Some(_)) => {
            return Err(CeremonyError::Inconsistent {
                label: labels.signing.clone(),
                reason: "the public key exists without its private key",
            });
        }
    }
    // Closing our sessions (not C_Logout) leaves any other session of the process logged in.
    Ok(CeremonyReport { keys: report })
}

/// Imports the transport key of a SIM vendor, `mps-tk-<vendor>`, from its clear value as the
/// security officer: a public token object, sensitive, not extractable, CKA_TRUSTED, WRAP only.
///
/// Transport keys are shared with the SIM vendor, so unlike the issuer's own keys they cannot
/// simply be generated: at a key ceremony the vendor's key components are combined and entered
/// here once. An existing key of that label is kept and reported, never overwritten (its value
/// cannot be read back to compare).
pub fn import_transport_key(
    config: &HsmConfig,
    so_pin: &Pin,
    vendor: &str,
    value: &zeroize::Zeroizing<[u8; 32]>,
) -> Result<KeyOutcome, CeremonyError> {
    let label = transport_key_label(vendor)?;
    let initialised = module::initialise(&config.module_path)?;
    let slot = find_slot(&initialised.pkcs11, &config.token_label)?;
    let owned = OwnedSession::open(&initialised, slot, true)?;
    let session = owned.get()?;
    if let Some(handle) = find_token_object(session, ObjectClass::SECRET_KEY, &label)? {
        return Ok(kept(session, handle, true)?);
    }
    login(session, UserType::So, so_pin)?;
    let mut template: Vec<Attribute> = trusted_wrapping_key(&label, false)
        .into_iter()
        .filter(|a| a.attribute_type() != AttributeType::ValueLen)
        .collect();
    template.push(Attribute::Value(value.to_vec()));
    let created = session.create_object(&template).map_err(from_cryptoki);
    // The template held a copy of the clear value: wipe it.
    for attribute in &mut template {
        if let Attribute::Value(bytes) = attribute {
            zeroize::Zeroize::zeroize(bytes);
        }
    }
    let _ = session.logout();
    created?;
    Ok(KeyOutcome::Created)
}

/// One token object as `keys list` shows it: attributes only, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `CKA_LABEL`.
    pub label: String,
    /// Object class: "secret", "private", "public" or another class's number.
    pub class: String,
    /// Key type: "AES", "GENERIC_SECRET", "EC", ...
    pub key_type: String,
    /// `CKA_VALUE_LEN` of secret keys.
    pub value_len: Option<u64>,
    /// Boolean attributes present on the object, by PKCS#11 name (without `CKA_`), e.g.
    /// ("SENSITIVE", true).
    pub flags: Vec<(&'static str, bool)>,
}

const LISTED_FLAGS: [(AttributeType, &str); 18] = [
    (AttributeType::Token, "TOKEN"),
    (AttributeType::Private, "PRIVATE"),
    (AttributeType::Sensitive, "SENSITIVE"),
    (AttributeType::Extractable, "EXTRACTABLE"),
    (AttributeType::AlwaysSensitive, "ALWAYS_SENSITIVE"),
    (AttributeType::NeverExtractable, "NEVER_EXTRACTABLE"),
    (AttributeType::Trusted, "TRUSTED"),
    (AttributeType::WrapWithTrusted, "WRAP_WITH_TRUSTED"),
    (AttributeType::Local, "LOCAL"),
    (AttributeType::Modifiable, "MODIFIABLE"),
    (AttributeType::Copyable, "COPYABLE"),
    (AttributeType::Encrypt, "ENCRYPT"),
    (AttributeType::Decrypt, "DECRYPT"),
    (AttributeType::Sign, "SIGN"),
    (AttributeType::Verify, "VERIFY"),
    (AttributeType::Wrap, "WRAP"),
    (AttributeType::Unwrap, "UNWRAP"),
    (AttributeType::Derive, "DERIVE"),
];

/// Lists every token object the user can see, sorted by label and class.
pub fn list_keys(config: &HsmConfig, user_pin: &Pin) -> Result<Vec<KeyInfo>, HsmError> {
    let initialised = module::initialise(&config.module_path)?;
    let slot = find_slot(&initialised.pkcs11, &config.token_label)?;
    let owned = OwnedSession::open(&initialised, slot, false)?;
    let session = owned.get()?;
    login(session, UserType::User, user_pin)?;
    let handles = {
        let _lookup = module::key_lookup_lock();
        session.find_objects(&[Attribute::Token(true)]).map_err(from_cryptoki)?
    };
    let mut keys = Vec::with_capacity(handles.len());
    for handle in handles {
        let mut wanted =
            vec![AttributeType::Label, AttributeType::Class, AttributeType::KeyType, AttributeType::ValueLen];
        wanted.extend(LISTED_FLAGS.iter().map(|(t, _)| *t));
        // `AttributeType::Value` is never asked for.
        let attributes = session.get_attributes(handle, &wanted).map_err(from_cryptoki)?;
        let mut info = KeyInfo {
            label: String::new(),
            class: String::new(),
            key_type: String::new(),
            value_len: None,
            flags: vec![],
        };
        for attribute in &attributes {
            match attribute {
                Attribute::Label(l) => info.label = String::from_utf8_lossy(l).into_owned(),
                Attribute::Class(c) => {
                    info.class = match *c {
                        ObjectClass::SECRET_KEY => "secret".to_owned(),
                        ObjectClass::PRIVATE_KEY => "private".to_owned(),
                        ObjectClass::PUBLIC_KEY => "public".to_owned(),
                        other => other.to_string(),
                    }
                }
                Attribute::KeyType(t) => info.key_type = t.to_string().trim_start_matches("CKK_").to_owned(),
                Attribute::ValueLen(len) => info.value_len = Some(u64::from(*len)),
                _ => {}
            }
        }
        for (attribute_type, name) in LISTED_FLAGS {
            if let Some(value) = bool_attribute(&attributes, attribute_type) {
                info.flags.push((name, value));
            }
        }
        keys.push(info);
    }
    keys.sort_by(|a, b| (&a.label, &a.class).cmp(&(&b.label, &b.class)));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_names_are_checked() {
        assert_eq!(transport_key_label("acme").unwrap(), "mps-tk-acme");
        assert!(transport_key_label("").is_err());
        assert!(transport_key_label("Acme").is_err());
        assert!(transport_key_label("a b").is_err());
        assert!(transport_key_label(&"a".repeat(33)).is_err());
    }

    #[test]
    fn templates_grant_only_the_needed_usage() {
        let kek = trusted_wrapping_key("mps-kek", true);
        assert!(kek.contains(&Attribute::Trusted(true)) && kek.contains(&Attribute::Private(false)));
        assert!(kek.contains(&Attribute::Encrypt(false)) && kek.contains(&Attribute::Unwrap(true)));
        let tk = trusted_wrapping_key("mps-tk-x", false);
        assert!(tk.contains(&Attribute::Unwrap(false)) && tk.contains(&Attribute::Wrap(true)));
        let pvk = user_secret_key("mps-pvk", KeyType::GENERIC_SECRET, true, false);
        assert!(pvk.contains(&Attribute::Sign(true)) && pvk.contains(&Attribute::Derive(false)));
        let (_, private) = signing_pair("mps-sign");
        assert!(private.contains(&Attribute::Sign(true)) && private.contains(&Attribute::Extractable(false)));
    }
}
