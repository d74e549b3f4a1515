//! Sidecar hosts: the local target runs the sidecars of many pods in one Envoy (a
//! "sidecar host"), as many hosts as the machine has cores for a large mesh, one for
//! a small one. Each pod's sidecar keeps what makes it that pod's: listeners on the
//! pod's own address, its own SPIFFE certificate on the mTLS filter chain (so the
//! gateway's SAN check and the app's XFCC see the pod's identity), and a cluster to
//! its own app. Starting one Envoy per pod costs ~100 ms of CPU each; a host pays
//! that once and ~2.5 ms per pod.
//!
//! The pods' listeners come from a file the host watches (LDS), so one pod's sidecar
//! can be killed alone ([`SidecarHost::kill`]): its listeners go, connections to the
//! pod are refused and the ones open are closed, the other pods' sidecars stay.

use super::certs::CertFiles;
use super::{envoy, io, TargetError};
use crate::istio::Mesh;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Pods per host below which a mesh gets no further host.
const PODS_PER_HOST: usize = 64;

/// One pod whose sidecar a host serves.
#[derive(Debug, Clone)]
pub(super) struct HostedPod {
    /// Index into `mesh.pods`.
    pub pod: usize,
    pub pod_ip: Ipv4Addr,
    pub app_ip: Ipv4Addr,
    pub ports: Vec<u16>,
    pub cert: CertFiles,
    /// `--control-plane istiod`: the security filters (JWT, RBAC) istiod puts in the
    /// pod's inbound connection managers, by port (0: the passthrough chains);
    /// None: the model's (authz::sidecar_plan).
    pub istiod_filters: Option<Vec<(u32, Vec<Value>)>>,
}

impl HostedPod {
    /// The addresses the pod's sidecar listens on.
    pub fn listen(&self) -> Vec<SocketAddr> {
        self.ports
            .iter()
            .map(|p| SocketAddr::new(self.pod_ip.into(), *p))
            .collect()
    }
}

/// An Envoy serving the sidecars of `pods`.
#[derive(Debug)]
pub(super) struct SidecarHost {
    /// The process name (`sidecar host N`).
    pub name: String,
    /// File stem of its config and log (`sidecars-N`).
    pub stem: String,
    pub admin: PathBuf,
    lds: PathBuf,
    pub pods: Vec<HostedPod>,
    /// Pods whose sidecar was killed (listeners removed).
    killed: Mutex<BTreeSet<usize>>,
    version: std::sync::atomic::AtomicU64,
}

/// How many hosts `pods` sidecars get: one per [`PODS_PER_HOST`] pods, at most one per
/// core (each host loads its configuration on one thread; more hosts than cores only
/// cost memory).
pub(super) fn host_count(pods: usize, cores: usize) -> usize {
    pods.div_ceil(PODS_PER_HOST).clamp(1, cores.max(1))
}

/// Splits `pods` over hosts whose files live in `dir` (admin sockets in `socks`).
pub(super) fn plan(pods: Vec<HostedPod>, dir: &Path, socks: &Path) -> Vec<SidecarHost> {
    if pods.is_empty() {
        return Vec::new();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = host_count(pods.len(), cores);
    let per = pods.len().div_ceil(n);
    let mut hosts = Vec::new();
    let mut rest = pods.into_iter().peekable();
    while rest.peek().is_some() {
        let i = hosts.len();
        let chunk: Vec<HostedPod> = rest.by_ref().take(per).collect();
        hosts.push(SidecarHost {
            name: format!("sidecar host {i}"),
            stem: format!("sidecars-{i}"),
            admin: socks.join(format!("sidecars-{i}.sock")),
            lds: dir.join(format!("sidecars-{i}.lds.json")),
            pods: chunk,
            killed: Mutex::new(BTreeSet::new()),
            version: std::sync::atomic::AtomicU64::new(0),
        });
    }
    hosts
}

impl SidecarHost {
    fn killed(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.killed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the host serves `pod`.
    pub fn serves(&self, pod: usize) -> bool {
        self.pods.iter().any(|p| p.pod == pod)
    }

    /// Whether `pod`'s sidecar was killed.
    pub fn is_killed(&self, pod: usize) -> bool {
        self.killed().contains(&pod)
    }

    /// Writes the listeners file and returns the host's bootstrap: each pod's inbound
    /// clusters, and the outbound ones its sidecar calls itself (CUSTOM's authorizers).
    pub fn bootstrap(
        &self,
        mesh: &Mesh,
        addrs: &envoy::Addresses,
        root: &Path,
    ) -> Result<Value, TargetError> {
        let pods: Vec<envoy::SidecarPod> = self.pods.iter().map(|p| self.resources_of(p)).collect();
        let mut clusters = Vec::new();
        for p in &pods {
            clusters.extend(envoy::sidecar_resources(mesh, p, root).1);
        }
        clusters.extend(envoy::sidecar_outbound_clusters(mesh, &pods, addrs, root));
        self.write_listeners(mesh, root)?;
        Ok(envoy::sidecar_host_bootstrap(
            &self.stem,
            clusters,
            &self.lds,
            &self.admin,
        ))
    }

    fn resources_of<'a>(&self, p: &'a HostedPod) -> envoy::SidecarPod<'a> {
        envoy::SidecarPod {
            pod: p.pod,
            pod_ip: p.pod_ip,
            app_ip: p.app_ip,
            ports: &p.ports,
            cert: &p.cert,
            istiod_filters: p.istiod_filters.as_deref(),
        }
    }

    /// Writes the listeners of every pod not killed, as a new LDS version (written
    /// aside and renamed: Envoy reads whole files only).
    fn write_listeners(&self, mesh: &Mesh, root: &Path) -> Result<(), TargetError> {
        let killed = self.killed().clone();
        let mut listeners = Vec::new();
        for p in self.pods.iter().filter(|p| !killed.contains(&p.pod)) {
            listeners.extend(envoy::sidecar_resources(mesh, &self.resources_of(p), root).0);
        }
        let version = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let text =
            serde_json::to_string(&envoy::lds_response(version, listeners)).unwrap_or_default();
        let tmp = self.lds.with_extension("json.new");
        std::fs::write(&tmp, text).map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.lds)
            .map_err(io(format!("cannot replace {}", self.lds.display())))
    }

    /// Kills `pod`'s sidecar: its listeners are removed (connections to the pod are
    /// refused from then on; the open ones close). Returns once no listener of the
    /// pod accepts connections, or an error after `within`.
    pub fn kill(
        &self,
        pod: usize,
        mesh: &Mesh,
        root: &Path,
        within: std::time::Duration,
    ) -> Result<(), TargetError> {
        let Some(hosted) = self.pods.iter().find(|p| p.pod == pod) else {
            return Err(TargetError::BadInput(format!(
                "{} does not serve pod {}",
                self.name, mesh.pods[pod].name
            )));
        };
        self.killed().insert(pod);
        self.write_listeners(mesh, root)?;
        let deadline = std::time::Instant::now() + within;
        while hosted.listen().iter().any(|a| super::tcp_ready(*a)) {
            if std::time::Instant::now() > deadline {
                return Err(TargetError::Start {
                    what: format!(
                        "{} (killing the sidecar of {})",
                        self.name, mesh.pods[pod].name
                    ),
                    why: format!("its listeners still accept connections after {within:?}"),
                    log_tail: None,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_per_64_pods_at_most_one_per_core() {
        assert_eq!(host_count(1, 2), 1);
        assert_eq!(host_count(64, 8), 1);
        assert_eq!(host_count(65, 8), 2);
        assert_eq!(host_count(500, 2), 2);
        assert_eq!(host_count(500, 16), 8);
        assert_eq!(host_count(3, 0), 1);
    }
}
