//! Istio itself as the reference: the oracle (oracle/, a Go program running istiod's
//! own config generation in process) is given the same fixtures meshcheck models, and
//! its answer (Envoy config per gateway pod, and where each request goes) is compared
//! with the model, or served to the local target's Envoys.

pub mod binary;
pub mod compare;
pub mod input;
pub mod output;
pub mod views;
mod wait;

pub use binary::{locate, run, OracleError};
pub use compare::compare;
