//! Static analysis: the fixtures checked against each other, and every request of the
//! suite simulated on the Istio model, before any target starts. Each finding names the
//! object and file:line, says what Istio would do, and gives `istioctl analyze`'s code
//! where istioctl reports the same condition.

mod authorization;
mod credentials;
mod destination_rules;
mod destinations;
mod duplicate_certificates;
mod gateway_api;
mod gateway_api_status;
mod mesh_hosts;
mod peer_authentication;
mod service_association;
mod upstream_tls;
mod visibility;
mod workloads;

use crate::fixtures::k8s::selects;
use crate::fixtures::{Fixtures, Source};
use crate::istio::{host_matches, resolve_host, Mesh, PathMatch, PodRole, SimRequest, UpstreamTls};
use crate::suite::{CheckKind, HttpExpect, RequestSpec, Suite};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use workloads::{workloads, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    /// The analysis that produced it (a `static::<analysis>` testcase).
    pub analysis: String,
    pub severity: Severity,
    /// meshcheck's stable code.
    pub code: &'static str,
    /// `istioctl analyze`'s code and name for the same condition, if it has one.
    pub istioctl: Option<&'static str>,
    pub object: String,
    pub at: Source,
    pub message: String,
    /// What Istio does with this configuration.
    pub istio: String,
    /// Longer explanation (the decision path of a simulation).
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] {}: {}: {}",
            self.severity, self.code, self.at, self.object, self.message
        )?;
        if !self.istio.is_empty() {
            write!(f, "\n  = istio: {}", self.istio)?;
        }
        if let Some(c) = self.istioctl {
            write!(f, "\n  = istioctl analyze: {c}")?;
        }
        if !self.detail.is_empty() {
            write!(f, "\n  = {}", self.detail.replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

/// The analyses, in report order: (name, what it checks). Each is a `static::<name>`
/// testcase; simulations add one `static::simulate::<check>` per traffic check.
pub const ANALYSES: &[(&str, &str)] = &[
    (
        "fields",
        "objects use only fields Istio defines and meshcheck models",
    ),
    (
        "workload-selectors",
        "workload selectors match their template; Service selectors match a workload (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, bare Pods)",
    ),
    (
        "injection",
        "app namespaces are labelled for injection and no app pod opts out",
    ),
    (
        "gateway-selector",
        "each Gateway selects gateway pods, and its server ports are ports of their Service",
    ),
    (
        "gateway-credentials",
        "each Gateway credentialName names a Secret in the gateway pods' namespace holding a valid certificate and its key; no two Gateways share a certificate",
    ),
    (
        "exposed-ports",
        "the gateway Service exposes only the ports the suite's policy allows",
    ),
    (
        "gateway-references",
        "VirtualService gateways name existing Gateways",
    ),
    (
        "gateway-hosts",
        "VirtualService hosts intersect their Gateways' server hosts",
    ),
    (
        "destination-hosts",
        "route and mirror destinations resolve to a Service or ServiceEntry host visible from the VirtualService, and a port of it",
    ),
    (
        "subsets",
        "referenced subsets are defined and select pods; DestinationRule hosts exist and their subsets select pods",
    ),
    ("weights", "route weights are not negative and sum to 100"),
    (
        "route-conflicts",
        "no route is shadowed by another VirtualService's route on the same host; no two VirtualServices on the mesh gateway claim one host",
    ),
    (
        "mtls",
        "ISTIO_MUTUAL only toward pods with a sidecar; originated TLS verifies the server; what clients send matches what PeerAuthentication lets each workload port take",
    ),
    (
        "rewrites",
        "a prefix rewritten to `/` keeps no `//` in the paths backends see",
    ),
    (
        "gateway-api-status",
        "Gateway API objects as istiod's controller would report them: routes accepted by their parents, references resolved, listeners programmed",
    ),
    (
        "authorization",
        "AuthorizationPolicies attach to workloads; at the gateway they do not rely on peer identities or the connection's address, no path spelling slips past a DENY, and ALLOW policies close no route by accident",
    ),
];

struct Ctx<'a> {
    fx: &'a Fixtures,
    mesh: &'a Mesh,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        analysis: &str,
        severity: Severity,
        code: &'static str,
        istioctl: Option<&'static str>,
        object: String,
        at: &Source,
        message: String,
        istio: impl Into<String>,
    ) {
        self.out.push(Finding {
            analysis: analysis.into(),
            severity,
            code,
            istioctl,
            object,
            at: at.clone(),
            message,
            istio: istio.into(),
            detail: String::new(),
        });
    }
}

/// Runs every analysis and the simulation of the suite's traffic checks.
pub fn analyze(fx: &Fixtures, mesh: &Mesh, suite: &Suite) -> Vec<Finding> {
    let mut c = Ctx {
        fx,
        mesh,
        out: Vec::new(),
    };
    fields(&mut c);
    workload_selectors(&mut c);
    service_association::service_association(&mut c);
    injection(&mut c, suite);
    gateway_selector(&mut c);
    gateway_credentials(&mut c);
    duplicate_certificates::duplicate_certificates(&mut c);
    exposed_ports(&mut c, suite);
    gateway_references(&mut c);
    destinations::destinations(&mut c);
    destination_rules::destination_rules(&mut c);
    weights(&mut c);
    route_conflicts(&mut c);
    mesh_hosts::mesh_hosts(&mut c);
    mtls(&mut c);
    upstream_tls::upstream_tls(&mut c);
    peer_authentication::peer_authentication(&mut c);
    rewrites(&mut c);
    gateway_api_status::gateway_api_status(&mut c);
    authorization::authorization(&mut c);
    simulate_suite(&mut c, suite);
    let mut seen = BTreeSet::new();
    c.out
        .retain(|f| seen.insert((f.code, f.object.clone(), f.at.clone(), f.message.clone())));
    c.out
}

/// Each field of an Istio object meshcheck does not read, as the loader judged it
/// against Istio's API (fixtures/istio_api.rs): one Istio defines is "not modelled by
/// meshcheck" (MC302), one it does not define, at any depth, "not part of Istio's API"
/// (MC301: a typo such as `subset` for `subsets`, or a field of another version, that
/// silently changes behaviour). Other warnings of the model are MC303.
fn fields(c: &mut Ctx) {
    use crate::fixtures::FieldIssue;
    for r in &c.fx.refused {
        c.push(
            "fields",
            Severity::Error,
            "MC304",
            Some("IST0106 SchemaValidationError"),
            r.object.clone(),
            &r.at,
            format!("Istio's validation refuses the object: {}", r.message),
            "the API server does not take it (istiod's validating webhook): none of it is applied; the rest of the input is analysed without it",
        );
    }
    let warnings = c.mesh.warnings.clone();
    for w in &warnings {
        if w.message.starts_with("spec.selector does not match") {
            continue; // reported as MC114
        }
        match &w.field {
            Some(FieldIssue::NotModelled(path)) => c.push(
                "fields",
                Severity::Warning,
                "MC302",
                None,
                w.object.clone(),
                &w.at,
                format!("field `{path}` is not modelled by meshcheck"),
                "Istio applies it; the local target and this analysis do not",
            ),
            Some(FieldIssue::NotInIstio(path)) => c.push(
                "fields",
                Severity::Warning,
                "MC301",
                Some("IST0106 SchemaValidationError"),
                w.object.clone(),
                &w.at,
                format!("unknown field `{path}`: not part of Istio's API (1.30) there (a typo, or another version's field?)"),
                "the API server prunes it (or refuses the object under strict field validation): Istio does not apply it",
            ),
            None => c.push(
                "fields",
                Severity::Warning,
                "MC303",
                None,
                w.object.clone(),
                &w.at,
                w.message.clone(),
                "",
            ),
        }
    }
}

fn workload_selectors(c: &mut Ctx) {
    let all = workloads(c.fx);
    for w in all.iter().filter(|w| !w.selector_matches_template()) {
        c.push(
            "workload-selectors",
            Severity::Error,
            "MC114",
            None,
            w.describe(),
            &w.source,
            "spec.selector does not match spec.template.metadata.labels".into(),
            format!("the API server rejects the {}: no pod runs", w.kind),
        );
    }
    for s in &c.fx.services {
        if s.spec.spec.selector.is_empty() {
            continue;
        }
        let any = all.iter().any(|w| {
            w.replicas > 0
                && w.selector_matches_template()
                && w.namespace == s.namespace
                && selects(&s.spec.spec.selector, w.labels())
        });
        if !any {
            c.push(
                "workload-selectors",
                Severity::Warning,
                "MC115",
                None,
                s.describe(),
                &s.source,
                format!("selector {:?} matches no pod", s.spec.spec.selector),
                "the Service has no endpoints: routes to it answer 503 (no healthy upstream)",
            );
        }
    }
}

/// Namespaces whose pods must carry a sidecar: those of the app (non-gateway)
/// Deployments, plus those the suite's sidecars checks name.
fn app_namespaces(c: &Ctx, suite: &Suite) -> BTreeSet<String> {
    let mut ns: BTreeSet<String> = c
        .mesh
        .pods
        .iter()
        .filter(|p| {
            p.role != PodRole::Gateway
                && !matches!(&p.role, PodRole::NotRunning(w) if w.contains("gateway"))
        })
        .map(|p| p.namespace.clone())
        .collect();
    ns.extend(
        workloads(c.fx)
            .iter()
            // istioctl's injection analyzer leaves istio-system alone (injection.go).
            .filter(|w| w.kind != "Job" && w.namespace != "istio-system")
            .filter(|w| !w.is_gateway(&c.fx.namespace_labels(&w.namespace)))
            .map(|w| w.namespace.clone()),
    );
    for ch in &suite.checks {
        if let CheckKind::Sidecars(s) = &ch.kind {
            ns.extend(s.namespaces.iter().cloned());
        }
    }
    ns
}

fn injection(c: &mut Ctx, suite: &Suite) {
    for ns in app_namespaces(c, suite) {
        let labels = c.fx.namespace_labels(&ns);
        let enabled = labels
            .get("istio-injection")
            .map(|v| v == "enabled")
            .unwrap_or(false)
            || (labels.contains_key("istio.io/rev") && !labels.contains_key("istio-injection"));
        if !enabled {
            let (object, at) =
                c.fx.namespaces
                    .iter()
                    .find(|n| n.name == ns)
                    .map(|n| (n.describe(), n.source.clone()))
                    .unwrap_or_else(|| {
                        (
                            format!("Namespace {ns}"),
                            c.fx.deployments
                                .iter()
                                .find(|d| d.namespace == ns)
                                .map(|d| d.source.clone())
                                .unwrap_or_default(),
                        )
                    });
            let why = match labels.get("istio-injection") {
                Some(v) => format!("labelled istio-injection={v}"),
                None => "not labelled istio-injection=enabled (nor istio.io/rev)".into(),
            };
            c.push("injection", Severity::Error, "MC111", Some("IST0102 NamespaceNotInjected"), object, &at,
                format!("app namespace {ns} is {why}"),
                "its pods start without sidecars: no mTLS from the gateway, and ISTIO_MUTUAL destinations answer 503");
        }
    }
    // A Job opting out is Istio's advice for Jobs (a sidecar keeps the pod running
    // after the job's container exits), not a mistake.
    for w in workloads(c.fx).iter().filter(|w| {
        w.kind != "Job" && w.opts_out() && !w.is_gateway(&c.fx.namespace_labels(&w.namespace))
    }) {
        c.push(
            "injection",
            Severity::Error,
            "MC112",
            // Not istioctl's IST0103 PodMissingProxy: that is a running pod created
            // before injection was enabled; a manifest gets its proxy when created.
            None,
            w.describe(),
            &w.source,
            "pods opt out of injection (sidecar.istio.io/inject: \"false\")".into(),
            "its pods run without a sidecar",
        );
    }
}

/// The gateway workloads (workloads.rs: Istio's gateway template, or a pod running
/// only Istio's proxy).
fn gateway_workloads(fx: &Fixtures) -> Vec<Workload> {
    workloads(fx)
        .into_iter()
        .filter(|w| {
            w.replicas > 0
                && w.selector_matches_template()
                && w.is_gateway(&fx.namespace_labels(&w.namespace))
        })
        .collect()
}

/// istioctl's gateway.IngressGatewayPortAnalyzer (pkg/config/analysis/analyzers/gateway/
/// gateway.go, analyzeGateway, 1.30.3): the Gateway's selector must match a workload
/// (IST0101, MC108); each server port must be a port or a targetPort of a Service
/// selecting those workloads (IST0162, MC109). meshcheck counts only gateway workloads:
/// a sidecar does not take a Gateway's servers.
fn gateway_selector(c: &mut Ctx) {
    let gws = gateway_workloads(c.fx);
    for g in &c.fx.gateways {
        let sel = &g.spec.spec.selector;
        let selected: Vec<&Workload> = gws
            .iter()
            .filter(|w| c.fx.gateway_selects(g, &w.namespace, w.labels()))
            .collect();
        if selected.is_empty() {
            c.push("gateway-selector", Severity::Error, "MC108", Some("IST0101 ReferencedResourceNotFound"), g.describe(), &g.source,
                if g.spec.spec.bound_services.is_empty() {
                    format!("selector {sel:?} matches no gateway pod")
                } else {
                    format!("no gateway pod is behind {}", g.spec.spec.bound_services.join(", "))
                },
                "no proxy is programmed with this Gateway's servers: no listener, the NodePort refuses connections");
            continue;
        }
        let services: Vec<_> =
            c.fx.services
                .iter()
                .filter(|s| {
                    selected.iter().any(|w| {
                        s.namespace == w.namespace && selects(&s.spec.spec.selector, w.labels())
                    })
                })
                .collect();
        if services.is_empty() {
            c.push(
                "gateway-selector",
                Severity::Warning,
                "MC116",
                None,
                g.describe(),
                &g.source,
                "no Service selects the gateway pods this Gateway selects".into(),
                "ports are bound as written (no port translation) and nothing exposes them",
            );
            continue;
        }
        for (i, server) in g.spec.spec.servers.iter().enumerate() {
            let n = server.port.number;
            // istioctl's IST0162 (gateway.go analyzeGateway) accepts a TCP Service port
            // or its targetPort: pilot binds a server port that is no Service port as
            // written, and the Service port whose targetPort it is reaches it (Istio's
            // Bookinfo gateway on 8080).
            let reaches = |p: &crate::fixtures::k8s::ServicePort| {
                let tcp = p
                    .protocol
                    .as_deref()
                    .is_none_or(|x| x.eq_ignore_ascii_case("TCP"));
                let target = p
                    .target_port
                    .clone()
                    .unwrap_or(crate::fixtures::k8s::IntOrString::Int(p.port));
                tcp && (p.port == n || selected.iter().any(|w| w.resolve_port(&target) == Some(n)))
            };
            if !services
                .iter()
                .any(|s| s.spec.spec.ports.iter().any(reaches))
            {
                c.push("gateway-selector", Severity::Error, "MC109", Some("IST0162 GatewayPortNotDefinedOnService"), g.describe(), &g.source,
                    format!("server {i} port {n} is not a port of Service {}", services.iter().map(|s| format!("{}/{}", s.namespace, s.name)).collect::<Vec<_>>().join(", ")),
                    "the listener is bound inside the pod only: no Service port or NodePort reaches it");
            }
        }
    }
}

/// istioctl's gateway.SecretAnalyzer (pkg/config/analysis/analyzers/gateway/secret.go,
/// 1.30.3): a credentialName is looked up in the namespace of the gateway pods the
/// Gateway selects (IST0101 when absent; IST0161 when it holds no certificate). MC130
/// and MC131.
fn gateway_credentials(c: &mut Ctx) {
    let gws = gateway_workloads(c.fx);
    for g in &c.fx.gateways {
        let Some(ns) = gws
            .iter()
            .find(|w| c.fx.gateway_selects(g, &w.namespace, w.labels()))
            .map(|w| w.namespace.clone())
        else {
            continue; // MC108
        };
        for (i, server) in g.spec.spec.servers.iter().enumerate() {
            let Some(cn) = server
                .tls
                .as_ref()
                .and_then(|t| t.credential_name.as_deref())
                .filter(|cn| !cn.is_empty())
            else {
                continue;
            };
            let Some(problem) = crate::istio::credential_problem(c.fx, cn, &ns) else {
                let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref());
                credential_content(c, g, i, cn, &ns, mode);
                continue;
            };
            let (code, ctl) = if problem.starts_with("no Secret")
                || problem.contains("not in the gateway pod's namespace")
            {
                ("MC130", "IST0101 ReferencedResourceNotFound")
            } else {
                ("MC131", "IST0161 InvalidGatewayCredential")
            };
            c.push("gateway-credentials", Severity::Error, code, Some(ctl), g.describe(), &g.source,
                format!("server {i} credentialName {cn}: {problem}"),
                format!("istiod still sends the filter chain with SDS secret {}; its SDS has no certificate for it, so every TLS handshake for the server's hosts ({}) fails", crate::istio::sds_name(cn), server.hosts.join(", ")));
        }
    }
}

/// The content of a credential's Secret (credentials.rs): MC131 where istioctl reports
/// IST0161 (keys missing or empty, a certificate that does not parse, is expired or not
/// yet valid), MC132 for what only Envoy refuses (a key that does not match, a MUTUAL
/// server without a valid CA certificate).
fn credential_content(
    c: &mut Ctx,
    g: &crate::fixtures::Item<crate::fixtures::istio::Gateway>,
    i: usize,
    cn: &str,
    ns: &str,
    mode: Option<&str>,
) {
    let (sns, name) = crate::istio::secret_ref(cn, ns);
    let find = |n: &str| {
        c.fx.secrets
            .iter()
            .find(|s| s.namespace == sns && s.name == n)
    };
    let Some(secret) = find(&name) else { return };
    let ca = find(&format!("{name}-cacert"));
    let problems =
        credentials::problems(&secret.spec, ca.map(|s| &s.spec), mode, credentials::now());
    let hosts = g.spec.spec.servers[i].hosts.join(", ");
    for p in problems {
        let (code, ctl) = if p.istioctl {
            ("MC131", Some("IST0161 InvalidGatewayCredential"))
        } else {
            ("MC132", None)
        };
        c.push("gateway-credentials", Severity::Error, code, ctl, g.describe(), &g.source,
            format!("server {i} credentialName {cn}: Secret {sns}/{name}: {}", p.message),
            format!("istiod's SDS refuses the certificate (or Envoy its key): every TLS handshake for the server's hosts ({hosts}) fails"));
    }
}

fn exposed_ports(c: &mut Ctx, suite: &Suite) {
    let allowed = &suite.policy.allowed_ports;
    for s in &c.mesh.ingress_services {
        for (port, node_port, name) in &s.ports {
            if !allowed.contains(port) {
                let obj =
                    c.fx.services
                        .iter()
                        .find(|x| x.namespace == s.namespace && x.name == s.name);
                c.push("exposed-ports", Severity::Error, "MC110", None,
                    obj.map(|o| o.describe()).unwrap_or_else(|| format!("Service {}/{}", s.namespace, s.name)), &s.source,
                    format!("exposes port {port}{} on NodePort {node_port}; the suite's policy allows only {allowed:?}",
                        name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()),
                    format!("kube-proxy opens NodePort {node_port} on every node"));
            }
        }
    }
}

/// MC122 (IST0165): a `gateways` entry naming the Istio Gateway istiod generates for a
/// listener of a Gateway API Gateway; true when it does.
fn internal_gateway_reference(
    c: &mut Ctx,
    vs: &crate::fixtures::Item<crate::fixtures::istio::VirtualService>,
    g: &str,
    ns: &str,
    name: &str,
) -> bool {
    let Some((gw, listener)) = gateway_api::internal_reference(name) else {
        return false;
    };
    let api = gateway_api::api_gateways(c.fx);
    let Some(a) = api
        .iter()
        .find(|a| a.namespace == ns && a.name == gw && a.listeners.iter().any(|l| l == listener))
    else {
        return false;
    };
    c.push("gateway-references", Severity::Warning, "MC122", Some("IST0165 ReferencedInternalGateway"), vs.describe(), &vs.source,
        format!("gateway `{g}` is the Istio Gateway istiod generates for listener {listener} of {} (gateway.networking.k8s.io)", a.describe()),
        "Istio binds the routes to that listener; the generated name is an implementation detail of istiod and may change");
    true
}

/// A `gateways` entry that names no Istio Gateway: a listener of a Gateway API Gateway
/// through the name istiod generates for it (MC122, IST0165), or nothing Istio binds to
/// (MC101, IST0101), said precisely when it names a Gateway API Gateway itself
/// (gateway_api.rs; istioctl virtualservice/gateways.go analyzeVirtualService).
fn unbound_gateway_reference(
    c: &mut Ctx,
    vs: &crate::fixtures::Item<crate::fixtures::istio::VirtualService>,
    g: &str,
    ns: &str,
    name: &str,
) {
    if internal_gateway_reference(c, vs, g, ns, name) {
        return;
    }
    let api = gateway_api::api_gateways(c.fx);
    let message = match api.iter().find(|a| a.namespace == ns && a.name == name) {
        None if gateway_api::internal_reference(name).is_some() => {
            let (gw, listener) = gateway_api::internal_reference(name).unwrap_or_default();
            format!("gateway `{g}` is the name istiod generates for listener {listener} of Gateway API Gateway {ns}/{gw}, which the fixtures do not define (with that listener)")
        }
        Some(a) => format!(
            "gateway `{g}` names {} of the Gateway API (gateway.networking.k8s.io), not an Istio Gateway: Istio binds VirtualServices only to networking.istio.io Gateways (bind to a listener as `{ns}/{name}~istio-autogenerated-k8s-gateway~<listener>`, or use an HTTPRoute)",
            a.describe()
        ),
        None => format!("gateway `{g}` refers to Gateway {ns}/{name}, which does not exist"),
    };
    c.push("gateway-references", Severity::Error, "MC101", Some("IST0101 ReferencedResourceNotFound"), vs.describe(), &vs.source,
        message,
        "the VirtualService is bound to no gateway: its routes are not programmed, requests get 404");
}

fn gateway_references(c: &mut Ctx) {
    // The VirtualServices istiod generates from HTTPRoutes attach as their status says
    // (gateway_api_status.rs).
    let written =
        c.fx.virtual_services.iter().filter(|v| {
            !crate::fixtures::gateway_api::gateway_semantics(&v.spec.metadata.annotations)
        });
    for vs in written {
        for g in &vs.spec.spec.gateways {
            if g == "mesh" {
                continue;
            }
            let (ns, name) = gateway_api::resolve_gateway_name(g, &vs.namespace);
            let Some(gw) =
                c.fx.gateways
                    .iter()
                    .find(|x| x.namespace == ns && x.name == name)
            else {
                unbound_gateway_reference(c, vs, g, &ns, &name);
                continue;
            };
            if gw
                .spec
                .metadata
                .annotations
                .contains_key(crate::fixtures::gateway_api::GATEWAY_SERVICE)
            {
                internal_gateway_reference(c, vs, g, &ns, &name);
            }
            // Hosts must intersect the Gateway's servers' hosts (namespace rules).
            let ok = gw
                .spec
                .spec
                .servers
                .iter()
                .flat_map(|s| s.hosts.iter())
                .any(|sh| {
                    let (hns, h) = match sh.split_once('/') {
                        Some((a, b)) => (Some(a), b),
                        None => (None, sh.as_str()),
                    };
                    let ns_ok = match hns {
                        None | Some("*") => true,
                        Some(".") => vs.namespace == gw.namespace,
                        Some("~") => false,
                        Some(n) => vs.namespace == n,
                    };
                    ns_ok && vs.spec.spec.hosts.iter().any(|vh| host_matches(vh, h))
                });
            if !ok {
                // istioctl virtualservice/gateways.go vsHostInGateway: the same
                // namespace rules (sanitizeServerHostNamespace, NamesForNamespace).
                c.push(
                    "gateway-hosts",
                    Severity::Error,
                    "MC102",
                    Some("IST0132 VirtualServiceHostNotFoundInGateway"),
                    vs.describe(),
                    &vs.source,
                    format!(
                        "hosts {:?} match no server host of {} (or its namespace rules exclude {})",
                        vs.spec.spec.hosts,
                        gw.describe(),
                        vs.namespace
                    ),
                    "the routes are not programmed on that Gateway: requests get 404",
                );
            }
        }
        if vs.spec.spec.gateways.is_empty() {
            c.push(
                "gateway-references",
                Severity::Info,
                "MC117",
                None,
                vs.describe(),
                &vs.source,
                "binds to no gateway (mesh only)".into(),
                "not exposed at the ingress",
            );
        }
    }
}

fn weights(c: &mut Ctx) {
    for vs in &c.fx.virtual_services {
        // A Gateway API backendRef weight is a proportion by the API ("the sum of all
        // weights"), and istiod passes the weights on as written
        // (pilot/pkg/config/kube/gateway/conversion.go buildHTTPDestination): a sum
        // other than 100 is the split the HTTPRoute says.
        let gateway_api =
            crate::fixtures::gateway_api::gateway_semantics(&vs.spec.metadata.annotations);
        for (hi, http) in vs.spec.spec.http.iter().enumerate() {
            if let Some(w) = http.route.iter().filter_map(|d| d.weight).find(|w| *w < 0) {
                c.push(
                    "weights",
                    Severity::Error,
                    "MC107",
                    None,
                    vs.describe(),
                    &vs.source,
                    format!("http[{hi}] has a negative weight ({w})"),
                    "the API server rejects the VirtualService",
                );
            }
            if http.route.len() > 1 {
                let sum: i64 = http.route.iter().map(|d| d.weight.unwrap_or(0)).sum();
                // pkg/config/validation/validation.go (1.30.3) refuses only a total of 0;
                // Envoy's weighted_clusters then split by each weight over the total.
                if sum == 0 {
                    c.push("weights", Severity::Error, "MC107", None, vs.describe(), &vs.source,
                        format!("http[{hi}] weights sum to 0"),
                        "istiod's validation refuses the VirtualService (total destination weight = 0): the API server does not take it");
                } else if sum != 100 && !gateway_api {
                    c.push("weights", Severity::Error, "MC107", None, vs.describe(), &vs.source,
                        format!("http[{hi}] weights sum to {sum}, not 100"),
                        format!("Istio takes the weights as relative (each over {sum}): the split is not the percentages written"));
                }
            }
        }
    }
}

/// Whether route `a` (earlier) matches every request route `b` matches.
fn covers(a: &crate::istio::RoutePlan, b: &crate::istio::RoutePlan) -> bool {
    let path = match (&a.path, &b.path) {
        (PathMatch::Prefix(p), PathMatch::Prefix(q)) => q.starts_with(p.as_str()),
        (PathMatch::Prefix(p), PathMatch::Exact(e)) => e.starts_with(p.as_str()),
        (PathMatch::Exact(x), PathMatch::Exact(y)) => x == y,
        (PathMatch::Regex(x), PathMatch::Regex(y)) => x == y,
        (PathMatch::Prefix(p), PathMatch::PathSeparatedPrefix(q)) => q.starts_with(p.as_str()),
        (PathMatch::PathSeparatedPrefix(p), PathMatch::PathSeparatedPrefix(q))
        | (PathMatch::PathSeparatedPrefix(p), PathMatch::Exact(q)) => {
            q == p
                || q.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        }
        _ => false,
    };
    path && a.ignore_case == b.ignore_case
        && a.headers.iter().all(|h| b.headers.contains(h))
        && a.query.iter().all(|q| b.query.contains(q))
        && (a.method.is_none() || a.method == b.method)
        && (a.authority.is_none() || a.authority == b.authority)
}

/// `prefix: /a` rewritten to `/`: pilot makes Envoy `prefix_rewrite: "/"`
/// (pilot/pkg/networking/core/route/route.go, 1.30.3, applyHTTPRouteDestination), which
/// replaces exactly the matched prefix, so `/a/items` reaches the backend as `//items`
/// (istio/istio#26828). Match `prefix: /a/` (and `exact: /a`) instead, or use
/// `uriRegexRewrite`.
fn rewrites(c: &mut Ctx) {
    // Gateway API routes strip the prefix without the double slash (route.go: a
    // regex_rewrite under UseGatewaySemantics).
    let gateway_api = |vs: &&crate::fixtures::Item<crate::fixtures::istio::VirtualService>| {
        crate::fixtures::gateway_api::gateway_semantics(&vs.spec.metadata.annotations)
    };
    for vs in c.fx.virtual_services.iter().filter(|v| !gateway_api(v)) {
        for (hi, http) in vs.spec.spec.http.iter().enumerate() {
            let Some(rw) = &http.rewrite else { continue };
            if rw.uri.as_deref() != Some("/") || rw.uri_regex_rewrite.is_some() {
                continue;
            }
            for (mi, m) in http.matches.iter().enumerate() {
                let Some(crate::fixtures::istio::StringMatch::Prefix(p)) = &m.uri else {
                    continue;
                };
                if p.ends_with('/') {
                    continue;
                }
                c.push(
                    "rewrites",
                    Severity::Warning,
                    "MC120",
                    None,
                    vs.describe(),
                    &vs.source,
                    format!(
                        "http[{hi}].match[{mi}] prefix {p} is rewritten to /: {p}/items reaches the backend as //items (and {p}x as /x)"
                    ),
                    format!(
                        "pilot makes Envoy prefix_rewrite \"/\", which replaces exactly the matched prefix; match prefix {p}/ plus exact {p}, or use uriRegexRewrite"
                    ),
                );
            }
        }
    }
}

fn route_conflicts(c: &mut Ctx) {
    let mut seen = BTreeSet::new();
    for g in &c.mesh.gateways {
        for l in &g.listeners {
            for vh in l.route_configs().flat_map(|rc| rc.vhosts.iter()) {
                for (j, b) in vh.routes.iter().enumerate() {
                    if let Some(a) = vh.routes[..j].iter().find(|a| covers(a, b)) {
                        if !seen.insert((b.name.clone(), a.name.clone())) {
                            continue;
                        }
                        let (sev, code, ctl) = if a.virtual_service != b.virtual_service {
                            (Severity::Error, "MC121", None)
                        } else {
                            (Severity::Warning, "MC119", None)
                        };
                        let obj =
                            c.fx.virtual_services
                                .iter()
                                .find(|v| v.describe() == b.virtual_service);
                        c.push("route-conflicts", sev, code, ctl, b.virtual_service.clone(), &obj.map(|o| o.source.clone()).unwrap_or_default(),
                            format!("http[{}] on host {} is shadowed by {} http[{}], which matches every request it matches", b.http_index, vh.domains.join(","), a.virtual_service, a.http_index),
                            "Istio merges the VirtualServices of a host in creation order: the shadowed route never receives traffic");
                    }
                }
            }
        }
    }
}

fn mtls(c: &mut Ctx) {
    // One finding per DestinationRule, naming every pod it would fail toward.
    let mut bare_by_dr: BTreeMap<(String, Source), (String, BTreeSet<String>)> = BTreeMap::new();
    for cl in c.mesh.clusters.values() {
        if cl.tls != UpstreamTls::IstioMutual {
            continue;
        }
        let bare: Vec<String> = cl
            .endpoints
            .iter()
            .map(|e| &c.mesh.pods[e.pod])
            .filter(|p| !p.has_sidecar())
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        if bare.is_empty() {
            continue;
        }
        let dr =
            c.fx.destination_rules
                .iter()
                .find(|r| resolve_host(&r.spec.spec.host, &r.namespace) == cl.fqdn);
        let key = dr
            .map(|r| (r.describe(), r.source.clone()))
            .unwrap_or_else(|| (format!("cluster {}", cl.name), Source::default()));
        bare_by_dr
            .entry(key)
            .or_insert_with(|| (cl.fqdn.clone(), BTreeSet::new()))
            .1
            .extend(bare);
    }
    for ((obj, at), (fqdn, pods)) in bare_by_dr {
        c.push("mtls", Severity::Error, "MC118", None, obj, &at,
            format!("tls.mode ISTIO_MUTUAL toward {fqdn} but pod(s) {} have no sidecar", pods.into_iter().collect::<Vec<_>>().join(", ")),
            "the gateway originates mTLS the plaintext app cannot accept: the handshake fails, 503 (UF)");
    }
    for d in &c.fx.destination_rules {
        let modes = d.spec.spec.traffic_policy.iter().chain(
            d.spec
                .spec
                .subsets
                .iter()
                .filter_map(|s| s.traffic_policy.as_ref()),
        );
        for m in modes
            .filter_map(|t| t.tls.as_ref())
            .filter_map(|t| t.mode.as_deref())
        {
            if m == "SIMPLE" || m == "MUTUAL" {
                c.push(
                    "mtls",
                    Severity::Warning,
                    "MC302",
                    None,
                    d.describe(),
                    &d.source,
                    format!("tls.mode {m} is not modelled by meshcheck"),
                    "Istio originates TLS with the given certificates",
                );
            }
        }
    }
}

/// The model's prediction for each step of the suite's `steps` checks, by step id
/// (src/step_analysis.rs).
pub fn step_predictions(suite: &Suite, mesh: &Mesh) -> Vec<(String, crate::istio::Prediction)> {
    crate::step_analysis::step_predictions(suite, mesh)
}

/// The request a check sends, as the simulation sees it.
pub fn sim_request(req: &RequestSpec, service_port: u16) -> SimRequest {
    SimRequest {
        service_port: req.service_port(service_port),
        gateway: req.gateway.clone(),
        https: req.is_https(),
        assume_certificates: false,
        method: req.method(),
        host: req.host.clone().unwrap_or_else(|| "node".into()),
        path: req.path_and_query(),
        body: req.body.clone(),
        headers: req.header_values(),
        source_address: req.source,
        skip_authz: false,
        jwt_payload: None,
    }
}

/// Why a predicted branch does not meet `e` (None: it does, as far as the model knows).
pub(crate) fn branch_mismatch(e: &HttpExpect, b: &crate::istio::Branch) -> Option<String> {
    let got = match (&b.status, &b.backend) {
        (None, _) if b.reason.ends_with(crate::istio::HANDSHAKE_FAILS) => {
            crate::istio::HANDSHAKE_FAILS.to_string()
        }
        (None, _) => "connection refused".to_string(),
        (Some(s), Some(be)) => format!("{s} from {} {}", be.service, be.version),
        (Some(s), None) => format!("{s}"),
    };
    // A 4xx the gateway answers, or no connection at all (with no `status` asked).
    let refused = b.backend.is_none()
        && (b.status.is_some_and(|s| (400..500).contains(&s))
            || (b.status.is_none() && e.status.is_none()));
    if let Some(d) = e.denied {
        if b.backend.is_some() || b.status != Some(d.status()) {
            return Some(format!("expected {}, predicted {got}", d.describe()));
        }
    } else if e.not_reached && !refused {
        return Some(format!(
            "expected {}, predicted {got}",
            crate::suite::NOT_REACHED
        ));
    }
    if let Some(s) = e.status.filter(|s| b.status != Some(*s)) {
        return Some(format!("expected status {s}, predicted {got}"));
    }
    if e.backend.as_ref().is_some_and(|w| w.none) && b.backend.is_some() {
        return Some(format!("expected no backend to answer, predicted {got}"));
    }
    if e.backend.as_ref().is_some_and(|w| !w.none) && b.backend.is_none() {
        return Some(format!(
            "expected an answer from a backend, predicted {got} from the gateway ({})",
            b.reason
        ));
    }
    if let (Some(want), Some(be)) = (&e.backend, &b.backend) {
        for (what, w, g) in [
            ("service", &want.service, &be.service),
            ("version", &want.version, &be.version),
            ("namespace", &want.namespace, &be.namespace),
        ] {
            if let Some(w) = w {
                if w != g {
                    return Some(format!("expected {what} {w}, predicted {got}"));
                }
            }
        }
    }
    if let (Some(p), Some(seen)) = (&e.path, &b.path_seen) {
        if p != seen {
            return Some(format!(
                "expected the backend to see path {p}, predicted {seen}"
            ));
        }
    }
    for (name, want) in &e.headers {
        if let crate::suite::HeaderExpect::Exact(v) = want {
            if let Some(seen) = b.headers_seen.get(&name.to_ascii_lowercase()) {
                if seen.first() != Some(v) {
                    return Some(format!(
                        "expected header {name}: {v}, predicted {}",
                        crate::suite::HeaderExpect::describe_got(seen)
                    ));
                }
            }
        }
    }
    crate::step_analysis::response_mismatch(e, b)
}

/// Why the prediction does not mirror every request to `mirrored_to`, or None.
pub(crate) fn mirror_mismatch(e: &HttpExpect, p: &crate::istio::Prediction) -> Option<String> {
    let want = e.mirrored_to.as_ref()?;
    let is_want = |b: &crate::istio::Backend| {
        want.is(&crate::stub::Identity {
            service: b.service.clone(),
            version: b.version.clone(),
            namespace: b.namespace.clone(),
            pod: String::new(),
        })
    };
    // The mirror's share of the requests that reach `want` (each of its endpoints
    // gets its share of the mirror's copies).
    let share: f64 = p
        .mirrors
        .iter()
        .map(|m| {
            m.percent / 100.0
                * m.backends
                    .iter()
                    .filter(|(b, _)| is_want(b))
                    .map(|(_, s)| s)
                    .sum::<f64>()
        })
        .sum();
    if share >= 1.0 - 1e-9 {
        return None;
    }
    let predicted = if p.mirrors.is_empty() {
        "no mirror on the route".to_string()
    } else {
        p.mirrors
            .iter()
            .map(|m| format!("{}% to {}", m.percent, m.reason))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some(format!(
        "expected every request mirrored to {want}, predicted {:.0}% ({predicted})",
        share * 100.0
    ))
}

fn simulate_suite(c: &mut Ctx, suite: &Suite) {
    for check in &suite.checks {
        let analysis = format!("simulate::{}", check.full_name());
        if let CheckKind::Steps(steps) = &check.kind {
            shared_state(c, suite, check, steps, &analysis);
        }
        if let CheckKind::Status(s) = &check.kind {
            status_check(c, check, s, &analysis);
            continue;
        }
        let (req, verdict) = match &check.kind {
            CheckKind::Http(h) => {
                let sim = sim_request(&h.request, suite.ingress.port);
                let p = c.mesh.simulate(&sim);
                let bad = crate::step_analysis::predicted_mismatches(h, &sim, &p);
                (h.request.clone(), (p, bad))
            }
            CheckKind::Steps(steps) => {
                match crate::step_analysis::first_failing_step(c.mesh, steps, suite.ingress.port) {
                    Some((req, p, bad)) => (req, (p, bad)),
                    None => continue,
                }
            }
            CheckKind::Distribution(d) => {
                let p = c
                    .mesh
                    .simulate(&sim_request(&d.request, suite.ingress.port));
                let mut shares: BTreeMap<String, f64> = BTreeMap::new();
                let mut bad = Vec::new();
                let by_status = d.shares.is_empty();
                for b in &p.outcomes() {
                    match (&b.status, &b.backend) {
                        (Some(s), _) if by_status => {
                            *shares.entry(s.to_string()).or_default() += b.share * 100.0;
                        }
                        (Some(s), Some(be))
                            if (200..300).contains(s)
                                && d.service.as_ref().map(|x| x == &be.service).unwrap_or(true) =>
                        {
                            *shares.entry(be.version.clone()).or_default() += b.share * 100.0;
                        }
                        _ => bad.push(format!("{:.0}% of requests: {}", b.share * 100.0, b.reason)),
                    }
                }
                if !d.at_least.is_empty() {
                    let bad = at_least_unpredicted(c.mesh, d, &p);
                    (d.request.clone(), (p, bad))
                } else {
                    let expected = d.expected();
                    let versions: BTreeSet<&String> =
                        shares.keys().chain(expected.keys()).collect();
                    let what = if by_status { "status" } else { "version" };
                    for v in versions {
                        let want = expected.get(v).copied().unwrap_or(0.0);
                        let got = shares.get(v).copied().unwrap_or(0.0);
                        if (want - got).abs() > 1e-6 {
                            bad.push(format!(
                                "{what} {v}: expected {want}%, configured {got:.1}%"
                            ));
                        }
                    }
                    (d.request.clone(), (p, bad))
                }
            }
            _ => continue,
        };
        let (p, bad) = verdict;
        if bad.is_empty() {
            continue;
        }
        let (object, at) = match &p.route {
            Some(r) => (r.virtual_service.clone(), r.source.clone()),
            // No route reached: the gateway Service is where the request entered.
            None => match c.mesh.ingress_services.first() {
                Some(s) => (
                    crate::fixtures::describe("Service", &s.namespace, &s.name),
                    s.source.clone(),
                ),
                None => ("ingress".to_string(), Source::default()),
            },
        };
        let mut f = Finding {
            analysis,
            severity: Severity::Error,
            code: "MC201",
            istioctl: None,
            object,
            at,
            message: format!("check {}: {}", check.full_name(), bad.join("; ")),
            istio: String::new(),
            detail: format!(
                "decision path for {} {}:\n  {}",
                req.method.as_deref().unwrap_or("GET"),
                req.path,
                p.explain()
            ),
        };
        f.istio = p
            .outcomes()
            .iter()
            .map(|b| b.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        c.out.push(f);
    }
}

/// A `status` check against the conditions istiod's controller would write (MC201 at
/// the object when they do not hold; the object missing is an error too).
fn status_check(
    c: &mut Ctx,
    check: &crate::suite::CheckSpec,
    s: &crate::suite::StatusCheck,
    analysis: &str,
) {
    let Some((kind, ns, name)) = s.target() else {
        return;
    };
    let found =
        c.fx.gateway_api
            .statuses
            .iter()
            .find(|o| o.kind == kind && o.namespace == ns && o.name == name);
    let (at, why) = match found {
        None => (
            Source::default(),
            format!(
                "{} has no status: no such Gateway API object (of an Istio class)",
                s.object
            ),
        ),
        Some(o) => match crate::checks::status::judge(o, s) {
            Ok(_) => return,
            Err((why, _)) => (o.source.clone(), why),
        },
    };
    c.push(
        analysis,
        Severity::Error,
        "MC201",
        None,
        s.object.clone(),
        &at,
        format!("check {}: {why}", check.full_name()),
        "the conditions istiod's gateway controller writes (pilot/pkg/config/kube/gateway) do not hold",
    );
}

/// MC202: state a `steps` check changes (an ejected pod) that other checks reach.
fn shared_state(
    c: &mut Ctx,
    suite: &Suite,
    check: &crate::suite::CheckSpec,
    steps: &[crate::suite::Step],
    analysis: &str,
) {
    for (fqdn, message) in crate::step_analysis::shared_state(c.mesh, suite, check, steps) {
        let dr =
            c.fx.destination_rules
                .iter()
                .find(|r| resolve_host(&r.spec.spec.host, &r.namespace) == fqdn);
        let (object, at) = dr
            .map(|r| (r.describe(), r.source.clone()))
            .unwrap_or_else(|| (format!("host {fqdn}"), Source::default()));
        c.push(analysis, Severity::Warning, "MC202", None, object, &at, message,
            "outlier detection is per gateway cluster: every request through it sees the ejection; give the scenario a backend (or subset) of its own");
    }
}

/// Latency bounds the configured delays contradict. The least time an answer takes is
/// the route's fault delay when it holds for every request (Envoy's fault filter,
/// before the router), plus the stub's own delay (`x-meshcheck-delay`) when a backend
/// answers; a backend cut off by the route's timeout answers nothing (its 504 comes
/// after the timeout, which is not bounded here). Network time is never predicted, so
/// only what the configuration itself guarantees or rules out is judged.
pub(crate) fn latency_mismatch(
    e: &crate::suite::HttpExpect,
    req: &crate::suite::RequestSpec,
    p: &crate::istio::Prediction,
) -> Vec<String> {
    let Some(Ok((at_least, at_most))) = e.latency.as_ref().map(|l| l.bounds()) else {
        return Vec::new();
    };
    let query = req.path_and_query();
    let query = query.split_once('?').map(|(_, q)| q).unwrap_or("");
    let headers = req.header_map();
    let stub_ms = crate::stub::controls::controls(
        |n| {
            headers
                .get(n)
                .map(|v| v.split(',').next().unwrap_or("").to_string())
        },
        query,
    )
    .ok()
    .and_then(|c| c.delay)
    .map(|d| d.as_millis() as u64)
    .unwrap_or(0);
    let fault_ms = match p.delay() {
        Some((ms, share)) if share >= 1.0 => ms,
        _ => 0,
    };
    let outcomes = p.outcomes();
    let mut bad = Vec::new();
    for b in outcomes.iter().filter(|b| b.share > 0.0) {
        let least = fault_ms + if b.backend.is_some() { stub_ms } else { 0 };
        if let Some(hi) = at_most {
            if u128::from(least) > hi.as_millis() {
                bad.push(format!(
                    "expected an answer within {}ms, the configuration delays it by at least {least}ms",
                    hi.as_millis()
                ));
            }
        }
        if let Some(lo) = at_least {
            let timed_out = b.status == Some(504) && b.backend.is_none();
            if !timed_out && u128::from(least) < lo.as_millis() {
                bad.push(format!(
                    "expected an answer after at least {}ms, the configuration delays it by {least}ms",
                    lo.as_millis()
                ));
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

/// `at_least` statuses the model cannot produce: a status is possible when some
/// outcome has it, and 503 also when a destination cluster has a circuit-breaker limit
/// below istiod's default (Envoy answers overflow with 503 `x-envoy-overloaded`;
/// pilot cluster_traffic_policy.go applyConnectionPool). How often is not predicted.
fn at_least_unpredicted(
    mesh: &Mesh,
    d: &crate::suite::DistributionCheck,
    p: &crate::istio::Prediction,
) -> Vec<String> {
    let outcomes = p.outcomes();
    let limited = outcomes
        .iter()
        .filter_map(|b| b.cluster.as_ref())
        .any(|name| {
            mesh.clusters.get(name).is_some_and(|c| {
                let t = &c.policy.thresholds;
                [t.max_connections, t.max_pending_requests, t.max_requests]
                    .iter()
                    .any(|l| *l < u32::MAX)
            })
        });
    d.at_least
        .keys()
        .filter(|status| {
            let seen = outcomes.iter().any(|b| {
                b.share > 0.0 && b.status.map(|s| s.to_string()).as_ref() == Some(*status)
            });
            !(seen || (status.as_str() == "503" && limited))
        })
        .map(|status| {
            format!(
                "status {status}: expected at least {} answer(s), never predicted",
                d.at_least[status]
            )
        })
        .collect()
}

/// The names of the `static::` testcases for a suite: every analysis, then one
/// simulation per traffic check.
pub fn testcase_names(suite: &Suite) -> Vec<String> {
    let mut v: Vec<String> = ANALYSES.iter().map(|(n, _)| n.to_string()).collect();
    for ch in &suite.checks {
        if matches!(
            ch.kind,
            CheckKind::Http(_)
                | CheckKind::Distribution(_)
                | CheckKind::Steps(_)
                | CheckKind::Status(_)
        ) {
            v.push(format!("simulate::{}", ch.full_name()));
        }
    }
    v
}
