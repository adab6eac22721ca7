//! Mechanisms and attribute templates of DESIGN.md section 3: the one raw mechanism cryptoki
//! lacks (`CKM_AES_ECB_ENCRYPT_DATA`), and for each key the issuer creates in a session, the
//! template that gives it only the usage it needs.
//!
//! Every usage attribute is set explicitly (true or false), because PKCS#11 leaves their
//! defaults to the token.

use cryptoki::mechanism::misc::KeyDerivationStringData;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};

/// `CKM_AES_ECB_ENCRYPT_DATA` (PKCS#11 v2.40 section 2.15.2).
const CKM_AES_ECB_ENCRYPT_DATA: std::os::raw::c_ulong = 0x0000_1104;

/// The mechanism type of `CKM_AES_ECB_ENCRYPT_DATA`, which cryptoki 0.12 has no constant for
/// and whose checked constructor refuses values below `CKM_VENDOR_DEFINED`.
fn aes_ecb_encrypt_data_type() -> MechanismType {
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over `CK_MECHANISM_TYPE`
    // (= `CK_ULONG` = `c_ulong`), so both have the same size, alignment and validity: every
    // `c_ulong` is a valid `CK_MECHANISM_TYPE` (the type is a plain integer with no niche and
    // cryptoki's only invariant is that the value names a mechanism, which 0x1104 does).
    // `transmute` also checks the sizes at compile time.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::transmute::<std::os::raw::c_ulong, MechanismType>(CKM_AES_ECB_ENCRYPT_DATA)
    }
}

/// `CKM_AES_ECB_ENCRYPT_DATA` over `data`: the derived value is AES-256-ECB(base, data).
/// `data` must be the 32 bytes of `mps_protocol::keys::kdf_data`.
pub(crate) fn ecb_encrypt_data<'a>(data: &'a KeyDerivationStringData<'a>) -> Mechanism<'a> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new(aes_ecb_encrypt_data_type(), Some(data)))
}

/// Usage attributes, all given explicitly.
#[derive(Clone, Copy, Default)]
struct Usage {
    encrypt: bool,
    decrypt: bool,
    sign: bool,
    verify: bool,
    wrap: bool,
    unwrap: bool,
    derive: bool,
}

fn aes_session_key(usage: Usage, extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Encrypt(usage.encrypt),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Sign(usage.sign),
        Attribute::Verify(usage.verify),
        Attribute::Wrap(usage.wrap),
        Attribute::Unwrap(usage.unwrap),
        Attribute::Derive(usage.derive),
    ]
}

/// CK_{n-1} unwrapped from the ledger: derive only, not extractable. No `CKA_VALUE_LEN`:
/// SoftHSM refuses it in an unwrap template (the length comes from the wrapped data).
/// `CKA_SENSITIVE = true` is stated because the KEK's unwrap template demands it.
pub(crate) fn unwrapped_chain_key() -> Vec<Attribute> {
    aes_session_key(Usage { derive: true, ..Usage::default() }, false)
}

/// A chain key unwrapped only to be wrapped again under a newer KEK (KEK rotation): no usage
/// at all, extractable so that the newer KEK can wrap it, sensitive as every KEK's unwrap
/// template demands.
pub(crate) fn chain_key_in_transit() -> Vec<Attribute> {
    aes_session_key(Usage::default(), true)
}

/// A derived AES-256 key: `CKA_VALUE_LEN = 32` is required by `CKM_AES_ECB_ENCRYPT_DATA`.
fn derived(usage: Usage) -> Vec<Attribute> {
    let mut template = aes_session_key(usage, false);
    template.push(Attribute::ValueLen(32.into()));
    template
}

/// Ki_n: CMAC signing only.
pub(crate) fn integrity_key() -> Vec<Attribute> {
    derived(Usage { sign: true, ..Usage::default() })
}

/// Ks_n: CBC encryption and decryption only.
pub(crate) fn encryption_key() -> Vec<Attribute> {
    derived(Usage { encrypt: true, decrypt: true, ..Usage::default() })
}

/// CK_n and CK_0: derive only, sensitive, and extractable, because the ledger stores it
/// wrapped under mps-kek (and the SIM vendor gets CK_0 under its transport key): the only
/// extractable key the issuer makes (DESIGN.md section 3). Not `CKA_WRAP_WITH_TRUSTED`: on
/// SoftHSM only the security officer can make a trusted key, and only as a public object,
/// which would leave mps-kek in clear in the token directory (docs/HSM.md).
pub(crate) fn chain_key() -> Vec<Attribute> {
    let mut template = aes_session_key(Usage { derive: true, ..Usage::default() }, true);
    template.push(Attribute::ValueLen(32.into()));
    template
}

/// The template of a session copy of a long-lived token key: only `CKA_TOKEN` changes;
/// sensitivity, extractability and usage are copied (and cannot be relaxed by a copy).
pub(crate) fn session_copy() -> [Attribute; 1] {
    [Attribute::Token(false)]
}

/// DER of the P-256 curve OID 1.2.840.10045.3.1.7 (`CKA_EC_PARAMS`).
pub(crate) const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_mechanism_carries_the_value() {
        let data = [0u8; 32];
        let params = KeyDerivationStringData::new(&data);
        let mechanism = ecb_encrypt_data(&params);
        let raw: cryptoki::mechanism::MechanismType = mechanism.mechanism_type();
        assert_eq!(format!("{raw}"), "CKM_AES_ECB_ENCRYPT_DATA");
    }

    #[test]
    fn chain_key_is_the_only_extractable_and_always_sensitive() {
        let template = chain_key();
        assert!(template.contains(&Attribute::Extractable(true)));
        assert!(template.contains(&Attribute::Private(true)));
        for other in [unwrapped_chain_key(), integrity_key(), encryption_key()] {
            assert!(other.contains(&Attribute::Extractable(false)) && other.contains(&Attribute::Sensitive(true)));
        }
        assert!(chain_key_in_transit().contains(&Attribute::Sensitive(true)));
        assert!(chain_key_in_transit().contains(&Attribute::Derive(false)));
        assert!(template.contains(&Attribute::Sensitive(true)));
        assert!(template.contains(&Attribute::Encrypt(false)));
        assert!(!unwrapped_chain_key().iter().any(|a| matches!(a, Attribute::ValueLen(_))));
        assert!(integrity_key().contains(&Attribute::Sign(true)));
        assert!(integrity_key().contains(&Attribute::Decrypt(false)));
    }
}
