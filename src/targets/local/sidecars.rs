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
use std::collections::{BTreeMap, BTreeSet};
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
    /// None: the model's (authz::sidecar_plan). The host keeps them from then on
    /// ([`SidecarHost::push_istiod_filters`] replaces them).
    pub istiod_filters: Option<IstiodFilters>,
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

/// istiod's security filters for one pod's inbound connection managers, by port.
pub(super) type IstiodFilters = Vec<(u32, Vec<Value>)>;

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
    /// istiod's filters for the pods istiod programs (`--control-plane istiod`), by
    /// pod; the others run the model's.
    istiod_filters: Mutex<BTreeMap<usize, IstiodFilters>>,
    version: std::sync::atomic::AtomicU64,
    /// A digest of the listeners last written (see [`SidecarHost::write_listeners`]).
    written: Mutex<Option<u64>>,
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
        let mut chunk: Vec<HostedPod> = rest.by_ref().take(per).collect();
        let istiod_filters = chunk
            .iter_mut()
            .filter_map(|p| Some((p.pod, p.istiod_filters.take()?)))
            .collect();
        hosts.push(SidecarHost {
            name: format!("sidecar host {i}"),
            stem: format!("sidecars-{i}"),
            admin: socks.join(format!("sidecars-{i}.sock")),
            lds: dir.join(format!("sidecars-{i}.lds.json")),
            pods: chunk,
            killed: Mutex::new(BTreeSet::new()),
            istiod_filters: Mutex::new(istiod_filters),
            version: std::sync::atomic::AtomicU64::new(0),
            written: Mutex::new(None),
        });
    }
    hosts
}

impl SidecarHost {
    fn killed(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.killed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn istiod_filters(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, IstiodFilters>> {
        self.istiod_filters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
        let clusters = {
            let filters = self.istiod_filters();
            let pods: Vec<envoy::SidecarPod> = self
                .pods
                .iter()
                .map(|p| resources_of(p, &filters))
                .collect();
            let mut clusters = Vec::new();
            for p in &pods {
                clusters.extend(envoy::sidecar_resources(mesh, p, root).1);
            }
            clusters.extend(envoy::sidecar_outbound_clusters(mesh, &pods, addrs, root));
            clusters
        };
        // (write_listeners takes the filters' lock itself.)
        self.write_listeners(mesh, root)?;
        Ok(envoy::sidecar_host_bootstrap(
            &self.stem,
            clusters,
            &self.lds,
            &self.admin,
        ))
    }

    /// Writes the listeners of every pod not killed, as a new LDS version (written
    /// aside and renamed: Envoy reads whole files only); returns the version, or None
    /// when they are the listeners last written (Envoy's file subscription would skip
    /// the file, so nothing is written).
    fn write_listeners(&self, mesh: &Mesh, root: &Path) -> Result<Option<u64>, TargetError> {
        let killed = self.killed().clone();
        let filters = self.istiod_filters();
        let mut listeners = Vec::new();
        for p in self.pods.iter().filter(|p| !killed.contains(&p.pod)) {
            listeners.extend(envoy::sidecar_resources(mesh, &resources_of(p, &filters), root).0);
        }
        drop(filters);
        let digest = digest(&listeners);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written == Some(digest) {
            return Ok(None);
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
            .map_err(io(format!("cannot replace {}", self.lds.display())))?;
        *written = Some(digest);
        Ok(Some(version))
    }

    /// Replaces the istiod filters of the host's pods with `filters` (another istiod's
    /// answer: a config push; a pod not in it runs the model's) and writes the
    /// listeners; returns their LDS version, for [`SidecarHost::wait_listeners_at`]
    /// (None: the listeners did not change).
    pub fn push_istiod_filters(
        &self,
        filters: BTreeMap<usize, IstiodFilters>,
        mesh: &Mesh,
        root: &Path,
    ) -> Result<Option<u64>, TargetError> {
        *self.istiod_filters() = filters;
        self.write_listeners(mesh, root)
    }

    /// Waits until the host has taken LDS version `version`, or fails when `deadline`
    /// passes, with the reason Envoy rejected it if it did (read from the admin's
    /// config dump: the host keeps no statistics).
    pub fn wait_listeners_at(
        &self,
        version: u64,
        deadline: std::time::Instant,
    ) -> Result<(), TargetError> {
        let fail = |why: String| TargetError::Start {
            what: format!("{} (LDS version {version})", self.name),
            why,
            log_tail: None,
        };
        loop {
            let dump = super::admin_get(&self.admin, "/config_dump?mask=version_info");
            let at = dump.as_deref().map(lds_version).unwrap_or_default();
            if at == version.to_string() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let rejected =
                    super::admin_get(&self.admin, "/config_dump?resource=dynamic_listeners")
                        .as_deref()
                        .and_then(listener_error);
                let why = match rejected {
                    Some(e) => format!("Envoy rejected it: {e}"),
                    None => format!("not applied in time (the host runs version {at:?})"),
                };
                return Err(fail(why));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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

/// A digest of `listeners` as JSON (hashed as written, without keeping the text).
fn digest(listeners: &[Value]) -> u64 {
    use std::hash::Hasher;
    struct Hashing(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Default::default());
    let _ = serde_json::to_writer(&mut h, listeners);
    h.0.finish()
}

fn resources_of<'a>(
    p: &'a HostedPod,
    filters: &'a BTreeMap<usize, IstiodFilters>,
) -> envoy::SidecarPod<'a> {
    envoy::SidecarPod {
        pod: p.pod,
        pod_ip: p.pod_ip,
        app_ip: p.app_ip,
        ports: &p.ports,
        cert: &p.cert,
        istiod_filters: filters.get(&p.pod).map(Vec::as_slice),
    }
}

/// The version of the last LDS update Envoy took (ListenersConfigDump.version_info,
/// from `/config_dump?mask=version_info`; Envoy's file subscription skips a file whose
/// resources did not change, and so does [`SidecarHost::write_listeners`]).
fn lds_version(dump: &str) -> String {
    let v: Value = serde_json::from_str(dump).unwrap_or_default();
    v["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with(".ListenersConfigDump"))
        })
        .and_then(|c| c["version_info"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Why a listener's last update failed (its `error_state`, from
/// `/config_dump?resource=dynamic_listeners`), if one did.
fn listener_error(dump: &str) -> Option<String> {
    let v: Value = serde_json::from_str(dump).ok()?;
    v["configs"]
        .as_array()?
        .iter()
        .find_map(|l| l["error_state"]["details"].as_str())
        .map(str::to_string)
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

    #[test]
    fn the_lds_version_is_the_listeners_dumps_not_the_clusters() {
        let dump = r#"{"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "version_info": "9"},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "version_info": "3"}
        ]}"#;
        assert_eq!(lds_version(dump), "3");
        assert_eq!(lds_version(r#"{"configs": []}"#), "");
        assert_eq!(lds_version("not json"), "");
    }

    #[test]
    fn a_listener_whose_update_failed_says_why() {
        let dump = r#"{"configs": [
            {"name": "a", "active_state": {"version_info": "2"}},
            {"name": "b", "error_state": {"details": "invalid port"}}
        ]}"#;
        assert_eq!(listener_error(dump).as_deref(), Some("invalid port"));
        assert_eq!(
            listener_error(r#"{"configs": [{"name": "a", "active_state": {}}]}"#),
            None
        );
    }
}
