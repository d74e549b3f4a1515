//! Diagnostics of a cluster target, one function per kind of evidence: the pods of
//! the fixture namespaces with their logs, the namespaces' events, the applied
//! objects as the cluster has them, and the gateways' Envoy configuration dumps.

use super::{run_tool, ClusterTarget, DeployOptions, Istioctl};
use crate::targets::kube::Applied;
use k8s_openapi::api::core::v1::{Event, Pod};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The directory diagnostics go to, and the files written there so far.
struct DiagnosticsDir {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

impl DiagnosticsDir {
    /// Writes `name` in the directory, remembering it when the write succeeds.
    fn write(&mut self, name: &str, text: String) {
        let p = self.dir.join(name);
        if std::fs::write(&p, text).is_ok() {
            self.files.push(p);
        }
    }
}

impl ClusterTarget {
    /// After a failed apply or rollout: diagnostics into `opts.diagnostics_dir`.
    pub(super) async fn failure_diagnostics(&self, opts: &DeployOptions) {
        let Some(dir) = &opts.diagnostics_dir else {
            return;
        };
        let _ = std::fs::remove_dir_all(dir);
        let files = tokio::time::timeout(Duration::from_secs(120), self.collect(dir.clone()))
            .await
            .unwrap_or_default();
        if !files.is_empty() {
            eprintln!(
                "diagnostics of the failed bring-up: {} file(s) in {}",
                files.len(),
                dir.display()
            );
        }
    }

    /// Writes every kind of diagnostics into `dir`; the files written.
    pub(crate) async fn collect(&self, dir: PathBuf) -> Vec<PathBuf> {
        if std::fs::create_dir_all(&dir).is_err() {
            return Vec::new();
        }
        let mut out = DiagnosticsDir {
            dir,
            files: Vec::new(),
        };
        // Pods, their logs, and events, per namespace.
        for ns in &self.namespaces {
            self.collect_pods_and_logs(ns, &mut out).await;
            self.collect_events(ns, &mut out).await;
        }
        // The applied objects as the cluster has them (with status).
        self.collect_applied_objects(&mut out).await;
        // The gateway's Envoy configuration, as istiod programmed it.
        if let Some(istioctl) = &self.istioctl {
            self.collect_config_dumps(istioctl, &mut out).await;
        }
        out.files
    }

    /// `NS.pods.json`, and the last 500 lines of every container's log of `ns`.
    async fn collect_pods_and_logs(&self, ns: &str, out: &mut DiagnosticsDir) {
        let pods: ::kube::Api<Pod> = ::kube::Api::namespaced(self.client.clone(), ns);
        let Ok(list) = pods.list(&Default::default()).await else {
            return;
        };
        out.write(
            &format!("{ns}.pods.json"),
            serde_json::to_string_pretty(&list.items).unwrap_or_default(),
        );
        for p in &list.items {
            let pname = p.metadata.name.clone().unwrap_or_default();
            for c in container_names(p) {
                let lp = ::kube::api::LogParams {
                    container: Some(c.clone()),
                    tail_lines: Some(500),
                    ..Default::default()
                };
                if let Ok(log) = pods.logs(&pname, &lp).await {
                    out.write(&format!("{ns}.{pname}.{c}.log"), log);
                }
            }
        }
    }

    /// `NS.events.txt`: the events of `ns`, one line each.
    async fn collect_events(&self, ns: &str, out: &mut DiagnosticsDir) {
        let events: ::kube::Api<Event> = ::kube::Api::namespaced(self.client.clone(), ns);
        if let Ok(list) = events.list(&Default::default()).await {
            let text: Vec<String> = list.items.iter().map(event_line).collect();
            out.write(&format!("{ns}.events.txt"), text.join("\n"));
        }
    }

    /// `applied-objects.json`: the objects this run applied, as read back now.
    async fn collect_applied_objects(&self, out: &mut DiagnosticsDir) {
        let mut objs = Vec::new();
        for a in &self.applied {
            if let Some(o) = self.read_applied(a).await {
                objs.push(o);
            }
        }
        out.write(
            "applied-objects.json",
            serde_json::to_string_pretty(&objs).unwrap_or_default(),
        );
    }

    /// One applied object as the cluster has it; `None` when it cannot be read.
    async fn read_applied(&self, a: &Applied) -> Option<serde_json::Value> {
        let api: ::kube::Api<::kube::api::DynamicObject> = if a.namespace.is_empty() {
            ::kube::Api::all_with(self.client.clone(), &a.api_resource)
        } else {
            ::kube::Api::namespaced_with(self.client.clone(), &a.namespace, &a.api_resource)
        };
        let o = api.get(&a.name).await.ok()?;
        Some(serde_json::to_value(&o).unwrap_or_default())
    }

    /// `NS.POD.config_dump.json` (or `.error.txt`) for every gateway pod.
    async fn collect_config_dumps(&self, istioctl: &Istioctl, out: &mut DiagnosticsDir) {
        for (ns, labels) in &self.gateway_selector {
            let pods: ::kube::Api<Pod> = ::kube::Api::namespaced(self.client.clone(), ns);
            let lp = ::kube::api::ListParams::default().labels(&label_selector(labels));
            for p in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                let pname = p.metadata.name.unwrap_or_default();
                dump_proxy_config(istioctl, ns, &pname, out).await;
            }
        }
    }
}

/// The names of a pod's containers, then of its init containers.
fn container_names(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.name.clone())
                .chain(s.init_containers.iter().flatten().map(|c| c.name.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

/// An event as one line: type, reason, object, message, count.
fn event_line(e: &Event) -> String {
    format!(
        "{} {} {}/{}: {} {}",
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        e.involved_object.kind.clone().unwrap_or_default(),
        e.involved_object.name.clone().unwrap_or_default(),
        e.message.clone().unwrap_or_default(),
        e.count.unwrap_or(1)
    )
}

/// The label selector of gateway pods, without Istio's own labels.
fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| !k.contains("istio.io/"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes the Envoy configuration of gateway pod `ns/pod`, or why it could not be read.
async fn dump_proxy_config(istioctl: &Istioctl, ns: &str, pod: &str, out: &mut DiagnosticsDir) {
    let args = istioctl.proxy_config_args(pod, ns);
    match run_tool(
        &istioctl.bin,
        &args,
        Duration::from_secs(60),
        "istioctl proxy-config",
    )
    .await
    {
        Ok(dump) => out.write(&format!("{ns}.{pod}.config_dump.json"), dump),
        Err(e) => out.write(&format!("{ns}.{pod}.config_dump.error.txt"), e.to_string()),
    }
}
