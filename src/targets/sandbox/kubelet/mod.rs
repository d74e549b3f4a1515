//! The sandbox's kubelet: kwok plays the node and gives scheduled pods their
//! addresses; this plays the rest of a kubelet for every pod on the node: it runs the
//! pod's containers as processes (pod.rs), reports their state and readiness in the
//! pod's status, restarts what crashes, and on deletion stops them within the grace
//! period before the pod's final delete. It polls the node's pods (every 200 ms)
//! rather than watching: a handful of pods, and nothing to resume after an error.

mod env;
pub mod images;
mod pod;
mod probe;
pub mod status;
mod volumes;

use super::istiod::Supervisor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub use env::NodeCapacity;

/// How often the node's pods are listed.
const POLL: Duration = Duration::from_millis(200);

/// The programs containers run, where every container user can execute them.
#[derive(Debug, Clone)]
pub struct Bins {
    pub stub: PathBuf,
    /// Arguments before the container's (`stub` when the stub is meshcheck itself).
    pub stub_args: Vec<String>,
    pub envoy: PathBuf,
    /// pilot-agent by Istio release (`1.30.3`, `1.31.0`).
    pub pilot_agents: BTreeMap<String, PathBuf>,
    /// Istio's Envoy bootstrap template by release (the proxyv2 image's
    /// /var/lib/istio/envoy/envoy_bootstrap_tmpl.json).
    pub bootstrap_templates: BTreeMap<String, PathBuf>,
}

impl Bins {
    /// Puts what `program`'s image holds besides the program into a container's
    /// root (proxyv2: Istio's Envoy bootstrap template, where pilot-agent reads it).
    pub fn image_files(
        &self,
        program: &images::Program,
        root: &std::path::Path,
    ) -> Result<(), String> {
        if let images::Program::PilotAgent { release } = program {
            let from = self
                .bootstrap_templates
                .get(release)
                .ok_or_else(|| format!("no Envoy bootstrap template for Istio {release}"))?;
            let to = root.join("var/lib/istio/envoy/envoy_bootstrap_tmpl.json");
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        Ok(())
    }

    /// The pilot-agent of `release`, or why there is none.
    pub fn pilot_agent(&self, release: &str) -> Result<PathBuf, String> {
        self.pilot_agents.get(release).cloned().ok_or_else(|| {
            format!(
                "Istio {release}'s proxy is not built for this sandbox (built: {}); the sandbox builds the versions a run asks for (--istio-version, upgrade --to)",
                self.pilot_agents.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// What every pod's task shares.
pub struct Ctx {
    pub client: kube::Client,
    pub pods_dir: PathBuf,
    pub bins: Bins,
    pub istiod: Arc<Supervisor>,
    pub node: NodeCapacity,
}

/// The running kubelet.
pub struct Kubelet {
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    problems: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

/// A pod the loop runs: its updates and its task.
struct Tracked {
    updates: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// Whether the kubelet takes `pod` on: scheduled to `node`, addressed by kwok (or on
/// the host network), not finished.
fn runnable(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status.and_then(|s| s.pod_ip.as_ref()).is_some();
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    (has_ip || host_network) && !finished
}

/// Lists the node's pods and hands each to its task: new ones start, changed ones
/// are updated, vanished ones stop.
async fn sync(
    ctx: &Arc<Ctx>,
    node: &str,
    tracked: &mut BTreeMap<String, Tracked>,
    problems: &Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    stop: &watch::Receiver<bool>,
) -> Result<(), kube::Error> {
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = Api::<Pod>::all(ctx.client.clone()).list(&lp).await?;
    let mut seen = Vec::new();
    for pod in pods.items {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        seen.push(uid.clone());
        match tracked.get(&uid) {
            Some(t) => {
                let _ = t.updates.send(Some(pod));
            }
            None if runnable(&pod) => {
                let (tx, rx) = watch::channel(Some(pod));
                let task = tokio::spawn(pod::run(ctx.clone(), rx, problems.clone(), stop.clone()));
                tracked.insert(uid, Tracked { updates: tx, task });
            }
            None => {}
        }
    }
    for (uid, t) in tracked.iter() {
        if !seen.contains(uid) {
            let _ = t.updates.send(None);
        }
    }
    tracked.retain(|_, t| !t.task.is_finished());
    Ok(())
}

impl Kubelet {
    /// Starts the kubelet for `node`.
    pub fn start(ctx: Ctx, node: &str) -> Kubelet {
        let ctx = Arc::new(ctx);
        let (stop, stop_rx) = watch::channel(false);
        let problems: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Default::default();
        let node = node.to_string();
        let p = problems.clone();
        let task = tokio::spawn(async move {
            let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
            let mut stopping = stop_rx.clone();
            loop {
                if let Err(e) = sync(&ctx, &node, &mut tracked, &p, &stop_rx).await {
                    tracing::debug!("sandbox kubelet: listing pods: {e}");
                }
                tokio::select! {
                    _ = stopping.changed() => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            // The pods' tasks saw the stop too: wait for their processes to be gone.
            for (_, t) in tracked {
                let _ = t.task.await;
            }
        });
        Kubelet {
            stop,
            task: Mutex::new(Some(task)),
            problems,
        }
    }

    /// Problems of the pods now (crashed containers, images that cannot run).
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// Stops every pod's processes at once and the loop (the sandbox ends).
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}
