//! Routing, the second step of a request: which issuer a body is for ([`destination`]), the
//! routing table of issuers and their instances ([`table`]), and which instances are healthy
//! ([`health`]).

pub mod destination;
pub mod health;
pub mod table;
