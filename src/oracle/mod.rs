//! Istio itself as the reference: the oracle (oracle/, a Go program running istiod's
//! own config generation in process) is given the same fixtures meshcheck models, and
//! its answer (Envoy config per gateway pod, and where each request goes) is compared
//! with the model, or served to the local target's Envoys.

pub mod binary;
pub mod compare;
mod compare_authz;
mod compare_status;
mod fields;
pub mod input;
pub mod output;
pub mod views;
pub(crate) mod wait;

pub use binary::{locate, run, OracleError};
pub use compare::compare;

/// istiod's answer for the fixtures: the oracle named by `spec` (an Istio version or a
/// built oracle's path), given the fixtures as a cluster would hold them.
/// `envoy_compatible`: Istio-only Envoy extensions off (to serve the answer).
pub fn ask(
    spec: &str,
    fx: &crate::fixtures::Fixtures,
    mesh: &crate::istio::Mesh,
    suite: &crate::suite::Suite,
    envoy_compatible: bool,
) -> Result<output::Output, OracleError> {
    let bin = locate(spec)?;
    run(&bin, &input::build(fx, mesh, suite), envoy_compatible)
}
