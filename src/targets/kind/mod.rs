//! The kind target: a kind cluster with a chosen Istio version, the real thing.
//!
//! Steps (each a timed, visible step): preflight (kind's provider is Docker, the
//! engine is on this host and answers; kind and istioctl cached, on PATH or
//! downloaded and sha256-verified), create (or `--reuse`)
//! the cluster with extraPortMappings for the gateway NodePorts, install Istio with
//! istioctl (profile minimal: istiod only; the gateway is the fixtures' own injected
//! Deployment) and wait until istiod is rolled out and its validating webhook accepts
//! a VirtualService, build the stub image from meshcheck's own Dockerfile and load it
//! (`docker save`, `kind load image-archive`), then apply the fixtures (shared with
//! the existing target; gateway NodePorts the fixtures leave open fixed to the
//! model's, [`node_ports`]), and on a reused cluster whose Istio was replaced restart
//! the injected workloads ([`reinstall`]). The cluster is deleted at
//! the end unless `--keep` or `--reuse`, also on Ctrl-C.

mod bring_up;
pub mod config;
mod node_ports;
mod node_scan;
mod plaintext;
mod preflight;
mod reinstall;
pub mod tools;

pub use bring_up::bring_up;
pub use preflight::{check_project_dir, preflight, project_dir};

use super::cluster::run_tool;
use super::TargetError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of the kind target.
#[derive(Debug, Clone)]
pub struct KindOptions {
    pub cluster_name: String,
    pub istio_version: String,
    /// `--set hub=` of `istioctl install`: where Istio's images are pulled from
    /// (`None`: istioctl's default, docker.io/istio).
    pub istio_hub: Option<String>,
    /// kindest/node image; default: the newest one the Istio version supports.
    pub node_image: Option<String>,
    /// Use an existing cluster of that name and keep it.
    pub reuse: bool,
    /// Keep the cluster after the run.
    pub keep: bool,
    pub tools: tools::ToolOptions,
    /// Where the Dockerfile of the stub image is (the project directory).
    pub project_dir: PathBuf,
    pub node_address: Option<IpAddr>,
    pub rollout_timeout: Duration,
    /// Where diagnostics go when the apply or a rollout fails (before the cluster
    /// is deleted).
    pub diagnostics_dir: Option<PathBuf>,
}

impl KindOptions {
    pub fn new(project_dir: PathBuf) -> Self {
        KindOptions {
            cluster_name: config::DEFAULT_CLUSTER_NAME.into(),
            istio_version: tools::ISTIO_VERSION.into(),
            istio_hub: None,
            node_image: None,
            reuse: false,
            keep: false,
            tools: tools::ToolOptions::new(false),
            project_dir,
            node_address: None,
            rollout_timeout: Duration::from_secs(300),
            diagnostics_dir: None,
        }
    }
}

fn unavailable(why: impl Into<String>) -> TargetError {
    TargetError::Unavailable {
        target: "kind".into(),
        why: why.into(),
    }
}

/// `name` on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or(None)
}

fn tool_err(e: tools::ToolError) -> TargetError {
    unavailable(e.to_string())
}

/// How long a connect to the node may take before the next address is tried.
const NODE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How an address answers a TCP connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Connected.
    Open,
    /// Refused: the address is reachable, nothing listens (yet) on the port.
    Refused,
    /// Timed out or unreachable: not from this host.
    Unreachable,
}

/// One TCP connect to `addr:port` within `timeout`.
pub async fn probe(addr: IpAddr, port: u16, timeout: Duration) -> Reach {
    let sa = std::net::SocketAddr::new(addr, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(sa)).await {
        Ok(Ok(_)) => Reach::Open,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reach::Refused,
        _ => Reach::Unreachable,
    }
}

/// Where the NodePorts answer: the node's InternalIP `internal` when a connect to the
/// gateway NodePort `port` succeeds there, else 127.0.0.1 (the cluster's
/// extraPortMappings) when that connects, else `internal`; with why, for the run's
/// output. The gateway is rolled out when this is asked, so only an open port counts:
/// a refusal may come from another host that has the node's address on an
/// overlapping network (a VPN, a second Docker network), not from the node.
pub async fn choose_node_address(
    internal: IpAddr,
    port: u16,
    loopback_port: Option<u16>,
    timeout: Duration,
) -> (IpAddr, String) {
    choose_node_address_with(internal, port, loopback_port, |a, p| probe(a, p, timeout)).await
}

/// [`choose_node_address`] with another way to probe an address and port.
/// `loopback_port`: where 127.0.0.1 publishes `port` (`None`: no mapping).
pub async fn choose_node_address_with<F, Fut>(
    internal: IpAddr,
    port: u16,
    loopback_port: Option<u16>,
    probe: F,
) -> (IpAddr, String)
where
    F: Fn(IpAddr, u16) -> Fut,
    Fut: std::future::Future<Output = Reach>,
{
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let direct = probe(internal, port).await;
    if direct == Reach::Open {
        return (internal, format!("the node's InternalIP answers on {port}"));
    }
    let how = match direct {
        Reach::Refused => "refuses connections on",
        _ => "does not answer on",
    };
    if let Some(lp) = loopback_port.filter(|_| internal != loopback) {
        if probe(loopback, lp).await == Reach::Open {
            return (
                loopback,
                format!("the node's InternalIP {internal} {how} {port} from here; 127.0.0.1:{lp} is mapped to its port {port}"),
            );
        }
    }
    (
        internal,
        format!(
            "neither the node's InternalIP nor 127.0.0.1 answers on {port}{}",
            if loopback_port.is_none() {
                " (no port mapping)"
            } else {
                ""
            }
        ),
    )
}

/// The pause between two attempts of `kind create cluster` (Istio's CI: 5 s).
const CREATE_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Attempts of `kind create cluster` for a transient failure.
const CREATE_ATTEMPTS: u32 = 5;

/// `kind create cluster` with the kubeconfig in the run's working directory, retried
/// (after deleting the half-made cluster) on a known transient failure, up to
/// [`CREATE_ATTEMPTS`] times `pause` apart; a deterministic failure
/// ([`config::deterministic_kind_failure`]) is reported at once, saying why.
pub async fn create_cluster(
    kind: &Path,
    cfg: &config::KindConfig,
    cfg_path: &Path,
    kubeconfig: &Path,
    engine_cgroup_version: Option<&str>,
    pause: Duration,
    note: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), TargetError> {
    let kc = kubeconfig.to_string_lossy();
    let args = config::create_cluster_args(cfg, &cfg_path.to_string_lossy(), &kc);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match super::cluster::run_tool_capturing(
            kind,
            &args,
            Duration::from_secs(600),
            "kind create cluster",
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(f) => f,
        };
        if let Some(why) = config::deterministic_kind_failure(
            &failure.stderr,
            &cfg.node_image,
            engine_cgroup_version,
        ) {
            return Err(match failure.error {
                TargetError::Start { what, log_tail, .. } => TargetError::Start {
                    what,
                    why,
                    log_tail,
                },
                other => other,
            });
        }
        if attempt >= CREATE_ATTEMPTS || !config::is_transient_kind_failure(&failure.stderr) {
            return Err(failure.error);
        }
        note(&format!(
            "transient failure (attempt {attempt}/{CREATE_ATTEMPTS}), retrying in {pause:?}"
        ));
        let _ = run_tool(
            kind,
            &config::delete_cluster_args(&cfg.cluster_name, &kc),
            Duration::from_secs(120),
            "kind delete cluster",
        )
        .await;
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A `kind` that records its arguments (one line per call) and whose `create`
    /// fails with `stderr` the first `failures` times.
    fn fake_kind(dir: &Path, stderr: &str, failures: u32) -> (PathBuf, PathBuf) {
        let calls = dir.join("calls");
        let count = dir.join("creates");
        let err = dir.join("stderr");
        std::fs::write(&err, stderr).unwrap();
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{calls}'\nif [ \"$1\" = create ]; then\n  n=$(cat '{count}' 2>/dev/null || echo 0)\n  echo $((n+1)) > '{count}'\n  if [ \"$n\" -lt {failures} ]; then cat '{err}' >&2; exit 1; fi\nfi\nexit 0\n",
            calls = calls.display(),
            count = count.display(),
            err = err.display(),
        );
        let kind = dir.join("kind");
        std::fs::write(&kind, script).unwrap();
        std::fs::set_permissions(&kind, std::fs::Permissions::from_mode(0o755)).unwrap();
        (kind, calls)
    }

    fn cfg() -> config::KindConfig {
        config::KindConfig::new("kindest/node:v1.35.0", vec![30080])
    }

    const KUBEADM: &str = "ERROR: failed to create cluster: failed to init node with kubeadm: command \"docker exec --privileged meshcheck-control-plane kubeadm init --config=/kind/kubeadm.conf --skipTokenPrint --v=6\" failed with error: exit status 1";

    /// The InternalIP when its NodePort answers; else loopback, where the port
    /// mappings answer (Docker Desktop); a refusal does not pin the InternalIP.
    #[tokio::test]
    async fn the_node_address_is_probed_internal_ip_first() {
        // Real connects on loopback: listening, then refused (127.0.0.2).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_millis(500);
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(probe(loopback, port, t).await, Reach::Open);
        let (a, why) = choose_node_address(loopback, port, None, t).await;
        assert_eq!(a, loopback, "{why}");
        // A refusal does not pin the address: 127.0.0.2 refuses, the mapping on
        // 127.0.0.1 answers (another host with the node's address on an overlapping
        // network refuses the same way).
        let other = IpAddr::from([127, 0, 0, 2]);
        assert_eq!(probe(other, port, t).await, Reach::Refused);
        let (a, why) = choose_node_address(other, port, Some(port), t).await;
        assert_eq!(a, loopback, "{why}");
        assert!(
            why.contains(&format!(
                "127.0.0.2 refuses connections on {port} from here"
            )),
            "{why}"
        );
        // Refused, and no mapping answers: the InternalIP, saying nothing answers.
        let (a, why) = choose_node_address(other, port, None, t).await;
        assert_eq!(a, other, "{why}");
        assert!(why.starts_with("neither"), "{why}");

        // The node's address is not reachable from here (Docker Desktop); 127.0.0.1
        // publishes its 30080 on 41234 (or does not answer).
        let node = IpAddr::from([172, 18, 0, 2]);
        let desktop = |mapped: bool| {
            move |a: IpAddr, p: u16| async move {
                match (a == loopback && p == 41234, mapped) {
                    (true, true) => Reach::Open,
                    (true, false) => Reach::Refused,
                    (false, _) => Reach::Unreachable,
                }
            }
        };
        let (a, why) = choose_node_address_with(node, 30080, Some(41234), desktop(true)).await;
        assert_eq!(a, loopback, "{why}");
        assert!(
            why.contains("172.18.0.2 does not answer on 30080 from here; 127.0.0.1:41234 is mapped to its port 30080"),
            "{why}"
        );
        let (a, why) = choose_node_address_with(node, 30080, Some(41234), desktop(false)).await;
        assert_eq!(a, node, "{why}");
        assert!(why.starts_with("neither"), "{why}");
        let (a, why) = choose_node_address_with(node, 30080, None, desktop(true)).await;
        assert_eq!(a, node, "{why}");
        assert!(why.ends_with("(no port mapping)"), "{why}");
    }

    #[tokio::test]
    async fn a_cgroup_v1_refusal_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = format!(
            "{KUBEADM}\nCommand Output: [preflight] Running pre-flight checks\n\
             \t[ERROR SystemVerification]: cgroups v1 support is unsupported and will be removed in a future release\n{}",
            "[kubelet-check] waiting\n".repeat(40)
        );
        let (kind, calls) = fake_kind(dir.path(), &stderr, 5);
        let kc = dir.path().join("kubeconfig");
        let err = create_cluster(
            &kind,
            &cfg(),
            &dir.path().join("kind.yaml"),
            &kc,
            Some("1"),
            Duration::from_millis(10),
            &|_: &str| {},
        )
        .await
        .expect_err("cgroup v1");
        let calls = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(calls.lines().count(), 1, "{calls}");
        assert!(
            calls.starts_with("create cluster --name meshcheck"),
            "{calls}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("cgroup v1") && msg.contains("not retried"),
            "{msg}"
        );
    }

    /// A transient failure is retried; the half-made cluster is deleted in between,
    /// and every call uses the run's kubeconfig, never the user's.
    #[tokio::test]
    async fn a_transient_failure_is_retried_with_the_runs_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let (kind, calls) = fake_kind(dir.path(), KUBEADM, 1);
        let kc = dir.path().join("kubeconfig");
        let notes = std::sync::Mutex::new(Vec::new());
        create_cluster(
            &kind,
            &cfg(),
            &dir.path().join("kind.yaml"),
            &kc,
            Some("2"),
            Duration::from_millis(10),
            &|l: &str| notes.lock().unwrap().push(l.to_string()),
        )
        .await
        .expect("created on the second attempt");
        let calls = std::fs::read_to_string(&calls).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls[0].starts_with("create cluster"), "{calls:?}");
        assert_eq!(
            calls[1],
            format!(
                "delete cluster --name meshcheck --kubeconfig {}",
                kc.display()
            )
        );
        assert!(calls[2].starts_with("create cluster"), "{calls:?}");
        for c in [calls[0], calls[2]] {
            assert!(c.contains(&format!("--kubeconfig {}", kc.display())), "{c}");
        }
        assert_eq!(notes.lock().unwrap().len(), 1);
    }
}
