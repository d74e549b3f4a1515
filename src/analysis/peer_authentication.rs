//! PeerAuthentication against the TLS its workloads are sent (findings of the `mtls`
//! analysis). What the sidecar takes per port is pilot's ComposePeerAuthentication,
//! what clients send is the DestinationRule's `tls` or auto mTLS (src/istio/peer_auth.rs
//! cites pilot for each rule):
//!
//! - MC160 (error): plaintext toward a workload port that takes only mTLS (STRICT): a
//!   DestinationRule `tls.mode: DISABLE`, or auto mTLS toward a Service whose
//!   namespace is DISABLE (pilot infers a service's mode from its namespace only) while
//!   a workload policy makes its pods STRICT. The sidecar closes the connection: 503.
//! - MC161 (error): `tls.mode: ISTIO_MUTUAL` toward a workload port that takes only
//!   plaintext (DISABLE): the handshake fails, 503. (Auto mTLS does not do this: the
//!   endpoint loses its `tlsMode: istio` metadata.)
//! - MC162 (warning): a PeerAuthentication istiod applies to no workload (a second
//!   namespace-wide one in a namespace, a selector in the root namespace).
//! - MC163 (warning): `portLevelMtls` names a Service port of the selected pods rather
//!   than the workload port behind it: the policy's port mode applies to nothing.
//!
//! istioctl analyze has no such analyzer.

use super::{Ctx, Severity};
use crate::fixtures::istio::DestinationRule;
use crate::fixtures::k8s::{selects, IntOrString, Service};
use crate::fixtures::{Item, Source};
use crate::istio::peer_auth::{Decided, MtlsMode, PeerAuthn};
use crate::istio::{resolve_host, PodPlan};
use std::collections::BTreeMap;

/// A sidecar pod behind `svc` (and a subset's labels) and the workload port a Service
/// port leads to.
fn pods_behind<'m>(
    pods: &'m [PodPlan],
    svc: &Item<Service>,
    subset: Option<&crate::fixtures::k8s::Labels>,
    target: &IntOrString,
) -> Vec<(usize, &'m PodPlan, u16)> {
    pods.iter()
        .enumerate()
        .filter(|(_, p)| {
            p.namespace == svc.namespace
                && p.has_sidecar()
                && selects(&svc.spec.spec.selector, &p.labels)
                && subset.is_none_or(|l| l.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        })
        .filter_map(|(i, p)| Some((i, p, p.resolve_port(target)?)))
        .collect()
}

/// Findings grouped so that one names every pod it concerns.
#[derive(Default)]
struct Grouped {
    by: BTreeMap<(&'static str, String, Source, String, String), Vec<String>>,
}

impl Grouped {
    fn add(
        &mut self,
        code: &'static str,
        object: String,
        at: &Source,
        head: String,
        tail: String,
        pod: String,
    ) {
        let pods = self
            .by
            .entry((code, object, at.clone(), head, tail))
            .or_default();
        if !pods.contains(&pod) {
            pods.push(pod);
        }
    }
}

/// The `tls.mode` a DestinationRule gives a Service port and subset (the cluster's
/// merged policy, policy.rs), or None when it gives none (auto mTLS).
fn rule_mode<'a>(
    dr: &'a Item<DestinationRule>,
    subset: Option<&'a crate::fixtures::istio::Subset>,
    port: u16,
) -> Option<&'a str> {
    let sections = crate::istio::policy::merged(
        dr.spec.spec.traffic_policy.as_ref(),
        subset.and_then(|s| s.traffic_policy.as_ref()),
        port,
    );
    Some(sections.tls?.mode.as_deref().unwrap_or("DISABLE"))
}

pub(super) fn peer_authentication(c: &mut Ctx) {
    let fx = c.fx;
    let mesh = c.mesh;
    let peer = PeerAuthn::new(fx);
    let mode_at = |pod: usize, port: u16| -> Decided {
        mesh.inbound_mtls
            .get(&pod)
            .map(|w| w.for_port(port).clone())
            .unwrap_or(Decided {
                mode: MtlsMode::Permissive,
                from: None,
            })
    };
    let mut out = Grouped::default();
    for svc in &fx.services {
        let fqdn = resolve_host(&svc.name, &svc.namespace);
        let rules: Vec<&Item<DestinationRule>> = fx
            .destination_rules
            .iter()
            .filter(|d| resolve_host(&d.spec.spec.host, &d.namespace) == fqdn)
            .collect();
        let service_mode = peer.service_mode(&svc.namespace);
        for sp in &svc.spec.spec.ports {
            let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
            // Each rule toward the Service, as a whole and per subset; without one,
            // auto mTLS.
            let mut views: Vec<(
                Option<&Item<DestinationRule>>,
                Option<&crate::fixtures::istio::Subset>,
            )> = Vec::new();
            if rules.is_empty() {
                views.push((None, None));
            }
            for dr in &rules {
                views.push((Some(dr), None));
                views.extend(dr.spec.spec.subsets.iter().map(|s| (Some(*dr), Some(s))));
            }
            for (dr, subset) in views {
                let written = dr.and_then(|d| rule_mode(d, subset, sp.port));
                let at_subset = subset
                    .map(|s| format!(" subset {}", s.name))
                    .unwrap_or_default();
                for (i, p, port) in pods_behind(&mesh.pods, svc, subset.map(|s| &s.labels), &target)
                {
                    let takes = mode_at(i, port);
                    let pod = format!("{}/{}", p.namespace, p.name);
                    match (dr, written) {
                        (Some(dr), Some("DISABLE")) if !takes.mode.takes_plaintext() => out.add(
                            "MC160",
                            dr.describe(),
                            &dr.source,
                            format!("tls.mode DISABLE toward {fqdn} port {}{at_subset}", sp.port),
                            format!("take only mTLS on port {port}: {}", takes.describe()),
                            pod,
                        ),
                        (Some(dr), Some("ISTIO_MUTUAL")) if !takes.mode.takes_mtls() => out.add(
                            "MC161",
                            dr.describe(),
                            &dr.source,
                            format!(
                                "tls.mode ISTIO_MUTUAL toward {fqdn} port {}{at_subset}",
                                sp.port
                            ),
                            format!("take only plaintext on port {port}: {}", takes.describe()),
                            pod,
                        ),
                        // Auto mTLS (no rule, or one without `tls` here).
                        (_, None)
                            if service_mode.mode == MtlsMode::Disable
                                && !takes.mode.takes_plaintext() =>
                        {
                            let Some(strict) = &takes.from else { continue };
                            out.add(
                                "MC160",
                                strict.object.clone(),
                                &strict.at,
                                format!("{} makes", strict.field),
                                format!(
                                    "STRICT on port {port}, but auto mTLS toward {fqdn} port {} sends plaintext: the service's mode is its namespace's, {}",
                                    sp.port,
                                    service_mode.describe()
                                ),
                                pod,
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for ((code, object, at, head, tail), pods) in out.by {
        let (message, istio) = match code {
            "MC161" => (
                format!("{head}, but pod(s) {} {tail}", pods.join(", ")),
                "the gateway (and every sidecar using this rule) originates mTLS, which the pods' sidecars do not take there: the handshake fails, 503 (UF)",
            ),
            _ if head.ends_with(" makes") => (
                format!("{head} pod(s) {} {tail}", pods.join(", ")),
                "pilot's auto mTLS looks only at the namespace's (or mesh's) PeerAuthentication to decide whether a service takes mTLS: DISABLE there means plaintext to every pod of the service, which the STRICT sidecars close: 503 (UC)",
            ),
            _ => (
                format!("{head}, but pod(s) {} {tail}", pods.join(", ")),
                "the gateway (and every sidecar using this rule) sends plaintext, which the pods' STRICT sidecars close: 503 (UC)",
            ),
        };
        c.push(
            "mtls",
            Severity::Error,
            code,
            None,
            object,
            &at,
            message,
            istio,
        );
    }
    for (p, why) in &peer.ignored {
        c.push(
            "mtls",
            Severity::Warning,
            "MC162",
            None,
            p.describe(),
            &p.source,
            format!("istiod applies this PeerAuthentication to no workload: {why}"),
            "its mode is not enforced anywhere",
        );
    }
    service_ports_in_port_level(c);
}

/// MC163: a `portLevelMtls` key that is a Service port (not a workload port) of a
/// Service selecting the policy's pods, whose targetPort is another port.
fn service_ports_in_port_level(c: &mut Ctx) {
    let fx = c.fx;
    for pa in &fx.peer_authentications {
        let spec = &pa.spec.spec;
        let Some(sel) = spec.selector.as_ref().filter(|_| spec.has_selector()) else {
            continue;
        };
        let pods: Vec<&PodPlan> = c
            .mesh
            .pods
            .iter()
            .filter(|p| p.namespace == pa.namespace && selects(&sel.match_labels, &p.labels))
            .collect();
        for (port, _) in spec.port_level() {
            for p in &pods {
                let owned = p.container_ports.iter().any(|(_, cp)| *cp == port);
                let hit = fx.services.iter().find_map(|s| {
                    let sp = s.spec.spec.ports.iter().find(|sp| sp.port == port)?;
                    let target = p.resolve_port(sp.target_port.as_ref()?)?;
                    (s.namespace == p.namespace
                        && selects(&s.spec.spec.selector, &p.labels)
                        && target != port
                        && !owned)
                        .then(|| (s.describe(), target))
                });
                if let Some((svc, target)) = hit {
                    c.push(
                        "mtls",
                        Severity::Warning,
                        "MC163",
                        None,
                        pa.describe(),
                        &pa.source,
                        format!(
                            "portLevelMtls {port} names the port of {svc}; pod {}/{} listens on its targetPort {target}",
                            p.namespace, p.name
                        ),
                        "portLevelMtls keys are workload ports, not Service ports: this entry applies to no connection, the workload's mode holds on port {target}".replace("{target}", &target.to_string()),
                    );
                    break;
                }
            }
        }
    }
}
