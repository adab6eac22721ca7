//! The CA directory's layout and how its files are written: certificate, key and CRL file names,
//! new files that never overwrite (keys with mode 0600), atomic replacement of the files that
//! change (state, CRLs) and bounded reads.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

use super::state::STATE_FILE;
use super::{CaError, CaLevel, Issued};
use crate::pem;

/// Root CA certificate (PEM). This is the trust anchor every verifier is configured with.
pub const ROOT_CERT_FILE: &str = "root.crt";
/// Root CA private key (PKCS#8 PEM, mode 0600), when the key is a file.
pub const ROOT_KEY_FILE: &str = "root.key";
/// CRL issued by the root (covers intermediates).
pub const ROOT_CRL_FILE: &str = "root.crl";
/// Intermediate CA certificate (PEM).
pub const INTERMEDIATE_CERT_FILE: &str = "intermediate.crt";
/// Intermediate CA private key (PKCS#8 PEM, mode 0600), when the key is a file.
pub const INTERMEDIATE_KEY_FILE: &str = "intermediate.key";
/// CRL issued by the intermediate (covers end entities).
pub const INTERMEDIATE_CRL_FILE: &str = "intermediate.crl";
/// Both CRLs in one PEM file, for verifiers.
pub const CRLS_FILE: &str = "crls.pem";

impl CaLevel {
    pub(super) fn cert_file(self) -> &'static str {
        match self {
            CaLevel::Root => ROOT_CERT_FILE,
            CaLevel::Intermediate => INTERMEDIATE_CERT_FILE,
        }
    }

    pub(super) fn crl_file(self) -> &'static str {
        match self {
            CaLevel::Root => ROOT_CRL_FILE,
            CaLevel::Intermediate => INTERMEDIATE_CRL_FILE,
        }
    }
}

/// Writes `<prefix>.crt` (chain PEM, leaf first) and, if given, `<prefix>.key` (mode 0600).
/// Refuses to overwrite either. Returns the paths written.
pub fn write_issued(prefix: &Path, issued: &Issued, key_pem: Option<&str>) -> Result<Vec<PathBuf>, CaError> {
    let cert_path = with_suffix(prefix, "crt");
    let key_path = with_suffix(prefix, "key");
    if cert_path.exists() {
        return Err(CaError::OutputExists { path: cert_path.display().to_string() });
    }
    let mut written = Vec::new();
    if let Some(key_pem) = key_pem {
        write_new_file(&key_path, key_pem.as_bytes(), true)?;
        written.push(key_path);
    }
    write_new_file(&cert_path, issued.chain_pem().as_bytes(), false)?;
    written.push(cert_path);
    Ok(written)
}

/// `<prefix>.<extension>`, keeping any dots already in the prefix's file name.
pub fn with_suffix(prefix: &Path, extension: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

/// Writes a new private key file (mode 0600); refuses to overwrite.
pub fn write_key_file(path: &Path, key_pem: &str) -> Result<(), CaError> {
    write_new_file(path, key_pem.as_bytes(), true)
}

/// Refuses a directory that holds a CA already (its state file or any CA certificate or key).
pub(super) fn ensure_fresh_dir(dir: &Path) -> Result<(), CaError> {
    let taken = [STATE_FILE, ROOT_CERT_FILE, ROOT_KEY_FILE, INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE]
        .iter()
        .any(|file| dir.join(file).exists());
    if taken { Err(CaError::AlreadyInitialized { dir: dir.display().to_string() }) } else { Ok(()) }
}

pub(super) fn create_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.display().to_string(), source })
}

/// Reads at most `bytes_max` bytes of a file.
pub(super) fn read_file(path: &Path, bytes_max: u64) -> Result<Vec<u8>, CaError> {
    use std::io::Read;
    let io_error = |source| CaError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(bytes_max).read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// The first certificate of a PEM file (a CA certificate file holds exactly one).
pub(super) fn first_certificate(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let mut certificates = pem::load_certificates(path)?;
    if certificates.is_empty() {
        return Err(CaError::Invariant);
    }
    Ok(certificates.swap_remove(0))
}

/// Creates a file that must not exist yet; `secret` files get mode 0600.
pub(super) fn write_new_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CaError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CaError::OutputExists { path: path.display().to_string() }
        } else {
            CaError::Io { path: path.display().to_string(), source }
        }
    };
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Replaces a file atomically (write a temporary file beside it, then rename).
pub(super) fn replace_file(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    let temporary = with_suffix(path, "tmp");
    let io_error = |source| CaError::Io { path: path.display().to_string(), source };
    {
        let mut file = std::fs::File::create(&temporary).map_err(io_error)?;
        file.write_all(contents).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
    }
    std::fs::rename(&temporary, path).map_err(io_error)
}
