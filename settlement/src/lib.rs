//! MPS settlement (filled by a later issue).
