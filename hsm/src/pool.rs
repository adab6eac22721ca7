//! The [`Hsm`] handle: a pool of worker threads, each with its own PKCS#11 session, fed from
//! async code through bounded channels, answered through oneshot channels, and watched by a
//! supervisor that re-initialises the module when the HSM is lost.
//!
//! The public operations themselves are in [`crate::authorization`] (the two-phase
//! authorization session) and [`crate::operations`] (signing, passwords, personalisation).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// State shared by the handle, the workers and the supervisor.
pub(crate) struct Shared {
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
    /// The newest KEK version on the token that passed the key policy: chain keys are
    /// wrapped under it. Set at every connect and raised by the supervisor's periodic look
    /// for a rotated KEK.
    pub kek_newest: AtomicU32,
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
        }
    }

    /// A worker found the HSM gone while attached under `generation`.
    pub fn report_fault(&self, generation: Generation) {
        if generation == self.current_generation() {
            self.set_state(PoolState::Down);
            let _ = self.supervisor.send(SupervisorMsg::Fault { generation });
        }
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
    /// The least loaded worker.
    Any,
    /// The worker holding an opened session's objects (its ticket queue).
    Ticket(usize),
}

struct WorkerSenders {
    jobs: Sender<Job>,
    tickets: Sender<Job>,
}

struct Inner {
    shared: Arc<Shared>,
    workers: Vec<WorkerSenders>,
    supervisor: Sender<SupervisorMsg>,
    round_robin: AtomicUsize,
}

/// How long dropping the last handle waits for the workers to close their sessions.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl Drop for Inner {
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

/// A connection to the HSM: a logged-in token and a pool of sessions. Cheap to clone; the
/// pool shuts down when the last clone is dropped (which waits, at most 5 s, until the workers
/// have closed their sessions). Run one per process: its recovery re-initialises the module,
/// which every other user of the module in the process feels too.
///
/// Every `async` operation only awaits a reply: the PKCS#11 calls run on the pool's own
/// threads. While the HSM is lost every operation fails at once with
/// [`HsmError::Unavailable`] and a supervisor re-initialises in the background.
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
        f.debug_struct("Hsm")
            .field("token_label", &self.inner.shared.config.token_label)
            .field("pool_size", &self.inner.workers.len())
            .field("state", &self.inner.shared.state())
            .finish()
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

    /// Loads the module, initialises it (once per process), finds the token, logs in with
    /// the configured PIN, keeps an anchor session open, starts the workers (each copies the
    /// long-lived keys into its session) and the supervisor. Fails if any of that fails,
    /// including a missing key. Blocks: do not call it on a tokio worker thread.
    pub fn connect_blocking(config: HsmConfig) -> Result<Hsm, HsmError> {
        config.validate()?;
        let pin = config.load_pin()?;
        Self::start(config, pin)
    }

    fn start(config: HsmConfig, pin: Pin) -> Result<Hsm, HsmError> {
        let (supervisor_tx, supervisor_rx) = crossbeam_channel::unbounded();
        let pool_size = config.pool_size;
        let queue_depth = config.queue_depth_max;
        let shared = Arc::new(Shared {
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
            next_ticket: AtomicU64::new(1),
            supervisor: supervisor_tx.clone(),
        });
        let mut workers = Vec::with_capacity(pool_size);
        let mut controls = Vec::with_capacity(pool_size);
        let mut threads = Vec::with_capacity(pool_size);
        for index in 0..pool_size {
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
                .name(format!("mps-hsm-{index}"))
                .spawn(move || worker::run(index, worker_shared, channels));
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
            .name("mps-hsm-supervisor".to_owned())
            .spawn(move || supervisor.run())
            .map_err(|_| HsmError::Unavailable)?;
        Ok(Hsm {
            inner: Arc::new(Inner { shared, workers, supervisor: supervisor_tx, round_robin: AtomicUsize::new(0) }),
        })
    }

    /// Whether the token is logged in and the pool has its sessions (for `/readyz`). A
    /// planned recycle counts as ready: operations queue for its few milliseconds.
    pub fn is_ready(&self) -> bool {
        matches!(self.inner.shared.state(), PoolState::Up | PoolState::Recycling)
    }

    /// A snapshot of the pool's counters.
    pub fn metrics(&self) -> PoolMetrics {
        let queued = self.inner.workers.iter().map(|w| (w.jobs.len() + w.tickets.len()) as u64).sum();
        self.inner.shared.metrics.snapshot(self.is_ready(), self.inner.workers.len(), queued)
    }

    /// Re-initialises the module on purpose: waits up to `recycle_drain_ms` for opened
    /// authorization sessions to be sealed, closes every session, C_Finalize, C_Initialize,
    /// logs in and re-attaches the workers. SoftHSM frees the memory of every session object
    /// ever created only at C_Finalize, so a long-running server recycles now and then
    /// (`recycle_after_objects` does it automatically). Operations submitted meanwhile queue
    /// and run afterwards.
    pub async fn recycle(&self) -> Result<(), HsmError> {
        let (tx, rx) = oneshot::channel();
        self.inner.supervisor.send(SupervisorMsg::Recycle { reply: tx }).map_err(|_| HsmError::Unavailable)?;
        rx.await.map_err(|_| HsmError::Unavailable)?
    }

    fn pick_worker(&self) -> usize {
        let workers = &self.inner.workers;
        let start = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
        (0..workers.len()).map(|i| (start + i) % workers.len()).min_by_key(|&i| workers[i].jobs.len()).unwrap_or(0)
    }

    fn enqueue(&self, route: Route, job: Job) -> Result<(), HsmError> {
        match self.inner.shared.state() {
            PoolState::Up | PoolState::Recycling => {}
            PoolState::Down | PoolState::Closed => return Err(HsmError::Unavailable),
        }
        let sent = match route {
            Route::Any => self.inner.workers.get(self.pick_worker()).map(|w| w.jobs.try_send(job)),
            Route::Ticket(index) => {
                self.inner.workers.get(index).map(|w| w.tickets.send(job).map_err(|e| TrySendError::Disconnected(e.0)))
            }
        };
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => Err(HsmError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => Err(HsmError::Unavailable),
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
        let shared = &self.inner.shared;
        let _in_flight = InFlight::enter(&shared.metrics);
        let result = async {
            let (tx, rx) = oneshot::channel();
            self.enqueue(route, Self::job(Reply::Async(tx), op)).map_err(E::from)?;
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
        let shared = &self.inner.shared;
        let _in_flight = InFlight::enter(&shared.metrics);
        let result = (|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            self.enqueue(route, Self::job(Reply::Blocking(tx), op))?;
            match rx.recv_timeout(shared.config.op_timeout()) {
                Ok(result) => result,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(HsmError::Timeout),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(HsmError::Unavailable),
            }
        })();
        shared.metrics.record(&result);
        result
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}
