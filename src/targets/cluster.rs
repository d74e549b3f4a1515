//! What the cluster targets (kind, existing) share once a kube client exists:
//! applying the fixtures, waiting for rollouts, reading the live NodePorts, pods and
//! node address, diagnostics after a failed check, and cleaning up only what the run
//! created. External tools (kind, istioctl, docker) run through [`run_tool`], with a
//! timeout, in their own process group, and die with meshcheck.

mod diagnostics;

use super::kube::{self as k, Applied, ApplyOptions};
use super::local::procs;
use super::{BoxFuture, PodInfo, Target, TargetError};
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use k8s_openapi::api::core::v1::Service;
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
    /// Shows `what` as started (a spinner on a terminal, else one line).
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

    /// Ends the step with its elapsed time.
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

/// Sets `cmd` up as an external tool meshcheck waits on: no stdin, output piped, its
/// own process group (stopped by Ctrl-C), killed when dropped or when meshcheck dies.
pub fn as_tool(cmd: &mut tokio::process::Command) {
    cmd.stdin(std::process::Stdio::null())
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
    cmd.args(args);
    as_tool(&mut cmd);
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
    /// `--revision R`: namespaces get `istio.io/rev=R` instead of `istio-injection`
    /// (a revision-only Istio install has no default injector).
    pub revision: Option<String>,
    /// LoadBalancer Services applied as NodePort (`--service-type NodePort`).
    pub node_port_services: bool,
    /// Where diagnostics go when the apply or a rollout fails (collected before
    /// anything is cleaned up); `None`: not collected.
    pub diagnostics_dir: Option<PathBuf>,
    /// What happens when the fixtures use the Gateway API and the cluster lacks its
    /// CRDs.
    pub gateway_api_crds: GatewayApiCrds,
}

/// What a deploy does when the fixtures hold Gateway API objects and the cluster
/// lacks the Gateway API CRDs ([`k::gateway_api::REQUIRED`]).
#[derive(Debug, Clone)]
pub enum GatewayApiCrds {
    /// Install the standard channel's CRDs the cluster lacks (kind, the sandbox, an
    /// existing cluster with `--install-gateway-api-crds`).
    Install(CrdSource),
    /// Refuse (exit 3), naming the missing CRDs and the flag: an existing cluster is
    /// not meshcheck's to change unasked. `version` is what the flag would install.
    Require { version: String },
}

impl GatewayApiCrds {
    /// Install the CRDs of `version`, from `scripts/gateway-api-crds.sh`.
    pub fn install(version: &str) -> GatewayApiCrds {
        GatewayApiCrds::Install(CrdSource::Version(version.to_string()))
    }
}

/// Where the CRDs to install come from.
#[derive(Debug, Clone)]
pub enum CrdSource {
    /// `scripts/gateway-api-crds.sh VERSION`, run when they are needed.
    Version(String),
    /// The directory the script printed earlier (the sandbox runs it before it
    /// enters its network namespace, where the module proxy is out of reach), or why
    /// it failed.
    Provided {
        version: String,
        dir: Result<PathBuf, String>,
    },
}

impl CrdSource {
    fn version(&self) -> &str {
        match self {
            CrdSource::Version(v) | CrdSource::Provided { version: v, .. } => v,
        }
    }

    /// The directory holding the CRDs.
    async fn dir(&self) -> Result<PathBuf, k::KubeError> {
        let fail = |why: String| k::KubeError::GatewayApiCrds { why };
        match self {
            CrdSource::Provided { dir, .. } => dir.clone().map_err(fail),
            CrdSource::Version(v) => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gateway-api-crds.sh");
                let out = run_tool(
                    Path::new("bash"),
                    &[script.display().to_string(), v.clone()],
                    Duration::from_secs(360),
                    "scripts/gateway-api-crds.sh",
                )
                .await
                .map_err(|e| fail(e.to_string()))?;
                let dir = out.lines().last().unwrap_or_default().trim();
                Ok(PathBuf::from(dir))
            }
        }
    }
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
    /// IstioOperator files (`-f`) each `istioctl install` or `upgrade` of the run
    /// takes: the fixtures' mesh config (kube::mesh_config::install_overlay) where
    /// meshcheck installed Istio with it.
    pub install_files: Vec<PathBuf>,
}

/// istioctl's `-f FILE` for each IstioOperator file, in order (istioctl merges them
/// in that order, the last winning).
pub fn file_args(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| ["-f".to_string(), f.display().to_string()])
        .collect()
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
    /// `--namespace-prefix`: the fixtures' namespaces are `<prefix><namespace>` here.
    pub(crate) namespace_prefix: Option<String>,
    /// Per gateway Service of the model (`namespace/name` as in the fixtures): its
    /// Service port -> live NodePort (`request.gateway`).
    pub(crate) gateway_node_ports: BTreeMap<String, BTreeMap<u16, u16>>,
    /// Gateway API Gateways (`ns/name`) -> the gateway Service in front of their
    /// pods (the model's [`Mesh::gateway_refs`]).
    pub(crate) gateway_refs: BTreeMap<String, String>,
    pub(crate) identities: Vec<String>,
    /// The namespaces of the fixtures, as named on the cluster.
    pub(crate) namespaces: Vec<String>,
    /// Gateway pods' namespace/labels, for diagnostics.
    pub(crate) gateway_selector: Vec<(String, BTreeMap<String, String>)>,
    /// The fixtures' Services as named on the cluster (`namespace/name`).
    pub(crate) fixture_services: Vec<String>,
    /// The fixtures' Deployments as named on the cluster (`namespace/name`).
    pub(crate) deployments: Vec<String>,
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
    /// How the ports check scans the node when not from here (kind behind port
    /// mappings: inside the node container).
    pub(crate) node_scan: Option<std::sync::Arc<dyn super::NodeScan>>,
    /// Where plaintext to a pod is sent from, when not from here (a kind node).
    pub(crate) plaintext_from: Option<std::sync::Arc<dyn super::plaintext::PlaintextFrom>>,
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
    let mut target = ClusterTarget::undeployed(name, client.clone(), fx, mesh, opts);
    if opts.apply {
        preflight(&client, fx, opts).await?;
        ensure_gateway_api_crds(&client, fx, opts).await?;
        target.apply_fixtures(fx, opts).await?;
    }
    target.wait_for_rollouts(fx, opts).await?;
    let services = live_ingress_services(&client, fx, mesh, prefix, opts.rollout_timeout).await?;
    target.gateway_node_ports = read_node_ports(&client, name, &services).await?;
    target.node_ports = merged_node_ports(&target.gateway_node_ports, &services);
    let lb = match node_override {
        None => load_balancer_address(&client, &services).await,
        Some(_) => None,
    };
    match lb {
        // A load balancer in front of the gateway (a cloud's, MetalLB): the checks
        // go where clients go, its address at the Service ports.
        Some(lb) => {
            eprintln!("{name}: reaching the gateway at its load balancer {lb} (status.loadBalancer.ingress)");
            target.node = lb;
            target.node_ports = target.node_ports.keys().map(|p| (*p, *p)).collect();
            for ports in target.gateway_node_ports.values_mut() {
                *ports = ports.keys().map(|p| (*p, *p)).collect();
            }
            target
                .props
                .push(("gateway.load_balancer".into(), lb.to_string()));
        }
        None => target.node = resolve_node_address(&client, node_override).await?,
    }
    target.identities = gateway_identities(mesh, prefix);
    target
        .props
        .push(("node.address".into(), target.node.to_string()));
    Ok(target)
}

/// What is checked before anything is applied: no fixture namespace is being
/// deleted, the fixtures' mesh config is the cluster's (kube/mesh_config.rs), and the
/// fixtures' injection labels reach an injector of the cluster.
async fn preflight(
    client: &::kube::Client,
    fx: &Fixtures,
    opts: &DeployOptions,
) -> Result<(), TargetError> {
    let unavailable = |why: String| TargetError::Unavailable {
        target: "cluster".into(),
        why,
    };
    let namespaces = fixture_namespaces(fx, opts.namespace_prefix.as_deref());
    if let Some(why) = k::terminating_namespace(client, &namespaces).await? {
        return Err(unavailable(why));
    }
    if let Some(why) = k::mesh_config::mismatch(client, fx)
        .await
        .map_err(unavailable)?
    {
        return Err(unavailable(why));
    }
    let wanted = fx.objects.iter().any(k::injection::asks_for_injection);
    if wanted {
        let injectors = k::injection::injectors(client).await?;
        if let Some(why) = injectors.refusal(wanted, opts.revision.as_deref()) {
            return Err(unavailable(why));
        }
    }
    Ok(())
}

/// Before the fixtures are applied: when they hold Gateway API objects, the Gateway
/// API CRDs the cluster lacks are installed (and waited for until established), or
/// refused with the flag that would install them ([`GatewayApiCrds`]). Nothing is
/// sent when the cluster has them all.
async fn ensure_gateway_api_crds(
    client: &::kube::Client,
    fx: &Fixtures,
    opts: &DeployOptions,
) -> Result<(), TargetError> {
    use k::gateway_api as gw;
    if !gw::needs_crds(&fx.objects) {
        return Ok(());
    }
    let missing = gw::missing(client, &gw::REQUIRED).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let source = match &opts.gateway_api_crds {
        GatewayApiCrds::Require { version } => {
            return Err(k::KubeError::GatewayApiCrdsMissing {
                missing,
                version: version.clone(),
            }
            .into())
        }
        GatewayApiCrds::Install(source) => source,
    };
    let step = Step::start(format!(
        "installing the Gateway API CRDs {} (standard channel; missing: {})",
        source.version(),
        missing.join(", ")
    ));
    let dir = source.dir().await?;
    let crds = gw::load_crds(&dir)?;
    let applied = gw::install(client, &crds, opts.crd_timeout).await?;
    step.note(&format!("applied and established: {}", applied.join(", ")));
    step.done();
    Ok(())
}

/// The `namespace/name` of the fixtures' Services as named on the cluster, with the
/// Services istiod's deployment controller creates for managed Gateways (by their
/// default name, `<gateway>-<class>`).
fn fixture_service_ids(fx: &Fixtures, prefix: Option<&str>) -> Vec<String> {
    let own = fx
        .objects
        .iter()
        .filter(|o| o.kind == "Service" && o.api_version == "v1")
        .map(|o| format!("{}/{}", renamed(&o.namespace, prefix), o.name));
    let generated = fx
        .services
        .iter()
        .filter(|s| managed_gateway_of(&s.spec.metadata.labels).is_some())
        .map(|s| format!("{}/{}", renamed(&s.namespace, prefix), s.name));
    own.chain(generated).collect()
}

/// The Gateway whose automated deployment an object is: the value of
/// `gateway.networking.k8s.io/gateway-name` on objects labelled
/// `gateway.istio.io/managed: istio.io-gateway-controller`
/// (pilot/pkg/config/kube/gatewaycommon/deploymentcontroller.go).
fn managed_gateway_of(labels: &crate::fixtures::k8s::Labels) -> Option<&str> {
    use crate::fixtures::gateway_api::{GATEWAY_NAME_LABEL, MANAGED_LABEL, MANAGED_VALUE};
    if labels.get(MANAGED_LABEL).map(String::as_str) != Some(MANAGED_VALUE) {
        return None;
    }
    labels.get(GATEWAY_NAME_LABEL).map(String::as_str)
}

/// A gateway Service of the model (`id`: `namespace/name` as in the fixtures) and
/// where it is on the cluster.
struct LiveService {
    id: String,
    namespace: String,
    name: String,
}

/// The gateway Services as they are on the cluster: the
/// fixtures' own by name, and for a managed Gateway the Service istiod's deployment
/// controller created, found by its labels (`gateway.networking.k8s.io/gateway-name`
/// and `gateway.istio.io/managed`; its name is `<gateway>-<class>` unless the
/// Gateway overrides it), waited for at most `timeout` (istiod creates it
/// asynchronously, after the Gateway is applied).
async fn live_ingress_services(
    client: &::kube::Client,
    fx: &Fixtures,
    mesh: &Mesh,
    prefix: Option<&str>,
    timeout: Duration,
) -> Result<Vec<LiveService>, TargetError> {
    let mut out = Vec::new();
    for s in &mesh.ingress_services {
        let ns = renamed(&s.namespace, prefix);
        let id = format!("{}/{}", s.namespace, s.name);
        let generated = fx
            .services
            .iter()
            .find(|i| i.namespace == s.namespace && i.name == s.name)
            .and_then(|i| managed_gateway_of(&i.spec.metadata.labels));
        let Some(gateway) = generated else {
            out.push(LiveService {
                id,
                namespace: ns,
                name: s.name.clone(),
            });
            continue;
        };
        use crate::fixtures::gateway_api::{GATEWAY_NAME_LABEL, MANAGED_LABEL, MANAGED_VALUE};
        let selector = format!("{GATEWAY_NAME_LABEL}={gateway},{MANAGED_LABEL}={MANAGED_VALUE}");
        let api: ::kube::Api<Service> = ::kube::Api::namespaced(client.clone(), &ns);
        let what = format!(
            "the Service istiod's deployment controller creates for the managed Gateway {ns}/{gateway} (labelled {selector})"
        );
        let name = k::wait_for(&what, timeout, Duration::from_millis(500), || {
            let (api, selector) = (api.clone(), selector.clone());
            async move {
                let lp = ::kube::api::ListParams::default().labels(&selector);
                Ok(match api.list(&lp).await {
                    Ok(list) => match list.items.into_iter().find_map(|s| s.metadata.name) {
                        Some(name) => k::Check::Ready(name),
                        None => k::Check::Pending("not created yet".into()),
                    },
                    Err(e) => k::Check::Pending(format!("cannot list Services: {e}")),
                })
            }
        })
        .await?;
        out.push(LiveService {
            id,
            namespace: ns,
            name,
        });
    }
    Ok(out)
}

/// The fixtures' namespaces as named on the cluster, sorted, each once.
fn fixture_namespaces(fx: &Fixtures, prefix: Option<&str>) -> Vec<String> {
    let mut nss: Vec<String> = fx
        .objects
        .iter()
        .filter(|o| !o.namespace.is_empty())
        .map(|o| renamed(&o.namespace, prefix))
        .collect();
    nss.sort();
    nss.dedup();
    nss
}

/// The gateway pods' namespace and labels as the cluster has them (made unique to the run).
fn gateway_selector(
    fx: &Fixtures,
    mesh: &Mesh,
    prefix: Option<&str>,
) -> Vec<(String, BTreeMap<String, String>)> {
    let isolation = prefix.map(|p| k::Isolation::new(p, &fx.objects));
    mesh.pods
        .iter()
        .filter(|p| p.role == crate::istio::PodRole::Gateway)
        .map(|p| {
            let labels = match &isolation {
                Some(i) => i.rename_labels(&p.labels),
                None => p.labels.clone(),
            };
            (renamed(&p.namespace, prefix), labels)
        })
        .collect()
}

/// How [`k::apply_each`] applies the fixtures for `opts`.
fn apply_options(opts: &DeployOptions) -> ApplyOptions {
    ApplyOptions {
        image_rewrite: opts.image_rewrite.clone(),
        namespace_prefix: opts.namespace_prefix.clone(),
        crd_timeout: opts.crd_timeout,
        adopt: opts.adopt,
        progress_deadline: Some(progress_deadline_for(opts.rollout_timeout)),
        revision: opts.revision.clone(),
        node_port_services: opts.node_port_services,
        ..ApplyOptions::default()
    }
}

/// The fixtures' Deployments (`namespace`, `name`) as named on the cluster.
fn fixture_deployments(fx: &Fixtures, prefix: Option<&str>) -> Vec<(String, String)> {
    fx.deployments
        .iter()
        .map(|d| (renamed(&d.namespace, prefix), d.name.clone()))
        .collect()
}

/// A failed rollout wait, with why the first pod that is not ready is not, if known.
async fn explain_rollout_failure(client: &::kube::Client, e: k::KubeError) -> k::KubeError {
    let why = match e.rollout_of().and_then(|d| d.split_once('/')) {
        Some((ns, d)) => k::why_not_ready(client, ns, d).await,
        None => None,
    };
    match why {
        Some(why) => k::KubeError::RolloutBlocked {
            rollout: Box::new(e),
            why,
        },
        None => e,
    }
}

/// The gateway Services' live NodePorts by Service port (the API server allocates
/// missing ones).
async fn read_node_ports(
    client: &::kube::Client,
    target: &'static str,
    services: &[LiveService],
) -> Result<BTreeMap<String, BTreeMap<u16, u16>>, TargetError> {
    let mut out = BTreeMap::new();
    for LiveService {
        id,
        namespace: ns,
        name,
    } in services
    {
        let node_ports: &mut BTreeMap<u16, u16> = out.entry(id.clone()).or_default();
        let api: ::kube::Api<Service> = ::kube::Api::namespaced(client.clone(), ns);
        let svc = api.get(name).await.map_err(|e| TargetError::Unavailable {
            target: target.into(),
            why: format!("cannot read Service {ns}/{name}: {e}"),
        })?;
        for p in svc.spec.and_then(|sp| sp.ports).unwrap_or_default() {
            if let Some(np) = p.node_port {
                node_ports.entry(p.port as u16).or_insert(np as u16);
            }
        }
    }
    Ok(out)
}

/// Service port -> NodePort over every gateway Service, the first (in the model's
/// order) having a port winning: the ingress, for requests naming no gateway.
fn merged_node_ports(
    per_service: &BTreeMap<String, BTreeMap<u16, u16>>,
    services: &[LiveService],
) -> BTreeMap<u16, u16> {
    let mut merged = BTreeMap::new();
    for s in services {
        for (port, np) in per_service.get(&s.id).into_iter().flatten() {
            merged.entry(*port).or_insert(*np);
        }
    }
    merged
}

/// The address of the gateway Service's load balancer (`status.loadBalancer.ingress`:
/// its `ip`, else its `hostname` resolved), when it has one.
async fn load_balancer_address(
    client: &::kube::Client,
    services: &[LiveService],
) -> Option<IpAddr> {
    for LiveService {
        namespace: ns,
        name,
        ..
    } in services
    {
        let api: ::kube::Api<Service> = ::kube::Api::namespaced(client.clone(), ns);
        let svc = api.get(name).await.ok()?;
        let ingress = svc.status?.load_balancer?.ingress?;
        for i in ingress {
            if let Some(ip) = i.ip.as_deref().and_then(|ip| ip.parse().ok()) {
                return Some(ip);
            }
            if let Some(host) = i.hostname {
                let mut addrs = tokio::net::lookup_host((host.as_str(), 80)).await.ok()?;
                return addrs.next().map(|a| a.ip());
            }
        }
    }
    None
}

/// The address the NodePorts are reached at: `node_override`, else the cluster's node's.
async fn resolve_node_address(
    client: &::kube::Client,
    node_override: Option<IpAddr>,
) -> Result<IpAddr, TargetError> {
    Ok(match node_override {
        Some(ip) => ip,
        None => k::node_address(client).await?,
    })
}

/// The gateways' SPIFFE identities, with the run's namespace prefix.
fn gateway_identities(mesh: &Mesh, prefix: Option<&str>) -> Vec<String> {
    mesh.gateway_identities()
        .into_iter()
        .map(|id| match prefix {
            Some(p) => id.replacen("/ns/", &format!("/ns/{p}"), 1),
            None => id,
        })
        .collect()
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
    /// The target before anything is applied: names, selectors and properties only.
    fn undeployed(
        name: &'static str,
        client: ::kube::Client,
        fx: &Fixtures,
        mesh: &Mesh,
        opts: &DeployOptions,
    ) -> ClusterTarget {
        let prefix = opts.namespace_prefix.as_deref();
        ClusterTarget {
            name,
            client,
            node: IpAddr::from([127, 0, 0, 1]),
            node_ports: BTreeMap::new(),
            namespace_prefix: prefix.map(str::to_string),
            gateway_node_ports: BTreeMap::new(),
            gateway_refs: mesh.gateway_refs.clone(),
            identities: Vec::new(),
            namespaces: fixture_namespaces(fx, prefix),
            gateway_selector: gateway_selector(fx, mesh, prefix),
            fixture_services: fixture_service_ids(fx, prefix),
            deployments: fixture_deployments(fx, prefix)
                .into_iter()
                .map(|(ns, name)| format!("{ns}/{name}"))
                .collect(),
            applied: Vec::new(),
            delete_created: opts.delete_created,
            props: vec![("target".into(), name.into())],
            istioctl: None,
            on_shutdown: Default::default(),
            cleanup_ids: Default::default(),
            stopped: Default::default(),
            node_scan: None,
            plaintext_from: None,
        }
    }

    /// Applies the fixtures server-side, recording what was applied; diagnostics
    /// when that fails on an object of the run.
    async fn apply_fixtures(
        &mut self,
        fx: &Fixtures,
        opts: &DeployOptions,
    ) -> Result<(), TargetError> {
        let step = Step::start(format!(
            "applying {} objects (server-side apply)",
            fx.objects.len()
        ));
        let aopts = apply_options(opts);
        // What is applied is visible to the interrupt path at once: Ctrl-C mid-apply
        // deletes what this run created so far.
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Applied>::new()));
        if opts.delete_created {
            self.delete_on_interrupt(shared.clone());
        }
        // The installation's mesh config is compared (preflight), never applied.
        let objects: Vec<crate::fixtures::Object> = fx
            .objects
            .iter()
            .filter(|o| !crate::fixtures::mesh_config::is_mesh_config(o))
            .cloned()
            .collect();
        let res = k::apply_each(&self.client, &objects, &aopts, |a| {
            shared.lock().unwrap_or_else(|e| e.into_inner()).push(a)
        })
        .await;
        self.applied = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = res {
            // An object that is not ours was left alone: nothing of the run to explain.
            if !matches!(e, k::KubeError::NotOurs { .. }) {
                self.failure_diagnostics(opts).await;
            }
            return Err(e.into());
        }
        step.done();
        Ok(())
    }

    /// Registers an interrupt-path cleanup deleting what `applied` holds by then.
    fn delete_on_interrupt(&mut self, applied: std::sync::Arc<std::sync::Mutex<Vec<Applied>>>) {
        let (c, list) = (self.client.clone(), applied);
        let id = procs::register_cleanup(Box::new(move || {
            let applied = std::mem::take(&mut *list.lock().unwrap_or_else(|e| e.into_inner()));
            delete_blocking(c, applied)
        }));
        self.cleanup_ids_mut().push(id);
    }

    /// Waits for every Deployment of the fixtures to roll out; diagnostics and why
    /// when one does not.
    async fn wait_for_rollouts(
        &self,
        fx: &Fixtures,
        opts: &DeployOptions,
    ) -> Result<(), TargetError> {
        let deployments = fixture_deployments(fx, opts.namespace_prefix.as_deref());
        let step = Step::start(format!("waiting for {} rollouts", deployments.len()));
        if let Err(e) = k::wait_rollouts(
            &self.client,
            &deployments,
            opts.rollout_timeout,
            &|l: &str| step.note(l),
        )
        .await
        {
            // Why, from the first pod that is not ready, and the state of things before
            // the cleanup (Drop of the target, or the kind cluster's deletion) removes it.
            let e = explain_rollout_failure(&self.client, e).await;
            self.failure_diagnostics(opts).await;
            return Err(e.into());
        }
        step.done();
        Ok(())
    }

    /// The interrupt-path cleanups this target forgets at shutdown (it cleans up then).
    pub(crate) fn cleanup_ids_mut(&mut self) -> &mut Vec<u64> {
        self.cleanup_ids
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Actions run at shutdown, after the created objects are deleted (e.g. deleting
    /// the kind cluster).
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
    fn node_port_via(&self, gateway: &str, service_port: u16) -> Option<u16> {
        let service = self
            .gateway_refs
            .get(gateway)
            .map_or(gateway, String::as_str);
        self.gateway_node_ports
            .get(service)?
            .get(&service_port)
            .copied()
    }
    fn gateway_identities(&self) -> Vec<String> {
        self.identities.clone()
    }
    fn gateway_api_status<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::fixtures::gateway_api::ObjectStatus>, String>> {
        let prefix = self.namespace_prefix.clone();
        Box::pin(async move {
            let ns = renamed(namespace, prefix.as_deref());
            let unrename = |n: &str| match &prefix {
                Some(p) => n.strip_prefix(p.as_str()).unwrap_or(n).to_string(),
                None => n.to_string(),
            };
            super::kube::gateway_status::read(&self.client, kind, &ns, name, unrename).await
        })
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
    fn node_scan(&self) -> Option<std::sync::Arc<dyn super::NodeScan>> {
        self.node_scan.clone()
    }
    fn plaintext_to_pod(
        &self,
        addr: std::net::SocketAddr,
        connect: Duration,
        answer: Duration,
    ) -> super::BoxFuture<'_, super::plaintext::PlaintextAnswer> {
        match &self.plaintext_from {
            Some(from) => from.send(addr, connect, answer),
            None => Box::pin(super::plaintext::from_here(addr, connect, answer)),
        }
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
