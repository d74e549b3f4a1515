//! The upgrade meshcheck does itself, on kind and on the sandbox: B's istioctl (on
//! kind ensured like A's by the bring-up, src/targets/kind/tools.rs; on the sandbox
//! built with it) prechecks the cluster, then upgrades
//! istiod in place (`istioctl upgrade`) or installs B as a canary revision and
//! moves the injected namespaces to it; the proxies restart onto B with a rollout
//! restart of each Deployment, gateways first, each waited for; the canary's old
//! revision is removed at the end.

use super::command::{run_streamed, tail, NotFinished};
use super::{ClusterUpgradeOptions, Strategy};
use crate::istio::{Mesh, PodRole};
use crate::targets::cluster::Istioctl;
use crate::targets::kind::config::{istioctl_install_args, revision_for, IstioInstall};
use crate::targets::kind::tools;
use crate::targets::kube as k;
use crate::targets::BoxFuture;
use crate::upgrade::transition::Precheck;
use ::kube::api::{Api, Patch, PatchParams};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The namespace label that selects the default revision's injector.
pub const INJECTION_LABEL: &str = "istio-injection";
/// The namespace label that selects a revision's injector.
pub const REV_LABEL: &str = "istio.io/rev";
/// The pod template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The revision `istioctl install` without `--revision` installs (the kind bring-up's
/// Istio A, src/targets/kind/mod.rs).
pub const OLD_REVISION: &str = "default";
/// The namespace istiod runs in.
const ISTIO_SYSTEM: &str = "istio-system";

/// What the sandbox adds to istioctl's install arguments for a revision (where that
/// revision's istiod is reached: an IstioOperator overlay, `-f FILE`).
pub trait InstallOverlay: Send + Sync {
    fn args_for<'a>(&'a self, revision: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// What the upgrade needs of the brought-up target and the fixtures.
pub struct IstioctlUpgrade {
    pub(super) client: ::kube::Client,
    /// A's istioctl and how it reaches the run's cluster (kubeconfig, context).
    pub(super) istioctl_a: Istioctl,
    /// B's istioctl, once ensured.
    pub(super) istioctl_b: Option<PathBuf>,
    /// `(namespace, name)` of the injected gateway Deployments.
    pub(super) gateways: Vec<(String, String)>,
    /// `(namespace, name)` of the injected workload Deployments.
    pub(super) workloads: Vec<(String, String)>,
    /// Namespaces whose pods are injected (the canary moves them to B's revision).
    pub(super) injected_namespaces: Vec<String>,
    /// The fixtures' namespaces as the cluster names them.
    pub(super) namespaces: Vec<String>,
    /// Namespaces relabelled so far, with their labels before (for `abort`).
    pub(super) relabelled: Vec<Relabelled>,
    /// Whether B's canary revision was installed (for `abort`'s note).
    pub(super) canary_installed: bool,
    /// Extra install arguments per revision (the sandbox's overlay).
    pub(super) overlay: Option<std::sync::Arc<dyn InstallOverlay>>,
    /// Restarts drain (a rollout restart); false only for the test-only restart that
    /// force-deletes the pods (nothing drains: traffic continuity must fail).
    pub(super) drain: bool,
}

/// A namespace's injection labels before the canary relabelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relabelled {
    pub namespace: String,
    pub injection: Option<String>,
    pub rev: Option<String>,
}

/// The injected Deployments of the mesh, each `(namespace, name)` in fixture
/// order, and the namespaces they run in (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injected {
    pub gateways: Vec<(String, String)>,
    pub workloads: Vec<(String, String)>,
    pub namespaces: Vec<String>,
}

pub fn injected_deployments(mesh: &Mesh) -> Injected {
    let mut out = Injected::default();
    for p in mesh.pods.iter().filter(|p| p.injected) {
        let id = (p.namespace.clone(), p.deployment.clone());
        let list = match p.role {
            PodRole::Gateway => &mut out.gateways,
            _ => &mut out.workloads,
        };
        if !list.contains(&id) {
            list.push(id);
        }
        out.namespaces.push(p.namespace.clone());
    }
    out.namespaces.sort();
    out.namespaces.dedup();
    out
}

impl IstioctlUpgrade {
    fn install(&self, version: &str, revision: Option<String>) -> IstioInstall {
        IstioInstall {
            version: version.to_string(),
            revision,
            kubeconfig: self
                .istioctl_a
                .kubeconfig
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            context: self.istioctl_a.context.clone(),
        }
    }

    /// `--kubeconfig K [--context C]`: the run's cluster, as the bring-up reaches it.
    fn cluster_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(k) = &self.istioctl_a.kubeconfig {
            a.extend(["--kubeconfig".to_string(), k.to_string_lossy().into_owned()]);
        }
        if let Some(c) = &self.istioctl_a.context {
            a.extend(["--context".to_string(), c.clone()]);
        }
        a
    }

    async fn istioctl_b(&mut self, opts: &ClusterUpgradeOptions) -> Result<PathBuf, String> {
        if let Some(b) = &self.istioctl_b {
            return Ok(b.clone());
        }
        let b = tools::ensure(&tools::ToolSpec::istioctl(&opts.to), &opts.tools)
            .await
            .map_err(|e| e.to_string())?;
        self.istioctl_b = Some(b.clone());
        Ok(b)
    }

    /// Runs B's istioctl with `args`; an error says what ran and how it ended.
    async fn istioctl(
        &mut self,
        opts: &ClusterUpgradeOptions,
        args: Vec<String>,
    ) -> Result<String, String> {
        let bin = self.istioctl_b(opts).await?;
        let shown = format!("istioctl {}", args.join(" "));
        eprintln!("upgrade: {shown} (istioctl {})", opts.to);
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(&args);
        match run_streamed(cmd, &shown, "istioctl", opts.step_timeout).await {
            Ok(f) if f.success => Ok(f.output),
            Ok(f) => Err(format!(
                "`{shown}` exited with {}{}",
                f.status,
                tail(&f.output, 20)
            )),
            Err(e) => Err(format!("`{shown}` {e}")),
        }
    }

    /// `istioctl x precheck --from-version A.minor` with B's istioctl: one testcase,
    /// failed when istioctl exits non-zero (an issue of level Warning or worse), with
    /// the first line of its findings (stdout; the summary error is on stderr).
    pub async fn precheck(&mut self, opts: &ClusterUpgradeOptions) -> Result<Precheck, String> {
        let bin = self.istioctl_b(opts).await?;
        let args = precheck_args(&opts.from, &self.cluster_args());
        let shown = format!("istioctl {}", args.join(" "));
        eprintln!("upgrade: {shown} (istioctl {})", opts.to);
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(&args);
        match run_streamed(cmd, &shown, "istioctl", opts.step_timeout).await {
            Ok(f) => Ok(Precheck {
                name: "precheck".into(),
                passed: f.success,
                message: if f.success {
                    format!(
                        "istioctl {} x precheck: no issues upgrading from {}",
                        opts.to, opts.from
                    )
                } else {
                    format!(
                        "istioctl {} x precheck found issues upgrading from {} ({}): {}",
                        opts.to,
                        opts.from,
                        f.status,
                        first_line(if f.stdout.trim().is_empty() {
                            &f.output
                        } else {
                            &f.stdout
                        })
                    )
                },
                output: f.output,
            }),
            Err(NotFinished::Timeout { waited, output }) => Ok(Precheck {
                name: "precheck".into(),
                passed: false,
                message: format!("`{shown}` did not finish within {waited:?}"),
                output,
            }),
            Err(e) => Err(format!("`{shown}`: {e}")),
        }
    }

    /// In place: `istioctl upgrade` with the bring-up's install options. Canary:
    /// `istioctl install --revision <B>`, then the injected namespaces relabelled.
    /// Then istiod of B is waited for.
    pub async fn upgrade_control_plane(
        &mut self,
        opts: &ClusterUpgradeOptions,
    ) -> Result<(), String> {
        let (mut args, istiod, rev) = match opts.strategy {
            Strategy::InPlace => {
                let mut a = istioctl_install_args(&self.install(&opts.to, None));
                a[0] = "upgrade".into();
                (a, "istiod".to_string(), OLD_REVISION.to_string())
            }
            Strategy::Canary => {
                let rev = revision_for(&opts.to);
                let a = istioctl_install_args(&self.install(&opts.to, Some(rev.clone())));
                (a, format!("istiod-{rev}"), rev)
            }
        };
        args.extend(crate::targets::cluster::file_args(
            &self.istioctl_a.install_files,
        ));
        if let Some(o) = &self.overlay {
            args.extend(o.args_for(&rev).await?);
        }
        args.extend(crate::targets::kind::config::hub_args(opts.hub.as_deref()));
        self.istioctl(opts, args).await?;
        self.canary_installed = opts.strategy == Strategy::Canary;
        k::wait_rollouts(
            &self.client,
            &[(ISTIO_SYSTEM.into(), istiod)],
            opts.rollout_timeout,
            &|l: &str| eprintln!("  {l}"),
        )
        .await
        .map_err(|e| e.to_string())?;
        if opts.strategy == Strategy::Canary {
            self.relabel(&revision_for(&opts.to)).await?;
        }
        Ok(())
    }

    /// The namespaces whose pods are injected (by the fixtures, or by a live
    /// injection label) go to revision `rev`: `istio-injection` dropped (it would win
    /// over `istio.io/rev`), `istio.io/rev=<rev>` set. The namespaced injector of
    /// a revision selects `istio.io/rev=<rev>` with no `istio-injection`, and no
    /// default-revision webhook selects such a namespace
    /// (manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml
    /// at 1.30.3: `rev.namespace.`, `namespace.`, `object.`).
    async fn relabel(&mut self, rev: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        for ns in &self.namespaces {
            let live = api
                .get(ns)
                .await
                .map_err(|e| format!("cannot read Namespace {ns}: {e}"))?;
            let labels = live.metadata.labels.unwrap_or_default();
            let before = Relabelled {
                namespace: ns.clone(),
                injection: labels.get(INJECTION_LABEL).cloned(),
                rev: labels.get(REV_LABEL).cloned(),
            };
            let injects = self.injected_namespaces.contains(ns)
                || before.injection.as_deref() == Some("enabled")
                || before.rev.is_some();
            if !injects || before.injection.as_deref() == Some("disabled") {
                continue;
            }
            api.patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(relabel_patch(rev)),
            )
            .await
            .map_err(|e| format!("cannot relabel Namespace {ns} to revision {rev}: {e}"))?;
            eprintln!("  Namespace {ns}: {REV_LABEL}={rev}");
            self.relabelled.push(before);
        }
        Ok(())
    }

    /// Gateways first, then workloads: each restarted and waited for in turn.
    pub async fn restart_proxies(&mut self, opts: &ClusterUpgradeOptions) -> Result<(), String> {
        let all: Vec<(String, String)> = self
            .gateways
            .iter()
            .chain(self.workloads.iter())
            .cloned()
            .collect();
        eprintln!(
            "upgrade: restarting {} gateway and {} workload Deployment(s) onto {}",
            self.gateways.len(),
            self.workloads.len(),
            opts.to
        );
        for (ns, name) in all {
            if self.drain {
                restart(&self.client, &ns, &name).await?;
            } else {
                force_delete_pods(&self.client, &ns, &name).await?;
            }
            k::wait_rollouts(
                &self.client,
                &[(ns.clone(), name.clone())],
                opts.rollout_timeout,
                &|l: &str| eprintln!("  {l}"),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        verify_proxies(&self.client, &self.namespaces, opts).await
    }

    /// Canary: the old revision removed (`istioctl uninstall --revision default`).
    pub async fn finish(&mut self, opts: &ClusterUpgradeOptions) -> Result<(), String> {
        if opts.strategy == Strategy::InPlace {
            return Ok(());
        }
        let args = uninstall_args(OLD_REVISION, &self.cluster_args());
        self.istioctl(opts, args).await.map(|_| ())
    }

    /// Restores the labels of every namespace relabelled (best effort, bounded).
    pub async fn abort(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        for r in std::mem::take(&mut self.relabelled).into_iter().rev() {
            let (pp, patch) = (PatchParams::default(), Patch::Merge(restore_patch(&r)));
            let put_back = api.patch(&r.namespace, &pp, &patch);
            match tokio::time::timeout(Duration::from_secs(30), put_back).await {
                Ok(Ok(ns)) => eprintln!(
                    "  Namespace {}: injection labels restored ({})",
                    r.namespace,
                    injection_labels(&ns)
                ),
                Ok(Err(e)) => eprintln!(
                    "warning: cannot restore the labels of Namespace {}: {e}",
                    r.namespace
                ),
                Err(_) => eprintln!(
                    "warning: restoring the labels of Namespace {} timed out",
                    r.namespace
                ),
            }
        }
        if self.canary_installed {
            eprintln!("note: the canary revision stays installed (pods may run its proxies)");
        }
    }
}

/// A namespace's injection labels as the API server has them (`istio-injection=enabled`,
/// `istio.io/rev=1-31`, or `none`).
fn injection_labels(ns: &Namespace) -> String {
    let labels = ns.metadata.labels.iter().flatten();
    let shown: Vec<String> = labels
        .filter(|(k, _)| *k == "istio-injection" || *k == "istio.io/rev")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

/// `kubectl rollout restart`: the pod template annotation `restartedAt` set to now
/// (strategic merge patch, as kubectl sends it).
async fn restart(client: &::kube::Client, ns: &str, name: &str) -> Result<(), String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(restart_patch(&now)),
    )
    .await
    .map_err(|e| format!("cannot restart Deployment {ns}/{name}: {e}"))?;
    eprintln!("  Deployment {ns}/{name}: restarted");
    Ok(())
}

/// Every injected pod of `namespaces` runs B's proxy now: its `istio-proxy` image tag
/// is B's release (and, for a canary, its injection status names B's revision). A
/// pod still on A fails the step, named.
pub(super) async fn verify_proxies(
    client: &::kube::Client,
    namespaces: &[String],
    opts: &ClusterUpgradeOptions,
) -> Result<(), String> {
    let revision = (opts.strategy == Strategy::Canary).then(|| revision_for(&opts.to));
    let mut checked = 0;
    let mut stale = Vec::new();
    for ns in namespaces {
        let pods = k::list_pods(client, std::slice::from_ref(ns))
            .await
            .map_err(|e| e.to_string())?;
        for p in pods {
            let Some(image) = proxy_image(&p) else {
                continue;
            };
            checked += 1;
            let tag = image.rsplit(':').next().unwrap_or("");
            let on_b = tag == opts.to || tag.starts_with(&format!("{}.", opts.to));
            let rev_ok = revision
                .as_ref()
                .is_none_or(|r| injected_revision(&p).as_deref() == Some(r));
            if !on_b || !rev_ok {
                stale.push(format!(
                    "{}/{} ({image}, revision {})",
                    p.namespace,
                    p.name,
                    injected_revision(&p).unwrap_or_default()
                ));
            }
        }
    }
    if !stale.is_empty() {
        return Err(format!(
            "after the restarts, {} of {checked} injected pod(s) do not run Istio {}'s proxy: {}",
            stale.len(),
            opts.to,
            stale.join(", ")
        ));
    }
    eprintln!(
        "upgrade: every injected pod ({checked}) runs Istio {}'s proxy",
        opts.to
    );
    Ok(())
}

/// The image of a pod's `istio-proxy` (a container, or a native sidecar).
fn proxy_image(p: &crate::targets::PodInfo) -> Option<String> {
    p.containers
        .iter()
        .chain(p.init_containers.iter())
        .find(|c| c.name == "istio-proxy")
        .map(|c| c.image.clone())
}

/// The revision Istio's injector recorded in `sidecar.istio.io/status`.
fn injected_revision(p: &crate::targets::PodInfo) -> Option<String> {
    let status: Value = serde_json::from_str(p.annotations.get("sidecar.istio.io/status")?).ok()?;
    status.get("revision")?.as_str().map(str::to_string)
}

/// Deletes the pods of Deployment `ns/name` at once (grace period 0, as `kubectl
/// delete pod --force --grace-period=0`): nothing drains; the ReplicaSet replaces them.
async fn force_delete_pods(client: &::kube::Client, ns: &str, name: &str) -> Result<(), String> {
    use k8s_openapi::api::core::v1::Pod;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = deployments
        .get(name)
        .await
        .map_err(|e| format!("cannot read Deployment {ns}/{name}: {e}"))?;
    let labels = d
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = ::kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete_collection(&dp, &::kube::api::ListParams::default().labels(&labels))
        .await
        .map_err(|e| format!("cannot delete the pods of Deployment {ns}/{name}: {e}"))?;
    eprintln!("  Deployment {ns}/{name}: pods deleted at once (no drain)");
    Ok(())
}

/// The merge patch moving a namespace to revision `rev`.
pub fn relabel_patch(rev: &str) -> Value {
    json!({"metadata": {"labels": {INJECTION_LABEL: null, REV_LABEL: rev}}})
}

/// The merge patch putting a namespace's injection labels back.
pub fn restore_patch(r: &Relabelled) -> Value {
    json!({"metadata": {"labels": {INJECTION_LABEL: r.injection, REV_LABEL: r.rev}}})
}

/// The strategic merge patch of `kubectl rollout restart` at `now` (RFC 3339).
pub fn restart_patch(now: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
}

/// `x precheck --from-version <A's major.minor> <cluster args>`: what changed in
/// behaviour since A, and whether the cluster can take B
/// (istioctl/pkg/precheck/precheck.go at 1.30.3: `Cmd`).
pub fn precheck_args(from: &str, cluster: &[String]) -> Vec<String> {
    let from = from.trim().trim_start_matches('v');
    let minor: Vec<&str> = from.splitn(3, '.').take(2).collect();
    let mut a = vec![
        "x".to_string(),
        "precheck".into(),
        "--from-version".into(),
        minor.join("."),
    ];
    a.extend(cluster.iter().cloned());
    a
}

/// `uninstall --revision R -y <cluster args>`: one revision's control plane.
pub fn uninstall_args(revision: &str, cluster: &[String]) -> Vec<String> {
    let mut a = vec![
        "uninstall".to_string(),
        "--revision".into(),
        revision.into(),
        "-y".into(),
    ];
    a.extend(cluster.iter().cloned());
    a
}

fn first_line(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .to_string()
}
