//! Command line: parse, then dispatch to the command, which owns its arguments
//! (run: src/run/args.rs, probe, upgrade, analyze, compare, equivalent, gen-fixtures); returns the
//! exit code.

use crate::analyze_cmd::{AnalyzeArgs, OracleArgs};
use crate::error::exit;
use crate::gen_fixtures::GenFixturesArgs;
use crate::run::args::RunArgs;
use clap::{Parser, Subcommand};

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
    /// Migration verification: the suite's requests asked of two fixture sets (OLD,
    /// then NEW: `--fixtures` twice) on the simulation and, with `--oracle`, istiod;
    /// every request whose answers differ is reported with both decision paths.
    /// Exit 0: equivalent, 1: a request differs, 2: bad input.
    Equivalent(crate::equivalent::EquivalentArgs),
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
    /// Bring the sandbox up (a real Kubernetes control plane and istiod in a private
    /// network namespace, no containers) and keep it until Ctrl-C.
    #[cfg(target_os = "linux")]
    Sandbox(crate::targets::sandbox::command::SandboxArgs),
    /// Run the stub backend (what every app pod runs).
    Stub {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Entry point: returns the process exit code.
pub fn main() -> u8 {
    let cli = Cli::parse();
    init_logging();
    let res = match cli.command {
        Some(Command::Stub { args }) => {
            let code = crate::stub::main_with_args(&args);
            return if code == std::process::ExitCode::SUCCESS {
                0
            } else {
                exit::ENVIRONMENT
            };
        }
        Some(Command::Analyze(a)) => crate::analyze_cmd::analyze_cmd(a),
        Some(Command::Oracle(a)) => crate::analyze_cmd::oracle_cmd(a),
        Some(Command::GenFixtures(a)) => crate::gen_fixtures::gen_fixtures_cmd(a),
        #[cfg(target_os = "linux")]
        Some(Command::Sandbox(a)) => crate::targets::sandbox::command::command(a),
        Some(Command::Equivalent(a)) => crate::equivalent::command(a),
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

/// Warnings (and more with `MESHCHECK_LOG=debug`, any tracing filter) on stderr.
fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MESHCHECK_LOG").unwrap_or_else(|_| {
            // kube-rs logs every refused request at ERROR; the waits that poll a
            // server coming up expect those.
            tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
