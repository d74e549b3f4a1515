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
