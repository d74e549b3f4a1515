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
mod forker;
mod istiod;
pub mod procs;
pub mod provision;
mod reconfigure;
mod sidecars;

use super::{ContainerInfo, PodInfo, Target, TargetError};

use crate::istio::{Mesh, PodRole, SidecarShape};
use crate::stub::fork_server::PodRequest;
use crate::timeouts::Timeouts;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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

/// Refuses fixtures with more pods than this machine's memory allows (the limit is
/// computed from MemAvailable, addresses.rs `pod_limit`).
fn check_pod_limit(pods: usize) -> Result<(), TargetError> {
    match addresses::pod_limit() {
        Some((limit, why)) if pods > limit => Err(TargetError::BadInput(format!(
            "the fixtures make {pods} pods; this machine runs at most {limit} on the local target ({why})"
        ))),
        _ => Ok(()),
    }
}

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
        check_pod_limit(runnable.len())?;
        let injected: Vec<usize> = runnable
            .iter()
            .copied()
            .filter(|&i| mesh.pods[i].role == PodRole::App && mesh.pods[i].has_sidecar())
            .collect();
        let blocks = addresses::Blocks::claim(runnable.len() + injected.len())?;
        let node = blocks.node();
        let base = workdir_base();
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
            _blocks: blocks,
            mesh,
            envoy,
            running: Vec::new(),
            shape: opts.sidecar_shape,
            stopped: Default::default(),
            credential_ca: None,
            pod_ip: Vec::new(),
            istiod_gateways: Vec::new(),
            proxies: std::sync::Mutex::new(Vec::new()),
            shm_cleanup: None,
            hosts: Vec::new(),
            mesh_root: PathBuf::new(),
            forker: None,
        };
        if opts.restartable {
            let dir = wd.join("envoy");
            target.shm_cleanup = Some(procs::register_cleanup(Box::new(move || {
                reconfigure::remove_shared_memory_in(&dir)
            })));
        }
        let mut pod_ip = vec![Ipv4Addr::UNSPECIFIED; target.mesh.pods.len()];
        let mut app_ip = vec![Ipv4Addr::UNSPECIFIED; target.mesh.pods.len()];
        for (slot, &i) in runnable.iter().enumerate() {
            pod_ip[i] = target._blocks.address(slot);
        }
        for (k, &i) in injected.iter().enumerate() {
            app_ip[i] = target._blocks.address(runnable.len() + k);
        }

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
        target.mesh_root = root.clone();
        target.pod_ip = pod_ip.clone();
        let td = target.mesh.trust_domain.clone();
        let t_certs = Instant::now();
        let pod_certs = issue_pod_certs(&ca, &target.mesh, &runnable, &td)?;
        let t_certs = t_certs.elapsed();
        // The Secrets the Gateways' credentialNames name have no key material meshcheck
        // could use: each gets a per-run certificate from a CA of its own, which the
        // checks' https client trusts.
        let cred_dir = wd.join("certs").join("credentials");
        std::fs::create_dir_all(&cred_dir)
            .map_err(io(format!("cannot create {}", cred_dir.display())))?;
        let cred_ca = certs::MeshCa::new(&cred_dir)?;
        target.credential_ca = Some(cred_ca.root_file.clone());
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
        // The sidecar hosts first: loading their configuration is the longest start.
        let hosted = injected
            .iter()
            .map(|&i| sidecars::HostedPod {
                pod: i,
                pod_ip: pod_ip[i],
                app_ip: app_ip[i],
                ports: app_ports(&target.mesh.pods[i]),
                cert: pod_certs[&i].clone(),
            })
            .collect();
        let t_spawn = Instant::now();
        target.hosts = sidecars::plan(hosted, &wd.join("envoy"), &wd.join("s"));
        for host in &target.hosts {
            let cfg = host.bootstrap(&target.mesh, &root)?;
            proxy.start_host(host, &cfg, &mut waits)?;
        }
        let t_hosts = t_spawn.elapsed();
        let mut stub_jobs = Vec::new();
        for (slot, &i) in runnable.iter().enumerate() {
            let pod = target.mesh.pods[i].clone();
            let stem = format!("{}.{}", pod.namespace, pod.name);
            let cert = pod_certs[&i].clone();
            let mut rp = RunningPod {
                index: i,
                app: None,
                proxy: None,
                control: None,
                host: target.hosts.iter().position(|h| h.serves(i)),
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
                let ports = app_ports(&pod);
                let listen_ip = if pod.has_sidecar() {
                    app_ip[i]
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
                let env = pod
                    .env
                    .iter()
                    .filter_map(|var| {
                        pod.resolve_env(var, Some(IpAddr::V4(pod_ip[i])))
                            .map(|v| (var.name.clone(), v))
                    })
                    .collect();
                stub_jobs.push(PodRequest {
                    name: name.clone(),
                    listen: listen.clone(),
                    control: Some(control.clone()),
                    env,
                    log: log.clone(),
                });
                waits.push((
                    name.clone(),
                    Box::new(move || listen.iter().all(|l| tcp_ready(*l))),
                    log,
                ));
                rp.app = Some(name);
                rp.control = Some(control);
                if let Some(h) = rp.host {
                    rp.proxy = Some(target.hosts[h].name.clone());
                }
            }
            target.running.push(rp);
        }
        if !stub_jobs.is_empty() {
            target.forker = Some(Mutex::new(start_stubs(owner, opts, &wd, &stub_jobs)?));
        }
        *target.proxies.lock().unwrap_or_else(|e| e.into_inner()) = proxy.started.take();
        let t_spawn = t_spawn.elapsed();
        let t_wait = Instant::now();
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
                "local target: ready in {:.2}s (certificates {:.2}s, sidecar hosts {:.2}s, pods {:.2}s, waiting {:.2}s; {} sidecar host(s))",
                started.elapsed().as_secs_f64(),
                t_certs.as_secs_f64(),
                t_hosts.as_secs_f64(),
                (t_spawn - t_hosts).as_secs_f64(),
                t_wait.elapsed().as_secs_f64(),
                target.hosts.len()
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

/// Where the working directory goes: `$TMPDIR` when the user set it (and its path is
/// short: unix socket paths are limited to 108 bytes), else `/dev/shm` when it is a
/// writable tmpfs, else `/tmp`. A mesh of hundreds of pods creates thousands of files
/// and sockets there (certificates, configs, logs, control sockets) and deletes them
/// at the end; on ext4 creating inodes right after many were deleted is slow (the
/// allocator skips recently deleted ones), which made the bring-up of 500 pods vary
/// by a second or more. On tmpfs it does not.
fn workdir_base() -> PathBuf {
    let short = |p: &Path| p.as_os_str().len() <= 40;
    if let Some(t) = std::env::var_os("TMPDIR").map(PathBuf::from) {
        if short(&t) {
            return t;
        }
    }
    let shm = Path::new("/dev/shm");
    if is_writable_tmpfs(shm) {
        return shm.to_path_buf();
    }
    PathBuf::from("/tmp")
}

fn is_writable_tmpfs(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statfs fills a zeroed struct; access only reads the path.
        unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            libc::statfs(c.as_ptr(), &mut st) == 0
                && st.f_type == libc::TMPFS_MAGIC
                && libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// Starts the fork server and through it the stub of every pod in `jobs`.
fn start_stubs(
    owner: u64,
    opts: &LocalOptions,
    workdir: &Path,
    jobs: &[PodRequest],
) -> Result<forker::Forker, TargetError> {
    let log = workdir.join("logs").join("stub-fork-server.log");
    let mut f = forker::Forker::start(owner, &opts.stub_command, workdir, &log)
        .map_err(io("cannot start the stub fork server"))?;
    f.start_pods(owner, jobs, opts.timeouts.local_ready)
        .map_err(|(name, source)| TargetError::Io {
            what: format!("cannot start the stub of {name}"),
            source,
        })?;
    Ok(f)
}

/// The ports an app pod's stub listens on (its container ports, else 8080).
fn app_ports(pod: &crate::istio::PodPlan) -> Vec<u16> {
    if pod.container_ports.is_empty() {
        vec![8080]
    } else {
        pod.container_ports.iter().map(|(_, p)| *p).collect()
    }
}

/// Each runnable pod's SPIFFE certificate, by pod index. Issued on as many threads as
/// there are cores (key generation and signing are most of it).
fn issue_pod_certs(
    ca: &certs::MeshCa,
    mesh: &Mesh,
    runnable: &[usize],
    trust_domain: &str,
) -> Result<std::collections::HashMap<usize, certs::CertFiles>, TargetError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = runnable.len().div_ceil(cores).max(1);
    let issued: Vec<Result<Vec<(usize, certs::CertFiles)>, TargetError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = runnable
                .chunks(per)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&i| {
                                let pod = &mesh.pods[i];
                                let stem = format!("{}.{}", pod.namespace, pod.name);
                                let id = pod.spiffe_id(trust_domain);
                                Ok((i, ca.issue(&stem, Some(&id), &[])?))
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(TargetError::BadInput(
                            "issuing a certificate panicked".into(),
                        ))
                    })
                })
                .collect()
        });
    let mut out = std::collections::HashMap::new();
    for chunk in issued {
        out.extend(chunk?);
    }
    Ok(out)
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
            drain_secs: reconfigure::DRAIN_SECS,
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

impl Proxy<'_> {
    /// Starts the Envoy of a sidecar host; its readiness (admin `/ready` and every
    /// hosted pod's listeners accepting connections) joins `waits`.
    fn start_host(
        &self,
        host: &sidecars::SidecarHost,
        cfg: &serde_json::Value,
        waits: &mut Vec<Wait>,
    ) -> Result<(), TargetError> {
        let path = self
            .workdir
            .join("envoy")
            .join(format!("{}.json", host.stem));
        write_json(&path, cfg)?;
        let log = self
            .workdir
            .join("logs")
            .join(format!("{}.envoy.log", host.stem));
        let p = reconfigure::ProxyProc {
            name: host.name.clone(),
            gateway: false,
            config: path,
            admin: host.admin.clone(),
            log: log.clone(),
            hot_restart: self.restartable.then(|| {
                self.workdir
                    .join("envoy")
                    .join(format!("{}.base-id", host.stem))
            }),
            epoch: 0,
            service_node: host.stem.clone(),
            service_cluster: "meshcheck-sidecars".into(),
            // A killed pod's sidecar closes its open connections at once.
            drain_secs: "0",
        };
        let mut cmd = p.command(self.envoy, true);
        procs::spawn(self.owner, &host.name, &mut cmd, &log)
            .map_err(io(format!("cannot start Envoy {}", self.envoy.display())))?;
        self.started.borrow_mut().push(p);
        let admin = host.admin.clone();
        let listen: Vec<SocketAddr> = host.pods.iter().flat_map(|p| p.listen()).collect();
        waits.push((
            host.name.clone(),
            Box::new(move || envoy_ready(&admin) && listen.iter().all(|a| tcp_ready(*a))),
            log,
        ));
        Ok(())
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
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_writable_tmpfs_counts_as_tmpfs() {
        assert!(
            !is_writable_tmpfs(Path::new("/proc")),
            "procfs is not tmpfs"
        );
        assert!(!is_writable_tmpfs(Path::new("/no/such/dir")));
        // Where /dev/shm is tmpfs (Linux, Docker), it is taken.
        let shm = Path::new("/dev/shm");
        if shm.is_dir()
            && std::fs::read_to_string("/proc/mounts")
                .is_ok_and(|m| m.lines().any(|l| l.contains(" /dev/shm tmpfs ")))
        {
            assert!(is_writable_tmpfs(shm));
        }
    }
}
