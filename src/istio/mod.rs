//! One model of Istio's semantics for the fixtures: which pods run (and with which
//! proxy), which listeners, virtual hosts, routes and clusters istiod would program
//! into each gateway, and which endpoints each cluster has. The local target turns
//! this model into Envoy configuration; the analysis and route simulation read it, so
//! the two cannot disagree.

mod mesh;
mod pods;
pub mod policy;
mod simulate;

pub use mesh::*;
pub use pods::*;
pub use simulate::*;

#[cfg(test)]
mod tests;
