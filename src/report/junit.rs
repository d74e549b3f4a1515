//! The JUnit report: one testsuite per suite, classname = check group, name = check;
//! a failure carries the one-line message and a body with expected vs observed;
//! system-out holds the last attempt's request/response transcript; properties name
//! the target, the Envoy version and the fixtures digest.

use super::CheckEvent;
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};
use std::path::Path;
use std::time::Duration;

pub fn build(
    suite: &str,
    events: &[CheckEvent],
    properties: &[(String, String)],
    total: Duration,
) -> Report {
    let mut ts = TestSuite::new(suite);
    for (k, v) in properties {
        ts.add_property(Property::new(k.as_str(), v.as_str()));
    }
    for e in events {
        let status = if e.outcome.passed {
            let mut s = TestCaseStatus::success();
            if e.outcome.flaky {
                // Failed before it passed: a flaky run, reported as such.
                let mut rerun = TestRerun::new(NonSuccessKind::Failure);
                rerun.set_message("failed at least once before 3 consecutive successes");
                s.add_rerun(rerun);
            }
            s
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(e.outcome.message.as_str());
            s.set_type(e.kind.as_str());
            s.set_description(if e.outcome.detail.is_empty() {
                e.outcome.message.clone()
            } else {
                format!("{}\n\n{}", e.outcome.message, e.outcome.detail)
            });
            s
        };
        let mut tc = TestCase::new(e.name.as_str(), status);
        tc.set_classname(e.group.as_str());
        tc.set_time(e.duration);
        tc.add_property(Property::new("kind", e.kind.as_str()));
        tc.add_property(Property::new("attempts", e.outcome.attempts.to_string()));
        let mut out = String::new();
        if e.outcome.passed && !e.outcome.message.is_empty() {
            out.push_str(&e.outcome.message);
            out.push('\n');
            if !e.outcome.detail.is_empty() {
                out.push_str(&e.outcome.detail);
                out.push('\n');
            }
        }
        if !e.outcome.transcript.is_empty() {
            out.push_str("--- last attempt ---\n");
            out.push_str(&e.outcome.transcript);
        }
        if !out.is_empty() {
            tc.set_system_out(out);
        }
        ts.add_test_case(tc);
    }
    ts.set_time(total);
    let mut report = Report::new("meshcheck");
    report.add_test_suite(ts);
    report.set_time(total);
    report
}

pub fn write(report: &Report, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let text = report
        .to_string()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension("xml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
