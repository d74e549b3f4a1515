//! The local target: the fixtures programmed into real Envoy processes on loopback,
//! the way Istio would program them. One gateway Envoy per gateway pod, listening on
//! the node address at each NodePort its Gateway servers use; per app pod a stub
//! process on its own 127.x address and, when Istio would inject one, a sidecar in
//! front of it with per-run mTLS identities, served by a sidecar host Envoy that
//! serves many pods' sidecars (sidecars.rs).
//!
//! Addresses (addresses.rs): each run takes free blocks 127.A.B.0/24 (an flock'ed lock
//! file per block keeps concurrent runs apart): the node is .1 of the first, pods and
//! then the apps behind sidecars (the pod's "localhost") take .10-.249 of as many
//! blocks as they need. Admin interfaces are unix sockets, so the node address shows
//! only what the fixtures expose.

pub mod addresses;
pub mod certs;
mod envoy;
pub(crate) use envoy::{apply_policy as envoy_cluster_policy, route as envoy_route};
mod forker;
mod istiod;
pub mod procs;
pub mod provision;
mod reconfigure;
mod sidecars;
mod start;
mod version_stamp;

use super::{ContainerInfo, PodInfo, Target, TargetError};

use crate::istio::{Mesh, PodRole, SidecarShape};
use crate::timeouts::Timeouts;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Options of the local target.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Program and arguments that run the stub backend (`meshcheck stub`, or the
    /// `meshcheck-stub` binary).
    pub stub_command: Vec<OsString>,
    /// Keep the working directory (configs, logs, certificates) after the run.
    pub keep: bool,
    pub show_progress: bool,
    /// The sidecar shape reported for injected pods (Istio 1.27+ on Kubernetes 1.33+
    /// injects native sidecars).
    pub sidecar_shape: SidecarShape,
    pub timeouts: Timeouts,
    /// `--control-plane istiod`: the gateways serve what istiod generated (the oracle's
    /// answer, with Istio-only extensions switched off by istiod's flags).
    pub istiod: Option<std::sync::Arc<crate::oracle::output::Output>>,
    /// Proxies can be restarted under traffic (Envoy hot restart: the new process
    /// takes the listening sockets over, the old one drains), as an upgrade's rolling
    /// restart needs. Off by default: hot restart leaves shared memory to clean up.
    pub restartable: bool,
}

impl LocalOptions {
    pub fn new(stub_command: Vec<OsString>) -> Self {
        LocalOptions {
            stub_command,
            keep: false,
            show_progress: false,
            sidecar_shape: SidecarShape::default(),
            timeouts: Timeouts::default(),
            istiod: None,
            restartable: false,
        }
    }
}

/// What runs for one pod.
#[derive(Debug, Clone)]
struct RunningPod {
    index: usize,
    app: Option<String>,
    proxy: Option<String>,
    /// The stub's control socket (what it saw, by request id).
    control: Option<PathBuf>,
    /// The sidecar host serving the pod's sidecar (index into `LocalTarget::hosts`).
    host: Option<usize>,
}

pub struct LocalTarget {
    owner: u64,
    workdir: std::sync::Mutex<Option<tempfile::TempDir>>,
    workdir_path: PathBuf,
    keep: bool,
    grace: Duration,
    node: Ipv4Addr,
    _blocks: addresses::Blocks,
    mesh: Mesh,
    envoy: provision::EnvoyBinary,
    running: Vec<RunningPod>,
    shape: SidecarShape,
    stopped: std::sync::atomic::AtomicBool,
    /// The per-run CA of the certificates standing for the Gateways' Secrets.
    credential_ca: Option<PathBuf>,
    /// Each pod's local address (by mesh pod index; unspecified: not run).
    pod_ip: Vec<Ipv4Addr>,
    /// The gateways istiod programs (`--control-plane istiod`), for config pushes.
    istiod_gateways: Vec<reconfigure::IstiodGateway>,
    /// Every Envoy started, with what restarting it takes.
    proxies: std::sync::Mutex<Vec<reconfigure::ProxyProc>>,
    /// The Ctrl-C cleanup of hot restart's shared memory (restartable targets).
    shm_cleanup: Option<u64>,
    /// The Envoys serving the pods' sidecars.
    hosts: Vec<sidecars::SidecarHost>,
    /// The mesh root certificate (sidecar listeners trust it).
    mesh_root: PathBuf,
    /// The process that forked the pods' stubs (they die when it is dropped).
    forker: Option<Mutex<forker::Forker>>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TargetError {
    let what = what.into();
    move |source| TargetError::Io { what, source }
}

fn tail(path: &Path, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    Some(all[start..].join("\n"))
}

/// `GET path` on an Envoy admin unix socket: the body of a 200 answer.
fn admin_get(sock: &Path, path: &str) -> Option<String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    // HTTP/1.1: Envoy's admin refuses HTTP/1.0 (426) unless told to accept it.
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// An HTTP/1.1 chunked body, joined (hand-written: one admin call on a unix socket
/// does not warrant an HTTP client with unix-socket support).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n || !after.is_char_boundary(n) {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// `GET /ready` on an Envoy admin unix socket: 200 once the server is LIVE.
fn envoy_ready(sock: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

fn tcp_ready(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

impl LocalTarget {
    /// The mesh model the target runs.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir_path
    }

    /// Pid of the app (stub) process of the first pod of `deployment`, for tests that
    /// break a backend on purpose.
    pub fn app_pid(&self, deployment: &str) -> Option<u32> {
        self.running
            .iter()
            .find(|r| self.mesh.pods[r.index].deployment == deployment)
            .and_then(|r| r.app.as_ref())
            .and_then(|n| procs::pid_of(self.owner, n))
    }

    /// Kills the sidecar of the first pod of `deployment`, as a crashed istio-proxy:
    /// its listeners leave its sidecar host, so connections to the pod are refused and
    /// the open ones close, while every other pod's sidecar keeps serving. Returns once
    /// the pod refuses connections.
    pub fn kill_proxy(&self, deployment: &str) -> Result<(), TargetError> {
        let (pod, host) = self
            .running
            .iter()
            .find(|r| self.mesh.pods[r.index].deployment == deployment)
            .and_then(|r| Some((r.index, r.host?)))
            .ok_or_else(|| {
                TargetError::BadInput(format!("no pod of {deployment} runs a sidecar"))
            })?;
        self.hosts[host].kill(pod, &self.mesh, &self.mesh_root, Duration::from_secs(5))
    }

    /// Whether the sidecar of pod `index` (into `mesh.pods`) serves: its host runs and
    /// it was not killed.
    fn sidecar_alive(&self, r: &RunningPod) -> bool {
        r.host.is_some_and(|h| {
            let host = &self.hosts[h];
            procs::is_running(self.owner, &host.name) == Some(true) && !host.is_killed(r.index)
        })
    }

    /// Stops every process and removes the working directory (unless kept).
    pub fn shutdown(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        procs::stop_owner(self.owner, self.grace);
        self.remove_shared_memory();
        if let Some(id) = self.shm_cleanup {
            procs::unregister_cleanup(id);
        }
        procs::unregister_dir(&self.workdir_path);
        let dir = self
            .workdir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(dir) = dir {
            if self.keep {
                let path = dir.keep();
                eprintln!("local target: kept {}", path.display());
            } else {
                let _ = dir.close();
            }
        }
    }
}

impl Drop for LocalTarget {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The ports an app pod's stub listens on (its container ports, else 8080).
fn app_ports(pod: &crate::istio::PodPlan) -> Vec<u16> {
    if pod.container_ports.is_empty() {
        vec![8080]
    } else {
        pod.container_ports.iter().map(|(_, p)| *p).collect()
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), TargetError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    std::fs::write(path, text).map_err(io(format!("cannot write {}", path.display())))
}

fn container(name: &str, image: &str, restart: Option<&str>, running: bool) -> ContainerInfo {
    ContainerInfo {
        name: name.into(),
        image: image.into(),
        restart_policy: restart.map(str::to_string),
        running,
    }
}

impl Target for LocalTarget {
    fn name(&self) -> &'static str {
        "local"
    }

    fn node_address(&self) -> IpAddr {
        IpAddr::V4(self.node)
    }

    fn node_port(&self, service_port: u16) -> Option<u16> {
        self.mesh.node_port_for(service_port).map(|(_, p)| p)
    }
    /// No API server here: the conditions meshcheck computes as istiod's controller
    /// does (compared with istiod's own by the oracle, MC407).
    fn gateway_api_status<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> crate::targets::BoxFuture<
        'a,
        Result<Option<crate::fixtures::gateway_api::ObjectStatus>, String>,
    > {
        let found = self
            .mesh
            .gateway_statuses
            .iter()
            .find(|s| s.kind == kind && s.namespace == namespace && s.name == name)
            .cloned();
        Box::pin(async move { Ok(found) })
    }
    fn node_port_via(&self, gateway: &str, service_port: u16) -> Option<u16> {
        self.mesh
            .node_port_via(Some(gateway), service_port)
            .map(|(_, p)| p)
    }

    fn gateway_identities(&self) -> Vec<String> {
        self.mesh.gateway_identities()
    }

    fn pods(&self) -> super::BoxFuture<'_, Result<Vec<PodInfo>, String>> {
        let pods = self.pod_infos();
        Box::pin(async move { Ok(pods) })
    }

    fn diagnostics<'a>(&'a self, dir: &'a Path) -> super::BoxFuture<'a, Vec<PathBuf>> {
        Box::pin(async move { self.write_diagnostics(dir) })
    }

    fn seen<'a>(
        &'a self,
        id: &'a str,
    ) -> super::BoxFuture<'a, Result<Vec<crate::stub::Echo>, String>> {
        // Asked on each stub's control socket (a unix socket in the working
        // directory, not reachable through the mesh).
        Box::pin(async move {
            let mut out = Vec::new();
            for sock in self.running.iter().filter_map(|r| r.control.as_ref()) {
                out.extend(crate::stub::seen::ask(sock, id, Duration::from_secs(5)).await?);
            }
            Ok(out)
        })
    }

    fn consistency_budget(&self) -> Duration {
        // Static configuration, ready before the checks start: a short budget is
        // enough for anything that is going to work.
        Duration::from_secs(5)
    }

    fn health(&self) -> Vec<String> {
        let mut out: Vec<String> = procs::casualties(self.owner)
            .into_iter()
            .map(|(name, how, log)| {
                let hosted = self
                    .hosts
                    .iter()
                    .find(|h| h.name == name)
                    .map(|h| self.hosted_pods_text(h))
                    .unwrap_or_default();
                format!("{name}{hosted} {how} (log: {})", log.display())
            })
            .collect();
        for r in &self.running {
            if let Some(h) = r.host.map(|h| &self.hosts[h]) {
                if h.is_killed(r.index) {
                    let p = &self.mesh.pods[r.index];
                    out.push(format!(
                        "{}/{} istio-proxy was killed (its listeners were removed from {})",
                        p.namespace, p.name, h.name
                    ));
                }
            }
        }
        out
    }

    fn tls_ca_file(&self) -> Option<PathBuf> {
        self.credential_ca.clone()
    }

    fn shutdown(&self) -> super::BoxFuture<'_, ()> {
        Box::pin(async move { LocalTarget::shutdown(self) })
    }

    fn properties(&self) -> Vec<(String, String)> {
        vec![
            ("target".into(), "local".into()),
            ("envoy.version".into(), self.envoy.version.clone()),
            ("envoy.source".into(), self.envoy.source.to_string()),
            ("node.address".into(), self.node.to_string()),
            (
                "sidecar.shape".into(),
                format!("{:?}", self.shape).to_lowercase(),
            ),
        ]
    }
}

impl LocalTarget {
    /// ` (the sidecars of ns/a, ns/b, ...)`: who a sidecar host's death takes down.
    fn hosted_pods_text(&self, h: &sidecars::SidecarHost) -> String {
        const SHOWN: usize = 8;
        let names: Vec<String> = h
            .pods
            .iter()
            .take(SHOWN)
            .map(|p| {
                let p = &self.mesh.pods[p.pod];
                format!("{}/{}", p.namespace, p.name)
            })
            .collect();
        let more = h.pods.len().saturating_sub(SHOWN);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(" (the sidecars of {}{more})", names.join(", "))
    }

    /// Every Envoy's config dump (admin `/config_dump`) and every process log.
    fn write_diagnostics(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if std::fs::create_dir_all(dir).is_err() {
            return out;
        }
        for (slot, r) in self.running.iter().enumerate() {
            let p = &self.mesh.pods[r.index];
            let stem = format!("{}.{}", p.namespace, p.name);
            if r.proxy.is_some() && r.host.is_none() {
                let sock = self.workdir_path.join("s").join(format!("{slot}.sock"));
                if let Some(dump) = admin_get(&sock, "/config_dump") {
                    let path = dir.join(format!("{stem}.config_dump.json"));
                    if std::fs::write(&path, dump).is_ok() {
                        out.push(path);
                    }
                }
            }
        }
        for h in &self.hosts {
            if let Some(dump) = admin_get(&h.admin, "/config_dump") {
                let path = dir.join(format!("{}.config_dump.json", h.stem));
                if std::fs::write(&path, dump).is_ok() {
                    out.push(path);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.workdir_path.join("logs")) {
            for e in rd.flatten() {
                let to = dir.join(e.file_name());
                if std::fs::copy(e.path(), &to).is_ok() {
                    out.push(to);
                }
            }
        }
        out.sort();
        out
    }

    fn pod_infos(&self) -> Vec<PodInfo> {
        let proxy_image = format!("envoy:{} (local istio-proxy)", self.envoy.version);
        self.mesh
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let run = self.running.iter().find(|r| r.index == i);
                let alive = |n: Option<&String>| {
                    n.and_then(|n| procs::is_running(self.owner, n)).unwrap_or(false)
                };
                let app_alive = alive(run.and_then(|r| r.app.as_ref()));
                let proxy_alive = match run {
                    Some(r) if r.host.is_some() => self.sidecar_alive(r),
                    _ => alive(run.and_then(|r| r.proxy.as_ref())),
                };
                let mut annotations = std::collections::BTreeMap::new();
                let mut containers = Vec::new();
                let mut inits = Vec::new();
                match (&p.role, p.injected) {
                    (PodRole::Gateway, _) => {
                        containers.push(container("istio-proxy", &proxy_image, None, proxy_alive));
                        annotations.insert(
                            "sidecar.istio.io/status".into(),
                            r#"{"initContainers":null,"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#.into(),
                        );
                    }
                    (role, injected) => {
                        let running = *role == PodRole::App && app_alive;
                        containers.push(container(&p.deployment, crate::istio::STUB_IMAGE, None, running));
                        if injected && *role == PodRole::App {
                            inits.push(container("istio-init", &proxy_image, None, false));
                            let status = match self.shape {
                                SidecarShape::Native => {
                                    inits.push(container("istio-proxy", &proxy_image, Some("Always"), proxy_alive));
                                    r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#
                                }
                                SidecarShape::Classic => {
                                    containers.push(container("istio-proxy", &proxy_image, None, proxy_alive));
                                    r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#
                                }
                            };
                            annotations.insert("sidecar.istio.io/status".into(), status.into());
                        }
                    }
                }
                PodInfo {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    labels: p.labels.clone(),
                    annotations,
                    containers,
                    init_containers: inits,
                    ip: self
                        .pod_ip
                        .get(i)
                        .filter(|ip| !ip.is_unspecified())
                        .map(|ip| (*ip).into()),
                    ports: {
                        let mut ports: Vec<u16> =
                            p.container_ports.iter().map(|(_, port)| *port).collect();
                        ports.sort_unstable();
                        ports.dedup();
                        ports
                    },
                }
            })
            .collect()
    }
}
