//! The HSM operations besides the authorization session: password verification values
//! (registration), ES256 signatures with mps-sign (JWS of answers and clearing files, the
//! bank's certificate), random bytes, and SIM personalisation (DESIGN.md section 9).

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::misc::KeyDerivationStringData;
use cryptoki::object::ObjectClass;
use mps_protocol::keys::{LABEL_PERSONALISATION, kdf_data, personalisation_context};
use mps_protocol::perso::WRAPPED_KEY_LEN;
use mps_protocol::{Account, Password, PasswordVerificationValue, Rsn, SimId};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::authorization::wrapped_key_bytes;
use crate::ceremony::TRANSPORT_KEY_PREFIX;
use crate::custody::{KeyRole, WrappedChainKey, check_key};
use crate::error::{HsmError, Pkcs11Function, RvError};
use crate::pool::{Hsm, Route};
use crate::templates;
use crate::worker::Ctx;

/// Which of the bank's signing keys signs: the current one (`keys.signing`), or during a
/// signing-key renewal the next one (`keys.signing_next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// `keys.signing`.
    Current,
    /// `keys.signing_next`.
    Next,
}

/// Longest [`Hsm::random_bytes`] request.
pub const RANDOM_BYTES_MAX: usize = 4096;

/// What registering a SIM produces (DESIGN.md section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRegistration {
    /// CK_0 wrapped under the newest KEK: the ledger's chain key for session 1.
    pub wrapped_chain_key_for_ledger: WrappedChainKey,
    /// CK_0 wrapped under the SIM vendor's transport key: goes into the personalisation record.
    pub wrapped_chain_key_for_transport: [u8; WRAPPED_KEY_LEN],
    /// RSN_1, from the HSM's generator.
    pub rsn: Rsn,
}

impl Hsm {
    /// HMAC-SHA256(mps-pvk, account BCD (10 bytes) || password): the value stored at
    /// registration and compared at every payment.
    pub async fn password_verification_value(
        &self,
        account: &Account,
        password: &Password,
    ) -> Result<PasswordVerificationValue, HsmError> {
        let account = account.clone();
        let password = password.clone();
        self.call(Route::Any, move |ctx| ctx.password_verification_value(&account, &password)).await
    }

    /// ECDSA P-256 over SHA-256(message) with mps-sign (hash on the host, `CKM_ECDSA` in the
    /// HSM): the 64-byte r || s of a JWS ES256 signature.
    pub async fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        self.sign_es256_with(SigningKey::Current, message).await
    }

    /// [`Hsm::sign_es256`] with the current or the next signing key; the next one must be
    /// configured (`keys.signing_next`), else `KeyNotFound`.
    pub async fn sign_es256_with(&self, key: SigningKey, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.call(Route::Any, move |ctx| ctx.sign_digest(key, &digest)).await
    }

    /// [`Hsm::sign_es256`] for synchronous code (for example rcgen's remote key). Blocks the
    /// calling thread for up to `op_timeout_ms`: never call it on a tokio worker thread (use
    /// `spawn_blocking` or the async form there).
    pub fn blocking_sign_es256(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.call_blocking(Route::Any, move |ctx| ctx.sign_digest(SigningKey::Current, &digest))
    }

    /// The public half of mps-sign as a SEC1 uncompressed point (65 bytes, `04 x y`), read at
    /// connection time and at every re-initialisation. Does not touch the HSM.
    pub fn signing_public_key(&self) -> [u8; 65] {
        *self.shared().public_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public half of `keys.signing_next`, when a signing-key renewal is configured.
    pub fn signing_public_key_next(&self) -> Option<[u8; 65]> {
        *self.shared().public_key_next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `len` bytes from the HSM's random generator (at most [`RANDOM_BYTES_MAX`]).
    pub async fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        if len > RANDOM_BYTES_MAX {
            return Err(HsmError::InvalidInput { what: "random_bytes: at most 4096 bytes" });
        }
        self.call(Route::Any, move |ctx| ctx.random(len)).await
    }

    /// The newest KEK version the pool wraps chain keys under.
    pub fn kek_version_newest(&self) -> u32 {
        self.shared().kek_for_wrapping()
    }

    /// Every KEK version on the token when the pool last connected, ascending (a rotation
    /// made since then shows in [`Hsm::kek_version_newest`] first).
    pub fn kek_versions(&self) -> Vec<u32> {
        let mut versions = self.shared().kek_versions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let newest = self.kek_version_newest();
        if !versions.contains(&newest) {
            versions.push(newest);
        }
        versions
    }

    /// KEK rotation: unwraps `wrapped` under the KEK version it names and wraps it under the
    /// newest KEK, inside the HSM (the chain key exists only as a sensitive session object,
    /// destroyed before this returns). `None` when it is under the newest KEK already.
    pub async fn rewrap_chain_key(&self, wrapped: &WrappedChainKey) -> Result<Option<WrappedChainKey>, HsmError> {
        let wrapped = *wrapped;
        self.call(Route::Any, move |ctx| ctx.rewrap_chain_key(&wrapped)).await
    }

    /// Personalises a SIM: derives CK_0 = KDF(mps-imk, 'P', iccid || 00000000) as a session
    /// object, wraps it under mps-kek (for the ledger) and under the transport key
    /// `transport_key_label` (for the SIM vendor), destroys it, and draws RSN_1.
    /// The label must start with `mps-tk-` ([`crate::ceremony::TRANSPORT_KEY_PREFIX`]).
    pub async fn register_sim(&self, sim_id: &SimId, transport_key_label: &str) -> Result<SimRegistration, HsmError> {
        if !transport_key_label.starts_with(TRANSPORT_KEY_PREFIX) {
            return Err(HsmError::InvalidInput {
                what: "register_sim: the transport key label must start with mps-tk-",
            });
        }
        let sim_id = sim_id.clone();
        let transport_key_label = transport_key_label.to_owned();
        self.call(Route::Any, move |ctx| ctx.register_sim(&sim_id, &transport_key_label)).await
    }
}

impl Ctx {
    /// Refuses a transport key that is weaker than the key policy (the public, SO-made
    /// transport key of an earlier ceremony): CK_0 must never leave under a key that any
    /// process can use without the PIN.
    fn check_transport_key(&self, label: &str) -> Result<(), HsmError> {
        let session = self.session()?;
        let handle = self.shared.token_key(session, label, ObjectClass::SECRET_KEY).map_err(|e| self.classify(e))?;
        check_key(session, handle, label, KeyRole::Transport).map_err(|e| self.classify(e))
    }

    pub(crate) fn password_verification_value(
        &self,
        account: &Account,
        password: &Password,
    ) -> Result<PasswordVerificationValue, HsmError> {
        let mut input = Zeroizing::new(Vec::with_capacity(10 + Password::LEN_MAX));
        input.extend_from_slice(&account.to_bcd());
        input.extend_from_slice(password.expose());
        let mac = self
            .session()?
            .sign(&Mechanism::Sha256Hmac, self.keys.password_verification, &input)
            .map_err(|e| self.fail(e))?;
        let mac = Zeroizing::new(mac);
        let bytes: [u8; 32] = mac.as_slice().try_into().map_err(|_| HsmError::UnexpectedLength {
            function: Pkcs11Function::Sign,
            expected: 32,
            actual: mac.len(),
        })?;
        Ok(PasswordVerificationValue::new(bytes))
    }

    pub(crate) fn sign_digest(&self, key: SigningKey, digest: &[u8; 32]) -> Result<[u8; 64], HsmError> {
        let handle = match key {
            SigningKey::Current => self.keys.signing,
            SigningKey::Next => self
                .keys
                .signing_next
                .ok_or_else(|| HsmError::KeyNotFound { label: "keys.signing_next (not configured)".to_owned() })?,
        };
        let signature = self.session()?.sign(&Mechanism::Ecdsa, handle, digest).map_err(|e| self.fail(e))?;
        signature.as_slice().try_into().map_err(|_| HsmError::UnexpectedLength {
            function: Pkcs11Function::Sign,
            expected: 64,
            actual: signature.len(),
        })
    }

    pub(crate) fn random(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        let mut out = vec![0u8; len];
        if len > 0 {
            self.session()?.generate_random_slice(&mut out).map_err(|e| self.fail(e))?;
        }
        Ok(out)
    }

    fn rewrap_chain_key(&mut self, wrapped: &WrappedChainKey) -> Result<Option<WrappedChainKey>, HsmError> {
        let newest = self.kek_newest();
        if wrapped.kek_version == newest {
            return Ok(None);
        }
        let old = self.kek(wrapped.kek_version, false)?;
        let new = self.kek(newest, true)?;
        let session = self.session()?;
        let chain_key = session
            .unwrap_key(&Mechanism::AesKeyWrapPad, old, &wrapped.bytes, &templates::chain_key_in_transit())
            .map_err(|e| match self.fail(e) {
                HsmError::Pkcs11 { rv: RvError::WrappedKeyInvalid | RvError::GeneralError, .. } => {
                    HsmError::WrappedKeyInvalid
                }
                other => other,
            })?;
        let chain_key = self.guard(chain_key);
        let bytes = session.wrap_key(&Mechanism::AesKeyWrapPad, new, chain_key.handle()).map_err(|e| self.fail(e))?;
        Ok(Some(WrappedChainKey { kek_version: newest, bytes: wrapped_key_bytes(&bytes)? }))
    }

    fn register_sim(&mut self, sim_id: &SimId, transport_key_label: &str) -> Result<SimRegistration, HsmError> {
        let kek_version = self.kek_newest();
        let kek = self.kek(kek_version, true)?;
        let data = kdf_data(LABEL_PERSONALISATION, &personalisation_context(sim_id));
        let params = KeyDerivationStringData::new(&data);
        let chain_key = self
            .session()?
            .derive_key(&templates::ecb_encrypt_data(&params), self.keys.issuer_master, &templates::chain_key())
            .map_err(|e| self.fail(e))?;
        let chain_key = self.guard(chain_key);
        let session = self.session()?;
        let for_ledger = WrappedChainKey {
            kek_version,
            bytes: wrapped_key_bytes(
                &session.wrap_key(&Mechanism::AesKeyWrapPad, kek, chain_key.handle()).map_err(|e| self.fail(e))?,
            )?,
        };
        self.check_transport_key(transport_key_label)?;
        let for_transport =
            wrapped_key_bytes(&self.with_token_key(transport_key_label, ObjectClass::SECRET_KEY, |transport| {
                session.wrap_key(&Mechanism::AesKeyWrapPad, transport, chain_key.handle())
            })?)?;
        let mut rsn = [0u8; 8];
        session.generate_random_slice(&mut rsn).map_err(|e| self.fail(e))?;
        Ok(SimRegistration {
            wrapped_chain_key_for_ledger: for_ledger,
            wrapped_chain_key_for_transport: for_transport,
            rsn: Rsn(rsn),
        })
    }
}
