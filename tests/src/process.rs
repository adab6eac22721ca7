//! MPS services as separate processes for the fault tests: the binary from the test's own
//! target directory, started with a config file, SIGKILLed and restarted on the same config,
//! and the wait for its `/readyz`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a (re)started service may take to answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The profile directory of the running test binary (`<target>/debug` for `.../debug/deps/x`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// The target directory of the running test binary (`<target>` for `<target>/debug/deps/x`):
/// where a script it runs should build (`CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    profile_dir().parent().unwrap().to_owned()
}

/// The binary `name` from the same target directory as the running test.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} is missing: build it with `cargo build -p mps-{name}`", path.display());
    path
}

/// The binary `name` (authz, gateway, settlement, ...), built into the running test's target
/// directory and profile exactly as the workspace's test run builds it, and its path.
///
/// `cargo test --workspace` (what `scripts/test` runs) already builds every binary the tests
/// start, with the features the test build unifies (`mps-hsm/testing` among them). A `cargo
/// build -p <package>` would resolve other features and compile a second copy of most of the
/// tree into the same directory: about five minutes of a clean CI run. So this runs `cargo test
/// --workspace --no-run`, which after such a run finds nothing to do, and after a narrower one
/// (`cargo test -p mps-tests`, whose `authz` could be stale) builds what is missing. Cargo comes
/// from `CARGO`, which it sets for the tests it runs; a test binary started by hand (no `CARGO`)
/// takes the binary that is there.
pub fn build_binary(name: &str) -> PathBuf {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return binary(name);
    };
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().and_then(|p| p.to_str()).unwrap();
    let mut command = Command::new(cargo);
    command
        .args(["test", "--workspace", "--locked", "--no-run", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command.status().unwrap();
    assert!(status.success(), "`cargo test --workspace --no-run` failed: {status}");
    binary(name)
}

/// One service process, restartable with the same configuration and environment.
pub struct Service {
    name: &'static str,
    program: PathBuf,
    config: PathBuf,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
    /// stdout and stderr of every run, appended.
    pub log: PathBuf,
}

impl Service {
    /// Starts `<name> --config <config> serve` (binary from the test's target directory),
    /// logging to `<dir>/<name>.log`.
    pub fn start(name: &'static str, config: PathBuf, dir: &Path) -> Self {
        Self::start_with_env(name, binary(name), config, dir, Vec::new())
    }

    /// Like [`Service::start`], with `program` as the binary and `env` added to every run's
    /// environment (for example the HSM PIN).
    pub fn start_with_env(
        name: &'static str,
        program: PathBuf,
        config: PathBuf,
        dir: &Path,
        env: Vec<(OsString, OsString)>,
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut service = Self { name, program, config, env, child: None, log };
        service.spawn();
        service
    }

    /// Starts the process again (after [`Service::kill`]).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.program)
            .args(["--config", self.config.to_str().unwrap(), "serve"])
            .env_remove("MPS_AUTHZ_CONFIG")
            .env_remove("MPS_GATEWAY_CONFIG")
            .env_remove("MPS_MERCHANT_CONFIG")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// Waits until `http://<admin>/readyz` answers 200, for at most [`READY_TIMEOUT`]. Fails at
    /// once if the process exits, and after the timeout with what each of its threads waits
    /// in (from /proc) and the end of its log.
    pub async fn wait_ready(&mut self, admin: SocketAddr, what: &str) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("http://{admin}/readyz")).send().await
                && response.status().is_success()
            {
                return;
            }
            let child = self.child.as_mut().unwrap_or_else(|| panic!("{what} is not running"));
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{what} exited ({status}) before it was ready; the end of its log:\n{}", log_tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let threads = self.child.as_ref().map(|child| threads(child.id())).unwrap_or_default();
        panic!(
            "{what} did not become ready within {READY_TIMEOUT:?}; its threads (name, state, wait channel):\n{threads}\n\
             the end of {}:\n{}",
            self.log.display(),
            log_tail(&self.log)
        );
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line per thread of process `pid`: its name, state and kernel wait channel.
fn threads(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(no /proc/{pid}/task)");
    };
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default().trim().to_owned();
    let mut lines: Vec<String> = tasks
        .filter_map(Result::ok)
        .map(|task| {
            let dir = task.path();
            let state = read(dir.join("stat")).rsplit(") ").next().unwrap_or("").chars().next().unwrap_or('?');
            format!("{} {state} {}", read(dir.join("comm")), read(dir.join("wchan")))
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The last 16 KiB of a log (a service restarted many times writes a long one).
pub fn log_tail(log: &Path) -> String {
    const TAIL_BYTES: usize = 16 * 1024;
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&text[text.len().saturating_sub(TAIL_BYTES)..]).into_owned()
}
