//! The PKCS#11 module as a process-wide resource: loaded once per path, initialised with OS
//! locking, finalised only by a re-initialisation, and counted in epochs so that a session
//! opened before a C_Finalize is never closed after it (handles restart at 1, so a late
//! C_CloseSession would close somebody else's new session).
//!
//! Also the small helpers every connection needs: find the token by label, log in, find a
//! key by label.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::config::Pin;
use crate::error::{HsmError, from_cryptoki, rv_of};

struct Entry {
    pkcs11: Pkcs11,
    /// Incremented by every C_Finalize this crate makes.
    epoch: u64,
    /// The same epoch, readable without the lock (workers check it before every job).
    epoch_now: Arc<AtomicU64>,
    /// Held shared by every PKCS#11 call a worker makes, and exclusively by C_Finalize: the
    /// module is never finalised while a call of any pool of this process is inside it.
    calls: Arc<RwLock<()>>,
    initialized: bool,
}

fn modules() -> MutexGuard<'static, HashMap<PathBuf, Entry>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Entry>>> = OnceLock::new();
    // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
    MODULES.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A module that is initialised, and the epoch it was initialised in.
#[derive(Clone)]
pub(crate) struct Initialised {
    pub pkcs11: Pkcs11,
    pub path: PathBuf,
    pub epoch: u64,
    epoch_now: Arc<AtomicU64>,
    calls: Arc<RwLock<()>>,
}

impl Initialised {
    /// The module's calls lock: hold it shared (see [`call_guard`]) around every PKCS#11 call
    /// (or run of calls), then check [`Initialised::is_current`]; C_Finalize holds it
    /// exclusively. A clone of the handle, so that a caller can hold the guard while it
    /// borrows what owns this `Initialised` mutably.
    pub fn calls(&self) -> Arc<RwLock<()>> {
        Arc::clone(&self.calls)
    }

    /// Whether nobody finalised the module since this initialisation: only then do session
    /// and object handles of this epoch still name what they named.
    pub fn is_current(&self) -> bool {
        self.epoch_now.load(Ordering::Acquire) == self.epoch
    }
}

/// Keeps C_Finalize of the module out while the guard is held.
pub(crate) fn call_guard(calls: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    calls.read().unwrap_or_else(PoisonError::into_inner)
}

/// Loads the module if this process has not yet, and initialises it if needed.
/// `CKR_CRYPTOKI_ALREADY_INITIALIZED` counts as success (another part of the process did it).
pub(crate) fn initialise(path: &Path) -> Result<Initialised, HsmError> {
    let mut map = modules();
    if !map.contains_key(path) {
        let pkcs11 = Pkcs11::new(path).map_err(|source| HsmError::Load { path: path.to_owned(), source })?;
        map.insert(
            path.to_owned(),
            Entry { pkcs11, epoch: 0, epoch_now: Arc::default(), calls: Arc::default(), initialized: false },
        );
    }
    let entry = map.get_mut(path).ok_or(HsmError::Unavailable)?;
    if !entry.initialized {
        match entry.pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
            Err(e) => return Err(from_cryptoki(e)),
        }
        entry.initialized = true;
    }
    Ok(Initialised {
        pkcs11: entry.pkcs11.clone(),
        path: path.to_owned(),
        epoch: entry.epoch,
        epoch_now: Arc::clone(&entry.epoch_now),
        calls: Arc::clone(&entry.calls),
    })
}

/// C_Finalize, unless somebody already re-initialised the module since `epoch` (then the
/// sessions of `epoch` are gone already and a second finalize would kill the newer ones).
///
/// It first waits until no worker of any pool of this process is inside a call of the module
/// (the calls lock, taken exclusively): finalising under a running call would free what the
/// call is using.
pub(crate) fn finalise_if_current(path: &Path, epoch: u64) {
    let calls = match modules().get(path) {
        Some(entry) if entry.epoch == epoch => Arc::clone(&entry.calls),
        _ => return,
    };
    let _no_call_running = calls.write().unwrap_or_else(PoisonError::into_inner);
    let mut map = modules();
    if let Some(entry) = map.get_mut(path)
        && entry.epoch == epoch
    {
        // C_Finalize's result does not matter: afterwards the module is re-initialised
        // from scratch either way (CKR_CRYPTOKI_NOT_INITIALIZED is the usual "error").
        let _ = entry.pkcs11.clone().finalize();
        entry.epoch += 1;
        entry.epoch_now.store(entry.epoch, Ordering::Release);
        entry.initialized = false;
    }
}

/// Whether this process has initialised any module through this crate.
#[cfg(feature = "testing")]
pub(crate) fn any_initialised() -> bool {
    modules().values().any(|e| e.initialized || e.epoch > 0)
}

/// A session closed explicitly, and only if the module was not re-initialised since it was
/// opened (see the module docs). Dropping it closes it.
pub(crate) struct OwnedSession {
    session: Option<Session>,
    path: PathBuf,
    epoch: u64,
}

impl OwnedSession {
    /// Opens a session of `module` on `slot`; read-write only where the token is written to.
    pub fn open(module: &Initialised, slot: Slot, read_write: bool) -> Result<Self, HsmError> {
        let session = if read_write {
            module.pkcs11.open_rw_session_no_drop(slot)
        } else {
            module.pkcs11.open_ro_session_no_drop(slot)
        }
        .map_err(from_cryptoki)?;
        Ok(Self { session: Some(session), path: module.path.clone(), epoch: module.epoch })
    }

    /// The cryptoki session.
    pub fn get(&self) -> Result<&Session, HsmError> {
        self.session.as_ref().ok_or(HsmError::Unavailable)
    }
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        let map = modules();
        if map.get(&self.path).is_some_and(|e| e.epoch == self.epoch && e.initialized) {
            // Closing fails harmlessly when the session is already gone.
            let _ = session.close();
        }
        // Otherwise the session died with the old epoch: forgetting the handle is right.
        drop(map);
    }
}

/// The slot whose token carries `label` (labels are space padded on the token).
pub(crate) fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let slots = pkcs11.get_slots_with_token().map_err(from_cryptoki)?;
    for slot in slots {
        let info = pkcs11.get_token_info(slot).map_err(from_cryptoki)?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(HsmError::TokenNotFound { label: label.to_owned() })
}

/// A session of its own on the token `label` of the module at `path`, logged in as the user,
/// and the module it was opened in: for the ceremony and the tools, which connect once (a
/// pool's members connect in the supervisor). The steps that touch the token's file run under
/// [`token_file_lock`].
pub(crate) fn user_session(
    path: &Path,
    label: &str,
    read_write: bool,
    pin: &Pin,
) -> Result<(Initialised, OwnedSession), HsmError> {
    let _token_file = token_file_lock();
    let initialised = initialise(path)?;
    let slot = find_slot(&initialised.pkcs11, label)?;
    let owned = OwnedSession::open(&initialised, slot, read_write)?;
    login(owned.get()?, UserType::User, pin)?;
    Ok((initialised, owned))
}

/// C_Login; `CKR_USER_ALREADY_LOGGED_IN` is success (login state is per process).
pub(crate) fn login(session: &Session, user: UserType, pin: &Pin) -> Result<(), HsmError> {
    match session.login(user, Some(pin.auth_pin())) {
        Ok(()) => Ok(()),
        Err(e) if rv_of(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
        Err(e) => Err(from_cryptoki(e)),
    }
}

/// Serialises, inside the process, the steps that read or write a token's own file
/// (`token.object` in SoftHSM): C_Initialize and C_GetTokenInfo read it, and every C_Login
/// rewrites it (the PIN-count flags), even with the right PIN. SoftHSM guards the file with
/// POSIX record locks, which never exclude two holders in one process, so two copies of the
/// module on one token (a pool of "two HSMs" on SoftHSM, as the demo and the tests run it)
/// would read it half rewritten: the token is missing from the slot list, or C_GetTokenInfo
/// answers `CKR_GENERAL_ERROR`, and the connect fails. Taken before [`key_lookup_lock`],
/// never inside it. Connections are rare (start, recycle, recovery), so one lock costs
/// nothing.
pub(crate) fn token_file_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serialises token-object lookups with key copies inside the process. SoftHSM's
/// C_CopyObject shows the new session copy with the source's `CKA_TOKEN = true` for a moment
/// before it applies the copy template, so a C_FindObjects for token objects running at the
/// same time in another thread can find the key twice. Both are rare (connection, attach,
/// cache misses), so one lock costs nothing.
pub(crate) fn key_lookup_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The one token object of `class` labelled `label`, if any.
pub(crate) fn find_token_object(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let template = [Attribute::Token(true), Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
    let found = {
        let _lookup = key_lookup_lock();
        session.find_objects(&template).map_err(from_cryptoki)?
    };
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(HsmError::DuplicateKey { label: label.to_owned() }),
    }
}
