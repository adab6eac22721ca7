//! SQLite's WAL checkpoints, off the commit path.
//!
//! In WAL mode every commit appends its pages to the `-wal` file, and a checkpoint copies them
//! back into the database file and fsyncs it. Left to itself, SQLite checkpoints inside the
//! COMMIT that takes the WAL past 1000 pages: with the ledger's group commit that is one group
//! in about seventy, and its answers (and every request queued behind it) wait for a copy whose
//! cost grows with the database, since the pages of its random-keyed indexes lie scattered ever
//! wider. That one group in seventy is the ledger's p99.
//!
//! Here a thread of its own (`ledger-checkpoint`, with its own connection) checkpoints every
//! `checkpoint_interval_ms` in PASSIVE mode, which neither waits for the writer nor holds it up.
//! PASSIVE cannot start the WAL over while commits keep coming (SQLite restarts it only when a
//! write begins with every frame copied), and a RESTART checkpoint from this thread would have to
//! win the write lock from a writer that hardly lets go of it under load. So when the WAL holds
//! `wal_restart_bytes` the thread asks the writer ([`WalState::restart_wanted`]), and the writer,
//! between two groups and after the first group's answers are out, runs the RESTART itself
//! ([`restart`]): it copies the few frames since the last PASSIVE checkpoint, and its next group
//! writes the WAL from the start; `journal_size_limit` then trims the file. The writer's own
//! automatic checkpoint stays, at four times that size, as the fallback should this thread fall
//! behind. `checkpoint_interval_ms = 0` leaves checkpoints to SQLite as before.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::config::LedgerConfig;
use super::error::{LedgerError, Unavailable};
use super::schema;
use super::writer::Counters;

/// SQLite's page size for the ledger (the default; the schema never changes it).
const PAGE_BYTES: u64 = 4096;

/// Settings of the writer connection that go with the checkpointer: the writer's own automatic
/// checkpoint only as a fallback, and the WAL file trimmed after it starts over.
pub(crate) fn configure_writer(conn: &Connection, config: &LedgerConfig) -> Result<(), LedgerError> {
    if config.checkpoint_interval_ms == 0 {
        return Ok(());
    }
    let restart_pages = config.wal_restart_bytes / PAGE_BYTES;
    conn.pragma_update(None, "wal_autocheckpoint", restart_pages.saturating_mul(4))?;
    conn.pragma_update(None, "journal_size_limit", config.wal_restart_bytes)?;
    Ok(())
}

/// What the checkpoint thread tells the writer.
#[derive(Debug, Default)]
pub(crate) struct WalState {
    /// The WAL holds `wal_restart_bytes`: the writer should start it over between two groups.
    pub restart_wanted: AtomicBool,
}

/// Run by the writer between two groups when the thread asked for it: a RESTART checkpoint,
/// after which the next group writes the WAL from its start. The writer holds no transaction
/// then, so it waits only for reads that still use the WAL (`busy_timeout`).
pub(crate) fn restart(conn: &Connection, counters: &Counters) {
    let started = Instant::now();
    let result = checkpoint(conn, "RESTART");
    add_micros(&counters.checkpoint_restart_micros, started);
    match result {
        Ok(_) => {
            counters.checkpoint_restarts.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "a WAL restart checkpoint failed; the next one will try again"),
    }
}

/// Adds the time since `started` to a total of microseconds (the metrics'
/// `ledger_checkpoint*_seconds_total`): how long checkpoints take, and how long the writer
/// stood still for a restart, next to how many there were.
fn add_micros(total: &std::sync::atomic::AtomicU64, started: Instant) {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    total.fetch_add(micros, Ordering::Relaxed);
}

/// Tells the thread to stop, and wakes it.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Waits `interval` or until stopped; true when stopped.
    fn wait(&self, interval: Duration) -> bool {
        let Ok(guard) = self.stopped.lock() else { return true };
        match self.wake.wait_timeout_while(guard, interval, |stopped| !*stopped) {
            Ok((guard, _)) => *guard,
            Err(_) => true,
        }
    }

    fn stop(&self) {
        if let Ok(mut stopped) = self.stopped.lock() {
            *stopped = true;
        }
        self.wake.notify_all();
    }
}

/// The checkpoint thread; stopped when dropped.
pub(crate) struct Checkpointer {
    stop: Arc<Stop>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path`, unless `checkpoint_interval_ms` is 0.
    pub(crate) fn start(
        path: &Path,
        config: &LedgerConfig,
        counters: Arc<Counters>,
        wal: Arc<WalState>,
    ) -> Result<Option<Self>, LedgerError> {
        if config.checkpoint_interval_ms == 0 {
            return Ok(None);
        }
        let conn = Connection::open(path)?;
        schema::configure_writer(&conn, config.busy_timeout())?;
        let stop = Arc::new(Stop::default());
        let interval = Duration::from_millis(config.checkpoint_interval_ms);
        let restart_frames = config.wal_restart_bytes / PAGE_BYTES;
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("ledger-checkpoint".to_owned())
            .spawn(move || run(&conn, &thread_stop, interval, restart_frames, &counters, &wal))
            .map_err(|error| LedgerError::Unavailable(Unavailable::Spawn(error)))?;
        Ok(Some(Self { stop, handle: Mutex::new(Some(handle)) }))
    }

    /// Stops the thread and waits for it (blocking: at most one checkpoint's time).
    pub(crate) fn stop_and_join(&self) {
        self.stop.stop();
        let handle = self.handle.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the ledger checkpoint thread ended abnormally");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Not joined here: a drop may run on an async worker. The thread sees the flag at its
        // next wake, which this notifies.
        self.stop.stop();
    }
}

fn run(conn: &Connection, stop: &Stop, interval: Duration, restart_frames: u64, counters: &Counters, wal: &WalState) {
    while !stop.wait(interval) {
        let started = Instant::now();
        let checkpointed = checkpoint(conn, "PASSIVE");
        add_micros(&counters.checkpoint_micros, started);
        let frames = match checkpointed {
            Ok(frames) => frames,
            Err(error) => {
                tracing::warn!(%error, "a WAL checkpoint failed; the writer's own checkpoint is the fallback");
                continue;
            }
        };
        counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        counters.wal_frames.store(frames, Ordering::Relaxed);
        if frames >= restart_frames {
            wal.restart_wanted.store(true, Ordering::Relaxed);
        }
    }
    tracing::debug!("ledger checkpoint thread stopped");
}

/// Runs one checkpoint; the frames in the WAL when it ran.
fn checkpoint(conn: &Connection, mode: &'static str) -> Result<u64, LedgerError> {
    let (_busy, frames): (i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(u64::try_from(frames).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::{approval, debit, open_ledger, register};
    use crate::ledger::{Ledger, LedgerConfig};

    fn wal_bytes(path: &Path) -> u64 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// Books `count` sessions of one SIM, one at a time (one group each).
    async fn pay(ledger: &Ledger, count: u64) {
        ledger.create_account(debit(1, 1_000_000_000)).await.unwrap();
        register(ledger, 1, &[1]).await;
        for n in 1..=count {
            ledger.commit_session(approval(1, n, 1, 10)).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_thread_checkpoints_and_starts_the_wal_over_at_its_size() {
        let config =
            LedgerConfig { checkpoint_interval_ms: 5, wal_restart_bytes: 1024 * 1024, ..LedgerConfig::default() };
        let (_dir, path, ledger) = open_ledger(config);
        pay(&ledger, 600).await;
        let stats = ledger.stats();
        assert!(stats.checkpoints > 0, "{stats:?}");
        assert!(stats.checkpoint_restarts > 0, "600 groups of several pages never filled 1 MiB of WAL: {stats:?}");
        assert!(stats.checkpoint_micros > 0 && stats.checkpoint_restart_micros > 0, "checkpoints timed: {stats:?}");
        // Started over and trimmed to journal_size_limit: never the sum of every group's pages.
        let wal = wal_bytes(&path);
        assert!(wal <= 2 * 1024 * 1024, "the WAL grew to {wal} bytes");
        ledger.close().await;
        ledger.audit().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_no_longer_checkpoints_inside_its_commits() {
        // The thread asleep for a minute: only the writer could checkpoint, and its automatic
        // checkpoint now waits for 4 × 16 MiB, far above SQLite's 1000 pages.
        let config = LedgerConfig { checkpoint_interval_ms: 60_000, ..LedgerConfig::default() };
        let (_dir, path, ledger) = open_ledger(config);
        pay(&ledger, 600).await;
        let wal = wal_bytes(&path);
        assert!(wal > 1000 * PAGE_BYTES, "the WAL stayed at {wal} bytes: a commit checkpointed it");
        let stats = ledger.stats();
        assert_eq!((stats.checkpoints, stats.checkpoint_micros, stats.checkpoint_restart_micros), (0, 0, 0));
        ledger.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interval_zero_leaves_checkpoints_to_sqlite() {
        let config = LedgerConfig { checkpoint_interval_ms: 0, ..LedgerConfig::default() };
        let (_dir, path, ledger) = open_ledger(config);
        pay(&ledger, 600).await;
        let wal = wal_bytes(&path);
        assert!(wal <= 1200 * PAGE_BYTES, "SQLite's own checkpoint keeps the WAL near 1000 pages, not {wal} bytes");
        assert_eq!(ledger.stats().checkpoints, 0);
    }
}
