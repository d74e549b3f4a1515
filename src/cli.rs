//! Command line: parse -> validated config -> run -> exit code.

use crate::analysis::{self, Finding, Severity};
use crate::error::{exit, Error};
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use crate::runner::{self, Events};
use crate::suite::Suite;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "meshcheck",
    version,
    about = "Conformance and end-to-end checks for an Istio ingress",
    long_about = "Conformance and end-to-end checks for an Istio ingress: brings up a target, applies the suite's fixtures and checks routes, ports, subsets and sidecars over the gateway's NodePort.",
    args_conflicts_with_subcommands = true,
    help_template = "{about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}",
    after_help = "Exit codes: 0 all checks passed, 1 a check failed, 2 bad input or usage, 3 the environment failed, 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the fixtures statically and simulate every request of the suite; starts
    /// nothing. Exit 0: no error, 1: an error finding, 2: input cannot be loaded.
    Analyze(AnalyzeArgs),
    /// Print what istiod (the Istio oracle) generates for the fixtures: Envoy config
    /// per gateway pod and where each request of the suite goes, as JSON.
    Oracle(OracleArgs),
    /// Compare two JUnit reports: the testcases whose outcome changed (regressions,
    /// fixes, new, gone). Exit 0: no regression, 1: a testcase that passed fails,
    /// 2: a report cannot be read or is not JUnit.
    Compare(crate::report::compare::CompareArgs),
    /// Bring the target up and send the suite's http (and distribution-by-version)
    /// requests in turn at a steady rate: live counts per route, then requests, errors, rate and the longest gap
    /// without success per route, and a JUnit report. Exit 1: a route had errors.
    Probe(Box<crate::probe::ProbeArgs>),
    /// Verify an Istio upgrade: the suite before, with the new control plane and the
    /// old proxies (skew), and after every proxy restarted, under steady traffic; one
    /// JUnit report (before, skew, after, upgrade). Exit 1: a check failed, a
    /// behaviour regressed between phases, or traffic errors exceeded the budget.
    Upgrade(Box<crate::upgrade::UpgradeArgs>),
    /// Write the fixtures and suite of a larger mesh: the base suite plus N generated
    /// services (Deployment, Service, DestinationRule, VirtualService route, http
    /// check each), for the scale benchmarks.
    GenFixtures(GenFixturesArgs),
    /// Run the stub backend (what every app pod runs).
    Stub {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct GenFixturesArgs {
    /// How many services (one pod each) to add.
    #[arg(long)]
    pub services: usize,
    /// Directory to write `suite.yaml` and `fixtures/` into.
    #[arg(long)]
    pub out: PathBuf,
    /// The base suite: a name under suites/ or a path.
    #[arg(long, default_value = "ingress")]
    pub suite: String,
}

/// `meshcheck gen-fixtures`.
pub fn gen_fixtures_cmd(args: GenFixturesArgs) -> Result<u8, Error> {
    let base = crate::suite::locate(&args.suite)?;
    let spec = crate::gen_fixtures::GenSpec::new(args.services, base);
    let out = crate::gen_fixtures::generate(&spec, &args.out).map_err(Error::Usage)?;
    println!("{}", out.suite.display());
    Ok(exit::OK)
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// kind when a Docker engine answers, else local.
    Auto,
    /// Real Envoy processes on loopback.
    Local,
    /// A kind cluster with a chosen Istio version.
    Kind,
    /// The cluster of the current kubeconfig.
    Existing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControlPlane {
    /// meshcheck's model of Istio writes the Envoy config.
    Model,
    /// istiod's own config generation (pilot, in process) writes the gateways' config.
    Istiod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarArg {
    Native,
    Classic,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Suite to run: a name under suites/ or a path to a suite file.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// Where to run the fixtures.
    #[arg(long, value_enum, env = "MESHCHECK_TARGET", default_value = "auto")]
    pub target: TargetKind,
    /// Run the suite against these manifests instead of the suite's own fixtures.
    #[arg(long, env = "MESHCHECK_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    /// JUnit report path [default: target/meshcheck/<suite>-junit.xml].
    #[arg(long, env = "MESHCHECK_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Keep the target's working directory (configs, certificates, logs).
    #[arg(long)]
    pub keep: bool,
    /// Stop after the static analysis when it finds an error (start no target).
    #[arg(long)]
    pub fail_fast: bool,
    /// Budget for an expectation to become consistently true (e.g. 30s, 500ms)
    /// [default: the target's: local 5s, clusters 30s].
    #[arg(long, value_parser = parse_duration, env = "MESHCHECK_BUDGET")]
    pub budget: Option<Duration>,
    /// Sidecar shape the local target reports (Istio 1.27+ on Kubernetes 1.33+: native).
    #[arg(long, value_enum, default_value = "native")]
    pub local_sidecars: SidecarArg,
    /// Who programs the local target's gateway Envoys: meshcheck's model of Istio, or
    /// istiod's own config generation (the Istio oracle, see --oracle).
    #[arg(
        long,
        value_enum,
        env = "MESHCHECK_CONTROL_PLANE",
        default_value = "model"
    )]
    pub control_plane: ControlPlane,
    /// With --control-plane istiod: the Istio version (its oracle is built by
    /// scripts/istio-oracle.sh and cached) or a built oracle's path.
    #[arg(long, env = "MESHCHECK_ORACLE", value_name = "VERSION|PATH", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub oracle: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub test: libtest_mimic::Arguments,
}

/// Options of the cluster targets (kind, existing).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Istio version the kind target installs.
    #[arg(long, env = "MESHCHECK_ISTIO_VERSION", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub istio_version: String,
    /// kind cluster name.
    #[arg(long = "cluster-name", default_value = crate::targets::kind::config::DEFAULT_CLUSTER_NAME)]
    pub cluster_name: String,
    /// Run on an existing kind cluster of that name, and keep it.
    #[arg(long)]
    pub reuse: bool,
    /// kindest/node image [default: the newest the Istio version supports].
    #[arg(long)]
    pub node_image: Option<String>,
    /// Use only cached tools (or on PATH); never download.
    #[arg(long)]
    pub offline: bool,
    /// kubeconfig of the existing target [default: $KUBECONFIG, ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context of the existing target.
    #[arg(long)]
    pub context: Option<String>,
    /// Do not apply the fixtures: check what is already deployed.
    #[arg(long)]
    pub no_apply: bool,
    /// Prefix every fixture namespace (existing target), so runs do not collide with real workloads.
    #[arg(long)]
    pub namespace_prefix: Option<String>,
    /// Where NodePorts answer [default: a node's InternalIP].
    #[arg(long)]
    pub node_address: Option<std::net::IpAddr>,
    /// Image the cluster can pull for the stub backend (existing target).
    #[arg(long)]
    pub stub_image: Option<String>,
    /// Take over fixture objects that exist on the cluster and meshcheck did not
    /// create (existing target; without it such an object is an error).
    #[arg(long)]
    pub adopt: bool,
}

/// `30s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}` (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in `{s}` (ms, s or m)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("duration must be positive: `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) use crate::run::load_inputs;

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
            "compared with {} ({} gateway pod(s), {} request(s))",
            answer.istio.module,
            answer.gateways.len(),
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

/// Entry point: returns the process exit code.
pub fn main() -> u8 {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Stub { args }) => {
            let code = crate::stub::main_with_args(&args);
            return if code == std::process::ExitCode::SUCCESS {
                0
            } else {
                exit::ENVIRONMENT
            };
        }
        Some(Command::Analyze(a)) => analyze_cmd(a),
        Some(Command::Oracle(a)) => oracle_cmd(a),
        Some(Command::GenFixtures(a)) => gen_fixtures_cmd(a),
        Some(Command::Compare(a)) => crate::report::compare::command(a),
        Some(Command::Probe(a)) => crate::probe::command(*a),
        Some(Command::Upgrade(a)) => crate::upgrade::command(*a),
        None => crate::run::run(cli.run),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            crate::error::report(&e);
            e.exit_code()
        }
    }
}
