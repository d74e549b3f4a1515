//! Tests against a fake API server (wiremock).

mod apply;
mod existing_e2e;
mod failed_bring_up;
mod gateway_api;
pub(crate) mod fake;
mod pods;
mod preflight;
mod wait;
