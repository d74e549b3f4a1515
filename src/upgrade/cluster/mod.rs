//! The cluster targets' side of `meshcheck upgrade` ([`Transition`] for kind and
//! existing):
//! - kind ([`kind`]): meshcheck upgrades with B's istioctl: `istioctl x precheck`,
//!   then in place (`istioctl upgrade`) or a canary revision (namespaces relabelled
//!   to it, the old revision removed at the end), and rollout restarts of the
//!   gateways, then the workloads, each waited for;
//! - existing ([`user`]): the user upgrades, between the phases: `--upgrade-cmd`,
//!   `--upgrade-signal`, or a prompt on the terminal.
//!
//! Each step's error names the step (`upgrade step `control-plane` failed: ...`).

pub mod command;
pub mod istioctl;
pub mod user;

#[cfg(test)]
mod tests;

use crate::error::Error;
use crate::istio::Mesh;
use crate::targets::cluster::ClusterTarget;
use crate::targets::kind::tools::ToolOptions;
use crate::targets::{BoxFuture, TargetError};
use crate::upgrade::transition::{Precheck, Transition};
use std::path::PathBuf;
use std::time::Duration;

/// How the kind target's control plane goes to B (the CLI's `--strategy`).
pub use crate::upgrade::transition::Strategy;

/// What the cluster side of `meshcheck upgrade` needs (plain values from the CLI).
#[derive(Debug, Clone)]
pub struct ClusterUpgradeOptions {
    /// Istio A, as installed (e.g. `1.29.6`).
    pub from: String,
    /// Istio B (e.g. `1.30.3`).
    pub to: String,
    /// kind: in place or canary (existing: refused unless in place; the user's
    /// command upgrades its own way).
    pub strategy: Strategy,
    /// existing: `sh -c CMD` per step.
    pub upgrade_cmd: Option<String>,
    /// existing: wait for this file to contain the step's name.
    pub upgrade_signal: Option<PathBuf>,
    /// The longest one step may take (a command, a wait for the user).
    pub step_timeout: Duration,
    /// kind: the longest one Deployment's rollout may take (istiod, each restart).
    pub rollout_timeout: Duration,
    /// kind: how B's istioctl is provided (as the bring-up provides A's).
    pub tools: ToolOptions,
    /// The fixtures' namespaces and Deployments (`namespace/name`) as the cluster
    /// names them: given to `--upgrade-cmd` (`MESHCHECK_UPGRADE_NAMESPACES`,
    /// `MESHCHECK_UPGRADE_DEPLOYMENTS`, space-separated); set from the target.
    pub namespaces: Vec<String>,
    pub deployments: Vec<String>,
    /// kind: where B's images are pulled from (`--istio-hub`, as A's were).
    pub hub: Option<String>,
}

impl ClusterUpgradeOptions {
    /// In place, 30 min per step, 5 min per rollout, the default tool cache.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        ClusterUpgradeOptions {
            from: from.into(),
            to: to.into(),
            strategy: Strategy::InPlace,
            upgrade_cmd: None,
            upgrade_signal: None,
            step_timeout: Duration::from_secs(30 * 60),
            rollout_timeout: Duration::from_secs(300),
            tools: ToolOptions::new(false),
            namespaces: Vec::new(),
            deployments: Vec::new(),
            hub: None,
        }
    }
}

impl ClusterUpgradeOptions {
    /// These options for `target`'s namespaces and Deployments.
    fn scoped_to(mut self, target: &ClusterTarget) -> Self {
        self.namespaces = target.namespaces.clone();
        self.deployments = target.deployments.clone();
        self
    }

    /// Whether these options fit the target `kind` or `existing` (a usage error
    /// otherwise), before anything is brought up; for existing, how the user's
    /// upgrade is taken. kind refuses `--upgrade-cmd`/`--upgrade-signal` (meshcheck
    /// upgrades it) and an upgrade across more minors than the strategy supports
    /// ([`crate::upgrade::transition::check_version_skip`]); existing refuses
    /// `--strategy canary` and needs a command, a signal file, or a terminal
    /// (`stdin_is_terminal`).
    pub fn check(
        &self,
        target: &str,
        stdin_is_terminal: bool,
    ) -> Result<Option<user::UserUpgrade>, Error> {
        if target == "kind" || target == "sandbox" {
            if self.upgrade_cmd.is_some() || self.upgrade_signal.is_some() {
                return Err(Error::Usage(
                    format!("--upgrade-cmd and --upgrade-signal are for --target existing; on {target} meshcheck upgrades Istio itself (--strategy)"),
                ));
            }
            crate::upgrade::transition::check_version_skip(&self.from, &self.to, self.strategy)
                .map_err(Error::Usage)?;
            return Ok(None);
        }
        if self.strategy == Strategy::Canary {
            return Err(Error::Usage(format!(
                "--strategy canary is for --target kind; on {target} the upgrade is yours (--upgrade-cmd, --upgrade-signal or the prompt), done your way"
            )));
        }
        user::UserUpgrade::from_options(self, stdin_is_terminal)
            .map(Some)
            .map_err(Error::Usage)
    }
}

enum How {
    Istioctl(Box<istioctl::IstioctlUpgrade>),
    User(user::UserUpgrade),
}

/// The upgrade of a kind or existing cluster.
pub struct ClusterTransition {
    target: &'static str,
    opts: ClusterUpgradeOptions,
    how: How,
    /// The target's client, for checking the pods after the user's proxies step.
    client: ::kube::Client,
}

/// An error naming the step and the target.
fn step_failed(target: &str, step: &str, why: impl std::fmt::Display) -> Error {
    Error::Target(TargetError::Unavailable {
        target: target.into(),
        why: format!("upgrade step `{step}` failed: {why}"),
    })
}

impl ClusterTransition {
    /// The transition for the brought-up `target` (kind: meshcheck upgrades it; existing:
    /// the user does) of the fixtures' `mesh`. Fails (usage) when an existing cluster
    /// has no way to be upgraded (no `--upgrade-cmd`, `--upgrade-signal` or terminal),
    /// or when the kind target has no istioctl.
    pub fn new(
        target: &ClusterTarget,
        mesh: &Mesh,
        opts: ClusterUpgradeOptions,
    ) -> Result<Self, Error> {
        let stdin_terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
        Self::with_terminal(target, mesh, opts, stdin_terminal)
    }

    /// [`ClusterTransition::new`], told whether stdin is a terminal.
    pub fn with_terminal(
        target: &ClusterTarget,
        mesh: &Mesh,
        opts: ClusterUpgradeOptions,
        stdin_is_terminal: bool,
    ) -> Result<Self, Error> {
        let opts = opts.scoped_to(target);
        let how = match opts.check(target.name, stdin_is_terminal)? {
            Some(user) => How::User(user),
            None => {
                let istioctl = target.istioctl.clone().ok_or_else(|| {
                    step_failed("kind", "precheck", "the kind target has no istioctl")
                })?;
                let injected = istioctl::injected_deployments(mesh);
                How::Istioctl(Box::new(istioctl::IstioctlUpgrade {
                    client: target.client.clone(),
                    istioctl_a: istioctl,
                    istioctl_b: None,
                    gateways: injected.gateways,
                    workloads: injected.workloads,
                    injected_namespaces: injected.namespaces,
                    namespaces: target.namespaces.clone(),
                    relabelled: Vec::new(),
                    canary_installed: false,
                    overlay: None,
                    drain: true,
                }))
            }
        };
        Ok(ClusterTransition {
            target: target.name,
            opts,
            how,
            client: target.client.clone(),
        })
    }

    /// The sandbox's upgrade: as on kind, with A's and B's istioctl from the sandbox's
    /// builds and `overlay` telling istioctl where each revision's istiod is reached.
    /// Without `drain`, the proxy step force-deletes pods instead (test only).
    pub fn for_sandbox(
        target: &ClusterTarget,
        mesh: &Mesh,
        opts: ClusterUpgradeOptions,
        istioctl_a: crate::targets::cluster::Istioctl,
        istioctl_b: PathBuf,
        overlay: std::sync::Arc<dyn istioctl::InstallOverlay>,
        drain: bool,
    ) -> Result<Self, Error> {
        let opts = opts.scoped_to(target);
        opts.check("sandbox", false)?;
        let injected = istioctl::injected_deployments(mesh);
        Ok(ClusterTransition {
            target: "sandbox",
            client: target.client.clone(),
            opts,
            how: How::Istioctl(Box::new(istioctl::IstioctlUpgrade {
                client: target.client.clone(),
                istioctl_a,
                istioctl_b: Some(istioctl_b),
                gateways: injected.gateways,
                workloads: injected.workloads,
                injected_namespaces: injected.namespaces,
                namespaces: target.namespaces.clone(),
                relabelled: Vec::new(),
                canary_installed: false,
                overlay: Some(overlay),
                drain,
            })),
        })
    }

    fn fail(&self, step: &str, why: impl std::fmt::Display) -> Error {
        step_failed(self.target, step, why)
    }

    async fn user_step(&mut self, step: user::UserStep) -> Result<(), Error> {
        match &self.how {
            How::User(u) => u
                .take(step, &self.opts)
                .await
                .map_err(|e| self.fail(step.name(), e)),
            How::Istioctl(_) => Ok(()),
        }
    }
}

impl Transition for ClusterTransition {
    fn precheck(&mut self) -> BoxFuture<'_, Result<Vec<Precheck>, Error>> {
        Box::pin(async move {
            let ClusterTransition {
                target, opts, how, ..
            } = self;
            match how {
                How::Istioctl(k) => k
                    .precheck(opts)
                    .await
                    .map(|p| vec![p])
                    .map_err(|e| step_failed(target, "precheck", e)),
                How::User(_) => Ok(Vec::new()),
            }
        })
    }

    fn upgrade_control_plane(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if let How::Istioctl(k) = &mut self.how {
                return k
                    .upgrade_control_plane(&self.opts)
                    .await
                    .map_err(|e| step_failed(self.target, "control-plane", e));
            }
            self.user_step(user::UserStep::ControlPlane).await
        })
    }

    fn restart_proxies(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if let How::Istioctl(k) = &mut self.how {
                return k
                    .restart_proxies(&self.opts)
                    .await
                    .map_err(|e| step_failed(self.target, "proxies", e));
            }
            self.user_step(user::UserStep::Proxies).await?;
            istioctl::verify_proxies(&self.client, &self.opts.namespaces, &self.opts)
                .await
                .map_err(|e| step_failed(self.target, "proxies", e))
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if let How::Istioctl(k) = &mut self.how {
                return k
                    .finish(&self.opts)
                    .await
                    .map_err(|e| step_failed(self.target, "finish", e));
            }
            self.user_step(user::UserStep::Finish).await
        })
    }

    fn abort(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match &mut self.how {
                How::Istioctl(k) => k.abort().await,
                How::User(_) => eprintln!(
                    "note: meshcheck changed nothing of the cluster's Istio; the upgrade is where the last step left it"
                ),
            }
        })
    }
}
