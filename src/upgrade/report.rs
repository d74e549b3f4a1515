//! The upgrade's own testsuite and the prober it keeps running across the steps.

use super::{Context, Outcome};
use crate::checks::Outcome as Verdict;
use crate::probe::{self, Latest};
use crate::report::compare::{self, Case};
use crate::report::{CheckEvent, SuiteReport};
use std::time::Duration;
use tokio::sync::watch;

/// The group (JUnit classname) of the upgrade's testcases.
const GROUP: &str = "upgrade";

/// Continuous traffic over the suite's http and distribution-by-version requests
/// ([`probe::routes`]), on a thread of its own, from
/// phase `before` to the end.
pub(super) struct Prober {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<probe::Report>,
    latest: Latest,
}

impl Prober {
    pub(super) fn start(ctx: &Context<'_>) -> Result<Prober, String> {
        let checks = crate::checks::Ctx::new(
            ctx.target.clone(),
            ctx.timeouts.clone(),
            ctx.suite.ingress.port,
        );
        let mut routes = probe::routes(ctx.suite);
        probe::allow_configured(&mut routes, |name| {
            ctx.analysed.predictions.get(name).map(|p| p.longest_answer)
        });
        let aims = probe::aim(&checks, &routes)?;
        let opts = probe::Options {
            // Until told to stop; a day bounds it should the stop never come.
            duration: Duration::from_secs(24 * 3600),
            rate: ctx.rate,
            drain: probe::drain_for(&routes, ctx.timeouts.request),
        };
        let (stop, stopped) = watch::channel(false);
        let latest = Latest::default();
        let mut live = latest.clone();
        let handle = ctx.rt.handle().clone();
        eprintln!(
            "upgrade: prober: {} route(s) at {}/s through {}",
            routes.len(),
            ctx.rate,
            probe::addresses(&aims)
        );
        let thread = std::thread::spawn(move || {
            handle.block_on(probe::run(&aims, &routes, &opts, stopped, &mut live))
        });
        Ok(Prober {
            stop,
            thread,
            latest,
        })
    }

    /// Waits (at most `within`) until `requests` answers came back, so that the
    /// first step happens under traffic.
    pub(super) fn warm_up(&self, requests: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.latest.answered() < requests && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prints the traffic so far.
    pub(super) fn show(&self) {
        let (requests, errors) = self.latest.get();
        eprintln!("upgrade: traffic so far: {requests} requests, {errors} error(s)");
    }

    /// Stops sending, waits for the answers in flight, and returns what it saw.
    pub(super) fn stop(self) -> probe::Report {
        let _ = self.stop.send(true);
        let report = self.thread.join().unwrap_or_else(|_| probe::Report {
            routes: Vec::new(),
            elapsed: Duration::ZERO,
            rate_asked: 0.0,
            interrupted: true,
            samples: Vec::new(),
        });
        // Stopped because the upgrade ended, not by Ctrl-C.
        probe::Report {
            interrupted: false,
            ..report
        }
    }
}

fn event(name: &str, outcome: Verdict, duration: Duration) -> CheckEvent {
    CheckEvent {
        group: GROUP.into(),
        name: name.into(),
        kind: GROUP.into(),
        outcome,
        duration,
    }
}

/// `upgrade::traffic-continuity`: passes when the errors stay within the budget and
/// every route was probed.
pub(super) fn continuity(p: &probe::Report, budget: usize) -> CheckEvent {
    let gap = p
        .routes
        .iter()
        .max_by_key(|r| r.longest_gap.duration())
        .map(|r| {
            format!(
                "; longest gap without success {:.2} s ({})",
                r.longest_gap.duration().as_secs_f64(),
                r.name
            )
        })
        .unwrap_or_default();
    let (requests, errors) = (p.requests(), p.errors());
    let silent: Vec<&str> = p
        .routes
        .iter()
        .filter(|r| r.requests == 0)
        .map(|r| r.name.as_str())
        .collect();
    let outcome = if p.routes.is_empty() {
        Verdict::fail("the prober sent nothing", "")
    } else if errors > budget {
        Verdict::fail(
            format!("{errors} traffic error(s) during the upgrade, over the budget of {budget} ({requests} requests{gap})"),
            probe::table(p),
        )
    } else if !silent.is_empty() {
        Verdict::fail(
            format!(
                "no request reached {} (the upgrade was too short for the rate)",
                silent.join(", ")
            ),
            probe::table(p),
        )
    } else {
        Verdict {
            detail: probe::table(p),
            ..Verdict::pass(format!(
                "{requests} requests, {errors} error(s) (budget {budget}){gap}"
            ))
        }
    };
    event(
        "traffic-continuity",
        Verdict {
            attempts: requests as u32,
            ..outcome
        },
        p.elapsed,
    )
}

/// A phase's testcases as `compare` reads them (the static ones left out: they run
/// only before).
fn cases(phase: &SuiteReport) -> Vec<Case> {
    phase
        .events
        .iter()
        .filter(|e| e.group != "static")
        .map(|e| Case {
            testsuite: String::new(),
            classname: e.group.clone(),
            name: e.name.clone(),
            verdict: if e.outcome.passed {
                compare::Verdict::Passed
            } else {
                compare::Verdict::Failed
            },
            message: e.outcome.message.clone(),
        })
        .collect()
}

/// `upgrade::behaviour <a>-><b>` for each pair of consecutive phases: fails on a
/// regression (passed in `a`, failed in `b`).
fn behaviour(a: &SuiteReport, b: &SuiteReport) -> CheckEvent {
    let c = compare::compare(&cases(a), &cases(b));
    let table = compare::text_table(&c);
    let summary = compare::summary(&c);
    let outcome = if c.has_regression() {
        Verdict::fail(format!("{} -> {}: {summary}", a.name, b.name), table)
    } else {
        Verdict {
            detail: table,
            ..Verdict::pass(format!("{} -> {}: {summary}", a.name, b.name))
        }
    };
    event(
        &format!("behaviour {}->{}", a.name, b.name),
        outcome,
        Duration::ZERO,
    )
}

/// The console's comparison of the phases.
pub(super) fn comparison_text(phases: &[SuiteReport]) -> String {
    let mut out = String::new();
    for w in phases.windows(2) {
        let c = compare::compare(&cases(&w[0]), &cases(&w[1]));
        out.push_str(&format!(
            "{} -> {}: {}\n",
            w[0].name,
            w[1].name,
            compare::summary(&c)
        ));
        if !c.rows.is_empty() {
            out.push_str(&compare::text_table(&c));
        }
    }
    out
}

/// The `upgrade` testsuite.
pub(super) fn upgrade_suite(
    outcome: &Outcome,
    budget: usize,
    properties: Vec<(String, String)>,
    config_diff: String,
) -> SuiteReport {
    let mut events: Vec<CheckEvent> = outcome
        .prechecks
        .iter()
        .map(|p| {
            let v = if p.passed {
                Verdict {
                    detail: p.output.clone(),
                    ..Verdict::pass(p.message.clone())
                }
            } else {
                Verdict::fail(p.message.clone(), p.output.clone())
            };
            event(&p.name, v, Duration::ZERO)
        })
        .collect();
    if let Some(p) = &outcome.probe {
        events.push(continuity(p, budget));
    }
    for w in outcome.phases.windows(2) {
        events.push(behaviour(&w[0], &w[1]));
    }
    if let Some((step, why)) = &outcome.failed_step {
        events.push(event(
            &format!("step {step}"),
            Verdict::fail(format!("the upgrade stopped at `{step}`: {why}"), ""),
            Duration::ZERO,
        ));
    }
    let time = outcome.probe.as_ref().map_or(Duration::ZERO, |p| p.elapsed);
    SuiteReport {
        name: GROUP.into(),
        events,
        properties,
        time,
        output: config_diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Gap, RouteReport};

    fn probe_report(errors: usize) -> probe::Report {
        probe::Report {
            routes: vec![RouteReport {
                name: "routing::atlas-ui".into(),
                status: 200,
                requests: 100,
                errors,
                longest_gap: Gap {
                    from: Duration::from_millis(100),
                    to: Duration::from_millis(900),
                },
                kinds: Default::default(),
                first_errors: Vec::new(),
            }],
            elapsed: Duration::from_secs(5),
            rate_asked: 20.0,
            interrupted: false,
            samples: Vec::new(),
        }
    }

    fn phase(name: &str, passed: &[(&str, bool)]) -> SuiteReport {
        SuiteReport {
            name: name.into(),
            events: passed
                .iter()
                .map(|(n, ok)| CheckEvent {
                    group: "routing".into(),
                    name: n.to_string(),
                    kind: "http".into(),
                    outcome: if *ok {
                        Verdict::pass("ok")
                    } else {
                        Verdict::fail("expected status 200, got 503", "")
                    },
                    duration: Duration::ZERO,
                })
                .collect(),
            properties: Vec::new(),
            time: Duration::ZERO,
            output: String::new(),
        }
    }

    #[test]
    fn continuity_fails_only_over_the_budget() {
        let over = continuity(&probe_report(3), 2);
        assert!(!over.outcome.passed);
        assert!(
            over.outcome
                .message
                .starts_with("3 traffic error(s) during the upgrade, over the budget of 2"),
            "{}",
            over.outcome.message
        );
        assert!(over
            .outcome
            .message
            .contains("longest gap without success 0.80 s (routing::atlas-ui)"));
        assert!(continuity(&probe_report(2), 2).outcome.passed);
        assert!(continuity(&probe_report(0), 0).outcome.passed);
    }

    #[test]
    fn a_check_that_passed_before_and_fails_in_skew_is_a_regression() {
        let before = phase("before", &[("atlas-ui", true), ("authz", true)]);
        let skew = phase("skew", &[("atlas-ui", false), ("authz", true)]);
        let e = behaviour(&before, &skew);
        assert_eq!(e.name, "behaviour before->skew");
        assert!(!e.outcome.passed);
        assert!(
            e.outcome
                .message
                .starts_with("before -> skew: 1 regression(s)"),
            "{}",
            e.outcome.message
        );
        assert!(
            e.outcome.detail.contains("routing::atlas-ui"),
            "{}",
            e.outcome.detail
        );
        // A fix is not a failure.
        assert!(behaviour(&skew, &before).outcome.passed);
    }

    #[test]
    fn a_failed_step_is_a_failed_testcase_naming_it() {
        let outcome = Outcome {
            failed_step: Some(("control plane to the new version".into(), "rejected".into())),
            ..Outcome::default()
        };
        let s = upgrade_suite(&outcome, 0, Vec::new(), String::new());
        let step = s
            .events
            .iter()
            .find(|e| e.name.starts_with("step "))
            .unwrap();
        assert!(!step.outcome.passed);
        assert!(step
            .outcome
            .message
            .contains("control plane to the new version"));
    }
}
