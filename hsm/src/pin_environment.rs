//! Taking PINs out of the process environment, once, before any thread starts.
//!
//! A PIN passed in an environment variable would otherwise stay readable for the life of the
//! process, to anyone who may read `/proc/<pid>/environ` (the same user, root, a core dump).
//! Removing the variable with `unsetenv` is not enough: `/proc/<pid>/environ` shows the
//! environment block the kernel wrote at `execve`, and `unsetenv` only drops the pointer to it.
//! So [`take_pins_from_environment`] overwrites the variable's `NAME=value` bytes in that block
//! with zeros (through `/proc/self/mem`, the process writing its own memory), which removes it
//! from `getenv`, `std::env` and `/proc/<pid>/environ` at once, and keeps the PIN in a
//! process-wide store that [`crate::Pin::from_env`] reads from.
//!
//! It must run while the process has one thread (the first lines of `main`, before a tokio
//! runtime or a pool starts): nothing else then reads the environment while it is rewritten.
//! It checks that, and refuses otherwise.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::config::{ConfigError, Pin};

fn store() -> MutexGuard<'static, HashMap<String, Pin>> {
    static STORE: OnceLock<Mutex<HashMap<String, Pin>>> = OnceLock::new();
    // A poisoned lock only means a panic elsewhere; the map stays consistent.
    STORE.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The PIN taken from variable `name` by [`take_pins_from_environment`], if any.
pub(crate) fn taken(name: &str) -> Option<Pin> {
    store().get(name).cloned()
}

/// For each variable of `names` that is set: reads it as a PIN, keeps it for
/// [`crate::Pin::from_env`], and erases it from the process environment (see the module docs).
/// Variables that are not set are skipped. Call it first thing in `main`, before any thread
/// starts; with more than one thread it refuses ([`ConfigError::PinEnvironment`]).
pub fn take_pins_from_environment(names: &[&str]) -> Result<(), ConfigError> {
    let present: Vec<&str> = names.iter().copied().filter(|name| std::env::var_os(name).is_some()).collect();
    if present.is_empty() {
        return Ok(());
    }
    if thread_count()? != 1 {
        return Err(ConfigError::PinEnvironment {
            name: present.join(", "),
            reason: "the process already runs several threads; take the PIN before any starts",
        });
    }
    for name in present {
        let pin = Pin::read_env(name)?;
        erase(name)?;
        if std::env::var_os(name).is_some() {
            return Err(ConfigError::PinEnvironment {
                name: name.to_owned(),
                reason: "it is not in the environment block given at start; use pin_file instead",
            });
        }
        store().insert(name.to_owned(), pin);
    }
    Ok(())
}

fn environment_error(name: &str, reason: &'static str) -> ConfigError {
    ConfigError::PinEnvironment { name: name.to_owned(), reason }
}

fn thread_count() -> Result<usize, ConfigError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|_| environment_error("(any)", "/proc/self/status is unreadable"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| environment_error("(any)", "/proc/self/status has no thread count"))
}

/// `env_start` and `env_end` from `/proc/self/stat` (fields 50 and 51).
fn environment_block() -> Result<(u64, u64), ConfigError> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|_| environment_error("(any)", "/proc/self/stat is unreadable"))?;
    // Field 2 (the command name) may hold spaces and parentheses: count from after its ')'.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3.
    let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(50), field(51)) {
        (Some(start), Some(end)) if start < end => Ok((start, end)),
        _ => Err(environment_error("(any)", "/proc/self/stat has no environment block")),
    }
}

/// Zeroes every `name=...` entry of the environment block the kernel wrote at `execve`.
fn erase(name: &str) -> Result<(), ConfigError> {
    let (start, end) = environment_block()?;
    let length = usize::try_from(end - start).map_err(|_| environment_error(name, "environment block too large"))?;
    let mut memory = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .map_err(|_| environment_error(name, "/proc/self/mem cannot be opened for writing"))?;
    let mut block = zeroize::Zeroizing::new(vec![0u8; length]);
    memory
        .seek(SeekFrom::Start(start))
        .and_then(|_| memory.read_exact(&mut block))
        .map_err(|_| environment_error(name, "the environment block cannot be read"))?;
    let prefix = format!("{name}=");
    let mut offset = 0;
    for entry in block.split(|b| *b == 0) {
        if entry.starts_with(prefix.as_bytes()) {
            let zeros = zeroize::Zeroizing::new(vec![0u8; entry.len()]);
            memory
                .seek(SeekFrom::Start(start + offset as u64))
                .and_then(|_| memory.write_all(&zeros))
                .map_err(|_| environment_error(name, "the environment block cannot be written"))?;
        }
        offset += entry.len() + 1;
    }
    Ok(())
}
