//! MPS clearing and settlement between banks (docs/CLEARING.md). [`clearing`] is the clearing
//! file every issuer writes at the end of a business day and the settlement center reads.
#![forbid(unsafe_code)]

pub mod clearing;
