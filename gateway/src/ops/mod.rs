//! Operations beside the request path: Prometheus metrics and JSON logs.

pub mod logging;
pub mod metrics;
