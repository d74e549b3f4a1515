//! How `meshcheck equivalent` reports: a block per request whose answers differ
//! (the request, both sides' answers and decision paths), a count per source and in
//! all; and, with `--junit`, one testcase per request and source.

use super::compare::{Comparison, Request, Side};
use crate::checks::Outcome;
use crate::report::{CheckEvent, SuiteReport};
use std::collections::BTreeSet;
use std::time::Duration;

/// The block printed for a request whose answers differ: `routing::x (simulation)
/// differs in path: GET http://node/x (port 80)`, then each side.
pub fn difference(c: &Comparison, r: &Request) -> String {
    format!(
        "{} ({}) differs in {}: {}\n{}{}",
        r.id,
        c.source,
        c.differing.join(", "),
        r.describe(),
        side("OLD", &c.old),
        side("NEW", &c.new)
    )
}

/// `  OLD: [100%] status 200, ...` with the decision path under it.
fn side(label: &str, s: &Side) -> String {
    let mut out = String::new();
    let lines = s.answers.lines();
    let lines = if lines.is_empty() {
        vec!["no answer".to_string()]
    } else {
        lines
    };
    for (i, l) in lines.iter().enumerate() {
        let head = if i == 0 {
            format!("{label}:")
        } else {
            " ".repeat(label.len() + 1)
        };
        out.push_str(&format!("  {head} {l}\n"));
    }
    out.push_str("    decision path:\n");
    for l in s.decision_path.lines() {
        out.push_str(&format!("      {}\n", l.trim_start()));
    }
    out
}

/// `simulation: 8 requests, 1 differ`, for the comparisons of one source.
pub fn source_count(source: &str, comparisons: &[Comparison]) -> String {
    let mine: Vec<&Comparison> = comparisons.iter().filter(|c| c.source == source).collect();
    let differ = mine.iter().filter(|c| c.differs()).count();
    format!("{source}: {} requests, {differ} differ", mine.len())
}

/// Requests that differ by any source.
pub fn differing_requests(comparisons: &[Comparison]) -> usize {
    comparisons
        .iter()
        .filter(|c| c.differs())
        .map(|c| c.request)
        .collect::<BTreeSet<_>>()
        .len()
}

/// The sources compared, in order.
pub fn sources(comparisons: &[Comparison]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in comparisons {
        if !out.contains(&c.source) {
            out.push(c.source.clone());
        }
    }
    out
}

/// The JUnit testsuite: one testcase per request and source (classname: the source),
/// failing when the answers differ.
pub fn junit_suite(
    comparisons: &[Comparison],
    requests: &[Request],
    properties: Vec<(String, String)>,
    time: Duration,
) -> SuiteReport {
    let events = comparisons
        .iter()
        .map(|c| {
            let r = &requests[c.request];
            let outcome = if c.differs() {
                Outcome::fail(
                    format!("OLD and NEW differ in {}", c.differing.join(", ")),
                    difference(c, r),
                )
            } else {
                Outcome::pass(format!("OLD and NEW answer {} alike", r.describe()))
            };
            CheckEvent {
                group: c.source.clone(),
                name: r.id.clone(),
                kind: "equivalent".into(),
                outcome,
                duration: Duration::ZERO,
            }
        })
        .collect();
    SuiteReport {
        name: "equivalent".into(),
        events,
        properties,
        time,
        output: String::new(),
    }
}
