//! The MPS load-test harness, in the order of a run: [`config`] (read once), [`provision`]
//! (payers registered through the bank's own registration path, SIMs personalised in memory),
//! [`drive`] (signed payments over mTLS to authz or the gateway, every answer checked), and
//! [`report`] (throughput, latency quantiles, codes and errors). The `loadtest` binary wires
//! them to a command line; the tests drive the same functions against an in-process bank.
#![forbid(unsafe_code)]

pub mod config;
pub mod drive;
pub mod provision;
pub mod report;
