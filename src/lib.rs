//! meshcheck: conformance and end-to-end checks for an Istio ingress.
//!
//! Data flow: fixtures -> istio model -> target (local Envoy | kind | existing) ->
//! checks -> events -> reporters (console, JUnit). See ARCHITECTURE.md.

pub mod fixtures;
pub mod istio;
