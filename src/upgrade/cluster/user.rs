//! The existing target's upgrade, done by the user: between the phases meshcheck
//! runs `--upgrade-cmd`, or waits for `--upgrade-signal`'s file to name the step, or
//! asks on the terminal. Every wait has the step timeout.

use super::command::{run_streamed, tail};
use super::ClusterUpgradeOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the signal file is read.
const SIGNAL_POLL: Duration = Duration::from_millis(200);

/// How the user's upgrade steps are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserUpgrade {
    /// `sh -c CMD` per step.
    Command(String),
    /// Wait for the file to contain the step's name.
    Signal(PathBuf),
    /// Ask on the terminal, wait for Enter.
    Prompt,
}

/// One step of the user's upgrade: its name (`MESHCHECK_UPGRADE_STEP`, the signal
/// file's content) and what to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStep {
    ControlPlane,
    Proxies,
    Finish,
}

impl UserStep {
    pub fn name(self) -> &'static str {
        match self {
            UserStep::ControlPlane => "control-plane",
            UserStep::Proxies => "proxies",
            UserStep::Finish => "finish",
        }
    }

    /// What the user is asked to do, e.g. `upgrade the control plane to 1.30.3`.
    pub fn ask(self, to: &str) -> String {
        match self {
            UserStep::ControlPlane => format!(
                "upgrade the control plane to {to} (leave the gateway and workload proxies as they are)"
            ),
            UserStep::Proxies => format!(
                "restart the gateways, then the workloads, onto {to} (wait for each rollout)"
            ),
            UserStep::Finish => {
                format!("finish the upgrade to {to} (e.g. remove the old revision)")
            }
        }
    }
}

impl UserUpgrade {
    /// The way given by the options: a command, a signal file, or (stdin on a
    /// terminal) a prompt; an error saying what to pass when none is possible.
    pub fn from_options(
        opts: &ClusterUpgradeOptions,
        stdin_is_terminal: bool,
    ) -> Result<Self, String> {
        match (&opts.upgrade_cmd, &opts.upgrade_signal) {
            (Some(_), Some(_)) => {
                Err("--upgrade-cmd and --upgrade-signal exclude each other".into())
            }
            (Some(c), None) if c.trim().is_empty() => Err("--upgrade-cmd is empty".into()),
            (Some(c), None) => Ok(UserUpgrade::Command(c.clone())),
            (None, Some(p)) => Ok(UserUpgrade::Signal(p.clone())),
            (None, None) if stdin_is_terminal => Ok(UserUpgrade::Prompt),
            (None, None) => Err(
                "upgrading an existing cluster: meshcheck cannot upgrade it itself and stdin is not a terminal to ask on; pass --upgrade-cmd CMD (run for each step with MESHCHECK_UPGRADE_STEP) or --upgrade-signal FILE (meshcheck waits for FILE to contain the step's name)".into(),
            ),
        }
    }

    /// Takes `step`: the command run, the signal waited for, or the user asked.
    pub async fn take(&self, step: UserStep, opts: &ClusterUpgradeOptions) -> Result<(), String> {
        match self {
            UserUpgrade::Command(c) => run_command(c, step, opts).await,
            UserUpgrade::Signal(p) => {
                eprintln!(
                    "meshcheck upgrade: now {}; then run `echo {} > {}` (waiting up to {:?})",
                    step.ask(&opts.to),
                    step.name(),
                    p.display(),
                    opts.step_timeout
                );
                wait_signal(p, step.name(), opts.step_timeout, SIGNAL_POLL).await
            }
            UserUpgrade::Prompt => prompt(step, opts).await,
        }
    }
}

/// `sh -c CMD` with `MESHCHECK_UPGRADE_STEP`, `MESHCHECK_UPGRADE_FROM`,
/// `MESHCHECK_UPGRADE_TO`, and the run's `MESHCHECK_UPGRADE_NAMESPACES` and
/// `MESHCHECK_UPGRADE_DEPLOYMENTS` (`namespace/name`, space-separated: what to
/// restart in the proxies step), its output streamed; a non-zero exit or the timeout fails
/// the step.
async fn run_command(c: &str, step: UserStep, opts: &ClusterUpgradeOptions) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(c)
        .env("MESHCHECK_UPGRADE_STEP", step.name())
        .env("MESHCHECK_UPGRADE_FROM", &opts.from)
        .env("MESHCHECK_UPGRADE_TO", &opts.to)
        .env("MESHCHECK_UPGRADE_NAMESPACES", opts.namespaces.join(" "))
        .env("MESHCHECK_UPGRADE_DEPLOYMENTS", opts.deployments.join(" "));
    let shown = format!("MESHCHECK_UPGRADE_STEP={} sh -c {c:?}", step.name());
    eprintln!("meshcheck upgrade: {shown}");
    match run_streamed(cmd, &shown, "upgrade-cmd", opts.step_timeout).await {
        Ok(f) if f.success => Ok(()),
        Ok(f) => Err(format!(
            "--upgrade-cmd exited with {}{}",
            f.status,
            tail(&f.output, 20)
        )),
        Err(e) => Err(format!("--upgrade-cmd {e}")),
    }
}

/// The file's content and modification time (`None`: absent or unreadable).
fn snapshot(p: &Path) -> Option<(String, Option<SystemTime>)> {
    let text = std::fs::read_to_string(p).ok()?;
    let mtime = std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((text, mtime))
}

fn names(text: &str, step: &str) -> bool {
    text.trim() == step
}

/// Waits until `p` contains `step` (surrounding whitespace ignored), written after
/// the wait began: a file that named the step already must be written again. Fails
/// after `deadline`, saying what the file holds.
pub async fn wait_signal(
    p: &Path,
    step: &str,
    deadline: Duration,
    every: Duration,
) -> Result<(), String> {
    let before = snapshot(p);
    let stale = |now: &(String, Option<SystemTime>)| match &before {
        Some((text, mtime)) => names(text, step) && now.1 == *mtime,
        None => false,
    };
    let poll = async {
        loop {
            if let Some(now) = snapshot(p) {
                if names(&now.0, step) && !stale(&now) {
                    return;
                }
            }
            tokio::time::sleep(every).await;
        }
    };
    tokio::time::timeout(deadline, poll).await.map_err(|_| {
        let holds = match snapshot(p) {
            Some((t, _)) => format!("it holds {:?}", t.trim()),
            None => "it does not exist".into(),
        };
        format!(
            "{} did not name the step {step:?} within {deadline:?} ({holds})",
            p.display()
        )
    })
}

/// Asks on the terminal and waits for Enter (a line on stdin), at most the step
/// timeout. The read runs on a thread of its own, left behind on timeout (it does
/// not keep meshcheck from exiting).
async fn prompt(step: UserStep, opts: &ClusterUpgradeOptions) -> Result<(), String> {
    eprintln!(
        "meshcheck upgrade: {}, then press Enter (waiting up to {:?})",
        step.ask(&opts.to),
        opts.step_timeout
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = tx.send(std::io::stdin().read_line(&mut line));
    });
    match tokio::time::timeout(opts.step_timeout, rx).await {
        Ok(Ok(Ok(n))) if n > 0 => Ok(()),
        Ok(Ok(Ok(_))) => Err("stdin closed before Enter was pressed".into()),
        Ok(Ok(Err(e))) => Err(format!("cannot read stdin: {e}")),
        Ok(Err(_)) => Err("the terminal reader stopped".into()),
        Err(_) => Err(format!(
            "no Enter within {:?} (--step-timeout)",
            opts.step_timeout
        )),
    }
}
