//! The MPS load-test harness, in the order of a run: [`config`] (read once), [`provision`]
//! (payers registered through the bank's own registration path, SIMs personalised in memory),
//! [`drive`] (signed payments over mTLS to authz or the gateway, every answer checked), and
//! [`report`] (throughput, latency quantiles and curve, a per-second timeline, codes and
//! errors), with the server's side read from its metrics and /proc ([`server`]), the raw
//! bounds of its parts measured in the same invocation ([`bounds`]), a soak's time series of
//! the server's memory, descriptors, HSM objects and latency ([`soak`]), and the pictures
//! ([`svg`]). The `loadtest` binary wires them to a command line; the tests drive the same
//! functions against an in-process bank.
#![forbid(unsafe_code)]

pub mod bounds;
pub mod config;
pub mod drive;
pub mod provision;
pub mod report;
pub mod server;
pub mod soak;
pub mod svg;
