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
//! ([`restart`]) without waiting for reads: it copies the few frames since the last PASSIVE
//! checkpoint, and its next group writes the WAL from the start (or, if a read was still on the
//! WAL, it tries again after its next group); `journal_size_limit` then trims the file. The writer's own
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
/// after which the next group writes the WAL from its start. True when the WAL was started
/// over; false when it has to wait for another try after the next group.
///
/// The writer never waits in it. A RESTART must wait until no read uses the WAL any more, and
/// with the connection's busy timeout SQLite waits for that in its busy handler, sleeping 1, 2,
/// 5, 10, 15 ms and on: the writer stood still with commands queued behind it, longer as reads
/// grew slower on a growing file (4 ms on a fresh ledger, 18 ms at 180 MB, 32 ms at 400 MB,
/// which was the soak's p99). So the RESTART runs with no busy timeout at all: it copies what
/// the reads allow and starts the WAL over if no read is on it at that instant; otherwise (or
/// when the checkpoint thread is copying at that moment) it answers busy at once and the writer
/// tries again after its next group (SQLite itself also
/// starts the WAL over at the next write when every frame has been copied and no read is on
/// it). Reads are short, so a later try finds a moment without one.
pub(crate) fn restart(conn: &Connection, counters: &Counters, busy_timeout: Duration) -> bool {
    if let Err(error) = conn.busy_timeout(Duration::ZERO) {
        tracing::warn!(%error, "the ledger's writer could not drop its busy timeout for a WAL restart");
        return false;
    }
    let started = Instant::now();
    let result = checkpoint(conn, "RESTART");
    add_micros(&counters.checkpoint_restart_micros, started);
    if let Err(error) = conn.busy_timeout(busy_timeout) {
        // The writer's next BEGIN IMMEDIATE would then fail at once on a lock instead of
        // waiting: a failed group, answered 503, never a wrong booking.
        tracing::error!(%error, "the ledger's writer could not restore its busy timeout");
    }
    match result {
        Ok(Checkpointed { busy: false, .. }) => {
            counters.checkpoint_restarts.fetch_add(1, Ordering::Relaxed);
            true
        }
        Ok(Checkpointed { busy: true, .. }) => {
            counters.checkpoint_restarts_deferred.fetch_add(1, Ordering::Relaxed);
            false
        }
        Err(error) => {
            tracing::warn!(%error, "a WAL restart checkpoint failed; the next one will try again");
            false
        }
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
            Ok(Checkpointed { frames, .. }) => frames,
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

/// What one `PRAGMA wal_checkpoint` said.
struct Checkpointed {
    /// It could not finish: a read still on the WAL, or another connection's checkpoint, was
    /// in the way (for RESTART: the WAL was not started over).
    busy: bool,
    /// Frames in the WAL when it ran.
    frames: u64,
}

/// Runs one checkpoint.
fn checkpoint(conn: &Connection, mode: &'static str) -> Result<Checkpointed, LedgerError> {
    let (busy, frames): (i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(Checkpointed { busy: busy != 0, frames: u64::try_from(frames).unwrap_or(0) })
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

    /// A read still on the WAL puts the writer's restart off instead of holding the writer: with
    /// a busy timeout of a minute, the old restart slept in SQLite's busy handler for all of it.
    #[test]
    fn a_read_on_the_wal_puts_the_restart_off_instead_of_stopping_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let busy_timeout = Duration::from_secs(60);
        let writer = Connection::open(&path).unwrap();
        schema::configure_writer(&writer, busy_timeout).unwrap();
        // No automatic checkpoint: every frame stays in the WAL until the restart.
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);").unwrap();
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let read: i64 = reader.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).unwrap();
        assert_eq!(read, 1);
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();

        let counters = Counters::default();
        let started = Instant::now();
        assert!(!restart(&writer, &counters, busy_timeout), "the WAL started over under a read");
        assert!(started.elapsed() < Duration::from_secs(30), "the writer waited for the read");
        let stats = counters.snapshot();
        assert_eq!((stats.checkpoint_restarts, stats.checkpoint_restarts_deferred), (0, 1));
        let restored: i64 = writer.query_row("PRAGMA busy_timeout", [], |row| row.get(0)).unwrap();
        assert_eq!(restored, 60_000, "the writer's busy timeout is back for its transactions");

        // The read gone, the next try starts the WAL over: the next write is at its start.
        reader.execute_batch("COMMIT").unwrap();
        assert!(restart(&writer, &counters, busy_timeout));
        assert_eq!(counters.snapshot().checkpoint_restarts, 1);
        writer.execute("INSERT INTO t VALUES (3)", []).unwrap();
        let frames = checkpoint(&writer, "PASSIVE").unwrap().frames;
        assert!(frames <= 2, "the write after the restart went to frame {frames}, not the WAL's start");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_no_longer_checkpoints_inside_its_commits() {
        // The thread asleep for a minute: only the writer could checkpoint, and its automatic
        // checkpoint now waits for 4 × 64 MiB, far above SQLite's 1000 pages.
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
