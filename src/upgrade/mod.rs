//! `meshcheck upgrade`: the suite before, during (new control plane, old proxies) and
//! after an Istio upgrade, under steady traffic, in one report.
//!
//! Steps: bring the target up on Istio A; `precheck`; phase `before` (the suite, with
//! its static testcases); the prober starts; the control plane goes to B; phase
//! `skew`; every proxy restarts onto B; phase `after`; the prober stops. The report
//! has one testsuite per phase and an `upgrade` testsuite: the precheck, the traffic
//! continuity (errors against `--error-budget`, longest gap per route), and the
//! behaviour changes between phases (regressions fail).

pub mod cluster;
pub mod diff;
pub mod local;
mod report;
pub mod transition;

use crate::error::{exit, Error};
use crate::oracle::output::Output;
use crate::report::SuiteReport;
use crate::run::args::{ClusterArgs, SidecarArg, TargetKind};
use crate::run::{self, bring_up, phase, session, Analysed};
use crate::suite::Suite;
use crate::targets::Target;
use crate::timeouts::Timeouts;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transition::{Precheck, Strategy, Transition};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The Istio version running before the upgrade.
    #[arg(long)]
    pub from: String,
    /// The Istio version to upgrade to.
    #[arg(long)]
    pub to: String,
    /// How a cluster's control plane moves (kind): in place, or a canary revision.
    #[arg(long, value_enum, default_value = "in-place")]
    pub strategy: Strategy,
    /// Traffic errors the upgrade may cause before it fails.
    #[arg(long, default_value_t = 0)]
    pub error_budget: usize,
    /// Requests per second of the prober (the suite's http checks and distributions by
    /// version, in turn).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Suite to run in each phase: a name under suites/ or a path.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// Where to run: local (istiod A's then B's config on real Envoys), kind, existing.
    #[arg(long, value_enum, env = "MESHCHECK_TARGET", default_value = "auto")]
    pub target: TargetKind,
    /// These manifests instead of the suite's own fixtures.
    #[arg(long, env = "MESHCHECK_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    /// JUnit report path [default: target/meshcheck/<suite>-upgrade-junit.xml].
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Keep the target's working directory.
    #[arg(long)]
    pub keep: bool,
    /// Budget for an expectation to become consistently true (e.g. 30s).
    #[arg(long, value_parser = crate::timeouts::parse_duration, env = "MESHCHECK_BUDGET")]
    pub budget: Option<Duration>,
    /// Sidecar shape the local target reports.
    #[arg(long, value_enum, default_value = "native")]
    pub local_sidecars: SidecarArg,
    /// Existing target: the command that upgrades (run with `sh -c`, the step in
    /// $MESHCHECK_UPGRADE_STEP: control-plane, proxies, finish).
    #[arg(long)]
    pub upgrade_cmd: Option<String>,
    /// Existing target: wait for this file to name each step done, instead of a prompt.
    #[arg(long)]
    pub upgrade_signal: Option<PathBuf>,
    /// How long one upgrade step may take.
    #[arg(long, value_parser = crate::timeouts::parse_duration, default_value = "30m")]
    pub step_timeout: Duration,
    /// Go on when the precheck finds issues (it still fails in the report). Without
    /// it, a failed precheck stops the upgrade before anything changes.
    #[arg(long)]
    pub ignore_precheck: bool,
    /// Test-only: restart proxies by killing them first, without draining (what a
    /// broken rollout does), so that traffic continuity must fail.
    #[arg(long, hide = true)]
    pub test_restart_without_drain: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// istiod's configuration of both versions for the fixtures (local target).
struct Versions {
    from: Arc<Output>,
    to: Arc<Output>,
    /// How their configuration differs, in words.
    diff: String,
}

/// What the steps produced.
#[derive(Default)]
struct Outcome {
    phases: Vec<SuiteReport>,
    prechecks: Vec<Precheck>,
    probe: Option<crate::probe::Report>,
    /// The step that failed, and why.
    failed_step: Option<(String, String)>,
}

/// What the steps need from the run.
struct Context<'a> {
    suite: &'a Suite,
    analysed: &'a Analysed,
    target: Arc<dyn Target>,
    timeouts: &'a Timeouts,
    rt: &'a tokio::runtime::Runtime,
    rate: f64,
    /// Go on past a precheck that found issues.
    ignore_precheck: bool,
    /// Set by the first Ctrl-C / SIGTERM while the steps run: the step under way is
    /// abandoned and the transition aborted (a canary's namespace labels put back)
    /// before the target stops.
    interrupt: Arc<tokio::sync::watch::Sender<bool>>,
}

/// `meshcheck upgrade`.
pub fn command(args: UpgradeArgs) -> Result<u8, Error> {
    let started = Instant::now();
    let (mut suite, fixtures_dir, fx, mesh) =
        run::load_inputs(&args.suite, args.fixtures.as_ref())?;
    if crate::probe::routes(&suite).is_empty() {
        return Err(Error::Usage(format!(
            "suite {} has no http check and no distribution by version: the upgrade's prober has nothing to send",
            suite.name
        )));
    }
    let analysed = run::analyse(&suite, &fx, &mesh);
    let target_kind = bring_up::resolve_target(args.target);
    check_options(&args, target_kind)?;
    let timeouts = Timeouts {
        consistency: args.budget,
        ..Timeouts::default()
    };
    let junit = run::junit_path(args.junit.as_ref(), &suite, "upgrade-");
    let prepared = bring_up::prepare(target_kind, &[args.from.clone(), args.to.clone()])?;
    let interrupt = Arc::new(tokio::sync::watch::channel(false).0);
    let rt = session::runtime(timeouts.stop_grace, Some(interrupt.clone()))?;
    let versions = match target_kind {
        TargetKind::Local | TargetKind::Auto => Some(ask_versions(&args, &fx, &mesh, &suite)?),
        _ => None,
    };
    let workdir = session::workdir()?;
    let mut cluster = args.cluster.clone();
    cluster.istio_version = args.from.clone();
    let choice = bring_up::TargetChoice {
        target: target_kind,
        keep: args.keep,
        local_sidecars: args.local_sidecars,
        // Local: istiod A's config (given below); a cluster runs its own istiod.
        control_plane: crate::run::args::ControlPlane::Model,
        oracle: &args.from,
        cluster: &cluster,
        restartable: true,
        istiod: versions.as_ref().map(|v| v.from.clone()),
        prepared,
        reach_gateway: true,
        diagnostics: run::beside(&junit, format!("{}-upgrade-diagnostics", suite.name)),
    };
    step_line(&format!("bringing the target up on Istio {}", args.from));
    let model = mesh.clone();
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
    let mut transition = match make_transition(&running, &model, &args, versions.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            rt.block_on(target.shutdown());
            return Err(e);
        }
    };
    let ctx = Context {
        suite: &suite,
        analysed: &analysed,
        target: target.clone(),
        timeouts: &timeouts,
        rt: &rt,
        rate: args.rate,
        ignore_precheck: args.ignore_precheck,
        interrupt: interrupt.clone(),
    };
    let outcome = steps(&ctx, transition.as_mut());
    drop(transition);
    let mut props = run::properties(&suite, &fixtures_dir, &fx);
    props.extend(target.properties());
    props.push(("upgrade.from".into(), args.from.clone()));
    props.push(("upgrade.to".into(), args.to.clone()));
    rt.block_on(target.shutdown());
    drop(running);
    let config_diff = versions.map(|v| v.diff).unwrap_or_default();
    let code = finish(outcome, &args, props, config_diff, &junit, started)?;
    Ok(if *interrupt.borrow() {
        crate::error::exit::INTERRUPTED
    } else {
        code
    })
}

fn step_line(what: &str) {
    eprintln!("upgrade: {what}");
}

/// Asks the oracle of both versions (failing early when one cannot be built) and
/// prints how their configuration differs.
fn ask_versions(
    args: &UpgradeArgs,
    fx: &crate::fixtures::Fixtures,
    mesh: &crate::istio::Mesh,
    suite: &Suite,
) -> Result<Versions, Error> {
    let from = Arc::new(bring_up::istiod_config(&args.from, fx, mesh, suite)?);
    let to = Arc::new(bring_up::istiod_config(&args.to, fx, mesh, suite)?);
    let d = diff::describe(&from, &to, &diff::diff(&from, &to));
    print!("{d}");
    Ok(Versions { from, to, diff: d })
}

/// The cluster transition's options from the command line.
fn cluster_options(args: &UpgradeArgs) -> cluster::ClusterUpgradeOptions {
    let mut o = cluster::ClusterUpgradeOptions::new(&args.from, &args.to);
    o.strategy = args.strategy;
    o.upgrade_cmd = args.upgrade_cmd.clone();
    o.upgrade_signal = args.upgrade_signal.clone();
    o.step_timeout = args.step_timeout;
    o.tools = crate::targets::kind::tools::ToolOptions::new(args.cluster.offline);
    o.hub = args.cluster.istio_hub.clone();
    o
}

/// Refuses options that do not fit the target before anything starts.
fn check_options(args: &UpgradeArgs, target: TargetKind) -> Result<(), Error> {
    let name = match target {
        TargetKind::Kind => "kind",
        TargetKind::Existing => "existing",
        TargetKind::Sandbox => "sandbox",
        TargetKind::Local | TargetKind::Auto => {
            if args.upgrade_cmd.is_some() || args.upgrade_signal.is_some() {
                return Err(Error::Usage(
                    "--upgrade-cmd and --upgrade-signal are for the existing target: the local target upgrades itself".into(),
                ));
            }
            return Ok(());
        }
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
    cluster_options(args).check(name, terminal).map(|_| ())
}

fn make_transition(
    running: &bring_up::Running,
    mesh: &crate::istio::Mesh,
    args: &UpgradeArgs,
    versions: Option<&Versions>,
) -> Result<Box<dyn Transition>, Error> {
    match (running, versions) {
        (bring_up::Running::Local(t), Some(v)) => Ok(Box::new(local::LocalTransition::new(
            t.clone(),
            v.to.clone(),
            !args.test_restart_without_drain,
        ))),
        (bring_up::Running::Cluster(t), _) => Ok(Box::new(cluster::ClusterTransition::new(
            t,
            mesh,
            cluster_options(args),
        )?)),
        #[cfg(target_os = "linux")]
        (bring_up::Running::Sandbox(t), _) => {
            Ok(Box::new(crate::targets::sandbox::upgrade::transition(
                t,
                mesh,
                cluster_options(args),
                !args.test_restart_without_drain,
            )?))
        }
        (bring_up::Running::Local(_), None) => Err(Error::Usage(
            "the local target upgrades from istiod's configuration of both versions".into(),
        )),
    }
}

/// A step of a [`Transition`].
type StepFn =
    for<'a> fn(&'a mut dyn Transition) -> crate::targets::BoxFuture<'a, Result<(), Error>>;

/// One transition step, timed and reported; its error recorded in `outcome`.
fn take_step(
    ctx: &Context<'_>,
    outcome: &mut Outcome,
    name: &str,
    t: &mut dyn Transition,
    step: StepFn,
) -> bool {
    step_line(&format!("{name} ..."));
    let started = Instant::now();
    let mut interrupted = ctx.interrupt.subscribe();
    let run = async {
        tokio::select! {
            r = step(t) => r.map_err(|e| e.to_string()),
            _ = interrupted.wait_for(|i| *i) => Err("interrupted (Ctrl-C): the step was abandoned".to_string()),
        }
    };
    match ctx.rt.block_on(run) {
        Ok(()) => {
            step_line(&format!(
                "{name}: done in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            true
        }
        Err(e) => {
            step_line(&format!("{name}: failed: {e}"));
            outcome.failed_step = Some((name.to_string(), e.to_string()));
            false
        }
    }
}

/// One pass of the suite as phase `name`.
fn phase_pass(ctx: &Context<'_>, name: &str, statics: bool) -> SuiteReport {
    step_line(&format!("phase {name}: running the suite"));
    let t = Instant::now();
    let args = libtest_mimic::Arguments {
        quiet: true,
        ..Default::default()
    };
    let pass = phase::run_checks(
        &args,
        ctx.suite,
        ctx.analysed,
        ctx.target.clone(),
        ctx.timeouts,
        ctx.rt,
        statics,
    );
    SuiteReport {
        name: name.to_string(),
        events: pass.events,
        properties: vec![("phase".into(), name.into())],
        time: t.elapsed(),
        output: String::new(),
    }
}

/// Why a failed precheck stops the upgrade before anything changes (None: it passed,
/// or `--ignore-precheck`).
fn precheck_stops(prechecks: &[Precheck], ignore: bool) -> Option<String> {
    let failed: Vec<&str> = prechecks
        .iter()
        .filter(|p| !p.passed)
        .map(|p| p.name.as_str())
        .collect();
    (!failed.is_empty() && !ignore).then(|| {
        format!(
            "{} found issues: the upgrade stops before anything changes (--ignore-precheck goes on)",
            failed.join(", ")
        )
    })
}

/// The whole upgrade between bring-up and shutdown.
fn steps(ctx: &Context<'_>, t: &mut dyn Transition) -> Outcome {
    // While this receiver lives, a first Ctrl-C only marks the run interrupted (see
    // session::runtime): the current step ends at once, the rest is skipped, and
    // `abort` undoes what the transition changed.
    let _listening = ctx.interrupt.subscribe();
    let mut outcome = Outcome::default();
    match ctx.rt.block_on(t.precheck()) {
        Ok(p) => outcome.prechecks = p,
        Err(e) => {
            outcome.failed_step = Some(("precheck".into(), e.to_string()));
            return outcome;
        }
    }
    if *ctx.interrupt.borrow() {
        outcome.failed_step = Some(("precheck".into(), "interrupted (Ctrl-C)".into()));
        return outcome;
    }
    if let Some(why) = precheck_stops(&outcome.prechecks, ctx.ignore_precheck) {
        eprintln!("upgrade: {why}");
        outcome.failed_step = Some(("precheck".into(), why));
        return outcome;
    }
    outcome.phases.push(phase_pass(ctx, "before", true));
    let prober = match report::Prober::start(ctx) {
        Ok(p) => p,
        Err(why) => {
            outcome.failed_step = Some(("prober".into(), why));
            return outcome;
        }
    };
    // Every route answered once before anything changes.
    prober.warm_up(
        crate::probe::routes(ctx.suite).len(),
        Duration::from_secs(10),
    );
    let ok = take_step(
        ctx,
        &mut outcome,
        "control plane to the new version",
        t,
        |t| t.upgrade_control_plane(),
    ) && {
        prober.show();
        outcome.phases.push(phase_pass(ctx, "skew", false));
        take_step(
            ctx,
            &mut outcome,
            "restarting every proxy onto the new version",
            t,
            |t| t.restart_proxies(),
        )
    } && {
        prober.show();
        outcome.phases.push(phase_pass(ctx, "after", false));
        take_step(ctx, &mut outcome, "finishing", t, |t| t.finish())
    };
    if !ok {
        ctx.rt.block_on(t.abort());
    }
    outcome.probe = Some(prober.stop());
    outcome
}

/// Writes the report, prints the comparison and returns the exit code.
fn finish(
    outcome: Outcome,
    args: &UpgradeArgs,
    props: Vec<(String, String)>,
    config_diff: String,
    junit: &std::path::Path,
    started: Instant,
) -> Result<u8, Error> {
    let upgrade = report::upgrade_suite(&outcome, args.error_budget, props.clone(), config_diff);
    let mut suites: Vec<SuiteReport> = outcome
        .phases
        .iter()
        .cloned()
        .map(|mut s| {
            s.properties.extend(props.iter().cloned());
            s
        })
        .collect();
    if let Some(p) = &outcome.probe {
        print!("{}", crate::probe::table(p));
    }
    print!("{}", report::comparison_text(&outcome.phases));
    suites.push(upgrade);
    crate::report::finish(&suites, junit, started.elapsed())?;
    let failed = suites.iter().any(|s| s.failed() > 0);
    Ok(if failed { exit::CHECK_FAILED } else { exit::OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(passed: bool) -> Precheck {
        Precheck {
            name: "precheck".into(),
            passed,
            message: String::new(),
            output: String::new(),
        }
    }

    #[test]
    fn a_failed_precheck_stops_the_upgrade_unless_ignored() {
        assert_eq!(precheck_stops(&[pre(true)], false), None);
        assert_eq!(precheck_stops(&[], false), None);
        let why = precheck_stops(&[pre(true), pre(false)], false).expect("stops");
        assert!(why.contains("precheck found issues"), "{why}");
        assert!(why.contains("--ignore-precheck"), "{why}");
        assert_eq!(precheck_stops(&[pre(false)], true), None);
    }
}
