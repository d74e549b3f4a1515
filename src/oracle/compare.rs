//! Differential checking: the model against istiod's own answer. Every difference is a
//! finding (a bug in meshcheck until shown otherwise), naming the object, its
//! file:line and both answers.
//!
//! Codes: MC401 istiod refuses an object; MC402 a request goes elsewhere; MC403 a
//! gateway route table differs (virtual hosts, domains, route order, match, action,
//! rewrite, weights, timeouts and retries, hash policy); MC404 a cluster differs
//! (existence, TLS, SNI, endpoints, lb_policy, circuit breakers, outlier detection,
//! connect timeout, panic threshold, HTTP protocol options); MC405
//! the gateway listeners differ (names, filter chains, every HttpConnectionManager field
//! the model sets); MC406 (warning, info) what istiod's validation warns
//! about and objects the oracle is not given; MC408 the gateway's security filters
//! (RBAC, whole) differ; MC409 a request's RBAC verdict (denied or allowed, and by
//! which policy) differs from the oracle's evaluation of istiod's filters
//! (compare_authz.rs).

use super::output::{GatewayConfig, Output, RouteTable};
use super::views::{
    model_answer, model_cluster, model_route, oracle_answer, oracle_cluster, oracle_route,
};
use crate::analysis::{sim_request, Finding, Severity};
use crate::fixtures::{Fixtures, Source};
use crate::istio::{GatewayProxy, ListenerProtocol, Mesh};
use crate::suite::Suite;
use std::collections::{BTreeMap, BTreeSet};

/// The `static::` testcase oracle findings belong to.
pub const ANALYSIS: &str = "oracle";

struct Diff<'a> {
    fx: &'a Fixtures,
    mesh: &'a Mesh,
    release: String,
    out: Vec<Finding>,
}

impl Diff<'_> {
    fn source_of(&self, object: &str) -> Source {
        self.fx
            .objects
            .iter()
            .find(|o| o.describe() == object)
            .map(|o| o.source.clone())
            .unwrap_or_default()
    }

    fn push(
        &mut self,
        code: &'static str,
        object: String,
        at: Source,
        message: String,
        istio: String,
    ) {
        self.out.push(Finding {
            analysis: ANALYSIS.into(),
            severity: Severity::Error,
            code,
            istioctl: None,
            object,
            at,
            message,
            istio,
            detail: String::new(),
        });
    }

    /// `field: meshcheck X, istiod Y` lines.
    fn both(&self, diffs: &[(&str, String, String)]) -> (String, String) {
        let m: Vec<String> = diffs.iter().map(|(f, a, _)| format!("{f} {a}")).collect();
        let i: Vec<String> = diffs.iter().map(|(f, _, b)| format!("{f} {b}")).collect();
        (
            format!("meshcheck: {}", m.join("; ")),
            format!("istiod {}: {}", self.release, i.join("; ")),
        )
    }
}

/// Compares the model of `fx` with the oracle's answer `o`.
pub fn compare(fx: &Fixtures, mesh: &Mesh, suite: &Suite, o: &Output) -> Vec<Finding> {
    let mut d = Diff {
        fx,
        mesh,
        release: o.istio.release.clone(),
        out: Vec::new(),
    };
    rejected(&mut d, o);
    warnings(&mut d, o);
    requests(&mut d, suite, o);
    for (object, at, mine, theirs) in super::compare_status::differences(fx, o) {
        d.push(
            "MC407",
            object,
            at,
            format!("meshcheck: {mine}"),
            format!("istiod {}: {theirs}", d.release),
        );
    }
    sidecars(&mut d, o);
    for (gi, gw) in mesh.gateways.iter().enumerate() {
        let pod = &mesh.pods[gw.pod];
        let key = format!("{}/{}", pod.namespace, pod.name);
        match o.gateways.iter().find(|g| g.pod == key) {
            Some(og) => gateway(&mut d, gi, gw, og),
            None => {
                let at = pod.source.clone();
                d.push(
                    "MC405",
                    format!("Pod {key}"),
                    at,
                    "istiod was not asked about this gateway pod".into(),
                    String::new(),
                );
            }
        }
    }
    d.out
}

/// Each sidecar istiod was asked about: the security filters of every HTTP connection
/// manager of its inbound listener against the model's for the pod (none when no
/// policy attaches: authz::sidecar_plan), MC408 at the first chain that differs.
fn sidecars(d: &mut Diff, o: &Output) {
    let none = crate::istio::authz::AuthzPlan::default();
    for sc in &o.sidecars {
        let Some(i) = d
            .mesh
            .pods
            .iter()
            .position(|p| format!("{}/{}", p.namespace, p.name) == sc.pod)
        else {
            continue;
        };
        let plan = d.mesh.sidecar_authz.get(&i).unwrap_or(&none);
        let differs = sc
            .inbound
            .iter()
            .find_map(|h| super::compare_authz::difference(plan, &h.hcm).map(|diff| (h, diff)));
        let Some((h, (mine, istiod))) = differs else {
            continue;
        };
        let pod = &d.mesh.pods[i];
        let at = plan
            .applied
            .first()
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| pod.source.clone());
        let release = d.release.clone();
        d.push(
            "MC408",
            format!("Pod {}", sc.pod),
            at,
            format!(
                "sidecar inbound filter chain {} (port {}): meshcheck: {mine}",
                h.chain, h.port
            ),
            format!("istiod {release}: {istiod}"),
        );
    }
}

/// What istiod's validation warns about, and the fixtures' objects the oracle is not
/// given (kinds istiod's gateway config does not read): said, not counted.
fn warnings(d: &mut Diff, o: &Output) {
    for w in &o.warnings {
        let (kind, ns, name) = split3(&w.object);
        let object = crate::fixtures::describe(kind, ns, name);
        let at = d.source_of(&object);
        d.out.push(Finding {
            analysis: ANALYSIS.into(),
            severity: Severity::Warning,
            code: "MC406",
            istioctl: None,
            object,
            at,
            message: format!("istiod's validation warns: {}", w.reason),
            istio: String::new(),
            detail: String::new(),
        });
    }
    for obj in super::input::not_given(d.fx) {
        d.out.push(Finding {
            analysis: ANALYSIS.into(),
            severity: Severity::Info,
            code: "MC406",
            istioctl: None,
            object: obj.describe(),
            at: obj.source.clone(),
            message: format!(
                "not given to istiod: meshcheck passes Namespaces, Services, ServiceAccounts, the pods of Deployments, Istio objects and Gateway API objects; a {} is not among them",
                obj.kind
            ),
            istio: String::new(),
            detail: String::new(),
        });
    }
}

fn rejected(d: &mut Diff, o: &Output) {
    for r in &o.rejected {
        let (kind, ns, name) = split3(&r.object);
        let object = crate::fixtures::describe(kind, ns, name);
        // meshcheck refuses it too (fixtures/refused.rs, PeerAuthentication::refusals):
        // both leave it out, they agree.
        if d.fx.refused.iter().any(|w| w.object == object) {
            continue;
        }
        let at = d.source_of(&object);
        let message = format!("istiod does not take this object: {}", r.reason);
        d.push(
            "MC401",
            object,
            at,
            message,
            "meshcheck models it as if it were applied".into(),
        );
    }
    // What meshcheck refuses, istiod must refuse too.
    let mut seen = BTreeSet::new();
    for w in &d.fx.refused {
        let Some(obj) = d.fx.objects.iter().find(|x| x.describe() == w.object) else {
            continue;
        };
        let key = format!("{}/{}/{}", obj.kind, obj.namespace, obj.name);
        if !obj.api_version.contains(".istio.io/")
            || o.rejected.iter().any(|r| r.object == key)
            || !seen.insert(key)
        {
            continue;
        }
        d.push(
            "MC401",
            w.object.clone(),
            w.at.clone(),
            format!(
                "meshcheck refuses this object ({}); istiod takes it",
                w.message
            ),
            "meshcheck leaves out an object Istio applies".into(),
        );
    }
}

fn split3(s: &str) -> (&str, &str, &str) {
    let mut p = s.splitn(3, '/');
    (
        p.next().unwrap_or(""),
        p.next().unwrap_or(""),
        p.next().unwrap_or(""),
    )
}

fn requests(d: &mut Diff, suite: &Suite, o: &Output) {
    for (id, req) in suite.checks.iter().flat_map(|c| c.requests()) {
        // istiod's listeners do not depend on the Secrets (SDS delivers them apart),
        // and the oracle is given none: compare as if every credential were served.
        let mut sim = sim_request(req, suite.ingress.port);
        sim.assume_certificates = true;
        sim.skip_authz = true;
        let pred = d.mesh.simulate(&sim);
        let mine = model_answer(&pred);
        let theirs = match o.simulations.iter().find(|s| s.id == id) {
            Some(s) => {
                // What the oracle could not evaluate of the route (its RBAC evaluation's
                // gaps, `authz:`, only keep the verdict from being compared).
                let route_gaps: Vec<&str> = s
                    .unsupported
                    .iter()
                    .map(String::as_str)
                    .filter(|u| !u.starts_with("authz:"))
                    .collect();
                if !route_gaps.is_empty() {
                    let at = d.source_of(&mine.virtual_service);
                    d.push(
                        "MC402",
                        mine.virtual_service.clone(),
                        at,
                        format!(
                            "check {id}: the oracle could not evaluate: {}",
                            route_gaps.join("; ")
                        ),
                        String::new(),
                    );
                }
                oracle_answer(s)
            }
            // The oracle was given no request: no gateway pod behind the port.
            None => super::views::Answer {
                outcome: "no listener".into(),
                virtual_service: String::new(),
                clusters: String::new(),
                path: String::new(),
            },
        };
        // The verdicts: the same request with its security filters.
        let judged = d.mesh.simulate(&crate::istio::SimRequest {
            skip_authz: false,
            ..sim.clone()
        });
        if let Some(s) = o
            .simulations
            .iter()
            .find(|s| s.id == id)
            .filter(|s| !s.unsupported.iter().any(|u| u.starts_with("authz:")))
        {
            authz_verdict(d, &id, req, &judged, s);
        }
        sidecar_verdicts(d, &id, req, &judged, o);
        let diffs = mine.diff(&theirs);
        if diffs.is_empty() {
            continue;
        }
        let object = if mine.virtual_service.is_empty() {
            theirs.virtual_service.clone()
        } else {
            mine.virtual_service.clone()
        };
        let at = pred
            .route
            .as_ref()
            .map(|r| r.source.clone())
            .unwrap_or_else(|| d.source_of(&object));
        let (m, i) = d.both(&diffs);
        let what = format!(
            "check {id} ({} {}): {m}",
            req.method.as_deref().unwrap_or("GET"),
            req.path
        );
        d.push("MC402", object, at, what, i);
    }
}

/// The request's RBAC verdict, the model's (`pred`: simulated with its security
/// filters) against the oracle's evaluation of istiod's filters (MC409).
fn authz_verdict(
    d: &mut Diff,
    id: &str,
    req: &crate::suite::RequestSpec,
    pred: &crate::istio::Prediction,
    s: &super::output::SimResult,
) {
    let jwt_refused = pred
        .authz
        .as_ref()
        .is_some_and(|v| v.denied_by == Some(crate::istio::authz::DeniedBy::Jwt))
        || s.authz.as_ref().is_some_and(|a| a.denied_by == "jwt");
    if jwt_refused && fetches_jwks(d.fx) {
        // istiod fetches a jwksUri when it generates (jwks_resolver.go); the oracle
        // runs without network and inlines its fail-closed JWKS, meshcheck Istio's
        // sample JWKS or a fail-closed one: what a token gets there is not istiod's
        // answer on a cluster (MC408 compares these providers without their keys).
        return;
    }
    let Some((mine, theirs)) =
        super::compare_authz::verdict_difference(pred.authz.as_ref(), s.authz.as_ref())
    else {
        return;
    };
    let policy = pred
        .authz
        .as_ref()
        .and_then(|v| v.policy.clone())
        .or_else(|| s.authz.as_ref().map(|a| a.policy.clone()));
    let what = format!(
        "check {id} ({} {})",
        req.method.as_deref().unwrap_or("GET"),
        req.path
    );
    push_verdict(d, policy, format!("check {id}"), &what, &mine, &theirs);
}

/// MC409 on the AuthorizationPolicy the deciding Envoy `policy` comes from (else
/// `fallback`), saying `what` was judged and both verdicts.
fn push_verdict(
    d: &mut Diff,
    policy: Option<String>,
    fallback: String,
    what: &str,
    mine: &str,
    theirs: &str,
) {
    let (object, at) = crate::istio::authz::policy_of(d.fx, &policy.unwrap_or_default())
        .map(|p| (p.describe(), p.source.clone()))
        .unwrap_or_else(|| (fallback, Default::default()));
    let release = d.release.clone();
    d.push(
        "MC409",
        object,
        at,
        format!("{what}: meshcheck: {mine}"),
        format!("istiod {release}: {theirs}"),
    );
}

/// Each hop of the request to a sidecar with security filters (`pred`: simulated
/// with its security filters): the model's verdict against the oracle's evaluation
/// of istiod's inbound filters on the same hop (MC409, naming the pod).
fn sidecar_verdicts(
    d: &mut Diff,
    id: &str,
    req: &crate::suite::RequestSpec,
    pred: &crate::istio::Prediction,
    o: &Output,
) {
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let outcomes = pred.outcomes();
    for hop in outcomes.iter().flat_map(|b| b.sidecar_hops.iter()) {
        if !done.insert(hop.pod) {
            continue;
        }
        let p = &d.mesh.pods[hop.pod];
        let pod = format!("{}/{}", p.namespace, p.name);
        let hop_id = super::input::sidecar_request_id(id, &pod);
        let Some(v) = o.sidecar_verdicts.iter().find(|v| v.id == hop_id) else {
            continue;
        };
        if v.unsupported.iter().any(|u| u.starts_with("authz:")) {
            continue;
        }
        let diff = if v.error.is_empty() {
            super::compare_authz::verdict_difference(Some(&hop.verdict), v.authz.as_ref())
        } else {
            Some((
                super::compare_authz::verdict_words(&hop.verdict),
                format!("the sidecar takes no such connection ({})", v.error),
            ))
        };
        let Some((mine, theirs)) = diff else {
            continue;
        };
        let policy = hop
            .verdict
            .policy
            .clone()
            .or_else(|| v.authz.as_ref().map(|a| a.policy.clone()));
        let what = format!(
            "check {id} ({} {}) at the sidecar of pod {pod} port {} ({})",
            req.method.as_deref().unwrap_or("GET"),
            req.path,
            hop.port,
            if hop.mtls { "mTLS" } else { "plaintext" }
        );
        push_verdict(d, policy, format!("Pod {pod}"), &what, &mine, &theirs);
    }
}

/// Whether a RequestAuthentication of `fx` has a rule whose keys istiod fetches
/// (`jwksUri` without `jwks`).
fn fetches_jwks(fx: &crate::fixtures::Fixtures) -> bool {
    fx.request_authentications
        .iter()
        .flat_map(|r| r.spec.spec.jwt_rules.iter())
        .any(|j| !j.jwks_uri.is_empty() && j.jwks.is_empty())
}

fn gateway(d: &mut Diff, gi: usize, gw: &GatewayProxy, og: &GatewayConfig) {
    let pod = &d.mesh.pods[gw.pod];
    let pod_name = format!("Pod {}/{}", pod.namespace, pod.name);
    listeners(d, gi, gw, og, &pod_name);
    let mut routed_clusters = BTreeSet::new();
    for (l, rcp) in gw
        .listeners
        .iter()
        .flat_map(|l| l.route_configs().map(move |rc| (l, rc)))
    {
        if !matches!(l.protocol, ListenerProtocol::Http | ListenerProtocol::Https) {
            continue;
        }
        let Some(table) = og.route_tables.iter().find(|t| t.name == rcp.name) else {
            let names: Vec<&str> = og.route_tables.iter().map(|t| t.name.as_str()).collect();
            let at = first_gateway_source(d, gi);
            d.push(
                "MC403",
                pod_name.clone(),
                at,
                format!(
                    "meshcheck: route configuration {} on listener {}",
                    rcp.name, l.name
                ),
                format!(
                    "istiod {}: route configurations [{}]",
                    d.release,
                    names.join(", ")
                ),
            );
            continue;
        };
        route_table(d, gi, rcp, table, &mut routed_clusters);
    }
    for t in &og.route_tables {
        if !gw
            .listeners
            .iter()
            .any(|l| l.route_configs().any(|rc| rc.name == t.name))
        {
            let at = first_gateway_source(d, gi);
            d.push(
                "MC403",
                pod_name.clone(),
                at,
                format!("meshcheck: no route configuration {}", t.name),
                format!(
                    "istiod {}: route configuration {} with virtual hosts [{}]",
                    d.release,
                    t.name,
                    t.virtual_hosts
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    clusters(d, og, &routed_clusters);
}

/// The Gateway object whose servers the gateway pod serves (the first one selecting it).
fn first_gateway_source(d: &Diff, gi: usize) -> Source {
    let pod = &d.mesh.pods[d.mesh.gateways[gi].pod];
    d.fx.gateways
        .iter()
        .find(|g| d.fx.gateway_selects(g, &pod.namespace, &pod.labels))
        .map(|g| g.source.clone())
        .unwrap_or_else(|| pod.source.clone())
}

/// The filter chains of listener `name` as `SNI [..] cert <sds name> rds <route>`
/// lines, sorted: the model's.
fn model_chains(l: &crate::istio::ListenerPlan) -> BTreeSet<String> {
    l.chains
        .iter()
        .map(|c| {
            chain_view(
                &c.server_names,
                c.tls.as_ref().map(|t| t.sds_name.as_str()).into_iter(),
                &c.route_config.name,
            )
        })
        .collect()
}

/// The same view of istiod's listener JSON (filter_chain_match.server_names, the
/// DownstreamTlsContext's SDS certificate names, the HCM's RDS name); chains without
/// an HTTP connection manager (TCP, passthrough) are left out, as the model has none.
fn oracle_chains(l: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in l
        .get("filter_chains")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let rds = c
            .get("filters")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .find_map(|f| f.pointer("/typed_config/rds/route_config_name"))
            .and_then(|n| n.as_str());
        let Some(rds) = rds else { continue };
        let names: Vec<String> = c
            .pointer("/filter_chain_match/server_names")
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        let certs = c
            .pointer("/transport_socket/typed_config/common_tls_context/tls_certificate_sds_secret_configs")
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
            .filter_map(|n| n.get("name").and_then(|x| x.as_str()));
        out.insert(chain_view(&names, certs, rds));
    }
    out
}

fn chain_view<'a>(names: &[String], certs: impl Iterator<Item = &'a str>, rds: &str) -> String {
    let mut names = names.to_vec();
    names.sort();
    let certs: Vec<&str> = certs.collect();
    format!(
        "SNI [{}] cert [{}] rds {rds}",
        names.join(", "),
        certs.join(", ")
    )
}

/// Per listener both have: the filter chains (SNI, certificate, route configuration).
fn filter_chains(d: &mut Diff, gi: usize, gw: &GatewayProxy, og: &GatewayConfig, pod_name: &str) {
    for l in &gw.listeners {
        if !matches!(l.protocol, ListenerProtocol::Http | ListenerProtocol::Https) {
            continue;
        }
        let Some(ol) = og
            .listeners
            .iter()
            .find(|o| o.get("name").and_then(|n| n.as_str()) == Some(l.name.as_str()))
        else {
            continue; // reported with the listener names
        };
        let (mine, theirs) = (model_chains(l), oracle_chains(ol));
        if mine == theirs {
            continue;
        }
        let at = l
            .chains
            .iter()
            .find_map(|c| c.tls.as_ref().map(|t| t.source.clone()))
            .unwrap_or_else(|| first_gateway_source(d, gi));
        let join = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join("; ");
        d.push(
            "MC405",
            pod_name.to_string(),
            at,
            format!(
                "meshcheck: listener {} filter chains {}",
                l.name,
                join(mine)
            ),
            format!("istiod {}: filter chains {}", d.release, join(theirs)),
        );
    }
}

/// istiod's HttpConnectionManager of the filter chain routing with `rds`, on the
/// listener named `listener`.
fn oracle_hcm<'a>(
    og: &'a GatewayConfig,
    listener: &str,
    rds: &str,
) -> Option<&'a serde_json::Value> {
    og.listeners
        .iter()
        .filter(|l| l.get("name").and_then(|n| n.as_str()) == Some(listener))
        .flat_map(|l| {
            l.get("filter_chains")
                .and_then(|c| c.as_array())
                .into_iter()
                .flatten()
        })
        .flat_map(|c| {
            c.get("filters")
                .and_then(|f| f.as_array())
                .into_iter()
                .flatten()
        })
        .filter_map(|f| f.get("typed_config"))
        .find(|tc| {
            tc.pointer("/rds/route_config_name")
                .and_then(|n| n.as_str())
                == Some(rds)
        })
}

/// Per filter chain both have: every HttpConnectionManager field the model sets
/// (HcmPlan) against istiod's value of it.
fn connection_managers(
    d: &mut Diff,
    gi: usize,
    gw: &GatewayProxy,
    og: &GatewayConfig,
    pod_name: &str,
) {
    for l in &gw.listeners {
        for c in &l.chains {
            let Some(theirs) = oracle_hcm(og, &l.name, &c.route_config.name) else {
                continue; // reported with the filter chains
            };
            if let Some((mine, istiod)) = super::compare_authz::difference(&gw.authz, theirs) {
                let at = gw
                    .authz
                    .applied
                    .first()
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| first_gateway_source(d, gi));
                let release = d.release.clone();
                d.push(
                    "MC408",
                    pod_name.to_string(),
                    at,
                    format!(
                        "listener {} route configuration {}: meshcheck: {mine}",
                        l.name, c.route_config.name
                    ),
                    format!("istiod {release}: {istiod}"),
                );
            }
            let diffs = super::fields::differing(&c.hcm.envoy_fields(), Some(theirs));
            if diffs.is_empty() {
                continue;
            }
            let at = c
                .tls
                .as_ref()
                .map(|t| t.source.clone())
                .unwrap_or_else(|| first_gateway_source(d, gi));
            let diffs: Vec<(&str, String, String)> = diffs
                .iter()
                .map(|(f, m, t)| (f.as_str(), m.clone(), t.clone()))
                .collect();
            let (m, i) = d.both(&diffs);
            d.push(
                "MC405",
                pod_name.to_string(),
                at,
                format!(
                    "listener {} route configuration {}: HttpConnectionManager {m}",
                    l.name, c.route_config.name
                ),
                i,
            );
        }
    }
}

fn listeners(d: &mut Diff, gi: usize, gw: &GatewayProxy, og: &GatewayConfig, pod_name: &str) {
    filter_chains(d, gi, gw, og, pod_name);
    connection_managers(d, gi, gw, og, pod_name);
    let mine: BTreeSet<String> = gw.listeners.iter().map(|l| l.name.clone()).collect();
    let theirs: BTreeSet<String> = og
        .listeners
        .iter()
        .filter_map(|l| l.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect();
    if mine != theirs {
        let at = first_gateway_source(d, gi);
        d.push(
            "MC405",
            pod_name.to_string(),
            at,
            format!(
                "meshcheck: listeners [{}]",
                mine.into_iter().collect::<Vec<_>>().join(", ")
            ),
            format!(
                "istiod {}: listeners [{}]",
                d.release,
                theirs.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

fn route_table(
    d: &mut Diff,
    gi: usize,
    rcp: &crate::istio::RouteConfigPlan,
    table: &RouteTable,
    routed: &mut BTreeSet<String>,
) {
    let theirs: BTreeMap<&str, &super::output::VirtualHost> = table
        .virtual_hosts
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mine: BTreeMap<&str, &crate::istio::VHostPlan> =
        rcp.vhosts.iter().map(|v| (v.name.as_str(), v)).collect();
    let gw_at = first_gateway_source(d, gi);
    let rc = &table.name;
    for (name, mv) in &mine {
        for r in &mv.routes {
            for dest in &r.destinations {
                routed.insert(dest.cluster.clone());
            }
        }
        let Some(tv) = theirs.get(name) else {
            let names: Vec<&str> = theirs.keys().copied().collect();
            let at = mv
                .routes
                .first()
                .map(|r| r.source.clone())
                .unwrap_or_else(|| gw_at.clone());
            let object = mv
                .routes
                .first()
                .map(|r| r.virtual_service.clone())
                .unwrap_or_else(|| "Gateway".into());
            d.push(
                "MC403",
                object,
                at,
                format!(
                    "{rc}: meshcheck: virtual host {name} (domains {})",
                    mv.domains.join(", ")
                ),
                format!("istiod {}: virtual hosts [{}]", d.release, names.join(", ")),
            );
            continue;
        };
        let mut md = mv.domains.clone();
        let mut td = tv.domains.clone();
        md.sort();
        td.sort();
        if md != td {
            d.push(
                "MC403",
                "Gateway".into(),
                gw_at.clone(),
                format!(
                    "{rc} virtual host {name}: meshcheck: domains [{}]",
                    md.join(", ")
                ),
                format!("istiod {}: domains [{}]", d.release, td.join(", ")),
            );
        }
        let mine_tls = if mv.require_tls { "ALL" } else { "NONE" };
        let theirs_tls = if tv.require_tls.is_empty() {
            "NONE"
        } else {
            tv.require_tls.as_str()
        };
        if mine_tls != theirs_tls {
            d.push(
                "MC403",
                "Gateway".into(),
                gw_at.clone(),
                format!("{rc} virtual host {name}: meshcheck: require_tls {mine_tls}"),
                format!("istiod {}: require_tls {theirs_tls}", d.release),
            );
        }
        // pilot gateway.go buildGatewayVirtualHosts: ProxyHeaders'
        // IncludeRequestAttemptCount (meshConfig default true) on every virtual host but
        // the route-less blackhole one.
        let mine_count = mv.attempt_count;
        if mine_count != tv.include_request_attempt_count {
            d.push(
                "MC403",
                "Gateway".into(),
                gw_at.clone(),
                format!(
                    "{rc} virtual host {name}: meshcheck: include_request_attempt_count {mine_count}"
                ),
                format!(
                    "istiod {}: include_request_attempt_count {}",
                    d.release, tv.include_request_attempt_count
                ),
            );
        }
        routes(d, rc, name, mv, tv);
    }
    for (name, tv) in &theirs {
        if !mine.contains_key(name) {
            let object = tv
                .routes
                .first()
                .and_then(|r| r.virtual_service())
                .unwrap_or_else(|| "Gateway".into());
            let at = d.source_of(&object);
            let at = if at == Source::default() {
                gw_at.clone()
            } else {
                at
            };
            d.push(
                "MC403",
                object,
                at,
                format!("{rc}: meshcheck: no virtual host {name}"),
                format!(
                    "istiod {}: virtual host {name} (domains {}) with {} route(s)",
                    d.release,
                    tv.domains.join(", "),
                    tv.routes.len()
                ),
            );
        }
    }
}

fn routes(
    d: &mut Diff,
    rc: &str,
    vh: &str,
    mv: &crate::istio::VHostPlan,
    tv: &super::output::VirtualHost,
) {
    // The lists are aligned on their longest common subsequence first, so one extra or
    // missing route shows as that route alone; routes between two aligned ones are
    // compared pairwise, field by field.
    let mine: Vec<_> = mv.routes.iter().map(model_route).collect();
    let theirs: Vec<_> = tv.routes.iter().map(oracle_route).collect();
    let (mut i, mut j) = (0, 0);
    for (ai, aj) in lcs(&mine, &theirs)
        .into_iter()
        .chain([(mine.len(), theirs.len())])
    {
        // The unaligned runs mine[i..ai] and theirs[j..aj].
        let pairs = (ai - i).min(aj - j);
        for k in 0..pairs {
            let m = &mv.routes[i + k];
            let diffs = mine[i + k].diff(&theirs[j + k]);
            let (ms, is) = d.both(&diffs);
            d.push(
                "MC403",
                m.virtual_service.clone(),
                m.source.clone(),
                format!("{rc} {vh} route {} (http[{}]): {ms}", i + k, m.http_index),
                is,
            );
        }
        for (k, m) in mv.routes.iter().enumerate().take(ai).skip(i + pairs) {
            d.push(
                "MC403",
                m.virtual_service.clone(),
                m.source.clone(),
                format!("{rc} {vh} route {k}: meshcheck: {}", mine[k]),
                format!("istiod {}: no such route", d.release),
            );
        }
        for (k, t) in theirs.iter().enumerate().take(aj).skip(j + pairs) {
            let at = d.source_of(&t.virtual_service);
            d.push(
                "MC403",
                t.virtual_service.clone(),
                at,
                format!("{rc} {vh} route {k}: meshcheck: no such route"),
                format!("istiod {}: {t}", d.release),
            );
        }
        if let (Some(m), Some(t)) = (mv.routes.get(ai), tv.routes.get(aj)) {
            route_fields(d, &format!("{rc} {vh} route {ai}"), m, &t.envoy);
        }
        (i, j) = (ai + 1, aj + 1);
    }
}

/// Every field of the Envoy route the model writes (what the local target serves)
/// against istiod's route, for two routes whose views agree: what the views leave out
/// (the route's name, decorator, retry host selection, ...) differs nowhere either.
fn route_fields(d: &mut Diff, what: &str, m: &crate::istio::RoutePlan, theirs: &serde_json::Value) {
    let serde_json::Value::Object(mine) = crate::targets::local::envoy_route(m) else {
        return;
    };
    let diffs = super::fields::differing(&mine, Some(theirs));
    if diffs.is_empty() {
        return;
    }
    let diffs: Vec<(&str, String, String)> = diffs
        .iter()
        .map(|(f, a, b)| (f.as_str(), a.clone(), b.clone()))
        .collect();
    let (ms, is) = d.both(&diffs);
    d.push(
        "MC403",
        m.virtual_service.clone(),
        m.source.clone(),
        format!("{what} (http[{}]): Envoy route {ms}", m.http_index),
        is,
    );
}

/// Index pairs of a longest common subsequence of `a` and `b`.
fn lcs<T: PartialEq>(a: &[T], b: &[T]) -> Vec<(usize, usize)> {
    let mut len = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            len[i][j] = if a[i] == b[j] {
                len[i + 1][j + 1] + 1
            } else {
                len[i + 1][j].max(len[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push((i, j));
            i += 1;
            j += 1;
        } else if len[i + 1][j] >= len[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Every traffic-policy field the model writes on cluster `name` (what the local
/// target serves) against istiod's cluster; endpoints and TLS are compared by the
/// cluster view (the local target delivers them statically and from files).
fn cluster_fields(
    mesh: &Mesh,
    name: &str,
    theirs: &serde_json::Value,
) -> Vec<(String, String, String)> {
    let Some(c) = mesh.clusters.get(name) else {
        return Vec::new();
    };
    let mut mine = serde_json::json!({});
    crate::targets::local::envoy_cluster_policy(&mut mine, &c.policy);
    match mine {
        serde_json::Value::Object(m) => super::fields::differing(&m, Some(theirs)),
        _ => Vec::new(),
    }
}

fn clusters(d: &mut Diff, og: &GatewayConfig, routed: &BTreeSet<String>) {
    for name in routed {
        let theirs = og.cluster_summary.iter().find(|c| &c.cluster == name);
        let mine = model_cluster(d.mesh, name);
        let object = match crate::istio::parse_cluster_name(name) {
            Some((_, Some(_), fqdn)) | Some((_, None, fqdn)) => {
                d.fx.destination_rules
                    .iter()
                    .find(|r| crate::istio::resolve_host(&r.spec.spec.host, &r.namespace) == fqdn)
                    .map(|r| r.describe())
                    .unwrap_or_else(|| format!("cluster {name}"))
            }
            None => format!("cluster {name}"),
        };
        let at = d.source_of(&object);
        match (mine, theirs) {
            (Some(m), Some(t)) => {
                let envoy = og
                    .clusters
                    .iter()
                    .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(name))
                    .cloned()
                    .unwrap_or_default();
                let mut diffs = m.diff(&oracle_cluster(d.mesh, t, &envoy));
                let fields = cluster_fields(d.mesh, name, &envoy);
                diffs.extend(
                    fields
                        .iter()
                        .map(|(f, a, b)| (f.as_str(), a.clone(), b.clone())),
                );
                if !diffs.is_empty() {
                    let (ms, is) = d.both(&diffs);
                    d.push("MC404", object, at, format!("cluster {name}: {ms}"), is);
                }
            }
            (Some(_), None) => d.push(
                "MC404",
                object,
                at,
                format!("meshcheck: cluster {name} exists"),
                format!(
                    "istiod {}: no cluster {name} (requests routed to it get 503 NC)",
                    d.release
                ),
            ),
            (None, Some(_)) => d.push(
                "MC404",
                object,
                at,
                format!("meshcheck: no cluster {name}"),
                format!("istiod {}: cluster {name} exists", d.release),
            ),
            (None, None) => {}
        }
    }
}
