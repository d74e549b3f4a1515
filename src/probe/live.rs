//! The probe's live display: one indicatif line per route while stderr is a terminal,
//! otherwise a plain line of counts every few seconds (CI logs).

use super::{Counts, Route};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Where the probe shows its counts as they change.
pub trait Live: Send {
    /// How often [`Live::show`] is called.
    fn period(&self) -> Duration;
    /// Counts per route (same order as `routes`) after `elapsed`.
    fn show(&mut self, routes: &[Route], counts: &[Counts], elapsed: Duration);
    /// The probe stopped sending.
    fn finish(&mut self, routes: &[Route], counts: &[Counts], elapsed: Duration);
}

/// The display for this process: bars on a terminal, plain lines otherwise.
pub fn for_stderr() -> Box<dyn Live> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(Lines {
            every: Duration::from_secs(5),
        })
    }
}

/// Shows nothing (library callers, tests).
pub struct Quiet;

impl Live for Quiet {
    fn period(&self) -> Duration {
        Duration::from_secs(3600)
    }
    fn show(&mut self, _: &[Route], _: &[Counts], _: Duration) {}
    fn finish(&mut self, _: &[Route], _: &[Counts], _: Duration) {}
}

/// `probe 5.0s: 250 requests, 0 errors | routing::atlas-ui 42/0 | ...` on stderr.
pub struct Lines {
    pub every: Duration,
}

/// The plain line for `counts` (route: requests/errors).
pub fn line(routes: &[Route], counts: &[Counts], elapsed: Duration) -> String {
    let requests: usize = counts.iter().map(|c| c.requests).sum();
    let errors: usize = counts.iter().map(|c| c.errors).sum();
    let per: Vec<String> = routes
        .iter()
        .zip(counts)
        .map(|(r, c)| format!("{} {}/{}", r.name, c.requests, c.errors))
        .collect();
    format!(
        "probe {:.1}s: {requests} requests, {errors} errors | {}",
        elapsed.as_secs_f64(),
        per.join(" | ")
    )
}

impl Live for Lines {
    fn period(&self) -> Duration {
        self.every
    }
    fn show(&mut self, routes: &[Route], counts: &[Counts], elapsed: Duration) {
        // The interval's first tick is at once: nothing to say yet.
        if elapsed >= self.every / 2 {
            eprintln!("{}", line(routes, counts, elapsed));
        }
    }
    fn finish(&mut self, routes: &[Route], counts: &[Counts], elapsed: Duration) {
        eprintln!("{}", line(routes, counts, elapsed));
    }
}

/// One spinner line per route (created at the first update).
#[derive(Default)]
pub struct Bars {
    multi: Option<MultiProgress>,
    bars: Vec<ProgressBar>,
}

impl Bars {
    fn bars(&mut self, routes: &[Route]) -> &[ProgressBar] {
        if self.multi.is_none() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            self.bars = routes
                .iter()
                .map(|_| multi.add(ProgressBar::new_spinner().with_style(style.clone())))
                .collect();
            self.multi = Some(multi);
        }
        &self.bars
    }
}

impl Live for Bars {
    fn period(&self) -> Duration {
        Duration::from_millis(200)
    }
    fn show(&mut self, routes: &[Route], counts: &[Counts], _: Duration) {
        let w = routes.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for ((bar, r), c) in self.bars(routes).iter().zip(routes).zip(counts) {
            bar.set_message(format!(
                "{:w$}  {:>7} requests  {:>5} errors",
                r.name, c.requests, c.errors
            ));
            bar.tick();
        }
    }
    fn finish(&mut self, routes: &[Route], counts: &[Counts], elapsed: Duration) {
        self.show(routes, counts, elapsed);
        for b in &self.bars {
            b.finish();
        }
    }
}

/// Keeps the latest counts for another thread to read (an upgrade prints them after
/// each step), and shows nothing itself.
#[derive(Clone, Default)]
pub struct Latest(std::sync::Arc<std::sync::Mutex<(usize, usize, usize)>>);

impl Latest {
    /// Requests sent and errors so far.
    pub fn get(&self) -> (usize, usize) {
        let (requests, errors, _) = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        (requests, errors)
    }
    /// Answers (or transport errors) received so far.
    pub fn answered(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).2
    }
    fn set(&self, counts: &[Counts]) {
        let requests = counts.iter().map(|c| c.requests).sum();
        let errors = counts.iter().map(|c| c.errors).sum();
        let answered = counts.iter().map(|c| c.answered).sum();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (requests, errors, answered);
    }
}

impl Live for Latest {
    fn period(&self) -> Duration {
        Duration::from_millis(200)
    }
    fn show(&mut self, _: &[Route], counts: &[Counts], _: Duration) {
        self.set(counts);
    }
    fn finish(&mut self, _: &[Route], counts: &[Counts], _: Duration) {
        self.set(counts);
    }
}
