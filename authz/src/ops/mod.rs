//! Operations: Prometheus metrics, logs, health and readiness (DESIGN.md section 10), and the
//! recent decisions the operator's console shows.

pub mod clearing;
pub mod kek_rotation;
pub mod logging;
pub mod metrics;
pub mod recent;
pub mod revocation;
