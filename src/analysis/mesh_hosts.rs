//! VirtualServices bound to the `mesh` gateway (explicitly, or by naming no gateway)
//! that claim the same host where both are visible: Istio keeps one of them for the
//! sidecars, which one is undefined (MC113).
//!
//! istioctl: pkg/config/analysis/analyzers/virtualservice/conflictingmeshgatewayhosts.go
//! (1.30.3) ConflictingMeshGatewayHostsAnalyzer.Analyze, initMeshGatewayHosts and
//! getExportToAllNamespacesVSListForScopedHost (IST0109
//! ConflictingMeshGatewayVirtualServiceHosts); util/exportto.go IsExportToAllNamespaces.

use super::visibility::{export_to, fqdn};
use super::{Ctx, Severity};
use crate::fixtures::Source;
use std::collections::{BTreeMap, BTreeSet};

/// A VirtualService as this analysis needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Vs {
    full_name: String,
    object: String,
    at: Source,
}

/// Whether a VirtualService is bound to the mesh gateway: no `gateways`, or `mesh`.
fn on_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// The namespaces a VirtualService's hosts are visible in: `*` for all (no exportTo,
/// or `*` among them), else each entry with `.` as its own namespace.
fn scopes(export: &[String], namespace: &str) -> BTreeSet<String> {
    if export.is_empty() || export.iter().any(|e| e == "*") {
        return BTreeSet::from(["*".to_string()]);
    }
    export
        .iter()
        .map(|e| {
            if e == "." {
                namespace.to_string()
            } else {
                e.clone()
            }
        })
        .collect()
}

/// host.Name.Matches: identical, or a wildcard covering the other.
fn overlaps(a: &str, b: &str) -> bool {
    let covers = |w: &str, h: &str| {
        w == "*"
            || w.strip_prefix('*').is_some_and(|suffix| {
                h.trim_start_matches('*').ends_with(suffix) && h.len() >= w.len()
            })
    };
    a == b || covers(a, b) || covers(b, a)
}

pub(super) fn mesh_hosts(c: &mut Ctx) {
    // (scope, fqdn) -> the VirtualServices claiming it there.
    let mut claims: BTreeMap<(String, String), Vec<Vs>> = BTreeMap::new();
    for vs in
        c.fx.virtual_services
            .iter()
            .filter(|v| on_mesh(&v.spec.spec.gateways))
    {
        let export =
            c.fx.objects
                .iter()
                .find(|o| o.kind == vs.kind && o.namespace == vs.namespace && o.name == vs.name)
                .map(|o| export_to(&o.raw))
                .unwrap_or_default();
        let me = Vs {
            full_name: format!("{}/{}", vs.namespace, vs.name),
            object: vs.describe(),
            at: vs.source.clone(),
        };
        for scope in scopes(&export, &vs.namespace) {
            for h in &vs.spec.spec.hosts {
                claims
                    .entry((scope.clone(), fqdn(&vs.namespace, h)))
                    .or_default()
                    .push(me.clone());
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host), list) in &claims {
        let mut list = list.clone();
        if scope != "*" {
            // Hosts visible everywhere conflict with a namespace's own.
            for ((s, h), others) in &claims {
                if s == "*" && overlaps(host, h) {
                    list.extend(others.iter().cloned());
                }
            }
        }
        list.sort();
        list.dedup_by(|a, b| a.full_name == b.full_name);
        if list.len() < 2 {
            continue;
        }
        let mut names: Vec<&str> = list.iter().map(|v| v.full_name.as_str()).collect();
        names.sort();
        let names = names.join(",");
        for v in &list {
            if !reported.insert(v.full_name.clone()) {
                continue;
            }
            c.push(
                "route-conflicts",
                Severity::Error,
                "MC113",
                Some("IST0109 ConflictingMeshGatewayVirtualServiceHosts"),
                v.object.clone(),
                &v.at,
                format!("the VirtualServices {names} bound to the mesh gateway define the same host {scope}/{host}"),
                "sidecars get one of them for the host, which one is undefined: merge them into one VirtualService",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_binding_and_scopes() {
        assert!(on_mesh(&[]));
        assert!(on_mesh(&["gw".into(), "mesh".into()]));
        assert!(!on_mesh(&["gw".into()]));
        assert_eq!(scopes(&[], "a"), BTreeSet::from(["*".to_string()]));
        assert_eq!(
            scopes(&[".".into(), "b".into()], "a"),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            scopes(&[".".into(), "*".into()], "a"),
            BTreeSet::from(["*".to_string()])
        );
    }

    #[test]
    fn wildcards_overlap_their_subdomains_only() {
        assert!(overlaps("a.com", "a.com"));
        assert!(overlaps("*.a.com", "x.a.com"));
        assert!(overlaps("x.a.com", "*.a.com"));
        assert!(!overlaps("*.a.com", "a.com"));
        assert!(!overlaps("b.com", "a.com"));
    }
}
