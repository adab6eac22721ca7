//! MPS payment gateway: merchants connect over mutual TLS ([`front`]), each body is routed by
//! its issuer's IIN to a healthy instance of that issuer ([`route`]), and forwarded byte for
//! byte over mutual TLS with timeouts, retries and failover ([`upstream`]); the issuer's signed
//! answer goes back unchanged. [`app`] starts and stops it, [`config`] reads its configuration,
//! [`ops`] holds metrics and logs. docs/GATEWAY.md describes the behaviour.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod front;
pub mod ops;
pub mod route;
pub mod upstream;
