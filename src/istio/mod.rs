//! One model of Istio's semantics for the fixtures: which pods run (and with which
//! proxy), which listeners, virtual hosts, routes and clusters istiod would program
//! into each gateway, and which endpoints each cluster has. The local target turns
//! this model into Envoy configuration; the analysis and route simulation read it, so
//! the two cannot disagree.

mod answer_time;
pub mod authz;
pub mod ejection;
mod gateway;
mod gateway_tcp;
mod hcm;
pub mod headers;
mod mesh;
pub mod normalize;
pub mod peer_auth;
mod pods;
pub mod policy;
mod route_filters;
mod simulate;
pub mod steps;
mod upstream;

pub use gateway::{credential_problem, sds_name, secret_ref};
pub use hcm::HcmPlan;
pub use mesh::*;
pub use pods::*;
pub use route_filters::*;
pub use simulate::*;

#[cfg(test)]
mod tests;
