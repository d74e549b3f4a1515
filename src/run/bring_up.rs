//! Bringing a target up for a run, a probe or an upgrade: local Envoys (the model's
//! config or istiod's), a kind cluster, or the cluster of a kubeconfig.

use crate::error::Error;
use crate::fixtures::Fixtures;
use crate::istio::{Mesh, SidecarShape};
use crate::run::args::{ClusterArgs, ControlPlane, SidecarArg, TargetKind};
use crate::suite::Suite;
use crate::targets::cluster::ClusterTarget;
use crate::targets::existing::ExistingOptions;
use crate::targets::kind::KindOptions;
use crate::targets::local::{procs, LocalOptions, LocalTarget};
use crate::targets::{docker_answers, Target, TargetError};
use crate::timeouts::Timeouts;
use std::path::PathBuf;
use std::sync::Arc;

/// The target a run brought up: what the checks see, and the concrete target for the
/// steps only it can take (an upgrade pushes config to local Envoys, or upgrades a
/// cluster's Istio).
#[derive(Clone)]
pub enum Running {
    Local(Arc<LocalTarget>),
    Cluster(Arc<ClusterTarget>),
    #[cfg(target_os = "linux")]
    Sandbox(Arc<crate::targets::sandbox::SandboxTarget>),
}

impl Running {
    /// The target as the checks see it.
    pub fn target(&self) -> Arc<dyn Target> {
        match self {
            Running::Local(t) => t.clone(),
            Running::Cluster(t) => t.clone(),
            #[cfg(target_os = "linux")]
            Running::Sandbox(t) => t.clone(),
        }
    }
}

/// What istiod generates for the fixtures, for the local target to serve: Istio-only
/// Envoy extensions are switched off through istiod's own flags.
pub fn istiod_config(
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

/// What starting a target takes from the command line (a run's or a probe's flags).
pub struct TargetChoice<'a> {
    pub target: TargetKind,
    pub keep: bool,
    pub local_sidecars: SidecarArg,
    pub control_plane: ControlPlane,
    pub oracle: &'a str,
    pub cluster: &'a ClusterArgs,
    /// Proxies can be hot restarted (local target; an upgrade's rolling restart).
    pub restartable: bool,
    /// istiod's config the local gateways serve, when already asked (an upgrade asks
    /// for version A itself); otherwise asked of `oracle` with `--control-plane istiod`.
    pub istiod: Option<Arc<crate::oracle::output::Output>>,
    /// Where a failed bring-up (apply, rollouts) leaves its diagnostics.
    pub diagnostics: PathBuf,
    /// The sandbox's programs, built before its network namespace was entered
    /// ([`prepare`]).
    pub prepared: Option<Prepared>,
    /// Whether the selected checks send traffic to the gateway: the existing target
    /// then checks, right after the deploy, that the gateway is reachable.
    pub reach_gateway: bool,
}

/// What a target needs done before the async runtime starts.
#[derive(Debug, Clone)]
pub enum Prepared {
    #[cfg(target_os = "linux")]
    Sandbox(crate::targets::sandbox::Prepared),
}

/// For the sandbox target: builds (or finds) its programs for Istio `versions` (the
/// first is installed), then moves the calling (main) thread into the sandbox's
/// network namespace, so that the runtime started next, and every process, are
/// inside it. Nothing for the other targets.
pub fn prepare(target: TargetKind, versions: &[String]) -> Result<Option<Prepared>, Error> {
    if target != TargetKind::Sandbox {
        return Ok(None);
    }
    #[cfg(target_os = "linux")]
    {
        let exe = std::env::current_exe().map_err(|source| TargetError::Io {
            what: "cannot find the meshcheck executable (for the stub backend)".into(),
            source,
        })?;
        let mut stub = stub_command(exe).into_iter();
        let program = PathBuf::from(stub.next().unwrap_or_default());
        let args = stub.map(|a| a.to_string_lossy().into_owned()).collect();
        let p = crate::targets::sandbox::prepare(versions, (program, args))
            .map_err(TargetError::from)?;
        Ok(Some(Prepared::Sandbox(p)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = versions;
        Err(TargetError::Unavailable {
            target: "sandbox".into(),
            why: "the sandbox target needs Linux (network namespaces)".into(),
        }
        .into())
    }
}

/// `auto`: kind when a Docker engine answers, else local (the choice and why printed).
pub fn resolve_target(t: TargetKind) -> TargetKind {
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
pub fn start_target(
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
    let c = &choice.cluster;
    if choice.target != TargetKind::Existing
        && (c.revision.is_some() || c.rollout_timeout.is_some() || c.service_type.is_some())
    {
        return Err(Error::Usage(
            "--revision, --rollout-timeout and --service-type are for --target existing (kind and sandbox install Istio themselves)".into(),
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
            opts.restartable = choice.restartable;
            opts.istiod = match (&choice.istiod, choice.control_plane) {
                (Some(answer), _) => Some(answer.clone()),
                (None, ControlPlane::Istiod) => {
                    Some(Arc::new(istiod_config(choice.oracle, fx, &mesh, suite)?))
                }
                (None, ControlPlane::Model) => None,
            };
            Running::Local(Arc::new(LocalTarget::start(mesh, &opts)?))
        }
        TargetKind::Kind => {
            let cluster = choice.cluster;
            let mut opts = KindOptions::new(crate::targets::kind::project_dir());
            opts.cluster_name = cluster.cluster_name.clone();
            opts.istio_version = cluster.istio_version.clone();
            opts.istio_hub = cluster.istio_hub.clone();
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
        #[cfg(target_os = "linux")]
        TargetKind::Sandbox => {
            let Some(Prepared::Sandbox(p)) = choice.prepared.clone() else {
                return Err(Error::Usage(
                    "the sandbox target was not prepared before the runtime started".into(),
                ));
            };
            let opts = crate::targets::sandbox::SandboxOptions {
                keep: choice.keep,
                diagnostics_dir: Some(choice.diagnostics.clone()),
                stop_grace: timeouts.stop_grace,
                mesh_overlay: crate::targets::kube::mesh_config::install_overlay(fx)
                    .map_err(crate::targets::TargetError::BadInput)?,
                ..Default::default()
            };
            let t = rt
                .block_on(crate::targets::sandbox::bring_up(p, fx, &mesh, &opts))
                .inspect_err(|_| procs::run_cleanups())?;
            Running::Sandbox(Arc::new(t))
        }
        #[cfg(not(target_os = "linux"))]
        TargetKind::Sandbox => {
            return Err(TargetError::Unavailable {
                target: "sandbox".into(),
                why: "the sandbox target needs Linux (network namespaces)".into(),
            }
            .into())
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
                rollout_timeout: cluster.rollout_timeout,
                adopt: cluster.adopt,
                revision: cluster.revision.clone(),
                node_port_services: cluster.service_type.is_some(),
                reach_gateway: choice.reach_gateway,
                diagnostics_dir: Some(choice.diagnostics.clone()),
                install_gateway_api_crds: cluster.install_gateway_api_crds,
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
