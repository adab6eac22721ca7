//! The key ceremony: creates the issuer keys of DESIGN.md section 3 on the token, exactly
//! once, rotates and retires the key-encryption key, and lists what the token holds (never a
//! value).
//!
//! Every issuer key is a private token object of the user: sensitive, never extractable, with
//! only the usage it needs; `mps-kek` also carries a `CKA_UNWRAP_TEMPLATE` that forces
//! `CKA_SENSITIVE` on whatever it unwraps. No key is made by the security officer any more:
//! SoftHSM lets the SO create only public objects, whose values it stores in clear in the
//! token directory and which any process can use without a PIN (docs/HSM.md). Keys that exist
//! are kept and checked against the policy ([`crate::custody`]), never overwritten.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::config::{HsmConfig, Pin};
use crate::custody::{
    KEK_VERSION_MAX, KeyRole, bool_attribute, check_key, check_pool_keys, check_unwrap_template, find_keks, kek_label,
    token_secret_keys, unwrap_template_forcing_sensitive,
};
use crate::error::{HsmError, from_cryptoki};
use crate::module::{self, Initialised, OwnedSession, find_token_object};
use crate::templates::P256_OID_DER;

/// Label prefix of SIM vendors' transport keys: `mps-tk-<vendor>`.
pub const TRANSPORT_KEY_PREFIX: &str = "mps-tk-";

/// Why the ceremony stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
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
    /// A KEK operation the key's state does not allow.
    #[error("{label}: {reason}")]
    KekRefused {
        /// The KEK's label.
        label: String,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// The HSM failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

/// What the ceremony did with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Created now.
    Created,
    /// Existed and was kept; `violation` says how it fails the key policy, if it does.
    Kept {
        /// The policy violation of the existing key, if any.
        violation: Option<String>,
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

/// Usage attributes of a secret key, all given explicitly: (sign/verify, wrap, unwrap, derive).
#[derive(Clone, Copy)]
struct SecretUsage {
    sign_verify: bool,
    wrap: bool,
    unwrap: bool,
    derive: bool,
}

/// A private, sensitive, non-extractable secret token key of the user, with only `usage`.
fn secret_key(label: &str, key_type: KeyType, usage: SecretUsage) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(usage.sign_verify),
        Attribute::Verify(usage.sign_verify),
        Attribute::Wrap(usage.wrap),
        Attribute::Unwrap(usage.unwrap),
        Attribute::Derive(usage.derive),
    ];
    template.extend(label_attr(label));
    template
}

/// A KEK (any version): AES-256, WRAP and UNWRAP only, and an unwrap template forcing
/// `CKA_SENSITIVE` on every key it unwraps.
pub(crate) fn kek_template(label: &str) -> Vec<Attribute> {
    let mut template =
        secret_key(label, KeyType::AES, SecretUsage { sign_verify: false, wrap: true, unwrap: true, derive: false });
    template.push(Attribute::ValueLen(32.into()));
    template.push(unwrap_template_forcing_sensitive());
    template
}

/// A SIM vendor's transport key: AES-256, WRAP only.
fn transport_template(label: &str) -> Vec<Attribute> {
    secret_key(label, KeyType::AES, SecretUsage { sign_verify: false, wrap: true, unwrap: false, derive: false })
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

/// How an existing key measures against its role's policy, for the report.
fn kept(session: &Session, handle: ObjectHandle, label: &str, role: KeyRole) -> Result<KeyOutcome, HsmError> {
    let checked = check_key(session, handle, label, role).and_then(|()| match role {
        KeyRole::KeyEncryption => check_unwrap_template(session, handle, label),
        _ => Ok(()),
    });
    match checked {
        Ok(()) => Ok(KeyOutcome::Kept { violation: None }),
        Err(HsmError::KeyPolicy(violation)) => Ok(KeyOutcome::Kept { violation: Some(violation.to_string()) }),
        Err(e) => Err(e),
    }
}

/// A read-write session on the configured token, logged in as the user.
struct UserSession {
    owned: OwnedSession,
    _module: Initialised,
}

impl UserSession {
    fn open(config: &HsmConfig, user_pin: &Pin) -> Result<Self, HsmError> {
        let (initialised, owned) = module::user_session(&config.module_path, &config.token_label, true, user_pin)?;
        // Closing this session (not C_Logout) leaves any other session of the process logged in.
        Ok(Self { owned, _module: initialised })
    }

    fn get(&self) -> Result<&Session, HsmError> {
        self.owned.get()
    }
}

/// Runs the ceremony as the user: creates whichever of `mps-kek` (version 1, when no KEK
/// version exists), `mps-imk`, `mps-pvk`, the `mps-sign` pair and a generated
/// `mps-tk-<vendor>` for each of `transport_vendors` is missing. Existing keys are kept and
/// their policy reported. Labels come from `config.keys`.
///
/// A generated transport key cannot be known to any vendor: it serves benchmarks and smoke
/// tests. A real vendor's key is imported with [`import_transport_key`].
pub fn init_keys(
    config: &HsmConfig,
    user_pin: &Pin,
    transport_vendors: &[String],
) -> Result<CeremonyReport, CeremonyError> {
    let labels = &config.keys;
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    let mut report = Vec::new();

    let keks = find_keks(session, &labels.key_encryption)?;
    if keks.is_empty() {
        session.generate_key(&Mechanism::AesKeyGen, &kek_template(&labels.key_encryption)).map_err(from_cryptoki)?;
        report.push((labels.key_encryption.clone(), KeyOutcome::Created));
    }
    for (version, handle) in keks {
        let label = kek_label(&labels.key_encryption, version);
        report.push((label.clone(), kept(session, handle, &label, KeyRole::KeyEncryption)?));
    }

    let mut secrets = vec![
        (
            labels.issuer_master.clone(),
            KeyRole::IssuerMaster,
            secret_key(
                &labels.issuer_master,
                KeyType::AES,
                SecretUsage { sign_verify: false, wrap: false, unwrap: false, derive: true },
            ),
            Mechanism::AesKeyGen,
        ),
        (
            labels.password_verification.clone(),
            KeyRole::PasswordVerification,
            secret_key(
                &labels.password_verification,
                KeyType::GENERIC_SECRET,
                SecretUsage { sign_verify: true, wrap: false, unwrap: false, derive: false },
            ),
            Mechanism::GenericSecretKeyGen,
        ),
    ];
    for vendor in transport_vendors {
        let label = transport_key_label(vendor)?;
        if !secrets.iter().any(|(l, ..)| *l == label) {
            let template = transport_template(&label);
            secrets.push((label, KeyRole::Transport, template, Mechanism::AesKeyGen));
        }
    }
    for (label, role, mut template, mechanism) in secrets {
        match find_token_object(session, ObjectClass::SECRET_KEY, &label)? {
            Some(handle) => report.push((label.clone(), kept(session, handle, &label, role)?)),
            None => {
                template.push(Attribute::ValueLen(32.into()));
                session.generate_key(&mechanism, &template).map_err(from_cryptoki)?;
                report.push((label, KeyOutcome::Created));
            }
        }
    }

    let private = find_token_object(session, ObjectClass::PRIVATE_KEY, &labels.signing)?;
    let public = find_token_object(session, ObjectClass::PUBLIC_KEY, &labels.signing)?;
    match (private, public) {
        (Some(handle), Some(_)) => {
            report.push((labels.signing.clone(), kept(session, handle, &labels.signing, KeyRole::Signing)?))
        }
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
    Ok(CeremonyReport { keys: report })
}

/// Imports the transport key of a SIM vendor, `mps-tk-<vendor>`, from its clear value, as the
/// user: a private token object, sensitive, not extractable, WRAP only.
///
/// Transport keys are shared with the SIM vendor, so unlike the issuer's own keys they cannot
/// simply be generated: at a key ceremony the vendor's key components are combined and entered
/// here once. An existing key of that label is kept and reported, never overwritten (its value
/// cannot be read back to compare).
pub fn import_transport_key(
    config: &HsmConfig,
    user_pin: &Pin,
    vendor: &str,
    value: &zeroize::Zeroizing<[u8; 32]>,
) -> Result<KeyOutcome, CeremonyError> {
    let label = transport_key_label(vendor)?;
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    if let Some(handle) = find_token_object(session, ObjectClass::SECRET_KEY, &label)? {
        return Ok(kept(session, handle, &label, KeyRole::Transport)?);
    }
    let mut template = transport_template(&label);
    template.push(Attribute::Value(value.to_vec()));
    let created = session.create_object(&template).map_err(from_cryptoki);
    // The template held a copy of the clear value: wipe it.
    for attribute in &mut template {
        if let Attribute::Value(bytes) = attribute {
            zeroize::Zeroize::zeroize(bytes);
        }
    }
    created?;
    Ok(KeyOutcome::Created)
}

/// Checks every issuer key on the token against the key policy, as a starting pool does,
/// plus every transport key: `Ok` with the labels checked, or the first violation.
pub fn check_keys(config: &HsmConfig, user_pin: &Pin) -> Result<Vec<String>, CeremonyError> {
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    let labels = &config.keys;
    let keks = check_pool_keys(session, labels)?;
    let mut checked: Vec<String> = keks.iter().map(|(v, _)| kek_label(&labels.key_encryption, *v)).collect();
    checked.extend([labels.issuer_master.clone(), labels.password_verification.clone(), labels.signing.clone()]);
    for (label, handle) in token_secret_keys(session)? {
        if label.starts_with(TRANSPORT_KEY_PREFIX) {
            check_key(session, handle, &label, KeyRole::Transport)?;
            checked.push(label);
        }
    }
    Ok(checked)
}

/// Signing-key renewal, step 1: creates a new P-256 pair labelled `label` (private key
/// private, sensitive, not extractable, SIGN only) while the current one keeps signing. Its
/// certificate is then issued through the HSM (`pki issue --role bank-signing --hsm-config`
/// with `MPS_HSM__KEYS__SIGNING=<label>`), and authz switches to it at a configured time
/// (docs/HSM.md). An existing pair of that label is kept and checked, never replaced.
pub fn create_signing_key(config: &HsmConfig, user_pin: &Pin, label: &str) -> Result<KeyOutcome, CeremonyError> {
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    let private = find_token_object(session, ObjectClass::PRIVATE_KEY, label)?;
    let public = find_token_object(session, ObjectClass::PUBLIC_KEY, label)?;
    match (private, public) {
        (Some(handle), Some(_)) => Ok(kept(session, handle, label, KeyRole::Signing)?),
        (None, None) => {
            let (public, private) = signing_pair(label);
            session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private).map_err(from_cryptoki)?;
            Ok(KeyOutcome::Created)
        }
        _ => {
            Err(CeremonyError::Inconsistent { label: label.to_owned(), reason: "only one half of the key pair exists" })
        }
    }
}

/// KEK rotation, step 1: creates the next KEK version (`mps-kek-<n+1>`) as a private token
/// key with the KEK template. Running pools adopt it within `kek_refresh_ms`; from then on
/// new chain keys are wrapped under it. Returns its version and label.
pub fn rotate_kek(config: &HsmConfig, user_pin: &Pin) -> Result<(u32, String), CeremonyError> {
    let base = &config.keys.key_encryption;
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    let newest = find_keks(session, base)?.last().map(|(v, _)| *v).unwrap_or(0);
    let next = newest + 1;
    let label = kek_label(base, next);
    if next > KEK_VERSION_MAX {
        return Err(CeremonyError::KekRefused { label, reason: "no KEK version is left (the highest is 999)" });
    }
    let handle = session.generate_key(&Mechanism::AesKeyGen, &kek_template(&label)).map_err(from_cryptoki)?;
    // Never leave a KEK on the token that the pools would refuse.
    check_key(session, handle, &label, KeyRole::KeyEncryption)?;
    check_unwrap_template(session, handle, &label)?;
    Ok((next, label))
}

/// The token handle of KEK `version`, refusing the newest one (new chain keys go under it).
fn older_kek(session: &Session, base: &str, version: u32) -> Result<ObjectHandle, CeremonyError> {
    let keks = find_keks(session, base)?;
    let label = kek_label(base, version);
    let newest = keks.last().map(|(v, _)| *v).unwrap_or(0);
    let Some(&(_, handle)) = keks.iter().find(|(v, _)| *v == version) else {
        return Err(CeremonyError::Hsm(HsmError::KeyNotFound { label }));
    };
    if version >= newest {
        return Err(CeremonyError::KekRefused {
            label,
            reason: "this is the newest KEK, under which new chain keys are wrapped; rotate first",
        });
    }
    Ok(handle)
}

/// KEK rotation, step 3 (run by `authz keys rewrap` once the ledger holds no chain key under
/// `version` any more): clears `CKA_UNWRAP` on that older KEK, so that it can unwrap nothing
/// and [`retire_kek`] may destroy it. Only the ledger's owner knows that no record needs it.
pub fn mark_kek_drained(config: &HsmConfig, user_pin: &Pin, version: u32) -> Result<String, CeremonyError> {
    let base = &config.keys.key_encryption;
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    let handle = older_kek(session, base, version)?;
    session.update_attributes(handle, &[Attribute::Unwrap(false)]).map_err(from_cryptoki)?;
    Ok(kek_label(base, version))
}

/// KEK rotation, step 4: destroys an older KEK version, and refuses while it may still be
/// needed: the newest KEK always, and an older one until `authz keys rewrap` has found no
/// chain key under it and marked it drained (`CKA_UNWRAP` false).
pub fn retire_kek(config: &HsmConfig, user_pin: &Pin, version: u32) -> Result<String, CeremonyError> {
    let base = &config.keys.key_encryption;
    let label = kek_label(base, version);
    let user = UserSession::open(config, user_pin)?;
    let session = user.get()?;
    let handle = older_kek(session, base, version)?;
    let unwrap = session.get_attributes(handle, &[AttributeType::Unwrap]).map_err(from_cryptoki)?;
    if unwrap.iter().any(|a| matches!(a, Attribute::Unwrap(true))) {
        return Err(CeremonyError::KekRefused {
            label,
            reason: "chain keys in the ledger may still be wrapped under it: run `authz keys rewrap` until it \
                     reports none left and marks the KEK drained, then retire it",
        });
    }
    session.destroy_object(handle).map_err(from_cryptoki)?;
    Ok(label)
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
    let (_module, owned) = module::user_session(&config.module_path, &config.token_label, false, user_pin)?;
    let session = owned.get()?;
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
        let kek = kek_template("mps-kek");
        assert!(kek.contains(&Attribute::Private(true)) && kek.contains(&Attribute::Sensitive(true)));
        assert!(kek.contains(&Attribute::Encrypt(false)) && kek.contains(&Attribute::Unwrap(true)));
        assert!(kek.contains(&unwrap_template_forcing_sensitive()));
        assert!(!kek.iter().any(|a| a.attribute_type() == AttributeType::Trusted));
        let tk = transport_template("mps-tk-x");
        assert!(tk.contains(&Attribute::Unwrap(false)) && tk.contains(&Attribute::Wrap(true)));
        assert!(tk.contains(&Attribute::Private(true)) && tk.contains(&Attribute::Extractable(false)));
        let (_, private) = signing_pair("mps-sign");
        assert!(private.contains(&Attribute::Sign(true)) && private.contains(&Attribute::Extractable(false)));
    }
}
