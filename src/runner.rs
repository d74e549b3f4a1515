//! The runner: turns a suite's checks into libtest-mimic trials (filtering, --list,
//! console output like `cargo test`), runs each against the target and emits one
//! [`CheckEvent`] per check to the sinks.

use crate::checks::{self, Ctx};
use crate::report::CheckEvent;
use crate::suite::{CheckSpec, Suite};
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
    /// Events in suite order.
    pub fn sorted(&self, suite: &Suite) -> Vec<CheckEvent> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pos = |e: &CheckEvent| {
            suite
                .checks
                .iter()
                .position(|c| c.group == e.group && c.name == e.name)
                .unwrap_or(usize::MAX)
        };
        v.sort_by_key(pos);
        v
    }
}

/// Trials that only carry names (for `--list`).
pub fn list_trials(suite: &Suite) -> Vec<Trial> {
    suite
        .checks
        .iter()
        .map(|c| Trial::test(c.full_name(), || Ok(())).with_kind(c.kind.label()))
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

/// Runs the selected checks of `suite`.
pub fn run(
    suite: &Suite,
    args: &Arguments,
    ctx: Arc<Ctx>,
    rt: &tokio::runtime::Handle,
    events: &Events,
) -> Conclusion {
    let trials = suite
        .checks
        .iter()
        .map(|c| {
            let check: Arc<CheckSpec> = Arc::new(c.clone());
            let ctx = ctx.clone();
            let rt = rt.clone();
            let events = events.clone();
            Trial::test(c.full_name(), move || {
                let started = Instant::now();
                let outcome = rt.block_on(checks::run(&ctx, &check));
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
        .collect();
    libtest_mimic::run(args, trials)
}
