//! One pass of a suite against a running target: its static testcases and every
//! traffic check, through libtest-mimic (console output like `cargo test`), then the
//! target's diagnostics attached to what failed. A plain run makes one pass; an
//! upgrade makes one per phase.

use super::Analysed;
use crate::checks::Ctx;
use crate::report::CheckEvent;
use crate::runner::{self, Events};
use crate::suite::Suite;
use crate::targets::Target;
use crate::timeouts::Timeouts;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What one pass produced, in report order.
pub struct Pass {
    pub failed: bool,
    pub events: Vec<CheckEvent>,
}

/// The libtest arguments of a pass: four checks at a time unless told otherwise.
pub fn test_args(args: &libtest_mimic::Arguments) -> libtest_mimic::Arguments {
    let mut a = args.clone();
    if a.test_threads.is_none() {
        a.test_threads = Some(4);
    }
    a
}

/// Runs the suite's checks (and, with `statics`, its static testcases) against
/// `target`.
pub fn run_checks(
    args: &libtest_mimic::Arguments,
    suite: &Suite,
    analysed: &Analysed,
    target: Arc<dyn Target>,
    timeouts: &Timeouts,
    rt: &tokio::runtime::Runtime,
    statics: bool,
) -> Pass {
    let events = Events::default();
    let ctx = Arc::new(Ctx::new(target, timeouts.clone(), suite.ingress.port));
    let mut trials = if statics {
        runner::static_trials(analysed.static_outcomes.clone(), &events)
    } else {
        Vec::new()
    };
    trials.extend(runner::traffic_trials(
        suite,
        ctx,
        rt.handle(),
        &events,
        &analysed.predictions,
    ));
    let conclusion = runner::run(&test_args(args), trials);
    Pass {
        failed: conclusion.has_failed(),
        events: events.sorted(suite),
    }
}

/// A failed traffic check: the target's diagnostics are collected into `dir` and
/// listed in every failed traffic check's transcript.
pub fn attach_diagnostics(
    events: &mut [CheckEvent],
    target: &dyn Target,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
) {
    let failed = |e: &CheckEvent| !e.outcome.passed && e.group != "static";
    if !events.iter().any(failed) {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    let files = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), target.diagnostics(dir))
            .await
            .unwrap_or_default()
    });
    if files.is_empty() {
        return;
    }
    eprintln!("diagnostics: {} file(s) in {}", files.len(), dir.display());
    let list: String = files
        .iter()
        .map(|f| format!("  {}\n", f.display()))
        .collect();
    for e in events.iter_mut().filter(|e| failed(e)) {
        e.outcome
            .transcript
            .push_str(&format!("--- diagnostics ---\n{list}"));
    }
}
