//! PostgreSQL's connection pool: a [`Pool`] of [`PgConnection`]s of one role, each connected
//! again when the server closed it, a call on it timed out, or a job left its transaction open.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::error::LedgerError;
use super::pool::{Connector, Pool};
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

/// Connects to one database, on the ledger's runtime.
pub(crate) struct PgConnector {
    config: tokio_postgres::Config,
    handle: Handle,
    role: Role,
    call_timeout: Duration,
}

impl Connector for PgConnector {
    type Conn = PgConnection;

    fn open(&self) -> Result<PgConnection, LedgerError> {
        PgConnection::connect(&self.config, self.handle.clone(), self.role, self.call_timeout)
    }

    fn reusable(&self, conn: &PgConnection) -> bool {
        conn.is_reusable()
    }
}

/// At most `size` calls at a time, each on its own PostgreSQL connection.
pub(crate) type PgPool = Pool<PgConnector>;

impl PgPool {
    /// Opens every connection now, so that a wrong address or a refused login fails at start,
    /// not at the first request. Blocking: call it at start-up or on a blocking thread.
    pub(crate) fn open_postgres(
        config: tokio_postgres::Config,
        handle: Handle,
        options: PoolOptions,
    ) -> Result<Arc<Self>, LedgerError> {
        let connector = PgConnector { config, handle, role: options.role, call_timeout: options.call_timeout };
        Pool::open(connector, options.size, options.wait_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::error::Unavailable;
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
        let pool = tokio::task::spawn_blocking(move || PgPool::open_postgres(config, handle, options(2, 300)))
            .await
            .unwrap()
            .unwrap();
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
