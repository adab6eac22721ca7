//! MPS clearing and settlement between banks (docs/CLEARING.md). [`clearing`] is the clearing
//! file every issuer writes at the end of a business day and the settlement center reads;
//! [`positions`] nets a set of checked files into what each bank owes each other bank.
#![forbid(unsafe_code)]

pub mod clearing;
pub mod positions;
