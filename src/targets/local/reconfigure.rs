//! Changing a running local target the way an Istio upgrade changes a mesh:
//! - a new istiod's configuration pushed to the running gateways over their xDS (here
//!   files the Envoys watch: a real configuration update, listeners drained and
//!   replaced by Envoy itself, not a restart);
//! - every proxy restarted under traffic, gateways first, as `kubectl rollout restart`
//!   does: an Envoy hot restart, where the new process takes the listening sockets
//!   over before the old one drains and exits (the new pod ready before the old pod
//!   goes). A test-only variant kills the old process first, without draining.
//!
//! Envoy's drain time is short here (2 s, `--drain-strategy immediate`; Istio's
//! default drainDuration is 45 s) so that a run does not wait on it.

use super::certs::CertFiles;
use super::istiod::{self, Secrets, Xds};
use super::{admin_get, envoy, io, procs, tail, LocalTarget};
use crate::oracle::output::Output;
use crate::targets::TargetError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long an old Envoy drains its connections before it stops listening.
pub(super) const DRAIN_SECS: &str = "2";
/// When a hot-restarted parent exits at the latest (after its drain).
const PARENT_SHUTDOWN_SECS: u64 = 3;

/// A gateway istiod programs, with what a new push needs.
#[derive(Debug)]
pub(super) struct IstiodGateway {
    /// Index into `mesh.gateways`.
    pub gw: usize,
    /// Index into `mesh.pods`.
    pub pod: usize,
    pub admin: PathBuf,
    pub xds: Xds,
    pub cert: CertFiles,
    pub credentials: BTreeMap<String, CertFiles>,
    pub sds: PathBuf,
}

/// An Envoy the target started, and how to start it again.
#[derive(Debug, Clone)]
pub(super) struct ProxyProc {
    /// The process name in the registry (`ns/pod gateway proxy`, `ns/pod istio-proxy`).
    pub name: String,
    pub gateway: bool,
    pub config: PathBuf,
    pub admin: PathBuf,
    pub log: PathBuf,
    /// Where Envoy writes its hot-restart base id (None: started without hot restart).
    pub hot_restart: Option<PathBuf>,
    pub epoch: u32,
    pub service_node: String,
    pub service_cluster: String,
    /// `--drain-time-s`.
    pub drain_secs: &'static str,
}

impl ProxyProc {
    /// The Envoy command line of this proxy at its epoch (`first`: the very first
    /// start, which picks a free base id).
    pub(super) fn command(&self, envoy: &Path, first: bool) -> Command {
        let mut cmd = Command::new(envoy);
        cmd.arg("-c")
            .arg(&self.config)
            .args(["--concurrency", "1", "--log-level", "warn"])
            // Istio's JSON uses fields Envoy deprecates: not worth a log line each.
            .args(["--component-log-level", "misc:error"])
            .args(["--drain-time-s", self.drain_secs])
            .args(["--drain-strategy", "immediate"])
            .args(["--service-node", &self.service_node])
            .args(["--service-cluster", &self.service_cluster]);
        match &self.hot_restart {
            None => {
                cmd.arg("--disable-hot-restart");
            }
            Some(base) if first => {
                cmd.args(["--use-dynamic-base-id", "--base-id-path"])
                    .arg(base)
                    .args(["--restart-epoch", "0"])
                    .args([
                        "--parent-shutdown-time-s",
                        &PARENT_SHUTDOWN_SECS.to_string(),
                    ]);
            }
            Some(_) => {
                cmd.args(["--base-id", &self.base_id().unwrap_or(0).to_string()])
                    .args(["--restart-epoch", &self.epoch.to_string()])
                    .args([
                        "--parent-shutdown-time-s",
                        &PARENT_SHUTDOWN_SECS.to_string(),
                    ]);
            }
        }
        cmd
    }

    /// The base id Envoy picked (written at its first start).
    fn base_id(&self) -> Option<u64> {
        read_base_id(self.hot_restart.as_ref()?)
    }

    /// Removes the shared memory this hot-restartable Envoy leaves in /dev/shm.
    pub(super) fn remove_shared_memory(&self) {
        if let Some(file) = &self.hot_restart {
            remove_shared_memory_of(file);
        }
    }
}

fn read_base_id(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Removes the shared memory of the Envoy whose base id is in `file` (Envoy names it
/// after its base id times ten, source/server/hot_restart_impl.cc).
fn remove_shared_memory_of(file: &Path) {
    if let Some(id) = read_base_id(file) {
        let _ = std::fs::remove_file(format!("/dev/shm/envoy_shared_memory_{}", id * 10));
    }
}

/// Removes the shared memory of every hot-restartable Envoy whose base id file is in
/// `dir` (`*.base-id`): at shutdown, and on Ctrl-C as a registered cleanup.
pub(super) fn remove_shared_memory_in(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for path in rd.flatten().map(|e| e.path()) {
        if path.extension().is_some_and(|x| x == "base-id") {
            remove_shared_memory_of(&path);
        }
    }
}

/// Whether the Envoy on admin socket `sock` runs the hot-restart epoch `epoch` and is
/// live.
fn runs_epoch(sock: &Path, epoch: u32) -> bool {
    let Some(info) = admin_get(sock, "/server_info") else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&info) else {
        return false;
    };
    v.pointer("/command_line_options/restart_epoch")
        .and_then(serde_json::Value::as_u64)
        == Some(u64::from(epoch))
        && v.get("state").and_then(serde_json::Value::as_str) == Some("LIVE")
}

/// Updates the Envoy on `sock` took from its LDS and CDS files so far, applied or
/// rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Updates {
    lds: u64,
    cds: u64,
    rejected: u64,
}

fn updates(sock: &Path) -> Option<Updates> {
    let stats = admin_get(
        sock,
        "/stats?filter=^(listener_manager.lds|cluster_manager.cds).update_(success|rejected)$",
    )?;
    let mut u = Updates::default();
    for line in stats.lines() {
        let Some((name, n)) = line.split_once(':') else {
            continue;
        };
        let n: u64 = n.trim().parse().unwrap_or(0);
        if name.ends_with("update_rejected") {
            u.rejected += n;
        }
        if name.starts_with("listener_manager.lds.") {
            u.lds += n;
        } else if name.starts_with("cluster_manager.cds.") {
            u.cds += n;
        }
    }
    Some(u)
}

impl LocalTarget {
    /// Pushes istiod's configuration in `answer` (another Istio version's, for the
    /// same fixtures) to every gateway istiod programs, and waits until each runs it:
    /// LDS and CDS at the new version, or an error naming the gateway when Envoy
    /// rejects it or `within` passes. The sidecars take the answer's security filters
    /// (their inbound JWT, RBAC and ext_authz) the same way.
    pub fn push_istiod_config(&self, answer: &Output, within: Duration) -> Result<(), TargetError> {
        if self.istiod_gateways.is_empty() {
            return Err(TargetError::BadInput(
                "the local target was not started with istiod as its control plane".into(),
            ));
        }
        let mut pushed = Vec::new();
        for g in &self.istiod_gateways {
            let before = updates(&g.admin).unwrap_or_default();
            let version = self.push_one(answer, g)?;
            pushed.push((g, version, before));
        }
        let sidecars = self.push_sidecar_filters(answer)?;
        let deadline = Instant::now() + within;
        for (g, version, before) in pushed {
            self.wait_applied(g, &version, before, deadline)?;
        }
        for (host, version) in sidecars {
            host.wait_listeners_at(version, deadline)?;
        }
        Ok(())
    }

    /// Gives each sidecar host the security filters `answer` has for its pods (a pod
    /// istiod was not asked about runs the model's, as at start), as a new LDS version
    /// of its listeners; returns the hosts whose listeners changed, with the version.
    fn push_sidecar_filters(
        &self,
        answer: &Output,
    ) -> Result<Vec<(&super::sidecars::SidecarHost, u64)>, TargetError> {
        let mut pushed = Vec::new();
        for host in &self.hosts {
            let filters = host
                .pods
                .iter()
                .filter_map(|p| {
                    let f = super::start::istiod_sidecar_filters(answer, &self.mesh, p.pod)?;
                    Some((p.pod, f))
                })
                .collect();
            if let Some(v) = host.push_istiod_filters(filters, &self.mesh, &self.mesh_root)? {
                pushed.push((host, v));
            }
        }
        Ok(pushed)
    }

    fn gateway_key(&self, g: &IstiodGateway) -> String {
        let pod = &self.mesh.pods[g.pod];
        format!("{}/{}", pod.namespace, pod.name)
    }

    /// Writes the new resources of one gateway; returns their version.
    fn push_one(&self, answer: &Output, g: &IstiodGateway) -> Result<String, TargetError> {
        let key = self.gateway_key(g);
        let fail = |why: String| TargetError::Start {
            what: format!("gateway {key} (istiod {} config)", answer.istio.release),
            why,
            log_tail: None,
        };
        let cfg = answer
            .gateways
            .iter()
            .find(|c| c.pod == key)
            .ok_or_else(|| fail("istiod generated no configuration for this pod".into()))?;
        let addrs = envoy::Addresses {
            node: self.node,
            pod_ip: &self.pod_ip,
        };
        let secrets = Secrets {
            identity: &g.cert,
            root: &self.mesh_root,
            credentials: &g.credentials,
            dir: g.sds.clone(),
        };
        let (listeners, clusters) =
            istiod::gateway_resources(cfg, &self.mesh, g.gw, &addrs, &secrets).map_err(fail)?;
        g.xds.write(&listeners, &clusters).map_err(fail)
    }

    /// Waits until the gateway took the new LDS and CDS files (each counted as an
    /// update applied or rejected); a rejection is an error with the Envoy log.
    fn wait_applied(
        &self,
        g: &IstiodGateway,
        version: &str,
        before: Updates,
        deadline: Instant,
    ) -> Result<(), TargetError> {
        let fail = |why: String| TargetError::Start {
            what: format!("gateway {}", self.gateway_key(g)),
            why,
            log_tail: self.proxy_named_for(g.pod).and_then(|p| tail(&p.log, 20)),
        };
        loop {
            let now = updates(&g.admin).unwrap_or(before);
            if now.rejected > before.rejected {
                return Err(fail(format!(
                    "Envoy rejected configuration version {version}"
                )));
            }
            if now.lds > before.lds && now.cds > before.cds {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "did not take configuration version {version} in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn proxy_named_for(&self, pod: usize) -> Option<ProxyProc> {
        let p = &self.mesh.pods[pod];
        let prefix = format!("{}/{} ", p.namespace, p.name);
        self.proxy_list()
            .into_iter()
            .find(|x| x.name.starts_with(&prefix))
    }

    fn proxy_list(&self) -> Vec<ProxyProc> {
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Restarts every proxy, gateways first, one after the other, each waited for
    /// (live within `within`); then waits for the old processes to finish draining.
    /// With `drain` (what Kubernetes and Istio do) the restart is an Envoy hot
    /// restart: no connection is refused. Without (test-only: a transition that stops
    /// a proxy without draining), each old process is killed before its replacement
    /// starts cold. Call from the thread that started the target (children die with
    /// it). Returns how many proxies were restarted.
    pub fn restart_proxies(&self, drain: bool, within: Duration) -> Result<usize, TargetError> {
        let mut order = self.proxy_list();
        order.sort_by_key(|p| !p.gateway);
        if drain {
            if let Some(p) = order.iter().find(|p| p.hot_restart.is_none()) {
                return Err(TargetError::BadInput(format!(
                    "{} was started without hot restart: the local target must be started restartable",
                    p.name
                )));
            }
        }
        for p in &order {
            eprintln!("  restarting {}", p.name);
            let next = if drain {
                self.hot_restart(p, within)?
            } else {
                self.cold_restart(p, within)?
            };
            let mut all = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = all.iter_mut().find(|x| x.name == p.name) {
                *slot = next;
            }
        }
        self.wait_retired(within);
        Ok(order.len())
    }

    /// Starts epoch n+1 of `p`, which takes the sockets over; the old one drains.
    fn hot_restart(&self, p: &ProxyProc, within: Duration) -> Result<ProxyProc, TargetError> {
        let mut next = p.clone();
        next.epoch += 1;
        procs::retire(self.owner, &p.name);
        let mut cmd = next.command(&self.envoy.path, false);
        let log = p.log.with_extension(format!("epoch{}.log", next.epoch));
        procs::spawn(self.owner, &p.name, &mut cmd, &log)
            .map_err(io(format!("cannot restart {}", p.name)))?;
        next.log = log;
        self.wait_live(&next, within)?;
        Ok(next)
    }

    /// Kills `p` at once, then starts it again from scratch (nothing drains).
    fn cold_restart(&self, p: &ProxyProc, within: Duration) -> Result<ProxyProc, TargetError> {
        procs::kill_now(self.owner, &p.name);
        p.remove_shared_memory();
        let _ = std::fs::remove_file(&p.admin);
        let mut next = p.clone();
        next.epoch = 0;
        let mut cmd = next.command(&self.envoy.path, true);
        let log = p.log.with_extension("cold.log");
        procs::spawn(self.owner, &p.name, &mut cmd, &log)
            .map_err(io(format!("cannot restart {}", p.name)))?;
        next.log = log;
        self.wait_live(&next, within)?;
        Ok(next)
    }

    fn wait_live(&self, p: &ProxyProc, within: Duration) -> Result<(), TargetError> {
        let deadline = Instant::now() + within;
        while !runs_epoch(&p.admin, p.epoch) {
            if procs::is_running(self.owner, &p.name) == Some(false) || Instant::now() > deadline {
                return Err(TargetError::Start {
                    what: format!("{} (restart, epoch {})", p.name, p.epoch),
                    why: if Instant::now() > deadline {
                        format!("not live within {within:?}")
                    } else {
                        "exited".into()
                    },
                    log_tail: tail(&p.log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits (bounded) for the hot-restarted parents to drain and exit.
    fn wait_retired(&self, within: Duration) {
        let deadline = Instant::now() + within.max(Duration::from_secs(PARENT_SHUTDOWN_SECS + 2));
        while procs::retiring(self.owner) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Shared memory of hot-restartable Envoys (after they stopped).
    pub(super) fn remove_shared_memory(&self) {
        remove_shared_memory_in(&self.workdir_path.join("envoy"));
    }
}
