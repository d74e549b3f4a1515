//! The workloads of the fixtures as istioctl analyze sees them: every pod that would
//! run, whatever object makes it. Deployments, bare Pods, ReplicaSets, StatefulSets,
//! DaemonSets and Jobs are workloads (istioctl's analyzers iterate `gvk.Pod`; from
//! manifests, meshcheck takes each object's pod template in its place).
//!
//! The local target runs only the Deployments' pods (src/istio/pods.rs); this view is
//! for the analyses of workload selection, so that a Gateway selecting a bare gateway
//! Pod, or a Service selecting a StatefulSet's pods, is not reported as selecting
//! nothing.

use crate::fixtures::k8s::{IntOrString, LabelSelector, Labels, PodTemplate};
use crate::fixtures::{describe, Fixtures, Source};
use crate::istio::injection;

/// The name of Istio's proxy container (istioctl util.IstioProxyName).
const ISTIO_PROXY: &str = "istio-proxy";

/// One workload: the pod it runs, with the object that makes it.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub source: Source,
    /// The selector of a templated workload (None for a bare Pod).
    pub selector: Option<LabelSelector>,
    /// How many pods it runs (`spec.replicas`, default 1; a DaemonSet or Job: 1).
    pub replicas: u32,
    /// The pod's metadata and spec (a bare Pod's own).
    pub pod: PodTemplate,
    /// `spec.nodeName` when the pod names its node (None: the scheduler picks it).
    pub node_name: Option<String>,
}

impl Workload {
    /// `Kind namespace/name` of the object that makes the pods.
    pub fn describe(&self) -> String {
        describe(&self.kind, &self.namespace, &self.name)
    }

    pub fn labels(&self) -> &Labels {
        &self.pod.metadata.labels
    }

    /// Whether the pod is an Istio gateway proxy: made with Istio's `gateway`
    /// injection template and injected (istio-discovery's gateway injection, as
    /// src/istio/pods.rs plans it), or a pod that runs only Istio's proxy (a gateway
    /// deployed without injection templates, or a running pod as istioctl analyze's
    /// testdata give it: pkg/config/analysis/analyzers/testdata/gateway-*.yaml).
    pub fn is_gateway(&self, ns_labels: &Labels) -> bool {
        let m = &self.pod.metadata;
        let template = m
            .annotations
            .get("inject.istio.io/templates")
            .is_some_and(|t| t.split(',').any(|t| t.trim() == "gateway"));
        let containers = &self.pod.spec.containers;
        let proxy_only = !containers.is_empty() && containers.iter().all(|c| c.name == ISTIO_PROXY);
        (template && injection(ns_labels, &m.labels, &m.annotations)) || proxy_only
    }

    /// Whether the pod opts out of injection (`sidecar.istio.io/inject: "false"`, the
    /// label taking precedence over the annotation as in istioctl's injection analyzer).
    pub fn opts_out(&self) -> bool {
        let m = &self.pod.metadata;
        m.labels
            .get("sidecar.istio.io/inject")
            .or_else(|| m.annotations.get("sidecar.istio.io/inject"))
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    }

    /// Whether the template matches the workload's own selector (the API server
    /// rejects a templated workload whose selector does not select its template).
    pub fn selector_matches_template(&self) -> bool {
        match &self.selector {
            None => true,
            Some(sel) => {
                !sel.match_labels.is_empty()
                    && crate::fixtures::k8s::selects(&sel.match_labels, self.labels())
            }
        }
    }

    /// The container port a Service `targetPort` names in this pod.
    pub fn resolve_port(&self, target: &IntOrString) -> Option<u16> {
        match target {
            IntOrString::Int(p) => Some(*p),
            IntOrString::String(name) => self
                .pod
                .spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        }
    }
}

/// Where each kind keeps its pod template: (API group, kind, path to the template).
/// An empty path: the object is the pod.
const KINDS: &[(&str, &str, &[&str])] = &[
    ("", "Pod", &[]),
    ("apps", "ReplicaSet", &["spec", "template"]),
    ("apps", "StatefulSet", &["spec", "template"]),
    ("apps", "DaemonSet", &["spec", "template"]),
    ("batch", "Job", &["spec", "template"]),
];

/// Every workload of the fixtures: the Deployments, then the other kinds in fixture
/// order. An object whose pod template does not decode is left out (the loader's
/// warning already names its kind as not modelled).
pub fn workloads(fx: &Fixtures) -> Vec<Workload> {
    let mut out: Vec<Workload> = fx
        .deployments
        .iter()
        .map(|d| Workload {
            kind: d.kind.clone(),
            namespace: d.namespace.clone(),
            name: d.name.clone(),
            source: d.source.clone(),
            selector: Some(d.spec.spec.selector.clone()),
            replicas: d.spec.spec.replicas.unwrap_or(1),
            pod: d.spec.spec.template.clone(),
            node_name: None,
        })
        .collect();
    for o in &fx.objects {
        let group = o.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let Some((_, _, path)) = KINDS.iter().find(|(g, k, _)| *g == group && *k == o.kind) else {
            continue;
        };
        let template = path.iter().try_fold(&o.raw, |v, k| v.get(*k));
        let Some(pod) =
            template.and_then(|t| serde_json::from_value::<PodTemplate>(t.clone()).ok())
        else {
            continue;
        };
        let selector = (!path.is_empty())
            .then(|| o.raw.get("spec").and_then(|s| s.get("selector")))
            .flatten()
            .and_then(|s| serde_json::from_value::<LabelSelector>(s.clone()).ok());
        // A Job's selector is generated by the API server unless `manualSelector`.
        let selector = match (o.kind.as_str(), selector) {
            ("Job", None) => None,
            (_, s) if !path.is_empty() => Some(s.unwrap_or_default()),
            _ => None,
        };
        let node_name = template
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("nodeName"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        out.push(Workload {
            node_name,
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            source: o.source.clone(),
            selector,
            replicas: o
                .raw
                .get("spec")
                .and_then(|s| s.get("replicas"))
                .and_then(serde_json::Value::as_u64)
                .map(|r| r.min(u64::from(u32::MAX)) as u32)
                .unwrap_or(1),
            pod,
        });
    }
    out
}
