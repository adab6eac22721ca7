//! MPS authorization server of the issuing bank: the product.
//!
//! The source tree follows a request's path: `front/` (TLS, routes, HTTP mapping), `decision/`
//! (the issuer's decision of DESIGN.md section 7, one file per step), `ledger/` (the durable
//! double-entry ledger), `ops/` (metrics, logs); `registration` enrolls accounts and SIMs
//! (section 9); `app` starts and stops the whole.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod decision;
pub mod front;
pub mod ledger;
pub mod ops;
pub mod registration;
