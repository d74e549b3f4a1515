//! Reporters: sinks of the runner's events. The console is libtest-mimic's (output
//! like `cargo test`); the JUnit sink builds one `quick_junit::Report` from the events
//! and writes it once at the end of the run. `compare` reads two JUnit reports back and
//! lists the testcases whose outcome changed.

pub mod compare;
pub mod junit;

use crate::checks::Outcome;
use std::time::Duration;

/// What the runner reports about one check.
#[derive(Debug, Clone)]
pub struct CheckEvent {
    /// The report's classname (the check group).
    pub group: String,
    pub name: String,
    pub kind: String,
    pub outcome: Outcome,
    pub duration: Duration,
}

/// One testsuite of a report: a run's checks, or one phase of an upgrade.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    pub name: String,
    pub events: Vec<CheckEvent>,
    pub properties: Vec<(String, String)>,
    pub time: Duration,
    /// The testsuite's system-out (an upgrade's configuration difference).
    pub output: String,
}

impl SuiteReport {
    pub fn failed(&self) -> usize {
        self.events.iter().filter(|e| !e.outcome.passed).count()
    }

    /// `ingress: 12 passed, 1 failed (1 flaky)`.
    pub fn summary(&self) -> String {
        let failed = self.failed();
        let flaky = self.events.iter().filter(|e| e.outcome.flaky).count();
        let mut s = format!(
            "{}: {} passed, {failed} failed",
            self.name,
            self.events.len() - failed
        );
        if flaky > 0 {
            s.push_str(&format!(" ({flaky} flaky)"));
        }
        s
    }
}

/// The end of every command that reports: writes the JUnit file (all testsuites) and
/// prints one summary line per testsuite and where the report is.
pub fn finish(
    suites: &[SuiteReport],
    path: &std::path::Path,
    total: Duration,
) -> Result<(), crate::error::Error> {
    let report = junit::build_many(suites, total);
    junit::write(&report, path).map_err(|source| crate::error::Error::Junit {
        path: path.to_path_buf(),
        source,
    })?;
    for s in suites {
        eprintln!("{}", s.summary());
    }
    eprintln!("JUnit report: {}", path.display());
    Ok(())
}
