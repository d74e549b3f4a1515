//! The upstream half of a simulated request: the cluster a route sends it to, the
//! endpoints the cluster's load balancer picks from after the steps' ejections, the
//! TLS of each hop (peer_auth.rs), what each reached pod's sidecar makes of the
//! request (authz::sidecar_plan), and who answers with which share.

use super::ejection::{Ejections, Pick};
use super::headers::{self, Headers, PredictedResponse};
use super::mesh::{ClusterPlan, EndpointPlan, Mesh, UpstreamTls};
use super::normalize::normalize;
use super::peer_auth::Hop;
use super::pods::{PodPlan, PodRole};
use super::simulate::{split_query, Backend, Branch, SidecarHop, HANDSHAKE_FAILS};
use std::collections::{BTreeMap, BTreeSet};

/// The words of a branch a pod's sidecar answers itself (its security filters
/// refuse the request).
const SIDECAR_ANSWERS: &str = "its sidecar answers";

/// The gateway a request goes through, as the pods' sidecars see it, and the
/// steps' ejections its load balancers start from.
pub(super) struct FromGateway<'a> {
    /// Index into [`Mesh::pods`].
    pub pod: usize,
    /// The mesh's path normalization (every connection manager, gateway or sidecar
    /// inbound, has it: listener_builder.go buildHTTPConnectionManager).
    pub normalization: super::normalize::PathNormalization,
    /// The client's address as the gateway's connection has it.
    pub client: std::net::IpAddr,
    pub node_port: u16,
    pub ejections: Option<&'a Ejections>,
}

/// What a pod's sidecar receives from the gateway, beyond path and headers.
pub(super) struct Inbound<'a> {
    pub from: &'a FromGateway<'a>,
    pub method: &'a str,
    pub authority: String,
}

/// One request on its way to cluster `cluster` (the route's name for it):
/// `forwarded` is the `:path` Envoy sends, query included, `headers` the headers after
/// the route's operations.
struct Outbound<'a> {
    cluster: &'a str,
    forwarded: &'a str,
    headers: Headers,
    /// What the pods' sidecars receive besides (None: nothing of the answer is
    /// looked at, a mirror's copies).
    inbound: Option<&'a Inbound<'a>>,
}

/// One refusal by the sidecars of a cluster's endpoints.
#[derive(PartialEq)]
struct SidecarAnswer {
    status: u16,
    verdict: super::authz::Verdict,
    mtls: bool,
}

/// What a sidecar that let the request through did with it.
struct SidecarPass {
    /// The headers the app sees (the JWT filter's changes).
    headers: Headers,
    /// Its decision, with the pod, for the decision path.
    words: String,
    verdict: super::authz::Verdict,
}

/// The hops from the gateway to the picked endpoints.
struct Hops<'a> {
    /// The endpoints reached, over mTLS or not.
    reached: Vec<(&'a EndpointPlan, bool)>,
    /// Why each of the others' hop fails (the gateway's own 503).
    failing: Vec<String>,
}

/// What the sidecars of the reached endpoints decided.
#[derive(Default)]
struct SidecarScreen {
    /// Refusals, one per distinct answer, with the pods that give it.
    denied: Vec<(SidecarAnswer, Vec<String>)>,
    /// The pods (index into [`Mesh::pods`]) whose sidecar let the request through.
    passed: BTreeMap<usize, SidecarPass>,
    /// Every hop to a sidecar with security filters.
    hops: Vec<SidecarHop>,
}

impl SidecarScreen {
    fn refused(&self) -> usize {
        self.denied.iter().map(|(_, pods)| pods.len()).sum()
    }

    fn refuse(&mut self, answer: SidecarAnswer, pod: &str) {
        match self.denied.iter_mut().find(|(k, _)| *k == answer) {
            Some((_, pods)) => pods.push(pod.to_string()),
            None => self.denied.push((answer, vec![pod.to_string()])),
        }
    }
}

/// How a cluster's endpoints divide the request, for every branch's share and words.
struct Tally<'a> {
    name: &'a str,
    /// The TLS the gateway originates toward the endpoints, in words, and whether
    /// every reached endpoint takes it as mTLS.
    tls: &'static str,
    mtls: bool,
    /// The route's share of the request for this cluster.
    share: f64,
    /// The cluster's endpoints, and those that answer in some way (not ejected).
    total: usize,
    answering: usize,
    ejected: usize,
}

impl Tally<'_> {
    fn share_of(&self, n: usize) -> f64 {
        self.share * n as f64 / self.answering.max(1) as f64
    }
}

impl Mesh {
    /// The branches of one destination: a failure, or one branch per backend (service,
    /// version) among the cluster's endpoints, each with its share of the endpoints
    /// (Envoy balances over every endpoint of the cluster, whatever the pods' versions:
    /// a destination without subset reaches every version). `forwarded` is the
    /// `:path` Envoy sends, query included; `inbound`, what the pods' sidecars receive
    /// besides (None: nothing of the answer is looked at, a mirror's copies).
    pub(super) fn cluster_branches(
        &self,
        name: &str,
        share: f64,
        forwarded: &str,
        headers: Headers,
        not_found: u16,
        inbound: Option<&Inbound>,
    ) -> Vec<Branch> {
        let base = unanswered(name, share);
        let c = match self.usable_cluster(name, not_found) {
            Ok(c) => c,
            Err((status, reason)) => {
                return vec![Branch {
                    status: Some(status),
                    reason,
                    ..base
                }]
            }
        };
        // The steps' ejections come with the request the gateway sends (none for a
        // mirror's copies).
        let ejections = inbound.and_then(|i| i.from.ejections);
        let picked = match self.picked_endpoints(name, c, ejections) {
            Ok(picked) => picked,
            Err(reason) => return vec![Branch { reason, ..base }],
        };
        let mut hops = self.hops(c, picked);
        if hops.reached.is_empty() && !hops.failing.is_empty() {
            return vec![Branch {
                reason: every_hop_fails(&hops.failing),
                ..base
            }];
        }
        let out = Outbound {
            cluster: name,
            forwarded,
            headers,
            inbound,
        };
        let screen = self.screen_by_sidecars(&out, c, &mut hops.reached);
        self.answers(c, &out, &base, hops, screen, ejections.is_some())
    }

    /// The cluster named `name`, or the status and words of Envoy's answer without it.
    fn usable_cluster(&self, name: &str, not_found: u16) -> Result<&ClusterPlan, (u16, String)> {
        let Some(c) = self.clusters.get(name) else {
            let why = match super::mesh::parse_cluster_name(name) {
                Some((_, Some(subset), fqdn)) => {
                    format!("no DestinationRule defines subset {subset} of {fqdn}")
                }
                _ => "no such cluster".into(),
            };
            // Envoy answers cluster_not_found_response_code (503 unless the route says
            // otherwise: 500 under Gateway API semantics).
            return Err((
                not_found,
                format!("cluster {name}: {why}: {not_found} (NC)"),
            ));
        };
        if c.endpoints.is_empty() {
            return Err((
                503,
                format!(
                    "cluster {name}: {}: 503 no healthy upstream (UH)",
                    no_endpoint_reason(self, c)
                ),
            ));
        }
        Ok(c)
    }

    /// The endpoints the load balancer chooses from after the steps' ejections, or
    /// why none is left.
    fn picked_endpoints<'a>(
        &self,
        name: &str,
        c: &'a ClusterPlan,
        ejections: Option<&'a Ejections>,
    ) -> Result<Vec<&'a EndpointPlan>, String> {
        match ejections.map(|e| e.pick(c)) {
            None => Ok(c.endpoints.iter().collect()),
            Some(Pick::Endpoints(v)) => Ok(v),
            Some(Pick::NoHealthy(pods)) => {
                let names: Vec<&str> = pods.iter().map(|i| self.pods[*i].name.as_str()).collect();
                Err(format!(
                    "cluster {name}: every endpoint ({}) ejected by outlier detection, no panic mode (minHealthPercent 0): 503 no healthy upstream (UH)",
                    names.join(", ")
                ))
            }
        }
    }

    /// TLS toward each endpoint: what the gateway sends against what the pod's
    /// sidecar takes at that port (peer_auth.rs).
    fn hops<'a>(&self, c: &ClusterPlan, picked: Vec<&'a EndpointPlan>) -> Hops<'a> {
        let mut hops = Hops {
            reached: Vec::new(),
            failing: Vec::new(),
        };
        for e in picked {
            match super::peer_auth::hop(self, c, e) {
                Hop::Fails(why) => hops.failing.push(why),
                Hop::Mtls => hops.reached.push((e, true)),
                Hop::Plaintext => hops.reached.push((e, false)),
            }
        }
        hops
    }

    /// Each reached pod's sidecar runs its own security filters on the request as
    /// the gateway sends it (authz::sidecar_plan): a refusal is the sidecar's answer
    /// (the pod leaves `reached`); a pass may change the headers the app sees (the
    /// JWT filter).
    fn screen_by_sidecars(
        &self,
        out: &Outbound,
        c: &ClusterPlan,
        reached: &mut Vec<(&EndpointPlan, bool)>,
    ) -> SidecarScreen {
        let mut screen = SidecarScreen::default();
        let Some(inbound) = out.inbound else {
            return screen;
        };
        reached.retain(|(e, mtls)| {
            let Some(plan) = self.sidecar_authz.get(&e.pod) else {
                return true;
            };
            let r = self.sidecar_request(inbound, c, e, *mtls, out.forwarded, &out.headers);
            let Some(o) = plan.outcome(&r) else {
                return true;
            };
            let hop = sidecar_hop(inbound, e, &r, out.forwarded, &out.headers, &o.verdict);
            screen.hops.push(hop);
            let pod = &self.pods[e.pod];
            match o.status {
                Some(status) => {
                    let answer = SidecarAnswer {
                        status,
                        verdict: o.verdict,
                        mtls: *mtls,
                    };
                    screen.refuse(answer, &pod.name);
                    false
                }
                None => {
                    let who = format!(
                        "the sidecar of pod {}/{} port {}",
                        pod.namespace, pod.name, e.port
                    );
                    let pass = SidecarPass {
                        headers: o.headers,
                        words: format!("{who}: {}", o.verdict.why),
                        verdict: o.verdict,
                    };
                    screen.passed.insert(e.pod, pass);
                    true
                }
            }
        });
        screen
    }

    /// The endpoints grouped by who answers (service, version, namespace), in
    /// endpoint order, with their counts.
    fn backend_groups<'a>(
        &self,
        endpoints: impl Iterator<Item = &'a EndpointPlan>,
    ) -> Vec<(Backend, usize)> {
        let mut groups: Vec<(Backend, usize)> = Vec::new();
        for e in endpoints {
            let p = &self.pods[e.pod];
            let who = Backend {
                service: p.env_value("SERVICE_NAME").unwrap_or_default(),
                version: p.env_value("VERSION").unwrap_or_default(),
                namespace: p
                    .env_value("NAMESPACE")
                    .unwrap_or_else(|| p.namespace.clone()),
                pods: Vec::new(),
            };
            let same = |b: &Backend| {
                (&b.service, &b.version, &b.namespace)
                    == (&who.service, &who.version, &who.namespace)
            };
            let i = match groups.iter().position(|(b, _)| same(b)) {
                Some(i) => i,
                None => {
                    groups.push((who, 0));
                    groups.len() - 1
                }
            };
            groups[i].0.pods.push(p.name.clone());
            groups[i].1 += 1;
        }
        groups
    }

    /// The branches once the hops and the sidecars are known: the apps that answer
    /// (outlier detection's steady state applied unless the steps eject), the
    /// sidecars' refusals, and the hops that fail.
    fn answers(
        &self,
        c: &ClusterPlan,
        out: &Outbound,
        base: &Branch,
        hops: Hops,
        screen: SidecarScreen,
        steps_eject: bool,
    ) -> Vec<Branch> {
        let Hops { reached, failing } = hops;
        let (_, query) = split_query(out.forwarded);
        let status_of = |b: &Backend| stub_status(&out.headers, query, &b.version);
        let groups = self.backend_groups(reached.iter().map(|(e, _)| *e));
        let answered: BTreeSet<u16> = groups.iter().map(|(b, _)| status_of(b)).collect();
        let groups = if steps_eject {
            groups
        } else {
            outlier_survivors(c, groups, status_of)
        };
        let refused = screen.refused();
        if groups.is_empty() && refused == 0 {
            let answered: Vec<String> = answered.iter().map(u16::to_string).collect();
            return vec![Branch {
                reason: format!(
                    "cluster {}: every endpoint answers {} and is ejected by outlier detection, no panic mode (minHealthPercent 0): 503 no healthy upstream (UH)",
                    out.cluster,
                    answered.join("/")
                ),
                ..base.clone()
            }];
        }
        let total = c.endpoints.len();
        let total_left: usize = groups.iter().map(|(_, n)| n).sum();
        let tally = Tally {
            name: out.cluster,
            tls: tls_words(c),
            mtls: reached.iter().all(|(_, m)| *m),
            share: base.share,
            total,
            answering: total_left + failing.len() + refused,
            ejected: total - total_left - failing.len() - refused,
        };
        let refusals = self.refusal_branches(&tally, base, &screen);
        let failed = failed_branch(&tally, base, &failing);
        groups
            .into_iter()
            .map(|(backend, n)| self.app_branch(&tally, base, out, &screen, backend, n))
            .chain(refusals)
            .chain(failed)
            .collect()
    }

    /// The branch of the `n` endpoints of `backend` whose app answers.
    fn app_branch(
        &self,
        tally: &Tally,
        base: &Branch,
        out: &Outbound,
        screen: &SidecarScreen,
        backend: Backend,
        n: usize,
    ) -> Branch {
        let (path, query) = split_query(out.forwarded);
        // The headers the app sees and the sidecar's verdict (the pods of one
        // backend share their policies; the first one's stands for them).
        let by_sidecar = screen
            .passed
            .iter()
            .find(|(i, _)| backend.pods.first() == Some(&self.pods[**i].name))
            .map(|(_, v)| v);
        let headers_seen = by_sidecar.map_or(&out.headers, |p| &p.headers).clone();
        let sidecar = by_sidecar
            .map(|p| format!(" -> {}", p.words))
            .unwrap_or_default();
        let status = stub_status(&out.headers, query, &backend.version);
        let ejected = if tally.ejected > 0 {
            format!(", {} ejected by outlier detection", tally.ejected)
        } else {
            String::new()
        };
        Branch {
            share: tally.share_of(n),
            status: Some(status),
            reason: format!(
                "cluster {} ({}) -> {n} of {} endpoint(s) ({}){ejected}{sidecar} -> {status} from {} {}, path {path}, {}",
                tally.name,
                tally.tls,
                tally.total,
                backend.pods.join(", "),
                backend.service,
                backend.version,
                if tally.mtls { "mTLS" } else { "plaintext" }
            ),
            path_seen: Some(path.to_string()),
            query: query.to_string(),
            headers_seen,
            response: PredictedResponse::from_stub(&stub_response_headers(&out.headers, query)),
            mtls: Some(tally.mtls),
            sidecar: by_sidecar.map(|p| p.verdict.clone()),
            sidecar_hops: hops_to(&screen.hops, &backend.pods, &self.pods),
            backend: Some(backend),
            ..base.clone()
        }
    }

    /// One branch per distinct refusal by the reached pods' sidecars.
    fn refusal_branches(
        &self,
        tally: &Tally,
        base: &Branch,
        screen: &SidecarScreen,
    ) -> Vec<Branch> {
        screen
            .denied
            .iter()
            .map(|(a, pods)| Branch {
                share: tally.share_of(pods.len()),
                status: Some(a.status),
                reason: format!(
                    "cluster {} ({}) -> {} of {} endpoint(s) ({}), {}: {SIDECAR_ANSWERS}: {}",
                    tally.name,
                    tally.tls,
                    pods.len(),
                    tally.total,
                    pods.join(", "),
                    if a.mtls { "mTLS" } else { "plaintext" },
                    a.verdict.why
                ),
                mtls: Some(a.mtls),
                sidecar: Some(a.verdict.clone()),
                sidecar_hops: hops_to(&screen.hops, pods, &self.pods),
                ..base.clone()
            })
            .collect()
    }

    /// What the RBAC filter of the sidecar of endpoint `e` sees of a request the
    /// gateway forwards with `:path` `forwarded` and `headers` (after the route's
    /// rewrite and header operations): its inbound connection manager normalizes the
    /// path again; the peer principal is the gateway's SPIFFE identity over mTLS
    /// (none over plaintext); the destination port is the endpoint's (the
    /// Service's targetPort). The inbound connection manager does not use the remote
    /// address (listener_inbound.go buildSidecarInboundHTTPOpts: useRemoteAddress
    /// false), so `remote.ip` is the last X-Forwarded-For entry, the client address the
    /// gateway appended; `source.ip`, the gateway pod's address, is the target's, and
    /// is not predicted (an `ipBlocks` rule at a sidecar matches nothing here).
    fn sidecar_request(
        &self,
        inbound: &Inbound,
        c: &ClusterPlan,
        e: &EndpointPlan,
        mtls: bool,
        forwarded: &str,
        headers: &Headers,
    ) -> super::authz::rbac::Request {
        let gw = &self.pods[inbound.from.pod];
        super::authz::rbac::Request {
            path: normalize(forwarded, inbound.from.normalization),
            method: inbound.method.to_string(),
            authority: inbound.authority.clone(),
            headers: headers.clone(),
            destination_port: e.port,
            destination_ip: None,
            direct_remote_ip: None,
            remote_ip: Some(inbound.from.client),
            peer_principal: mtls.then(|| gw.spiffe_id(&self.trust_domain)),
            // The SNI Istio's mTLS sends: the cluster name, `|` as `_.`
            // (cluster_builder.go buildIstioMutualTLS, model.BuildDNSSrvSubsetKey).
            sni: mtls.then(|| c.name.replace('|', "_.")),
            metadata: Default::default(),
        }
    }
}

/// A branch of cluster `name` that reaches no app: 503 until said otherwise.
fn unanswered(name: &str, share: f64) -> Branch {
    Branch {
        cluster: Some(name.to_string()),
        ..Branch::unanswered(share, Some(503), String::new())
    }
}

/// The TLS the gateway originates toward a cluster's endpoints, in words.
fn tls_words(c: &ClusterPlan) -> &'static str {
    match c.tls {
        UpstreamTls::IstioMutual => "ISTIO_MUTUAL",
        UpstreamTls::Disable => "DISABLE",
        UpstreamTls::Auto => "auto mTLS",
    }
}

/// Why no endpoint is reached when every hop fails (`failing` is not empty).
fn every_hop_fails(failing: &[String]) -> String {
    let mut reason = failing[0].clone();
    if failing.len() > 1 {
        reason.push_str(&format!(
            " (and {} other endpoint(s) alike)",
            failing.len() - 1
        ));
    }
    reason
}

/// The branch of the endpoints whose hop fails, if any.
fn failed_branch(tally: &Tally, base: &Branch, failing: &[String]) -> Option<Branch> {
    let first = failing.first()?;
    let retried = if first.contains(HANDSHAKE_FAILS) {
        "; Istio's default retries on connect-failure may take the request to another endpoint"
    } else {
        ""
    };
    Some(Branch {
        share: tally.share_of(failing.len()),
        reason: format!(
            "{first} ({} of {} endpoint(s){retried})",
            failing.len(),
            tally.total
        ),
        ..base.clone()
    })
}

/// The status meshcheck's stub answers a request with these headers and query
/// string: what `x-meshcheck-status` / `meshcheck-status` ask for (400 for a value it
/// cannot read), else 200 (src/stub/controls.rs).
fn stub_status(headers: &Headers, query: &str, version: &str) -> u16 {
    let asked = crate::stub::controls::controls(|n| headers::first(headers, n), query);
    let sent = stub_response_headers_checked(headers, query);
    match (asked, sent) {
        (Ok(c), Ok(_)) => c.status_for(version),
        _ => 400,
    }
}

/// The response headers the stub sends for a request with these headers and query
/// string (`x-meshcheck-response-header`, src/stub/controls.rs), or why it answers 400.
fn stub_response_headers_checked(
    headers: &Headers,
    query: &str,
) -> Result<Vec<(String, String)>, String> {
    let asked = headers
        .get(crate::stub::controls::RESPONSE_HEADER_HEADER)
        .cloned()
        .unwrap_or_default();
    crate::stub::controls::response_headers(&asked, query)
}

/// The response headers the stub sends (none when it answers 400).
fn stub_response_headers(headers: &Headers, query: &str) -> Vec<(String, String)> {
    stub_response_headers_checked(headers, query).unwrap_or_default()
}

/// The endpoint groups left once outlier detection has ejected the failing ones, in
/// the steady state a check measures: with `consecutive5xxErrors` (any 5xx) or
/// `consecutiveGatewayErrors` (502-504) set, a group that always answers such a
/// status is ejected when all of them fit in `maxEjectionPercent` of the endpoints
/// (Envoy's default 10%; Istio does not set always_eject_one_host); when that ejects
/// every endpoint, none is left (the gateway answers 503 no healthy upstream), unless
/// the healthy share falls below the panic threshold (`minHealthPercent`), where
/// Envoy balances over every endpoint again; when not all fit, none is predicted
/// ejected (the failures stay visible). Thresholds as [`super::ejection`] reads them
/// (pilot cluster_traffic_policy.go applyOutlierDetection; Envoy
/// outlier_detection_impl.cc DetectorImpl::ejectHost).
fn outlier_survivors(
    c: &ClusterPlan,
    groups: Vec<(Backend, usize)>,
    status_of: impl Fn(&Backend) -> u16,
) -> Vec<(Backend, usize)> {
    let Some(t) = c
        .policy
        .outlier
        .as_ref()
        .map(super::ejection::Thresholds::of)
    else {
        return groups;
    };
    let fails = |s: u16| t.counts(s);
    let total: usize = groups.iter().map(|(_, n)| n).sum();
    let failing: usize = groups
        .iter()
        .filter(|(b, _)| fails(status_of(b)))
        .map(|(_, n)| n)
        .sum();
    // Envoy DetectorImpl::ejectHost: room while 100 * (ejected + 1) / hosts stays
    // within maxEjectionPercent.
    let allowed = t.max_ejection_percent as usize * total / 100;
    let panic = c.policy.healthy_panic_threshold.unwrap_or(50.0);
    let healthy_pct = 100.0 * (total - failing) as f64 / total.max(1) as f64;
    if failing == 0 || failing > allowed || (panic > 0.0 && healthy_pct < panic) {
        return groups;
    }
    groups
        .into_iter()
        .filter(|(b, _)| !fails(status_of(b)))
        .collect()
}

fn no_endpoint_reason(mesh: &Mesh, c: &ClusterPlan) -> String {
    let running = mesh.pods.iter().any(|p| p.role == PodRole::App);
    match &c.subset {
        Some(s) if running => format!("subset {s} selects no running pod of {}", c.fqdn),
        _ => format!("no running pod backs {}", c.fqdn),
    }
}

/// The hop to endpoint `e`'s sidecar as the gateway sends it (see [`SidecarHop`]),
/// from what the sidecar sees of it (`r`: [`Mesh::sidecar_request`], which gives the
/// peer and SNI of an mTLS hop only).
fn sidecar_hop(
    inbound: &Inbound,
    e: &EndpointPlan,
    r: &super::authz::rbac::Request,
    forwarded: &str,
    headers: &Headers,
    verdict: &super::authz::Verdict,
) -> SidecarHop {
    let mut headers = headers.clone();
    // use_remote_address at the gateway: Envoy appends its downstream peer.
    let client = inbound.from.client.to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.first()) {
        Some(x) if !x.is_empty() => format!("{x},{client}"),
        _ => client,
    };
    headers.insert("x-forwarded-for".to_string(), vec![xff]);
    SidecarHop {
        pod: e.pod,
        gateway: inbound.from.pod,
        port: e.port,
        mtls: r.peer_principal.is_some(),
        method: inbound.method.to_string(),
        authority: inbound.authority.clone(),
        path: forwarded.to_string(),
        headers,
        sni: r.sni.clone().unwrap_or_default(),
        verdict: verdict.clone(),
    }
}

/// The hops of `hops` to the pods named `names`.
fn hops_to(hops: &[SidecarHop], names: &[String], pods: &[PodPlan]) -> Vec<SidecarHop> {
    hops.iter()
        .filter(|h| names.contains(&pods[h.pod].name))
        .cloned()
        .collect()
}
