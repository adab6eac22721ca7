//! MPS pki (filled by a later issue).
