//! Upstream, the last step of a request: the mTLS client towards the issuers ([`client`]) and
//! the attempts with timeouts, retries and failover that forward one body ([`forward`]).

pub mod client;
pub mod forward;
