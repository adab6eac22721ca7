//! MPS merchant (filled by a later issue).
