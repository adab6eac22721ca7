//! One pool worker: an OS thread that owns one PKCS#11 session and runs the jobs async
//! callers send it, so no tokio thread ever blocks on the HSM.
//!
//! A worker is *attached* (it has a session and session copies of the long-lived keys),
//! *draining* (a recycle waits for its opened authorization sessions to be sealed), or
//! *detached* (no session: every job is answered `Unavailable` at once while the HSM is
//! down, or kept queued while a recycle is under way). The supervisor moves it between these
//! states with [`Control`] messages; the worker itself detaches when a call reports that the
//! HSM is gone, and tells the supervisor.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select_biased};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use crate::custody::{KEK_VERSION_MAX, KeyRole, check_key, kek_label};
use crate::error::{HsmError, RvError, from_cryptoki, is_connection_lost, is_stale_handle, rv_of};
use crate::module::{Initialised, OwnedSession, call_guard};
use crate::pool::{Generation, PoolState, Shared, TicketId};
use crate::templates;

/// Work for a worker: runs on its session, or learns why there is none.
pub(crate) type Job = Box<dyn FnOnce(Result<&mut Ctx, HsmError>) + Send>;

/// How often an idle worker wakes to discard expired authorization sessions.
const TICK: Duration = Duration::from_millis(500);

/// Messages from the supervisor.
pub(crate) enum Control {
    /// Open a session on `slot` and copy the long-lived keys into it; `done` hears when the
    /// worker was ready to serve.
    Attach { module: Initialised, slot: Slot, generation: Generation, done: Sender<Result<Instant, HsmError>> },
    /// Give up the session; with `drain_until`, first wait (serving only seals and discards)
    /// until no authorization session is open or the instant passes.
    Detach { drain_until: Option<Instant>, done: Sender<()> },
    /// Leave the thread.
    Shutdown,
}

/// The channels of one worker, as the pool sees them.
pub(crate) struct WorkerChannels {
    pub jobs: Receiver<Job>,
    pub tickets: Receiver<Job>,
    pub tickets_sender: Sender<Job>,
    pub control: Receiver<Control>,
}

/// Tells the supervisor that a detach is finished, exactly once: when dropped. A worker
/// holds it while it drains, and drops it after its session is closed on every path out.
pub(crate) struct DetachDone(Sender<()>);

impl Drop for DetachDone {
    fn drop(&mut self) {
        // A supervisor that stopped waiting (its timeout passed) needs no answer.
        let _ = self.0.send(());
    }
}

/// A worker waiting for its opened authorization sessions to be sealed before it detaches.
/// Fields drop in order: the session closes before the supervisor is told.
struct Draining {
    ctx: Box<Ctx>,
    until: Instant,
    done: DetachDone,
}

enum Mode {
    Attached(Box<Ctx>),
    Draining(Draining),
    Detached,
}

/// What a worker reads from: its channels, and the pool it belongs to.
struct Inbox<'a> {
    index: usize,
    shared: &'a Arc<Shared>,
    channels: &'a WorkerChannels,
    never: Receiver<Job>,
}

/// Runs a worker until it is told to shut down or its channels close.
pub(crate) fn run(index: usize, shared: Arc<Shared>, channels: WorkerChannels) {
    let inbox = Inbox { index, shared: &shared, channels: &channels, never: crossbeam_channel::never() };
    let mut mode = Mode::Detached;
    loop {
        let next = match mode {
            Mode::Attached(ctx) => attached(&inbox, ctx),
            Mode::Draining(draining) => drain(&inbox, draining),
            Mode::Detached => detached(&inbox),
        };
        match next {
            Some(next) => mode = next,
            None => return,
        }
    }
}

/// Attached: control first, then seals and discards, then new work; an idle tick reaps
/// expired authorization sessions.
fn attached(inbox: &Inbox<'_>, mut ctx: Box<Ctx>) -> Option<Mode> {
    let channels = inbox.channels;
    select_biased! {
        recv(channels.control) -> msg => on_control(inbox, Mode::Attached(ctx), msg.ok()),
        recv(channels.tickets) -> job => run_job(ctx, job.ok()?),
        recv(channels.jobs) -> job => run_job(ctx, job.ok()?),
        default(TICK) => {
            let calls = ctx.module.calls();
            let _call = call_guard(&calls);
            if ctx.module.is_current() {
                ctx.reap_expired_tickets();
            }
            Some(Mode::Attached(ctx))
        }
    }
}

/// Draining: only seals and discards run, until no authorization session is open or the
/// deadline passes; then the session closes and the supervisor is told (by `done`'s drop).
fn drain(inbox: &Inbox<'_>, draining: Draining) -> Option<Mode> {
    let now = Instant::now();
    if draining.ctx.tickets.is_empty() || now >= draining.until {
        drop(draining);
        return Some(Mode::Detached);
    }
    let Draining { ctx, until, done } = draining;
    let channels = inbox.channels;
    select_biased! {
        recv(channels.control) -> msg => {
            drop(done);
            on_control(inbox, Mode::Attached(ctx), msg.ok())
        },
        recv(channels.tickets) -> job => match run_job(ctx, job.ok()?) {
            Some(Mode::Attached(ctx)) => Some(Mode::Draining(Draining { ctx, until, done })),
            other => other,
        },
        default(until.saturating_duration_since(now).min(TICK)) => Some(Mode::Draining(Draining { ctx, until, done })),
    }
}

/// Detached: while the HSM is down, queued jobs are answered `Unavailable` at once; during a
/// recycle they stay queued and run after the new session is attached.
fn detached(inbox: &Inbox<'_>) -> Option<Mode> {
    let channels = inbox.channels;
    let jobs = if inbox.shared.state() == PoolState::Recycling { &inbox.never } else { &channels.jobs };
    let unavailable = |job: Job| {
        job(Err(HsmError::Unavailable));
        Mode::Detached
    };
    select_biased! {
        recv(channels.control) -> msg => on_control(inbox, Mode::Detached, msg.ok()),
        recv(channels.tickets) -> job => job.ok().map(unavailable),
        recv(jobs) -> job => job.ok().map(unavailable),
        default(TICK) => Some(Mode::Detached),
    }
}

fn run_job(mut ctx: Box<Ctx>, job: Job) -> Option<Mode> {
    // No C_Finalize of the module starts while the job runs (see module::finalise_if_current).
    let calls = ctx.module.calls();
    let call = call_guard(&calls);
    if !ctx.module.is_current() {
        // Another pool of this process re-initialised the module: this session and every
        // handle of it are dead, and their numbers may name somebody else's objects now.
        ctx.fault.set(true);
        ctx.report_fault();
        job(Err(HsmError::Unavailable));
    } else {
        // A panic inside a job (a bug) must not kill the worker thread: its session state is
        // then unknown, so the worker detaches and the pool re-initialises. The caller's reply
        // channel is dropped during the unwind, which it sees as `Unavailable`.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(&mut ctx))));
        if ran.is_err() {
            tracing::error!(worker = ctx.worker, "an HSM job panicked; re-initialising the pool");
            ctx.fault.set(true);
        }
    }
    drop(call);
    if ctx.fault.get() {
        ctx.report_fault();
        // Dropping the context closes the session (if it still exists), which destroys every
        // session object it holds.
        drop(ctx);
        Some(Mode::Detached)
    } else {
        Some(Mode::Attached(ctx))
    }
}

fn on_control(inbox: &Inbox<'_>, mode: Mode, msg: Option<Control>) -> Option<Mode> {
    match msg? {
        Control::Shutdown => None,
        Control::Detach { drain_until, done } => {
            let done = DetachDone(done);
            match mode {
                Mode::Attached(ctx) | Mode::Draining(Draining { ctx, .. }) => match drain_until {
                    Some(until) if !ctx.tickets.is_empty() => Some(Mode::Draining(Draining { ctx, until, done })),
                    // The session closes (ctx drops) before the supervisor hears (done drops).
                    _ => {
                        drop(ctx);
                        drop(done);
                        Some(Mode::Detached)
                    }
                },
                Mode::Detached => Some(Mode::Detached),
            }
        }
        Control::Attach { module, slot, generation, done } => {
            drop(mode);
            let calls = module.calls();
            let call = call_guard(&calls);
            let attached = Ctx::attach(
                inbox.index,
                Arc::clone(inbox.shared),
                inbox.channels.tickets_sender.clone(),
                &module,
                slot,
                generation,
            );
            drop(call);
            match attached {
                Ok(ctx) => {
                    let _ = done.send(Ok(Instant::now()));
                    Some(Mode::Attached(Box::new(ctx)))
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                    Some(Mode::Detached)
                }
            }
        }
    }
}

/// Handles of the long-lived keys as this worker uses them: session copies when the token
/// allows copying, else the token objects themselves.
pub(crate) struct WorkerKeys {
    /// KEK versions copied so far: the newest at attach, others when a record names them.
    pub keks: BTreeMap<u32, ObjectHandle>,
    pub password_verification: ObjectHandle,
    pub signing: ObjectHandle,
    /// `keys.signing_next`, during a signing-key renewal.
    pub signing_next: Option<ObjectHandle>,
    pub issuer_master: ObjectHandle,
}

/// The three objects of an opened authorization session, kept until it is sealed.
pub(crate) struct OpenTicket {
    pub previous_chain: ObjectHandle,
    pub integrity: ObjectHandle,
    pub encryption: ObjectHandle,
    pub counter: mps_protocol::Counter,
    pub context: [u8; mps_protocol::keys::CONTEXT_LEN],
    pub opened: Instant,
}

/// An attached worker's state: its session and what lives in it.
pub(crate) struct Ctx {
    session: OwnedSession,
    module: Initialised,
    pub shared: Arc<Shared>,
    pub worker: usize,
    pub generation: Generation,
    pub keys: WorkerKeys,
    pub tickets: BTreeMap<TicketId, OpenTicket>,
    pub tickets_sender: Sender<Job>,
    /// Set when a call said the HSM is gone: the worker detaches after the job.
    fault: Cell<bool>,
    fault_reported: Cell<bool>,
}

impl Ctx {
    fn attach(
        worker: usize,
        shared: Arc<Shared>,
        tickets_sender: Sender<Job>,
        module: &Initialised,
        slot: Slot,
        generation: Generation,
    ) -> Result<Self, HsmError> {
        // Read-only: a worker only creates session objects and can never change the token.
        let session = OwnedSession::open(module, slot, false)?;
        let labels = shared.config.keys.clone();
        let copy = |label: &str, class: ObjectClass| copy_key(&shared, session.get()?, label, class);
        let newest = shared.kek_newest.load(Ordering::Acquire);
        let newest_kek = copy(&kek_label(&labels.key_encryption, newest), ObjectClass::SECRET_KEY)?;
        let keys = WorkerKeys {
            keks: BTreeMap::from([(newest, newest_kek)]),
            password_verification: copy(&labels.password_verification, ObjectClass::SECRET_KEY)?,
            signing: copy(&labels.signing, ObjectClass::PRIVATE_KEY)?,
            signing_next: match &labels.signing_next {
                Some(next) => Some(copy(next, ObjectClass::PRIVATE_KEY)?),
                None => None,
            },
            issuer_master: copy(&labels.issuer_master, ObjectClass::SECRET_KEY)?,
        };
        Ok(Self {
            session,
            module: module.clone(),
            shared,
            worker,
            generation,
            keys,
            tickets: BTreeMap::new(),
            tickets_sender,
            fault: Cell::new(false),
            fault_reported: Cell::new(false),
        })
    }

    /// The session.
    pub fn session(&self) -> Result<&Session, HsmError> {
        self.session.get()
    }

    /// The KEK version new chain keys are wrapped under: the newest that every member of
    /// the pool holds, so that any member can unwrap them.
    pub fn kek_newest(&self) -> u32 {
        self.shared.kek_for_wrapping()
    }

    /// The handle of KEK `version`, copied into this worker's session the first time it is
    /// needed (a version created by a rotation after attach, or an older one a record still
    /// names). The token key's attributes are checked before its first use here; an older
    /// KEK that fails the policy is allowed only to unwrap (`for_wrapping` false).
    pub fn kek(&mut self, version: u32, for_wrapping: bool) -> Result<ObjectHandle, HsmError> {
        if let Some(handle) = self.keys.keks.get(&version) {
            return Ok(*handle);
        }
        if version == 0 || version > KEK_VERSION_MAX {
            return Err(HsmError::WrappedKeyInvalid);
        }
        let label = kek_label(&self.shared.config.keys.key_encryption, version);
        let session = self.session()?;
        let token_key =
            self.shared.token_key(session, &label, ObjectClass::SECRET_KEY).map_err(|e| self.classify(e))?;
        match check_key(session, token_key, &label, KeyRole::KeyEncryption) {
            Ok(()) => {}
            Err(HsmError::KeyPolicy(violation)) if !for_wrapping => {
                tracing::warn!(key = %label, problem = %violation, "unwrapping with an older KEK that fails the key policy");
            }
            Err(e) => return Err(self.classify(e)),
        }
        let handle = copy_key(&self.shared, session, &label, ObjectClass::SECRET_KEY)?;
        self.keys.keks.insert(version, handle);
        Ok(handle)
    }

    /// Sorts an error: "HSM gone" marks the worker for detaching and becomes `Unavailable`.
    ///
    /// `CKR_GENERAL_ERROR` is ambiguous: SoftHSM also reports a failed RFC 5649 integrity
    /// check and bad CBC padding that way. So the session is probed (C_GetSessionInfo) first,
    /// and only a failing probe takes the pool down; a wrapped key or ciphertext, which a
    /// client can influence, must never be able to.
    pub fn classify(&self, error: HsmError) -> HsmError {
        match error {
            HsmError::Pkcs11 { rv: RvError::GeneralError, function } if self.session_alive() => {
                HsmError::Pkcs11 { rv: RvError::GeneralError, function }
            }
            HsmError::Pkcs11 { rv, .. } if is_connection_lost(rv) => {
                self.fault.set(true);
                HsmError::Unavailable
            }
            other => other,
        }
    }

    /// Whether the module was re-initialised while this job ran; its result is then void.
    pub fn module_changed(&self) -> bool {
        let changed = !self.module.is_current();
        if changed {
            self.fault.set(true);
        }
        changed
    }

    /// Takes the pool down (once) if a call of this job found the HSM gone. Runs before the
    /// job's reply is sent, so a caller that got `Unavailable` finds the pool down.
    pub fn report_fault(&self) {
        if self.fault.get() && !self.fault_reported.replace(true) {
            self.shared.report_fault(self.generation);
        }
    }

    fn session_alive(&self) -> bool {
        self.session().is_ok_and(|s| s.get_session_info().is_ok())
    }

    /// [`Ctx::classify`] for a cryptoki error.
    pub fn fail(&self, error: cryptoki::error::Error) -> HsmError {
        self.classify(from_cryptoki(error))
    }

    /// Wraps a freshly created session object so that it is destroyed on every path.
    pub fn guard(&self, handle: ObjectHandle) -> Object<'_> {
        self.shared.metrics.object_created();
        Object { ctx: self, handle, armed: true }
    }

    /// Guards an object created earlier (counted then), e.g. one kept under a ticket.
    pub fn guard_existing(&self, handle: ObjectHandle) -> Object<'_> {
        Object { ctx: self, handle, armed: true }
    }

    /// Destroys a session object; a failure is counted (the object then lives until the
    /// session closes) and "HSM gone" marks the worker.
    pub fn destroy(&self, handle: ObjectHandle) {
        let result = self.session().and_then(|s| s.destroy_object(handle).map_err(from_cryptoki));
        if let Err(e) = result {
            self.shared.metrics.destroy_failures.fetch_add(1, Ordering::Relaxed);
            let _ = self.classify(e);
        }
    }

    /// Stores an opened authorization session's objects under a new ticket id.
    pub fn insert_ticket(&mut self, ticket: OpenTicket) -> TicketId {
        let id = self.shared.next_ticket_id();
        self.tickets.insert(id, ticket);
        self.shared.metrics.open_tickets.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Takes an opened session's objects out of the map (the caller destroys them).
    pub fn take_ticket(&mut self, id: TicketId) -> Option<OpenTicket> {
        let ticket = self.tickets.remove(&id)?;
        self.shared.metrics.open_tickets.fetch_sub(1, Ordering::Relaxed);
        Some(ticket)
    }

    /// Destroys the objects of an opened session.
    pub fn destroy_ticket(&self, ticket: &OpenTicket) {
        self.destroy(ticket.previous_chain);
        self.destroy(ticket.integrity);
        self.destroy(ticket.encryption);
    }

    /// Discards opened sessions older than the configured time-to-live.
    pub fn reap_expired_tickets(&mut self) {
        let ttl = Duration::from_millis(self.shared.config.ticket_ttl_ms);
        while let Some((&id, ticket)) = self.tickets.first_key_value() {
            if ticket.opened.elapsed() < ttl {
                break;
            }
            if let Some(ticket) = self.take_ticket(id) {
                self.destroy_ticket(&ticket);
            }
        }
    }

    /// Looks up a token key through the pool's cache; on a stale handle the cache entry is
    /// dropped and the lookup done once more.
    pub fn with_token_key<T>(
        &self,
        label: &str,
        class: ObjectClass,
        mut use_key: impl FnMut(ObjectHandle) -> Result<T, cryptoki::error::Error>,
    ) -> Result<T, HsmError> {
        let session = self.session()?;
        let handle = self.shared.token_key(session, label, class).map_err(|e| self.classify(e))?;
        match use_key(handle) {
            Err(e) if rv_of(&e).is_some_and(is_stale_handle) => {
                self.shared.key_cache.invalidate(label);
                let handle = self.shared.token_key(session, label, class).map_err(|e| self.classify(e))?;
                use_key(handle).map_err(|e| self.fail(e))
            }
            other => other.map_err(|e| self.fail(e)),
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // The objects die with the session that the OwnedSession closes right after this.
        let open = self.tickets.len() as u64;
        self.shared.metrics.open_tickets.fetch_sub(open, Ordering::Relaxed);
    }
}

/// Copies a token key into a session object of `session`; when the token refuses the copy
/// (a module where keys are not copyable), the token handle is used directly.
fn copy_key(shared: &Shared, session: &Session, label: &str, class: ObjectClass) -> Result<ObjectHandle, HsmError> {
    let copy = |handle| {
        let _lookup = crate::module::key_lookup_lock();
        session.copy_object(handle, &templates::session_copy())
    };
    let mut handle = shared.token_key(session, label, class)?;
    let mut copied = copy(handle);
    if copied.as_ref().err().and_then(rv_of).is_some_and(is_stale_handle) {
        shared.key_cache.invalidate(label);
        handle = shared.token_key(session, label, class)?;
        copied = copy(handle);
    }
    match copied {
        Ok(copy) => {
            shared.metrics.object_created();
            Ok(copy)
        }
        Err(e) => match rv_of(&e) {
            Some(rv) if is_connection_lost(rv) => Err(from_cryptoki(e)),
            _ => {
                tracing::warn!(label, error = %e, "token refuses a session copy of the key; using the token object");
                Ok(handle)
            }
        },
    }
}

/// A session object destroyed when dropped, unless [`Object::keep`] hands it on.
pub(crate) struct Object<'a> {
    ctx: &'a Ctx,
    handle: ObjectHandle,
    armed: bool,
}

impl Object<'_> {
    /// The handle, for use while the guard lives.
    pub fn handle(&self) -> ObjectHandle {
        self.handle
    }

    /// Stops guarding and returns the handle: the caller now owns the object.
    pub fn keep(mut self) -> ObjectHandle {
        self.armed = false;
        self.handle
    }
}

impl Drop for Object<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.ctx.destroy(self.handle);
        }
    }
}
