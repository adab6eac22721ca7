//! A throwaway PostgreSQL cluster for tests (this crate's unit tests, and other crates' through
//! the feature `testing`): `initdb` into a temp dir, a server that listens only on a Unix socket
//! inside that dir, a database `ledger`; stopped (`pg_ctl stop -m fast`) and deleted on drop.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the cluster runs as the
//! `postgres` system user (`runuser`), which owns the temp dir. Without PostgreSQL installed the
//! harness fails, saying what to install; it never skips a test.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

/// The database every cluster starts with.
pub const DATABASE: &str = "ledger";

/// The role the tests connect as (the cluster's superuser).
pub const USER: &str = "postgres";

/// Why a test cluster could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgClusterError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were found neither through \
         `pg_config --bindir` nor in /usr/lib/postgresql/*/bin: install them with \
         'apt-get install postgresql' (the CI script scripts/test does so when run as root)"
    )]
    NotInstalled,
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error(
        "running as root, and PostgreSQL refuses to: it must run as the `postgres` system user, which \
         does not exist (installing PostgreSQL with 'apt-get install postgresql' creates it)"
    )]
    NoPostgresUser,
    /// A file system step failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL program failed.
    #[error("{program} failed ({status}): {output}")]
    Program {
        /// The program (initdb, pg_ctl, createdb).
        program: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed (server logs of a test cluster: no secrets).
        output: String,
    },
}

/// Socket port numbers handed out in this process. A port only names the socket file inside a
/// cluster's own directory (no TCP), so clusters never collide; distinct numbers still keep
/// every server's name apart in `ps` and in its log.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    bindir: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
    /// `Some("postgres")` when this process is root.
    run_as: Option<&'static str>,
    /// Deleted after the server has stopped (fields drop after `Drop::drop` ran).
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates, starts and fills a cluster: initdb, `pg_ctl start` with `fsync=on` listening on
    /// no TCP address, and `createdb ledger`. Takes a second or two.
    pub fn start() -> Result<Self, PgClusterError> {
        let bindir = server_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("mps-pg-")
            .tempdir()
            .map_err(|source| PgClusterError::Io { what: "create the cluster's temp dir", source })?;
        let socket = dir.path().join("socket");
        std::fs::create_dir(&socket).map_err(|source| PgClusterError::Io { what: "create the socket dir", source })?;
        let is_root = dir
            .path()
            .metadata()
            .map_err(|source| PgClusterError::Io { what: "read the temp dir's owner", source })?
            .uid()
            == 0;
        let run_as = if is_root {
            let (uid, gid) = postgres_user()?;
            for path in [dir.path(), socket.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|source| PgClusterError::Io { what: "give the temp dir to the postgres user", source })?;
            }
            Some(USER)
        } else {
            None
        };
        let port = 20_000 + (std::process::id() % 20_000) as u16 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 5_000;
        let cluster = Self { bindir, data: dir.path().join("data"), socket, port, run_as, dir };
        cluster.init()?;
        cluster.create_database(DATABASE)?;
        Ok(cluster)
    }

    /// How to reach database `ledger` (Unix socket, user `postgres`, no password).
    pub fn config(&self) -> tokio_postgres::Config {
        self.config_for(DATABASE)
    }

    /// How to reach database `dbname` of this cluster.
    pub fn config_for(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host_path(&self.socket).port(self.port).user(USER).dbname(dbname);
        config
    }

    /// The same as a libpq connection string, for a configuration file or `psql`.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!("host={} port={} user={USER} dbname={dbname}", self.socket.display(), self.port)
    }

    /// Creates another database in the cluster (one per test that needs an empty one).
    pub fn create_database(&self, dbname: &str) -> Result<tokio_postgres::Config, PgClusterError> {
        let port = self.port.to_string();
        let mut createdb = self.command("createdb");
        createdb.arg("-h").arg(&self.socket).args(["-p", port.as_str(), "-U", USER, dbname]);
        run("createdb", createdb)?;
        Ok(self.config_for(dbname))
    }

    /// The directory of the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket
    }

    /// The port number in the socket's name.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn init(&self) -> Result<(), PgClusterError> {
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(&self.data).args([
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            // Only initdb's own files skip their fsync; the server runs with fsync=on.
            "--no-sync",
        ]);
        run("initdb", initdb)?;
        // pg_ctl hands -o to a shell: the paths are quoted (a temp dir has no quote in it).
        let options = format!(
            "-k '{}' -p {} -c listen_addresses='' -c fsync=on -c shared_buffers=16MB -c max_connections=40",
            self.socket.display(),
            self.port
        );
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("-D").arg(&self.data).arg("-l").arg(self.dir.path().join("server.log"));
        pg_ctl.args(["-w", "-t", "60", "-o", options.as_str(), "start"]);
        run("pg_ctl start", pg_ctl).map_err(|error| self.with_server_log(error))
    }

    /// A command for one of PostgreSQL's programs, as the postgres user when root, in the
    /// cluster's dir (the postgres user may not be allowed into the current one).
    fn command(&self, program: &str) -> Command {
        let binary = self.bindir.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", user, "--"]).arg(binary);
                runuser
            }
            None => Command::new(binary),
        };
        command.current_dir(self.dir.path()).env("LC_ALL", "C");
        command
    }

    fn with_server_log(&self, error: PgClusterError) -> PgClusterError {
        match error {
            PgClusterError::Program { program, status, output } => {
                let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                PgClusterError::Program { program, status, output: format!("{output}\nserver log:\n{log}") }
            }
            other => other,
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("-D").arg(&self.data).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        if let Err(error) = run("pg_ctl stop", pg_ctl) {
            // The server notices its data dir gone within a minute and stops by itself.
            tracing::warn!(%error, "a test PostgreSQL cluster did not stop");
        }
    }
}

/// Runs a PostgreSQL program to its end; its output becomes the error if it fails.
fn run(program: &'static str, mut command: Command) -> Result<(), PgClusterError> {
    let output = command.output().map_err(|source| PgClusterError::Io { what: program, source })?;
    if output.status.success() {
        return Ok(());
    }
    Err(PgClusterError::Program {
        program,
        status: output.status,
        output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    })
}

/// The directory of `initdb` and `pg_ctl`: `pg_config --bindir` when it names one that has
/// them, else the newest of /usr/lib/postgresql/*/bin (Debian's layout).
fn server_bindir() -> Result<PathBuf, PgClusterError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_server(dir.as_path()) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir.as_path()))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or(PgClusterError::NotInstalled)
}

/// The uid and gid of the postgres system user.
fn postgres_user() -> Result<(u32, u32), PgClusterError> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, USER]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(PgClusterError::NoPostgresUser),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_listens_only_on_its_socket_and_is_gone_after_drop() {
        let cluster = PgCluster::start().unwrap();
        let dir = cluster.dir.path().to_owned();
        assert!(cluster.socket_dir().join(format!(".s.PGSQL.{}", cluster.port())).exists());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = cluster.config();
        let settings = runtime.block_on(async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT current_setting('listen_addresses'), current_setting('fsync'), current_database()",
                    &[],
                )
                .await
                .unwrap();
            (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2))
        });
        assert_eq!(settings, (String::new(), "on".to_owned(), DATABASE.to_owned()));
        assert!(cluster.connection_string(DATABASE).contains(&format!("port={}", cluster.port())));
        drop(cluster);
        assert!(!dir.exists(), "the cluster's dir is deleted");
    }
}
