//! MPS merchant server: takes the SIM's payer packet from the phone, checks it against the
//! shop's open order, adds our acquirer and account, signs the request (detached JWS, ES256),
//! submits it to the gateway over mutual TLS, verifies the bank's signed answer, records the
//! outcome durably and hands the SIM its answer (DESIGN.md sections 4.4, 6 and 6.1).
//!
//! The tree follows a payment: [`front`] (phone and POS routes), [`payment`] (the flow),
//! [`orders`] (the order book in SQLite), [`bank`] (signing, submitting, verifying, retrying,
//! reversals), [`ops`] (logs, metrics), [`config`], and [`app`] (start and stop).
#![forbid(unsafe_code)]

pub mod app;
pub mod bank;
pub mod config;
pub mod front;
pub mod ops;
pub mod orders;
pub mod payment;
