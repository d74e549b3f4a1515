//! The sandbox's Kubernetes control plane, as processes in the node namespace: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kwok (the node, and pod
//! addresses) and kube-proxy (NodePorts as iptables rules), each started with the
//! flags documented in ../shared/reference/REAL-CONTROL-PLANE.md, logging to its own
//! file, registered with the process registry (stopped on every exit path).

use super::binaries::KubeBins;
use super::netns::{NODE_IP, POD_CIDR};
use super::pki::{self, Pki};
use super::SandboxError;
use crate::targets::local::procs;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, PostParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The API server's address in the node namespace.
pub const API_SERVER: &str = "https://127.0.0.1:6443";
/// The Service range, and its first address (`kubernetes.default`).
const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: [u8; 4] = [10, 96, 0, 1];
/// The one node, played by kwok.
pub const NODE_NAME: &str = "sandbox-node";
/// How long the control plane may take to come up (about 6 s here; more on a busy
/// machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The running control plane.
pub struct ControlPlane {
    /// The process registry's owner of every process here.
    pub owner: u64,
    pub dir: PathBuf,
    pub pki: Pki,
    pub client: kube::Client,
}

/// A component of the stack: its name, program and arguments.
struct Component {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

fn arg(s: &str) -> String {
    s.to_string()
}

fn etcd(bins: &KubeBins, dir: &Path) -> Component {
    let data = dir.join("etcd");
    Component {
        name: "etcd",
        program: bins.bin("etcd"),
        args: vec![
            arg("--name=sandbox"),
            format!("--data-dir={}", data.display()),
            arg("--listen-client-urls=http://127.0.0.1:2379"),
            arg("--advertise-client-urls=http://127.0.0.1:2379"),
            arg("--listen-peer-urls=http://127.0.0.1:2380"),
            arg("--initial-advertise-peer-urls=http://127.0.0.1:2380"),
            arg("--initial-cluster=sandbox=http://127.0.0.1:2380"),
            arg("--listen-metrics-urls=http://127.0.0.1:2381"),
            // A throwaway cluster on tmpfs: no fsync.
            arg("--unsafe-no-fsync"),
            arg("--log-level=warn"),
        ],
    }
}

fn apiserver(bins: &KubeBins, pki: &Pki) -> Component {
    Component {
        name: "kube-apiserver",
        program: bins.bin("kube-apiserver"),
        args: vec![
            arg("--etcd-servers=http://127.0.0.1:2379"),
            arg("--bind-address=127.0.0.1"),
            arg("--advertise-address=127.0.0.1"),
            arg("--secure-port=6443"),
            format!("--tls-cert-file={}", pki.apiserver_cert.display()),
            format!("--tls-private-key-file={}", pki.apiserver_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            arg("--authorization-mode=Node,RBAC"),
            arg("--allow-privileged=true"),
            // The default reconciler writes the advertise address (loopback) into the
            // `kubernetes` Endpoints, which their validation refuses.
            arg("--endpoint-reconciler-type=none"),
            arg("--enable-priority-and-fairness=false"),
            arg("--profiling=false"),
        ],
    }
}

fn controller_manager(bins: &KubeBins, pki: &Pki) -> Component {
    let kc = pki.kubeconfig("controller-manager").display().to_string();
    Component {
        name: "kube-controller-manager",
        program: bins.bin("kube-controller-manager"),
        args: vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            arg("--bind-address=127.0.0.1"),
            arg("--leader-elect=false"),
            arg("--use-service-account-credentials=true"),
            format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            // The node's heartbeats come from kwok, which a loaded 2-core machine can
            // starve past the default 50 s: the node lifecycle controller would then
            // mark the node NotReady and every pod Ready=False (MarkPodsNotReady), a
            // failure of the test bed, not of what runs on it.
            arg("--node-monitor-grace-period=3m"),
        ],
    }
}

fn scheduler(bins: &KubeBins, pki: &Pki) -> Component {
    let kc = pki.kubeconfig("scheduler").display().to_string();
    Component {
        name: "kube-scheduler",
        program: bins.bin("kube-scheduler"),
        args: vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            arg("--bind-address=127.0.0.1"),
            arg("--leader-elect=false"),
        ],
    }
}

fn kwok(bins: &KubeBins, pki: &Pki, stages: &Path) -> Component {
    Component {
        name: "kwok",
        program: bins.bin("kwok"),
        args: vec![
            format!("--kubeconfig={}", pki.kubeconfig("admin").display()),
            format!("--config={}", stages.display()),
            arg("--manage-all-nodes=false"),
            arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"),
            format!("--node-ip={NODE_IP}"),
            arg("--server-address=127.0.0.1:10247"),
        ],
    }
}

fn kube_proxy(bins: &KubeBins, pki: &Pki) -> Component {
    Component {
        name: "kube-proxy",
        program: bins.bin("kube-proxy"),
        args: vec![
            format!("--kubeconfig={}", pki.kubeconfig("kube-proxy").display()),
            format!("--hostname-override={NODE_NAME}"),
            arg("--proxy-mode=iptables"),
            arg("--cluster-cidr=10.244.0.0/16"),
            // NodePorts on the node's address, as on a real node (not on 127.0.0.1).
            arg("--nodeport-addresses=primary"),
            // Conntrack limits are the host's business (and not settable here).
            arg("--conntrack-max-per-core=0"),
            arg("--metrics-bind-address=127.0.0.1:10249"),
            arg("--healthz-bind-address=127.0.0.1:10256"),
        ],
    }
}

/// meshcheck's pod stages for kwok: a scheduled pod gets its address and stays
/// Pending with nothing ready; the sandbox's kubelet (kubelet.rs) starts its
/// processes, reports them and their readiness, and finishes a deleted pod. kwok's own
/// stages bring the node up and keep its lease.
const POD_STAGES: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: meshcheck-pod-address
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.spec.nodeName'
      operator: 'Exists'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
  next:
    statusTemplate: |
      {{ $hostIPs := NodeIPsWith .spec.nodeName }}
      {{ with $hostIPs }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Pending
"#;

/// Writes kwok's configuration: its node stages (from its module, beside the
/// binaries) and meshcheck's pod stage.
fn write_stages(bins: &KubeBins, dir: &Path) -> Result<PathBuf, SandboxError> {
    let mut all = String::new();
    for f in ["node-initialize.yaml", "node-heartbeat-with-lease.yaml"] {
        let path = bins.dir.join(f);
        let text = std::fs::read_to_string(&path).map_err(|e| SandboxError::io(&path, e))?;
        all.push_str(&text);
        all.push_str("\n---\n");
    }
    all.push_str(POD_STAGES);
    let path = dir.join("kwok-stages.yaml");
    std::fs::write(&path, all).map_err(|e| SandboxError::io(&path, e))?;
    Ok(path)
}

/// Starts `c`, logging to `logs/<name>.log`.
fn spawn(owner: u64, c: &Component, logs: &Path) -> Result<(), SandboxError> {
    let mut cmd = Command::new(&c.program);
    cmd.args(&c.args).current_dir(logs);
    let log = logs.join(format!("{}.log", c.name));
    procs::spawn(owner, c.name, &mut cmd, &log)
        .map(|_| ())
        .map_err(|e| SandboxError::Component {
            name: c.name.to_string(),
            why: format!("cannot start {}: {e}", c.program.display()),
            log_tail: None,
        })
}

/// The first component of `owner` that died, as an error with the end of its log.
pub fn casualty(owner: u64) -> Option<SandboxError> {
    let (name, how, log) = procs::casualties(owner).into_iter().next()?;
    let tail = log_tail(&log, 15);
    let why = if tail.contains("address already in use") {
        format!("{how}: a port it needs is in use")
    } else {
        how
    };
    Some(SandboxError::Component {
        name,
        why,
        log_tail: Some(tail),
    })
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `ready` every 100 ms until it holds, a component of `owner` dies, or
/// `timeout` passes.
pub async fn wait_for<F, Fut>(
    owner: u64,
    what: &str,
    timeout: Duration,
    mut ready: F,
) -> Result<(), SandboxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(e) = casualty(owner) {
            return Err(e);
        }
        match tokio::time::timeout(Duration::from_secs(5), ready()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer within 5s".into(),
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::NotReady {
                what: what.to_string(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client for the admin kubeconfig (no version check: the server may not be up).
async fn admin_client(pki: &Pki) -> Result<kube::Client, SandboxError> {
    let path = pki.kubeconfig("admin");
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| SandboxError::Kube(format!("{}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| SandboxError::Kube(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| SandboxError::Kube(e.to_string()))
}

/// `GET path` on the API server answers 200.
async fn api_ok(client: &kube::Client, path: &str) -> Result<bool, String> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(req)
        .await
        .map(|body| body.trim() == "ok")
        .map_err(|e| e.to_string())
}

/// The kwok node: pods are scheduled to it, kwok keeps it Ready, kube-proxy reads its
/// address, and its `podCIDR` is where pod addresses come from.
fn node() -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
    }))
    .expect("a valid Node")
}

/// Whether the node is Ready with its InternalIP (kwok has taken it over).
async fn node_ready(client: &kube::Client) -> Result<bool, String> {
    let node = Api::<Node>::all(client.clone())
        .get(NODE_NAME)
        .await
        .map_err(|e| e.to_string())?;
    let has_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .is_some_and(|a| a.iter().any(|a| a.type_ == "InternalIP"));
    Ok(has_ip && crate::targets::kube::node_ready(&node))
}

/// The `default` ServiceAccount exists (the controller-manager works).
async fn default_service_account(client: &kube::Client) -> Result<bool, String> {
    match Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .get_opt("default")
        .await
    {
        Ok(sa) => Ok(sa.is_some()),
        Err(e) => Err(e.to_string()),
    }
}

/// kube-proxy has synced its rules once.
async fn kube_proxy_healthy() -> Result<bool, String> {
    let client = reqwest::Client::new();
    match client.get("http://127.0.0.1:10256/healthz").send().await {
        Ok(r) => Ok(r.status().is_success()),
        Err(e) => Err(e.to_string()),
    }
}

/// How many times kwok is started before its death is the sandbox's failure.
const KWOK_STARTS: usize = 2;

/// Whether `e` is kwok's own startup crash: kwok v0.8.0 builds a stage's CEL
/// environment lazily (pkg/utils/lifecycle Stage.init, unguarded), and its node and
/// pod workers can do so at once and panic. Seen once in many starts; another start
/// goes through.
fn kwok_setup_race(e: &SandboxError) -> bool {
    matches!(e, SandboxError::Component { name, log_tail: Some(tail), .. }
        if name == "kwok" && tail.contains("lifecycle.(*Stage).init"))
}

/// Starts the control plane in `dir` (in the node namespace of the calling thread)
/// and waits until it serves: the API ready, the node Ready, the controllers and
/// kube-proxy working.
pub async fn start(bins: &KubeBins, dir: &Path) -> Result<ControlPlane, SandboxError> {
    let owner = procs::new_owner();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| SandboxError::io(&logs, e))?;
    let pki = pki::create(dir, API_SERVER, SERVICE_IP.into())?;
    spawn(owner, &etcd(bins, dir), &logs)?;
    spawn(owner, &apiserver(bins, &pki), &logs)?;
    let client = admin_client(&pki).await?;
    wait_for(owner, "the API server (/readyz)", START_TIMEOUT, || {
        api_ok(&client, "/readyz")
    })
    .await?;
    spawn(owner, &controller_manager(bins, &pki), &logs)?;
    spawn(owner, &scheduler(bins, &pki), &logs)?;
    let stages = write_stages(bins, dir)?;
    spawn(owner, &kwok(bins, &pki, &stages), &logs)?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node())
        .await
        .map_err(|e| SandboxError::Kube(format!("cannot create the node: {e}")))?;
    let mut kwok_starts = 1;
    loop {
        match wait_for(owner, "the kwok node", START_TIMEOUT, || {
            node_ready(&client)
        })
        .await
        {
            Err(e) if kwok_starts < KWOK_STARTS && kwok_setup_race(&e) => {
                eprintln!("sandbox: kwok died in its startup race (kwok v0.8.0 sets up a stage's CEL environment from two workers at once); starting it again");
                procs::kill_now(owner, "kwok");
                spawn(owner, &kwok(bins, &pki, &stages), &logs)?;
                kwok_starts += 1;
            }
            other => break other?,
        }
    }
    spawn(owner, &kube_proxy(bins, &pki), &logs)?;
    wait_for(
        owner,
        "the controller-manager (the default ServiceAccount)",
        START_TIMEOUT,
        || default_service_account(&client),
    )
    .await?;
    wait_for(
        owner,
        "kube-proxy (/healthz)",
        START_TIMEOUT,
        kube_proxy_healthy,
    )
    .await?;
    Ok(ControlPlane {
        owner,
        dir: dir.to_path_buf(),
        pki,
        client,
    })
}

impl ControlPlane {
    /// The component logs, for diagnostics.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Stops every component (SIGTERM, grace, SIGKILL).
    pub fn stop(&self, grace: Duration) {
        procs::stop_owner(self.owner, grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn died(name: &str, tail: &str) -> SandboxError {
        SandboxError::Component {
            name: name.into(),
            why: "exited with status 2".into(),
            log_tail: Some(tail.into()),
        }
    }

    #[test]
    fn only_kwoks_own_startup_race_starts_it_again() {
        let race = "sigs.k8s.io/kwok/pkg/utils/lifecycle.(*Stage).init(0xac59b3e4000, 0xac59b8ce1b0)\n\tsigs.k8s.io/kwok@v0.8.0/pkg/utils/lifecycle/lifecycle.go:215 +0x31b";
        assert!(kwok_setup_race(&died("kwok", race)));
        // Another death of kwok, or another component's, is the sandbox's failure.
        assert!(!kwok_setup_race(&died(
            "kwok",
            "flag provided but not defined: -x"
        )));
        assert!(!kwok_setup_race(&died("kube-scheduler", race)));
        assert!(!kwok_setup_race(&SandboxError::NotReady {
            what: "the kwok node".into(),
            timeout: Duration::from_secs(1),
            last: String::new(),
        }));
    }
}
