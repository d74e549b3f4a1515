//! Which destination hosts a VirtualService can name, as istioctl analyze decides it:
//! Services (visible where their `networking.istio.io/exportTo` annotation says) and
//! ServiceEntry hosts (visible where their `exportTo` says), looked up from the
//! VirtualService's namespace and its own `exportTo`.
//!
//! istioctl: pkg/config/analysis/analyzers/util/service_lookup.go (1.30.3)
//! InitServiceEntryHostMap, getVisibleNamespacesFromExportToAnno, GetDestinationHost;
//! util/hosts.go ConvertHostToFQDN.

use crate::fixtures::{describe, Fixtures, Object};
use serde_json::Value;

/// The default cluster domain istioctl completes short names with.
const CLUSTER_LOCAL: &str = "svc.cluster.local";

/// One host a namespace scope sees.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// `*` (every namespace) or the one namespace that sees it.
    pub scope: String,
    pub fqdn: String,
    /// The port numbers the Service or ServiceEntry declares.
    pub ports: Vec<u16>,
    /// `Kind ns/name` of the object that declares the host.
    pub object: String,
    pub service_entry: bool,
}

/// ConvertHostToFQDN: a short name (no dot, no wildcard) is completed in `namespace`.
pub fn fqdn(namespace: &str, host: &str) -> String {
    if !host.starts_with('*') && !host.contains('.') {
        format!("{host}.{namespace}.{CLUSTER_LOCAL}")
    } else {
        host.to_string()
    }
}

/// An object's `spec.exportTo` (empty when absent).
pub fn export_to(raw: &Value) -> Vec<String> {
    strings(raw.get("spec").and_then(|s| s.get("exportTo")))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Every host of the fixtures with the scopes that see it.
#[derive(Debug, Default)]
pub struct Registry {
    pub entries: Vec<HostEntry>,
}

impl Registry {
    pub fn build(fx: &Fixtures) -> Self {
        let mut entries = Vec::new();
        for o in fx.objects.iter().filter(|o| is_service_entry(o)) {
            entries.extend(service_entry_hosts(o));
        }
        for s in &fx.services {
            let anno = s
                .spec
                .metadata
                .annotations
                .get("networking.istio.io/exportTo")
                .map(String::as_str)
                .unwrap_or("");
            let ports: Vec<u16> = s.spec.spec.ports.iter().map(|p| p.port).collect();
            for scope in annotation_scopes(anno, &s.namespace) {
                entries.push(HostEntry {
                    scope,
                    fqdn: fqdn(&s.namespace, &s.name),
                    ports: ports.clone(),
                    object: s.describe(),
                    service_entry: false,
                });
            }
        }
        Registry { entries }
    }

    fn find(&self, scope: &str, fqdn: &str) -> Option<&HostEntry> {
        self.entries
            .iter()
            .find(|e| e.scope == scope && e.fqdn == fqdn)
    }

    /// GetDestinationHost: the host `host` names from a VirtualService in `source_ns`
    /// with `export_to`, or None (IST0101).
    pub fn lookup(&self, source_ns: &str, export_to: &[String], host: &str) -> Option<&HostEntry> {
        let name = fqdn(source_ns, host);
        if let Some(e) = self.find("*", &name) {
            return Some(e);
        }
        let scopes: Vec<&str> = if export_to.is_empty() {
            vec![source_ns]
        } else {
            export_to
                .iter()
                .map(|e| if e == "." { source_ns } else { e.as_str() })
                .collect()
        };
        if let Some(e) = scopes.iter().find_map(|s| self.find(s, &name)) {
            return Some(e);
        }
        // A wildcard ServiceEntry host visible to everyone or to `source_ns` covers
        // the host's suffix.
        let bare = host.trim_start_matches('*');
        self.entries.iter().find(|e| {
            e.fqdn.starts_with('*')
                && (e.scope == "*" || e.scope == source_ns)
                && bare.ends_with(e.fqdn.trim_start_matches('*'))
        })
    }

    /// The entries that declare `host` (as completed in `source_ns`) in any scope: to
    /// say that a host exists but is not visible.
    pub fn declared(&self, source_ns: &str, host: &str) -> Vec<&HostEntry> {
        let name = fqdn(source_ns, host);
        self.entries.iter().filter(|e| e.fqdn == name).collect()
    }
}

fn is_service_entry(o: &Object) -> bool {
    o.kind == "ServiceEntry" && o.api_version.starts_with("networking.istio.io/")
}

/// getVisibleNamespacesFromExportToAnno: no annotation is `*`; `.` is the Service's
/// own namespace; other values are namespaces (or `*`), comma-separated.
fn annotation_scopes(anno: &str, namespace: &str) -> Vec<String> {
    if anno.is_empty() {
        return vec!["*".into()];
    }
    anno.split(',')
        .map(str::trim)
        .map(|ns| {
            if ns == "." {
                namespace.to_string()
            } else {
                ns.to_string()
            }
        })
        .collect()
}

/// InitServiceEntryHostMap for one ServiceEntry: each host in each exportTo scope (none,
/// or `*` among them: every namespace; `.`: its own).
fn service_entry_hosts(o: &Object) -> Vec<HostEntry> {
    let spec = o.raw.get("spec");
    let export = export_to(&o.raw);
    let ports: Vec<u16> = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("number").and_then(Value::as_u64))
        .filter_map(|n| u16::try_from(n).ok())
        .collect();
    let scopes: Vec<String> = if export.is_empty() || export.iter().any(|e| e == "*") {
        vec!["*".into()]
    } else {
        export
            .iter()
            .map(|e| {
                if e == "." {
                    o.namespace.clone()
                } else {
                    e.clone()
                }
            })
            .collect()
    };
    let mut out = Vec::new();
    for h in strings(spec.and_then(|s| s.get("hosts"))) {
        for scope in &scopes {
            out.push(HostEntry {
                scope: scope.clone(),
                fqdn: fqdn(&o.namespace, &h),
                ports: ports.clone(),
                object: describe(&o.kind, &o.namespace, &o.name),
                service_entry: true,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(scope: &str, fqdn: &str) -> HostEntry {
        HostEntry {
            scope: scope.into(),
            fqdn: fqdn.into(),
            ports: vec![80],
            object: "Service x/y".into(),
            service_entry: false,
        }
    }

    #[test]
    fn short_names_are_completed_in_the_source_namespace_dotted_ones_are_not() {
        assert_eq!(fqdn("ns", "reviews"), "reviews.ns.svc.cluster.local");
        assert_eq!(fqdn("ns", "reviews.other"), "reviews.other");
        assert_eq!(fqdn("ns", "*.example.com"), "*.example.com");
    }

    #[test]
    fn a_namespace_scoped_host_is_seen_only_from_its_scope() {
        let r = Registry {
            entries: vec![entry("ns1", "a.ns1.svc.cluster.local")],
        };
        assert!(r.lookup("ns1", &[], "a").is_some());
        assert!(r.lookup("ns2", &[], "a.ns1.svc.cluster.local").is_none());
        // GetDestinationHost looks in the VirtualService's own exportTo scopes.
        assert!(r
            .lookup("ns2", &["ns1".into()], "a.ns1.svc.cluster.local")
            .is_some());
        assert_eq!(r.declared("ns2", "a.ns1.svc.cluster.local").len(), 1);
    }

    #[test]
    fn a_wildcard_service_entry_covers_its_subdomains_where_visible() {
        let r = Registry {
            entries: vec![entry("*", "*.example.com"), entry("ns1", "*.internal")],
        };
        assert!(r.lookup("any", &[], "api.example.com").is_some());
        assert!(r.lookup("any", &[], "api.example.org").is_none());
        assert!(r.lookup("ns1", &[], "db.internal").is_some());
        assert!(r.lookup("ns2", &[], "db.internal").is_none());
    }

    #[test]
    fn the_export_to_annotation_names_scopes() {
        assert_eq!(annotation_scopes("", "a"), ["*"]);
        assert_eq!(annotation_scopes(". , b", "a"), ["a", "b"]);
    }
}
