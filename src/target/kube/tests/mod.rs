//! Tests against a fake API server (wiremock).

mod apply;
mod fake;
mod pods;
mod wait;
