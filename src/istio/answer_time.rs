//! How long an answer may take by what the configuration and the request ask for: the
//! route's fault delay (Envoy's fault filter, before the router), then the upstream
//! exchange as Envoy bounds it (each try cut by `perTryTimeout`, the retries and the
//! back-off between them, the route's `timeout` over all of them), with the stub's own
//! delay where the request asks for one. A check's request timeout allows this on top
//! of its usual allowance, so an answer the configuration makes slow is waited for.

use super::mesh::{RouteKind, RoutePlan};
use super::simulate::Branch;
use std::time::Duration;

/// The longest back-off Envoy waits before a retry when the route sets none (pilot sets
/// `retry_back_off` only for `retries.backoff`): a random wait up to 10 times the base
/// interval of 25 ms (Envoy source/common/router/retry_state_impl.cc, RetryStateImpl:
/// `max_interval = 10 * base_interval`; RouteAction.RetryPolicy.retry_back_off docs).
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// What the stub behind `b` is asked to wait before it answers (`x-meshcheck-delay` or
/// `meshcheck-delay`, src/stub/controls.rs), if anything.
pub fn stub_delay(b: &Branch) -> Option<Duration> {
    crate::stub::controls::controls(|n| super::headers::first(&b.headers_seen, n), &b.query)
        .ok()
        .and_then(|c| c.delay)
}

/// The fixed delay of `route`'s fault, when it delays any share of requests.
pub fn fault_delay(route: &RoutePlan) -> Duration {
    route
        .filters
        .fault
        .as_ref()
        .and_then(|f| f.delay.as_ref())
        .filter(|d| d.percentage.share() > 0.0)
        .map(|d| Duration::from_millis(d.fixed_delay_ms))
        .unwrap_or_default()
}

/// The longest the upstream exchange of `route` can take for requests ending in
/// `branches`: every try (the first and each retry) waits for the slowest stub, or
/// for `perTryTimeout` when that is shorter, with the longest back-off between tries;
/// the route's `timeout` (0: none) ends the whole exchange, retries included (Envoy
/// RouteAction.timeout). Routes the gateway answers itself take no upstream time.
pub fn upstream_bound(route: &RoutePlan, branches: &[Branch]) -> Duration {
    if !matches!(route.action, RouteKind::Forward) {
        return Duration::ZERO;
    }
    let slowest_stub = branches
        .iter()
        .filter_map(stub_delay)
        .max()
        .unwrap_or_default();
    let per_try = route
        .retry
        .as_ref()
        .and_then(|r| r.per_try_timeout_ms)
        .map(Duration::from_millis);
    let one_try = per_try.map_or(slowest_stub, |p| p.min(slowest_stub));
    let retries = route.retry.as_ref().map_or(0, |r| r.attempts);
    let all_tries = one_try * (retries + 1) + RETRY_BACKOFF_MAX * retries;
    match route.timeout_ms {
        0 => all_tries,
        ms => all_tries.min(Duration::from_millis(ms)),
    }
}
