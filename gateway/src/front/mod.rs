//! The front, the first step of a request: merchants' mutual TLS and their identity
//! ([`tls`], [`identity`], [`server`]), the route table and its thin handlers ([`routes`]), the
//! per-merchant rate limit ([`rate_limit`]), the one mapping of refusals to HTTP
//! ([`problem`]), and the admin listener ([`admin`]).

pub mod admin;
pub mod identity;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod tls;
