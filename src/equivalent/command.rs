//! `meshcheck equivalent`: its arguments and the command, which loads the suite and
//! both fixture sets, compares their answers (the simulation, and istiod with
//! `--oracle`) and reports.

use super::compare::{self, Comparison, FixtureSet, Request};
use super::report;
use crate::error::{exit, Error};
use crate::suite::Suite;
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Args)]
pub struct EquivalentArgs {
    /// Suite whose requests to send: a name under suites/ or a path.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// A fixture set (a directory of manifests or a file); given twice: OLD, then NEW.
    #[arg(long, value_name = "DIR", required = true)]
    pub fixtures: Vec<PathBuf>,
    /// Also compare istiod's answers for both sets: an Istio version (the oracle is
    /// built by scripts/istio-oracle.sh and cached) or a built oracle's path.
    #[arg(long, value_name = "VERSION|PATH")]
    pub oracle: Option<String>,
    /// Also write a JUnit report: one testcase per request and source.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

/// `meshcheck equivalent`: exit 0 when OLD and NEW answer every request alike, 1
/// when a request differs, 2 on bad input.
pub fn command(args: EquivalentArgs) -> Result<u8, Error> {
    let started = Instant::now();
    let [old_dir, new_dir] = two_fixture_sets(&args.fixtures)?;
    let suite = crate::suite::load(&crate::suite::locate(&args.suite)?)?;
    let old = load_set(old_dir)?;
    let new = load_set(new_dir)?;
    let requests = compare::requests(&suite);
    let mut comparisons = compare::by_simulation(&suite, &requests, &old, &new);
    if let Some(spec) = &args.oracle {
        comparisons.extend(by_oracle(spec, &suite, &requests, &old, &new)?);
    }
    print_report(&suite, &requests, &comparisons, &old, &new);
    if let Some(path) = &args.junit {
        let props = vec![
            ("suite".to_string(), suite.name.clone()),
            ("fixtures.old".to_string(), old.shown.clone()),
            ("fixtures.new".to_string(), new.shown.clone()),
            ("target".to_string(), "none (equivalent)".to_string()),
        ];
        let junit = report::junit_suite(&comparisons, &requests, props, started.elapsed());
        crate::report::finish(&[junit], path, started.elapsed())?;
    }
    Ok(if report::differing_requests(&comparisons) > 0 {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

/// OLD and NEW: `--fixtures` must be given exactly twice.
fn two_fixture_sets(given: &[PathBuf]) -> Result<[&PathBuf; 2], Error> {
    match given {
        [old, new] => Ok([old, new]),
        _ => Err(Error::Usage(format!(
            "--fixtures is given {} time(s): give it twice, the OLD fixture set, then the NEW one",
            given.len()
        ))),
    }
}

/// One fixture set loaded and modelled.
fn load_set(dir: &Path) -> Result<FixtureSet, Error> {
    let fixtures = crate::fixtures::load_dir(dir)?;
    let mesh = crate::istio::Mesh::build(&fixtures);
    Ok(FixtureSet {
        shown: dir.display().to_string(),
        fixtures,
        mesh,
    })
}

/// istiod's answers for both sets (the oracle run once per set), compared.
fn by_oracle(
    spec: &str,
    suite: &Suite,
    requests: &[Request],
    old: &FixtureSet,
    new: &FixtureSet,
) -> Result<Vec<Comparison>, Error> {
    let bin = crate::oracle::locate(spec)?;
    let ask = |set: &FixtureSet| {
        let input = crate::oracle::input::build(&set.fixtures, &set.mesh, suite);
        crate::oracle::run(&bin, &input, false)
    };
    let (old_answer, new_answer) = (ask(old)?, ask(new)?);
    Ok(compare::by_oracle(
        requests,
        (&old_answer, &old.mesh),
        (&new_answer, &new.mesh),
    ))
}

/// The differences, then the counts. Written with errors ignored:
/// `meshcheck equivalent | head` must not panic.
fn print_report(
    suite: &Suite,
    requests: &[Request],
    comparisons: &[Comparison],
    old: &FixtureSet,
    new: &FixtureSet,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "equivalent: suite {}, OLD {}, NEW {}",
        suite.name, old.shown, new.shown
    );
    for c in comparisons.iter().filter(|c| c.differs()) {
        let _ = writeln!(out, "{}", report::difference(c, &requests[c.request]));
    }
    for source in report::sources(comparisons) {
        let _ = writeln!(out, "{}", report::source_count(&source, comparisons));
    }
    let _ = writeln!(
        out,
        "{} requests, {} differ",
        requests.len(),
        report::differing_requests(comparisons)
    );
}
