//! Each DestinationRule's host names a Service or ServiceEntry host visible from it
//! (MC123), and each of its subsets selects some pod (MC124), whether or not a route
//! uses it (a routed subset without pods behind its Service is MC106).
//!
//! istioctl: pkg/config/analysis/analyzers/destinationrule/subset.go (1.30.3)
//! PodNotSelectedAnalyzer.Analyze: the host through util.GetDestinationHost with the
//! DestinationRule's exportTo (IST0174 UnknownDestinationRuleHost); each subset's labels
//! against every pod's labels, augmented with its node's topology labels
//! (pkg/kube/labels AugmentLabels: region, zone, subzone from the Node, the node name as
//! kubernetes.io/hostname; an empty Node label is not added) (IST0173
//! DestinationRuleSubsetNotSelectPods).

use super::visibility::{export_to, Registry};
use super::workloads::{workloads, Workload};
use super::{Ctx, Severity};
use crate::fixtures::k8s::Labels;
use crate::fixtures::Fixtures;
use serde_json::Value;

/// Pod labels Istio derives from the pod's node (AugmentLabels).
const FROM_NODE: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
    "kubernetes.io/hostname",
];

/// The labels of Node `name` in the fixtures, if it is there.
fn node_labels(fx: &Fixtures, name: &str) -> Option<Labels> {
    fx.objects
        .iter()
        .find(|o| o.kind == "Node" && o.name == name)
        .map(|o| {
            o.raw
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
}

/// Whether the pods of `w` have label `k` = `v`. A label from the node: an empty value
/// never matches; the node's own label when the pod names a Node of the fixtures, else
/// unknown (the scheduler picks the node): taken as a match, not to report what cannot
/// be judged.
fn has_label(fx: &Fixtures, w: &Workload, k: &str, v: &str) -> bool {
    if !FROM_NODE.contains(&k) {
        return w.labels().get(k).is_some_and(|x| x == v);
    }
    if v.is_empty() {
        return false;
    }
    let Some(node) = &w.node_name else {
        return true;
    };
    if k == "kubernetes.io/hostname" {
        return node == v;
    }
    match node_labels(fx, node) {
        Some(l) => l.get(k).is_some_and(|x| x == v),
        None => true,
    }
}

pub(super) fn destination_rules(c: &mut Ctx) {
    let fx = c.fx;
    let registry = Registry::build(fx);
    let pods: Vec<Workload> = workloads(fx)
        .into_iter()
        .filter(|w| w.replicas > 0 && w.selector_matches_template())
        .collect();
    for dr in &fx.destination_rules {
        let export = fx
            .objects
            .iter()
            .find(|o| o.kind == dr.kind && o.namespace == dr.namespace && o.name == dr.name)
            .map(|o| export_to(&o.raw))
            .unwrap_or_default();
        let host = &dr.spec.spec.host;
        if registry.lookup(&dr.namespace, &export, host).is_none() {
            c.push(
                "subsets",
                Severity::Warning,
                "MC123",
                Some("IST0174 UnknownDestinationRuleHost"),
                dr.describe(),
                &dr.source,
                format!("host `{host}` matches no Service or ServiceEntry host visible from namespace {}", dr.namespace),
                "the DestinationRule applies to no cluster: its traffic policy and subsets take no effect",
            );
            continue;
        }
        for s in &dr.spec.spec.subsets {
            let selected = pods
                .iter()
                .any(|w| s.labels.iter().all(|(k, v)| has_label(fx, w, k, v)));
            let routed_empty = c.out.iter().any(|f| {
                f.code == "MC106"
                    && f.object == dr.describe()
                    && f.message.starts_with(&format!("subset {} of", s.name))
            });
            if selected || routed_empty {
                continue;
            }
            c.push(
                "subsets",
                Severity::Error,
                "MC124",
                Some("IST0173 DestinationRuleSubsetNotSelectPods"),
                dr.describe(),
                &dr.source,
                format!("subset {} (labels {:?}) selects no pod", s.name, s.labels),
                "a route to the subset finds no endpoints: 503 no healthy upstream (UH)",
            );
        }
    }
}
