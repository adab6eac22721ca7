//! A small bounded pool of PostgreSQL connections, the PostgreSQL twin of `read_pool.rs`: at
//! most `size` calls at a time, each on its own connection, on tokio's blocking threads (the
//! [`Sql`](super::sql::Sql) front blocks), so an async worker never waits on the database.
//!
//! No pool crate: the ledger needs a fixed number of connections handed out under a semaphore,
//! with a bounded wait and a broken connection replaced, which is this file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::error::{LedgerError, Unavailable};
use super::postgres::{PgConnection, Role};

/// The bounds of a [`PgPool`].
#[derive(Debug, Clone)]
pub(crate) struct PoolOptions {
    /// Connections, and so calls at a time, at most.
    pub size: usize,
    /// What the connections are for.
    pub role: Role,
    /// How long a caller waits for a free connection.
    pub wait_timeout: Duration,
    /// How long one call (connect, statement, commit) may take.
    pub call_timeout: Duration,
}

/// At most `size` calls at a time, each on its own connection.
pub(crate) struct PgPool {
    config: tokio_postgres::Config,
    handle: Handle,
    options: PoolOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Arc<Semaphore>,
}

impl PgPool {
    /// Opens every connection now, so that a wrong address or a refused login fails at start,
    /// not at the first request. Blocking: call it at start-up or on a blocking thread.
    pub(crate) fn open(
        config: tokio_postgres::Config,
        handle: Handle,
        options: PoolOptions,
    ) -> Result<Arc<Self>, LedgerError> {
        if options.size == 0 {
            return Err(LedgerError::InvalidInput("a PostgreSQL pool needs at least one connection"));
        }
        let idle = (0..options.size)
            .map(|_| PgConnection::connect(&config, handle.clone(), options.role, options.call_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            config,
            handle,
            permits: Arc::new(Semaphore::new(options.size)),
            options,
            idle: Mutex::new(idle),
        }))
    }

    /// Runs `job` on a pooled connection on a blocking thread. Waits for a free connection at
    /// most the wait timeout.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, job: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, LedgerError> + Send + 'static,
    {
        let permit = tokio::time::timeout(self.options.wait_timeout, Arc::clone(&self.permits).acquire_owned())
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

    #[cfg(test)]
    /// Connections idle now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// An idle connection that still works, or a new one in place of one that broke (closed by
    /// the server, abandoned after a timeout) or was lost with a panicking job.
    fn take(&self) -> Result<PgConnection, LedgerError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) if conn.is_reusable() => Ok(conn),
            _ => PgConnection::connect(&self.config, self.handle.clone(), self.options.role, self.options.call_timeout),
        }
    }

    fn give_back(&self, conn: PgConnection) {
        // A job that failed half way may leave a transaction open, or the connection broken:
        // such a connection is dropped rather than pooled.
        if !conn.is_reusable() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::postgres::Isolation;
    use crate::ledger::postgres_testing::PgCluster;
    use crate::ledger::sql::{Sql, args};

    fn options(size: usize, wait_ms: u64) -> PoolOptions {
        PoolOptions {
            size,
            role: Role::Reader,
            wait_timeout: Duration::from_millis(wait_ms),
            call_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_bounds_calls_waits_at_most_its_timeout_and_replaces_broken_connections() {
        let cluster = PgCluster::start().unwrap();
        let config = cluster.config();
        let handle = Handle::current();
        let pool =
            tokio::task::spawn_blocking(move || PgPool::open(config, handle, options(2, 300))).await.unwrap().unwrap();
        assert_eq!(pool.idle(), 2);
        let one = pool.run(|conn| conn.query_one("SELECT 1", args![], "one")?.get::<i64>(0, "one")).await.unwrap();
        assert_eq!(one, 1);

        // Two slow calls hold both connections; a third waits its timeout and gives up.
        let slow =
            |pool: Arc<PgPool>| async move { pool.run(|conn| conn.execute("SELECT pg_sleep(1)", args![])).await };
        let first = tokio::spawn(slow(Arc::clone(&pool)));
        let second = tokio::spawn(slow(Arc::clone(&pool)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waited = pool.run(|conn| conn.execute("SELECT 1", args![])).await.unwrap_err();
        assert!(matches!(waited, LedgerError::Unavailable(Unavailable::Timeout)), "{waited:?}");
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();

        // Readers cannot write.
        let write = pool.run(|conn| conn.execute("CREATE TABLE t (id BIGINT)", args![])).await.unwrap_err();
        assert!(write.is_unavailable(), "{write:?}");

        // A job that leaves its transaction open, and one that breaks its connection: neither
        // connection is pooled again, and the next calls get working ones.
        pool.run(|conn| {
            let tx = conn.begin(Isolation::RepeatableRead)?;
            std::mem::forget(tx);
            Ok(())
        })
        .await
        .unwrap();
        pool.run(|conn| conn.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")).await.unwrap_err();
        for _ in 0..4 {
            let one = pool.run(|conn| conn.query_one("SELECT 1", args![], "one")?.get::<i64>(0, "one")).await;
            assert_eq!(one.unwrap(), 1);
        }
        assert!(pool.idle() <= 2);
    }
}
