//! MPS authz (filled by a later issue).
