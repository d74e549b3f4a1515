//! Tests against a fake API server (wiremock).

mod apply;
mod existing_e2e;
mod failed_bring_up;
pub(crate) mod fake;
mod gateway_api;
mod pods;
mod preflight;
mod wait;
