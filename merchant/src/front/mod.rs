//! The HTTP fronts: [`routes`] holds the route tables of the three listeners (phone, POS,
//! admin); [`phone`] takes the SIM's packet, [`pos`] serves the shop's orders, [`admin`] metrics
//! and health; [`problem`] is the one map from errors to HTTP statuses and RFC 7807 bodies.

pub mod admin;
pub mod phone;
pub mod pos;
pub mod problem;
pub mod routes;
