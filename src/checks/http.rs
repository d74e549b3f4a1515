//! `http`: a request through the ingress and what must come back: the status, which
//! service and version answered, the path the backend saw and headers it received, or
//! the gateway's own refusal (`denied: rbac|jwt|ext_authz`: the security filter's answer;
//! `not_reached`: a 4xx no backend gave).
//! Passes after 3 consecutive successful requests (the Gateway API conformance suite's
//! rule for eventual consistency); an attempt is the check's `repeat` requests, each
//! of which must succeed, so one attempt of `repeat: 50` already is 50 consecutive
//! successes ([`rounds_needed`]). The budget bounds the time until the expectation
//! first holds, not how long right answers take (see [`Clock`]); the number of
//! attempts is reported.

use super::{send, Ctx, Exchange, Outcome};
use crate::suite::{HeaderExpect, HttpCheck, HttpExpect, QueryExpect};
use std::time::{Duration, Instant};

/// Consecutive successful requests required.
pub const REQUIRED_SUCCESSES: u32 = 3;

/// Attempts of `repeat` requests, all successful and in a row, that make
/// [`REQUIRED_SUCCESSES`] consecutive successful requests: 3 of one request, 2 of
/// two, 1 of three or more.
pub fn rounds_needed(repeat: u32) -> u32 {
    REQUIRED_SUCCESSES.div_ceil(repeat.max(1))
}

fn describe_expect(e: &HttpExpect) -> String {
    let mut parts = Vec::new();
    match (e.denied, e.not_reached) {
        (Some(d), _) => parts.push(format!("{}, no backend", d.describe())),
        (None, true) => {
            parts.push("not reached (the gateway refuses it itself: a 4xx, no backend)".into())
        }
        (None, false) => {}
    }
    if let Some(s) = e
        .status
        .filter(|s| e.denied.is_none_or(|d| d.status() != *s))
    {
        parts.push(format!("status {s}"));
    }
    if let Some(b) = &e.backend {
        if b.none && e.denied.is_none() && !e.not_reached {
            parts.push("no backend (the gateway answers)".into());
        }
        for (k, v) in [
            ("service", &b.service),
            ("version", &b.version),
            ("namespace", &b.namespace),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
    }
    if let Some(p) = &e.path {
        parts.push(format!("backend path {p}"));
    }
    if let Some(m) = &e.method {
        parts.push(format!("backend method {m}"));
    }
    match &e.query {
        Some(QueryExpect::Exact(q)) => parts.push(format!("backend query {q:?}")),
        Some(QueryExpect::Params(ps)) => {
            for (k, v) in ps {
                parts.push(format!("backend query parameter {k} {v}"));
            }
        }
        None => {}
    }
    for (k, v) in &e.headers {
        parts.push(format!("header {k} {v}"));
    }
    for (k, v) in &e.response_headers {
        parts.push(format!("response header {k} {v}"));
    }
    if let Some(b) = &e.body_contains {
        parts.push(format!("body containing {b:?}"));
    }
    if let Some(l) = &e.latency {
        if let Some(v) = &l.at_least {
            parts.push(format!("latency at least {v}"));
        }
        if let Some(v) = &l.at_most {
            parts.push(format!("latency at most {v}"));
        }
    }
    if let Some(m) = &e.mirrored_to {
        parts.push(format!("mirrored to {m}"));
    }
    parts.join(", ")
}

/// How much earlier than configured an Envoy delay or timeout may end, by the
/// client's precise clock. Envoy's timers are libevent timers (Envoy
/// source/common/event/timer_impl.cc, TimerImpl::enableTimer: whole milliseconds,
/// event_add), and libevent measures them on its monotonic clock, which on Linux is
/// CLOCK_MONOTONIC_COARSE unless the base asks for EVENT_BASE_FLAG_PRECISE_TIMER
/// (libevent evutil_time.c, evutil_configure_monotonic_time_), and Envoy does not:
/// that clock advances once per kernel tick (1 to 10 ms for CONFIG_HZ 1000 to 100;
/// 4 ms here), so a 2 s `fault.delay` can end a tick early. `at_least` is judged with
/// one tick of the coarsest common kernel to spare, so the bound a user writes for a
/// configured delay or timeout holds; anything earlier still fails.
pub const ENVOY_TIMER_TOLERANCE: Duration = Duration::from_millis(10);

/// `1998ms`: latencies are compared to the millisecond, so shown to it.
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Why the answer's latency is out of bounds, or None.
fn latency_mismatch(e: &HttpExpect, x: &Exchange) -> Option<String> {
    let (lo, hi) = e.latency.as_ref()?.bounds().ok()?;
    let took = x.elapsed;
    if let Some(lo) = lo.filter(|lo| took + ENVOY_TIMER_TOLERANCE < *lo) {
        return Some(format!(
            "expected the answer to take at least {}, it took {} ({})",
            millis(lo),
            millis(took),
            x.summary()
        ));
    }
    if let Some(hi) = hi.filter(|hi| took > *hi) {
        return Some(format!(
            "expected the answer within {}, it took {} ({})",
            millis(hi),
            millis(took),
            x.summary()
        ));
    }
    None
}

/// Why `x` does not meet `e`, or None.
pub fn mismatch(e: &HttpExpect, x: &Exchange) -> Option<String> {
    // A gateway that takes no connection reaches no backend either.
    if e.not_reached && e.status.is_none() && x.status.is_none() && connection_failed(x) {
        return None;
    }
    let Some(status) = x.status else {
        return Some(x.summary());
    };
    if let Some(m) = refusal_mismatch(e, x, status) {
        return Some(m);
    }
    if let Some(want) = e.status.filter(|s| *s != status) {
        return Some(format!("expected status {want}, got {}", x.summary()));
    }
    for (name, want) in &e.response_headers {
        let got = x.header_values(name);
        if !want.meets(&got) {
            return Some(format!(
                "expected response header {name} {want}, got {}",
                HeaderExpect::describe_got(&got)
            ));
        }
    }
    if let Some(b) = &e.body_contains {
        if !x.body.contains(b.as_str()) {
            return Some(format!(
                "expected the body to contain {b:?}, got {:?}",
                super::truncate(&x.body, 200)
            ));
        }
    }
    if let Some(m) = latency_mismatch(e, x) {
        return Some(m);
    }
    if e.backend.as_ref().is_some_and(|b| b.none) {
        return x.echo.as_ref().map(|_| {
            format!(
                "expected no backend to answer (the gateway itself), got {}",
                x.summary()
            )
        });
    }
    if !e.needs_backend() {
        return None;
    }
    let Some(echo) = &x.echo else {
        return Some(format!(
            "expected an answer from a backend, got {}",
            x.summary()
        ));
    };
    if let Some(b) = &e.backend {
        let id = &echo.identity;
        for (what, want, got) in [
            ("service", &b.service, &id.service),
            ("version", &b.version, &id.version),
            ("namespace", &b.namespace, &id.namespace),
        ] {
            if let Some(want) = want {
                if want != got {
                    return Some(format!("expected {what} {want}, got {}", x.summary()));
                }
            }
        }
    }
    if let Some(p) = &e.path {
        if &echo.path != p {
            return Some(format!(
                "expected the backend to see path {p}, it saw {}",
                echo.path
            ));
        }
    }
    seen_mismatch(e, echo)
}

/// Whether `x` got no answer because no connection (or TLS session) was made.
fn connection_failed(x: &Exchange) -> bool {
    x.error
        .as_deref()
        .is_some_and(|e| e.starts_with("cannot connect"))
}

/// Why an answer (with `status`) is not the refusal `e` expects: `denied` (the
/// filter's status and body, no backend) or `not_reached` (a 4xx, no backend), or
/// None.
fn refusal_mismatch(e: &HttpExpect, x: &Exchange, status: u16) -> Option<String> {
    if let Some(d) = e.denied {
        let its = x.echo.is_none() && status == d.status() && d.body_is_its(&x.body);
        return (!its).then(|| format!("expected {}, got {}", d.describe(), x.summary()));
    }
    let refused = x.echo.is_none() && (400..500).contains(&status);
    (e.not_reached && !refused).then(|| {
        format!(
            "expected {}, got {}",
            crate::suite::NOT_REACHED,
            x.summary()
        )
    })
}

/// Why what the backend received (its echo) does not meet `e`'s method, query and
/// header expectations, or None.
fn seen_mismatch(e: &HttpExpect, echo: &crate::stub::Echo) -> Option<String> {
    if let Some(m) = e
        .method
        .as_ref()
        .filter(|m| !m.eq_ignore_ascii_case(&echo.method))
    {
        return Some(format!(
            "expected the backend to receive method {}, it received {}",
            m.to_ascii_uppercase(),
            echo.method
        ));
    }
    if let Some(m) = e.query.as_ref().and_then(|q| q.mismatch(&echo.query)) {
        return Some(m);
    }
    for (name, want) in &e.headers {
        let got = echo
            .headers
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        if !want.meets(&got) {
            return Some(format!(
                "expected header {name} {want} at the backend, got {}",
                HeaderExpect::describe_got(&got)
            ));
        }
    }
    None
}

/// Sends the check's request once (with a fresh `x-meshcheck-id` when a mirror is
/// expected) and judges the answer, waiting until `deadline` for the mirror's record.
async fn exchange(
    ctx: &Ctx,
    client: &super::Client,
    addr: std::net::SocketAddr,
    check: &HttpCheck,
    deadline: Instant,
) -> (Exchange, Option<String>) {
    let Some(want) = &check.expect.mirrored_to else {
        let x = send(client, addr, &check.request).await;
        let m = mismatch(&check.expect, &x);
        return (x, m);
    };
    let id = super::mirror::new_id();
    let mut req = check.request.clone();
    req.headers
        .insert(crate::stub::ID_HEADER.to_string(), id.clone().into());
    let x = send(client, addr, &req).await;
    if let Some(m) = mismatch(&check.expect, &x) {
        return (x, Some(m));
    }
    let m = super::mirror::mismatch(ctx, want, &id, &x, deadline).await;
    (x, m)
}

/// When a check's attempts may run. The budget bounds the time until the expectation
/// first holds, not the answers' own latency: a new attempt after a failure starts
/// only before `deadline`; once an attempt has succeeded, the remaining consecutive
/// attempts complete even past it, up to `cap` (that many attempts of requests each
/// bounded by the request timeout, which allows what the configuration implies:
/// [`Ctx::allowing`]).
struct Clock {
    started: Instant,
    deadline: Instant,
    cap: Instant,
}

impl Clock {
    fn start(ctx: &Ctx, check: &HttpCheck) -> Clock {
        let started = Instant::now();
        let deadline = started + ctx.budget;
        // A mirror's record is waited for at most its minimum wait once past the budget.
        let mirror_wait = if check.expect.mirrored_to.is_some() {
            super::mirror::MIN_WAIT
        } else {
            Duration::ZERO
        };
        let attempt = (ctx.timeouts.request + mirror_wait) * check.repeat.max(1);
        Clock {
            started,
            deadline,
            cap: deadline + attempt * rounds_needed(check.repeat),
        }
    }

    /// `after 4 attempts in 7.0s, budget 5s`.
    fn spent(&self, ctx: &Ctx, attempts: u32) -> String {
        format!(
            "after {attempts} attempts in {:.1}s, budget {:?}",
            self.started.elapsed().as_secs_f64(),
            ctx.budget
        )
    }
}

/// A failed attempt: why, what came back, its transcript.
struct Failure {
    why: String,
    observed: String,
    transcript: String,
}

/// Sends the check's `repeat` requests once; the first that misses the expectation
/// fails the attempt. Ok carries the last request's transcript.
async fn attempt(
    ctx: &Ctx,
    client: &super::Client,
    addr: std::net::SocketAddr,
    check: &HttpCheck,
    deadline: Instant,
) -> Result<String, Failure> {
    let mut transcript = String::new();
    for i in 0..check.repeat.max(1) {
        let (x, found) = exchange(ctx, client, addr, check, deadline).await;
        if let Some(m) = found {
            let why = if check.repeat > 1 {
                format!("request {} of {}: {m}", i + 1, check.repeat)
            } else {
                m
            };
            return Err(Failure {
                why,
                observed: x.summary(),
                transcript: x.transcript,
            });
        }
        transcript = x.transcript;
    }
    Ok(transcript)
}

pub async fn run(ctx: &Ctx, check: &HttpCheck) -> Outcome {
    let (addr, client) = match ctx
        .ingress_for(&check.request)
        .and_then(|a| Ok((a, ctx.client_for(&check.request, a, false)?)))
    {
        Ok(ac) => ac,
        Err(e) => return Outcome::fail(e, ""),
    };
    let clock = Clock::start(ctx, check);
    let mut attempts = 0u32;
    let mut failures = 0u32;
    // Successful attempts in a row.
    let mut streak = 0u32;
    loop {
        attempts += 1;
        match attempt(ctx, &client, addr, check, clock.deadline).await {
            Ok(transcript) => {
                streak += 1;
                if streak >= rounds_needed(check.repeat) {
                    return passed(check, attempts, failures, transcript);
                }
                if Instant::now() >= clock.cap {
                    return capped(ctx, check, &clock, attempts, streak, transcript);
                }
            }
            Err(f) => {
                failures += 1;
                streak = 0;
                tokio::time::sleep(ctx.timeouts.failure_pause).await;
                if Instant::now() >= clock.deadline {
                    return failed(ctx, check, &clock, attempts, f);
                }
            }
        }
    }
}

/// Sends the check's `repeat` requests once each and judges every answer, without
/// waiting for the expectation to hold 3 times in a row: for a request that changes
/// state (a step marked `once`), where a second attempt would see another state.
pub async fn run_once(ctx: &Ctx, check: &HttpCheck) -> Outcome {
    let (addr, client) = match ctx
        .ingress_for(&check.request)
        .and_then(|a| Ok((a, ctx.client_for(&check.request, a, false)?)))
    {
        Ok(ac) => ac,
        Err(e) => return Outcome::fail(e, ""),
    };
    let deadline = Instant::now() + ctx.budget;
    match attempt(ctx, &client, addr, check, deadline).await {
        Ok(transcript) => Outcome {
            transcript,
            ..Outcome::pass(format!(
                "{} request(s) sent once, each as expected",
                check.repeat.max(1)
            ))
        },
        Err(f) => Outcome {
            transcript: f.transcript,
            ..Outcome::fail(
                ctx.with_health(format!("{} (sent once, not retried)", f.why)),
                format!(
                    "expected: {}\nobserved: {}",
                    describe_expect(&check.expect),
                    f.observed
                ),
            )
        },
    }
}

fn passed(check: &HttpCheck, attempts: u32, failures: u32, transcript: String) -> Outcome {
    let repeat = check.repeat.max(1);
    let rounds = rounds_needed(repeat);
    let per = if repeat > 1 {
        format!(" ({rounds} attempt(s) of {repeat} requests in a row)")
    } else {
        String::new()
    };
    Outcome {
        passed: true,
        message: format!(
            "{} consecutive successes{per} after {attempts} attempt(s)",
            rounds * repeat
        ),
        detail: String::new(),
        transcript,
        attempts,
        flaky: failures > 0,
    }
}

/// The budget passed after a failed attempt: that attempt's failure.
fn failed(ctx: &Ctx, check: &HttpCheck, clock: &Clock, attempts: u32, f: Failure) -> Outcome {
    Outcome {
        passed: false,
        message: ctx.with_health(format!("{} ({})", f.why, clock.spent(ctx, attempts))),
        detail: format!(
            "expected: {}\nobserved: {}",
            describe_expect(&check.expect),
            f.observed
        ),
        transcript: f.transcript,
        attempts,
        flaky: false,
    }
}

/// Every attempt succeeded, but the hard cap passed before the run was complete (the
/// target answered slower than the request timeout allows).
fn capped(
    ctx: &Ctx,
    check: &HttpCheck,
    clock: &Clock,
    attempts: u32,
    streak: u32,
    transcript: String,
) -> Outcome {
    let cap = clock.cap.duration_since(clock.started);
    Outcome {
        passed: false,
        message: ctx.with_health(format!(
            "{} consecutive success(es), each as expected, but the run of {REQUIRED_SUCCESSES} did not complete within the hard cap of {:.1}s ({})",
            streak * check.repeat.max(1),
            cap.as_secs_f64(),
            clock.spent(ctx, attempts)
        )),
        detail: format!(
            "expected: {}\nobserved: every answer as expected, slower than the cap allows",
            describe_expect(&check.expect)
        ),
        transcript,
        attempts,
        flaky: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Denied, LatencyExpect};

    fn answer_after(ms: u64) -> Exchange {
        Exchange {
            status: Some(200),
            headers: Vec::new(),
            echo: None,
            body: String::new(),
            error: None,
            transcript: String::new(),
            elapsed: Duration::from_millis(ms),
        }
    }

    fn expect(at_least: Option<&str>, at_most: Option<&str>) -> HttpExpect {
        HttpExpect {
            status: Some(200),
            latency: Some(LatencyExpect {
                at_least: at_least.map(str::to_string),
                at_most: at_most.map(str::to_string),
            }),
            ..Default::default()
        }
    }

    /// An answer from the gateway itself: `status` and `body`, no backend.
    fn gateway(status: u16, body: &str) -> Exchange {
        Exchange {
            status: Some(status),
            body: body.into(),
            ..answer_after(1)
        }
    }

    /// An answer with `status` from the nb-rest v1 stub, which saw `path`.
    fn backend(status: u16, path: &str) -> Exchange {
        let echo = crate::stub::Echo {
            identity: crate::stub::Identity {
                service: "nb-rest".into(),
                version: "v1".into(),
                pod: "nb-rest-v1-abc".into(),
                namespace: "atlas".into(),
            },
            method: "GET".into(),
            path: path.into(),
            ..Default::default()
        };
        Exchange {
            status: Some(status),
            body: serde_json::to_string(&echo).unwrap(),
            echo: Some(echo),
            ..answer_after(1)
        }
    }

    fn refusal(denied: Option<Denied>, not_reached: bool) -> HttpExpect {
        HttpExpect {
            denied,
            not_reached,
            ..Default::default()
        }
    }

    #[test]
    fn an_ext_authz_denial_is_the_authorizer_s_403_not_rbac_s() {
        let e = refusal(Some(Denied::ExtAuthz), false);
        assert_eq!(
            mismatch(&e, &gateway(403, crate::istio::authz::ext_authz::DENY_BODY)),
            None
        );
        let m = mismatch(&e, &gateway(403, "RBAC: access denied")).unwrap();
        assert!(m.starts_with("expected ext_authz denial"), "{m}");
        assert!(mismatch(&e, &backend(403, "/headers")).is_some());
        assert!(mismatch(&e, &gateway(401, "Jwt is missing")).is_some());
    }

    #[test]
    fn an_rbac_denial_is_the_filters_403_and_nothing_else() {
        let e = refusal(Some(Denied::Rbac), false);
        assert_eq!(mismatch(&e, &gateway(403, "RBAC: access denied")), None);
        let m = mismatch(&e, &backend(200, "/admin/users")).unwrap();
        assert_eq!(
            m,
            "expected RBAC denial (403 RBAC: access denied), got 200 from nb-rest v1 (pod atlas/nb-rest-v1-abc, path /admin/users)"
        );
        // A 403 from elsewhere: the backend, or another filter's body.
        let m = mismatch(&e, &backend(403, "/admin")).unwrap();
        assert!(m.contains("got 403 from nb-rest v1"), "{m}");
        let m = mismatch(&e, &gateway(403, "forbidden by ext_authz")).unwrap();
        assert_eq!(
            m,
            "expected RBAC denial (403 RBAC: access denied), got 403: forbidden by ext_authz"
        );
        let m = mismatch(&e, &gateway(401, "Jwt is missing")).unwrap();
        assert!(m.ends_with("got 401: Jwt is missing"), "{m}");
        let m = mismatch(&e, &gateway(404, "")).unwrap();
        assert!(m.ends_with("got 404 with an empty body"), "{m}");
        // The rest of the expectation is still judged.
        let mut with_header = e.clone();
        with_header.response_headers.insert(
            "x-denied".into(),
            crate::suite::HeaderExpect::Exact("yes".into()),
        );
        let m = mismatch(&with_header, &gateway(403, "RBAC: access denied")).unwrap();
        assert!(m.starts_with("expected response header x-denied"), "{m}");
    }

    #[test]
    fn a_jwt_denial_is_a_401_whose_body_starts_with_jwt() {
        let e = refusal(Some(Denied::Jwt), false);
        for body in [
            "Jwt is missing",
            "Jwt verification fails",
            "Jwt issuer is not configured",
            "Jwt is expired",
        ] {
            assert_eq!(mismatch(&e, &gateway(401, body)), None, "{body}");
        }
        let m = mismatch(&e, &gateway(403, "RBAC: access denied")).unwrap();
        assert_eq!(
            m,
            "expected JWT denial (401 Jwt ...), got 403: RBAC: access denied"
        );
        let m = mismatch(&e, &gateway(401, "Unauthorized")).unwrap();
        assert!(m.ends_with("got 401: Unauthorized"), "{m}");
        let m = mismatch(&e, &backend(200, "/api")).unwrap();
        assert!(m.contains("got 200 from nb-rest v1"), "{m}");
    }

    #[test]
    fn not_reached_is_any_4xx_the_gateway_answers_itself() {
        let e = refusal(None, true);
        for (status, body) in [
            (403, "RBAC: access denied"),
            (404, ""),
            (400, "Bad Request"),
        ] {
            assert_eq!(mismatch(&e, &gateway(status, body)), None, "{status}");
        }
        let m = mismatch(&e, &backend(200, "/admin/users")).unwrap();
        assert_eq!(
            m,
            "expected the gateway to refuse the request itself (a 4xx, or no connection; no backend), got 200 from nb-rest v1 (pod atlas/nb-rest-v1-abc, path /admin/users)"
        );
        // A backend's own 404 reached the backend.
        assert!(mismatch(&e, &backend(404, "/ADMIN/users")).is_some());
        // No connection: nothing reached (with no status asked).
        let refused = Exchange {
            error: Some("cannot connect: Connection refused".into()),
            ..gateway(0, "")
        };
        let refused = Exchange {
            status: None,
            ..refused
        };
        assert_eq!(mismatch(&e, &refused), None);
        let timed_out = Exchange {
            error: Some("timed out (no answer within 10s)".into()),
            ..refused.clone()
        };
        assert!(mismatch(&e, &timed_out).is_some());
        // A gateway 503 means it routed the request toward a backend.
        let m = mismatch(&e, &gateway(503, "no healthy upstream")).unwrap();
        assert!(m.ends_with("got 503: no healthy upstream"), "{m}");
        assert!(mismatch(&e, &gateway(301, "")).is_some());
        // With a status, that 4xx only.
        let e404 = HttpExpect {
            status: Some(404),
            ..e
        };
        assert_eq!(mismatch(&e404, &gateway(404, "")), None);
        let m = mismatch(&e404, &gateway(403, "RBAC: access denied")).unwrap();
        assert_eq!(m, "expected status 404, got 403: RBAC: access denied");
    }

    #[test]
    fn the_expectation_describes_a_refusal() {
        assert_eq!(
            describe_expect(&refusal(Some(Denied::Rbac), false)),
            "RBAC denial (403 RBAC: access denied), no backend"
        );
        let e = HttpExpect {
            status: Some(401),
            backend: Some(crate::suite::BackendExpect {
                none: true,
                ..Default::default()
            }),
            ..refusal(Some(Denied::Jwt), false)
        };
        assert_eq!(describe_expect(&e), "JWT denial (401 Jwt ...), no backend");
        assert_eq!(
            describe_expect(&refusal(None, true)),
            "not reached (the gateway refuses it itself: a 4xx, no backend)"
        );
        assert_eq!(
            describe_expect(&HttpExpect {
                status: Some(404),
                ..refusal(None, true)
            }),
            "not reached (the gateway refuses it itself: a 4xx, no backend), status 404"
        );
        assert_eq!(describe_expect(&expect(None, None)), "status 200");
    }

    #[test]
    fn at_least_a_configured_delay_holds_when_envoys_timer_fires_a_hair_early() {
        // Envoy's 2 s fault delay answered after 1998 ms by the client's precise clock.
        let e = expect(Some("2s"), None);
        assert_eq!(latency_mismatch(&e, &answer_after(1998)), None);
        assert_eq!(latency_mismatch(&e, &answer_after(2000)), None);
        // Beyond the timer tolerance the bound fails, in milliseconds.
        let m = latency_mismatch(&e, &answer_after(1900)).unwrap();
        assert!(
            m.starts_with("expected the answer to take at least 2000ms, it took 1900ms"),
            "{m}"
        );
    }

    #[test]
    fn a_round_of_three_or_more_requests_is_a_run_of_consecutive_successes() {
        assert_eq!(rounds_needed(0), 3);
        assert_eq!(rounds_needed(1), 3);
        assert_eq!(rounds_needed(2), 2);
        assert_eq!(rounds_needed(3), 1);
        assert_eq!(rounds_needed(50), 1);
    }

    #[test]
    fn latencies_are_reported_in_milliseconds() {
        let e = expect(None, Some("1s"));
        let m = latency_mismatch(&e, &answer_after(1499)).unwrap();
        assert!(
            m.starts_with("expected the answer within 1000ms, it took 1499ms"),
            "{m}"
        );
        assert_eq!(latency_mismatch(&e, &answer_after(1000)), None);
    }
}
