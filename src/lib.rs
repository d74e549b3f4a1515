//! meshcheck: conformance and end-to-end checks for an Istio ingress.
//!
//! Data flow: fixtures -> istio model -> target (local Envoy | kind | existing) ->
//! checks -> events -> reporters (console, JUnit). See ARCHITECTURE.md.

pub mod analysis;
pub mod analyze_cmd;
pub mod checks;
pub mod cli;
pub mod equivalent;
pub mod error;
pub mod fixtures;
pub mod gen_fixtures;
pub mod istio;
pub mod oracle;
pub mod probe;
pub mod report;
pub mod run;
pub mod runner;
pub mod stats;
pub mod step_analysis;
pub mod stub;
pub mod suite;
pub mod targets;
pub mod timeouts;
pub mod token;
pub mod upgrade;
