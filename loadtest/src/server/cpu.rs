//! The server's CPU time from Linux's `/proc`: the process's user + system time
//! (`/proc/PID/stat`) and each thread's (`/proc/PID/task/TID/stat`), grouped by thread name
//! (tokio workers, HSM pool threads, the ledger writer), read before and after a run; and the
//! whole machine's busy time (`/proc/stat`), so that a report shows when the cores, not the
//! server, were the limit (the load generator shares them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Clock ticks per second of `/proc` times: the kernel reports them in USER_HZ, which is 100
/// on every Linux architecture (the kernel's internal HZ is converted before it reaches `/proc`).
pub const TICKS_PER_SECOND: u64 = 100;
/// At most this many threads are read (authz runs a few dozen).
pub const THREADS_MAX: usize = 4096;

/// Why the CPU times could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// A file of /proc could not be read (the process ended, or belongs to another user).
    #[error(
        "{path}: {source} (is the server running on this machine under this pid? check [target] server_pid or server_pid_file)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stat line is not the kernel's format.
    #[error("{path}: not a /proc stat line")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The pidfile holds no pid.
    #[error("pidfile {path}: no process id in it (give [target] server_pid instead)")]
    Pidfile {
        /// The file.
        path: PathBuf,
    },
}

/// A thread's name and its CPU time, in ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTime {
    /// The thread's name (`comm`, at most 15 characters).
    pub name: String,
    /// user + system time, ticks.
    pub ticks: u64,
}

/// One reading of a process and its threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// The process's user + system time, ticks (exited threads included).
    pub process_ticks: u64,
    /// Threads alive at the reading, by thread id.
    pub threads: BTreeMap<u32, ThreadTime>,
}

/// The whole machine's CPU time over all cores, ticks, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Time not idle and not waiting for I/O.
    pub busy: u64,
    /// All time (user, nice, system, idle, iowait, irq, softirq, steal).
    pub total: u64,
}

/// Reads the machine's CPU time under `proc_root`.
pub fn machine(proc_root: &Path) -> Result<MachineTicks, CpuError> {
    let path = proc_root.join("stat");
    let text = std::fs::read_to_string(&path).map_err(|source| CpuError::Read { path: path.clone(), source })?;
    parse_machine(&text).ok_or(CpuError::Format { path })
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: guest time is
/// already inside user time, so the total is the first eight fields.
fn parse_machine(text: &str) -> Option<MachineTicks> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    let total = values.iter().try_fold(0u64, |sum, v| sum.checked_add(*v))?;
    let idle = values[3].checked_add(values[4])?;
    Some(MachineTicks { busy: total.checked_sub(idle)?, total })
}

/// Reads the pid from a pidfile (its first line).
pub fn read_pidfile(path: &Path) -> Result<u32, CpuError> {
    let text = std::fs::read_to_string(path).map_err(|source| CpuError::Read { path: path.to_owned(), source })?;
    text.lines().next().and_then(|line| line.trim().parse().ok()).ok_or(CpuError::Pidfile { path: path.to_owned() })
}

/// Reads process `pid` and its threads under `proc_root` (`/proc` outside tests).
pub fn snapshot(proc_root: &Path, pid: u32) -> Result<CpuSnapshot, CpuError> {
    let process_dir = proc_root.join(pid.to_string());
    let (_, process_ticks) = read_stat(&process_dir.join("stat"))?;
    let mut threads = BTreeMap::new();
    let task_dir = process_dir.join("task");
    let entries = std::fs::read_dir(&task_dir).map_err(|source| CpuError::Read { path: task_dir.clone(), source })?;
    for entry in entries.flatten().take(THREADS_MAX) {
        let Some(tid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        // A thread may end between the listing and the read: it is simply not counted.
        if let Ok((name, ticks)) = read_stat(&entry.path().join("stat")) {
            threads.insert(tid, ThreadTime { name, ticks });
        }
    }
    Ok(CpuSnapshot { process_ticks, threads })
}

/// (comm, utime + stime) of a stat file.
fn read_stat(path: &Path) -> Result<(String, u64), CpuError> {
    let text = std::fs::read_to_string(path).map_err(|source| CpuError::Read { path: path.to_owned(), source })?;
    parse_stat(&text).ok_or(CpuError::Format { path: path.to_owned() })
}

/// `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so the fields after it
/// are found from the last `)`. utime and stime are fields 14 and 15 of the line.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime.checked_add(stime)?))
}

/// The group a thread's name belongs to: its name without a trailing number, so that
/// `mps-hsm-0` and `mps-hsm-1` are `mps-hsm-*`, and tokio's `tokio-rt-worker` stays itself.
pub fn thread_group(name: &str) -> String {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() { name.to_owned() } else { format!("{}*", stem) }
}

/// CPU time between two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuDelta {
    /// The process's CPU time, ticks.
    pub process_ticks: u64,
    /// By thread group: CPU time, ticks. Threads that ended during the run are in
    /// `process_ticks` but in no group (see [`CpuDelta::unattributed_ticks`]).
    pub groups: BTreeMap<String, u64>,
}

impl CpuDelta {
    /// `after` minus `before`; a thread born during the run counts from zero.
    pub fn between(before: &CpuSnapshot, after: &CpuSnapshot) -> Self {
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for (tid, thread) in &after.threads {
            let earlier = before.threads.get(tid).filter(|t| t.name == thread.name).map_or(0, |t| t.ticks);
            *groups.entry(thread_group(&thread.name)).or_default() += thread.ticks.saturating_sub(earlier);
        }
        Self { process_ticks: after.process_ticks.saturating_sub(before.process_ticks), groups }
    }

    /// Ticks of the process that no living thread accounts for (threads that ended).
    pub fn unattributed_ticks(&self) -> u64 {
        self.process_ticks.saturating_sub(self.groups.values().sum())
    }
}

/// Ticks in milliseconds.
pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / TICKS_PER_SECOND as f64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stat_line(pid: u32, name: &str, utime: u64, stime: u64) -> String {
        format!("{pid} ({name}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 4 0 100 0 0\n")
    }

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_its_name_parses() {
        assert_eq!(parse_stat(&stat_line(7, "a (b) c", 120, 30)), Some(("a (b) c".to_owned(), 150)));
        assert_eq!(parse_stat("7 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn random_stat_text_never_panics() {
        const ALPHABET: &[u8] = b"() S0123456789-\n\xc3\xa9";
        for _ in 0..20_000 {
            let length = rand::random::<usize>() % 64;
            let bytes: Vec<u8> = (0..length).map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()]).collect();
            let _ = parse_stat(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn the_machine_line_of_proc_stat_parses() {
        let text = "cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(parse_machine(text), Some(MachineTicks { busy: 160, total: 980 }));
        assert_eq!(parse_machine("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_machine("cpu  1 2 x 4 5\n"), None);
        assert_eq!(parse_machine("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine(""), None);
    }

    #[test]
    fn threads_are_grouped_by_name_without_their_number() {
        assert_eq!(thread_group("mps-hsm-0"), "mps-hsm-*");
        assert_eq!(thread_group("mps-hsm-12"), "mps-hsm-*");
        assert_eq!(thread_group("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(thread_group("ledger-writer"), "ledger-writer");
    }

    #[test]
    fn a_fake_proc_tree_is_read_and_compared() {
        let root = tempfile::tempdir().unwrap();
        let write = |pid: u32, tid: Option<u32>, name: &str, utime: u64| {
            let dir = match tid {
                Some(tid) => root.path().join(format!("{pid}/task/{tid}")),
                None => root.path().join(pid.to_string()),
            };
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), stat_line(tid.unwrap_or(pid), name, utime, 0)).unwrap();
        };
        write(42, None, "authz", 100);
        write(42, Some(42), "authz", 10);
        write(42, Some(43), "mps-hsm-0", 40);
        write(42, Some(44), "mps-hsm-1", 50);
        let before = snapshot(root.path(), 42).unwrap();
        assert_eq!(before.process_ticks, 100);
        assert_eq!(before.threads.len(), 3);
        write(42, None, "authz", 400);
        write(42, Some(43), "mps-hsm-0", 140);
        std::fs::remove_dir_all(root.path().join("42/task/44")).unwrap();
        write(42, Some(45), "ledger-writer", 60);
        let after = snapshot(root.path(), 42).unwrap();
        let delta = CpuDelta::between(&before, &after);
        assert_eq!(delta.process_ticks, 300);
        assert_eq!(delta.groups.get("mps-hsm-*"), Some(&100));
        assert_eq!(delta.groups.get("ledger-writer"), Some(&60), "a new thread counts from zero");
        assert_eq!(delta.groups.get("authz"), Some(&0));
        assert_eq!(delta.unattributed_ticks(), 140, "the ended thread's time is only in the total");
        assert_eq!(ticks_to_ms(3), 30.0);
        assert!(matches!(snapshot(root.path(), 7), Err(CpuError::Read { .. })));

        std::fs::write(root.path().join("authz.pid"), "42\n").unwrap();
        assert_eq!(read_pidfile(&root.path().join("authz.pid")).unwrap(), 42);
        std::fs::write(root.path().join("empty.pid"), "\n").unwrap();
        assert!(matches!(read_pidfile(&root.path().join("empty.pid")), Err(CpuError::Pidfile { .. })));
    }
}
