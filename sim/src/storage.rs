//! Atomic file replacement for the profile: a crash at any point leaves either the old file or
//! the new one, never a mixture, and never a stray temporary file on a clean failure.
//!
//! Steps: create a temporary file (mode 0600, `O_EXCL`) in the target's directory, write, fsync,
//! rename over the target, fsync the directory so the rename itself is durable.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::ProfileError;

/// Permissions of the profile: owner read and write only.
pub(crate) const FILE_MODE: u32 = 0o600;

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ProfileError + 'a {
    move |source| ProfileError::Io { action, path: path.to_owned(), source }
}

/// The directory that holds `path` ("." for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Prefix of temporary files, so a leftover from a killed process is recognisable.
pub(crate) fn temporary_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ProfileError> {
    let directory = directory_of(path);
    let temporary = directory.join(format!("{}{:016x}", temporary_prefix(path), rand::rngs::OsRng.next_u64()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&temporary)
        .map_err(io("create", &temporary))?;
    let written = file
        .write_all(bytes)
        .map_err(io("write", &temporary))
        .and_then(|()| file.sync_all().map_err(io("fsync", &temporary)));
    drop(file);
    if let Err(error) = written.and_then(|()| fs::rename(&temporary, path).map_err(io("rename over", path))) {
        // Best effort: the temporary file holds keys and must not stay behind.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    File::open(&directory).and_then(|d| d.sync_all()).map_err(io("fsync directory", &directory))
}

/// An exclusive advisory lock (flock) on the directory that holds the profile, held until drop.
/// The directory rather than the file is locked because the file is replaced by rename on every
/// save; locking the directory also needs no extra lock file.
#[derive(Debug)]
pub struct ProfileLock {
    _directory: File,
}

/// Takes the lock without waiting: a second `sim` working on the same profile is refused.
pub(crate) fn lock_directory_of(path: &Path) -> Result<ProfileLock, ProfileError> {
    let directory = directory_of(path);
    let file = File::open(&directory).map_err(io("open directory", &directory))?;
    match file.try_lock() {
        Ok(()) => Ok(ProfileLock { _directory: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(ProfileError::Busy { path: path.to_owned() }),
        Err(std::fs::TryLockError::Error(source)) => Err(io("lock directory", &directory)(source)),
    }
}

/// Reads the whole file into a buffer that is zeroized on drop, refusing files over `max` bytes.
pub(crate) fn read_secret_file(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, ProfileError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ProfileError::NotFound { path: path.to_owned() });
        }
        Err(error) => return Err(io("open", path)(error)),
    };
    let length = file.metadata().map_err(io("stat", path))?.len();
    if length > max {
        return Err(ProfileError::TooLarge { path: path.to_owned(), actual: length, max });
    }
    // Allocate once (plus one byte to see the end) so no partial copy is left in freed memory.
    let capacity = usize::try_from(length).unwrap_or(0).saturating_add(1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(max + 1).read_to_end(&mut bytes).map_err(io("read", path))?;
    if bytes.len() as u64 > max {
        return Err(ProfileError::TooLarge { path: path.to_owned(), actual: bytes.len() as u64, max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_with_mode_0600_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        fs::write(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("profile.json")]);
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory at the target path: rename of a file over it fails.
        let path = dir.path().join("profile.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        assert!(matches!(write_atomically(&path, b"new"), Err(ProfileError::Io { action: "rename over", .. })));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("profile.json")]);
    }

    #[test]
    fn a_second_lock_on_the_same_profile_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        let first = lock_directory_of(&path).unwrap();
        assert!(matches!(lock_directory_of(&path), Err(ProfileError::Busy { .. })));
        drop(first);
        lock_directory_of(&path).unwrap();
    }

    #[test]
    fn reading_refuses_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b' '; 11]).unwrap();
        assert!(matches!(read_secret_file(&path, 10), Err(ProfileError::TooLarge { actual: 11, .. })));
        assert_eq!(read_secret_file(&path, 11).unwrap().len(), 11);
        assert!(matches!(read_secret_file(&dir.path().join("none"), 10), Err(ProfileError::NotFound { .. })));
    }
}
