//! The multi-HSM pool's rule that every member holds the same keys: checked once when the
//! pool connects, before it serves. A chain key wrapped on one member must unwrap on any
//! other, and a signature must verify under the one published certificate, whichever HSM
//! made it.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::misc::KeyDerivationStringData;

use crate::config::{ConfigError, HsmConfig};
use crate::error::HsmError;
use crate::pool::{Hsm, Route};
use crate::templates;
use crate::worker::Ctx;

/// Derivation data of the key check: AES-256(issuer master key, this) is derived as a session
/// object and wrapped under each KEK. Its own text, so that it is no key of the protocol.
const KEY_CHECK_DATA: [u8; 32] = *b"MPS pool key check; not a key...";

/// What a member computes from its secret keys with fixed inputs: equal on two members only
/// if they hold the same password verification key, issuer master key and KEKs. No Debug:
/// the values are not secret, but nothing from a key belongs in a log.
#[derive(PartialEq, Eq)]
struct KeyCheck {
    /// HMAC-SHA256(password verification key, [`KEY_CHECK_DATA`]).
    password_verification: Vec<u8>,
    /// (KEK version, RFC 5649 wrap of the derived check key under it), ascending.
    issuer_master_under_keks: Vec<(u32, Vec<u8>)>,
}

/// Refuses a pool whose members do not hold the same keys as the first, naming the first
/// member that differs: the signing public keys (current and next), the KEK versions, and
/// the check values of the secret keys ([`KeyCheck`]). Blocks (runs on the connecting thread).
pub(crate) fn check_same_keys(hsm: &Hsm) -> Result<(), HsmError> {
    if hsm.member_count() < 2 {
        return Ok(());
    }
    let first = hsm.shared();
    // Copied out: member 0 is `first`, and a second lock of the same mutex would deadlock.
    let public_key = *lock(&first.public_key);
    let public_key_next = *lock(&first.public_key_next);
    let kek_versions = lock(&first.kek_versions).clone();
    let mut reference: Option<KeyCheck> = None;
    for (index, member) in hsm.member_states().enumerate() {
        let differs =
            |what| HsmError::MemberKeysDiffer { member: index, token_label: member.config.token_label.clone(), what };
        if *lock(&member.public_key) != public_key {
            return Err(differs("its signing public key differs"));
        }
        if *lock(&member.public_key_next) != public_key_next {
            return Err(differs("its next signing public key differs"));
        }
        if *lock(&member.kek_versions) != kek_versions {
            return Err(differs("it holds other KEK versions"));
        }
        let versions = kek_versions.clone();
        let check = hsm.call_blocking(Route::Member(index), move |ctx| ctx.key_check(&versions))?;
        match &reference {
            None => reference = Some(check),
            Some(expected) if check.password_verification != expected.password_verification => {
                return Err(differs("its password verification key differs"));
            }
            Some(expected) if check != *expected => {
                return Err(differs("its issuer master key or a KEK differs"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Refuses two members whose module paths name one file (a link, or the same file reached by
/// another path): the dynamic loader would load it once, so the two would share one library
/// state, and one member's recovery (C_Finalize) would void the other's sessions behind the
/// epochs that guard them. A path that cannot be read is left to the load to report.
pub(crate) fn check_distinct_modules(members: &[HsmConfig]) -> Result<(), HsmError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<(u64, u64)> = Vec::with_capacity(members.len());
    for (index, member) in members.iter().enumerate() {
        let Ok(metadata) = std::fs::metadata(&member.module_path) else { continue };
        let file = (metadata.dev(), metadata.ino());
        if seen.contains(&file) {
            return Err(HsmError::Member {
                member: index,
                token_label: member.token_label.clone(),
                source: Box::new(HsmError::Config(ConfigError::Member {
                    index: index.saturating_sub(1),
                    reason: "module_path is the same file as another HSM's module (a link to it); \
                             on SoftHSM use a copy of the library file",
                })),
            });
        }
        seen.push(file);
    }
    Ok(())
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ctx {
    /// This member's [`KeyCheck`] over the KEK versions `kek_versions`.
    fn key_check(&mut self, kek_versions: &[u32]) -> Result<KeyCheck, HsmError> {
        let mut keks = Vec::with_capacity(kek_versions.len());
        for &version in kek_versions {
            keks.push((version, self.kek(version, false)?));
        }
        let session = self.session()?;
        let password_verification = session
            .sign(&Mechanism::Sha256Hmac, self.keys.password_verification, &KEY_CHECK_DATA)
            .map_err(|e| self.fail(e))?;
        let params = KeyDerivationStringData::new(&KEY_CHECK_DATA);
        let derived = session
            .derive_key(&templates::ecb_encrypt_data(&params), self.keys.issuer_master, &templates::chain_key())
            .map_err(|e| self.fail(e))?;
        let derived = self.guard(derived);
        let mut issuer_master_under_keks = Vec::with_capacity(keks.len());
        for (version, kek) in keks {
            let wrapped =
                session.wrap_key(&Mechanism::AesKeyWrapPad, kek, derived.handle()).map_err(|e| self.fail(e))?;
            issuer_master_under_keks.push((version, wrapped));
        }
        Ok(KeyCheck { password_verification, issuer_master_under_keks })
    }
}
