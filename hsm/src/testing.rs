//! Test support (feature `testing`, for dev-dependencies only): a throwaway SoftHSM token per
//! test process with the ceremony's keys, and hooks that put known keys into the HSM so
//! known-answer tests can compare bytes. Never enable this feature in a production build:
//! it can import key values.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::misc::KeyDerivationStringData;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use mps_protocol::SimId;
use mps_protocol::keys::{LABEL_PERSONALISATION, kdf_data, personalisation_context};
use mps_protocol::perso::WRAPPED_KEY_LEN;

use crate::ceremony::{self, transport_key_label};
use crate::config::{HsmConfig, HsmMember, Pin};
use crate::custody::WrappedChainKey;
use crate::error::{HsmError, Pkcs11Function, from_cryptoki};
use crate::module;
use crate::pool::{Hsm, Route};
use crate::templates;
use crate::worker::Ctx;

/// Label of the test token.
pub const TOKEN_LABEL: &str = "mps-test";
/// User PIN of the test token.
pub const USER_PIN: &str = "test-user-pin-1234";
/// Security officer PIN of the test token.
pub const SO_PIN: &str = "test-so-pin-1234";
/// Vendor of the test token's transport key (`mps-tk-test`).
pub const TRANSPORT_VENDOR: &str = "test";
/// Clear value of the test token's transport key, as the test SIM vendor holds it: tests
/// personalise SIMs with it. Imported like a real vendor's key components; custody tests
/// look for these bytes in the token directory and must not find them.
pub const TRANSPORT_KEY_VALUE: [u8; 32] = [
    0x7a, 0x51, 0x0c, 0x93, 0x4e, 0x22, 0xd8, 0x16, 0xa5, 0x3b, 0x60, 0xf1, 0x09, 0xc4, 0x8e, 0x2d, 0x57, 0xe0, 0x1b,
    0x96, 0x43, 0xfa, 0x28, 0x6c, 0xb1, 0x05, 0xdd, 0x72, 0x3e, 0x84, 0xc9, 0x10,
];

/// Why the test token could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot create the SoftHSM test token: {0}")]
pub struct TestTokenError(String);

/// A SoftHSM token in `target/softhsm/test-<pid>-<n>`, initialised with the test PINs, with
/// every ceremony key and the transport key `mps-tk-test`. One per process: SoftHSM reads
/// `SOFTHSM2_CONF` at the process's first C_Initialize.
#[derive(Debug)]
pub struct TestToken {
    /// A config for this token (PIN from a file in the token directory, fast backoff).
    pub config: HsmConfig,
    /// The token's directory (holds `softhsm2.conf`, `tokens/`, `user.pin`).
    pub dir: PathBuf,
    /// The `softhsm2.conf` this process uses.
    pub softhsm_conf: PathBuf,
    /// Label of the transport key made by the ceremony.
    pub transport_key_label: String,
}

impl TestToken {
    /// The process's test token, created on first use. Must be called before anything else
    /// in the process initialises the PKCS#11 module.
    pub fn shared() -> Result<&'static TestToken, TestTokenError> {
        static TOKEN: OnceLock<Result<TestToken, TestTokenError>> = OnceLock::new();
        TOKEN.get_or_init(Self::create).as_ref().map_err(Clone::clone)
    }

    /// Connects a pool to the token.
    pub async fn hsm(&self) -> Result<Hsm, HsmError> {
        Hsm::connect(self.config.clone()).await
    }

    /// The user PIN.
    pub fn user_pin(&self) -> Pin {
        Pin::new(USER_PIN).unwrap_or_else(|_| unreachable_pin())
    }

    /// The security officer PIN.
    pub fn so_pin(&self) -> Pin {
        Pin::new(SO_PIN).unwrap_or_else(|_| unreachable_pin())
    }

    /// A config for a pool of `members` HSMs on this token (1 to 8): the first is the
    /// configured module, each further one a copy of its file in the token directory. SoftHSM
    /// loaded from another file keeps state and locks of its own, so each copy behaves as
    /// another HSM holding the same keys (it reads the same token directory).
    pub fn pool_config(&self, members: usize) -> Result<HsmConfig, TestTokenError> {
        let mut config = self.config.clone();
        if members > 1 {
            let mut additional = Vec::with_capacity(members - 1);
            for index in 1..members {
                let module_path = module_copy(&self.config.module_path, &self.dir, &format!("member-{index}"))?;
                additional.push(HsmMember {
                    module_path,
                    token_label: None,
                    pin_env: None,
                    pin_file: None,
                    pool_size: None,
                });
            }
            config.additional = Some(additional);
        }
        config.validate().map_err(|e| TestTokenError(format!("pool config: {e}")))?;
        Ok(config)
    }

    /// Creates another token, `label`, in this token's directory, with a key ceremony of its
    /// own (so other keys under the same labels), and returns a config for it through a
    /// fresh copy of the module (a module initialised before the token existed would not see
    /// it). Same PINs as the test token.
    pub fn other_token(&self, label: &str) -> Result<HsmConfig, TestTokenError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| TestTokenError(format!("{what}: {e}"));
        init_token(&self.softhsm_conf, label)?;
        let config = HsmConfig {
            module_path: module_copy(&self.config.module_path, &self.dir, &format!("token-{label}"))?,
            token_label: label.to_owned(),
            ..self.config.clone()
        };
        let user_pin = Pin::new(USER_PIN).map_err(|e| fail("user PIN", &e))?;
        ceremony::import_transport_key(
            &config,
            &user_pin,
            TRANSPORT_VENDOR,
            &zeroize::Zeroizing::new(TRANSPORT_KEY_VALUE),
        )
        .map_err(|e| fail("transport key import", &e))?;
        ceremony::init_keys(&config, &user_pin, &[TRANSPORT_VENDOR.to_owned()])
            .map_err(|e| fail("key ceremony", &e))?;
        Ok(config)
    }

    fn create() -> Result<TestToken, TestTokenError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| TestTokenError(format!("{what}: {e}"));
        if module::any_initialised() {
            return Err(TestTokenError(
                "the PKCS#11 module was initialised before TestToken::shared() in this process".to_owned(),
            ));
        }
        let base = target_dir().join("softhsm");
        remove_stale_tokens(&base);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = base.join(format!("test-{}-{nanos}", std::process::id()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| fail("create the token directory", &e))?;
        let softhsm_conf = dir.join("softhsm2.conf");
        let conf = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        );
        std::fs::write(&softhsm_conf, conf).map_err(|e| fail("write softhsm2.conf", &e))?;
        let pin_file = dir.join("user.pin");
        write_private_file(&pin_file, &format!("{USER_PIN}\n")).map_err(|e| fail("write the PIN file", &e))?;

        init_token(&softhsm_conf, TOKEN_LABEL)?;
        // SAFETY: `set_var` is unsafe because another thread may read the environment at the
        // same time through libc (getenv is not synchronised with setenv). This runs once per
        // process inside a OnceLock, before this process's first C_Initialize (checked above),
        // which is where SoftHSM reads the variable; test harness threads do not call getenv
        // through libc at this point. Test support only; never compiled into production.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &softhsm_conf);
        }

        let config = HsmConfig {
            token_label: TOKEN_LABEL.to_owned(),
            pin_file: Some(pin_file),
            pool_size: 2,
            op_timeout_ms: 10_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 1_000,
            kek_refresh_ms: 500,
            ..HsmConfig::default()
        };
        let user_pin = Pin::new(USER_PIN).map_err(|e| fail("user PIN", &e))?;
        ceremony::import_transport_key(
            &config,
            &user_pin,
            TRANSPORT_VENDOR,
            &zeroize::Zeroizing::new(TRANSPORT_KEY_VALUE),
        )
        .map_err(|e| fail("transport key import", &e))?;
        ceremony::init_keys(&config, &user_pin, &[TRANSPORT_VENDOR.to_owned()])
            .map_err(|e| fail("key ceremony", &e))?;
        let transport_key_label = transport_key_label(TRANSPORT_VENDOR).map_err(|e| fail("transport key", &e))?;
        Ok(TestToken { config, dir, softhsm_conf, transport_key_label })
    }
}

/// `softhsm2-util --init-token` of a new token `label` with the test PINs.
fn init_token(softhsm_conf: &Path, label: &str) -> Result<(), TestTokenError> {
    let output = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", softhsm_conf)
        .args(["--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN])
        .output()
        .map_err(|e| {
            TestTokenError(format!("run softhsm2-util (install the softhsm2 package: apt-get install softhsm2): {e}"))
        })?;
    if !output.status.success() {
        return Err(TestTokenError(format!(
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// A copy of the module file `module` as `dir/lib<name>.so`, made once (written to a
/// temporary name and renamed, so a loaded copy is never overwritten). dlopen of another file
/// loads the library a second time, with its own global state.
pub fn module_copy(module: &Path, dir: &Path, name: &str) -> Result<PathBuf, TestTokenError> {
    let fail = |e: std::io::Error| TestTokenError(format!("copy the PKCS#11 module {}: {e}", module.display()));
    let path = dir.join(format!("lib{name}.so"));
    if !path.exists() {
        let partial = dir.join(format!("lib{name}.so.partial-{}", std::process::id()));
        std::fs::copy(module, &partial).map_err(fail)?;
        std::fs::rename(&partial, &path).map_err(fail)?;
    }
    Ok(path)
}

/// Puts a deliberately weak KEK on the test token (public and/or extractable, with or without
/// the unwrap template) under `label`, for tests that check that a pool refuses it.
pub fn make_weak_kek(
    config: &HsmConfig,
    label: &str,
    public: bool,
    extractable: bool,
    with_unwrap_template: bool,
) -> Result<(), HsmError> {
    let (_module, owned) = module::user_session(&config.module_path, &config.token_label, true, &config.load_pin()?)?;
    let session = owned.get()?;
    // The ceremony's own KEK template, weakened only where asked.
    let unwrap_template = crate::custody::unwrap_template_forcing_sensitive();
    let template: Vec<Attribute> = ceremony::kek_template(label)
        .into_iter()
        .filter(|a| with_unwrap_template || *a != unwrap_template)
        .map(|a| match a {
            Attribute::Private(_) => Attribute::Private(!public),
            Attribute::Extractable(_) => Attribute::Extractable(extractable),
            other => other,
        })
        .collect();
    session.generate_key(&Mechanism::AesKeyGen, &template).map_err(from_cryptoki)?;
    Ok(())
}

/// `CKM_AES_ECB_ENCRYPT_DATA` over `data`, for tests that derive with a raw session.
pub fn ecb_encrypt_data<'a>(data: &'a KeyDerivationStringData<'a>) -> Mechanism<'a> {
    templates::ecb_encrypt_data(data)
}

/// The `CKA_UNWRAP_TEMPLATE` attribute every KEK carries, for tests that make KEKs by hand.
pub fn kek_unwrap_template() -> Attribute {
    crate::custody::unwrap_template_forcing_sensitive()
}

/// Writes `text` to a new file readable by its owner only (a PIN file must be).
pub fn write_private_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

fn unreachable_pin() -> Pin {
    // The constant PINs are printable ASCII of a valid length; this is never reached.
    std::process::abort()
}

/// `<workspace>/target` found from the running executable, else the temp dir.
fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().find(|a| a.file_name().is_some_and(|n| n == "target")).map(Path::to_path_buf))
        .unwrap_or_else(|| std::env::temp_dir().join("mps-target"))
}

/// Removes `test-<pid>-*` token directories of processes that are gone.
fn remove_stale_tokens(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("test-")).and_then(|n| n.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn wrapped(value: Vec<u8>) -> Result<[u8; WRAPPED_KEY_LEN], HsmError> {
    value.as_slice().try_into().map_err(|_| HsmError::UnexpectedLength {
        function: Pkcs11Function::WrapKey,
        expected: WRAPPED_KEY_LEN,
        actual: value.len(),
    })
}

fn imported_aes(value: &[u8; 32], derive: bool, chain_key: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
        Attribute::Sensitive(true),
        Attribute::Extractable(chain_key),
        Attribute::Derive(derive),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ]
}

impl Ctx {
    fn wrap_known_chain_key(&mut self, value: &[u8; 32]) -> Result<WrappedChainKey, HsmError> {
        let kek_version = self.kek_newest();
        let kek = self.kek(kek_version, true)?;
        let session = self.session()?;
        let key = self.guard(session.create_object(&imported_aes(value, true, true)).map_err(|e| self.fail(e))?);
        let bytes = wrapped(session.wrap_key(&Mechanism::AesKeyWrapPad, kek, key.handle()).map_err(|e| self.fail(e))?)?;
        Ok(WrappedChainKey { kek_version, bytes })
    }

    fn chain_key_0_with_imk(&mut self, imk: &[u8; 32], sim_id: &SimId) -> Result<WrappedChainKey, HsmError> {
        let kek_version = self.kek_newest();
        let kek = self.kek(kek_version, true)?;
        let session = self.session()?;
        let imk = self.guard(session.create_object(&imported_aes(imk, true, false)).map_err(|e| self.fail(e))?);
        let data = kdf_data(LABEL_PERSONALISATION, &personalisation_context(sim_id));
        let params = KeyDerivationStringData::new(&data);
        let chain_key = self.guard(
            session
                .derive_key(&templates::ecb_encrypt_data(&params), imk.handle(), &templates::chain_key())
                .map_err(|e| self.fail(e))?,
        );
        let bytes =
            wrapped(session.wrap_key(&Mechanism::AesKeyWrapPad, kek, chain_key.handle()).map_err(|e| self.fail(e))?)?;
        Ok(WrappedChainKey { kek_version, bytes })
    }

    fn session_object_count(&self) -> Result<usize, HsmError> {
        let found = {
            let _lookup = module::key_lookup_lock();
            self.session()?.find_objects(&[Attribute::Token(false)]).map_err(|e| self.fail(e))?
        };
        Ok(found.len())
    }
}

/// Imports `value` as a chain key (session object, extractable) and returns it wrapped under
/// the newest KEK: the ledger form of a known CK.
pub async fn wrap_known_chain_key(hsm: &Hsm, value: &[u8; 32]) -> Result<WrappedChainKey, HsmError> {
    let value = *value;
    hsm.call(Route::Any, move |ctx| ctx.wrap_known_chain_key(&value)).await
}

/// Derives CK_0 for `sim_id` in the HSM from an imported issuer master key `imk` (the same
/// derivation as [`Hsm::register_sim`], with a known IMK) and returns it wrapped under
/// mps-kek. RFC 5649 is deterministic, so equality with [`wrap_known_chain_key`] of the
/// expected CK_0 proves the derivation.
pub async fn chain_key_0_with_imk(hsm: &Hsm, imk: &[u8; 32], sim_id: &SimId) -> Result<WrappedChainKey, HsmError> {
    let imk = *imk;
    let sim_id = sim_id.clone();
    hsm.call(Route::Any, move |ctx| ctx.chain_key_0_with_imk(&imk, &sim_id)).await
}

/// [`wrap_known_chain_key`] on member `member` of the pool (0 is the first HSM): the same
/// value wrapped on two members gives the same bytes only if they hold the same KEK.
pub async fn wrap_known_chain_key_on(hsm: &Hsm, member: usize, value: &[u8; 32]) -> Result<WrappedChainKey, HsmError> {
    let value = *value;
    hsm.call(Route::Member(member), move |ctx| ctx.wrap_known_chain_key(&value)).await
}

/// Number of session objects of this process (all sessions), seen from one worker.
pub async fn session_object_count(hsm: &Hsm) -> Result<usize, HsmError> {
    hsm.call(Route::Any, |ctx| ctx.session_object_count()).await
}

/// C_CloseAllSessions on the token's slot through a second handle of the module, as an
/// outage that closes the pool's sessions (and logs the token out) under its feet.
pub fn close_all_sessions(config: &HsmConfig) -> Result<(), HsmError> {
    let slot = {
        let _token_file = module::token_file_lock();
        let initialised = module::initialise(&config.module_path)?;
        module::find_slot(&initialised.pkcs11, &config.token_label)?
    };
    // SAFETY: loads the same shared library (dlopen returns the already-loaded instance) and
    // calls its exported C_CloseAllSessions with a valid slot id; the function takes no
    // pointers. Test support only.
    #[allow(unsafe_code)]
    let rv = unsafe {
        let library = cryptoki_sys::Pkcs11::new(&config.module_path)
            .map_err(|_| HsmError::InvalidInput { what: "module cannot be loaded" })?;
        library.C_CloseAllSessions(slot.id() as cryptoki_sys::CK_SLOT_ID)
    };
    cryptoki::error::Rv::from(rv).into_result(Pkcs11Function::CloseAllSessions).map_err(from_cryptoki)
}

/// C_Finalize through a second, independent handle of the module (bypassing the pool), as an
/// outage that kills every session and the login.
pub fn finalize_module_behind_the_pool(config: &HsmConfig) -> Result<(), HsmError> {
    let pkcs11 = cryptoki::context::Pkcs11::new(&config.module_path)
        .map_err(|source| HsmError::Load { path: config.module_path.clone(), source })?;
    pkcs11.finalize().map_err(from_cryptoki)
}

/// Tries `C_DeriveKey` with `CKM_AES_ECB_ENCRYPT_DATA` (the mechanism of the key schedule)
/// from the token object `label` of `class`, in a session of its own, logged in as the user.
/// `Ok` means the token allowed it (the derived key is destroyed); for key-policy tests.
pub fn try_derive_from_token_key(config: &HsmConfig, label: &str, class: ObjectClass) -> Result<(), HsmError> {
    let (_module, owned) = module::user_session(&config.module_path, &config.token_label, false, &config.load_pin()?)?;
    let session = owned.get()?;
    let key = module::find_token_object(session, class, label)?
        .ok_or_else(|| HsmError::KeyNotFound { label: label.to_owned() })?;
    let data = [0x5a; 32];
    let params = KeyDerivationStringData::new(&data);
    let derived = session
        .derive_key(&templates::ecb_encrypt_data(&params), key, &templates::chain_key())
        .map_err(from_cryptoki)?;
    session.destroy_object(derived).map_err(from_cryptoki)
}
