//! PEM files in and out: certificate chains, CRLs and PKCS#8 private keys, with a size limit on
//! everything read.

use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Largest PEM file read (certificate chains, CRLs, keys).
pub const PEM_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// A PEM file that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`PEM_FILE_BYTES_MAX`].
    #[error("{path} is larger than {PEM_FILE_BYTES_MAX} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// A PEM section is malformed.
    #[error("{path} is not valid PEM")]
    Syntax {
        /// The file.
        path: String,
    },
    /// The file holds no section of the wanted kind.
    #[error("{path} holds no {kind}")]
    Empty {
        /// The file.
        path: String,
        /// What was looked for.
        kind: &'static str,
    },
}

/// Reads a whole file, refusing files larger than [`PEM_FILE_BYTES_MAX`].
pub fn read_limited(path: &Path) -> Result<Vec<u8>, PemError> {
    let io_error = |source| PemError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(PemError::TooLarge { path: path.display().to_string() });
    }
    Ok(bytes)
}

fn parse_all<T: PemObject>(path: &Path, bytes: &[u8], kind: &'static str) -> Result<Vec<T>, PemError> {
    let items = T::pem_slice_iter(bytes)
        .collect::<Result<Vec<T>, _>>()
        .map_err(|_| PemError::Syntax { path: path.display().to_string() })?;
    if items.is_empty() {
        return Err(PemError::Empty { path: path.display().to_string(), kind });
    }
    Ok(items)
}

/// Reads every certificate of a PEM file, in file order (leaf first for a chain file).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read_limited(path)?;
    parse_all(path, &bytes, "CERTIFICATE")
}

/// Reads every CRL of a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
    let bytes = read_limited(path)?;
    parse_all(path, &bytes, "X509 CRL")
}

/// Reads the first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = zeroize::Zeroizing::new(read_limited(path)?);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            PemError::Empty { path: path.display().to_string(), kind: "PRIVATE KEY" }
        }
        _ => PemError::Syntax { path: path.display().to_string() },
    })
}

/// Encodes DER as one PEM section with 64-character lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Encodes certificates as a PEM chain, in the given order.
pub fn encode_certificates(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|cert| encode("CERTIFICATE", cert.as_ref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_certificates_parse_back() {
        let der = CertificateDer::from((0u8..200).collect::<Vec<u8>>());
        let text = encode_certificates(&[der.clone(), der.clone()]);
        assert!(text.lines().all(|line| line.len() <= 64));
        let parsed: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed, vec![der.clone(), der]);
    }

    #[test]
    fn missing_and_empty_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(load_certificates(&missing), Err(PemError::Io { .. })));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(matches!(load_certificates(&empty), Err(PemError::Empty { .. })));
        assert!(matches!(load_private_key(&empty), Err(PemError::Empty { .. })));
    }
}
