//! Bringing the local target up: which pods run and on which addresses, the working
//! directory, certificates, the sidecar hosts, the gateways' Envoys, the pods' stubs
//! (forked by the stub fork server), then waiting until every one serves.

use super::{
    addresses, app_ports, certs, envoy, envoy_ready, forker, io, istiod, procs, provision,
    reconfigure, sidecars, tail, tcp_ready, write_json, LocalOptions, LocalTarget, RunningPod,
};
use crate::istio::{Mesh, PodRole};
use crate::stub::fork_server::PodRequest;
use crate::targets::TargetError;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which mesh pods run (by index into `mesh.pods`) and where.
struct Placement {
    /// Gateways and app pods, in start order (the others, e.g. jobs, do not run).
    runnable: Vec<usize>,
    /// The app pods with a sidecar.
    injected: Vec<usize>,
    /// Each pod's own address (unspecified: not run).
    pod_ip: Vec<Ipv4Addr>,
    /// Where an injected pod's app listens behind its sidecar.
    app_ip: Vec<Ipv4Addr>,
}

impl Placement {
    fn of(mesh: &Mesh) -> Placement {
        let runnable: Vec<usize> = mesh
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.role, PodRole::App | PodRole::Gateway))
            .map(|(i, _)| i)
            .collect();
        let injected = runnable
            .iter()
            .copied()
            .filter(|&i| mesh.pods[i].role == PodRole::App && mesh.pods[i].has_sidecar())
            .collect();
        Placement {
            runnable,
            injected,
            pod_ip: Vec::new(),
            app_ip: Vec::new(),
        }
    }

    fn addresses_needed(&self) -> usize {
        self.runnable.len() + self.injected.len()
    }

    /// Pods first, then the apps behind sidecars, in `blocks`' order.
    fn assign(&mut self, blocks: &addresses::Blocks, pods: usize) {
        self.pod_ip = vec![Ipv4Addr::UNSPECIFIED; pods];
        self.app_ip = vec![Ipv4Addr::UNSPECIFIED; pods];
        for (slot, &i) in self.runnable.iter().enumerate() {
            self.pod_ip[i] = blocks.address(slot);
        }
        for (k, &i) in self.injected.iter().enumerate() {
            self.app_ip[i] = blocks.address(self.runnable.len() + k);
        }
    }
}

/// How long each step of the bring-up took, for the progress line.
#[derive(Default)]
struct Timings {
    certs: Duration,
    hosts: Duration,
    pods: Duration,
    wait: Duration,
}

/// The certificates of one run.
struct Pki {
    root: PathBuf,
    pods: HashMap<usize, certs::CertFiles>,
    /// The CA standing for the Gateways' Secrets.
    credentials: certs::MeshCa,
}

impl LocalTarget {
    /// Brings the fixtures up. Call from a thread that lives as long as the target
    /// (children die with the thread that started them).
    pub fn start(mesh: Mesh, opts: &LocalOptions) -> Result<LocalTarget, TargetError> {
        let started = Instant::now();
        let envoy = provision::locate_envoy(opts.show_progress)?;
        let mut place = Placement::of(&mesh);
        check_pod_limit(place.runnable.len())?;
        let blocks = addresses::Blocks::claim(place.addresses_needed())?;
        place.assign(&blocks, mesh.pods.len());
        let mut target = LocalTarget::empty(mesh, envoy, blocks, opts)?;
        target.pod_ip = place.pod_ip.clone();
        if opts.show_progress {
            target.announce(&place);
        }
        let mut t = Timings::default();
        let clock = Instant::now();
        let pki = target.issue_certificates(&place)?;
        t.certs = clock.elapsed();
        let wd = target.workdir_path.clone();
        let envoy_path = target.envoy.path.clone();
        let proxy = Proxy {
            owner: target.owner,
            envoy: &envoy_path,
            workdir: &wd,
            restartable: opts.restartable,
            started: Default::default(),
        };
        let mut waits: Vec<Wait> = Vec::new();
        let clock = Instant::now();
        // The sidecar hosts first: loading their configuration is the longest start.
        target.start_sidecar_hosts(&place, &pki, &proxy, opts.istiod.as_deref(), &mut waits)?;
        t.hosts = clock.elapsed();
        let clock = Instant::now();
        let stubs = target.start_gateways_and_plan_apps(&place, &pki, &proxy, opts, &mut waits)?;
        if !stubs.is_empty() {
            let f = start_stubs(target.owner, opts, &wd, &stubs)?;
            target.forker = Some(Mutex::new(f));
        }
        *target.proxies.lock().unwrap_or_else(|e| e.into_inner()) = proxy.started.take();
        t.pods = clock.elapsed();
        let clock = Instant::now();
        wait_ready(target.owner, waits, opts.timeouts.local_ready)?;
        t.wait = clock.elapsed();
        if opts.show_progress {
            eprintln!(
                "local target: ready in {:.2}s (certificates {:.2}s, sidecar hosts {:.2}s, pods {:.2}s, waiting {:.2}s; {} sidecar host(s))",
                started.elapsed().as_secs_f64(),
                t.certs.as_secs_f64(),
                t.hosts.as_secs_f64(),
                t.pods.as_secs_f64(),
                t.wait.as_secs_f64(),
                target.hosts.len()
            );
        }
        Ok(target)
    }

    /// The target with its working directory and nothing running yet.
    fn empty(
        mesh: Mesh,
        envoy: provision::EnvoyBinary,
        blocks: addresses::Blocks,
        opts: &LocalOptions,
    ) -> Result<LocalTarget, TargetError> {
        let (workdir, wd) = make_workdir(opts.keep)?;
        let mut target = LocalTarget {
            owner: procs::new_owner(),
            workdir: Mutex::new(Some(workdir)),
            workdir_path: wd.clone(),
            keep: opts.keep,
            grace: opts.timeouts.stop_grace,
            node: blocks.node(),
            _blocks: blocks,
            mesh,
            envoy,
            running: Vec::new(),
            shape: opts.sidecar_shape,
            stopped: Default::default(),
            credential_ca: None,
            pod_ip: Vec::new(),
            istiod_gateways: Vec::new(),
            proxies: Mutex::new(Vec::new()),
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
        Ok(target)
    }

    fn announce(&self, place: &Placement) {
        let gws = self.mesh.gateways.len();
        let apps = place.runnable.len() - gws;
        let sidecars = self.mesh.pods.iter().filter(|p| p.has_sidecar()).count();
        eprintln!(
            "local target: Envoy {} ({}), {gws} gateway(s), {apps} app pod(s), {sidecars} sidecar(s), node {}, workdir {}",
            self.envoy.version,
            self.envoy.path.display(),
            self.node,
            self.workdir_path.display()
        );
    }

    /// The mesh CA and each pod's SPIFFE certificate; the CA standing for the
    /// Gateways' Secrets.
    fn issue_certificates(&mut self, place: &Placement) -> Result<Pki, TargetError> {
        let wd = &self.workdir_path;
        let ca = certs::MeshCa::new(&wd.join("certs"))?;
        self.mesh_root = ca.root_file.clone();
        let td = self.mesh.trust_domain.clone();
        let pods = issue_pod_certs(&ca, &self.mesh, &place.runnable, &td)?;
        // The Secrets the Gateways' credentialNames name have no key material meshcheck
        // could use: each gets a per-run certificate from a CA of its own, which the
        // checks' https client trusts.
        let cred_dir = wd.join("certs").join("credentials");
        std::fs::create_dir_all(&cred_dir)
            .map_err(io(format!("cannot create {}", cred_dir.display())))?;
        let credentials = certs::MeshCa::new(&cred_dir)?;
        self.credential_ca = Some(credentials.root_file.clone());
        Ok(Pki {
            root: ca.root_file.clone(),
            pods,
            credentials,
        })
    }

    /// Plans the sidecar hosts for the injected pods and starts their Envoys.
    fn start_sidecar_hosts(
        &mut self,
        place: &Placement,
        pki: &Pki,
        proxy: &Proxy<'_>,
        istiod: Option<&crate::oracle::output::Output>,
        waits: &mut Vec<Wait>,
    ) -> Result<(), TargetError> {
        let hosted = place
            .injected
            .iter()
            .map(|&i| sidecars::HostedPod {
                pod: i,
                pod_ip: place.pod_ip[i],
                app_ip: place.app_ip[i],
                ports: app_ports(&self.mesh.pods[i]),
                cert: pki.pods[&i].clone(),
                istiod_filters: istiod.and_then(|a| istiod_sidecar_filters(a, &self.mesh, i)),
            })
            .collect();
        let wd = &self.workdir_path;
        self.hosts = sidecars::plan(hosted, &wd.join("envoy"), &wd.join("s"));
        let addrs = envoy::Addresses {
            node: self.node,
            pod_ip: &place.pod_ip,
        };
        for host in &self.hosts {
            let cfg = host.bootstrap(&self.mesh, &addrs, &pki.root)?;
            proxy.start_host(host, &cfg, waits)?;
        }
        Ok(())
    }

    /// Starts each gateway pod's Envoy and plans each app pod's stub (started all at
    /// once by the caller); every pod joins `running`.
    fn start_gateways_and_plan_apps(
        &mut self,
        place: &Placement,
        pki: &Pki,
        proxy: &Proxy<'_>,
        opts: &LocalOptions,
        waits: &mut Vec<Wait>,
    ) -> Result<Vec<PodRequest>, TargetError> {
        let mut stubs = Vec::new();
        for (slot, &i) in place.runnable.iter().enumerate() {
            let mut rp = RunningPod {
                index: i,
                app: None,
                proxy: None,
                control: None,
                host: self.hosts.iter().position(|h| h.serves(i)),
            };
            let admin = self.workdir_path.join("s").join(format!("{slot}.sock"));
            if self.mesh.pods[i].role == PodRole::Gateway {
                rp.proxy = Some(self.start_gateway(i, &admin, pki, proxy, opts, waits)?);
            } else {
                let control = self
                    .workdir_path
                    .join("s")
                    .join(format!("{slot}.stub.sock"));
                let (req, wait) = self.app_request(i, place, &control);
                rp.app = Some(req.name.clone());
                rp.control = Some(control);
                if let Some(h) = rp.host {
                    rp.proxy = Some(self.hosts[h].name.clone());
                }
                stubs.push(req);
                waits.push(wait);
            }
            self.running.push(rp);
        }
        Ok(stubs)
    }

    /// Starts the Envoy of gateway pod `i` on the model's or istiod's configuration.
    fn start_gateway(
        &mut self,
        i: usize,
        admin: &Path,
        pki: &Pki,
        proxy: &Proxy<'_>,
        opts: &LocalOptions,
        waits: &mut Vec<Wait>,
    ) -> Result<String, TargetError> {
        let pod = self.mesh.pods[i].clone();
        let stem = format!("{}.{}", pod.namespace, pod.name);
        let cert = pki.pods[&i].clone();
        let gw = self
            .mesh
            .gateways
            .iter()
            .position(|g| g.pod == i)
            .unwrap_or(0);
        let credentials = credential_certs(&pki.credentials, &self.mesh.gateways[gw], &stem)?;
        let addrs = &envoy::Addresses {
            node: self.node,
            pod_ip: &self.pod_ip,
        };
        let cfg = match &opts.istiod {
            None => envoy::gateway_bootstrap(
                &self.mesh,
                gw,
                addrs,
                admin,
                &cert,
                &credentials,
                &pki.root,
            ),
            Some(answer) => {
                let envoy_dir = self.workdir_path.join("envoy");
                let sds = envoy_dir.join(format!("{stem}.sds"));
                let xds = istiod::Xds::new(envoy_dir.join(format!("{stem}.xds")));
                let cfg = istiod_bootstrap(
                    answer,
                    &self.mesh,
                    gw,
                    addrs,
                    admin,
                    &istiod::Secrets {
                        identity: &cert,
                        root: &pki.root,
                        credentials: &credentials,
                        dir: sds.clone(),
                    },
                    &xds,
                )?;
                self.istiod_gateways.push(reconfigure::IstiodGateway {
                    gw,
                    pod: i,
                    admin: admin.to_path_buf(),
                    xds,
                    cert: cert.clone(),
                    credentials: credentials.clone(),
                    sds,
                });
                cfg
            }
        };
        proxy.start(&pod, "gateway proxy", &stem, &cfg, admin, waits)
    }

    /// What the fork server needs to start app pod `i`'s stub, and its readiness (every
    /// port accepting connections).
    fn app_request(&self, i: usize, place: &Placement, control: &Path) -> (PodRequest, Wait) {
        let pod = &self.mesh.pods[i];
        let stem = format!("{}.{}", pod.namespace, pod.name);
        let listen_ip = if pod.has_sidecar() {
            place.app_ip[i]
        } else {
            place.pod_ip[i]
        };
        let listen: Vec<SocketAddr> = app_ports(pod)
            .iter()
            .map(|p| SocketAddr::new(IpAddr::V4(listen_ip), *p))
            .collect();
        let name = format!("{}/{} app", pod.namespace, pod.name);
        let log = self
            .workdir_path
            .join("logs")
            .join(format!("{stem}.app.log"));
        let env = pod
            .env
            .iter()
            .filter_map(|var| {
                pod.resolve_env(var, Some(IpAddr::V4(place.pod_ip[i])))
                    .map(|v| (var.name.clone(), v))
            })
            .collect();
        let req = PodRequest {
            name: name.clone(),
            listen: listen.clone(),
            control: Some(control.to_path_buf()),
            env,
            log: log.clone(),
        };
        let ready: Box<dyn Fn() -> bool> = Box::new(move || listen.iter().all(|l| tcp_ready(*l)));
        (req, (name, ready, log))
    }
}

/// Waits until every process of `waits` is ready; fails on the first that dies, or at
/// the deadline naming one that is not ready.
fn wait_ready(owner: u64, waits: Vec<Wait>, within: Duration) -> Result<(), TargetError> {
    let deadline = Instant::now() + within;
    let mut pending = waits;
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
                    "not ready within {within:?} ({} process(es) not ready)",
                    pending.len()
                ),
                log_tail: tail(log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    Ok(())
}

/// A fresh working directory (see [`workdir_base`]) with its subdirectories; removed
/// on Ctrl-C unless kept.
fn make_workdir(keep: bool) -> Result<(tempfile::TempDir, PathBuf), TargetError> {
    let base = workdir_base();
    let workdir = tempfile::Builder::new()
        .prefix("meshcheck-")
        .tempdir_in(&base)
        .map_err(io(format!(
            "cannot create a working directory in {}",
            base.display()
        )))?;
    let wd = workdir.path().to_path_buf();
    if !keep {
        procs::register_dir(&wd);
    }
    for sub in ["certs", "envoy", "logs", "s"] {
        std::fs::create_dir_all(wd.join(sub))
            .map_err(io(format!("cannot create {}", wd.join(sub).display())))?;
    }
    Ok((workdir, wd))
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

/// The security filters istiod puts in the inbound connection managers of pod `i`'s
/// sidecar, by the chain's port (oracle/sidecar.go); None when istiod was not asked
/// about the pod (no policy of its namespace or the root namespace: none apply, as in
/// the model).
pub(super) fn istiod_sidecar_filters(
    answer: &crate::oracle::output::Output,
    mesh: &Mesh,
    i: usize,
) -> Option<sidecars::IstiodFilters> {
    let p = &mesh.pods[i];
    let key = format!("{}/{}", p.namespace, p.name);
    let sc = answer.sidecars.iter().find(|s| s.pod == key)?;
    Some(
        sc.inbound
            .iter()
            .map(|h| (h.port, h.security_filters()))
            .collect(),
    )
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

/// Where the working directory goes: `$TMPDIR` when the user set it (and its path is
/// short: unix socket paths are limited to 108 bytes), else `/dev/shm` when it is a
/// writable tmpfs with [`SHM_ROOM`] free, else `/tmp`. A mesh of hundreds of pods
/// creates thousands of files and sockets there (certificates, configs, logs, control
/// sockets) and deletes them at the end; on ext4 creating inodes right after many were
/// deleted is slow (the allocator skips recently deleted ones), which made the
/// bring-up of 500 pods vary by a second or more. On tmpfs it does not.
fn workdir_base() -> PathBuf {
    let short = |p: &Path| p.as_os_str().len() <= 40;
    if let Some(t) = std::env::var_os("TMPDIR").map(PathBuf::from) {
        if short(&t) {
            return t;
        }
    }
    let shm = Path::new("/dev/shm");
    if tmpfs_room(shm).is_some_and(|free| free >= SHM_ROOM) {
        return shm.to_path_buf();
    }
    PathBuf::from("/tmp")
}

/// The free space /dev/shm must have to hold a workdir (500 pods take about 11 MiB;
/// Docker's default /dev/shm of 64 MiB is passed over, as other programs share it).
const SHM_ROOM: u64 = 128 << 20;

/// The bytes free in `dir` when it is a tmpfs this process may write to.
fn tmpfs_room(dir: &Path) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statfs fills a zeroed struct; access only reads the path.
        unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            let ok = libc::statfs(c.as_ptr(), &mut st) == 0
                && st.f_type == libc::TMPFS_MAGIC
                && libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0;
            ok.then(|| st.f_bavail as u64 * st.f_bsize as u64)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_writable_tmpfs_counts_as_tmpfs() {
        assert_eq!(tmpfs_room(Path::new("/proc")), None, "procfs is not tmpfs");
        assert_eq!(tmpfs_room(Path::new("/no/such/dir")), None);
        // Where /dev/shm is tmpfs (Linux, Docker), its free space is read.
        let shm = Path::new("/dev/shm");
        if shm.is_dir()
            && std::fs::read_to_string("/proc/mounts")
                .is_ok_and(|m| m.lines().any(|l| l.contains(" /dev/shm tmpfs ")))
        {
            assert!(tmpfs_room(shm).is_some_and(|free| free > 0));
        }
    }
}
