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
    let mut report = Report::new("meshcheck");
    report.add_test_suite(testsuite(suite, events, properties, total));
    report.set_time(total);
    report
}

/// A report of several testsuites (an upgrade's phases).
pub fn build_many(suites: &[super::SuiteReport], total: Duration) -> Report {
    let mut report = Report::new("meshcheck");
    for s in suites {
        let mut ts = testsuite(&s.name, &s.events, &s.properties, s.time);
        if !s.output.is_empty() {
            ts.set_system_out(s.output.as_str());
        }
        report.add_test_suite(ts);
    }
    report.set_time(total);
    report
}

fn testsuite(
    suite: &str,
    events: &[CheckEvent],
    properties: &[(String, String)],
    total: Duration,
) -> TestSuite {
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
    ts
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
    // A unique temporary file, renamed into place: a reader (or a concurrent run
    // writing the same path) never sees a half-written report.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Outcome;

    #[test]
    fn report_shape_consumers_key_on() {
        let ok = CheckEvent {
            group: "routing".into(),
            name: "atlas-ui".into(),
            kind: "http".into(),
            outcome: Outcome {
                transcript: "> GET /atlas-ui HTTP/1.1\n< HTTP/1.1 200 OK\n".into(),
                attempts: 3,
                ..Outcome::pass("3 consecutive successes")
            },
            duration: Duration::from_millis(12),
        };
        let bad = CheckEvent {
            group: "ports".into(),
            name: "only-http-nodeport".into(),
            kind: "ports".into(),
            outcome: Outcome::fail(
                "unexpected open port(s) on 127.1.2.1: 32143",
                "allowed: 30080 (Service port 80)\nopen: 30080, 32143",
            ),
            duration: Duration::from_millis(40),
        };
        let props = vec![
            ("target".to_string(), "local".to_string()),
            ("envoy.version".to_string(), "1.40.0".to_string()),
        ];
        let xml = build("ingress", &[ok, bad], &props, Duration::from_secs(1))
            .to_string()
            .unwrap();
        assert!(
            xml.contains(
                r#"<testsuite name="ingress" tests="2" skipped="0" errors="0" failures="1""#
            ),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="envoy.version" value="1.40.0"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="atlas-ui" classname="routing""#),
            "{xml}"
        );
        assert!(
            xml.contains("&gt; GET /atlas-ui HTTP/1.1"),
            "transcript in system-out: {xml}"
        );
        assert!(
            xml.contains(
                r#"<failure message="unexpected open port(s) on 127.1.2.1: 32143" type="ports">"#
            ),
            "{xml}"
        );
        assert!(
            xml.contains("allowed: 30080 (Service port 80)"),
            "expected vs observed in the body: {xml}"
        );
    }
}
