//! `meshcheck upgrade --target sandbox`: the cluster upgrade meshcheck does on kind
//! (src/upgrade/cluster/istioctl.rs: B's `istioctl x precheck`, `istioctl upgrade` or
//! a canary revision with namespaces relabelled, rollout restarts, the old revision
//! uninstalled), with both istioctl builds from the sandbox and, for each revision,
//! the overlay that says where its istiod is reached. The kubelet does the rest: the
//! istiod pods of B start istiod B (replacing A in place, or beside it as a
//! revision), the restarted pods run B's pilot-agent.

use super::install;
use super::target::{Sandbox, SandboxTarget};
use crate::error::Error;
use crate::istio::Mesh;
use crate::targets::cluster::Istioctl;
use crate::targets::BoxFuture;
use crate::upgrade::cluster::istioctl::InstallOverlay;
use crate::upgrade::cluster::{ClusterTransition, ClusterUpgradeOptions};
use std::sync::Arc;

/// The sandbox's overlays for a revision: the fixtures' mesh config, and its istiod's
/// ports registered, the IstioOperator file written.
struct Overlay(Arc<Sandbox>);

impl InstallOverlay for Overlay {
    fn args_for<'a>(&'a self, revision: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let ports = self.0.istiod.register(revision).await;
            let file =
                install::write_overlay(&self.0.dir, revision, &ports).map_err(|e| e.to_string())?;
            Ok(crate::targets::cluster::file_args(&self.0.overlays(file)))
        })
    }
}

fn unavailable(why: String) -> Error {
    Error::Target(crate::targets::TargetError::Unavailable {
        target: "sandbox".into(),
        why,
    })
}

/// The transition from `opts.from` to `opts.to` on the brought-up sandbox.
pub fn transition(
    target: &SandboxTarget,
    mesh: &Mesh,
    opts: ClusterUpgradeOptions,
    drain: bool,
) -> Result<ClusterTransition, Error> {
    let sb = &target.sandbox;
    let a = sb
        .istio(&opts.from)
        .ok_or_else(|| unavailable(format!("Istio {} is not built for this sandbox", opts.from)))?;
    let b = sb
        .istio(&opts.to)
        .ok_or_else(|| unavailable(format!("Istio {} is not built for this sandbox", opts.to)))?;
    let istioctl_a = Istioctl {
        bin: a.istioctl(),
        kubeconfig: Some(sb.kubeconfig().to_path_buf()),
        context: None,
        // The mesh config comes with the revision's overlay (Overlay above).
        install_files: Vec::new(),
    };
    ClusterTransition::for_sandbox(
        &target.cluster,
        mesh,
        opts,
        istioctl_a,
        b.istioctl(),
        Arc::new(Overlay(sb.clone())),
        drain,
    )
}
