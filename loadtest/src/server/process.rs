//! The server process's footprint from Linux's `/proc`, read at each sample of a soak: its
//! resident memory and thread count (`/proc/PID/status`) and its open file descriptors (the
//! entries of `/proc/PID/fd`, readable for a process of the same user).

use std::path::Path;

use super::cpu::CpuError;

/// At most this many file descriptors are counted (authz holds a few hundred at most).
pub const FDS_MAX: u64 = 1_000_000;

/// One reading of a process's footprint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Resident memory (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Threads (`Threads`).
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Reads process `pid` under `proc_root` (`/proc` outside tests).
pub fn footprint(proc_root: &Path, pid: u32) -> Result<Footprint, CpuError> {
    let process_dir = proc_root.join(pid.to_string());
    let status_path = process_dir.join("status");
    let status =
        std::fs::read_to_string(&status_path).map_err(|source| CpuError::Read { path: status_path.clone(), source })?;
    let (rss_bytes, threads) = parse_status(&status).ok_or(CpuError::Format { path: status_path })?;
    let fd_dir = process_dir.join("fd");
    let entries = std::fs::read_dir(&fd_dir).map_err(|source| CpuError::Read { path: fd_dir.clone(), source })?;
    let mut open_fds = 0;
    for _ in entries.take(usize::try_from(FDS_MAX).unwrap_or(usize::MAX)) {
        open_fds += 1;
    }
    Ok(Footprint { rss_bytes, threads, open_fds })
}

/// (`VmRSS` in bytes, `Threads`) of a status file: `VmRSS:   123456 kB`.
fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(|rest| {
            let mut words = rest.split_whitespace();
            (words.next().and_then(|w| w.parse::<u64>().ok()), words.next())
        })
    };
    let rss_bytes = match field("VmRSS")? {
        (Some(kib), Some("kB")) => kib.checked_mul(1024)?,
        _ => return None,
    };
    let threads = field("Threads")?.0?;
    Some((rss_bytes, threads))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_gives_resident_memory_in_bytes_and_threads() {
        let status = "Name:\tauthz\nVmPeak:\t  999 kB\nVmRSS:\t   52340 kB\nRssAnon:\t 100 kB\nThreads:\t37\n";
        assert_eq!(parse_status(status), Some((52_340 * 1024, 37)));
        assert_eq!(parse_status("VmRSS:\t12 MB\nThreads:\t1\n"), None, "only kB is the kernel's unit");
        assert_eq!(parse_status("Threads:\t1\n"), None, "a kernel thread has no VmRSS");
    }

    #[test]
    fn this_process_is_read() {
        let own = footprint(Path::new("/proc"), std::process::id()).unwrap();
        assert!(own.rss_bytes > 1024 * 1024, "a test binary holds more than 1 MiB: {own:?}");
        assert!(own.threads >= 1);
        // Eight files held open, besides stdin, stdout and stderr, are all counted.
        let files: Vec<std::fs::File> = (0..8).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        let holding = footprint(Path::new("/proc"), std::process::id()).unwrap();
        assert!(holding.open_fds >= 11, "{holding:?}");
        drop(files);
    }

    #[test]
    fn a_process_that_is_gone_is_an_error() {
        assert!(footprint(Path::new("/proc"), u32::MAX).is_err());
    }
}
