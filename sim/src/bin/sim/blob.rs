//! Reading what the payer hands the `sim` binary: packets and answers as base64, hex, raw bytes
//! in a file (`@file`) or on stdin (`-`), and small text files (records, keys, config), each with
//! a size limit.

use std::io::Read;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use crate::error::CliError;

/// Largest file or stdin read as a packet or answer (their text forms are a few hundred bytes).
const BLOB_BYTES_MAX: u64 = 4096;

/// Decodes `arg` into exactly `length` bytes: `@path` reads a file, `-` reads stdin; the
/// content is taken as raw bytes when it has exactly `length` bytes, else as hex or base64 text.
pub fn decode(arg: &str, length: usize, what: &str) -> Result<Vec<u8>, CliError> {
    let content: Vec<u8> = if let Some(path) = arg.strip_prefix('@') {
        read_limited(std::fs::File::open(path).map_err(|e| CliError::input(format!("cannot open {path}: {e}")))?)?
    } else if arg == "-" {
        read_limited(std::io::stdin().lock())?
    } else {
        arg.as_bytes().to_vec()
    };
    if content.len() == length && (arg.starts_with('@') || arg == "-") {
        return Ok(content);
    }
    let text: String = String::from_utf8_lossy(&content).split_whitespace().collect();
    let bytes = if text.len() == 2 * length && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(&text).map_err(|e| CliError::input(format!("{what} is not valid hex: {e}")))?
    } else {
        BASE64
            .decode(&text)
            .map_err(|_| CliError::input(format!("{what} is neither base64 nor {} hex digits", 2 * length)))?
    };
    if bytes.len() != length {
        return Err(CliError::input(format!("{what} must be {length} bytes, got {}", bytes.len())));
    }
    Ok(bytes)
}

fn read_limited(reader: impl Read) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    reader
        .take(BLOB_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::input(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > BLOB_BYTES_MAX {
        return Err(CliError::input(format!("input is larger than {BLOB_BYTES_MAX} bytes")));
    }
    Ok(bytes)
}

/// Reads a UTF-8 text file of at most `max` bytes, zeroized on drop (it may hold a key).
pub fn read_text_file(path: &Path, max: u64, what: &str) -> Result<Zeroizing<String>, CliError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::input(format!("cannot open {what} {}: {e}", path.display())))?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(max).unwrap_or(0).min(1 << 20) + 1));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::input(format!("cannot read {what} {}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(CliError::input(format!("{what} {} is larger than {max} bytes", path.display())));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::input(format!("{what} {} is not UTF-8 text", path.display())))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hex_and_base64_of_the_right_length() {
        let bytes = vec![0xABu8; 79];
        assert_eq!(decode(&hex::encode(&bytes), 79, "answer").unwrap(), bytes);
        assert_eq!(decode(&BASE64.encode(&bytes), 79, "answer").unwrap(), bytes);
        assert!(decode(&BASE64.encode(&bytes[..78]), 79, "answer").is_err());
        assert!(decode("not base64!", 79, "answer").is_err());
    }

    #[test]
    fn reads_raw_and_text_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 79]).unwrap();
        assert_eq!(decode(&format!("@{}", raw.display()), 79, "answer").unwrap(), vec![7u8; 79]);
        let text = dir.path().join("text");
        std::fs::write(&text, format!("{}\n", BASE64.encode([9u8; 79]))).unwrap();
        assert_eq!(decode(&format!("@{}", text.display()), 79, "answer").unwrap(), vec![9u8; 79]);
    }
}
