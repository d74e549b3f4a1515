//! A workload in the mesh selected by several Services that disagree on a port: the
//! same port with different protocols (Istio cannot tell which protocol the pod
//! speaks there), or the same targetPort behind different ports.
//!
//! istioctl: pkg/config/analysis/analyzers/deployment/services.go (1.30.3)
//! ServiceAssociationAnalyzer: analyzeDeploymentPortProtocol (IST0116
//! DeploymentAssociatedToMultipleServices), analyzeDeploymentTargetPorts (IST0137
//! DeploymentConflictingPorts), findMatchingServices; util/in_mesh.go DeploymentInMesh.
//! meshcheck applies them to every workload kind (workloads.rs).

use super::workloads::{workloads, Workload};
use super::{Ctx, Severity};
use crate::fixtures::k8s::{IntOrString, Service};
use crate::fixtures::{Fixtures, Item};
use std::collections::BTreeMap;

/// DeploymentInMesh: a pod that runs Istio's proxy, or one Istio's injector injects.
fn in_mesh(fx: &Fixtures, w: &Workload) -> bool {
    let proxy = w
        .pod
        .spec
        .containers
        .iter()
        .any(|c| c.name == "istio-proxy" && c.image.as_deref().is_some_and(|i| !i.is_empty()));
    let m = &w.pod.metadata;
    proxy
        || crate::istio::injection(
            &fx.namespace_labels(&w.namespace),
            &m.labels,
            &m.annotations,
        )
}

/// isWaypointDeployment: a waypoint is left out.
fn is_waypoint(w: &Workload) -> bool {
    w.labels()
        .get("gateway.istio.io/managed")
        .map(String::as_str)
        == Some("istio.io-mesh-controller")
}

/// findMatchingServices: Services of the workload's namespace whose selector selects it.
fn services_of<'a>(fx: &'a Fixtures, w: &Workload) -> Vec<&'a Item<Service>> {
    fx.services
        .iter()
        .filter(|s| {
            s.namespace == w.namespace
                && crate::fixtures::k8s::selects(&s.spec.spec.selector, w.labels())
        })
        .collect()
}

pub(super) fn service_association(c: &mut Ctx) {
    let fx = c.fx;
    for w in workloads(fx)
        .iter()
        .filter(|w| !is_waypoint(w) && in_mesh(fx, w))
    {
        let svcs = services_of(fx, w);
        // port -> protocol -> Services; targetPort -> port -> Service.
        let mut protocols: BTreeMap<u16, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut targets: BTreeMap<String, BTreeMap<u16, String>> = BTreeMap::new();
        for s in &svcs {
            let name = format!("{}/{}", s.namespace, s.name);
            for p in &s.spec.spec.ports {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                protocols
                    .entry(p.port)
                    .or_default()
                    .entry(protocol)
                    .or_default()
                    .push(name.clone());
                let target = match &p.target_port {
                    Some(IntOrString::Int(0)) | None => p.port.to_string(),
                    Some(IntOrString::Int(t)) => t.to_string(),
                    Some(IntOrString::String(t)) if t.is_empty() => p.port.to_string(),
                    Some(IntOrString::String(t)) => t.clone(),
                };
                targets
                    .entry(target)
                    .or_default()
                    .insert(p.port, name.clone());
            }
        }
        for (port, by_protocol) in protocols.iter().filter(|(_, m)| m.len() > 1) {
            let mut names: Vec<&String> = by_protocol.values().flatten().collect();
            names.sort();
            c.push(
                "workload-selectors",
                Severity::Warning,
                "MC127",
                Some("IST0116 DeploymentAssociatedToMultipleServices"),
                w.describe(),
                &w.source,
                format!(
                    "Services {} use port {port} with different protocols ({})",
                    names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    by_protocol.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                "Istio keys a pod's port by number: one protocol wins, the other Service's traffic is handled as the wrong protocol",
            );
        }
        for (target, by_port) in targets.iter().filter(|(_, m)| m.len() > 1) {
            let mut names: Vec<&String> = by_port.values().collect();
            names.sort();
            names.dedup();
            c.push(
                "workload-selectors",
                Severity::Warning,
                "MC128",
                Some("IST0137 DeploymentConflictingPorts"),
                w.describe(),
                &w.source,
                format!(
                    "Services {} send targetPort {target} from different ports ({})",
                    names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    by_port.keys().map(u16::to_string).collect::<Vec<_>>().join(", ")
                ),
                "Services selecting the same workload with the same targetPort must use the same port: Istio's inbound listener for the pod port takes one of them",
            );
        }
    }
}
