//! The runner: turns a suite's checks into libtest-mimic trials (filtering, --list,
//! console output like `cargo test`), runs each against the target and emits one
//! [`CheckEvent`] per check to the sinks.

use crate::analysis::{self, Finding, Severity};
use crate::checks::{self, Ctx};
use crate::istio::Prediction;
use crate::report::CheckEvent;
use crate::suite::{CheckKind, CheckSpec, Suite};
use libtest_mimic::{Arguments, Conclusion, Failed, Trial};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Collects events for the JUnit sink.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<CheckEvent>>>);

impl Events {
    pub fn push(&self, e: CheckEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
    /// Events in report order: static analyses first, then the checks in suite order.
    pub fn sorted(&self, suite: &Suite) -> Vec<CheckEvent> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let statics = analysis::testcase_names(suite);
        let pos = |e: &CheckEvent| {
            if e.group == "static" {
                (
                    0,
                    statics
                        .iter()
                        .position(|n| *n == e.name)
                        .unwrap_or(usize::MAX),
                )
            } else {
                (
                    1,
                    suite
                        .checks
                        .iter()
                        .position(|c| c.group == e.group && c.name == e.name)
                        .unwrap_or(usize::MAX),
                )
            }
        };
        v.sort_by_key(pos);
        v
    }
}

/// Trials that only carry names (for `--list`).
pub fn list_trials(suite: &Suite) -> Vec<Trial> {
    analysis::testcase_names(suite)
        .into_iter()
        .map(|n| Trial::test(format!("static::{n}"), || Ok(())).with_kind("static"))
        .chain(
            suite
                .checks
                .iter()
                .map(|c| Trial::test(c.full_name(), || Ok(())).with_kind(c.kind.label())),
        )
        .collect()
}

fn failure_text(o: &checks::Outcome) -> String {
    let mut s = o.message.clone();
    if !o.detail.is_empty() {
        s.push_str("\n\n");
        s.push_str(&o.detail);
    }
    s
}

/// The static testcases (`static::<analysis>`): each fails when its analysis has an
/// error finding; warnings and infos are listed in its output.
pub fn static_outcomes(suite: &Suite, findings: &[Finding]) -> Vec<(String, checks::Outcome)> {
    let mut names = analysis::testcase_names(suite);
    if findings
        .iter()
        .any(|f| f.analysis == crate::oracle::compare::ANALYSIS)
    {
        names.push(crate::oracle::compare::ANALYSIS.to_string());
    }
    names
        .into_iter()
        .map(|name| {
            let mine: Vec<&Finding> = findings.iter().filter(|f| f.analysis == name).collect();
            let errors = mine
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let text: Vec<String> = mine.iter().map(|f| f.to_string()).collect();
            let outcome = if errors > 0 {
                let first = mine
                    .iter()
                    .find(|f| f.severity == Severity::Error)
                    .map(|f| format!("{}: {}: {}", f.at, f.object, f.message))
                    .unwrap_or_default();
                checks::Outcome::fail(
                    if errors > 1 {
                        format!("{first} (and {} more)", errors - 1)
                    } else {
                        first
                    },
                    text.join("\n"),
                )
            } else {
                let mut o = checks::Outcome::pass(if mine.is_empty() {
                    "no finding".to_string()
                } else {
                    format!("{} warning(s)/info(s)", mine.len())
                });
                o.detail = text.join("\n");
                o
            };
            (name, outcome)
        })
        .collect()
}

/// Trials reporting precomputed static outcomes.
pub fn static_trials(outcomes: Vec<(String, checks::Outcome)>, events: &Events) -> Vec<Trial> {
    outcomes
        .into_iter()
        .map(|(name, outcome)| {
            let events = events.clone();
            let full = format!("static::{name}");
            Trial::test(full, move || {
                let failed = !outcome.passed;
                let text = failure_text(&outcome);
                events.push(CheckEvent {
                    group: "static".into(),
                    name,
                    kind: "static".into(),
                    outcome,
                    duration: std::time::Duration::ZERO,
                });
                if failed {
                    Err(Failed::from(text))
                } else {
                    Ok(())
                }
            })
            .with_kind("static")
        })
        .collect()
}

/// Traffic trials for the checks of `suite`. `predictions` maps a check's full name to
/// what the model predicts, shown beside a failure.
pub fn traffic_trials(
    suite: &Suite,
    ctx: Arc<Ctx>,
    rt: &tokio::runtime::Handle,
    events: &Events,
    predictions: &std::collections::BTreeMap<String, Prediction>,
) -> Vec<Trial> {
    longest_first(&suite.checks)
        .into_iter()
        .map(|c| {
            let check: Arc<CheckSpec> = Arc::new(c.clone());
            let prediction = predictions.get(&c.full_name()).cloned();
            let step_predictions: Vec<Option<Prediction>> = match &c.kind {
                crate::suite::CheckKind::Steps(steps) => steps
                    .iter()
                    .map(|s| predictions.get(&c.step_id(s)).cloned())
                    .collect(),
                _ => Vec::new(),
            };
            // A request may take what the configuration makes it take, and more.
            let ctx = match &prediction {
                Some(p) => Arc::new(ctx.allowing(p.longest_answer)),
                None => ctx.clone(),
            };
            let rt = rt.clone();
            let events = events.clone();
            Trial::test(c.full_name(), move || {
                let started = Instant::now();
                let mut outcome =
                    rt.block_on(checks::run_predicted(&ctx, &check, &step_predictions));
                if let (false, Some(p)) = (outcome.passed, &prediction) {
                    outcome
                        .message
                        .push_str(&format!(" [predicted {}]", p.summary()));
                    outcome.detail.push_str(&format!(
                        "\npredicted from the fixtures:\n  {}",
                        p.explain()
                    ));
                }
                let failed = !outcome.passed;
                let text = failure_text(&outcome);
                events.push(CheckEvent {
                    group: check.group.clone(),
                    name: check.name.clone(),
                    kind: check.kind.label().into(),
                    outcome,
                    duration: started.elapsed(),
                });
                if failed {
                    Err(Failed::from(text))
                } else {
                    Ok(())
                }
            })
            .with_kind(c.kind.label())
        })
        .collect()
}

/// The checks, those that send the most requests first (stable otherwise): the
/// trials run a few at a time, and the longest should not wait for a free slot behind
/// quick ones (the report keeps the suite's order: [`Events::sorted`]).
fn longest_first(checks: &[CheckSpec]) -> Vec<&CheckSpec> {
    let mut v: Vec<&CheckSpec> = checks.iter().collect();
    v.sort_by_key(|c| std::cmp::Reverse(requests_sent(c)));
    v
}

/// The requests a passing check sends at least (ports and sidecars checks: 0, they
/// take about as long as a few requests).
fn requests_sent(c: &CheckSpec) -> u64 {
    match &c.kind {
        CheckKind::Distribution(d) => u64::from(d.requests),
        CheckKind::Http(h) => http_requests(h),
        // One after another: the sum of its steps.
        CheckKind::Steps(steps) => steps.iter().map(|s| http_requests(&s.http)).sum(),
        CheckKind::Ports(_) | CheckKind::Sidecars(_) | CheckKind::Status(_) => 0,
    }
}

/// The requests a passing http check sends at least.
fn http_requests(h: &crate::suite::HttpCheck) -> u64 {
    let repeat = h.repeat.max(1);
    u64::from(repeat * checks::http::rounds_needed(repeat))
}

/// Runs `trials` with libtest-mimic's console and filtering.
pub fn run(args: &Arguments, trials: Vec<Trial>) -> Conclusion {
    libtest_mimic::run(args, trials)
}

/// Whether libtest's filters (`FILTER`, `--exact`, `--skip`) select the check `name`,
/// as libtest-mimic decides it (a substring, or the whole name with `--exact`).
pub fn selected(args: &libtest_mimic::Arguments, name: &str) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}

/// Whether a check the filters select sends traffic to the gateway (http,
/// distribution, ports, sidecars `via`): a cluster target then has to reach it.
pub fn sends_traffic(suite: &crate::suite::Suite, args: &libtest_mimic::Arguments) -> bool {
    use crate::suite::CheckKind;
    suite.checks.iter().any(|c| {
        let traffic = match &c.kind {
            CheckKind::Sidecars(s) => !s.via.is_empty(),
            CheckKind::Status(_) => false,
            CheckKind::Http(_)
            | CheckKind::Distribution(_)
            | CheckKind::Ports(_)
            | CheckKind::Steps(_) => true,
        };
        traffic && selected(args, &c.full_name())
    })
}

#[cfg(test)]
mod selection_tests {
    use super::*;

    fn args(filter: Option<&str>, exact: bool, skip: &[&str]) -> libtest_mimic::Arguments {
        libtest_mimic::Arguments {
            filter: filter.map(str::to_string),
            exact,
            skip: skip.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn selection_follows_libtests_filters() {
        assert!(selected(&args(None, false, &[]), "routing::authz"));
        assert!(selected(
            &args(Some("routing"), false, &[]),
            "routing::authz"
        ));
        assert!(!selected(
            &args(Some("routing"), true, &[]),
            "routing::authz"
        ));
        assert!(selected(
            &args(Some("routing::authz"), true, &[]),
            "routing::authz"
        ));
        assert!(!selected(&args(None, false, &["authz"]), "routing::authz"));
    }

    #[test]
    fn only_the_sidecar_count_sends_no_traffic() {
        let suite = crate::suite::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/ingress.yaml"),
        )
        .unwrap();
        assert!(sends_traffic(&suite, &args(None, false, &[])));
        assert!(!sends_traffic(
            &suite,
            &args(Some("sidecars::injected"), true, &[])
        ));
        assert!(sends_traffic(&suite, &args(Some("sidecars::"), false, &[])));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_that_send_the_most_requests_start_first() {
        let suite = crate::suite::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/ingress.yaml"),
        )
        .unwrap();
        let order: Vec<String> = longest_first(&suite.checks)
            .iter()
            .map(|c| c.full_name())
            .collect();
        // 1000 requests, then 50 (one attempt of repeat 50), then the 3-request ones in
        // suite order, then ports and sidecars (the plaintext check last: it asks the
        // pods themselves).
        assert_eq!(order[0], "subsets::split-90-10");
        assert_eq!(order[1], "subsets::header-pins-v2");
        assert_eq!(order[2], "routing::atlas-ui");
        assert_eq!(
            &order[order.len() - 3..],
            [
                "sidecars::injected",
                "sidecars::mtls-at-backends",
                "security::mtls-strict"
            ]
        );
    }
}
