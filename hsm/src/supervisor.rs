//! The pool's supervisor thread: owns the anchor session that keeps the token logged in,
//! (re-)initialises the module, and moves the workers between attached and detached.
//!
//! On a fault the pool is already down (every operation answers `Unavailable`); the
//! supervisor detaches every worker, closes the anchor, C_Finalize, and then tries
//! C_Initialize, find token, log in, find keys, attach workers, with exponential backoff,
//! until it works. A recycle does the same on purpose, after draining opened sessions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use tokio::sync::oneshot;

use crate::custody::{KeyRole, check_key, check_pool_keys, check_unwrap_template, find_keks, kek_label};
use crate::error::{HsmError, RvError, from_cryptoki};
use crate::module::{self, Initialised, OwnedSession, find_slot, find_token_object, login};
use crate::pool::{Generation, PoolState, Shared};
use crate::worker::Control;

/// Messages to the supervisor.
pub(crate) enum SupervisorMsg {
    /// A worker attached under `generation` found the HSM gone.
    Fault { generation: Generation },
    /// Re-initialise on purpose.
    Recycle { reply: oneshot::Sender<Result<(), HsmError>> },
    /// The last handle is gone; `done` is told once every session is closed.
    Shutdown { done: Sender<()> },
}

/// How long the supervisor waits for a worker to attach or detach (a worker finishes its
/// current PKCS#11 call first).
const WORKER_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle supervisor checks whether an automatic recycle is due.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a connect spent its time on, for the recycle's log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectTimes {
    /// Waiting for another member's connect in this process ([`module::token_file_lock`]).
    wait: Duration,
    /// C_Initialize, the token's slot, the anchor session and C_Login.
    login: Duration,
    /// The long-lived keys found and checked against the key policy, the public keys read.
    keys: Duration,
    /// Until the first worker had its session and key copies, and served.
    attach_first: Duration,
    /// Until every worker had them.
    attach: Duration,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    controls: Vec<Sender<Control>>,
    threads: Vec<JoinHandle<()>>,
    rx: Receiver<SupervisorMsg>,
    module: Option<Initialised>,
    anchor: Option<OwnedSession>,
    pending_shutdown: Option<Sender<()>>,
    /// When the token was last searched for a rotated KEK.
    kek_looked_at: Option<Instant>,
}

enum Next {
    Continue,
    Exit,
}

impl Supervisor {
    pub fn new(
        shared: Arc<Shared>,
        controls: Vec<Sender<Control>>,
        threads: Vec<JoinHandle<()>>,
        rx: Receiver<SupervisorMsg>,
    ) -> Self {
        Self { shared, controls, threads, rx, module: None, anchor: None, pending_shutdown: None, kek_looked_at: None }
    }

    /// The supervisor's loop, on its own thread.
    pub fn run(mut self) {
        let mut done = None;
        loop {
            let next = match self.rx.recv_timeout(IDLE_CHECK) {
                Ok(SupervisorMsg::Fault { generation }) => {
                    if generation == self.shared.current_generation() {
                        tracing::warn!("HSM lost; re-initialising");
                        self.reconnect_loop()
                    } else {
                        Next::Continue
                    }
                }
                Ok(SupervisorMsg::Recycle { reply }) => self.recycle(Some(reply)),
                Ok(SupervisorMsg::Shutdown { done: tell }) => {
                    done = Some(tell);
                    Next::Exit
                }
                Err(RecvTimeoutError::Disconnected) => Next::Exit,
                Err(RecvTimeoutError::Timeout) => {
                    self.look_for_rotated_kek();
                    let threshold = self.shared.config.recycle_after_objects;
                    let created = self.shared.metrics.objects_since_init.load(Ordering::Relaxed);
                    let turns = Arc::clone(&self.shared.recycle_turns);
                    let due = threshold > 0 && created >= threshold && self.shared.state() == PoolState::Up;
                    // In a pool of several, one member at a time, while the others are up.
                    match due.then(|| turns.try_take(self.shared.member)).flatten() {
                        Some(_turn) => {
                            tracing::info!(created, "recycling the HSM connection to free session-object memory");
                            self.recycle(None)
                        }
                        None => Next::Continue,
                    }
                }
            };
            if let Next::Exit = next {
                self.shutdown();
                // A shutdown that arrived during a reconnect loop is answered here too.
                done = done.or_else(|| self.pending_shutdown.take());
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    fn recycle(&mut self, reply: Option<oneshot::Sender<Result<(), HsmError>>>) -> Next {
        let answer = |reply: Option<oneshot::Sender<Result<(), HsmError>>>, result| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        if self.shared.state() != PoolState::Up {
            answer(reply, Err(HsmError::Unavailable));
            return Next::Continue;
        }
        self.shared.set_state(PoolState::Recycling);
        let started = Instant::now();
        let drain_until = started + Duration::from_millis(self.shared.config.recycle_drain_ms);
        // Timed part by part: while it lasts this HSM takes no work, and the finalise's share
        // grows with the session objects SoftHSM frees (recycle_after_objects).
        self.detach_all(Some(drain_until));
        let drained = Instant::now();
        self.finalise();
        let finalised = Instant::now();
        let connected = self.connect();
        let ended = Instant::now();
        // The HSM was out until its first worker served again (the others attach meanwhile).
        let out = match &connected {
            Ok(parts) => (ended - started).saturating_sub(parts.attach - parts.attach_first),
            Err(_) => ended - started,
        };
        self.shared.metrics.add_recycle_time(out);
        match connected {
            Ok(parts) => {
                let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                tracing::info!(
                    elapsed_ms = ms(ended - started),
                    drain_ms = ms(drained - started),
                    finalise_ms = ms(finalised - drained),
                    connect_ms = ms(ended - finalised),
                    connect_wait_ms = ms(parts.wait),
                    login_ms = ms(parts.login),
                    keys_ms = ms(parts.keys),
                    attach_first_ms = ms(parts.attach_first),
                    attach_ms = ms(parts.attach),
                    "HSM connection recycled: drained, finalised, logged in again"
                );
                self.shared.metrics.recycles.fetch_add(1, Ordering::Relaxed);
                self.shared.set_state(PoolState::Up);
                answer(reply, Ok(()));
                Next::Continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "HSM recycle failed; retrying with backoff");
                self.shared.set_state(PoolState::Down);
                // The caller learns why; the pool reconnects by itself either way.
                answer(reply, Err(e));
                self.reconnect_loop()
            }
        }
    }

    /// Re-initialises with backoff until it works or the pool is shut down. The pool is down
    /// meanwhile; recycle requests are refused.
    fn reconnect_loop(&mut self) -> Next {
        self.shared.set_state(PoolState::Down);
        let min = Duration::from_millis(self.shared.config.reconnect_backoff_min_ms);
        let max = Duration::from_millis(self.shared.config.reconnect_backoff_max_ms);
        let mut backoff = min;
        // Give up the sessions at once, so queued callers are answered `Unavailable` now.
        self.detach_all(None);
        loop {
            // Wait first: a module that fails right after re-initialising must not spin.
            let deadline = Instant::now() + backoff;
            loop {
                match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(SupervisorMsg::Shutdown { done }) => {
                        self.pending_shutdown = Some(done);
                        return Next::Exit;
                    }
                    Err(RecvTimeoutError::Disconnected) => return Next::Exit,
                    Ok(SupervisorMsg::Recycle { reply }) => {
                        let _ = reply.send(Err(HsmError::Unavailable));
                    }
                    Ok(SupervisorMsg::Fault { .. }) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            match self.reconnect(None) {
                Ok(()) => {
                    self.shared.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.shared.set_state(PoolState::Up);
                    tracing::info!("HSM re-initialised; pool up");
                    return Next::Continue;
                }
                Err(e) if is_pin_failure(&e) => {
                    tracing::error!(
                        error = %e,
                        "HSM login refused the PIN; not retrying (that could lock the PIN). \
                         The pool stays down until recycle() or a restart"
                    );
                    return self.wait_for_recycle();
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "HSM re-initialisation failed");
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    /// After a refused PIN: stays down, and tries once more only when asked to recycle.
    fn wait_for_recycle(&mut self) -> Next {
        loop {
            match self.rx.recv() {
                Ok(SupervisorMsg::Shutdown { done }) => {
                    self.pending_shutdown = Some(done);
                    return Next::Exit;
                }
                Err(_) => return Next::Exit,
                Ok(SupervisorMsg::Fault { .. }) => {}
                Ok(SupervisorMsg::Recycle { reply }) => match self.reconnect(None) {
                    Ok(()) => {
                        self.shared.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                        self.shared.set_state(PoolState::Up);
                        let _ = reply.send(Ok(()));
                        return Next::Continue;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
    }

    /// Detach, close the anchor, finalise, then connect again.
    fn reconnect(&mut self, drain_until: Option<Instant>) -> Result<(), HsmError> {
        self.detach_all(drain_until);
        self.finalise();
        self.connect().map(|_| ())
    }

    /// Closes the anchor and finalises the module (once the workers gave up their sessions).
    fn finalise(&mut self) {
        self.anchor = None;
        if let Some(old) = self.module.take() {
            module::finalise_if_current(&old.path, old.epoch);
        }
    }

    /// Initialise, find the token, log in on a new anchor session, find the keys, read the
    /// public key, attach every worker. One connect at a time in the process (see
    /// [`module::token_file_lock`]): another member's recycle waits for this one.
    pub fn connect(&mut self) -> Result<ConnectTimes, HsmError> {
        let asked = Instant::now();
        let _token_file = module::token_file_lock();
        let began = Instant::now();
        let config = &self.shared.config;
        let initialised = module::initialise(&config.module_path)?;
        // Keep it even if the rest fails, so the next attempt finalises it first.
        self.module = Some(initialised.clone());
        let slot = find_slot(&initialised.pkcs11, &config.token_label)?;
        let anchor = OwnedSession::open(&initialised, slot, false)?;
        let session = anchor.get()?;
        login(session, UserType::User, &self.shared.pin)?;
        let logged_in = Instant::now();

        self.shared.key_cache.invalidate_all();
        let labels = &config.keys;
        // Refuses to start on a key weaker than the policy, naming the key and the attribute.
        let keks = check_pool_keys(session, labels)?;
        for &(version, handle) in &keks {
            self.shared.key_cache.insert(kek_label(&labels.key_encryption, version), handle);
        }
        if let Some(&(newest, _)) = keks.last() {
            self.shared.set_kek_found(newest);
        }
        *self.shared.kek_versions.lock().unwrap_or_else(|p| p.into_inner()) = keks.iter().map(|(v, _)| *v).collect();
        for (label, class) in [
            (&labels.password_verification, ObjectClass::SECRET_KEY),
            (&labels.issuer_master, ObjectClass::SECRET_KEY),
            (&labels.signing, ObjectClass::PRIVATE_KEY),
        ] {
            let handle = find_token_object(session, class, label)?
                .ok_or_else(|| HsmError::KeyNotFound { label: label.clone() })?;
            self.shared.key_cache.insert(label.clone(), handle);
        }
        let public_key = read_public_key(session, &labels.signing)?;
        let mut known = self.shared.public_key.lock().unwrap_or_else(|p| p.into_inner());
        // A token whose signing key changed while the pool ran (another HSM put in its place,
        // a new ceremony) holds other keys than the rest of the pool: it stays out.
        if *known != [0; 65] && *known != public_key {
            return Err(HsmError::MemberKeysDiffer {
                member: self.shared.member,
                token_label: config.token_label.clone(),
                what: "its signing key changed since the pool connected",
            });
        }
        *known = public_key;
        drop(known);
        let public_key_next = match &labels.signing_next {
            Some(next) => {
                let handle = find_token_object(session, ObjectClass::PRIVATE_KEY, next)?
                    .ok_or_else(|| HsmError::KeyNotFound { label: next.clone() })?;
                self.shared.key_cache.insert(next.clone(), handle);
                Some(read_public_key(session, next)?)
            }
            None => None,
        };
        *self.shared.public_key_next.lock().unwrap_or_else(|p| p.into_inner()) = public_key_next;
        self.anchor = Some(anchor);
        self.shared.metrics.objects_since_init.store(0, Ordering::Relaxed);
        let keys_found = Instant::now();

        let generation = self.shared.next_generation();
        let mut acks = Vec::with_capacity(self.controls.len());
        for control in &self.controls {
            let (done, ack) = crossbeam_channel::bounded(1);
            let msg = Control::Attach { module: initialised.clone(), slot, generation, done };
            control.send(msg).map_err(|_| HsmError::Unavailable)?;
            acks.push(ack);
        }
        let mut failure = None;
        let mut first_ready: Option<Instant> = None;
        for ack in acks {
            match ack.recv_timeout(WORKER_ACK_TIMEOUT) {
                Ok(Ok(ready)) => first_ready = Some(first_ready.map_or(ready, |first| first.min(ready))),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(HsmError::Timeout)),
            }
        }
        match failure {
            None => Ok(ConnectTimes {
                wait: began - asked,
                login: logged_in - began,
                keys: keys_found - logged_in,
                attach_first: first_ready.map_or(Duration::ZERO, |first| first.saturating_duration_since(keys_found)),
                attach: keys_found.elapsed(),
            }),
            Some(e) => {
                self.detach_all(None);
                Err(e)
            }
        }
    }

    /// Every `kek_refresh_ms`, looks on the token for the KEK version after the newest one
    /// (made by `mps-hsm keys rotate-kek`, perhaps by another process) and, once it passes
    /// the key policy, makes it the one new chain keys are wrapped under. Workers copy it
    /// into their sessions at its first use. A KEK that fails the policy is never adopted.
    fn look_for_rotated_kek(&mut self) {
        let interval = Duration::from_millis(self.shared.config.kek_refresh_ms);
        if self.shared.state() != PoolState::Up || self.kek_looked_at.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        self.kek_looked_at = Some(Instant::now());
        let Some(session) = self.anchor.as_ref().and_then(|anchor| anchor.get().ok()) else { return };
        let base = &self.shared.config.keys.key_encryption;
        let current = self.shared.kek_newest.load(Ordering::Acquire);
        let keks = match find_keks(session, base) {
            Ok(keks) => keks,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for a rotated KEK");
                return;
            }
        };
        let Some(&(newest, handle)) = keks.last() else { return };
        if newest <= current {
            return;
        }
        let label = kek_label(base, newest);
        let checked = check_key(session, handle, &label, KeyRole::KeyEncryption)
            .and_then(|()| check_unwrap_template(session, handle, &label));
        match checked {
            Ok(()) => {
                self.shared.key_cache.insert(label.clone(), handle);
                self.shared.set_kek_found(newest);
                tracing::info!(
                    member = self.shared.member,
                    key = %label,
                    version = newest,
                    "a rotated KEK passed the key policy; new chain keys go under it once every HSM of the pool holds it"
                );
            }
            Err(e) => tracing::error!(
                key = %label,
                error = %e,
                "a rotated KEK fails the key policy and is not used; chain keys stay under the previous KEK"
            ),
        }
    }

    /// Tells every worker to give up its session and waits for all of them.
    fn detach_all(&mut self, drain_until: Option<Instant>) {
        let mut acks = Vec::with_capacity(self.controls.len());
        for control in &self.controls {
            let (done, ack) = crossbeam_channel::bounded(1);
            if control.send(Control::Detach { drain_until, done }).is_ok() {
                acks.push(ack);
            }
        }
        let wait =
            WORKER_ACK_TIMEOUT + drain_until.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default();
        for ack in acks {
            if ack.recv_timeout(wait).is_err() {
                tracing::error!("an HSM worker did not give up its session in time");
            }
        }
    }

    /// Stops the workers and closes the anchor. The module stays initialised: another pool
    /// in the same process may use it.
    pub fn shutdown(&mut self) {
        self.shared.set_state(PoolState::Closed);
        for control in &self.controls {
            let _ = control.send(Control::Shutdown);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.anchor = None;
    }
}

/// A login refused for the PIN itself: retrying in a loop would lock the PIN on most HSMs.
fn is_pin_failure(error: &HsmError) -> bool {
    matches!(
        error,
        HsmError::Pkcs11 {
            rv: RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid
                | RvError::PinLenRange,
            ..
        }
    )
}

/// Reads `CKA_EC_POINT` of the public key `label` and returns the 65-byte SEC1 point
/// (unwrapping the DER OCTET STRING that PKCS#11 v2.40 prescribes).
pub(crate) fn read_public_key(session: &cryptoki::session::Session, label: &str) -> Result<[u8; 65], HsmError> {
    let handle = find_token_object(session, ObjectClass::PUBLIC_KEY, label)?
        .ok_or_else(|| HsmError::KeyNotFound { label: label.to_owned() })?;
    let attributes = session.get_attributes(handle, &[AttributeType::EcPoint]).map_err(from_cryptoki)?;
    let point = attributes
        .into_iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
        .ok_or(HsmError::KeyNotFound { label: label.to_owned() })?;
    sec1_point(&point).ok_or(HsmError::UnexpectedLength {
        function: cryptoki::context::Function::GetAttributeValue,
        expected: 67,
        actual: point.len(),
    })
}

/// A P-256 SEC1 uncompressed point from `CKA_EC_POINT`: DER `04 41 04 x y`, or raw `04 x y`.
fn sec1_point(value: &[u8]) -> Option<[u8; 65]> {
    let raw = match value {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        raw if raw.len() == 65 => raw,
        _ => return None,
    };
    if raw[0] != 0x04 {
        return None;
    }
    raw.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let mut raw = [7u8; 65];
        raw[0] = 4;
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&raw);
        assert_eq!(sec1_point(&der), Some(raw));
        assert_eq!(sec1_point(&raw), Some(raw));
        assert_eq!(sec1_point(&der[..60]), None);
        let mut compressed = raw;
        compressed[0] = 2;
        assert_eq!(sec1_point(&compressed), None);
    }
}
