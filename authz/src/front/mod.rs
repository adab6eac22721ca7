//! The front end: TLS with client certificates, the route table, and the mapping of decision
//! replies to HTTP. Handlers are thin: extract, call the decision, map the result.

pub mod admin;
pub mod problem;
pub mod routes;
pub mod server;
pub mod tls;
