//! Route simulation: where a request sent to the ingress would go, computed from the
//! model alone (the way pilot's simulation tests walk Envoy config): which listener,
//! virtual host, VirtualService route, destination, subset and endpoints it reaches,
//! what path and headers the backend sees, mTLS or plaintext, or why it fails.

use super::ejection::Ejections;
use super::headers::{self, Headers, PredictedResponse};
use super::mesh::{Mesh, PathMatch, RouteKind, RoutePlan, UriRewrite, VHostPlan};
use super::normalize::normalize;
use super::route_filters::FaultPlan;
use super::upstream::{FromGateway, Inbound};
use crate::fixtures::istio::StringMatch;

/// A request as the suite sends it.
#[derive(Debug, Clone, Default)]
pub struct SimRequest {
    /// The gateway Service port the request targets (via its NodePort).
    pub service_port: u16,
    /// `request.gateway`: the gateway (`ns/name`) it goes through; None: the ingress.
    pub gateway: Option<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    /// Lower-case names, every value in order.
    pub headers: Headers,
    /// The request body (routing does not look at it; carried for the record).
    pub body: Option<String>,
    /// `scheme: https`: TLS to the gateway with SNI = the host (without port).
    pub https: bool,
    /// Take every credentialName as served (what istiod's listeners say; whether SDS
    /// has the Secret is not part of them): for comparing with the oracle.
    pub assume_certificates: bool,
    /// The address the gateway sees the connection come from (`request.source`);
    /// None: the target's own client address (127.0.0.1 on the local target).
    pub source_address: Option<std::net::IpAddr>,
    /// Route as if the security filters let the request through (comparing routes
    /// with the oracle; their verdict is compared apart).
    pub skip_authz: bool,
    /// The verified JWT's payload the JWT filter put in the request's metadata (route
    /// claim conditions read it); None: no verified token.
    pub jwt_payload: Option<serde_json::Value>,
}

/// Who would answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub service: String,
    pub version: String,
    pub namespace: String,
    pub pods: Vec<String>,
}

/// One possible result (a weighted destination) of a request.
#[derive(Debug, Clone)]
pub struct Branch {
    /// Fraction of requests taking this branch (weights normalised).
    pub share: f64,
    /// HTTP status, or None when the connection is refused.
    pub status: Option<u16>,
    pub backend: Option<Backend>,
    /// The path the backend sees, without the query string (the stub reports the
    /// two apart, as an HTTP server reads them).
    pub path_seen: Option<String>,
    /// The query string the backend receives (without `?`), which also carries the
    /// stub's controls (`meshcheck-delay`, `meshcheck-status`).
    pub query: String,
    /// Headers the backend sees (request headers after the route's operations),
    /// every value in order.
    pub headers_seen: Headers,
    /// The response headers the client receives, as far as the model knows them.
    pub response: PredictedResponse,
    /// mTLS from the gateway to the pod (None when nothing is reached).
    pub mtls: Option<bool>,
    pub cluster: Option<String>,
    /// The end of the decision path, in words.
    pub reason: String,
    /// What the security filters of the reached pods' sidecar decided (authz::
    /// sidecar_plan); None when none apply to them. A refusal is the branch's answer.
    pub sidecar: Option<super::authz::Verdict>,
    /// Each hop to a pod of this branch whose sidecar has security filters: the
    /// request as the gateway sends it there and the sidecar's verdict (the oracle
    /// evaluates istiod's filters on the same hop: MC409).
    pub sidecar_hops: Vec<SidecarHop>,
}

impl Branch {
    /// A branch no app answers: the proxy's own `status` (None: no connection) for
    /// `share` of the requests, with the words of why.
    pub fn unanswered(share: f64, status: Option<u16>, reason: String) -> Branch {
        Branch {
            share,
            status,
            backend: None,
            path_seen: None,
            query: String::new(),
            headers_seen: Headers::new(),
            response: PredictedResponse::default(),
            mtls: None,
            cluster: None,
            reason,
            sidecar: None,
            sidecar_hops: Vec::new(),
        }
    }
}

/// One request as the gateway sends it to one pod's sidecar, and what the model's
/// sidecar filters decided.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarHop {
    /// Index into [`Mesh::pods`]: the pod, and the gateway pod sending.
    pub pod: usize,
    pub gateway: usize,
    /// The pod's port (the endpoint's).
    pub port: u16,
    /// Istio mTLS (the gateway's certificate), or plaintext.
    pub mtls: bool,
    pub method: String,
    pub authority: String,
    /// `:path` as the gateway forwards it (before the sidecar's normalization).
    pub path: String,
    /// The headers as the gateway sends them, with the X-Forwarded-For entry it
    /// appends (the client's address: use_remote_address at the gateway).
    pub headers: Headers,
    /// The SNI of Istio's mTLS (the cluster name); empty for plaintext.
    pub sni: String,
    pub verdict: super::authz::Verdict,
}

/// The full decision for one request.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The steps common to every branch (listener, virtual host, route).
    pub steps: Vec<String>,
    pub route: Option<RouteRef>,
    /// Where the route forwards (or what the gateway answers), before any fault.
    pub branches: Vec<Branch>,
    /// The matched route's `fault`: Envoy's fault filter runs before the router, so
    /// an abort answers before any redirect, direct response or upstream
    /// ([`Prediction::outcomes`] applies it).
    pub fault: Option<FaultPlan>,
    /// Where the request is also sent by the route's mirror policies (Envoy does not
    /// wait for these copies; their answers are dropped).
    pub mirrors: Vec<Mirrored>,
    /// The longest the answer can take by the configuration (fault delay, timeouts,
    /// retries) and the stub's delay the request asks for (answer_time.rs); zero when
    /// nothing in them makes it slow.
    pub longest_answer: std::time::Duration,
    /// What the gateway's RBAC (and JWT) filters decided; None when no policy applies
    /// to the gateway pod (authz/).
    pub authz: Option<super::authz::Verdict>,
}

/// One mirror policy of the matched route, as the simulation sees it.
#[derive(Debug, Clone)]
pub struct Mirrored {
    pub cluster: String,
    /// Share of requests mirrored, in percent.
    pub percent: f64,
    /// Who receives the copies, each with its share of the mirror cluster's
    /// endpoints (0..=1); empty when nobody does.
    pub backends: Vec<(Backend, f64)>,
    pub reason: String,
}

/// The VirtualService route a request matched.
#[derive(Debug, Clone)]
pub struct RouteRef {
    pub virtual_service: String,
    pub source: crate::fixtures::Source,
    pub http_index: usize,
    /// The path after the route's rewrite, without the query string (what the backend
    /// sees, if one answers).
    pub path_seen: String,
}

impl Prediction {
    /// What requests get, in shares: an abort's share answered with its status by the
    /// gateway, the rest as [`Prediction::branches`] (Envoy fault filter: abort
    /// percentage of requests, pilot route.go TranslateFault).
    pub fn outcomes(&self) -> Vec<Branch> {
        let Some(a) = self.fault.as_ref().and_then(|f| f.abort.as_ref()) else {
            return self.branches.clone();
        };
        let share = a.share();
        if share <= 0.0 {
            return self.branches.clone();
        }
        let mut out = vec![Branch::unanswered(
            share,
            Some(a.http_status),
            format!(
                "fault abort: the gateway answers {} for {}% of requests",
                a.http_status,
                share * 100.0
            ),
        )];
        if share < 1.0 {
            out.extend(self.branches.iter().map(|b| Branch {
                share: b.share * (1.0 - share),
                ..b.clone()
            }));
        }
        out
    }

    /// The fixed delay the route's fault adds, and to which share of requests.
    pub fn delay(&self) -> Option<(u64, f64)> {
        let d = self.fault.as_ref()?.delay.as_ref()?;
        Some((d.fixed_delay_ms, d.percentage.share()))
    }

    /// One line: `VirtualService atlas/x route 0 -> 200 from atlas-ui v1 (100%)`.
    pub fn summary(&self) -> String {
        let via = self
            .route
            .as_ref()
            .map(|r| format!("via {} route {}: ", r.virtual_service, r.http_index))
            .unwrap_or_default();
        let outcomes = self.outcomes();
        let b: Vec<String> = outcomes
            .iter()
            .map(|b| {
                let what = match (&b.status, &b.backend) {
                    (None, _) if b.reason.ends_with(HANDSHAKE_FAILS) => HANDSHAKE_FAILS.to_string(),
                    (None, _) => "connection refused".to_string(),
                    (Some(s), Some(be)) => format!("{s} from {} {}", be.service, be.version),
                    (Some(s), None) => format!("{s} ({})", b.reason),
                };
                if outcomes.len() > 1 {
                    format!("{what} ({:.0}%)", b.share * 100.0)
                } else {
                    what
                }
            })
            .collect();
        let mirrors: Vec<String> = self
            .mirrors
            .iter()
            .map(|m| match m.backends.as_slice() {
                [] => format!(
                    "; mirror to {} ({:.0}%) reaches nobody",
                    m.cluster, m.percent
                ),
                bs => format!(
                    "; mirrored ({:.0}%) to {}",
                    m.percent,
                    bs.iter()
                        .map(|(b, _)| format!("{} {}", b.service, b.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
            .collect();
        format!("{via}{}{}", b.join(", "), mirrors.concat())
    }

    /// The whole decision path, one step a line.
    pub fn explain(&self) -> String {
        let mut s = self.steps.join("\n  -> ");
        for b in &self.outcomes() {
            s.push_str(&format!("\n  => [{:.0}%] {}", b.share * 100.0, b.reason));
        }
        for m in &self.mirrors {
            s.push_str(&format!("\n  +> mirror [{}%] {}", m.percent, m.reason));
        }
        s
    }
}

/// Envoy's string match semantics (safe_regex is a full match).
pub fn string_matches(m: &StringMatch, v: &str, ignore_case: bool) -> bool {
    let (v, pat) = if ignore_case {
        (v.to_ascii_lowercase(), lower(m))
    } else {
        (v.to_string(), m.clone())
    };
    match &pat {
        StringMatch::Exact(x) => v == *x,
        StringMatch::Prefix(x) => v.starts_with(x.as_str()),
        StringMatch::Regex(x) => full_match(x, &v),
    }
}

fn lower(m: &StringMatch) -> StringMatch {
    match m {
        StringMatch::Exact(x) => StringMatch::Exact(x.to_ascii_lowercase()),
        StringMatch::Prefix(x) => StringMatch::Prefix(x.to_ascii_lowercase()),
        StringMatch::Regex(x) => StringMatch::Regex(x.clone()),
    }
}

fn full_match(pattern: &str, v: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map(|r| r.is_match(v))
        .unwrap_or(false)
}

fn path_matches(r: &RoutePlan, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (p, m) = if r.ignore_case {
        (path.to_ascii_lowercase(), r.path.clone())
    } else {
        (path.to_string(), r.path.clone())
    };
    match m {
        PathMatch::Prefix(x) => {
            if r.ignore_case {
                p.starts_with(&x.to_ascii_lowercase())
            } else {
                p.starts_with(&x)
            }
        }
        PathMatch::Exact(x) => {
            if r.ignore_case {
                p == x.to_ascii_lowercase()
            } else {
                p == x
            }
        }
        PathMatch::Regex(x) => full_match(&x, &p),
        PathMatch::PathSeparatedPrefix(x) => {
            let x = if r.ignore_case {
                x.to_ascii_lowercase()
            } else {
                x
            };
            p == x
                || p.strip_prefix(x.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

/// Whether route `r` matches the request.
pub fn route_matches(r: &RoutePlan, req: &SimRequest) -> bool {
    let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or("");
    path_matches(r, &req.path)
        && r.headers.iter().all(|m| {
            let value = match m.name.as_str() {
                ":scheme" => Some(if req.https { "https" } else { "http" }.to_string()),
                // Envoy matches a repeated header's values joined by `,`
                // (HeaderUtility::getAllOfHeaderAsString).
                name => req
                    .headers
                    .get(&name.to_ascii_lowercase())
                    .map(|v| v.join(",")),
            };
            header_matches(m, value.as_deref())
        })
        && r.query.iter().all(|m| query_matches(m, query))
        && r.method
            .as_ref()
            .map(|m| string_matches(m, &req.method, false))
            .unwrap_or(true)
        && r.authority
            .as_ref()
            .map(|m| string_matches(m, &req.host, false))
            .unwrap_or(true)
        && r.claims
            .iter()
            .all(|c| claim_matches(c, req.jwt_payload.as_ref()))
}

/// Envoy's dynamic metadata match of a route's JWT claim condition: the claim (a
/// string, or a list holding one) matches; no token or no such claim fails, unless
/// inverted.
fn claim_matches(c: &super::mesh::ClaimMatcher, payload: Option<&serde_json::Value>) -> bool {
    let value = payload.and_then(|p| c.claims.iter().try_fold(p, |v, k| v.get(k)));
    let hit = match (value, &c.value) {
        (Some(v), Some(m)) => {
            let one =
                |x: &serde_json::Value| x.as_str().is_some_and(|s| string_matches(m, s, false));
            one(v) || v.as_array().is_some_and(|a| a.iter().any(one))
        }
        _ => false,
    };
    hit != c.invert
}

/// Envoy's header matching (source/common/http/header_utility.cc, matchHeaders): a
/// missing header fails a condition, unless inverted (then a value condition reads it
/// as empty, as pilot sets treat_missing_header_as_empty for withoutHeaders).
fn header_matches(m: &super::mesh::Matcher, value: Option<&str>) -> bool {
    let ok = match (&m.value, value) {
        (None, v) => v.is_some(),
        (Some(sm), Some(v)) => string_matches(sm, v, false),
        (Some(sm), None) if m.invert => string_matches(sm, "", false),
        (Some(_), None) => false,
    };
    ok != m.invert
}

/// Envoy's query parameter matching: the first parameter of that name.
fn query_matches(m: &super::mesh::Matcher, query: &str) -> bool {
    let value = query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == m.name).then_some(v)
    });
    match (&m.value, value) {
        (None, v) => v.is_some(),
        (Some(sm), Some(v)) => string_matches(sm, v, false),
        (Some(_), None) => false,
    }
}

/// Envoy's virtual host selection: exact domain, then the longest suffix wildcard
/// (`*.x`), then the longest prefix wildcard (`x.*`), then `*`.
pub fn select_vhost<'a>(vhosts: &'a [VHostPlan], host: &str) -> Option<&'a VHostPlan> {
    let host = strip_port(host).to_ascii_lowercase();
    let find = |pred: &dyn Fn(&str) -> Option<usize>| {
        vhosts
            .iter()
            .filter_map(|v| {
                v.domains
                    .iter()
                    .filter_map(|d| pred(d))
                    .max()
                    .map(|n| (n, v))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, v)| v)
    };
    find(&|d| (d == host).then_some(usize::MAX))
        .or_else(|| {
            find(&|d| {
                d.strip_prefix('*')
                    .filter(|s| !s.is_empty() && host.ends_with(s) && host.len() > s.len())
                    .map(str::len)
            })
        })
        .or_else(|| {
            find(&|d| {
                d.strip_suffix('*')
                    .filter(|p| !p.is_empty() && host.starts_with(p))
                    .map(str::len)
            })
        })
        .or_else(|| find(&|d| (d == "*").then_some(0)))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The path the backend sees after the route's rewrite, as Envoy forwards it
/// (source/common/router/config_impl.cc, RouteEntryImplBase::currentUrlPathAfterRewrite):
/// `prefix_rewrite` replaces the matched prefix (the whole path for exact and regex
/// matches); `regex_rewrite` replaces every match of its pattern in the path; the
/// query string is kept either way.
pub fn rewritten_path(r: &RoutePlan, path: &str) -> String {
    let (p, query) = match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    match &r.rewrite {
        None => path.to_string(),
        Some(UriRewrite::Prefix(new)) => match &r.path {
            PathMatch::Prefix(pre) | PathMatch::PathSeparatedPrefix(pre)
                if path.len() >= pre.len() =>
            {
                format!("{new}{}", &path[pre.len()..])
            }
            _ => format!("{new}{query}"),
        },
        Some(UriRewrite::Regex(pat, sub)) => match regex::Regex::new(pat) {
            Ok(re) => format!(
                "{}{query}",
                re.replace_all(p, envoy_substitution(sub).as_str())
            ),
            Err(_) => path.to_string(),
        },
    }
}

/// A `:path` split into the path and the query string (without `?`), as an HTTP
/// server reads them.
pub fn split_query(path: &str) -> (&str, &str) {
    path.split_once('?').unwrap_or((path, ""))
}

/// The `Location` of a redirect as Envoy writes it (RouteEntryImplBase::newUri): the
/// request's scheme, host and path unless the redirect replaces them; a port replaces
/// the request's.
pub fn redirect_location(req: &SimRequest, route: &RoutePlan, r: &super::mesh::Redirect) -> String {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = if r.host.is_empty() {
        req.host.as_str()
    } else {
        r.host.as_str()
    };
    let host = if r.port != 0 {
        format!("{}:{}", strip_port(host), r.port)
    } else {
        host.to_string()
    };
    let path = if r.prefix {
        // prefix_rewrite: the route matched a prefix; it is replaced.
        match &route.path {
            PathMatch::Prefix(pre) | PathMatch::PathSeparatedPrefix(pre)
                if req.path.len() >= pre.len() =>
            {
                format!("{}{}", r.path, &req.path[pre.len()..])
            }
            _ => r.path.clone(),
        }
    } else if r.path.is_empty() {
        req.path.clone()
    } else {
        r.path.clone()
    };
    format!("{scheme}://{host}{path}")
}

/// Envoy (RE2) writes capture groups in a substitution as `\1`; the regex crate as `${1}`.
fn envoy_substitution(sub: &str) -> String {
    let mut out = String::new();
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                out.push_str(&format!("${{{}}}", chars.next().unwrap_or('0')));
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            c => out.push(c),
        }
    }
    out
}

impl Mesh {
    /// Where `req` would go, in the steady state a check measures (outlier detection
    /// has ejected what always fails).
    pub fn simulate(&self, req: &SimRequest) -> Prediction {
        self.simulate_in(req, None)
    }

    /// Where `req` would go; with `ejections`, after the requests they record (a
    /// suite's `steps`) rather than in the steady state.
    pub fn simulate_in(&self, req: &SimRequest, ejections: Option<&Ejections>) -> Prediction {
        let mut steps = Vec::new();
        let Some((svc, node_port)) = self.node_port_via(req.gateway.as_deref(), req.service_port)
        else {
            let via = req
                .gateway
                .as_deref()
                .map(|g| format!(" for gateway {g}"))
                .unwrap_or_default();
            return refused(
                steps,
                format!(
                    "no LoadBalancer/NodePort Service in front of a gateway pod exposes port {}{via}",
                    req.service_port
                ),
            );
        };
        steps.push(format!(
            "Service {}/{} port {} -> NodePort {node_port}",
            svc.namespace, svc.name, req.service_port
        ));
        let listener = self
            .gateways
            .iter()
            .flat_map(|g| g.listeners.iter().map(move |l| (g, l)))
            .find(|(_, l)| l.node_ports.contains(&node_port));
        let Some((gw, listener)) = listener else {
            let why = if self.gateways.is_empty() {
                "no gateway pod runs".to_string()
            } else {
                format!("no Gateway server selecting the gateway pods uses Service port {}: no listener, the NodePort refuses connections", req.service_port)
            };
            return refused(steps, why);
        };
        let gw_pod = &self.pods[gw.pod];
        steps.push(format!(
            "gateway pod {}/{} listener {} (Gateway server port {})",
            gw_pod.namespace, gw_pod.name, listener.name, listener.server_port
        ));
        let chain = match select_chain(listener, req) {
            Ok(c) => c,
            Err(why) => return no_tls(steps, why),
        };
        if let Some(tls) = &chain.tls {
            steps.push(format!(
                "filter chain of {} server {} (SNI {}), certificate {} (Secret {}/{})",
                tls.gateway,
                tls.server,
                if chain.server_names.is_empty() {
                    "any".to_string()
                } else {
                    chain.server_names.join(", ")
                },
                tls.sds_name,
                tls.secret_namespace,
                tls.secret_name
            ));
        }
        // The connection manager normalizes the path before any filter or route
        // sees it (normalize.rs).
        let req = &SimRequest {
            path: normalize(&req.path, chain.hcm.path_normalization),
            ..req.clone()
        };
        let outcome = gw.authz.outcome(&rbac_request(
            req,
            (listener.target_port, node_port),
            chain.hcm.xff_num_trusted_hops,
        ));
        // `skip_authz`: routed as if let through (the headers and the token's payload
        // as the JWT filter leaves them still count).
        let authz = outcome
            .as_ref()
            .filter(|_| !req.skip_authz)
            .map(|o| o.verdict.clone());
        if let Some(o) = outcome.as_ref().filter(|_| !req.skip_authz) {
            steps.push(o.verdict.why.clone());
            if let Some(status) = o.status {
                let mut p = status_only(steps, None, status, o.verdict.why.clone());
                p.authz = authz;
                return p;
            }
        }
        // The route and the backend see the headers as the security filters left them
        // (the JWT filter's payload and claim headers; its token removed).
        let filtered;
        let req = match outcome {
            Some(o) => {
                filtered = SimRequest {
                    headers: o.headers,
                    jwt_payload: o.payload,
                    ..req.clone()
                };
                &filtered
            }
            None => req,
        };
        let from = FromGateway {
            pod: gw.pod,
            normalization: chain.hcm.path_normalization,
            client: req
                .source_address
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            node_port,
            ejections,
        };
        let mut p = self.route_request(steps, chain, req, &from);
        p.authz = authz;
        p
    }

    /// The virtual host and route `req` takes on `chain`, and what follows.
    fn route_request(
        &self,
        mut steps: Vec<String>,
        chain: &super::mesh::ChainPlan,
        req: &SimRequest,
        from: &FromGateway,
    ) -> Prediction {
        let Some(vh) = select_vhost(&chain.route_config.vhosts, &req.host) else {
            return status_only(
                steps,
                None,
                404,
                format!("no virtual host for host {}: 404", req.host),
            );
        };
        steps.push(format!(
            "virtual host {} (domains {})",
            vh.name,
            vh.domains.join(", ")
        ));
        // Envoy require_tls ALL (a server with tls.httpsRedirect): plain HTTP gets a
        // 301 to https before any route is looked at.
        if vh.require_tls {
            return status_only(
                steps,
                None,
                301,
                format!(
                    "virtual host {} requires TLS (Gateway server tls.httpsRedirect): 301 to https",
                    vh.name
                ),
            );
        }
        let Some(route) = vh.routes.iter().find(|r| route_matches(r, req)) else {
            let why = if vh.routes.is_empty() {
                "no VirtualService is bound to this Gateway and host: 404".to_string()
            } else {
                format!(
                    "no route of {} matches {} {}: 404 (NR)",
                    vh.name, req.method, req.path
                )
            };
            return status_only(steps, None, 404, why);
        };
        let forwarded = rewritten_path(route, &req.path);
        let rref = RouteRef {
            virtual_service: route.virtual_service.clone(),
            source: route.source.clone(),
            http_index: route.http_index,
            path_seen: split_query(&forwarded).0.to_string(),
        };
        steps.push(format!(
            "{} http[{}] ({}) matched {}",
            route.virtual_service,
            route.http_index,
            route.source,
            describe_match(route)
        ));
        if let Some(f) = &route.filters.fault {
            if let Some(d) = &f.delay {
                steps.push(format!(
                    "fault delay {}ms for {}% of requests",
                    d.fixed_delay_ms,
                    d.percentage.share() * 100.0
                ));
            }
        }
        let mut p = self.route_action(steps, rref, route, req, &forwarded, from);
        p.fault = route.filters.fault.clone();
        p.longest_answer += super::answer_time::fault_delay(route);
        p
    }

    /// What the matched route does with `req`: the gateway answers (redirect, direct
    /// response) or it forwards to its weighted destinations, with `forwarded` as the
    /// `:path` (after the rewrite, query included).
    fn route_action(
        &self,
        mut steps: Vec<String>,
        rref: RouteRef,
        route: &RoutePlan,
        req: &SimRequest,
        forwarded: &str,
        from: &FromGateway,
    ) -> Prediction {
        if let Some(why) = cors_preflight_answer(route, req) {
            return status_only(steps, Some(rref), 200, why);
        }
        // A DestinationRule consistentHash (route hash_policy, pilot route.go
        // HashForHTTPDestination): each key sticks to one endpoint; the shares below are
        // over many keys.
        if !route.hash_policy.is_empty() {
            let keys: Vec<String> = route.hash_policy.iter().map(|h| h.view()).collect();
            steps.push(format!(
                "consistent hash on {}: requests with the same key reach the same endpoint",
                keys.join(", ")
            ));
        }
        // Routes the gateway answers itself (pilot: redirect, directResponse).
        match &route.action {
            RouteKind::Forward => {}
            RouteKind::Redirect(r) => {
                let location = redirect_location(req, route, r);
                let code = r.code;
                let mut p = status_only(
                    steps,
                    Some(rref),
                    code,
                    format!("the gateway redirects: {code} to {location}"),
                );
                // Envoy's router answers a redirect with the Location it computes
                // (router.cc, sendLocalReply with the new URI), so a check's
                // `response_headers: { location: ... }` is judged statically too.
                p.branches[0].response = PredictedResponse::with("location", location);
                return p;
            }
            RouteKind::DirectResponse { status, .. } => {
                return status_only(
                    steps,
                    Some(rref),
                    *status,
                    format!("the gateway answers directly: {status}"),
                );
            }
        }
        if forwarded != req.path {
            steps.push(format!("rewrite {} -> {forwarded}", req.path));
        }
        // What the pods' sidecars receive: the gateway's `:authority` (the route's
        // authority rewrite, or the host as sent) and method.
        let inbound = Inbound {
            from,
            method: &req.method,
            authority: route.rewrite_authority.clone().unwrap_or_else(|| {
                if req.host == "node" {
                    format!("node:{}", from.node_port)
                } else {
                    req.host.clone()
                }
            }),
        };
        let total: u32 = route.destinations.iter().map(|d| d.weight).sum();
        let mut branches = Vec::new();
        for d in &route.destinations {
            let share = if total == 0 {
                1.0 / route.destinations.len().max(1) as f64
            } else {
                d.weight as f64 / total as f64
            };
            let weighted = route.destinations.len() > 1;
            let mut headers = req.headers.clone();
            for ops in headers::in_envoy_order(&route.request_headers, &d.request_headers, weighted)
            {
                headers::apply(&mut headers, &ops);
            }
            let response_ops =
                headers::in_envoy_order(&route.response_headers, &d.response_headers, weighted);
            for mut b in self.cluster_branches(
                &d.cluster,
                share,
                forwarded,
                headers,
                route.cluster_not_found,
                Some(&inbound),
            ) {
                // The route's response operations apply to what the upstream answers:
                // the app, or the pod's sidecar refusing the request.
                if b.backend.is_some() || b.sidecar.is_some() {
                    b.response = b.response.after(&response_ops);
                }
                branches.push(b);
            }
        }
        for b in &mut branches {
            time_out_slow_answer(route, b);
        }
        let longest_answer = super::answer_time::upstream_bound(route, &branches);
        let mirrors = route
            .mirrors
            .iter()
            .map(|m| self.mirrored(m, forwarded, &req.headers))
            .collect();
        Prediction {
            steps,
            route: Some(rref),
            branches,
            fault: None,
            mirrors,
            longest_answer,
            authz: None,
        }
    }

    /// Who receives the copies of mirror policy `m` (Envoy's shadow writer sends them
    /// to the mirror cluster's endpoints; a cluster that does not exist or has no
    /// endpoint receives nothing, and the primary answer is unaffected).
    fn mirrored(&self, m: &super::mesh::MirrorPlan, path: &str, headers: &Headers) -> Mirrored {
        // The copies' answers are dropped: a sidecar refusing them is not looked at.
        let branches = self.cluster_branches(&m.cluster, 1.0, path, headers.clone(), 503, None);
        let backends: Vec<(Backend, f64)> = branches
            .iter()
            .filter_map(|b| Some((b.backend.clone()?, b.share)))
            .collect();
        let reason = branches
            .iter()
            .map(|b| b.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Mirrored {
            cluster: m.cluster.clone(),
            percent: m.fraction.percent(),
            backends,
            reason,
        }
    }
}

/// Envoy's CORS filter (before the router) answers a preflight itself: an OPTIONS
/// request with `origin` and `access-control-request-method` whose origin the
/// route's corsPolicy allows gets 200 with the CORS headers; one whose origin is not
/// allowed goes on to the route unless `unmatchedPreflights: IGNORE`
/// (forward_not_matching_preflights false), which Envoy also answers, without CORS
/// headers. An empty Origin or Access-Control-Request-Method is none
/// (envoy source/extensions/filters/http/cors/cors_filter.cc, decodeHeaders).
fn cors_preflight_answer(route: &RoutePlan, req: &SimRequest) -> Option<String> {
    let cors = route.filters.cors.as_ref()?;
    let origin = headers::first(&req.headers, "origin").filter(|o| !o.is_empty())?;
    let asks = headers::first(&req.headers, "access-control-request-method")
        .is_some_and(|m| !m.is_empty());
    if !req.method.eq_ignore_ascii_case("OPTIONS") || !asks {
        return None;
    }
    if cors.allows_origin(&origin) {
        Some(format!(
            "the CORS filter answers the preflight from {origin}: 200 with the route's CORS headers"
        ))
    } else if !cors.forward_not_matching_preflights {
        Some(format!(
            "the CORS filter answers the preflight from {origin} (not allowed, unmatchedPreflights IGNORE): 200 without CORS headers"
        ))
    } else {
        None
    }
}

/// A backend told to answer later than the route allows (the stub's
/// `x-meshcheck-delay`) is cut off by Envoy: the route's `timeout` (pilot setTimeout),
/// or each try's `perTryTimeout` when that is shorter (retried tries time out alike),
/// ends in 504 `upstream request timeout` (UT) with no backend's answer.
fn time_out_slow_answer(route: &RoutePlan, b: &mut Branch) {
    if b.backend.is_none() {
        return;
    }
    let Some(delay) = super::answer_time::stub_delay(b) else {
        return;
    };
    let limits = [
        route.timeout_ms,
        route
            .retry
            .as_ref()
            .and_then(|r| r.per_try_timeout_ms)
            .unwrap_or(0),
    ];
    let Some(limit) = limits.into_iter().filter(|ms| *ms > 0).min() else {
        return;
    };
    if delay.as_millis() < u128::from(limit) {
        return;
    }
    b.status = Some(504);
    b.reason = format!(
        "{}; the backend answers after {}ms, the route allows {limit}ms: 504 upstream request timeout (UT)",
        b.reason,
        delay.as_millis()
    );
    b.backend = None;
}

fn describe_match(r: &RoutePlan) -> String {
    let mut parts = vec![match &r.path {
        PathMatch::Prefix(p) => format!("uri prefix {p}"),
        PathMatch::Exact(p) => format!("uri exact {p}"),
        PathMatch::Regex(p) => format!("uri regex {p}"),
        PathMatch::PathSeparatedPrefix(p) => format!("uri path-separated prefix {p}"),
    }];
    for m in &r.headers {
        let not = if m.invert { "without " } else { "" };
        parts.push(format!("{not}header {} {:?}", m.name, m.value));
    }
    for m in &r.query {
        parts.push(format!("query {} {:?}", m.name, m.value));
    }
    parts.join(", ")
}

/// How a failed TLS handshake ends a prediction's reason.
pub const HANDSHAKE_FAILS: &str = "TLS handshake fails";

/// The filter chain a request takes (Envoy's filter chain match on SNI), or why the
/// connection fails: TLS to a plaintext listener, plaintext to a TLS one, an SNI no
/// server names, a server whose certificate istiod cannot serve.
fn select_chain<'a>(
    l: &'a super::mesh::ListenerPlan,
    req: &SimRequest,
) -> Result<&'a super::mesh::ChainPlan, String> {
    let tls_listener = l.protocol == super::mesh::ListenerProtocol::Https;
    if req.https && !tls_listener {
        return Err(format!(
            "listener {} serves plaintext HTTP, the client speaks TLS",
            l.name
        ));
    }
    if !req.https && tls_listener {
        return Err(format!(
            "listener {} terminates TLS, the client speaks plaintext HTTP",
            l.name
        ));
    }
    let sni = strip_port(&req.host).to_ascii_lowercase();
    let chain = l
        .chain_for(req.https.then_some(sni.as_str()))
        .ok_or_else(|| format!("no filter chain of listener {} matches SNI {sni}", l.name))?;
    if req.assume_certificates {
        return Ok(chain);
    }
    if let Some(problem) = chain
        .tls
        .as_ref()
        .and_then(|t| t.problem.as_ref().map(|p| (t, p)))
    {
        let (t, p) = problem;
        return Err(format!(
            "{} server {} credentialName {}: {p}, so the gateway has no certificate for it",
            t.gateway, t.server, t.credential
        ));
    }
    Ok(chain)
}

/// What the gateway's RBAC filter sees of `req`, arriving on listener port `port` (over
/// `node_port`):
/// the connection comes from `source_address` (127.0.0.1 by default); no client
/// certificate.
fn rbac_request(
    req: &SimRequest,
    (port, node_port): (u16, u16),
    trusted_hops: u32,
) -> super::authz::rbac::Request {
    let direct = req
        .source_address
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let remote = client_address(direct, req.headers.get("x-forwarded-for"), trusted_hops);
    super::authz::rbac::Request {
        path: req.path.clone(),
        method: req.method.clone(),
        // `node` stands for the node address; the client sends it with the NodePort.
        authority: if req.host == "node" {
            format!("node:{node_port}")
        } else {
            req.host.clone()
        },
        headers: req.headers.clone(),
        destination_port: port,
        destination_ip: None,
        direct_remote_ip: Some(direct),
        remote_ip: Some(remote),
        peer_principal: None,
        sni: req.https.then(|| strip_port(&req.host).to_string()),
        metadata: Default::default(),
    }
}

/// The client address Envoy settles on with `use_remote_address: true` (gateways):
/// the connection's peer when no hop is trusted, else the `trusted_hops`-th
/// X-Forwarded-For entry from the right, as received; the peer again when the header
/// has fewer entries or that one is not an address (Envoy
/// conn_manager_utility.cc mutateRequestHeaders, Utility::getLastAddressFromXFF).
pub fn client_address(
    direct: std::net::IpAddr,
    xff: Option<&Vec<String>>,
    trusted_hops: u32,
) -> std::net::IpAddr {
    if trusted_hops == 0 {
        return direct;
    }
    let entries: Vec<&str> = xff
        .into_iter()
        .flatten()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let n = trusted_hops as usize;
    entries
        .len()
        .checked_sub(n)
        .and_then(|i| entries[i].parse().ok())
        .unwrap_or(direct)
}

fn no_tls(steps: Vec<String>, why: String) -> Prediction {
    let mut p = refused(steps, why);
    for b in &mut p.branches {
        b.reason = b
            .reason
            .replace(": connection refused", &format!(": {HANDSHAKE_FAILS}"));
    }
    p
}

fn refused(steps: Vec<String>, why: String) -> Prediction {
    Prediction {
        steps,
        route: None,
        fault: None,
        branches: vec![Branch::unanswered(
            1.0,
            None,
            format!("{why}: connection refused"),
        )],
        mirrors: Vec::new(),
        longest_answer: std::time::Duration::ZERO,
        authz: None,
    }
}

fn status_only(
    steps: Vec<String>,
    route: Option<RouteRef>,
    status: u16,
    why: String,
) -> Prediction {
    Prediction {
        steps,
        route,
        fault: None,
        branches: vec![Branch::unanswered(1.0, Some(status), why)],
        mirrors: Vec::new(),
        longest_answer: std::time::Duration::ZERO,
        authz: None,
    }
}
