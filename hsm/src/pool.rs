//! The [`Hsm`] handle: a pool over one or more HSMs (members) holding the same keys. Each
//! member is a set of worker threads, each with its own PKCS#11 session, fed from async code
//! through bounded channels, answered through oneshot channels, and watched by a supervisor
//! that re-initialises the member's module when that HSM is lost. New work goes to the least
//! loaded member that is up; a sealed or discarded session goes back to its own worker.
//!
//! The public operations themselves are in [`crate::authorization`] (the two-phase
//! authorization session) and [`crate::operations`] (signing, passwords, personalisation).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use tokio::sync::oneshot;

use crate::config::{HsmConfig, Pin};
use crate::error::HsmError;
use crate::metrics::{CountedError, InFlight, Metrics, PoolMetrics};
use crate::module::find_token_object;
use crate::supervisor::{Supervisor, SupervisorMsg};
use crate::worker::{self, Control, Ctx, Job, WorkerChannels};

/// Which attach of the workers a session or a ticket belongs to: incremented at every attach,
/// so that work of an older one (whose session died with a re-initialisation) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(pub u64);

/// An opened authorization session on one worker, unique in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TicketId(pub u64);

/// Where the pool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolState {
    /// Logged in, every worker attached.
    Up,
    /// The HSM was lost: every operation fails at once with `Unavailable`.
    Down,
    /// A planned re-initialisation: operations queue and run once it is done.
    Recycling,
    /// The last [`Hsm`] handle was dropped.
    Closed,
}

/// The newest KEK version each member found on its token, and so the newest one every
/// member holds: chain keys are wrapped only under that one, so that a chain key wrapped on
/// one member unwraps on every other (a rotation is adopted once every member has it).
pub(crate) struct KekAgreement {
    /// Per member; 0 until the member first connected.
    found: Vec<AtomicU32>,
}

impl KekAgreement {
    fn new(members: usize) -> Self {
        Self { found: (0..members).map(|_| AtomicU32::new(0)).collect() }
    }

    /// The newest version every member that has connected holds (1 before any connected).
    pub fn agreed(&self) -> u32 {
        self.found.iter().map(|found| found.load(Ordering::Acquire)).filter(|v| *v > 0).min().unwrap_or(1)
    }
}

/// Lets the members of a pool take their automatic recycles in turn, so that the others serve
/// meanwhile: a member recycles on its own only while every other member is up and none holds
/// the turn. A pool of one recycles when due, and its operations queue meanwhile (bounded by
/// `queue_depth_max` and the caller's deadline).
pub(crate) struct RecycleTurns {
    /// Per member: whether it is up (set with its state).
    up: Vec<AtomicBool>,
    turn: Mutex<()>,
}

impl RecycleTurns {
    fn new(members: usize) -> Self {
        Self { up: (0..members).map(|_| AtomicBool::new(false)).collect(), turn: Mutex::new(()) }
    }

    fn set_up(&self, member: usize, up: bool) {
        if let Some(flag) = self.up.get(member) {
            flag.store(up, Ordering::Release);
        }
    }

    /// The turn for `member`'s automatic recycle, held until dropped; `None` while another
    /// member is not up or holds the turn (the supervisor asks again at its next idle check).
    pub fn try_take(&self, member: usize) -> Option<MutexGuard<'_, ()>> {
        let guard = match self.turn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let others_up = self.up.iter().enumerate().all(|(index, up)| index == member || up.load(Ordering::Acquire));
        others_up.then_some(guard)
    }
}

/// State shared by one member's handle, workers and supervisor.
pub(crate) struct Shared {
    /// This member's index in the pool (0: the HSM of the config's top-level keys).
    pub member: usize,
    /// This member's configuration (its module, token, PIN source, pool size).
    pub config: HsmConfig,
    pub pin: Pin,
    /// Read on every call; written on faults, recycles and shutdown (an uncontended lock).
    state: Mutex<PoolState>,
    /// Incremented at every attach of the workers; tickets of an older one are dead (read it
    /// as a [`Generation`] through [`Shared::current_generation`]).
    generation: AtomicU64,
    pub metrics: Metrics,
    /// Handles of token keys by label (found once per initialisation, refreshed when stale).
    pub key_cache: moka::sync::Cache<String, ObjectHandle>,
    /// SEC1 uncompressed point of the signing key, read at every (re-)initialisation.
    pub public_key: Mutex<[u8; 65]>,
    /// The same for `keys.signing_next`, during a signing-key renewal.
    pub public_key_next: Mutex<Option<[u8; 65]>>,
    /// The newest KEK version on this member's token that passed the key policy. Set at
    /// every connect and raised by the supervisor's periodic look for a rotated KEK (through
    /// [`Shared::set_kek_found`]); chain keys are wrapped under [`Shared::kek_for_wrapping`].
    pub kek_newest: AtomicU32,
    kek_agreement: Arc<KekAgreement>,
    /// Shared by the members: whose turn it is to recycle on its own.
    pub recycle_turns: Arc<RecycleTurns>,
    /// Every KEK version found on the token at the last connect (ascending).
    pub kek_versions: Mutex<Vec<u32>>,
    next_ticket: AtomicU64,
    supervisor: Sender<SupervisorMsg>,
}

impl Shared {
    pub fn state(&self) -> PoolState {
        *self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_state(&self, state: PoolState) {
        let mut current = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Closed is final.
        if *current != PoolState::Closed {
            *current = state;
            self.recycle_turns.set_up(self.member, state == PoolState::Up);
        }
    }

    /// A worker found the HSM gone while attached under `generation`.
    pub fn report_fault(&self, generation: Generation) {
        if generation == self.current_generation() {
            self.set_state(PoolState::Down);
            let _ = self.supervisor.send(SupervisorMsg::Fault { generation });
        }
    }

    /// This member found KEK `version` (and nothing newer) on its token, and it passed the
    /// key policy.
    pub fn set_kek_found(&self, version: u32) {
        self.kek_newest.store(version, Ordering::Release);
        if let Some(found) = self.kek_agreement.found.get(self.member) {
            found.store(version, Ordering::Release);
        }
    }

    /// The KEK version new chain keys are wrapped under: the newest every member holds.
    pub fn kek_for_wrapping(&self) -> u32 {
        self.kek_agreement.agreed()
    }

    pub fn next_ticket_id(&self) -> TicketId {
        TicketId(self.next_ticket.fetch_add(1, Ordering::Relaxed))
    }

    /// The workers' current attach.
    pub fn current_generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// Starts the next attach and returns it.
    pub fn next_generation(&self) -> Generation {
        Generation(self.generation.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// The handle of a token key, from the cache or found once.
    pub fn token_key(&self, session: &Session, label: &str, class: ObjectClass) -> Result<ObjectHandle, HsmError> {
        if let Some(handle) = self.key_cache.get(label) {
            return Ok(handle);
        }
        let handle = find_token_object(session, class, label)?
            .ok_or_else(|| HsmError::KeyNotFound { label: label.to_owned() })?;
        self.key_cache.insert(label.to_owned(), handle);
        Ok(handle)
    }
}

/// Where a reply goes: an async caller or a blocking one.
pub(crate) enum Reply<R> {
    Async(oneshot::Sender<R>),
    Blocking(crossbeam_channel::Sender<R>),
}

impl<R> Reply<R> {
    fn send(self, value: R) {
        // A caller that gave up (timeout, cancelled future) drops the value here; an opened
        // session's ticket then discards its objects from its Drop.
        match self {
            Reply::Async(tx) => drop(tx.send(value)),
            Reply::Blocking(tx) => drop(tx.send(value)),
        }
    }
}

/// Which queue a job goes to.
#[derive(Clone, Copy)]
pub(crate) enum Route {
    /// The least loaded worker of the least loaded member that is up.
    Any,
    /// The least loaded worker of one member (key checks at connect, tests).
    Member(usize),
    /// The worker holding an opened session's objects (its ticket queue).
    Ticket { member: usize, worker: usize },
}

struct WorkerSenders {
    jobs: Sender<Job>,
    tickets: Sender<Job>,
}

/// One HSM of the pool: its module and token, its workers, its supervisor. Members share
/// nothing but the KEK agreement; each fails and recovers on its own.
struct Member {
    shared: Arc<Shared>,
    workers: Vec<WorkerSenders>,
    supervisor: Sender<SupervisorMsg>,
    round_robin: AtomicUsize,
}

/// How long dropping the last handle waits for one member's workers to close their sessions.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl Drop for Member {
    fn drop(&mut self) {
        self.shared.set_state(PoolState::Closed);
        // Wait (bounded) until every session is closed: a process that exits while pool
        // threads still call into the module races the module's own teardown.
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.supervisor.send(SupervisorMsg::Shutdown { done }).is_ok() {
            let _ = finished.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

impl Member {
    /// Starts the workers and the supervisor of member `index` and connects it (find the
    /// token, log in, check the key policy, attach the workers).
    fn start(
        index: usize,
        config: HsmConfig,
        pin: Pin,
        keks: Arc<KekAgreement>,
        recycle_turns: Arc<RecycleTurns>,
    ) -> Result<Member, HsmError> {
        let (supervisor_tx, supervisor_rx) = crossbeam_channel::unbounded();
        let pool_size = config.pool_size;
        let queue_depth = config.queue_depth_max;
        let shared = Arc::new(Shared {
            member: index,
            config,
            pin,
            state: Mutex::new(PoolState::Down),
            generation: AtomicU64::new(0),
            metrics: Metrics::default(),
            key_cache: moka::sync::Cache::new(256),
            public_key: Mutex::new([0; 65]),
            public_key_next: Mutex::new(None),
            kek_newest: AtomicU32::new(1),
            kek_versions: Mutex::new(Vec::new()),
            kek_agreement: keks,
            recycle_turns,
            next_ticket: AtomicU64::new(1),
            supervisor: supervisor_tx.clone(),
        });
        let mut workers = Vec::with_capacity(pool_size);
        let mut controls = Vec::with_capacity(pool_size);
        let mut threads = Vec::with_capacity(pool_size);
        for worker_index in 0..pool_size {
            let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(queue_depth);
            let (tickets_tx, tickets_rx) = crossbeam_channel::unbounded();
            let (control_tx, control_rx) = crossbeam_channel::unbounded();
            let channels = WorkerChannels {
                jobs: jobs_rx,
                tickets: tickets_rx,
                tickets_sender: tickets_tx.clone(),
                control: control_rx,
            };
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("mps-hsm-{index}-{worker_index}"))
                .spawn(move || worker::run(worker_index, worker_shared, channels));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start an HSM worker thread");
                    for control in &controls {
                        let _ = crossbeam_channel::Sender::send(control, Control::Shutdown);
                    }
                    return Err(HsmError::Unavailable);
                }
            }
            workers.push(WorkerSenders { jobs: jobs_tx, tickets: tickets_tx });
            controls.push(control_tx);
        }
        let mut supervisor = Supervisor::new(Arc::clone(&shared), controls, threads, supervisor_rx);
        if let Err(e) = supervisor.connect() {
            supervisor.shutdown();
            return Err(e);
        }
        shared.set_state(PoolState::Up);
        std::thread::Builder::new()
            .name(format!("mps-hsm-{index}-supervisor"))
            .spawn(move || supervisor.run())
            .map_err(|_| HsmError::Unavailable)?;
        Ok(Member { shared, workers, supervisor: supervisor_tx, round_robin: AtomicUsize::new(0) })
    }

    fn is_ready(&self) -> bool {
        matches!(self.shared.state(), PoolState::Up | PoolState::Recycling)
    }

    fn load(&self) -> MemberLoad {
        let availability = match self.shared.state() {
            PoolState::Up => Availability::Up,
            PoolState::Recycling => Availability::Recycling,
            PoolState::Down | PoolState::Closed => Availability::Down,
        };
        MemberLoad {
            availability,
            in_flight: self.shared.metrics.in_flight.load(Ordering::Relaxed),
            pool_size: self.workers.len() as u64,
        }
    }

    fn queued(&self) -> u64 {
        self.workers.iter().map(|w| (w.jobs.len() + w.tickets.len()) as u64).sum()
    }

    fn metrics(&self) -> PoolMetrics {
        self.shared.metrics.snapshot(self.is_ready(), self.workers.len(), self.queued())
    }

    fn pick_worker(&self) -> usize {
        let workers = &self.workers;
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        (0..workers.len()).map(|i| (start + i) % workers.len()).min_by_key(|&i| workers[i].jobs.len()).unwrap_or(0)
    }

    fn enqueue(&self, worker: Option<usize>, job: Job) -> Result<(), HsmError> {
        match self.shared.state() {
            PoolState::Up | PoolState::Recycling => {}
            PoolState::Down | PoolState::Closed => return Err(HsmError::Unavailable),
        }
        let sent = match worker {
            None => self.workers.get(self.pick_worker()).map(|w| w.jobs.try_send(job)),
            Some(index) => {
                self.workers.get(index).map(|w| w.tickets.send(job).map_err(|e| TrySendError::Disconnected(e.0)))
            }
        };
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => Err(HsmError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => Err(HsmError::Unavailable),
        }
    }
}

/// Whether a member can take work: up first, then one in a planned recycle (its jobs queue
/// for a few milliseconds), never one that is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Availability {
    Up,
    Recycling,
    Down,
}

/// What the choice of a member looks at.
#[derive(Debug, Clone, Copy)]
struct MemberLoad {
    availability: Availability,
    in_flight: u64,
    pool_size: u64,
}

/// The member to send new work to, among `loads` given in round-robin order: the available
/// one with the fewest operations in flight per worker (the first of equals, so ties go round
/// the members), or `None` when every member is down.
fn least_loaded(loads: impl IntoIterator<Item = (usize, MemberLoad)>) -> Option<usize> {
    let mut best: Option<(usize, MemberLoad)> = None;
    for (index, load) in loads {
        if load.availability == Availability::Down {
            continue;
        }
        let better = match &best {
            None => true,
            Some((_, current)) => {
                // in_flight / pool_size compared without division; sizes are 1 to 64.
                let (mine, theirs) = (
                    u128::from(load.in_flight) * u128::from(current.pool_size),
                    u128::from(current.in_flight) * u128::from(load.pool_size),
                );
                (load.availability, mine) < (current.availability, theirs)
            }
        };
        if better {
            best = Some((index, load));
        }
    }
    best.map(|(index, _)| index)
}

struct Inner {
    /// At least one; the first is the HSM of the config's top-level keys.
    members: Vec<Member>,
    /// The first member's shared state: the public keys and KEK versions every member holds
    /// alike (checked at connect).
    first: Arc<Shared>,
    round_robin: AtomicUsize,
}

/// A connection to the issuer's HSMs: one or more members (each a logged-in token holding
/// the same keys, with a pool of sessions), work spread over them by load. Cheap to clone;
/// the pool shuts down when the last clone is dropped (which waits, at most 5 s per member,
/// until the workers have closed their sessions). Run one per process: a member's recovery
/// re-initialises its module, which every other user of that module in the process feels too.
///
/// Every `async` operation only awaits a reply: the PKCS#11 calls run on the pool's own
/// threads. A member that is lost takes no new work while its supervisor re-initialises it
/// in the background; when every member is lost every operation fails at once with
/// [`HsmError::Unavailable`].
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

// The handle is shared across tasks and threads.
const _: fn() = || {
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Hsm>();
    shared_across_threads::<crate::SessionTicket>();
};

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for member in &self.inner.members {
            list.entry(&(&member.shared.config.token_label, member.workers.len(), member.shared.state()));
        }
        list.finish()
    }
}

impl Hsm {
    /// Connects from async code: the blocking work runs on a thread of its own.
    pub async fn connect(config: HsmConfig) -> Result<Hsm, HsmError> {
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("mps-hsm-connect".to_owned())
            .spawn(move || drop(tx.send(Hsm::connect_blocking(config))))
            .map_err(|_| HsmError::Unavailable)?;
        rx.await.map_err(|_| HsmError::Unavailable)?
    }

    /// For every member (the HSM of the top-level keys, then each of `additional`): loads the
    /// module, initialises it (once per process), finds the token, logs in with the member's
    /// PIN, keeps an anchor session open, starts the workers (each copies the long-lived keys
    /// into its session) and the supervisor. Then checks that every member holds the same
    /// keys as the first. Fails if any of that fails for any member, naming the member.
    /// Blocks: do not call it on a tokio worker thread.
    pub fn connect_blocking(config: HsmConfig) -> Result<Hsm, HsmError> {
        config.validate()?;
        let member_configs = config.members();
        crate::members::check_distinct_modules(&member_configs)?;
        let keks = Arc::new(KekAgreement::new(member_configs.len()));
        let recycle_turns = Arc::new(RecycleTurns::new(member_configs.len()));
        let count = member_configs.len();
        let mut members = Vec::with_capacity(count);
        for (index, member_config) in member_configs.into_iter().enumerate() {
            // A pool of one HSM reports its errors as before; in a pool of several, each
            // names its member.
            let named = |source| if count > 1 { member_error(index, &member_config, source) } else { source };
            let pin = member_config.load_pin().map_err(|e| named(HsmError::Config(e)))?;
            let started =
                Member::start(index, member_config.clone(), pin, Arc::clone(&keks), Arc::clone(&recycle_turns))
                    .map_err(named)?;
            members.push(started);
        }
        let Some(first) = members.first().map(|m| Arc::clone(&m.shared)) else {
            return Err(HsmError::Config(crate::config::ConfigError::Range { field: "additional", reason: "no HSM" }));
        };
        let hsm = Hsm { inner: Arc::new(Inner { members, first, round_robin: AtomicUsize::new(0) }) };
        crate::members::check_same_keys(&hsm)?;
        Ok(hsm)
    }

    /// Whether at least one member is logged in with its sessions (for `/readyz`). A planned
    /// recycle counts as ready: operations queue for its few milliseconds.
    pub fn is_ready(&self) -> bool {
        self.inner.members.iter().any(Member::is_ready)
    }

    /// [`Hsm::is_ready`] of each member, the first HSM first.
    pub fn members_ready(&self) -> Vec<bool> {
        self.inner.members.iter().map(Member::is_ready).collect()
    }

    /// Per member, whether it is up: logged in and serving, neither down nor in a recycle.
    pub fn members_up(&self) -> Vec<bool> {
        self.inner.members.iter().map(|member| member.shared.state() == PoolState::Up).collect()
    }

    /// A snapshot of the pool's counters: totals over the members, and each member's own in
    /// [`PoolMetrics::members`].
    pub fn metrics(&self) -> PoolMetrics {
        PoolMetrics::combine(
            self.inner
                .members
                .iter()
                .map(|member| (member.shared.config.token_label.clone(), member.metrics()))
                .collect(),
        )
    }

    /// Re-initialises every member on purpose, one after the other (so that the others
    /// serve meanwhile): waits up to `recycle_drain_ms` for opened authorization sessions to
    /// be sealed, closes every session, C_Finalize, C_Initialize, logs in and re-attaches the
    /// workers. SoftHSM frees the memory of every session object ever created only at
    /// C_Finalize, so a long-running server recycles now and then (`recycle_after_objects`
    /// does it automatically, per member). Operations submitted meanwhile go to the other
    /// members, or queue and run afterwards. Fails (after trying every member) if any
    /// member's recycle failed.
    pub async fn recycle(&self) -> Result<(), HsmError> {
        let mut outcome = Ok(());
        for member in &self.inner.members {
            let (tx, rx) = oneshot::channel();
            let result = match member.supervisor.send(SupervisorMsg::Recycle { reply: tx }) {
                Ok(()) => rx.await.map_err(|_| HsmError::Unavailable).and_then(|result| result),
                Err(_) => Err(HsmError::Unavailable),
            };
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }

    /// Number of members (HSMs) of the pool.
    pub fn member_count(&self) -> usize {
        self.inner.members.len()
    }

    fn member_for(&self, route: Route) -> Option<(&Member, Option<usize>)> {
        let members = &self.inner.members;
        match route {
            Route::Any => {
                let start = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
                let order = (0..members.len()).map(|i| (start + i) % members.len());
                // Every member down: the round-robin one answers `Unavailable` (and counts it).
                let index = least_loaded(order.filter_map(|i| Some((i, members.get(i)?.load()))))
                    .unwrap_or(start % members.len().max(1));
                members.get(index).map(|member| (member, None))
            }
            Route::Member(index) => members.get(index).map(|member| (member, None)),
            Route::Ticket { member, worker } => members.get(member).map(|member| (member, Some(worker))),
        }
    }

    fn job<T, E>(reply: Reply<Result<T, E>>, op: impl FnOnce(&mut Ctx) -> Result<T, E> + Send + 'static) -> Job
    where
        T: Send + 'static,
        E: From<HsmError> + Send + 'static,
    {
        Box::new(move |ctx: Result<&mut Ctx, HsmError>| {
            let result = match ctx {
                Ok(ctx) => {
                    let result = op(ctx);
                    let result = if ctx.module_changed() { Err(E::from(HsmError::Unavailable)) } else { result };
                    ctx.report_fault();
                    result
                }
                Err(e) => Err(E::from(e)),
            };
            reply.send(result);
        })
    }

    /// Runs `op` on a worker and awaits its answer, bounded by `op_timeout_ms`.
    pub(crate) async fn call<T, E>(
        &self,
        route: Route,
        op: impl FnOnce(&mut Ctx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<HsmError> + CountedError + Send + 'static,
    {
        let Some((member, worker)) = self.member_for(route) else { return Err(E::from(HsmError::Unavailable)) };
        let shared = &member.shared;
        let _in_flight = InFlight::enter(&shared.metrics);
        let result = async {
            let (tx, rx) = oneshot::channel();
            member.enqueue(worker, Self::job(Reply::Async(tx), op)).map_err(E::from)?;
            match tokio::time::timeout(shared.config.op_timeout(), rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(E::from(HsmError::Unavailable)),
                Err(_) => Err(E::from(HsmError::Timeout)),
            }
        }
        .await;
        shared.metrics.record(&result);
        result
    }

    /// Runs `op` on a worker and blocks the calling thread for its answer.
    pub(crate) fn call_blocking<T>(
        &self,
        route: Route,
        op: impl FnOnce(&mut Ctx) -> Result<T, HsmError> + Send + 'static,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
    {
        let Some((member, worker)) = self.member_for(route) else { return Err(HsmError::Unavailable) };
        let shared = &member.shared;
        let _in_flight = InFlight::enter(&shared.metrics);
        let result = (|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            member.enqueue(worker, Self::job(Reply::Blocking(tx), op))?;
            match rx.recv_timeout(shared.config.op_timeout()) {
                Ok(result) => result,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(HsmError::Timeout),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(HsmError::Unavailable),
            }
        })();
        shared.metrics.record(&result);
        result
    }

    /// The first member's shared state (public keys, KEK versions: alike on every member).
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.first
    }

    /// Each member's shared state, the first HSM first.
    pub(crate) fn member_states(&self) -> impl Iterator<Item = &Shared> {
        self.inner.members.iter().map(|member| member.shared.as_ref())
    }
}

/// Names the member a connect failure belongs to.
fn member_error(index: usize, config: &HsmConfig, source: HsmError) -> HsmError {
    HsmError::Member { member: index, token_label: config.token_label.clone(), source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(availability: Availability, in_flight: u64, pool_size: u64) -> MemberLoad {
        MemberLoad { availability, in_flight, pool_size }
    }

    #[test]
    fn members_recycle_on_their_own_one_at_a_time_while_the_others_are_up() {
        let turns = RecycleTurns::new(3);
        // Not every member up yet: nobody's turn.
        turns.set_up(0, true);
        turns.set_up(1, true);
        assert!(turns.try_take(0).is_none());
        turns.set_up(2, true);
        let first = turns.try_take(0).expect("every other member is up");
        // One at a time: the turn is held.
        assert!(turns.try_take(1).is_none());
        // Member 0 recycling (not up): the others wait even once the turn is given back.
        turns.set_up(0, false);
        drop(first);
        assert!(turns.try_take(1).is_none());
        assert!(turns.try_take(0).is_some(), "a member's own state does not stop it");
        turns.set_up(0, true);
        assert!(turns.try_take(1).is_some());
    }

    #[test]
    fn a_pool_of_one_recycles_when_due() {
        let turns = RecycleTurns::new(1);
        assert!(turns.try_take(0).is_some());
        turns.set_up(0, true);
        let held = turns.try_take(0);
        assert!(held.is_some());
        drop(held);
        assert!(turns.try_take(0).is_some());
    }

    #[test]
    fn the_least_loaded_available_member_is_chosen() {
        use Availability::{Down, Recycling, Up};
        // Fewest in flight per worker: 3 of 4 beats 1 of 1.
        assert_eq!(least_loaded([(0, load(Up, 1, 1)), (1, load(Up, 3, 4))]), Some(1));
        assert_eq!(least_loaded([(0, load(Up, 2, 2)), (1, load(Up, 3, 2))]), Some(0));
        // Ties go to the first in the (round-robin) order given.
        assert_eq!(least_loaded([(1, load(Up, 2, 2)), (0, load(Up, 2, 2))]), Some(1));
        // A member that is down never takes work, however idle.
        assert_eq!(least_loaded([(0, load(Down, 0, 2)), (1, load(Up, 50, 2))]), Some(1));
        // A recycling member only when no member is up.
        assert_eq!(least_loaded([(0, load(Recycling, 0, 2)), (1, load(Up, 50, 2))]), Some(1));
        assert_eq!(least_loaded([(0, load(Recycling, 9, 2)), (1, load(Down, 0, 2))]), Some(0));
        assert_eq!(least_loaded([(0, load(Down, 0, 2)), (1, load(Down, 0, 2))]), None);
    }
}
