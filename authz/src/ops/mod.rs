//! Operations: Prometheus metrics, logs, health and readiness (DESIGN.md section 10).

pub mod clearing;
pub mod kek_rotation;
pub mod logging;
pub mod metrics;
pub mod revocation;
