//! Command line: parse -> validated config -> run -> exit code.

use crate::analysis::{self, Finding, Severity};
use crate::error::{exit, Error};
use crate::fixtures::{load_dirs, Fixtures};
use crate::istio::Prediction;
use crate::istio::{Mesh, SidecarShape};
use crate::runner::{self, Events};
use crate::suite::CheckKind;
use crate::suite::{self, Suite};
use crate::targets::existing::ExistingOptions;
use crate::targets::kind::KindOptions;
use crate::targets::local::{procs, LocalOptions, LocalTarget};
use crate::targets::{docker_answers, Target, TargetError};
use crate::timeouts::Timeouts;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Bring the target up and send the suite's http requests in turn at a steady
    /// rate: live counts per route, then requests, errors, rate and the longest gap
    /// without success per route, and a JUnit report. Exit 1: a route had errors.
    Probe(Box<crate::probe::ProbeArgs>),
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
    let base = suite::locate(&args.suite)?;
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
#[derive(Debug, Args)]
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

/// Loads the suite, its fixtures (or `--fixtures`) and the model.
pub(crate) fn load_inputs(
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

fn count(findings: &[Finding], s: Severity) -> usize {
    findings.iter().filter(|f| f.severity == s).count()
}

/// What istiod generates for the fixtures, for the local target to serve: Istio-only
/// Envoy extensions are switched off through istiod's own flags.
fn istiod_config(
    spec: &str,
    fx: &Fixtures,
    mesh: &Mesh,
    suite: &Suite,
) -> Result<crate::oracle::output::Output, Error> {
    let answer = crate::oracle::ask(spec, fx, mesh, suite, true)?;
    eprintln!(
        "control plane: istiod {} ({}), {} gateway pod(s)",
        answer.istio.release,
        answer.istio.module,
        answer.gateways.len()
    );
    for r in &answer.rejected {
        eprintln!(
            "warning: istiod does not take {} ({}): {}",
            r.object, r.source, r.reason
        );
    }
    Ok(answer)
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
        let report = crate::report::junit::build(
            &suite.name,
            &events.sorted(&suite),
            &props,
            started.elapsed(),
        );
        crate::report::junit::write(&report, path).map_err(|source| Error::Junit {
            path: path.clone(),
            source,
        })?;
        let _ = writeln!(out, "JUnit report: {}", path.display());
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
        None => run(cli.run),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            crate::error::report(&e);
            e.exit_code()
        }
    }
}

/// Installs Ctrl-C / SIGTERM handling: the first signal stops every process (SIGTERM,
/// grace, SIGKILL), removes working directories and exits 130; a second one kills
/// everything at once. With `probing`, a first signal while its receiver listens (a
/// probe under way) only tells the probe to stop: it ends, stops the target and
/// writes its report.
fn install_signal_handlers(
    rt: &tokio::runtime::Runtime,
    grace: Duration,
    probing: Option<Arc<tokio::sync::watch::Sender<bool>>>,
) {
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        if let Some(stop) = probing.filter(|s| s.send(true).is_ok()) {
            eprintln!("\ninterrupted: stopping the probe, then the target (Ctrl-C again to kill at once)");
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            drop(stop);
            procs::kill_all_now();
            procs::remove_dirs();
            std::process::exit(exit::INTERRUPTED as i32);
        }
        eprintln!("\ninterrupted: stopping every process meshcheck started (Ctrl-C again to kill at once)");
        std::thread::spawn(move || {
            procs::stop_all(grace);
            procs::run_cleanups();
            procs::remove_dirs();
            std::process::exit(exit::INTERRUPTED as i32);
        });
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        procs::kill_all_now();
        procs::remove_dirs();
        std::process::exit(exit::INTERRUPTED as i32);
    });
}

fn junit_path(args: &RunArgs, suite: &Suite) -> PathBuf {
    args.junit.clone().unwrap_or_else(|| {
        PathBuf::from("target/meshcheck").join(format!("{}-junit.xml", suite.name))
    })
}

pub fn run(args: RunArgs) -> Result<u8, Error> {
    let run_started = Instant::now();
    if args.test.list {
        let suite = suite::load(&suite::locate(&args.suite)?)?;
        let _ = libtest_mimic::run(&args.test, runner::list_trials(&suite));
        return Ok(exit::OK);
    }
    let (mut suite, fixtures_dir, fx, mesh) = load_inputs(&args.suite, args.fixtures.as_ref())?;

    // Static analysis and simulation first: findings are testcases of the run.
    let findings = analysis::analyze(&fx, &mesh, &suite);
    for f in findings.iter().filter(|f| f.severity != Severity::Error) {
        eprintln!("{f}");
    }
    let predictions: BTreeMap<String, Prediction> = suite
        .checks
        .iter()
        .filter_map(|c| {
            let req = match &c.kind {
                CheckKind::Http(h) => &h.request,
                CheckKind::Distribution(d) => &d.request,
                _ => return None,
            };
            Some((
                c.full_name(),
                mesh.simulate(&analysis::sim_request(req, suite.ingress.port)),
            ))
        })
        .collect();
    let static_outcomes = runner::static_outcomes(&suite, &findings);
    let events = Events::default();
    let mut test_args = args.test.clone();
    if test_args.test_threads.is_none() {
        test_args.test_threads = Some(4);
    }
    if args.fail_fast && count(&findings, Severity::Error) > 0 {
        eprintln!("static analysis found errors; --fail-fast: no target is started");
        let conclusion = runner::run(&test_args, runner::static_trials(static_outcomes, &events));
        let props = vec![
            ("suite".to_string(), suite.name.clone()),
            ("fixtures.digest".to_string(), fx.digest.clone()),
            ("target".to_string(), "none (--fail-fast)".to_string()),
        ];
        let report = crate::report::junit::build(
            &suite.name,
            &events.sorted(&suite),
            &props,
            run_started.elapsed(),
        );
        let junit = junit_path(&args, &suite);
        crate::report::junit::write(&report, &junit).map_err(|source| Error::Junit {
            path: junit.clone(),
            source,
        })?;
        eprintln!("JUnit report: {}", junit.display());
        return Ok(if conclusion.has_failed() {
            exit::CHECK_FAILED
        } else {
            exit::OK
        });
    }

    let target_kind = resolve_target(args.target);
    let timeouts = Timeouts {
        consistency: args.budget,
        ..Timeouts::default()
    };
    let rt = runtime(timeouts.stop_grace, None)?;
    let workdir = run_workdir()?;
    let choice = TargetChoice {
        target: target_kind,
        keep: args.keep,
        local_sidecars: args.local_sidecars,
        control_plane: args.control_plane,
        oracle: &args.oracle,
        cluster: &args.cluster,
        diagnostics: junit_path(&args, &suite)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(format!("{}-diagnostics", suite.name)),
    };
    let running = start_target(
        &choice,
        &mut suite,
        &fx,
        mesh,
        &timeouts,
        &rt,
        workdir.path(),
    )?;
    let target_dyn = running.target();
    let ctx = Arc::new(crate::checks::Ctx::new(
        target_dyn.clone(),
        timeouts,
        suite.ingress.port,
    ));
    let mut trials = runner::static_trials(static_outcomes, &events);
    trials.extend(runner::traffic_trials(
        &suite,
        ctx.clone(),
        rt.handle(),
        &events,
        &predictions,
    ));
    let conclusion = runner::run(&test_args, trials);

    let junit = junit_path(&args, &suite);
    let mut events_sorted = events.sorted(&suite);
    // A failed traffic check: collect diagnostics next to the JUnit file and link them.
    if events_sorted
        .iter()
        .any(|e| !e.outcome.passed && e.group != "static")
    {
        let dir = junit
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(format!("{}-diagnostics", suite.name));
        let _ = std::fs::remove_dir_all(&dir);
        let files = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(120), target_dyn.diagnostics(&dir))
                .await
                .unwrap_or_default()
        });
        if !files.is_empty() {
            eprintln!("diagnostics: {} file(s) in {}", files.len(), dir.display());
            let list: String = files
                .iter()
                .map(|f| format!("  {}\n", f.display()))
                .collect();
            for e in events_sorted
                .iter_mut()
                .filter(|e| !e.outcome.passed && e.group != "static")
            {
                e.outcome
                    .transcript
                    .push_str(&format!("--- diagnostics ---\n{list}"));
            }
        }
    }
    let mut props = vec![
        ("suite".to_string(), suite.name.clone()),
        ("fixtures.dir".to_string(), fixtures_dir.clone()),
        ("fixtures.digest".to_string(), fx.digest.clone()),
        (
            "meshcheck.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ];
    props.extend(target_dyn.properties());
    let report =
        crate::report::junit::build(&suite.name, &events_sorted, &props, run_started.elapsed());
    drop(ctx);
    drop(target_dyn);
    // Stop the target before reporting the result, on every path.
    running.shutdown(&rt);
    crate::report::junit::write(&report, &junit).map_err(|source| Error::Junit {
        path: junit.clone(),
        source,
    })?;
    eprintln!("JUnit report: {}", junit.display());
    Ok(if conclusion.has_failed() {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

/// The target a run brought up.
pub(crate) enum Running {
    Local(Arc<LocalTarget>),
    Cluster(Arc<crate::targets::cluster::ClusterTarget>),
}

impl Running {
    /// The target as the checks see it.
    pub(crate) fn target(&self) -> Arc<dyn Target> {
        match self {
            Running::Local(t) => t.clone(),
            Running::Cluster(t) => t.clone(),
        }
    }

    /// Stops the target (every other handle to it dropped first).
    pub(crate) fn shutdown(self, rt: &tokio::runtime::Runtime) {
        match self {
            Running::Local(t) => match Arc::try_unwrap(t) {
                Ok(mut t) => t.shutdown(),
                Err(_) => {
                    procs::stop_all(Duration::from_secs(1));
                }
            },
            Running::Cluster(t) => {
                if let Ok(mut t) = Arc::try_unwrap(t) {
                    rt.block_on(t.shutdown());
                }
            }
        }
    }
}

/// What starting a target takes from the command line (a run's or a probe's flags).
pub(crate) struct TargetChoice<'a> {
    pub target: TargetKind,
    pub keep: bool,
    pub local_sidecars: SidecarArg,
    pub control_plane: ControlPlane,
    pub oracle: &'a str,
    pub cluster: &'a ClusterArgs,
    /// Where a failed bring-up (apply, rollouts) leaves its diagnostics.
    pub diagnostics: PathBuf,
}

/// `auto`: kind when a Docker engine answers, else local (the choice and why printed).
pub(crate) fn resolve_target(t: TargetKind) -> TargetKind {
    match t {
        TargetKind::Auto if docker_answers() => {
            eprintln!("target: kind (a Docker engine answers; pass --target local for the fast pre-flight)");
            TargetKind::Kind
        }
        TargetKind::Auto => {
            eprintln!("target: local (no Docker engine answers, so not kind)");
            TargetKind::Local
        }
        t => t,
    }
}

/// The async runtime of a run, with the panic hook and Ctrl-C handling installed
/// (`probing`: see [`install_signal_handlers`]).
pub(crate) fn runtime(
    grace: Duration,
    probing: Option<Arc<tokio::sync::watch::Sender<bool>>>,
) -> Result<tokio::runtime::Runtime, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| TargetError::Io {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    procs::install_panic_hook();
    install_signal_handlers(&rt, grace, probing);
    Ok(rt)
}

/// A working directory for cluster targets (kind config, kubeconfig), removed on Ctrl-C.
pub(crate) fn run_workdir() -> Result<tempfile::TempDir, Error> {
    let workdir = tempfile::Builder::new()
        .prefix("meshcheck-run-")
        .tempdir()
        .map_err(|source| TargetError::Io {
            what: "cannot create a working directory".into(),
            source,
        })?;
    procs::register_dir(workdir.path());
    Ok(workdir)
}

/// The command that runs the stub: `meshcheck-stub` beside the meshcheck executable
/// (installed and built together), else `meshcheck stub`. The small binary starts
/// about four times faster, which a mesh of hundreds of pods feels.
fn stub_command(exe: PathBuf) -> Vec<std::ffi::OsString> {
    let small = exe.with_file_name("meshcheck-stub");
    if small.is_file() {
        vec![small.into_os_string()]
    } else {
        vec![exe.into_os_string(), "stub".into()]
    }
}

/// Brings up the chosen target with the fixtures (the existing target may rename the
/// suite's expected namespaces with its prefix).
pub(crate) fn start_target(
    choice: &TargetChoice<'_>,
    suite: &mut Suite,
    fx: &Fixtures,
    mesh: Mesh,
    timeouts: &Timeouts,
    rt: &tokio::runtime::Runtime,
    workdir: &std::path::Path,
) -> Result<Running, Error> {
    if choice.control_plane == ControlPlane::Istiod && choice.target != TargetKind::Local {
        return Err(Error::Usage(
            "--control-plane istiod is for the local target: a cluster runs its own istiod".into(),
        ));
    }
    Ok(match choice.target {
        TargetKind::Local | TargetKind::Auto => {
            let exe = std::env::current_exe().map_err(|source| TargetError::Io {
                what: "cannot find the meshcheck executable (for the stub backend)".into(),
                source,
            })?;
            let mut opts = LocalOptions::new(stub_command(exe));
            opts.keep = choice.keep;
            opts.show_progress = true;
            opts.timeouts = timeouts.clone();
            opts.sidecar_shape = match choice.local_sidecars {
                SidecarArg::Native => SidecarShape::Native,
                SidecarArg::Classic => SidecarShape::Classic,
            };
            if choice.control_plane == ControlPlane::Istiod {
                opts.istiod = Some(Arc::new(istiod_config(choice.oracle, fx, &mesh, suite)?));
            }
            Running::Local(Arc::new(LocalTarget::start(mesh, &opts)?))
        }
        TargetKind::Kind => {
            let cluster = choice.cluster;
            let mut opts = KindOptions::new(project_dir());
            opts.cluster_name = cluster.cluster_name.clone();
            opts.istio_version = cluster.istio_version.clone();
            opts.node_image = cluster.node_image.clone();
            opts.reuse = cluster.reuse;
            opts.keep = choice.keep;
            opts.tools.offline = cluster.offline;
            opts.node_address = cluster.node_address;
            opts.diagnostics_dir = Some(choice.diagnostics.clone());
            // A failed step still deletes what was created (the registered cleanups).
            let t = rt
                .block_on(crate::targets::kind::bring_up(fx, &mesh, &opts, workdir))
                .inspect_err(|_| procs::run_cleanups())?;
            Running::Cluster(Arc::new(t))
        }
        TargetKind::Existing => {
            let cluster = choice.cluster;
            let opts = ExistingOptions {
                kubeconfig: cluster.kubeconfig.clone(),
                context: cluster.context.clone(),
                no_apply: cluster.no_apply,
                namespace_prefix: cluster.namespace_prefix.clone(),
                node_address: cluster.node_address,
                stub_image: cluster.stub_image.clone(),
                keep: choice.keep,
                rollout_timeout: None,
                adopt: cluster.adopt,
                diagnostics_dir: Some(choice.diagnostics.clone()),
            };
            if let Some(prefix) = &cluster.namespace_prefix {
                crate::targets::existing::rename_expectations(suite, prefix, fx);
            }
            let t = rt
                .block_on(crate::targets::existing::bring_up(fx, &mesh, &opts))
                .inspect_err(|_| procs::run_cleanups())?;
            Running::Cluster(Arc::new(t))
        }
    })
}

/// The project directory (where the Dockerfile is): the current directory when it has
/// one, else the directory meshcheck was built from.
fn project_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if cwd.join("Dockerfile").is_file() {
        cwd
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }
}
