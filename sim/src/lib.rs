//! MPS sim (filled by a later issue).
