//! Every destination of a VirtualService: `route` entries, `mirror` and `mirrors`,
//! checked as istioctl analyze checks them: the host is a Service or ServiceEntry host
//! visible from the VirtualService (exportTo), the port is one it declares, the subset
//! is defined (and, for a Service, selects pods).
//!
//! istioctl: pkg/config/analysis/analyzers/virtualservice/destinationhosts.go (1.30.3)
//! analyzeVirtualService and checkServiceEntryPorts (IST0101 host, mirror host,
//! host:port; IST0112), destinationrules.go analyzeVirtualService (IST0101 host+subset,
//! mirror+subset), util.go getRouteDestinations and getHTTPMirrorDestinations.

use super::visibility::{export_to, fqdn, HostEntry, Registry};
use super::{Ctx, Severity};
use crate::fixtures::istio::{Destination, VirtualService};
use crate::fixtures::Item;
use crate::istio::{cluster_name, resolve_host};

/// One destination with where it is written (`http[0].route[1]`, `http[0].mirror`,
/// `http[0].mirrors[2]`).
struct Dest {
    at: String,
    d: Destination,
    mirror: bool,
    /// An `http` route entry: the model builds a cluster for each (mesh.rs).
    modelled: bool,
}

impl Dest {
    /// A destination that does not exist fails a route's requests (an error); for a
    /// mirror Envoy mirrors nothing and the route still answers (a warning: istioctl
    /// says IST0101 of both).
    fn severity(&self) -> Severity {
        if self.mirror {
            Severity::Warning
        } else {
            Severity::Error
        }
    }

    fn missing_cluster(&self) -> &'static str {
        if self.mirror {
            "the mirror points at a cluster that does not exist: nothing is mirrored, the route still answers"
        } else {
            "the route points at a cluster that does not exist: 503 (NC)"
        }
    }
}

/// getRouteDestinations (tcp, tls, then http) then getHTTPMirrorDestinations. meshcheck
/// models no tcp/tls routes; their destinations are read from the object as written.
fn destinations_of(vs: &VirtualService, raw: Option<&serde_json::Value>) -> Vec<Dest> {
    let mut out = unmodelled_route_destinations(raw);
    for (hi, http) in vs.spec.http.iter().enumerate() {
        for (di, r) in http.route.iter().enumerate() {
            out.push(Dest {
                at: format!("http[{hi}].route[{di}]"),
                d: r.destination.clone(),
                mirror: false,
                modelled: true,
            });
        }
    }
    for (hi, http) in vs.spec.http.iter().enumerate() {
        if let Some(m) = &http.mirror {
            out.push(Dest {
                at: format!("http[{hi}].mirror"),
                d: m.clone(),
                mirror: true,
                modelled: false,
            });
        }
        for (mi, m) in http.mirrors.iter().enumerate() {
            if let Some(d) = &m.destination {
                out.push(Dest {
                    at: format!("http[{hi}].mirrors[{mi}]"),
                    d: d.clone(),
                    mirror: true,
                    modelled: false,
                });
            }
        }
    }
    out
}

/// The destinations of `tcp` and `tls` routes in the object as written.
fn unmodelled_route_destinations(raw: Option<&serde_json::Value>) -> Vec<Dest> {
    let mut out = Vec::new();
    let spec = raw.and_then(|r| r.get("spec"));
    for section in ["tcp", "tls"] {
        let rules = spec.and_then(|s| s.get(section)).and_then(|v| v.as_array());
        for (ri, rule) in rules.into_iter().flatten().enumerate() {
            let entries = rule.get("route").and_then(|v| v.as_array());
            for (di, entry) in entries.into_iter().flatten().enumerate() {
                let d = entry
                    .get("destination")
                    .and_then(|d| serde_json::from_value::<Destination>(d.clone()).ok());
                if let Some(d) = d {
                    out.push(Dest {
                        at: format!("{section}[{ri}].route[{di}]"),
                        d,
                        mirror: false,
                        modelled: false,
                    });
                }
            }
        }
    }
    out
}

/// The VirtualService as written (meshcheck's typed view models neither `exportTo` nor
/// tcp/tls routes).
fn raw_of<'a>(c: &Ctx<'a>, vs: &Item<VirtualService>) -> Option<&'a serde_json::Value> {
    c.fx.objects
        .iter()
        .find(|o| o.kind == vs.kind && o.namespace == vs.namespace && o.name == vs.name)
        .map(|o| &o.raw)
}

pub(super) fn destinations(c: &mut Ctx) {
    let registry = Registry::build(c.fx);
    // Backends of Gateway API routes are judged by their status (MC141,
    // analysis/gateway_api_status.rs), as istiod's controller reports them.
    for vs in
        c.fx.virtual_services.iter().filter(|v| {
            !crate::fixtures::gateway_api::gateway_semantics(&v.spec.metadata.annotations)
        })
    {
        let raw = raw_of(c, vs);
        let export = raw.map(export_to).unwrap_or_default();
        for dest in destinations_of(&vs.spec, raw) {
            match registry.lookup(&vs.namespace, &export, &dest.d.host) {
                None => {
                    not_found(c, vs, &dest, &registry, &export);
                    undefined_subset(c, vs, &dest);
                }
                Some(entry) => {
                    ports(c, vs, &dest, entry);
                    subset(c, vs, &dest, entry);
                }
            }
        }
    }
}

/// MC103: no Service or ServiceEntry host, or one not visible from the VirtualService.
fn not_found(
    c: &mut Ctx,
    vs: &Item<VirtualService>,
    dest: &Dest,
    reg: &Registry,
    export: &[String],
) {
    let what = "host";
    let host = &dest.d.host;
    let name = resolve_host(host, &vs.namespace);
    let declared = reg.declared(&vs.namespace, host);
    let message = if declared.is_empty() {
        format!(
            "{} {what} `{host}` resolves to {name}: no such Service or ServiceEntry host",
            dest.at
        )
    } else {
        let by: Vec<String> = declared
            .iter()
            .map(|e| format!("{} (exported to {})", e.object, e.scope))
            .collect();
        let from = if export.is_empty() {
            format!("namespace {}", vs.namespace)
        } else {
            format!("namespace {} or its exportTo {export:?}", vs.namespace)
        };
        format!(
            "{} {what} `{host}` ({name}) is declared by {} but not visible from {from}",
            dest.at,
            by.join(", ")
        )
    };
    let istio = dest.missing_cluster();
    c.push(
        "destination-hosts",
        dest.severity(),
        "MC103",
        Some("IST0101 ReferencedResourceNotFound"),
        vs.describe(),
        &vs.source,
        message,
        istio,
    );
}

/// MC104: checkServiceEntryPorts (a Service counts as a ServiceEntry with its ports).
fn ports(c: &mut Ctx, vs: &Item<VirtualService>, dest: &Dest, entry: &HostEntry) {
    let istio = dest.missing_cluster();
    match &dest.d.port {
        Some(p) if !entry.ports.contains(&p.number) => c.push(
            "destination-hosts",
            dest.severity(),
            "MC104",
            Some("IST0101 ReferencedResourceNotFound"),
            vs.describe(),
            &vs.source,
            format!(
                "{} port {} is not a port of {}",
                dest.at, p.number, entry.object
            ),
            istio,
        ),
        None if entry.ports.len() > 1 => c.push(
            "destination-hosts",
            dest.severity(),
            "MC104",
            Some("IST0112 VirtualServiceDestinationPortSelectorRequired"),
            vs.describe(),
            &vs.source,
            format!(
                "{} names no port and {} has {}",
                dest.at,
                entry.object,
                entry.ports.len()
            ),
            "Istio cannot pick a port: the route does not work",
        ),
        _ => {}
    }
}

/// Whether a DestinationRule for the host defines the subset (initDestHostsAndSubsets).
fn subset_defined(c: &Ctx, host_fqdn: &str, subset: &str) -> bool {
    c.fx.destination_rules.iter().any(|r| {
        fqdn(&r.namespace, &r.spec.spec.host) == host_fqdn
            && r.spec.spec.subsets.iter().any(|s| s.name == subset)
    })
}

/// Whether a workload the model does not run (a StatefulSet, DaemonSet, ReplicaSet,
/// Job or bare Pod: the model runs Deployments' pods) has pods behind the Service
/// `fqdn` with the subset's labels: then an empty cluster in the model is no finding.
fn runs_behind(c: &Ctx, fqdn: &str, subset_labels: &crate::fixtures::k8s::Labels) -> bool {
    let Some(svc) =
        c.fx.services
            .iter()
            .find(|s| resolve_host(&s.name, &s.namespace) == fqdn)
    else {
        return false;
    };
    let sel = &svc.spec.spec.selector;
    super::workloads::workloads(c.fx).iter().any(|w| {
        w.kind != "Deployment"
            && w.replicas > 0
            && w.selector_matches_template()
            && w.namespace == svc.namespace
            && crate::fixtures::k8s::selects(sel, w.labels())
            && subset_labels
                .iter()
                .all(|(k, v)| w.labels().get(k) == Some(v))
    })
}

/// MC105 for a destination whose host is not found: istioctl's DestinationRuleAnalyzer
/// judges the subset by the DestinationRules alone, whatever the host.
fn undefined_subset(c: &mut Ctx, vs: &Item<VirtualService>, dest: &Dest) {
    let Some(subset) = &dest.d.subset else { return };
    let host = fqdn(&vs.namespace, &dest.d.host);
    if !subset_defined(c, &host, subset) {
        report_undefined(c, vs, dest, subset, &host);
    }
}

fn report_undefined(c: &mut Ctx, vs: &Item<VirtualService>, dest: &Dest, subset: &str, host: &str) {
    let what = if dest.mirror {
        "mirror subset"
    } else {
        "subset"
    };
    c.push(
        "subsets",
        dest.severity(),
        "MC105",
        Some("IST0101 ReferencedResourceNotFound"),
        vs.describe(),
        &vs.source,
        format!(
            "{} names {what} {subset} of {host}, which no DestinationRule defines",
            dest.at
        ),
        dest.missing_cluster(),
    );
}

/// MC105 (the subset is defined nowhere) and MC106 (a Service's subset selects no pod).
/// A Service's cluster as the model builds it says both when the model built it; a
/// ServiceEntry, or a mirror the model built no cluster for, is judged by the
/// DestinationRules alone, as istioctl does.
fn subset(c: &mut Ctx, vs: &Item<VirtualService>, dest: &Dest, entry: &HostEntry) {
    let Some(subset) = &dest.d.subset else { return };
    let host = fqdn(&vs.namespace, &dest.d.host);
    let cluster = (!entry.service_entry)
        .then(|| {
            // The cluster's port as pilot picks it (GetDestinationCluster: the written
            // port, else the Service's only one); none is MC104.
            let written = dest.d.port.as_ref().map(|p| p.number);
            crate::istio::destination_port(c.fx, written, &entry.fqdn)
        })
        .flatten()
        .map(|port| cluster_name(port, Some(subset), &entry.fqdn));
    let built = cluster.as_ref().and_then(|n| c.mesh.clusters.get(n));
    let undefined = match built {
        Some(_) => false,
        // Http route clusters are built for every VirtualService: none means undefined.
        None if dest.modelled && cluster.is_some() => true,
        None => !subset_defined(c, &host, subset) && !subset_defined(c, &entry.fqdn, subset),
    };
    if undefined {
        report_undefined(c, vs, dest, subset, &entry.fqdn);
        return;
    }
    if !built.is_some_and(|cl| cl.endpoints.is_empty()) {
        return;
    }
    let fq = entry.fqdn.clone();
    let dr = c.fx.destination_rules.iter().find(|r| {
        resolve_host(&r.spec.spec.host, &r.namespace) == fq
            && r.spec.spec.subsets.iter().any(|s| &s.name == subset)
    });
    let subset_labels = dr
        .and_then(|r| r.spec.spec.subsets.iter().find(|s| &s.name == subset))
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    if runs_behind(c, &fq, &subset_labels) {
        return;
    }
    let labels = format!("{subset_labels:?}");
    let (obj, at) = dr
        .map(|r| (r.describe(), r.source.clone()))
        .unwrap_or_else(|| (vs.describe(), vs.source.clone()));
    c.push(
        "subsets",
        Severity::Error,
        "MC106",
        None,
        obj,
        &at,
        format!(
            "subset {subset} of {fq} (labels {labels}) selects no pod behind {}, yet {} routes to it",
            entry.object,
            vs.describe()
        ),
        "the subset's cluster has no endpoints: 503 no healthy upstream",
    );
}
