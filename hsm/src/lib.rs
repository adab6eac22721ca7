//! MPS hsm (filled by a later issue).
