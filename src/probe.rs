//! `meshcheck probe`: continuous traffic through the ingress, for watching an upgrade
//! (or any change) done by other means. The target comes up as for a run; then the
//! requests of the suite's http checks and distributions by version ([`routes`]) go
//! out in turn at a steady rate, every answer is
//! recorded with its time, live counts per route are shown, and the end prints
//! requests, errors, the rate achieved and each route's longest gap without a
//! successful answer, and writes JUnit (one testcase per route and a summary).
//!
//! An error is an answer whose status is not the check's expected status (a route
//! expected to answer 404 is not in error when it does), or no answer at all.

mod live;

pub use live::{Latest, Lines, Live, Quiet};

use crate::checks::{send, Outcome};
use crate::error::{exit, Error};
use crate::report::CheckEvent;
use crate::run::args::{ClusterArgs, ControlPlane, SidecarArg, TargetKind};
use crate::suite::{CheckKind, RequestSpec, Suite};
use crate::timeouts::Timeouts;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Errors listed per route in the report (the most frequent kinds).
const KINDS_SHOWN: usize = 5;
/// Error answers listed with their times in a failed route's testcase.
const ERRORS_LISTED: usize = 20;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// How long to send traffic (e.g. 10s, 10m); Ctrl-C ends it earlier, with the report.
    #[arg(long, value_parser = crate::timeouts::parse_duration)]
    pub duration: Duration,
    /// Requests per second, all routes together (the suite's http checks and
    /// distributions by version, in turn).
    #[arg(long, default_value_t = 50.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Suite whose http checks' requests to send: a name under suites/ or a path.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// Where the fixtures run.
    #[arg(long, value_enum, env = "MESHCHECK_TARGET", default_value = "auto")]
    pub target: TargetKind,
    /// These manifests instead of the suite's own fixtures.
    #[arg(long, env = "MESHCHECK_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    /// JUnit report path [default: target/meshcheck/<suite>-probe-junit.xml].
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Keep the target's working directory (configs, certificates, logs).
    #[arg(long)]
    pub keep: bool,
    /// Sidecar shape the local target reports.
    #[arg(long, value_enum, default_value = "native")]
    pub local_sidecars: SidecarArg,
    /// Who programs the local target's gateway Envoys (see the run's flag).
    #[arg(
        long,
        value_enum,
        env = "MESHCHECK_CONTROL_PLANE",
        default_value = "model"
    )]
    pub control_plane: ControlPlane,
    /// With --control-plane istiod: the Istio version or a built oracle's path.
    #[arg(long, env = "MESHCHECK_ORACLE", value_name = "VERSION|PATH", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub oracle: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000.0 => Ok(r),
        _ => Err(format!(
            "bad rate `{s}`: requests per second, above 0 and at most 10000"
        )),
    }
}

/// A request to send and the status that counts as success.
#[derive(Debug, Clone)]
pub struct Route {
    /// The check's `group::name`.
    pub name: String,
    pub request: RequestSpec,
    pub status: u16,
    /// How much longer than the request timeout an answer may take: what the route's
    /// fault delays, timeouts and retries imply (the simulation's longest answer, as
    /// the check itself allows), so a right but slow answer is not a timeout error.
    pub allow: Duration,
}

/// Where and how one route's requests go: the gateway Service port its check names
/// (its NodePort on the node) and the client for its scheme (https: SNI and CA as the
/// check would use).
#[derive(Debug, Clone)]
pub struct Aim {
    pub addr: SocketAddr,
    pub client: crate::checks::Client,
}

/// Each route's [`Aim`] on the target of `ctx`; an error names the route.
pub fn aim(ctx: &crate::checks::Ctx, routes: &[Route]) -> Result<Vec<Aim>, String> {
    routes
        .iter()
        .map(|r| {
            let addr = ctx
                .ingress_for(&r.request)
                .map_err(|e| format!("{}: {e}", r.name))?;
            let client = ctx
                .allowing(r.allow)
                .client_for(&r.request, addr, false)
                .map_err(|e| format!("{}: {e}", r.name))?;
            Ok(Aim { addr, client })
        })
        .collect()
}

/// Sets each route's [`Route::allow`] from `longest`, the simulation's longest answer
/// of the check named (none known: nothing more than the request timeout).
pub fn allow_configured(routes: &mut [Route], longest: impl Fn(&str) -> Option<Duration>) {
    for r in routes {
        r.allow = longest(&r.name).unwrap_or_default();
    }
}

/// How long in-flight requests may take once sending stopped: the request timeout
/// and the slowest route's allowance, and a second.
pub fn drain_for(routes: &[Route], request_timeout: Duration) -> Duration {
    let slowest = routes.iter().map(|r| r.allow).max().unwrap_or_default();
    request_timeout + slowest + Duration::from_secs(1)
}

/// `node:port` of the aims, for the console (one, or a list).
pub fn addresses(aims: &[Aim]) -> String {
    let mut v: Vec<String> = aims.iter().map(|a| a.addr.to_string()).collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

/// The suite's http checks, and its distribution checks by version share (every
/// answer a 200 from one of the versions), as routes to probe, in suite order. A
/// distribution by status (`statuses`, `at_least`: e.g. injected faults) has no one
/// status to expect and is not probed, nor is an http check expecting only
/// `not_reached` (any 4xx: an `attack` check's default).
pub fn routes(suite: &Suite) -> Vec<Route> {
    suite
        .checks
        .iter()
        .filter_map(|c| match &c.kind {
            CheckKind::Http(h) => h.expect.expected_status().map(|status| Route {
                name: c.full_name(),
                request: h.request.clone(),
                status,
                allow: Duration::ZERO,
            }),
            CheckKind::Distribution(d) if !d.shares.is_empty() => Some(Route {
                name: c.full_name(),
                request: d.request.clone(),
                status: 200,
                allow: Duration::ZERO,
            }),
            _ => None,
        })
        .collect()
}

/// How long and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub duration: Duration,
    /// Requests per second, all routes together.
    pub rate: f64,
    /// How long in-flight requests may take to answer once sending stopped.
    pub drain: Duration,
}

/// One request and its answer; times are since the probe started.
#[derive(Debug, Clone)]
pub struct Sample {
    pub route: usize,
    pub sent: Duration,
    pub answered: Duration,
    /// The status, when there was an answer.
    pub status: Option<u16>,
    /// Why this answer is an error (None: a success).
    pub error: Option<String>,
}

/// Requests and errors of a route so far (the live display's numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: usize,
    pub errors: usize,
    /// Requests answered (or failed) so far.
    pub answered: usize,
}

/// The longest time a route went without a successful answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    pub from: Duration,
    pub to: Duration,
}

impl Gap {
    pub fn duration(&self) -> Duration {
        self.to.saturating_sub(self.from)
    }
}

/// What one route saw.
#[derive(Debug, Clone)]
pub struct RouteReport {
    pub name: String,
    pub status: u16,
    pub requests: usize,
    pub errors: usize,
    pub longest_gap: Gap,
    /// Error kinds (`status 503`, `cannot connect: ...`) and how often.
    pub kinds: BTreeMap<String, usize>,
    /// The first error answers, with their times.
    pub first_errors: Vec<(Duration, String)>,
}

/// The whole probe.
#[derive(Debug, Clone)]
pub struct Report {
    pub routes: Vec<RouteReport>,
    /// How long requests were sent.
    pub elapsed: Duration,
    pub rate_asked: f64,
    /// Ended by Ctrl-C before the duration.
    pub interrupted: bool,
    /// Every answer, in the order received.
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.routes.iter().map(|r| r.requests).sum()
    }
    pub fn errors(&self) -> usize {
        self.routes.iter().map(|r| r.errors).sum()
    }
    pub fn rate_achieved(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests() as f64 / secs
        } else {
            0.0
        }
    }
    /// Passed: requests went to every route and none was an error.
    pub fn passed(&self) -> bool {
        self.errors() == 0 && self.routes.iter().all(|r| r.requests > 0)
    }
}

/// Why an answer to `route` is an error, or None.
fn judge(route: &Route, x: &crate::checks::Exchange) -> Option<String> {
    match (x.status, &x.error) {
        (_, Some(e)) => Some(e.clone()),
        (Some(s), None) if s == route.status => None,
        _ => Some(format!(
            "expected status {}, got {}",
            route.status,
            x.summary()
        )),
    }
}

/// The kind an error is counted under: its status, or the transport error.
fn kind(s: &Sample) -> String {
    match (s.status, &s.error) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(e)) => crate::checks::truncate(e, 80),
        (None, None) => "no answer".into(),
    }
}

/// Sends the routes' requests in turn at `opts.rate` until `opts.duration` has passed
/// or `stop` turns true; every answer goes to `live` as it comes.
pub async fn run(
    aims: &[Aim],
    routes: &[Route],
    opts: &Options,
    mut stop: watch::Receiver<bool>,
    live: &mut dyn Live,
) -> Report {
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sending = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate));
    sending.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut showing = tokio::time::interval(live.period());
    showing.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep_until(start + opts.duration);
    tokio::pin!(deadline);
    let mut sent = vec![0usize; routes.len()];
    let mut counts = vec![Counts::default(); routes.len()];
    let mut samples = Vec::new();
    let mut next = 0usize;
    let mut stop_open = true;
    let interrupted = loop {
        tokio::select! {
            biased;
            _ = &mut deadline => break false,
            changed = stop.changed(), if stop_open => match changed {
                Ok(()) if *stop.borrow() => break true,
                Ok(()) => {}
                Err(_) => stop_open = false,
            },
            Some(s) = rx.recv() => record(&mut samples, &mut counts, s),
            _ = sending.tick(), if !routes.is_empty() => {
                let i = next % routes.len();
                next += 1;
                sent[i] += 1;
                counts[i].requests += 1;
                let aim = aims[i].clone();
                tasks.spawn(request(aim.client, aim.addr, routes[i].clone(), i, start, tx.clone()));
            }
            _ = showing.tick() => live.show(routes, &counts, start.elapsed()),
        }
    };
    let elapsed = start.elapsed();
    drop(tx);
    drain(&mut tasks, &mut rx, opts.drain, &mut samples, &mut counts).await;
    live.finish(routes, &counts, elapsed);
    summarize(routes, &sent, samples, elapsed, opts.rate, interrupted)
}

/// Sends one request and reports its answer.
async fn request(
    client: crate::checks::Client,
    addr: SocketAddr,
    route: Route,
    index: usize,
    start: Instant,
    tx: mpsc::UnboundedSender<Sample>,
) {
    let sent = start.elapsed();
    let x = send(&client, addr, &route.request).await;
    let _ = tx.send(Sample {
        route: index,
        sent,
        answered: start.elapsed(),
        status: x.status,
        error: judge(&route, &x),
    });
}

fn record(samples: &mut Vec<Sample>, counts: &mut [Counts], s: Sample) {
    counts[s.route].answered += 1;
    if s.error.is_some() {
        counts[s.route].errors += 1;
    }
    samples.push(s);
}

/// Waits (at most `grace`) for the requests still in flight; the unanswered are
/// aborted and counted as errors by [`summarize`].
async fn drain(
    tasks: &mut tokio::task::JoinSet<()>,
    rx: &mut mpsc::UnboundedReceiver<Sample>,
    grace: Duration,
    samples: &mut Vec<Sample>,
    counts: &mut [Counts],
) {
    let _ = tokio::time::timeout(grace, async {
        while let Some(s) = rx.recv().await {
            record(samples, counts, s);
        }
    })
    .await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    while let Ok(s) = rx.try_recv() {
        record(samples, counts, s);
    }
}

/// Per-route numbers from the samples; a request without an answer is an error.
pub fn summarize(
    routes: &[Route],
    sent: &[usize],
    samples: Vec<Sample>,
    elapsed: Duration,
    rate: f64,
    interrupted: bool,
) -> Report {
    let reports = routes
        .iter()
        .enumerate()
        .map(|(i, r)| route_report(r, sent[i], samples.iter().filter(|s| s.route == i), elapsed))
        .collect();
    Report {
        routes: reports,
        elapsed,
        rate_asked: rate,
        interrupted,
        samples,
    }
}

fn route_report<'a>(
    route: &Route,
    sent: usize,
    samples: impl Iterator<Item = &'a Sample>,
    elapsed: Duration,
) -> RouteReport {
    let samples: Vec<&Sample> = samples.collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_errors = Vec::new();
    for s in samples.iter().filter(|s| s.error.is_some()) {
        *kinds.entry(kind(s)).or_default() += 1;
        if first_errors.len() < ERRORS_LISTED {
            first_errors.push((s.answered, s.error.clone().unwrap_or_default()));
        }
    }
    let unanswered = sent.saturating_sub(samples.len());
    if unanswered > 0 {
        kinds.insert("no answer before the probe ended".into(), unanswered);
    }
    let successes: Vec<Duration> = samples
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.answered)
        .collect();
    RouteReport {
        name: route.name.clone(),
        status: route.status,
        requests: sent,
        errors: kinds.values().sum(),
        longest_gap: longest_gap(successes, elapsed),
        kinds,
        first_errors,
    }
}

/// The longest stretch without a successful answer between the start, each success
/// and the end (the whole probe when nothing succeeded).
pub fn longest_gap(mut successes: Vec<Duration>, end: Duration) -> Gap {
    successes.sort();
    let end = successes.last().copied().unwrap_or_default().max(end);
    let mut points = vec![Duration::ZERO];
    points.extend(successes);
    points.push(end);
    points
        .windows(2)
        .map(|w| Gap {
            from: w[0],
            to: w[1],
        })
        .max_by_key(|g| g.duration())
        .unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `1500 requests in 30.0 s, 50.0/s (asked 50/s), 0 errors`.
pub fn headline(r: &Report) -> String {
    format!(
        "{} requests in {:.1} s, {:.1}/s (asked {}/s), {} error(s){}",
        r.requests(),
        r.elapsed.as_secs_f64(),
        r.rate_achieved(),
        r.rate_asked,
        r.errors(),
        if r.interrupted {
            " (stopped by Ctrl-C)"
        } else {
            ""
        }
    )
}

/// The end-of-probe table: per route requests, errors, longest gap, error kinds.
pub fn table(r: &Report) -> String {
    let w = r
        .routes
        .iter()
        .map(|x| x.name.len())
        .chain(["route".len()])
        .max()
        .unwrap_or(5);
    let mut out = format!("probe: {}\n", headline(r));
    let _ = writeln!(
        out,
        "  {:w$}  {:>8}  {:>6}  longest gap without success",
        "route", "requests", "errors"
    );
    for x in &r.routes {
        let g = x.longest_gap;
        let _ = writeln!(
            out,
            "  {:w$}  {:>8}  {:>6}  {} (from {} to {})",
            x.name,
            x.requests,
            x.errors,
            secs(g.duration()),
            secs(g.from),
            secs(g.to)
        );
        for (k, n) in top_kinds(x) {
            let _ = writeln!(out, "  {:w$}    {n} × {k}", "");
        }
    }
    out
}

fn top_kinds(x: &RouteReport) -> Vec<(&String, &usize)> {
    let mut kinds: Vec<(&String, &usize)> = x.kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    kinds.truncate(KINDS_SHOWN);
    kinds
}

/// One testcase per route (fails when it had errors or no request) and a summary.
pub fn events(r: &Report) -> Vec<CheckEvent> {
    let mut v: Vec<CheckEvent> = r.routes.iter().map(route_event).collect();
    let outcome = if r.passed() {
        Outcome::pass(headline(r))
    } else {
        Outcome::fail(headline(r), table(r))
    };
    let outcome = Outcome {
        attempts: r.requests() as u32,
        ..outcome
    };
    v.push(CheckEvent {
        group: "probe".into(),
        name: "summary".into(),
        kind: "probe".into(),
        outcome,
        duration: r.elapsed,
    });
    v
}

fn route_event(x: &RouteReport) -> CheckEvent {
    let gap = format!(
        "longest gap without success {} (from {} to {})",
        secs(x.longest_gap.duration()),
        secs(x.longest_gap.from),
        secs(x.longest_gap.to)
    );
    let outcome = if x.requests == 0 {
        Outcome::fail(
            "no request was sent to this route (the probe was too short for its rate)",
            "",
        )
    } else if x.errors == 0 {
        Outcome::pass(format!(
            "{} requests, every one answered {}; {gap}",
            x.requests, x.status
        ))
    } else {
        let mut detail = format!("expected: status {}\nerrors by kind:\n", x.status);
        for (k, n) in top_kinds(x) {
            let _ = writeln!(detail, "  {n} × {k}");
        }
        detail.push_str("first errors (time since the start):\n");
        for (t, e) in &x.first_errors {
            let _ = writeln!(detail, "  {}: {e}", secs(*t));
        }
        let first = x
            .first_errors
            .first()
            .map(|(t, e)| format!(", first at {}: {e}", secs(*t)))
            .unwrap_or_default();
        Outcome::fail(
            format!(
                "{} of {} requests failed{first}; {gap}",
                x.errors, x.requests
            ),
            detail,
        )
    };
    CheckEvent {
        group: "probe".into(),
        name: x.name.clone(),
        kind: "probe".into(),
        outcome: Outcome {
            attempts: x.requests as u32,
            ..outcome
        },
        duration: Duration::ZERO,
    }
}

fn junit_path(args: &ProbeArgs, suite: &Suite) -> PathBuf {
    args.junit.clone().unwrap_or_else(|| {
        PathBuf::from("target/meshcheck").join(format!("{}-probe-junit.xml", suite.name))
    })
}

/// `meshcheck probe`: brings the target up as a run does, probes, stops the target,
/// prints the table and writes JUnit. Exit 1 when a route had errors, 130 when
/// Ctrl-C ended an error-free probe, 0 otherwise.
pub fn command(args: ProbeArgs) -> Result<u8, Error> {
    let (mut suite, fixtures_dir, fx, mesh) =
        crate::run::load_inputs(&args.suite, args.fixtures.as_ref())?;
    let routes = routes(&suite);
    if routes.is_empty() {
        return Err(Error::Usage(format!(
            "suite {} has no http check and no distribution by version: nothing to probe",
            suite.name
        )));
    }
    let junit = junit_path(&args, &suite);
    // What each route's configured delays, timeouts and retries let it take (the
    // simulation on the fixtures as written; names do not change with a prefix).
    let longest: BTreeMap<String, Duration> = routes
        .iter()
        .map(|r| {
            let req = crate::analysis::sim_request(&r.request, suite.ingress.port);
            (r.name.clone(), mesh.simulate(&req).longest_answer)
        })
        .collect();
    let target_kind = crate::run::bring_up::resolve_target(args.target);
    let timeouts = Timeouts::default();
    // Ctrl-C stops the probe only while it runs (a receiver listens); during bring-up
    // it interrupts as in a run.
    let stop = std::sync::Arc::new(watch::channel(false).0);
    let prepared = crate::run::bring_up::prepare(
        target_kind,
        std::slice::from_ref(&args.cluster.istio_version),
    )?;
    let rt = crate::run::session::runtime(timeouts.stop_grace, Some(stop.clone()))?;
    let workdir = crate::run::session::workdir()?;
    let choice = crate::run::bring_up::TargetChoice {
        target: target_kind,
        keep: args.keep,
        local_sidecars: args.local_sidecars,
        control_plane: args.control_plane,
        oracle: &args.oracle,
        cluster: &args.cluster,
        restartable: false,
        istiod: None,
        prepared,
        reach_gateway: true,
        diagnostics: junit
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(format!("{}-probe-diagnostics", suite.name)),
    };
    let running = crate::run::bring_up::start_target(
        &choice,
        &mut suite,
        &fx,
        mesh,
        &timeouts,
        &rt,
        workdir.path(),
    )?;
    // Routes renamed by the existing target's namespace prefix: read them again.
    let mut routes = if args.cluster.namespace_prefix.is_some() {
        self::routes(&suite)
    } else {
        routes
    };
    allow_configured(&mut routes, |name| longest.get(name).copied());
    let target = running.target();
    let ctx = crate::checks::Ctx::new(target.clone(), timeouts.clone(), suite.ingress.port);
    let report = match aim(&ctx, &routes) {
        Ok(aims) => {
            let opts = Options {
                duration: args.duration,
                rate: args.rate,
                drain: drain_for(&routes, timeouts.request),
            };
            eprintln!(
                "probe: {} route(s) at {}/s for {:.1} s through {} (Ctrl-C stops it early)",
                routes.len(),
                args.rate,
                args.duration.as_secs_f64(),
                addresses(&aims)
            );
            let mut live = live::for_stderr();
            let stop = stop.subscribe();
            Ok(rt.block_on(run(&aims, &routes, &opts, stop, live.as_mut())))
        }
        Err(why) => Err(why),
    };
    let health = target.health();
    let mut props = vec![
        ("suite".to_string(), suite.name.clone()),
        ("fixtures.dir".to_string(), fixtures_dir),
        ("fixtures.digest".to_string(), fx.digest.clone()),
        ("probe.rate".to_string(), args.rate.to_string()),
        (
            "probe.duration".to_string(),
            format!("{}s", args.duration.as_secs_f64()),
        ),
    ];
    props.extend(target.properties());
    drop(ctx);
    rt.block_on(target.shutdown());
    drop(target);
    drop(running);
    let report = report.map_err(|why| {
        Error::Target(crate::targets::TargetError::Unavailable {
            target: target_kind_name(target_kind).into(),
            why,
        })
    })?;
    finish(&report, &props, &health, &junit)
}

fn target_kind_name(t: TargetKind) -> &'static str {
    match t {
        TargetKind::Auto | TargetKind::Local => "local",
        TargetKind::Kind => "kind",
        TargetKind::Existing => "existing",
        TargetKind::Sandbox => "sandbox",
    }
}

/// Prints the table, writes the JUnit report and returns the exit code.
fn finish(
    report: &Report,
    props: &[(String, String)],
    health: &[String],
    junit: &std::path::Path,
) -> Result<u8, Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", table(report));
    if !health.is_empty() {
        let _ = writeln!(out, "target: {}", health.join("; "));
    }
    let mut props = props.to_vec();
    props.push(("probe.interrupted".into(), report.interrupted.to_string()));
    let suite = crate::report::SuiteReport {
        name: "probe".into(),
        events: events(report),
        properties: props,
        time: report.elapsed,
        output: String::new(),
    };
    crate::report::finish(&[suite], junit, report.elapsed)?;
    Ok(if !report.passed() {
        exit::CHECK_FAILED
    } else if report.interrupted {
        exit::INTERRUPTED
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(route: usize, answered_ms: u64, ok: bool) -> Sample {
        Sample {
            route,
            sent: Duration::from_millis(answered_ms.saturating_sub(1)),
            answered: Duration::from_millis(answered_ms),
            status: Some(if ok { 200 } else { 503 }),
            error: (!ok).then(|| "expected status 200, got 503".to_string()),
        }
    }

    fn route(name: &str) -> Route {
        Route {
            name: name.into(),
            request: RequestSpec::default(),
            status: 200,
            allow: Duration::ZERO,
        }
    }

    fn route_names(suite: &str) -> Vec<(String, u16)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(suite);
        let suite = crate::suite::load(&path).unwrap();
        routes(&suite)
            .into_iter()
            .map(|r| (r.name, r.status))
            .collect()
    }

    /// A route whose answer the fixtures delay (Istio's fault-injection task: 7 s for
    /// jason, beside pilot's default retries) is allowed that long beyond the request
    /// timeout, as its check is; the others only the retries' back-offs.
    #[test]
    fn each_route_is_allowed_what_its_configured_delays_imply() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/fault-injection-delay.yaml");
        let (suite, _, fx, mesh) =
            crate::run::load_inputs(&path.display().to_string(), None).unwrap();
        let analysed = crate::run::analyse(&suite, &fx, &mesh);
        let mut r = routes(&suite);
        allow_configured(&mut r, |name| {
            analysed.predictions.get(name).map(|p| p.longest_answer)
        });
        let allow = |n: &str| r.iter().find(|x| x.name.ends_with(n)).unwrap().allow;
        assert_eq!(allow("jason-delayed"), Duration::from_millis(7500));
        assert_eq!(allow("others-not-delayed"), Duration::from_millis(500));
        assert_eq!(
            drain_for(&r, Duration::from_secs(10)),
            Duration::from_millis(18_500)
        );
    }

    #[test]
    fn http_checks_and_distributions_by_version_are_probed_not_by_status() {
        let ingress = route_names("suites/ingress.yaml");
        assert!(ingress.contains(&("routing::unmatched-path-404".into(), 404)));
        assert!(
            ingress.contains(&("subsets::split-90-10".into(), 200)),
            "the 90/10 split is a route: {ingress:?}"
        );
        // Its only distribution is by status (half 503): it has no one status to expect.
        let faults = route_names("examples/fault-injection-abort.yaml");
        assert!(
            faults.iter().all(|(n, _)| !n.ends_with("flaky-half-503")),
            "{faults:?}"
        );
        assert_eq!(faults.len(), 2, "{faults:?}");
    }

    #[test]
    fn longest_gap_counts_from_the_start_and_to_the_end() {
        let ms = Duration::from_millis;
        let g = longest_gap(vec![ms(100), ms(200), ms(900), ms(1000)], ms(1100));
        assert_eq!(
            g,
            Gap {
                from: ms(200),
                to: ms(900)
            }
        );
        let g = longest_gap(vec![ms(100)], ms(1000));
        assert_eq!(
            g,
            Gap {
                from: ms(100),
                to: ms(1000)
            }
        );
        let g = longest_gap(vec![], ms(1000));
        assert_eq!(
            g,
            Gap {
                from: ms(0),
                to: ms(1000)
            }
        );
    }

    #[test]
    fn errors_unanswered_requests_and_rate_are_counted() {
        let routes = [route("routing::a"), route("routing::b")];
        let samples = vec![
            s(0, 10, true),
            s(1, 20, false),
            s(0, 30, true),
            s(1, 40, true),
        ];
        // Route b: 3 sent, 2 answered (1 error), 1 unanswered.
        let r = summarize(
            &routes,
            &[2, 3],
            samples,
            Duration::from_secs(1),
            5.0,
            false,
        );
        assert_eq!((r.routes[0].requests, r.routes[0].errors), (2, 0));
        assert_eq!((r.routes[1].requests, r.routes[1].errors), (3, 2));
        assert_eq!(r.routes[1].kinds["status 503"], 1);
        assert_eq!(r.routes[1].kinds["no answer before the probe ended"], 1);
        assert_eq!((r.requests(), r.errors()), (5, 2));
        assert!((r.rate_achieved() - 5.0).abs() < 1e-9);
        assert!(!r.passed());
        let ev = events(&r);
        let names: Vec<&str> = ev.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["routing::a", "routing::b", "summary"]);
        assert!(ev[0].outcome.passed);
        assert!(!ev[1].outcome.passed);
        assert!(
            ev[1]
                .outcome
                .message
                .starts_with("2 of 3 requests failed, first at 0.02 s"),
            "{}",
            ev[1].outcome.message
        );
        assert!(!ev[2].outcome.passed);
    }

    #[test]
    fn a_route_without_requests_fails() {
        let routes = [route("a"), route("b")];
        let r = summarize(
            &routes,
            &[1, 0],
            vec![s(0, 5, true)],
            Duration::from_millis(10),
            1.0,
            false,
        );
        assert_eq!(r.errors(), 0);
        assert!(!r.passed());
        assert!(!events(&r)[1].outcome.passed);
    }

    #[test]
    fn the_expected_status_is_success_even_when_it_is_404() {
        let r = Route {
            status: 404,
            ..route("routing::unmatched")
        };
        let x = |status: Option<u16>, error: Option<&str>| crate::checks::Exchange {
            status,
            headers: Vec::new(),
            echo: None,
            body: String::new(),
            error: error.map(str::to_string),
            transcript: String::new(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(judge(&r, &x(Some(404), None)), None);
        assert!(judge(&r, &x(Some(200), None))
            .unwrap()
            .starts_with("expected status 404, got 200"));
        assert_eq!(
            judge(&r, &x(None, Some("cannot connect: refused"))).as_deref(),
            Some("cannot connect: refused")
        );
    }

    #[test]
    fn rate_must_be_positive() {
        assert!(parse_rate("50").is_ok());
        assert!(parse_rate("0.5").is_ok());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
