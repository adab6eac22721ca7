//! SQLite's read pool: read-only connections (a [`Pool`] of them). Reads see WAL snapshots, so
//! they never wait for the writer. [`Pool::read`] hands a read a connection;
//! [`ReadPool::snapshot`] a read transaction for a read of several statements.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::config::LedgerConfig;
use super::error::LedgerError;
use super::pool::{Connector, Pool};
use super::schema;
use super::sql::Sql;

/// Opens read-only connections to one SQLite file.
pub(crate) struct SqliteReaders {
    path: PathBuf,
    busy_timeout: Duration,
}

impl Connector for SqliteReaders {
    type Conn = Connection;

    fn open(&self) -> Result<Connection, LedgerError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        schema::configure_reader(&conn, self.busy_timeout)?;
        Ok(conn)
    }

    /// A read that failed half way may leave its transaction open.
    fn reusable(&self, conn: &Connection) -> bool {
        conn.is_autocommit()
    }
}

/// At most `read_connections` reads at a time, each on its own connection.
pub(crate) type ReadPool = Pool<SqliteReaders>;

impl ReadPool {
    /// Opens every connection now, so a bad path fails at start, not at the first request.
    pub(crate) fn open_sqlite(path: &Path, config: &LedgerConfig) -> Result<Arc<Self>, LedgerError> {
        let readers = SqliteReaders { path: path.to_owned(), busy_timeout: config.busy_timeout() };
        Pool::open(readers, config.read_connections, config.read_timeout())
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
}
