//! MPS protocol (filled by a later issue).
