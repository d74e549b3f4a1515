//! The classic AuthorizationPolicy mistakes at an ingress, each found on the model
//! (istio/authz/) and said with Istio's reason:
//! - MC150: a policy that attaches to no workload (a selector or targetRef matching
//!   nothing in its scope: istioctl's analyzers do not catch it; pilot's
//!   policyattachment.go simply never applies it).
//! - MC151: peer identities (`principals`, `namespaces`, `serviceAccounts`,
//!   `trustDomains`, `source.principal`...) in a policy on gateway pods: traffic from
//!   outside the mesh has no peer certificate, so these never match it (Istio's
//!   security docs, "Authorization on Ingress Gateway").
//! - MC152: `ipBlocks` / `source.ip` on gateway pods: the gateway sees the load
//!   balancer's or the node's address (kube-proxy SNAT), not the client's, unless the
//!   Service has `externalTrafficPolicy: Local`; `remoteIpBlocks` with
//!   `numTrustedProxies` is what Istio's "ingress gateway authorization by client IP"
//!   task uses.
//! - MC153: a DENY on a path that another spelling reaches: the spelling survives the
//!   effective pathNormalization (Istio's "Security best practices: understand path
//!   normalization in authorization policy"), is not denied, and a route takes it to
//!   a backend.
//! - MC154: ALLOW policies on gateway pods under which a route can be reached by no
//!   request of any client (deny by default: every other path of the host is closed).
//! - MC155: a RequestAuthentication on gateway pods that no AuthorizationPolicy there
//!   backs with a requirement on the request principal: a request without a token
//!   passes (Istio's JWT filter only refuses invalid tokens; Istio's docs, "Require a
//!   valid token": an AuthorizationPolicy with `requestPrincipals`).

use super::{Ctx, Severity};
use crate::fixtures::security::AuthorizationPolicy;
use crate::fixtures::Item;
use crate::istio::authz::{attaches, rbac};
use crate::istio::{PathMatch, PodRole, SimRequest};

const ANALYSIS: &str = "authorization";

pub fn authorization(c: &mut Ctx) {
    for p in &c.fx.authorization_policies {
        attaches_to_nothing(c, p);
        if !on_gateway(c, p) {
            continue;
        }
        peer_identity_at_gateway(c, p);
        direct_ip_at_gateway(c, p);
    }
    deny_bypasses(c);
    closed_routes(c);
    optional_tokens(c);
}

/// Whether `p` says anything about the request's principal or its token's claims.
fn reads_request_principal(p: &AuthorizationPolicy) -> bool {
    p.spec.rules.iter().flatten().any(|r| {
        r.from
            .iter()
            .filter_map(|f| f.source.as_ref())
            .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty())
            || r.when.iter().any(|w| w.key.starts_with("request.auth."))
    })
}

fn optional_tokens(c: &mut Ctx) {
    let root = c.fx.root_namespace();
    let mut found = Vec::new();
    for pod in c.mesh.pods.iter().filter(|p| p.role == PodRole::Gateway) {
        let required = c.fx.authorization_policies.iter().any(|p| {
            attaches(p, root, &pod.namespace, &pod.labels) && reads_request_principal(&p.spec)
        });
        if required {
            continue;
        }
        for ra in &c.fx.request_authentications {
            let s = &ra.spec.spec;
            if crate::istio::authz::attaches_by(
                &ra.namespace,
                s.selector.as_ref(),
                &s.target_refs(),
                root,
                &pod.namespace,
                &pod.labels,
            ) {
                found.push((ra.describe(), ra.source.clone()));
            }
        }
    }
    found.sort();
    found.dedup();
    for (object, at) in found {
        c.push(
            ANALYSIS,
            Severity::Warning,
            "MC155",
            None,
            object,
            &at,
            "applies to gateway pods, but no AuthorizationPolicy there requires a request principal: a request without a token passes (only an invalid token is refused, 401)".into(),
            "Istio: RequestAuthentication alone makes tokens optional; require one with an AuthorizationPolicy (`requestPrincipals: [\"*\"]`, or a DENY with `notRequestPrincipals: [\"*\"]`) (tasks/security/authentication/authn-policy, \"Require a valid token\")",
        );
    }
}

fn on_gateway(c: &Ctx, p: &Item<AuthorizationPolicy>) -> bool {
    let root = c.fx.root_namespace();
    c.mesh
        .pods
        .iter()
        .any(|pod| pod.role == PodRole::Gateway && attaches(p, root, &pod.namespace, &pod.labels))
}

fn attaches_to_nothing(c: &mut Ctx, p: &Item<AuthorizationPolicy>) {
    let root = c.fx.root_namespace();
    if c.mesh
        .pods
        .iter()
        .any(|pod| attaches(p, root, &pod.namespace, &pod.labels))
    {
        return;
    }
    let scope = if p.namespace == root {
        "any namespace (root namespace)".to_string()
    } else {
        format!("namespace {}", p.namespace)
    };
    c.push(
        ANALYSIS,
        Severity::Warning,
        "MC150",
        None,
        p.describe(),
        &p.source,
        format!("attaches to no workload of {scope}: no pod matches its selector or targetRef"),
        "pilot/pkg/model/policyattachment.go ShouldAttachPolicy: the policy is never programmed, so it allows and denies nothing",
    );
}

/// The fields of `p` that name a peer identity, as written.
fn peer_identity_fields(p: &AuthorizationPolicy) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in p.spec.rules.iter().flatten().enumerate() {
        for (j, f) in r.from.iter().enumerate() {
            let Some(s) = &f.source else { continue };
            for (name, v) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
                ("trustDomains", &s.trust_domains),
                ("notTrustDomains", &s.not_trust_domains),
            ] {
                if !v.is_empty() {
                    out.push(format!("rules[{i}].from[{j}].source.{name}"));
                }
            }
        }
        for (j, w) in r.when.iter().enumerate() {
            if w.key.starts_with("source.") && w.key != "source.ip" {
                out.push(format!("rules[{i}].when[{j}] {}", w.key));
            }
        }
    }
    out
}

fn peer_identity_at_gateway(c: &mut Ctx, p: &Item<AuthorizationPolicy>) {
    let fields = peer_identity_fields(&p.spec);
    if fields.is_empty() {
        return;
    }
    c.push(
        ANALYSIS,
        Severity::Warning,
        "MC151",
        None,
        p.describe(),
        &p.source,
        format!(
            "applies to gateway pods and matches peer identities ({}): clients outside the mesh present no peer certificate, so these never match them",
            fields.join(", ")
        ),
        "Istio: the principal and namespace of a request from outside the mesh are empty at the ingress gateway (tasks/security/authorization/authz-ingress); use remoteIpBlocks or requestPrincipals",
    );
}

fn direct_ip_at_gateway(c: &mut Ctx, p: &Item<AuthorizationPolicy>) {
    let mut fields = Vec::new();
    for (i, r) in p.spec.spec.rules.iter().flatten().enumerate() {
        for (j, f) in r.from.iter().enumerate() {
            if let Some(s) = &f.source {
                if !s.ip_blocks.is_empty() || !s.not_ip_blocks.is_empty() {
                    fields.push(format!("rules[{i}].from[{j}].source.ipBlocks"));
                }
            }
        }
        for (j, w) in r.when.iter().enumerate() {
            if w.key == "source.ip" {
                fields.push(format!("rules[{i}].when[{j}] source.ip"));
            }
        }
    }
    if fields.is_empty() || every_gateway_service_keeps_client_address(c) {
        return;
    }
    c.push(
        ANALYSIS,
        Severity::Warning,
        "MC152",
        None,
        p.describe(),
        &p.source,
        format!(
            "applies to gateway pods and matches the connection's address ({}): behind a LoadBalancer/NodePort Service without externalTrafficPolicy: Local that is the node's or the load balancer's address, not the client's",
            fields.join(", ")
        ),
        "Istio: ingress gateway authorization by client IP uses remoteIpBlocks (the address from X-Forwarded-For with gatewayTopology.numTrustedProxies, or the connection's with externalTrafficPolicy: Local)",
    );
}

/// Whether every LoadBalancer/NodePort Service in front of gateway pods keeps the
/// client's address (`externalTrafficPolicy: Local`).
fn every_gateway_service_keeps_client_address(c: &Ctx) -> bool {
    !c.mesh.ingress_services.is_empty()
        && c.mesh.ingress_services.iter().all(|s| {
            c.fx.objects.iter().any(|o| {
                o.kind == "Service"
                    && o.namespace == s.namespace
                    && o.name == s.name
                    && o.raw
                        .pointer("/spec/externalTrafficPolicy")
                        .and_then(|v| v.as_str())
                        == Some("Local")
            })
        })
}

/// Spellings of `path` that a lenient backend may read as `path` but that Envoy's
/// path handling may leave as they are: the `attack` check's spellings
/// (suite/attack.rs SPELLINGS), so the finding and the check agree: (label and what
/// normalizes it, spelling). None for a path they cannot be made from (not plain).
/// Path parameters (`semicolon`) are left to the attack check: whether `/a;x/b` is
/// `/a/b` is the backend's parsing alone (Tomcat, Spring), which nothing in the
/// fixtures says, and neither a setting nor a prefix closes them.
fn spellings(path: &str) -> Vec<(String, String)> {
    let Ok(variants) = crate::suite::attack::variants(path) else {
        return Vec::new();
    };
    variants
        .into_iter()
        .filter(|v| v.path != path && v.label != "semicolon")
        .filter_map(|v| {
            let s = crate::suite::attack::SPELLINGS
                .iter()
                .find(|s| s.label == v.label)?;
            Some((format!("{}: {}", s.label, s.note), v.path))
        })
        .collect()
}

/// An Envoy uri template (pilot writes `{*}` as `*` and `{**}` as `**`: generate.rs)
/// as the policy writes it, and a request path it matches (each such segment as `x`):
/// the path whose spellings are tried.
fn template_instance(template: &str) -> (String, String) {
    let segments = |star: &str, dstar: &str| {
        template
            .split('/')
            .map(|seg| match seg {
                "*" => star.to_string(),
                "**" => dstar.to_string(),
                _ => seg.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    (segments("{*}", "{**}"), segments("x", "x"))
}

/// The paths the DENY rules of a gateway name (policy, path as written, a request
/// path it denies): exact, the prefix of `p*`, a `{*}` template.
fn denied_paths(plan: &crate::istio::authz::AuthzPlan) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for f in &plan.rbac {
        let Some(rules) = f.rules.as_ref().filter(|r| r.action == rbac::Action::Deny) else {
            continue;
        };
        for (name, policy) in &rules.policies {
            for p in &policy.permissions {
                collect_paths(p, name, &mut out);
            }
        }
    }
    out
}

fn collect_paths(p: &rbac::Permission, policy: &str, out: &mut Vec<(String, String, String)>) {
    match p {
        rbac::Permission::And(v) | rbac::Permission::Or(v) => {
            v.iter().for_each(|x| collect_paths(x, policy, out))
        }
        rbac::Permission::UrlPath(s) => match &s.pattern {
            rbac::Pattern::Exact(x) | rbac::Pattern::Prefix(x) if x.len() > 1 => {
                out.push((policy.to_string(), x.clone(), x.clone()))
            }
            _ => {}
        },
        rbac::Permission::UriTemplate(t) => {
            let (written, path) = template_instance(t);
            out.push((policy.to_string(), written, path))
        }
        _ => {}
    }
}

fn deny_bypasses(c: &mut Ctx) {
    let mut found = Vec::new();
    for gw in &c.mesh.gateways {
        let Some(l) = gw.listeners.first() else {
            continue;
        };
        let Some(svc_port) = c.mesh.ingress_services.iter().find_map(|s| {
            s.ports
                .iter()
                .find(|(_, np, _)| l.node_ports.contains(np))
                .map(|(p, _, _)| *p)
        }) else {
            continue;
        };
        for (policy, written, path) in denied_paths(&gw.authz) {
            found.extend(spellings_past_the_deny(c, svc_port, &path).into_iter().map(
                |(what, spelling, service)| Bypass {
                    policy: policy.clone(),
                    written: written.clone(),
                    path: path.clone(),
                    what,
                    spelling,
                    service,
                },
            ));
        }
    }
    found.sort();
    found.dedup();
    for b in found {
        let (object, at) = policy_source(c, &b.policy);
        c.push(
            ANALYSIS,
            Severity::Warning,
            "MC153",
            None,
            object,
            &at,
            format!(
                "{} denies {}, but {} ({}) is not denied and reaches {}: a lenient backend serves it as {}",
                b.policy, b.written, b.spelling, b.what, b.service, b.path
            ),
            format!(
                "the effective pathNormalization ({:?}) leaves that spelling as it is (the spelling says what setting, if any, normalizes it; suite/attack.rs); Istio's security best practices: normalize paths (MERGE_SLASHES, DECODE_AND_MERGE_SLASHES), match a prefix (`/admin*`), or deny by ALLOW",
                c.fx.path_normalization()
            ),
        );
    }
}

/// A spelling of a denied path that gets past the DENY to a backend.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Bypass {
    /// The Envoy policy name, the path as the rule writes it and the request path
    /// tried.
    policy: String,
    written: String,
    path: String,
    /// The spelling's label and note, the spelling, and the service reached.
    what: String,
    spelling: String,
    service: String,
}

/// The spellings of `path` (which the gateway denies as written) that the simulation
/// lets through to a backend: (what, spelling, service). None when `path` itself is
/// not denied (another rule or the routes decide it).
fn spellings_past_the_deny(c: &Ctx, svc_port: u16, path: &str) -> Vec<(String, String, String)> {
    let denied =
        |p: &crate::istio::Prediction| p.authz.as_ref().is_some_and(|v| v.denied_by.is_some());
    if !denied(&c.mesh.simulate(&probe(svc_port, path))) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (what, spelling) in spellings(path) {
        let p = c.mesh.simulate(&probe(svc_port, &spelling));
        if denied(&p) {
            continue;
        }
        if let Some(b) = p.branches.iter().find_map(|b| b.backend.as_ref()) {
            out.push((what, spelling, b.service.clone()));
        }
    }
    out
}

/// A plain GET of `path` through the ingress on `port`.
fn probe(port: u16, path: &str) -> SimRequest {
    SimRequest {
        service_port: port,
        method: "GET".into(),
        host: "meshcheck.invalid".into(),
        path: path.into(),
        ..Default::default()
    }
}

/// The AuthorizationPolicy an Envoy policy name (`ns[..]-policy[..]-rule[..]`) comes
/// from, and where it is written.
fn policy_source(c: &Ctx, envoy_name: &str) -> (String, crate::fixtures::Source) {
    crate::istio::authz::policy_of(c.fx, envoy_name)
        .map(|p| (p.describe(), p.source.clone()))
        .unwrap_or_else(|| (envoy_name.to_string(), Default::default()))
}

/// Whether some permission of some ALLOW policy of `plan` can match a request for
/// `path` whatever the client (principals are not looked at), or there is no ALLOW
/// filter.
fn allow_can_match(plan: &crate::istio::authz::AuthzPlan, r: &rbac::Request) -> bool {
    let allow: Vec<&rbac::Rules> = plan
        .rbac
        .iter()
        .filter_map(|f| f.rules.as_ref())
        .filter(|r| r.action == rbac::Action::Allow)
        .collect();
    allow.is_empty()
        || allow
            .iter()
            .flat_map(|rules| rules.policies.values())
            .any(|p| p.permissions.iter().any(|perm| could_match(perm, r)))
}

/// Whether `p` can match `r` for some method, host, header or port: only the path is
/// decided.
fn could_match(p: &rbac::Permission, r: &rbac::Request) -> bool {
    use rbac::Permission as P;
    match p {
        P::And(v) => v.iter().all(|x| could_match(x, r)),
        P::Or(v) => v.iter().any(|x| could_match(x, r)),
        P::Not(x) if only_path(x) => !x.matches(r),
        P::Not(_) => true,
        P::UrlPath(_) | P::UriTemplate(_) => p.matches(r),
        _ => true,
    }
}

fn only_path(p: &rbac::Permission) -> bool {
    use rbac::Permission as P;
    match p {
        P::And(v) | P::Or(v) => v.iter().all(only_path),
        P::Not(x) => only_path(x),
        P::UrlPath(_) | P::UriTemplate(_) => true,
        _ => false,
    }
}

fn closed_routes(c: &mut Ctx) {
    let mut found = Vec::new();
    for gw in &c.mesh.gateways {
        for vh in gw
            .listeners
            .iter()
            .flat_map(|l| l.route_configs())
            .flat_map(|rc| rc.vhosts.iter())
        {
            for route in &vh.routes {
                let path = match &route.path {
                    PathMatch::Prefix(p)
                    | PathMatch::Exact(p)
                    | PathMatch::PathSeparatedPrefix(p) => p.clone(),
                    _ => continue,
                };
                let r = rbac::Request {
                    path: path.clone(),
                    method: "GET".into(),
                    ..Default::default()
                };
                if !allow_can_match(&gw.authz, &r) {
                    found.push((
                        route.virtual_service.clone(),
                        route.source.clone(),
                        route.http_index,
                        path,
                    ));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    let mut grouped: std::collections::BTreeMap<_, Vec<String>> = Default::default();
    for (vs, at, i, path) in found {
        grouped.entry((vs, at, i)).or_default().push(path);
    }
    for ((vs, at, i), paths) in grouped {
        let path = paths.join(", ");
        c.push(
            ANALYSIS,
            Severity::Warning,
            "MC154",
            None,
            vs,
            &at,
            format!("http[{i}] ({path}) is closed to every client: ALLOW policies apply to the gateway and none of their operations matches this path"),
            "Istio: when ALLOW policies apply to a workload, a request no ALLOW policy matches is denied (authorization policy precedence: deny by default)",
        );
    }
}
