//! Step 2 of a run: requests driven over mTLS against authz (acting as the gateway) or the
//! gateway (acting as the merchant), in a closed loop of C workers or an open loop at a
//! constant arrival rate, until a count or a duration is reached or the run is stopped.
//! Each request takes a free SIM ([`pool`]), exchanges and checks ([`exchange`]), and is
//! recorded ([`crate::report`]).

pub mod client;
pub mod exchange;
pub mod pool;
pub mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::provision::Payer;
use crate::report::{EndpointCount, Recorder, Report};
use client::Connection;
use exchange::{Context, RequestKind};
use pool::SimPool;
use schedule::Schedule;

/// At most this many connections (closed loop: workers).
pub const CONNECTIONS_MAX: usize = 4096;
/// At most this many requests in flight in the open loop.
pub const IN_FLIGHT_MAX: usize = 65_536;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// A bound is out of range.
    #[error("{0}")]
    Bounds(&'static str),
    /// The histogram could not be made.
    #[error("latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each worker sends its next request when its previous one is answered.
    Closed {
        /// Workers, each with its own connection.
        connections: usize,
    },
    /// Requests are due at a constant rate, whatever the answers do.
    Open {
        /// Requests per second.
        rate_per_second: f64,
        /// Requests in flight at most; a request waiting for a slot keeps its intended start.
        in_flight_max: usize,
    },
}

/// The share of special requests, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mix {
    /// Payments with a wrong password.
    pub wrong_password_percent: u32,
    /// Retransmissions of a SIM's previous request.
    pub retransmit_percent: u32,
    /// Packets with a corrupted MAC (expect 63; the SIM does not advance).
    pub bad_mac_percent: u32,
}

impl Mix {
    /// Draws what the next request is meant to be.
    pub fn draw(&self) -> RequestKind {
        self.kind_at(rand::random::<u32>() % 100)
    }

    /// The kind for a roll of 0 to 99: wrong passwords first, then retransmissions, then bad MACs.
    fn kind_at(&self, roll: u32) -> RequestKind {
        let wrong = self.wrong_password_percent;
        let retransmit = wrong.saturating_add(self.retransmit_percent);
        let bad_mac = retransmit.saturating_add(self.bad_mac_percent);
        if roll < wrong {
            RequestKind::WrongPassword
        } else if roll < retransmit {
            RequestKind::Retransmission
        } else if roll < bad_mac {
            RequestKind::BadMac
        } else {
            RequestKind::Payment
        }
    }

    /// The sum of the shares, at most 100 for a valid mix.
    pub fn total_percent(&self) -> u32 {
        self.wrong_password_percent.saturating_add(self.retransmit_percent).saturating_add(self.bad_mac_percent)
    }
}

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Closed or open loop.
    pub mode: Mode,
    /// Stop after this many requests (0: no count bound).
    pub count: u64,
    /// Stop after this long (None: no time bound).
    pub duration: Option<Duration>,
    /// What share of requests test the password check and retransmissions.
    pub mix: Mix,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// The first request's order-number sequence: a run after a warm-up starts where the
    /// warm-up stopped, so that no order number is sent twice.
    pub first_sequence: u64,
}

/// Stops a run early (Ctrl-C): requests in flight finish, no new one starts.
#[derive(Debug, Clone)]
pub struct Stop(watch::Sender<bool>);

impl Default for Stop {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Stop {
    /// Asks the run to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until a stop is asked.
    pub async fn stopped(&self) {
        let mut receiver = self.0.subscribe();
        // Err only when the sender is dropped, which `self` prevents.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

/// Requests completed and failed at one target, counted as they complete.
struct EndpointTally {
    url: String,
    completed: AtomicU64,
    errors: AtomicU64,
}

impl EndpointTally {
    /// One tally per target of `connections`, in the order of their endpoint index.
    fn for_connections(connections: &[Connection]) -> Vec<Self> {
        let mut tallies: Vec<Self> = Vec::new();
        for connection in connections {
            if connection.endpoint == tallies.len() {
                let url = connection.target.url.clone();
                tallies.push(Self { url, completed: AtomicU64::new(0), errors: AtomicU64::new(0) });
            }
        }
        tallies
    }

    fn count(&self) -> EndpointCount {
        EndpointCount {
            url: self.url.clone(),
            completed: self.completed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A run's state shared by its tasks.
struct Run {
    context: Arc<Context>,
    connections: Vec<Connection>,
    endpoints: Vec<EndpointTally>,
    pool: SimPool,
    recorder: Arc<Recorder>,
    settings: Settings,
    deadline: Option<Instant>,
    stop: Stop,
}

impl Run {
    fn over(&self) -> bool {
        self.stop.is_stopped() || self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// One request: a free SIM, an exchange, the SIM back. Returns when it completed.
    async fn one(&self, client_index: usize, sequence: u64, started: Instant) -> Option<Instant> {
        let mut payer = self.pool.take().await?;
        let kind = exchange::choose_kind(self.settings.mix.draw(), &payer);
        let connection = &self.connections[client_index % self.connections.len()];
        let sequence = sequence.saturating_add(self.settings.first_sequence);
        let exchanged = exchange::exchange(&self.context, connection, &mut payer, kind, sequence).await;
        self.pool.put(payer);
        let done = Instant::now();
        if let Some(tally) = self.endpoints.get(connection.endpoint) {
            tally.completed.fetch_add(1, Ordering::Relaxed);
            tally.errors.fetch_add(u64::from(exchanged.error.is_some()), Ordering::Relaxed);
        }
        self.recorder.record(Schedule::latency(started, done), &exchanged);
        Some(done)
    }
}

/// Runs `payers` against the targets of `connections`; returns the payers (their SIMs
/// advanced) and the report. `connections` are the HTTP/2 connections (closed loop: one per
/// worker; [`client::spread`] spreads them over several targets).
pub async fn run(
    context: Arc<Context>,
    connections: Vec<Connection>,
    payers: Vec<Payer>,
    settings: Settings,
    stop: Stop,
) -> Result<(Vec<Payer>, Report), DriveError> {
    let (payers, report, ()) = run_observed(context, connections, payers, settings, stop, |_, _| async {}).await?;
    Ok((payers, report))
}

/// [`run`], with an observer beside it (a soak's sampler): `observe` gets the run's recorder
/// and a [`Stop`] that is stopped once the last request has completed; the observer's future
/// runs on its own task, and the run waits for its result after the last request.
pub async fn run_observed<O, F>(
    context: Arc<Context>,
    connections: Vec<Connection>,
    payers: Vec<Payer>,
    settings: Settings,
    stop: Stop,
    observe: O,
) -> Result<(Vec<Payer>, Report, F::Output), DriveError>
where
    O: FnOnce(Arc<Recorder>, Stop) -> F,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    check_bounds(&settings, connections.len(), payers.len())?;
    let recorder = Arc::new(Recorder::new()?);
    let finished = Stop::default();
    let observer = tokio::spawn(observe(Arc::clone(&recorder), finished.clone()));
    let deadline = settings.duration.map(|duration| Instant::now() + duration);
    let endpoints = EndpointTally::for_connections(&connections);
    let pool = SimPool::new(payers);
    let run = Arc::new(Run { context, connections, endpoints, pool, recorder, settings, deadline, stop });
    let ticker = run.settings.progress.then(|| tokio::spawn(progress_lines(Arc::clone(&run))));
    let mode = match run.settings.mode {
        Mode::Closed { connections } => {
            closed_loop(&run, connections).await;
            format!("closed loop, {connections} connections")
        }
        Mode::Open { rate_per_second, in_flight_max } => {
            open_loop(&run, rate_per_second, in_flight_max).await;
            format!("open loop, {rate_per_second}/s over {} connections", run.connections.len())
        }
    };
    if let Some(ticker) = ticker {
        ticker.abort();
        // Cancelled on purpose: the JoinError says only that.
        let _ = ticker.await;
    }
    finished.stop();
    let observed = observer.await.map_err(|_| DriveError::Bounds("the run's observer failed"))?;
    let mut report = run.recorder.report(mode, run.stop.is_stopped());
    // One target: the report stays as it always was; several: what each one answered.
    if run.endpoints.len() > 1 {
        report.endpoints = run.endpoints.iter().map(EndpointTally::count).collect();
    }
    // Every task has ended, so this is the only reference left.
    let run = Arc::into_inner(run).ok_or(DriveError::Bounds("a request task outlived the run"))?;
    Ok((run.pool.into_payers(), report, observed))
}

fn check_bounds(settings: &Settings, clients: usize, payers: usize) -> Result<(), DriveError> {
    if settings.count == 0 && settings.duration.is_none() {
        return Err(DriveError::Bounds("give --count or --duration: a run must end by itself"));
    }
    let workers = match settings.mode {
        Mode::Closed { connections } => connections,
        Mode::Open { .. } => clients,
    };
    if clients == 0 || clients > CONNECTIONS_MAX || workers == 0 || workers > CONNECTIONS_MAX {
        return Err(DriveError::Bounds("--connections must be 1 to 4096"));
    }
    if settings.mix.total_percent() > 100 {
        return Err(DriveError::Bounds("--mix: the percents add up to more than 100"));
    }
    if payers == 0 {
        return Err(DriveError::Bounds("no payers: give --payers 1 or more"));
    }
    if let Mode::Open { rate_per_second, in_flight_max } = settings.mode
        && (!(rate_per_second > 0.0 && rate_per_second <= 1_000_000.0)
            || in_flight_max == 0
            || in_flight_max > IN_FLIGHT_MAX)
    {
        return Err(DriveError::Bounds("--rate must be above 0 and at most 1000000, in_flight_max 1 to 65536"));
    }
    Ok(())
}

async fn closed_loop(run: &Arc<Run>, connections: usize) {
    let mut workers = JoinSet::new();
    for worker in 0..connections {
        let run = Arc::clone(run);
        workers.spawn(async move {
            while !run.over() {
                let Some(sequence) = run.recorder.claim(run.settings.count) else { break };
                if run.one(worker, sequence, Instant::now()).await.is_none() {
                    break;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn open_loop(run: &Arc<Run>, rate_per_second: f64, in_flight_max: usize) {
    let schedule = Schedule::new(Instant::now(), rate_per_second);
    let slots = Arc::new(Semaphore::new(in_flight_max));
    let mut tasks = JoinSet::new();
    for index in 0u64.. {
        let intended = schedule.intended(index);
        if run.deadline.is_some_and(|deadline| intended >= deadline) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(intended.into()) => {}
            () = run.stop.stopped() => break,
        }
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = run.stop.stopped() => break,
        };
        let Ok(slot) = slot else { break };
        let Some(sequence) = run.recorder.claim(run.settings.count) else { break };
        let run = Arc::clone(run);
        let client_index = usize::try_from(index).unwrap_or(0);
        tasks.spawn(async move {
            // The latency runs from `intended`, even if this request starts late.
            run.one(client_index, sequence, intended).await;
            drop(slot);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn progress_lines(run: Arc<Run>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let mut done_before = 0;
    loop {
        ticks.tick().await;
        let progress = run.recorder.progress();
        eprintln!(
            "sent {}  done {}  errors {}  rate {}/s  p99 {:.2} ms",
            progress.sent,
            progress.done,
            progress.errors,
            progress.done.saturating_sub(done_before),
            progress.latency_us_p99 as f64 / 1000.0
        );
        done_before = progress.done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_splits_the_rolls_in_order() {
        let mix = Mix { wrong_password_percent: 10, retransmit_percent: 20, bad_mac_percent: 5 };
        let kinds: Vec<RequestKind> = (0..100).map(|roll| mix.kind_at(roll)).collect();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(count(RequestKind::WrongPassword), 10);
        assert_eq!(count(RequestKind::Retransmission), 20);
        assert_eq!(count(RequestKind::BadMac), 5);
        assert_eq!(count(RequestKind::Payment), 65);
        assert_eq!(mix.total_percent(), 35);
    }
}
