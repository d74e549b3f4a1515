//! `meshcheck analyze` and `meshcheck oracle`: the fixtures checked statically (and
//! compared with istiod's own config generation), or istiod's answer printed.

use crate::analysis::{self, Finding, Severity};
use crate::error::{exit, Error};
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use crate::run::load_inputs;
use crate::runner::{self, Events};
use crate::suite::Suite;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Suite whose policy and checks to use: a name under suites/ or a path.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// Analyze these manifests instead of the suite's own fixtures.
    #[arg(long, env = "MESHCHECK_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    /// Also write the findings as a JUnit report (classname `static`).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Compare the model with istiod's own config generation: an Istio version (the
    /// oracle is built by scripts/istio-oracle.sh and cached) or a built oracle's path.
    #[arg(long, value_name = "VERSION|PATH")]
    pub oracle: Option<String>,
}

#[derive(Debug, Args)]
pub struct OracleArgs {
    /// Suite whose requests to simulate: a name under suites/ or a path.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// These manifests instead of the suite's own fixtures.
    #[arg(long, env = "MESHCHECK_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    /// Istio version (built by scripts/istio-oracle.sh, cached) or a built oracle's path.
    #[arg(long, env = "MESHCHECK_ORACLE", value_name = "VERSION|PATH", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub oracle: String,
    /// Print the oracle's input (the fixtures as a cluster holds them) and run nothing.
    #[arg(long)]
    pub input_only: bool,
}

fn count(findings: &[Finding], s: Severity) -> usize {
    findings.iter().filter(|f| f.severity == s).count()
}

/// Runs the oracle named by `spec` on the fixtures and compares it with the model.
fn oracle_findings(
    spec: &str,
    fx: &Fixtures,
    mesh: &Mesh,
    suite: &Suite,
) -> Result<(crate::oracle::output::Build, Vec<Finding>), Error> {
    let answer = crate::oracle::ask(spec, fx, mesh, suite, false)?;
    let mut findings = crate::oracle::compare(fx, mesh, suite, &answer);
    findings.push(Finding {
        analysis: crate::oracle::compare::ANALYSIS.into(),
        severity: Severity::Info,
        code: "MC400",
        istioctl: None,
        object: format!("istiod {}", answer.istio.release),
        at: crate::fixtures::Source::new(&fx.dir, 0),
        message: format!(
            "compared with {} ({} gateway pod(s){}, {} request(s))",
            answer.istio.module,
            answer.gateways.len(),
            match answer.sidecars.len() {
                0 => String::new(),
                n => format!(", {n} sidecar(s)"),
            },
            answer.simulations.len()
        ),
        istio: String::new(),
        detail: String::new(),
    });
    Ok((answer.istio, findings))
}

/// `meshcheck oracle`.
pub fn oracle_cmd(args: OracleArgs) -> Result<u8, Error> {
    let (suite, _, fx, mesh) = load_inputs(&args.suite, args.fixtures.as_ref())?;
    let input = crate::oracle::input::build(&fx, &mesh, &suite);
    let json = if args.input_only {
        serde_json::to_string_pretty(&input)
    } else {
        let bin = crate::oracle::locate(&args.oracle)?;
        let answer = crate::oracle::binary::run_raw(&bin, &input, false)?;
        serde_json::to_string_pretty(&answer)
    };
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", json.unwrap_or_default());
    Ok(exit::OK)
}

/// `meshcheck analyze`.
pub fn analyze_cmd(args: AnalyzeArgs) -> Result<u8, Error> {
    let started = Instant::now();
    let (suite, dir, fx, mesh) = load_inputs(&args.suite, args.fixtures.as_ref())?;
    let mut findings = analysis::analyze(&fx, &mesh, &suite);
    let oracle = match &args.oracle {
        Some(spec) => Some(oracle_findings(spec, &fx, &mesh, &suite)?),
        None => None,
    };
    if let Some((_, f)) = &oracle {
        findings.extend(f.iter().cloned());
    }
    // Written with errors ignored: `meshcheck analyze | head` must not panic.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "analyze: suite {}, fixtures {} ({} objects)",
        suite.name,
        dir,
        fx.objects.len()
    );
    for f in &findings {
        let _ = writeln!(out, "{f}\n");
    }
    let names = analysis::testcase_names(&suite);
    let sims = names.iter().filter(|n| n.starts_with("simulate::")).count();
    let (e, w, i) = (
        count(&findings, Severity::Error),
        count(&findings, Severity::Warning),
        count(&findings, Severity::Info),
    );
    let _ = writeln!(
        out,
        "analyze: {e} error(s), {w} warning(s), {i} info(s); {} analyses, {sims} simulated request(s); {:.1} ms",
        names.len() - sims,
        started.elapsed().as_secs_f64() * 1000.0
    );
    if let Some((build, f)) = &oracle {
        let _ = writeln!(
            out,
            "oracle: {} disagreement(s) with istiod {} ({})",
            count(f, Severity::Error),
            build.release,
            build.module
        );
    }
    if let Some(path) = &args.junit {
        let events = Events::default();
        for (name, outcome) in runner::static_outcomes(&suite, &findings) {
            events.push(crate::report::CheckEvent {
                group: "static".into(),
                name,
                kind: "static".into(),
                outcome,
                duration: Duration::ZERO,
            });
        }
        let props = vec![
            ("suite".to_string(), suite.name.clone()),
            ("fixtures.dir".to_string(), dir.clone()),
            ("fixtures.digest".to_string(), fx.digest.clone()),
            ("target".to_string(), "none (analyze)".to_string()),
        ];
        let report = crate::report::SuiteReport {
            name: suite.name.clone(),
            events: events.sorted(&suite),
            properties: props,
            time: started.elapsed(),
            output: String::new(),
        };
        crate::report::finish(&[report], path, started.elapsed())?;
    }
    Ok(if e > 0 { exit::CHECK_FAILED } else { exit::OK })
}
