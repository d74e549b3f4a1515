//! The local target: the fixtures programmed into real Envoy processes on loopback,
//! the way Istio would program them. One gateway Envoy per gateway pod, listening on
//! the node address at each NodePort its Gateway servers use; per app pod a stub
//! process on its own 127.x address and, when Istio would inject one, a sidecar Envoy
//! in front of it with per-run mTLS identities.
//!
//! Addresses: each run takes a free block 127.A.B.0/24 (an flock'ed lock file keeps
//! concurrent runs apart): the node is .1, pods .10-.109, the apps behind sidecars
//! (the pod's "localhost") .130-.229. Admin interfaces are unix sockets, so the node
//! address shows only what the fixtures expose.

pub mod certs;
mod envoy;
mod istiod;
pub mod procs;
pub mod provision;
mod reconfigure;

use super::{ContainerInfo, PodInfo, Target, TargetError};

use crate::istio::{Mesh, PodRole, SidecarShape};
use crate::timeouts::Timeouts;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

const MAX_PODS: usize = 100;

/// The gateway bootstrap from istiod's answer for pod `gw`.
/// One certificate per SDS secret the gateway's HTTPS servers name (only those whose
/// Secret istiod would serve), with the servers' hosts as DNS SANs (`*` left out).
fn credential_certs(
    ca: &certs::MeshCa,
    gw: &crate::istio::GatewayProxy,
    stem: &str,
) -> Result<std::collections::BTreeMap<String, certs::CertFiles>, certs::CertError> {
    let mut hosts: std::collections::BTreeMap<&str, (String, Vec<String>)> = Default::default();
    for tls in gw
        .listeners
        .iter()
        .flat_map(|l| l.chains.iter())
        .filter_map(|c| c.tls.as_ref())
        .filter(|t| t.problem.is_none())
    {
        let e = hosts.entry(&tls.sds_name).or_insert_with(|| {
            (
                format!("{stem}.{}.{}", tls.secret_namespace, tls.secret_name),
                Vec::new(),
            )
        });
        for h in tls.hosts.iter().filter(|h| *h != "*") {
            if !e.1.contains(h) {
                e.1.push(h.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for (sds, (file_stem, sans)) in hosts {
        out.insert(sds.to_string(), ca.issue(&file_stem, None, &sans)?);
    }
    Ok(out)
}

fn istiod_bootstrap(
    answer: &crate::oracle::output::Output,
    mesh: &Mesh,
    gw: usize,
    addrs: &envoy::Addresses,
    admin: &std::path::Path,
    secrets: &istiod::Secrets,
    xds: &istiod::Xds,
) -> Result<serde_json::Value, TargetError> {
    let pod = &mesh.pods[mesh.gateways[gw].pod];
    let key = format!("{}/{}", pod.namespace, pod.name);
    let what = format!("gateway {key} (istiod config)");
    let cfg = answer
        .gateways
        .iter()
        .find(|g| g.pod == key)
        .ok_or_else(|| TargetError::Start {
            what: what.clone(),
            why: "istiod generated no configuration for this pod".into(),
            log_tail: None,
        })?;
    istiod::gateway_bootstrap(cfg, mesh, gw, addrs, admin, secrets, xds).map_err(|why| {
        TargetError::Start {
            what,
            why,
            log_tail: None,
        }
    })
}

/// What runs for one pod.
#[derive(Debug, Clone)]
struct RunningPod {
    index: usize,
    app: Option<String>,
    proxy: Option<String>,
    /// The stub's control socket (what it saw, by request id).
    control: Option<PathBuf>,
}

pub struct LocalTarget {
    owner: u64,
    workdir: std::sync::Mutex<Option<tempfile::TempDir>>,
    workdir_path: PathBuf,
    keep: bool,
    grace: Duration,
    node: Ipv4Addr,
    _lock: std::fs::File,
    mesh: Mesh,
    envoy: provision::EnvoyBinary,
    running: Vec<RunningPod>,
    shape: SidecarShape,
    stopped: std::sync::atomic::AtomicBool,
    /// The per-run CA of the certificates standing for the Gateways' Secrets.
    credential_ca: Option<PathBuf>,
    /// Each pod's local address (by mesh pod index; unspecified: not run).
    pod_ip: Vec<Ipv4Addr>,
    /// The mesh root certificate.
    root: PathBuf,
    /// The gateways istiod programs (`--control-plane istiod`), for config pushes.
    istiod_gateways: Vec<reconfigure::IstiodGateway>,
    /// Every Envoy started, with what restarting it takes.
    proxies: std::sync::Mutex<Vec<reconfigure::ProxyProc>>,
    /// The Ctrl-C cleanup of hot restart's shared memory (restartable targets).
    shm_cleanup: Option<u64>,
}

/// Takes a free 127.A.B.0/24 block: an exclusive flock on a lock file per block.
fn claim_block() -> Result<(Ipv4Addr, std::fs::File), TargetError> {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("meshcheck-blocks");
    std::fs::create_dir_all(&dir).map_err(|source| TargetError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    for _ in 0..64 {
        let (a, b) = (fastrand::u8(32..=250), fastrand::u8(1..=250));
        let path = dir.join(format!("127.{a}.{b}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| TargetError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok((Ipv4Addr::new(127, a, b, 1), file));
        }
    }
    Err(TargetError::Unavailable {
        target: "local".into(),
        why: "no free 127.x.y.0/24 address block after 64 tries".into(),
    })
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
    /// Brings the fixtures up. Call from a thread that lives as long as the target
    /// (children die with the thread that started them).
    pub fn start(mesh: Mesh, opts: &LocalOptions) -> Result<LocalTarget, TargetError> {
        let started = Instant::now();
        let envoy = provision::locate_envoy(opts.show_progress)?;
        let runnable: Vec<usize> = mesh
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.role, PodRole::App | PodRole::Gateway))
            .map(|(i, _)| i)
            .collect();
        if runnable.len() > MAX_PODS {
            return Err(TargetError::BadInput(format!(
                "the fixtures make {} pods; the local target runs at most {MAX_PODS}",
                runnable.len()
            )));
        }
        let (node, lock) = claim_block()?;
        let base = std::env::temp_dir();
        // Unix socket paths are limited to 108 bytes: prefer /tmp for a short path.
        let base = if base.as_os_str().len() > 40 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        let workdir = tempfile::Builder::new()
            .prefix("meshcheck-")
            .tempdir_in(&base)
            .map_err(io(format!(
                "cannot create a working directory in {}",
                base.display()
            )))?;
        let wd = workdir.path().to_path_buf();
        if !opts.keep {
            procs::register_dir(&wd);
        }
        for sub in ["certs", "envoy", "logs", "s"] {
            std::fs::create_dir_all(wd.join(sub))
                .map_err(io(format!("cannot create {}", wd.join(sub).display())))?;
        }
        let owner = procs::new_owner();
        let mut target = LocalTarget {
            owner,
            workdir: std::sync::Mutex::new(Some(workdir)),
            workdir_path: wd.clone(),
            keep: opts.keep,
            grace: opts.timeouts.stop_grace,
            node,
            _lock: lock,
            mesh,
            envoy,
            running: Vec::new(),
            shape: opts.sidecar_shape,
            stopped: Default::default(),
            credential_ca: None,
            pod_ip: Vec::new(),
            root: PathBuf::new(),
            istiod_gateways: Vec::new(),
            proxies: std::sync::Mutex::new(Vec::new()),
            shm_cleanup: None,
        };
        if opts.restartable {
            let dir = wd.join("envoy");
            target.shm_cleanup = Some(procs::register_cleanup(Box::new(move || {
                reconfigure::remove_shared_memory_in(&dir)
            })));
        }
        let [a, b, c, _] = node.octets();
        let mut pod_ip = vec![Ipv4Addr::UNSPECIFIED; target.mesh.pods.len()];
        for (slot, &i) in runnable.iter().enumerate() {
            pod_ip[i] = Ipv4Addr::new(a, b, c, 10 + slot as u8);
        }
        let app_ip = |slot: usize| Ipv4Addr::new(a, b, c, 130 + slot as u8);

        if opts.show_progress {
            let gws = target.mesh.gateways.len();
            let apps = runnable.len() - gws;
            let sidecars = target.mesh.pods.iter().filter(|p| p.has_sidecar()).count();
            eprintln!(
                "local target: Envoy {} ({}), {gws} gateway(s), {apps} app pod(s), {sidecars} sidecar(s), node {node}, workdir {}",
                target.envoy.version,
                target.envoy.path.display(),
                wd.display()
            );
        }

        let ca = certs::MeshCa::new(&wd.join("certs"))?;
        let root = ca.root_file.clone();
        target.root = root.clone();
        target.pod_ip = pod_ip.clone();
        // The Secrets the Gateways' credentialNames name have no key material meshcheck
        // could use: each gets a per-run certificate from a CA of its own, which the
        // checks' https client trusts.
        let cred_dir = wd.join("certs").join("credentials");
        std::fs::create_dir_all(&cred_dir)
            .map_err(io(format!("cannot create {}", cred_dir.display())))?;
        let cred_ca = certs::MeshCa::new(&cred_dir)?;
        target.credential_ca = Some(cred_ca.root_file.clone());
        let td = target.mesh.trust_domain.clone();
        let mut waits: Vec<Wait> = Vec::new();
        let addrs_pod_ip = pod_ip.clone();
        let envoy_path = target.envoy.path.clone();
        let proxy = Proxy {
            owner,
            envoy: &envoy_path,
            workdir: &wd,
            restartable: opts.restartable,
            started: Default::default(),
        };
        for (slot, &i) in runnable.iter().enumerate() {
            let pod = target.mesh.pods[i].clone();
            let stem = format!("{}.{}", pod.namespace, pod.name);
            let cert = ca.issue(&stem, Some(&pod.spiffe_id(&td)), &[])?;
            let mut rp = RunningPod {
                index: i,
                app: None,
                proxy: None,
                control: None,
            };
            let admin = wd.join("s").join(format!("{slot}.sock"));
            if pod.role == PodRole::Gateway {
                let gw = target
                    .mesh
                    .gateways
                    .iter()
                    .position(|g| g.pod == i)
                    .unwrap_or(0);
                let credentials = credential_certs(&cred_ca, &target.mesh.gateways[gw], &stem)?;
                let addrs = envoy::Addresses {
                    node,
                    pod_ip: &addrs_pod_ip,
                };
                let cfg = match &opts.istiod {
                    None => envoy::gateway_bootstrap(
                        &target.mesh,
                        gw,
                        &addrs,
                        &admin,
                        &cert,
                        &credentials,
                        &root,
                    ),
                    Some(answer) => {
                        let sds = wd.join("envoy").join(format!("{stem}.sds"));
                        let xds = istiod::Xds::new(wd.join("envoy").join(format!("{stem}.xds")));
                        let cfg = istiod_bootstrap(
                            answer,
                            &target.mesh,
                            gw,
                            &addrs,
                            &admin,
                            &istiod::Secrets {
                                identity: &cert,
                                root: &root,
                                credentials: &credentials,
                                dir: sds.clone(),
                            },
                            &xds,
                        )?;
                        target.istiod_gateways.push(reconfigure::IstiodGateway {
                            gw,
                            pod: i,
                            admin: admin.clone(),
                            xds,
                            cert: cert.clone(),
                            credentials: credentials.clone(),
                            sds,
                        });
                        cfg
                    }
                };
                rp.proxy =
                    Some(proxy.start(&pod, "gateway proxy", &stem, &cfg, &admin, &mut waits)?);
            } else {
                let ports: Vec<u16> = if pod.container_ports.is_empty() {
                    vec![8080]
                } else {
                    pod.container_ports.iter().map(|(_, p)| *p).collect()
                };
                let listen_ip = if pod.has_sidecar() {
                    app_ip(slot)
                } else {
                    pod_ip[i]
                };
                let listen: Vec<SocketAddr> = ports
                    .iter()
                    .map(|p| SocketAddr::new(IpAddr::V4(listen_ip), *p))
                    .collect();
                let control = wd.join("s").join(format!("{slot}.stub.sock"));
                let name = format!("{}/{} app", pod.namespace, pod.name);
                let log = wd.join("logs").join(format!("{stem}.app.log"));
                let (prog, args) = opts
                    .stub_command
                    .split_first()
                    .ok_or_else(|| TargetError::BadInput("no stub command".into()))?;
                let mut cmd = Command::new(prog);
                cmd.args(args);
                for l in &listen {
                    cmd.arg("--listen").arg(l.to_string());
                }
                cmd.arg("--control")
                    .arg(&control)
                    .arg("--pod")
                    .arg(format!("{}/{}", pod.namespace, pod.name));
                for k in [
                    "SERVICE_NAME",
                    "VERSION",
                    "POD_NAME",
                    "NAMESPACE",
                    "LISTEN_ADDR",
                ] {
                    cmd.env_remove(k);
                }
                for var in &pod.env {
                    if let Some(v) = pod.resolve_env(var, Some(IpAddr::V4(pod_ip[i]))) {
                        cmd.env(&var.name, v);
                    }
                }
                procs::spawn(owner, &name, &mut cmd, &log).map_err(io(format!(
                    "cannot start the stub {}",
                    prog.to_string_lossy()
                )))?;
                waits.push((
                    name.clone(),
                    Box::new(move || listen.iter().all(|l| tcp_ready(*l))),
                    log,
                ));
                rp.app = Some(name);
                rp.control = Some(control);
                if pod.has_sidecar() {
                    let cfg = envoy::sidecar_bootstrap(
                        &target.mesh,
                        i,
                        pod_ip[i],
                        listen_ip,
                        &ports,
                        &admin,
                        &cert,
                        &root,
                    );
                    rp.proxy =
                        Some(proxy.start(&pod, "istio-proxy", &stem, &cfg, &admin, &mut waits)?);
                }
            }
            target.running.push(rp);
        }
        *target.proxies.lock().unwrap_or_else(|e| e.into_inner()) = proxy.started.take();
        // Wait for every process to be ready, or one to die, or the deadline.
        let deadline = Instant::now() + opts.timeouts.local_ready;
        let mut pending: Vec<_> = waits;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (name, ready, log) in pending {
                if procs::is_running(owner, &name) == Some(false) {
                    let how = procs::casualties(owner)
                        .into_iter()
                        .find(|(n, _, _)| *n == name)
                        .map(|(_, how, _)| how)
                        .unwrap_or_else(|| "exited".into());
                    return Err(TargetError::Start {
                        what: name,
                        why: how,
                        log_tail: tail(&log, 20),
                    });
                }
                if !ready() {
                    still.push((name, ready, log));
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let (name, _, log) = &pending[0];
                return Err(TargetError::Start {
                    what: name.clone(),
                    why: format!(
                        "not ready within {:?} ({} process(es) not ready)",
                        opts.timeouts.local_ready,
                        pending.len()
                    ),
                    log_tail: tail(log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        if opts.show_progress {
            eprintln!(
                "local target: ready in {:.2}s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(target)
    }

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

/// A process to wait for: (name, readiness probe, log file).
type Wait = (String, Box<dyn Fn() -> bool>, PathBuf);

/// Starts Envoy processes for the pods of one target.
struct Proxy<'a> {
    owner: u64,
    envoy: &'a Path,
    workdir: &'a Path,
    /// Start each Envoy so that it can be hot restarted.
    restartable: bool,
    /// What was started, in order.
    started: std::cell::RefCell<Vec<reconfigure::ProxyProc>>,
}

impl Proxy<'_> {
    /// Writes `cfg` and starts an Envoy with it as `<ns>/<pod> <role>`; its readiness
    /// (admin `/ready` on `admin`) joins `waits`. Returns the process name.
    fn start(
        &self,
        pod: &crate::istio::PodPlan,
        role: &str,
        stem: &str,
        cfg: &serde_json::Value,
        admin: &Path,
        waits: &mut Vec<Wait>,
    ) -> Result<String, TargetError> {
        let path = self.workdir.join("envoy").join(format!("{stem}.json"));
        write_json(&path, cfg)?;
        let name = format!("{}/{} {role}", pod.namespace, pod.name);
        let log = self.workdir.join("logs").join(format!("{stem}.envoy.log"));
        let p = reconfigure::ProxyProc {
            name: name.clone(),
            gateway: pod.role == PodRole::Gateway,
            config: path,
            admin: admin.to_path_buf(),
            log: log.clone(),
            hot_restart: self
                .restartable
                .then(|| self.workdir.join("envoy").join(format!("{stem}.base-id"))),
            epoch: 0,
            service_node: pod.name.clone(),
            service_cluster: pod.deployment.clone(),
        };
        let mut cmd = p.command(self.envoy, true);
        procs::spawn(self.owner, &name, &mut cmd, &log)
            .map_err(io(format!("cannot start Envoy {}", self.envoy.display())))?;
        let admin = admin.to_path_buf();
        waits.push((name.clone(), Box::new(move || envoy_ready(&admin)), log));
        self.started.borrow_mut().push(p);
        Ok(name)
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
        procs::casualties(self.owner)
            .into_iter()
            .map(|(name, how, log)| format!("{name} {how} (log: {})", log.display()))
            .collect()
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
    /// Every Envoy's config dump (admin `/config_dump`) and every process log.
    fn write_diagnostics(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if std::fs::create_dir_all(dir).is_err() {
            return out;
        }
        for (slot, r) in self.running.iter().enumerate() {
            let p = &self.mesh.pods[r.index];
            let stem = format!("{}.{}", p.namespace, p.name);
            if r.proxy.is_some() {
                let sock = self.workdir_path.join("s").join(format!("{slot}.sock"));
                if let Some(dump) = admin_get(&sock, "/config_dump") {
                    let path = dir.join(format!("{stem}.config_dump.json"));
                    if std::fs::write(&path, dump).is_ok() {
                        out.push(path);
                    }
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
                let proxy_alive = alive(run.and_then(|r| r.proxy.as_ref()));
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
                }
            })
            .collect()
    }
}
