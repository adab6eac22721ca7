//! A small bounded pool of blocking database connections, for either backend: at most `size`
//! calls at a time, each on its own connection, on tokio's blocking threads (the ledger's
//! [`Sql`] front blocks), so an async worker never waits on the database. A caller waits for a
//! free connection at most the wait timeout; a connection left unusable by its job (an open
//! transaction, a broken socket, a panic) is dropped and replaced by a new one.
//!
//! What differs between SQLite and PostgreSQL, how a connection is opened and when it may be
//! handed out again, is the pool's [`Connector`] (`read_pool.rs`, `postgres_pool.rs`). No pool
//! crate: the ledger needs exactly this, a fixed number of connections under a semaphore.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::error::{LedgerError, Unavailable};
use super::sql::Sql;

/// How a pool makes its connections, and when one may be handed out again.
pub(crate) trait Connector: Send + Sync + 'static {
    /// A connection.
    type Conn: Send + 'static;

    /// Opens a connection. Blocking: called at start and on a blocking thread.
    fn open(&self) -> Result<Self::Conn, LedgerError>;

    /// Whether `conn` may serve another call: open, and with no transaction left open.
    fn reusable(&self, conn: &Self::Conn) -> bool;
}

/// At most `size` calls at a time, each on its own connection.
pub(crate) struct Pool<C: Connector> {
    connector: C,
    wait_timeout: Duration,
    idle: Mutex<Vec<C::Conn>>,
    permits: Arc<Semaphore>,
}

impl<C: Connector> Pool<C> {
    /// Opens every connection now, so that a bad path, a wrong address or a refused login fails
    /// at start, not at the first request. Blocking.
    pub(crate) fn open(connector: C, size: usize, wait_timeout: Duration) -> Result<Arc<Self>, LedgerError> {
        if size == 0 {
            return Err(LedgerError::InvalidInput("a connection pool needs at least one connection"));
        }
        let idle = (0..size).map(|_| connector.open()).collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self { connector, wait_timeout, idle: Mutex::new(idle), permits: Arc::new(Semaphore::new(size)) }))
    }

    /// Runs `job` on a pooled connection on a blocking thread. Waits for a free connection at
    /// most the wait timeout.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, job: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut C::Conn) -> Result<T, LedgerError> + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait_timeout, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| LedgerError::Unavailable(Unavailable::Timeout))?
            .map_err(|_| LedgerError::Unavailable(Unavailable::ReadTask))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.take()?;
            let result = job(&mut conn);
            pool.give_back(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|_| LedgerError::Unavailable(Unavailable::ReadTask))?
    }

    /// Connections idle now.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// An idle connection that still works, or a new one in place of one that broke or was lost
    /// with a panicking job.
    fn take(&self) -> Result<C::Conn, LedgerError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) if self.connector.reusable(&conn) => Ok(conn),
            _ => self.connector.open(),
        }
    }

    fn give_back(&self, conn: C::Conn) {
        // A job that failed half way may leave a transaction open, or the connection broken:
        // such a connection is dropped rather than pooled.
        if !self.connector.reusable(&conn) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

impl<C: Connector> Pool<C>
where
    C::Conn: Sql,
{
    /// Runs `read` on a pooled connection; each of its statements sees the latest commit.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        self.run(move |conn| read(&*conn)).await
    }
}
