//! MPS loadtest (filled by a later issue).
