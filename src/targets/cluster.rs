//! What the cluster targets (kind, existing) share once a kube client exists:
//! applying the fixtures, waiting for rollouts, reading the live NodePorts, pods and
//! node address, diagnostics after a failed check, and cleaning up only what the run
//! created. External tools (kind, istioctl, docker) run through [`run_tool`], with a
//! timeout, in their own process group, and die with meshcheck.

use super::kube::{self as k, Applied, ApplyOptions};
use super::local::procs;
use super::{BoxFuture, PodInfo, Target, TargetError};
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use k8s_openapi::api::core::v1::{Pod, Service};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl From<k::KubeError> for TargetError {
    fn from(e: k::KubeError) -> Self {
        if e.is_bad_input() {
            TargetError::BadInput(e.to_string())
        } else {
            TargetError::Unavailable {
                target: "cluster".into(),
                why: e.to_string(),
            }
        }
    }
}

/// A spinner (or plain lines when stderr is not a terminal) for a long step, with
/// the elapsed time when it ends.
pub struct Step {
    what: String,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Step {
    pub fn start(what: impl Into<String>) -> Step {
        let what = what.into();
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_message(what.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        } else {
            eprintln!("{what} ...");
            None
        };
        Step {
            what,
            started: Instant::now(),
            bar,
        }
    }

    /// A progress line under the step (rollout status, retries).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(b) => b.set_message(format!("{}: {line}", self.what)),
            None => eprintln!("  {line}"),
        }
    }

    pub fn done(self) {
        let msg = format!(
            "{} done in {:.1}s",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        match self.bar {
            Some(b) => b.finish_with_message(msg),
            None => eprintln!("{msg}"),
        }
    }
}

/// Runs an external tool with a timeout; stdout on success, else an error with the
/// command and the end of its output. The child runs in its own process group, is
/// killed when the future is dropped, is stopped with meshcheck's other processes on
/// Ctrl-C (before the cleanups run), and on Linux dies with meshcheck.
pub async fn run_tool(
    program: &Path,
    args: &[String],
    timeout: Duration,
    what: &str,
) -> Result<String, TargetError> {
    run_tool_capturing(program, args, timeout, what)
        .await
        .map_err(|f| f.error)
}

/// A failed tool run: the error, and the tool's whole stderr (the error keeps only
/// its end) to recognise failures by.
#[derive(Debug)]
pub struct ToolFailure {
    pub error: TargetError,
    pub stderr: String,
}

/// [`run_tool`], keeping the whole stderr of a failure.
pub async fn run_tool_capturing(
    program: &Path,
    args: &[String],
    timeout: Duration,
    what: &str,
) -> Result<String, ToolFailure> {
    let fail = |why: String, stderr: String, log_tail: Option<String>| ToolFailure {
        error: TargetError::Start {
            what: what.into(),
            why,
            log_tail,
        },
        stderr,
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let shown = format!("{} {}", program.display(), args.join(" "));
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run `{shown}`: {e}"), String::new(), None))?;
    // Its process group is stopped by Ctrl-C (procs::stop_all) while it runs.
    let _group = child.id().map(procs::register_group);
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(fail(format!("`{shown}` failed: {e}"), String::new(), None)),
        Err(_) => {
            return Err(fail(
                format!("`{shown}` did not finish within {timeout:?}"),
                String::new(),
                None,
            ))
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<&str> = err.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        Err(fail(
            format!("`{shown}` exited with {}", out.status),
            err.clone(),
            Some(tail),
        ))
    }
}

/// How the fixtures go onto a cluster.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Apply the fixtures (false: check what is deployed already).
    pub apply: bool,
    pub namespace_prefix: Option<String>,
    /// `meshcheck/stub` -> the image built for this run.
    pub image_rewrite: Option<(String, String)>,
    pub rollout_timeout: Duration,
    pub crd_timeout: Duration,
    /// Delete the objects this run created when it ends.
    pub delete_created: bool,
    /// Take over fixture objects that exist already and meshcheck did not create
    /// (see [`ApplyOptions::adopt`]).
    pub adopt: bool,
    /// Where diagnostics go when the apply or a rollout fails (collected before
    /// anything is cleaned up); `None`: not collected.
    pub diagnostics_dir: Option<PathBuf>,
}

/// The `progressDeadlineSeconds` the applied Deployments get for a rollout timeout:
/// a tenth (at least 10 s, at most half) less, so that a Deployment that cannot
/// progress reports `ProgressDeadlineExceeded` before the wait gives up, instead of
/// the default 600 s deadline outliving a 300 s wait.
pub fn progress_deadline_for(rollout_timeout: Duration) -> Duration {
    let t = rollout_timeout.as_secs();
    let margin = (t / 10).max(10).min(t / 2);
    Duration::from_secs((t - margin).max(1))
}

/// `istioctl` as the diagnostics run it: on the run's cluster.
#[derive(Debug, Clone)]
pub struct Istioctl {
    pub bin: PathBuf,
    /// `--kubeconfig`; `None`: istioctl reads `$KUBECONFIG` itself (every file).
    pub kubeconfig: Option<PathBuf>,
    /// `--context`; `None`: the kubeconfig's current context.
    pub context: Option<String>,
}

impl Istioctl {
    /// `istioctl proxy-config all POD -n NS -o json` on the run's cluster.
    pub fn proxy_config_args(&self, pod: &str, namespace: &str) -> Vec<String> {
        let kubeconfig = self.kubeconfig.as_ref().map(|k| k.to_string_lossy());
        super::kind::config::istioctl_proxy_config_args(
            pod,
            namespace,
            kubeconfig.as_deref(),
            self.context.as_deref(),
        )
    }
}

/// A cluster the fixtures run on.
pub struct ClusterTarget {
    pub(crate) name: &'static str,
    pub(crate) client: ::kube::Client,
    pub(crate) node: IpAddr,
    /// Gateway Service port -> live NodePort.
    pub(crate) node_ports: BTreeMap<u16, u16>,
    pub(crate) identities: Vec<String>,
    /// The namespaces of the fixtures, as named on the cluster.
    pub(crate) namespaces: Vec<String>,
    /// Gateway pods' namespace/labels, for diagnostics.
    pub(crate) gateway_selector: Vec<(String, BTreeMap<String, String>)>,
    /// The fixtures' Services as named on the cluster (`namespace/name`).
    pub(crate) fixture_services: Vec<String>,
    pub(crate) applied: Vec<Applied>,
    pub(crate) delete_created: bool,
    pub(crate) props: Vec<(String, String)>,
    /// `istioctl` and how it reaches the cluster, for config dumps.
    pub(crate) istioctl: Option<Istioctl>,
    /// Run at shutdown (delete the kind cluster).
    pub(crate) on_shutdown: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send + Sync>>>,
    /// Interrupt-path cleanups this target registered (forgotten once it cleaned up).
    pub(crate) cleanup_ids: std::sync::Mutex<Vec<u64>>,
    pub(crate) stopped: std::sync::atomic::AtomicBool,
}

/// The namespace a fixture namespace has on the cluster.
pub fn renamed(ns: &str, prefix: Option<&str>) -> String {
    match prefix {
        Some(p) if !ns.is_empty() => format!("{p}{ns}"),
        _ => ns.to_string(),
    }
}

/// Applies (unless told not to), waits for every Deployment of the fixtures to roll
/// out, and reads what the checks need from the live objects.
pub async fn deploy(
    name: &'static str,
    client: ::kube::Client,
    fx: &Fixtures,
    mesh: &Mesh,
    opts: &DeployOptions,
    node_override: Option<IpAddr>,
) -> Result<ClusterTarget, TargetError> {
    let prefix = opts.namespace_prefix.as_deref();
    let mut target = ClusterTarget {
        name,
        client: client.clone(),
        node: IpAddr::from([127, 0, 0, 1]),
        node_ports: BTreeMap::new(),
        identities: Vec::new(),
        namespaces: Vec::new(),
        gateway_selector: Vec::new(),
        fixture_services: fx
            .objects
            .iter()
            .filter(|o| o.kind == "Service" && o.api_version == "v1")
            .map(|o| format!("{}/{}", renamed(&o.namespace, prefix), o.name))
            .collect(),
        applied: Vec::new(),
        delete_created: opts.delete_created,
        props: vec![("target".into(), name.into())],
        istioctl: None,
        on_shutdown: Default::default(),
        cleanup_ids: Default::default(),
        stopped: Default::default(),
    };
    let mut nss: Vec<String> = fx
        .objects
        .iter()
        .filter(|o| !o.namespace.is_empty())
        .map(|o| renamed(&o.namespace, prefix))
        .collect();
    nss.sort();
    nss.dedup();
    target.namespaces = nss;
    // The gateway pods' labels as the cluster has them (made unique to the run).
    let isolation = prefix.map(|p| k::Isolation::new(p, &fx.objects));
    target.gateway_selector = mesh
        .pods
        .iter()
        .filter(|p| p.role == crate::istio::PodRole::Gateway)
        .map(|p| {
            let labels = match &isolation {
                Some(i) => i.rename_labels(&p.labels),
                None => p.labels.clone(),
            };
            (renamed(&p.namespace, prefix), labels)
        })
        .collect();
    if opts.apply {
        let step = Step::start(format!(
            "applying {} objects (server-side apply)",
            fx.objects.len()
        ));
        let aopts = ApplyOptions {
            image_rewrite: opts.image_rewrite.clone(),
            namespace_prefix: opts.namespace_prefix.clone(),
            crd_timeout: opts.crd_timeout,
            adopt: opts.adopt,
            progress_deadline: Some(progress_deadline_for(opts.rollout_timeout)),
            ..ApplyOptions::default()
        };
        // What is applied is visible to the interrupt path at once: Ctrl-C mid-apply
        // deletes what this run created so far.
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Applied>::new()));
        if opts.delete_created {
            let (c, list) = (client.clone(), shared.clone());
            let id = procs::register_cleanup(Box::new(move || {
                let applied = std::mem::take(&mut *list.lock().unwrap_or_else(|e| e.into_inner()));
                delete_blocking(c, applied)
            }));
            target.cleanup_ids_mut().push(id);
        }
        let res = k::apply_each(&client, &fx.objects, &aopts, |a| {
            shared.lock().unwrap_or_else(|e| e.into_inner()).push(a)
        })
        .await;
        target.applied = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = res {
            // An object that is not ours was left alone: nothing of the run to explain.
            if !matches!(e, k::KubeError::NotOurs { .. }) {
                target.failure_diagnostics(opts).await;
            }
            return Err(e.into());
        }
        step.done();
    }
    let deployments: Vec<(String, String)> = fx
        .deployments
        .iter()
        .map(|d| (renamed(&d.namespace, prefix), d.name.clone()))
        .collect();
    let step = Step::start(format!("waiting for {} rollouts", deployments.len()));
    if let Err(e) = k::wait_rollouts(&client, &deployments, opts.rollout_timeout, &|l: &str| {
        step.note(l)
    })
    .await
    {
        // Why, from the first pod that is not ready, and the state of things before
        // the cleanup (Drop of the target, or the kind cluster's deletion) removes it.
        let why = match e.rollout_of().and_then(|d| d.split_once('/')) {
            Some((ns, d)) => k::why_not_ready(&client, ns, d).await,
            None => None,
        };
        target.failure_diagnostics(opts).await;
        return Err(match why {
            Some(why) => k::KubeError::RolloutBlocked {
                rollout: Box::new(e),
                why,
            },
            None => e,
        }
        .into());
    }
    step.done();

    // The gateway Service's live NodePorts (the API server allocates missing ones).
    for s in &mesh.ingress_services {
        let api: ::kube::Api<Service> =
            ::kube::Api::namespaced(client.clone(), &renamed(&s.namespace, prefix));
        let svc = api
            .get(&s.name)
            .await
            .map_err(|e| TargetError::Unavailable {
                target: name.into(),
                why: format!(
                    "cannot read Service {}/{}: {e}",
                    renamed(&s.namespace, prefix),
                    s.name
                ),
            })?;
        for p in svc.spec.and_then(|sp| sp.ports).unwrap_or_default() {
            if let Some(np) = p.node_port {
                target.node_ports.entry(p.port as u16).or_insert(np as u16);
            }
        }
    }
    target.node = match node_override {
        Some(ip) => ip,
        None => k::node_address(&client).await?,
    };
    target.identities = mesh
        .gateway_identities()
        .into_iter()
        .map(|id| match prefix {
            Some(p) => id.replacen("/ns/", &format!("/ns/{p}"), 1),
            None => id,
        })
        .collect();
    target
        .props
        .push(("node.address".into(), target.node.to_string()));
    Ok(target)
}

/// Deletes what a run created, from a plain thread (interrupt path), bounded in time.
fn delete_blocking(client: ::kube::Client, applied: Vec<Applied>) {
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        let _ = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                k::delete_applied(&client, &applied),
            )
            .await
        });
    }
}

impl ClusterTarget {
    /// After a failed apply or rollout: diagnostics into `opts.diagnostics_dir`.
    async fn failure_diagnostics(&self, opts: &DeployOptions) {
        let Some(dir) = &opts.diagnostics_dir else {
            return;
        };
        let _ = std::fs::remove_dir_all(dir);
        let files = tokio::time::timeout(Duration::from_secs(120), self.collect(dir.clone()))
            .await
            .unwrap_or_default();
        if !files.is_empty() {
            eprintln!(
                "diagnostics of the failed bring-up: {} file(s) in {}",
                files.len(),
                dir.display()
            );
        }
    }

    pub(crate) fn cleanup_ids_mut(&mut self) -> &mut Vec<u64> {
        self.cleanup_ids
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn on_shutdown_mut(&mut self) -> &mut Vec<Box<dyn FnOnce() + Send + Sync>> {
        self.on_shutdown
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the shutdown actions (delete the kind cluster) and forgets the
    /// interrupt-path cleanups they replace.
    fn run_shutdown_actions(&self) {
        let actions =
            std::mem::take(&mut *self.on_shutdown.lock().unwrap_or_else(|e| e.into_inner()));
        for f in actions {
            f();
        }
        let ids = std::mem::take(&mut *self.cleanup_ids.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            procs::unregister_cleanup(id);
        }
    }

    /// Deletes what the run created (unless kept) and runs the shutdown actions.
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if self.delete_created {
            let step = Step::start(format!(
                "deleting the {} object(s) this run created",
                self.applied.iter().filter(|a| a.created).count()
            ));
            if let Err(e) = k::delete_applied(&self.client, &self.applied).await {
                eprintln!("warning: cleanup: {e}");
            }
            step.done();
        }
        self.run_shutdown_actions();
    }

    async fn collect(&self, dir: PathBuf) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if std::fs::create_dir_all(&dir).is_err() {
            return out;
        }
        let write = |name: &str, text: String, out: &mut Vec<PathBuf>| {
            let p = dir.join(name);
            if std::fs::write(&p, text).is_ok() {
                out.push(p);
            }
        };
        // Pods, their logs, and events, per namespace.
        for ns in &self.namespaces {
            let pods: ::kube::Api<Pod> = ::kube::Api::namespaced(self.client.clone(), ns);
            if let Ok(list) = pods.list(&Default::default()).await {
                write(
                    &format!("{ns}.pods.json"),
                    serde_json::to_string_pretty(&list.items).unwrap_or_default(),
                    &mut out,
                );
                for p in &list.items {
                    let pname = p.metadata.name.clone().unwrap_or_default();
                    let containers = p
                        .spec
                        .as_ref()
                        .map(|s| {
                            s.containers
                                .iter()
                                .map(|c| c.name.clone())
                                .chain(s.init_containers.iter().flatten().map(|c| c.name.clone()))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    for c in containers {
                        let lp = ::kube::api::LogParams {
                            container: Some(c.clone()),
                            tail_lines: Some(500),
                            ..Default::default()
                        };
                        if let Ok(log) = pods.logs(&pname, &lp).await {
                            write(&format!("{ns}.{pname}.{c}.log"), log, &mut out);
                        }
                    }
                }
            }
            let events: ::kube::Api<k8s_openapi::api::core::v1::Event> =
                ::kube::Api::namespaced(self.client.clone(), ns);
            if let Ok(list) = events.list(&Default::default()).await {
                let text: Vec<String> = list
                    .items
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} {}/{}: {} {}",
                            e.type_.clone().unwrap_or_default(),
                            e.reason.clone().unwrap_or_default(),
                            e.involved_object.kind.clone().unwrap_or_default(),
                            e.involved_object.name.clone().unwrap_or_default(),
                            e.message.clone().unwrap_or_default(),
                            e.count.unwrap_or(1)
                        )
                    })
                    .collect();
                write(&format!("{ns}.events.txt"), text.join("\n"), &mut out);
            }
        }
        // The applied objects as the cluster has them (with status).
        let mut objs = Vec::new();
        for a in &self.applied {
            let api: ::kube::Api<::kube::api::DynamicObject> = if a.namespace.is_empty() {
                ::kube::Api::all_with(self.client.clone(), &a.api_resource)
            } else {
                ::kube::Api::namespaced_with(self.client.clone(), &a.namespace, &a.api_resource)
            };
            if let Ok(o) = api.get(&a.name).await {
                objs.push(serde_json::to_value(&o).unwrap_or_default());
            }
        }
        write(
            "applied-objects.json",
            serde_json::to_string_pretty(&objs).unwrap_or_default(),
            &mut out,
        );
        // The gateway's Envoy configuration, as istiod programmed it.
        if let Some(istioctl) = &self.istioctl {
            for (ns, labels) in &self.gateway_selector {
                let pods: ::kube::Api<Pod> = ::kube::Api::namespaced(self.client.clone(), ns);
                let sel = labels
                    .iter()
                    .filter(|(k, _)| !k.contains("istio.io/"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let lp = ::kube::api::ListParams::default().labels(&sel);
                for p in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                    let pname = p.metadata.name.unwrap_or_default();
                    let args = istioctl.proxy_config_args(&pname, ns);
                    match run_tool(
                        &istioctl.bin,
                        &args,
                        Duration::from_secs(60),
                        "istioctl proxy-config",
                    )
                    .await
                    {
                        Ok(dump) => {
                            write(&format!("{ns}.{pname}.config_dump.json"), dump, &mut out)
                        }
                        Err(e) => write(
                            &format!("{ns}.{pname}.config_dump.error.txt"),
                            e.to_string(),
                            &mut out,
                        ),
                    }
                }
            }
        }
        out
    }
}

impl Target for ClusterTarget {
    fn name(&self) -> &'static str {
        self.name
    }
    fn node_address(&self) -> IpAddr {
        self.node
    }
    fn node_port(&self, service_port: u16) -> Option<u16> {
        self.node_ports.get(&service_port).copied()
    }
    fn gateway_identities(&self) -> Vec<String> {
        self.identities.clone()
    }
    fn pods(&self) -> BoxFuture<'_, Result<Vec<PodInfo>, String>> {
        Box::pin(async move {
            k::list_pods(&self.client, &self.namespaces)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn consistency_budget(&self) -> Duration {
        Duration::from_secs(30)
    }
    fn health(&self) -> Vec<String> {
        Vec::new()
    }
    fn properties(&self) -> Vec<(String, String)> {
        self.props.clone()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(ClusterTarget::shutdown(self))
    }
    fn diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Vec<PathBuf>> {
        Box::pin(self.collect(dir.to_path_buf()))
    }
    fn seen<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<crate::stub::Echo>, String>> {
        Box::pin(async move {
            k::seen_in_logs(&self.client, &self.namespaces, id)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn other_node_ports(&self) -> BoxFuture<'_, Result<Vec<(u16, String)>, String>> {
        Box::pin(async move {
            let api: ::kube::Api<Service> = ::kube::Api::all(self.client.clone());
            let list = api
                .list(&Default::default())
                .await
                .map_err(|e| format!("listing the Services of every namespace: {e}"))?;
            Ok(other_node_ports(&list.items, &self.fixture_services))
        })
    }
}

/// The NodePorts of `services` that are not among `ours` (`namespace/name`).
pub fn other_node_ports(services: &[Service], ours: &[String]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for s in services {
        let id = format!(
            "{}/{}",
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default()
        );
        if ours.contains(&id) {
            continue;
        }
        let ports = s.spec.as_ref().and_then(|sp| sp.ports.as_ref());
        for p in ports.into_iter().flatten() {
            if let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                out.push((np, id.clone()));
            }
        }
    }
    out.sort();
    out
}

impl Drop for ClusterTarget {
    fn drop(&mut self) {
        if !self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Not shut down explicitly (an error path): still run the cleanups.
            if self.delete_created {
                let (c, a) = (self.client.clone(), std::mem::take(&mut self.applied));
                let _ = std::thread::spawn(move || delete_blocking(c, a)).join();
            }
            self.run_shutdown_actions();
        }
    }
}
