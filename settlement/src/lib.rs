//! MPS clearing and settlement between banks (docs/CLEARING.md). [`clearing`] is the clearing
//! file every issuer writes at the end of a business day and the settlement center reads;
//! [`run`] checks a set of such files (signatures, chains, unique transactions) and writes the
//! [`positions`] they net to; [`reconcile`] compares a merchant's export with the files;
//! [`config`] is the `settlement` command's configuration.
#![forbid(unsafe_code)]

pub mod clearing;
pub mod config;
pub mod positions;
pub mod reconcile;
pub mod run;
