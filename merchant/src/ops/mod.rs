//! Operations: JSON logs ([`logging`]) and Prometheus metrics ([`metrics`]) served by the admin
//! listener.

pub mod logging;
pub mod metrics;
