//! A small bounded pool of read-only SQLite connections. Reads run on tokio's blocking threads
//! and see WAL snapshots, so they never wait for the writer and never block an async worker.
//! The ledger's reads are written against [`Sql`]: [`ReadPool::read`] hands one a connection,
//! [`ReadPool::snapshot`] a read transaction for a read of several statements.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::config::LedgerConfig;
use super::error::{LedgerError, Unavailable};
use super::schema;
use super::sql::Sql;

/// At most `read_connections` reads at a time, each on its own connection.
pub(crate) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    wait_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    /// Opens every connection now, so a bad path fails at start, not at the first request.
    pub(crate) fn open(path: &Path, config: &LedgerConfig) -> Result<Arc<Self>, LedgerError> {
        let busy_timeout = config.busy_timeout();
        let idle =
            (0..config.read_connections).map(|_| open_reader(path, busy_timeout)).collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            busy_timeout,
            wait_timeout: config.read_timeout(),
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(config.read_connections)),
        }))
    }

    /// Runs `read` on a pooled connection on a blocking thread. Waits for a free connection at
    /// most the read timeout.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait_timeout, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| LedgerError::Unavailable(Unavailable::Timeout))?
            .map_err(|_| LedgerError::Unavailable(Unavailable::ReadTask))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.take()?;
            let result = read(&mut conn);
            pool.give_back(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|_| LedgerError::Unavailable(Unavailable::ReadTask))?
    }

    /// Runs `read` on a pooled connection; each of its statements sees the latest commit.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        self.run(move |conn| read(&*conn)).await
    }

    /// Runs `read` in one read transaction: all of its statements see one snapshot, so what
    /// they read together is consistent even while the writer commits.
    pub(crate) async fn snapshot<T, F>(self: &Arc<Self>, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let value = read(&*tx)?;
            tx.finish()?;
            Ok(value)
        })
        .await
    }

    /// An idle connection, or a new one if a panicked read lost one.
    fn take(&self) -> Result<Connection, LedgerError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => open_reader(&self.path, self.busy_timeout),
        }
    }

    fn give_back(&self, conn: Connection) {
        // A read that failed half way may leave a transaction open; such a connection is
        // dropped rather than pooled.
        if !conn.is_autocommit() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, LedgerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    schema::configure_reader(&conn, busy_timeout)?;
    Ok(conn)
}
