//! A run of a suite, as steps the plain run, `probe` and `upgrade` share: load the
//! suite and fixtures, analyse them, bring the target up (bring_up.rs), run the checks
//! (phase.rs), report (crate::report::finish), shut the target down.

pub mod args;
pub mod bring_up;
pub mod phase;
pub mod session;

use crate::analysis::{self, Finding, Severity};
use crate::error::{exit, Error};
use crate::fixtures::{load_dirs, Fixtures};
use crate::istio::{Mesh, Prediction};
use crate::report::SuiteReport;
use crate::run::args::RunArgs;
use crate::runner;
use crate::suite::{self, CheckKind, Suite};
use crate::timeouts::Timeouts;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Loads the suite, its fixtures (or `fixtures`) and the model; the second value
/// names the fixture directories for reports.
pub fn load_inputs(
    suite: &str,
    fixtures: Option<&PathBuf>,
) -> Result<(Suite, String, Fixtures, Mesh), Error> {
    let suite_path = suite::locate(suite)?;
    let suite: Suite = suite::load(&suite_path)?;
    let dirs = match fixtures {
        Some(d) => vec![d.clone()],
        None => suite.fixtures_dirs(),
    };
    let fx = load_dirs(&dirs)?;
    let mesh = Mesh::build(&fx);
    let shown = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok((suite, shown, fx, mesh))
}

/// What the analysis says before anything starts.
pub struct Analysed {
    pub findings: Vec<Finding>,
    /// The model's prediction for each http/distribution check, by full name.
    pub predictions: BTreeMap<String, Prediction>,
    /// The `static::` testcases.
    pub static_outcomes: Vec<(String, crate::checks::Outcome)>,
}

impl Analysed {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

/// Static analysis and simulation (warnings and infos printed; errors become failed
/// `static::` testcases).
pub fn analyse(suite: &Suite, fx: &Fixtures, mesh: &Mesh) -> Analysed {
    let findings = analysis::analyze(fx, mesh, suite);
    for f in findings.iter().filter(|f| f.severity != Severity::Error) {
        eprintln!("{f}");
    }
    let mut predictions: BTreeMap<String, Prediction> = suite
        .checks
        .iter()
        .filter(|c| !matches!(c.kind, CheckKind::Steps(_)))
        .flat_map(|c| c.requests())
        .map(|(id, req)| {
            let p = mesh.simulate(&analysis::sim_request(req, suite.ingress.port));
            (id, p)
        })
        .collect();
    predictions.extend(analysis::step_predictions(suite, mesh));
    let static_outcomes = runner::static_outcomes(suite, &findings);
    Analysed {
        findings,
        predictions,
        static_outcomes,
    }
}

/// The report's path: `--junit`, or target/meshcheck/<suite>-<what>junit.xml.
pub fn junit_path(explicit: Option<&PathBuf>, suite: &Suite, what: &str) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| {
        PathBuf::from("target/meshcheck").join(format!("{}-{what}junit.xml", suite.name))
    })
}

/// A directory beside the report.
pub fn beside(report: &Path, name: String) -> PathBuf {
    report.parent().unwrap_or(Path::new(".")).join(name)
}

/// The properties every report of the suite carries.
pub fn properties(suite: &Suite, fixtures: &str, fx: &Fixtures) -> Vec<(String, String)> {
    vec![
        ("suite".to_string(), suite.name.clone()),
        ("fixtures.dir".to_string(), fixtures.to_string()),
        ("fixtures.digest".to_string(), fx.digest.clone()),
        (
            "meshcheck.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]
}

fn exit_code(failed: bool) -> u8 {
    if failed {
        exit::CHECK_FAILED
    } else {
        exit::OK
    }
}

/// The run with `--fail-fast` when the analysis found errors: only the static
/// testcases, no target.
fn static_only(
    args: &RunArgs,
    suite: &Suite,
    fx: &Fixtures,
    analysed: &Analysed,
    started: Instant,
) -> Result<u8, Error> {
    eprintln!("static analysis found errors; --fail-fast: no target is started");
    let events = runner::Events::default();
    let conclusion = runner::run(
        &phase::test_args(&args.test),
        runner::static_trials(analysed.static_outcomes.clone(), &events),
    );
    let report = SuiteReport {
        name: suite.name.clone(),
        events: events.sorted(suite),
        properties: vec![
            ("suite".to_string(), suite.name.clone()),
            ("fixtures.digest".to_string(), fx.digest.clone()),
            ("target".to_string(), "none (--fail-fast)".to_string()),
        ],
        time: started.elapsed(),
        output: String::new(),
    };
    let junit = junit_path(args.junit.as_ref(), suite, "");
    crate::report::finish(&[report], &junit, started.elapsed())?;
    Ok(exit_code(conclusion.has_failed()))
}

/// `meshcheck [--suite S]`: load, analyse, bring up, check, report, shut down.
pub fn run(args: RunArgs) -> Result<u8, Error> {
    let started = Instant::now();
    if args.test.list {
        let suite = suite::load(&suite::locate(&args.suite)?)?;
        let _ = libtest_mimic::run(&args.test, runner::list_trials(&suite));
        return Ok(exit::OK);
    }
    let (mut suite, fixtures_dir, fx, mesh) = load_inputs(&args.suite, args.fixtures.as_ref())?;
    let analysed = analyse(&suite, &fx, &mesh);
    if args.fail_fast && analysed.errors() > 0 {
        return static_only(&args, &suite, &fx, &analysed, started);
    }
    let timeouts = Timeouts {
        consistency: args.budget,
        ..Timeouts::default()
    };
    let target = bring_up::resolve_target(args.target);
    let prepared = bring_up::prepare(target, std::slice::from_ref(&args.cluster.istio_version))?;
    let rt = session::runtime(timeouts.stop_grace, None)?;
    let workdir = session::workdir()?;
    let junit = junit_path(args.junit.as_ref(), &suite, "");
    let choice = bring_up::TargetChoice {
        target,
        prepared,
        reach_gateway: crate::runner::sends_traffic(&suite, &args.test),
        keep: args.keep,
        local_sidecars: args.local_sidecars,
        control_plane: args.control_plane,
        oracle: &args.oracle,
        cluster: &args.cluster,
        restartable: false,
        istiod: None,
        diagnostics: beside(&junit, format!("{}-diagnostics", suite.name)),
    };
    let running = bring_up::start_target(
        &choice,
        &mut suite,
        &fx,
        mesh,
        &timeouts,
        &rt,
        workdir.path(),
    )?;
    let target = running.target();
    let mut pass = phase::run_checks(
        &args.test,
        &suite,
        &analysed,
        target.clone(),
        &timeouts,
        &rt,
        true,
    );
    phase::attach_diagnostics(
        &mut pass.events,
        target.as_ref(),
        &rt,
        &beside(&junit, format!("{}-diagnostics", suite.name)),
    );
    let mut props = properties(&suite, &fixtures_dir, &fx);
    props.extend(target.properties());
    // Stop the target before reporting the result, on every path.
    rt.block_on(target.shutdown());
    drop(running);
    let report = SuiteReport {
        name: suite.name.clone(),
        events: pass.events,
        properties: props,
        time: started.elapsed(),
        output: String::new(),
    };
    crate::report::finish(&[report], &junit, started.elapsed())?;
    Ok(exit_code(pass.failed))
}
