//! Gateway listeners, routes and clusters, following pilot's gateway and route
//! builders (pilot/pkg/model/gateway.go, networking/core/route, model/service.go).

use super::pods::{plan_pods, PodPlan, PodRole};
use crate::fixtures::istio::{Gateway, StringMatch, VirtualService};
use crate::fixtures::k8s::{selects, IntOrString, Service};
use crate::fixtures::{Fixtures, Item, Source, Warning};
use std::collections::BTreeMap;

/// Kubernetes' default cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Kubernetes' NodePort range.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Everything istiod would program for the fixtures.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub trust_domain: String,
    pub pods: Vec<PodPlan>,
    /// One entry per gateway pod.
    pub gateways: Vec<GatewayProxy>,
    /// Clusters by name (`outbound|80|v1|nb-rest.atlas.svc.cluster.local`).
    pub clusters: BTreeMap<String, ClusterPlan>,
    /// Services of type LoadBalancer/NodePort in front of gateway pods.
    pub ingress_services: Vec<IngressService>,
    /// `request.gateway` names: each Gateway API Gateway (`ns/name`) to the gateway
    /// Service (`ns/name`) in front of its pods.
    pub gateway_refs: BTreeMap<String, String>,
    /// The conditions istiod's controller would write on the Gateway API objects.
    pub gateway_statuses: Vec<crate::fixtures::gateway_api::ObjectStatus>,
    /// Each pod with a sidecar (index into [`Mesh::pods`]): the mTLS its inbound
    /// listeners take per port, as PeerAuthentication makes it (peer_auth.rs).
    pub inbound_mtls: BTreeMap<usize, super::peer_auth::WorkloadMtls>,
    /// Each workload pod with a sidecar that security policies attach to (index into
    /// [`Mesh::pods`]): the filters of its inbound HTTP connection managers
    /// (authz::sidecar_plan).
    pub sidecar_authz: BTreeMap<usize, super::authz::AuthzPlan>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone)]
pub struct IngressService {
    pub namespace: String,
    pub name: String,
    pub source: Source,
    /// (service port, node port, port name)
    pub ports: Vec<(u16, u16, Option<String>)>,
}

#[derive(Debug, Clone)]
pub struct GatewayProxy {
    /// Index into [`Mesh::pods`].
    pub pod: usize,
    pub listeners: Vec<ListenerPlan>,
    /// The security filters of its HTTP connection managers (authz/).
    pub authz: super::authz::AuthzPlan,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListenerProtocol {
    Http,
    /// HTTPS terminated at the gateway (credentials are per-run on the local target).
    Https,
    /// A protocol meshcheck does not emulate (TCP, TLS passthrough): bound, no routes.
    Opaque(String),
}

#[derive(Debug, Clone)]
pub struct ListenerPlan {
    /// `0.0.0.0_8080`
    pub name: String,
    /// The port Envoy binds inside the pod (Istio's port translation).
    pub target_port: u16,
    /// The Gateway server port (the Service port it was translated from).
    pub server_port: u16,
    /// NodePorts of the Services that expose this port (kube-proxy forwards them).
    pub node_ports: Vec<u16>,
    pub protocol: ListenerProtocol,
    /// Filter chains: one shared by the HTTP servers of the port, or one per HTTPS
    /// server (matched by SNI); none for a protocol meshcheck does not emulate.
    pub chains: Vec<ChainPlan>,
}

impl ListenerPlan {
    /// The route configurations of the listener's filter chains.
    pub fn route_configs(&self) -> impl Iterator<Item = &RouteConfigPlan> {
        self.chains.iter().map(|c| &c.route_config)
    }

    /// The filter chain a connection with SNI `sni` (None: plaintext, or TLS without
    /// SNI) takes, as Envoy picks it (listener_impl filter chain matching on
    /// server_names: the exact name, then the longest `*.suffix`, then a chain
    /// without names); None: no chain matches (Envoy closes the connection).
    pub fn chain_for(&self, sni: Option<&str>) -> Option<&ChainPlan> {
        if self.protocol != ListenerProtocol::Https {
            return self.chains.first();
        }
        let sni = sni.map(str::to_ascii_lowercase);
        if let Some(sni) = &sni {
            if let Some(c) = self
                .chains
                .iter()
                .find(|c| c.server_names.iter().any(|n| n == sni))
            {
                return Some(c);
            }
            let wild = self
                .chains
                .iter()
                .flat_map(|c| c.server_names.iter().map(move |n| (n, c)))
                .filter_map(|(n, c)| {
                    let suffix = n.strip_prefix('*')?;
                    (sni.ends_with(suffix) && sni.len() > suffix.len()).then_some((suffix.len(), c))
                })
                .max_by_key(|(len, _)| *len);
            if let Some((_, c)) = wild {
                return Some(c);
            }
        }
        self.chains.iter().find(|c| c.server_names.is_empty())
    }
}

/// One filter chain of a gateway listener.
#[derive(Debug, Clone)]
pub struct ChainPlan {
    /// SNI names the chain matches (`filter_chain_match.server_names`; empty: any).
    pub server_names: Vec<String>,
    /// TLS termination (HTTPS servers).
    pub tls: Option<ServerTlsPlan>,
    /// The chain's HTTP connection manager settings.
    pub hcm: super::hcm::HcmPlan,
    pub route_config: RouteConfigPlan,
}

/// TLS `SIMPLE` termination of one Gateway server with its `credentialName`.
#[derive(Debug, Clone)]
pub struct ServerTlsPlan {
    /// `Gateway ns/name`
    pub gateway: String,
    pub source: Source,
    /// Index of the server in the Gateway.
    pub server: usize,
    /// `credentialName` as written.
    pub credential: String,
    /// The SDS resource istiod names (`kubernetes://httpbin-credential`).
    pub sds_name: String,
    pub secret_namespace: String,
    pub secret_name: String,
    /// Why the gateway gets no certificate (no such Secret, another namespace, no
    /// key material); None: it gets one (on the local target a per-run certificate).
    pub problem: Option<String>,
    /// The server's hosts (SANs of the per-run certificate).
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RouteConfigPlan {
    /// `http.8080`
    pub name: String,
    pub vhosts: Vec<VHostPlan>,
}

#[derive(Debug, Clone)]
pub struct VHostPlan {
    /// `<host>:<port>`, or `blackhole:<port>` when no VirtualService is bound.
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RoutePlan>,
    /// A server with `tls.httpsRedirect`: Envoy `require_tls: ALL` (301 to https).
    pub require_tls: bool,
    /// Envoy `include_request_attempt_count` (the upstream sees
    /// `x-envoy-attempt-count`): pilot gateway.go buildGatewayVirtualHosts sets
    /// ProxyHeaders' IncludeRequestAttemptCount (meshConfig default true) on every
    /// gateway virtual host but the route-less `blackhole:<port>` one.
    pub attempt_count: bool,
    /// The (Gateway, VirtualService) pairs whose routes it holds, in order: pilot
    /// builds one route list per pair and reuses it for every host (gateway.go
    /// buildGatewayHTTPRouteConfig, gatewayRoutes), so hosts with the same pairs hold
    /// the same route objects (what collapseDuplicateRoutes compares).
    pub route_sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(String),
    /// Envoy `path_separated_prefix`: the prefix, alone or followed by `/` (pilot
    /// route.go TranslateRouteMatch for a prefix other than `/` under Gateway API
    /// route semantics, model.UseGatewaySemantics).
    PathSeparatedPrefix(String),
}

#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// `<vs namespace>/<vs name>#<http index>.<match index>` for reports.
    pub name: String,
    /// The Envoy route's name as pilot writes it: the http route's `name`, then `.`
    /// and the match's `name` when it has one (route.go TranslateRoute).
    pub envoy_name: String,
    /// The route's decorator operation (tracing): [`route_operation`].
    pub operation: String,
    pub virtual_service: String,
    pub source: Source,
    pub http_index: usize,
    pub path: PathMatch,
    pub ignore_case: bool,
    /// Header conditions (`headers`, `withoutHeaders`, `scheme` as `:scheme`).
    pub headers: Vec<Matcher>,
    /// `@request.auth.claims...` header conditions: JWT claims, which pilot turns into
    /// dynamic metadata matchers on the JWT filter's payload (route.go
    /// translateMetadataMatch, pkg/jwt/routing.go ToRoutingClaim).
    pub claims: Vec<ClaimMatcher>,
    /// Query parameter conditions (`queryParams`).
    pub query: Vec<Matcher>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub rewrite: Option<UriRewrite>,
    pub rewrite_authority: Option<String>,
    pub request_headers: HeaderOps,
    /// `headers.response`: set, add and remove on the answer.
    pub response_headers: HeaderOps,
    pub destinations: Vec<WeightedDestination>,
    /// What the route does: forward to `destinations`, or answer at the gateway.
    pub action: RouteKind,
    /// Envoy route timeout in milliseconds (0: none, pilot's default).
    pub timeout_ms: u64,
    /// Envoy retry policy; None: retries switched off (`attempts: 0`).
    pub retry: Option<RetryPlan>,
    /// `fault` and `corsPolicy` (route_filters.rs).
    pub filters: super::route_filters::RouteFilters,
    /// `mirror` and `mirrors`: Envoy request_mirror_policies, in that order.
    pub mirrors: Vec<MirrorPlan>,
    /// Envoy `cluster_not_found_response_code`: 503 (Envoy's default), 500 under
    /// Gateway API route semantics, where a backend that is missing or not permitted
    /// answers 500 (route.go applyHTTPRouteDestination).
    pub cluster_not_found: u16,
    /// Envoy `hash_policy`, one per destination whose DestinationRule hashes
    /// (src/istio/policy.rs, route.go HashForHTTPDestination).
    pub hash_policy: Vec<super::policy::HashPolicy>,
}

/// A request mirror policy as pilot writes it (route.go, 1.30.3,
/// applyHTTPRouteDestination, MirrorPercent, MirrorPercentByPolicy,
/// TranslateRequestMirrorPolicy): the cluster named as for a route destination
/// (GetDestinationCluster: a host without Service still gets a name, with the
/// listener's port, and then no cluster: nothing is mirrored), a runtime fraction
/// (no percentage: 100/HUNDRED; `percentage.value` v: v*10000/MILLION; 0: no mirror),
/// `trace_sampled: false` and `disable_shadow_host_suffix_append: true`
/// (features.DisableShadowHostSuffix, default true: the Host gets no `-shadow`).
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPlan {
    pub cluster: String,
    /// Envoy's runtime fraction of requests mirrored.
    pub fraction: super::route_filters::Fraction,
}

/// The fraction of a percentage (None: 100/HUNDRED, pilot's default); None when the
/// percentage is 0 or less (pilot: no mirror).
fn mirror_fraction(
    p: Option<&crate::fixtures::istio::Percent>,
) -> Option<super::route_filters::Fraction> {
    use super::route_filters::Fraction;
    match p {
        None => Some(Fraction::of_integer(100)),
        Some(p) if p.value > 0.0 => Some(Fraction::of_percent(p)),
        Some(_) => None,
    }
}

/// The mirror policies of one http route (see [`MirrorPlan`]).
fn mirror_plans(
    fx: &Fixtures,
    vs: &Item<VirtualService>,
    http: &crate::fixtures::istio::HttpRoute,
    listener_port: u16,
) -> Vec<MirrorPlan> {
    let single = http
        .mirror
        .as_ref()
        .map(|d| (d, mirror_fraction(http.mirror_percentage.as_ref())));
    let listed = http.mirrors.iter().filter_map(|m| {
        Some((
            m.destination.as_ref()?,
            mirror_fraction(m.percentage.as_ref()),
        ))
    });
    single
        .into_iter()
        .chain(listed)
        .filter_map(|(d, fraction)| {
            let fraction = fraction?;
            let fqdn = resolve_host(&d.host, &vs.namespace);
            let port = destination_port(fx, d.port.as_ref().map(|p| p.number), &fqdn)
                .unwrap_or(listener_port);
            Some(MirrorPlan {
                cluster: cluster_name(port, d.subset.as_deref(), &fqdn),
                fraction,
            })
        })
        .collect()
}

/// Envoy's retry policy as pilot writes it (pilot/pkg/networking/core/route/retry/
/// retry.go, 1.30.3, ConvertPolicy): 2 attempts on
/// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with no
/// status code unless `retryOn` lists some.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPlan {
    pub attempts: u32,
    pub retry_on: String,
    pub status_codes: Vec<u32>,
    pub per_try_timeout_ms: Option<u64>,
    /// `retry_host_predicate` previous_hosts; pilot leaves it out when the route's only
    /// destination hashes (ConvertPolicy's hashPolicy).
    pub previous_hosts: bool,
}

impl Default for RetryPlan {
    fn default() -> Self {
        RetryPlan {
            attempts: 2,
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            status_codes: Vec::new(),
            per_try_timeout_ms: None,
            previous_hosts: true,
        }
    }
}

/// The retry policy of a VirtualService route (retry.go ConvertPolicy, parseRetryOn).
fn retry_plan(r: Option<&crate::fixtures::istio::HttpRetry>) -> Option<RetryPlan> {
    let Some(r) = r else {
        return Some(RetryPlan::default());
    };
    if r.attempts <= 0 {
        return None;
    }
    let mut plan = RetryPlan {
        attempts: r.attempts as u32,
        ..RetryPlan::default()
    };
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let mut words = Vec::new();
        for part in on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(code) if (100..600).contains(&code) => plan.status_codes.push(code),
                _ => words.push(part),
            }
        }
        plan.retry_on = words.join(",");
        if !plan.status_codes.is_empty() && !plan.retry_on.contains("retriable-status-codes") {
            plan.retry_on.push_str(",retriable-status-codes");
        }
    }
    plan.per_try_timeout_ms = r.per_try_timeout.as_deref().and_then(duration_ms);
    Some(plan)
}

/// A Go/protobuf duration (`1h2m3.5s`, `500ms`, `0.500s`) in milliseconds.
pub fn duration_ms(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    chars.peek()?;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                1.0
            }
            ('u' | 'µ', Some('s')) => {
                chars.next();
                0.001
            }
            ('n', Some('s')) => {
                chars.next();
                0.000_001
            }
            ('h', _) => 3_600_000.0,
            ('m', _) => 60_000.0,
            ('s', _) => 1000.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    if !num.is_empty() {
        return None;
    }
    Some(total.round() as u64)
}

/// One header or query parameter condition, as pilot translates it (route.go, 1.30.3:
/// translateHeaderMatch, translateQueryParamMatch, canBeConvertedToPresentMatch).
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    /// None: present_match (Istio turns regex `*` into "is present").
    pub value: Option<StringMatch>,
    /// `withoutHeaders`: inverted; a missing header counts as empty unless the
    /// condition is "present".
    pub invert: bool,
}

impl Matcher {
    /// pilot route.go translateHeaderMatch / translateQueryParamMatch: no match type
    /// or regex `*` is present_match (canBeConvertedToPresentMatch).
    pub fn new(name: &str, m: Option<&StringMatch>, invert: bool) -> Matcher {
        let value = match m {
            None => None,
            Some(StringMatch::Regex(r)) if r == "*" => None,
            Some(m) => Some(m.clone()),
        };
        Matcher {
            name: name.to_string(),
            value,
            invert,
        }
    }
}

/// A JWT claim condition of a route (`@request.auth.claims.groups: {exact: admin}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimMatcher {
    /// The claim and its nested claims (`group`, `id`).
    pub claims: Vec<String>,
    pub value: Option<StringMatch>,
    /// `withoutHeaders`.
    pub invert: bool,
}

/// pkg/jwt/routing.go ToRoutingClaim: the claims a header name
/// `@request.auth.claims.a.b` or `@request.auth.claims[a][b]` names (the prefix in any
/// case); None for any other header.
pub fn routing_claims(header: &str) -> Option<Vec<String>> {
    const PREFIX: &str = "@request.auth.claims";
    if !header.to_ascii_lowercase().starts_with(PREFIX) {
        return None;
    }
    let name = &header[PREFIX.len()..];
    if let Some(rest) = name.strip_prefix('.').filter(|r| !r.is_empty()) {
        return Some(rest.split('.').map(str::to_string).collect());
    }
    if name.len() > 2 && name.starts_with('[') && name.ends_with(']') {
        return Some(
            name[1..name.len() - 1]
                .split("][")
                .map(str::to_string)
                .collect(),
        );
    }
    None
}

/// A redirect the gateway answers with (Envoy RedirectAction).
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    /// `path_redirect` (empty: the request's path), or, when `prefix` is set, the
    /// `prefix_rewrite` that replaces the matched prefix (Gateway API
    /// ReplacePrefixMatch: `%PREFIX()%` in the internal route, route.go ApplyRedirect).
    pub path: String,
    pub prefix: bool,
    /// `host_redirect` (empty: the request's host).
    pub host: String,
    pub scheme: Option<String>,
    /// 0: no port in the Location.
    pub port: u32,
    pub code: u16,
}

/// Envoy's RedirectAction.RedirectResponseCode names, by HTTP status (route.go
/// ApplyRedirect); MOVED_PERMANENTLY is the enum's zero.
const REDIRECT_CODES: &[(u16, &str)] = &[
    (301, "MOVED_PERMANENTLY"),
    (302, "FOUND"),
    (303, "SEE_OTHER"),
    (307, "TEMPORARY_REDIRECT"),
    (308, "PERMANENT_REDIRECT"),
];

impl Redirect {
    /// Envoy's name for status `code`.
    pub fn envoy_code(code: u16) -> &'static str {
        REDIRECT_CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or("MOVED_PERMANENTLY", |(_, n)| n)
    }

    /// The status for Envoy's name (absent from JSON: the zero, 301).
    pub fn status_of(name: &str) -> u16 {
        REDIRECT_CODES
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(301, |(c, _)| *c)
    }
}

/// A route's action (pilot/pkg/networking/core/route/route.go, 1.30.3,
/// translateRoute: redirect, else directResponse, else the destinations).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RouteKind {
    #[default]
    Forward,
    /// Envoy `redirect` as ApplyRedirect makes it.
    Redirect(Redirect),
    /// Envoy `direct_response`.
    DirectResponse { status: u16, body: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum UriRewrite {
    /// Envoy `prefix_rewrite`.
    Prefix(String),
    /// Envoy `regex_rewrite` (pattern, substitution), from `uriRegexRewrite`.
    Regex(String, String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// These operations, then `next`'s (pilot route.go processDestination appends a
    /// single destination's operations to the route's).
    pub fn then(&self, next: &HeaderOps) -> HeaderOps {
        let mut out = self.clone();
        out.set.extend(next.set.iter().cloned());
        out.add.extend(next.add.iter().cloned());
        out.remove.extend(next.remove.iter().cloned());
        out
    }
}

#[derive(Debug, Clone)]
pub struct WeightedDestination {
    pub cluster: String,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// TLS from the gateway toward a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// No DestinationRule tls: mTLS to endpoints with `tlsMode: istio` metadata (a
    /// sidecar, and its PeerAuthentication not DISABLE at that port), plaintext
    /// otherwise. A service whose namespace is DISABLE gets [`UpstreamTls::Disable`].
    Auto,
    /// `ISTIO_MUTUAL`: always mTLS (a pod without a sidecar fails the handshake: 503).
    IstioMutual,
    /// `DISABLE`: always plaintext.
    Disable,
}

/// What decided a cluster's [`UpstreamTls`].
#[derive(Debug, Clone, PartialEq)]
pub enum TlsOrigin {
    /// A DestinationRule's `tls` (top level, subset or port level): `Kind ns/name`.
    Rule { object: String, at: Source },
    /// No `tls`: auto mTLS, with the service's mode as pilot infers it
    /// (BestEffortInferServiceMTLSMode; DISABLE turns TLS off for every endpoint).
    Auto { service: super::peer_auth::Decided },
}

#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub name: String,
    pub fqdn: String,
    pub port: u16,
    pub subset: Option<String>,
    pub tls: UpstreamTls,
    pub tls_origin: TlsOrigin,
    pub endpoints: Vec<EndpointPlan>,
    /// SPIFFE identities of the endpoints' service accounts (SAN verification).
    pub identities: Vec<String>,
    pub sni: String,
    /// Load balancing, circuit breakers, outlier detection, timeouts: the DestinationRule
    /// traffic policy that holds for this cluster (src/istio/policy.rs).
    pub policy: super::policy::ClusterPolicy,
}

#[derive(Debug, Clone)]
pub struct EndpointPlan {
    /// Index into [`Mesh::pods`].
    pub pod: usize,
    pub port: u16,
    /// EDS metadata `tlsMode: istio`: labelled `security.istio.io/tlsMode=istio` (has a
    /// sidecar) and mTLS not turned off for it (mtls_checker.go).
    pub istio_tls: bool,
}

pub fn cluster_name(port: u16, subset: Option<&str>, fqdn: &str) -> String {
    format!("outbound|{port}|{}|{fqdn}", subset.unwrap_or(""))
}

/// A host as Istio resolves it (pilot/pkg/model/service.go, 1.30.3:
/// ResolveShortnameToFQDN): a name without a dot is relative to the namespace of the
/// object that names it (`authz` in `atlas` -> `authz.atlas.svc.cluster.local`); a
/// name with a dot is taken as fully qualified (`authz.atlas` stays `authz.atlas`,
/// which names no Service); `*` and IP addresses stay as written.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.is_empty()
        || host == "*"
        || host.parse::<std::net::IpAddr>().is_ok()
        || host.contains('.')
    {
        return host.to_string();
    }
    if namespace.is_empty() {
        return format!("{host}.svc.{CLUSTER_DOMAIN}");
    }
    format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// Istio host matching: `*` matches anything, `*.x` matches subdomains of x.
pub fn host_matches(a: &str, b: &str) -> bool {
    fn covers(wild: &str, h: &str) -> bool {
        wild == "*"
            || wild == h
            || wild
                .strip_prefix('*')
                .map(|suffix| h.ends_with(suffix) && h.len() > suffix.len())
                .unwrap_or(false)
    }
    covers(a, b) || covers(b, a)
}

/// The more specific of two matching hosts.
pub(crate) fn narrower<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (a.starts_with('*'), b.starts_with('*')) {
        (true, false) => b,
        (false, _) => a,
        // Two wildcards: the longer suffix is the narrower one.
        (true, true) if b.len() > a.len() => b,
        (true, true) => a,
    }
}

impl Mesh {
    /// Builds the model. Problems that Istio would act on (a missing subset, a selector
    /// that matches nothing) are kept as they are, so the data plane fails the way
    /// Istio's would; the analysis reports them.
    pub fn build(fx: &Fixtures) -> Mesh {
        let mut warnings = fx.warnings.clone();
        let pods = plan_pods(fx, &mut warnings);
        let mut mesh = Mesh {
            trust_domain: CLUSTER_DOMAIN.to_string(),
            pods,
            gateways: Vec::new(),
            clusters: BTreeMap::new(),
            ingress_services: Vec::new(),
            gateway_refs: fx.gateway_api.services.clone(),
            gateway_statuses: fx.gateway_api.statuses.clone(),
            inbound_mtls: BTreeMap::new(),
            sidecar_authz: BTreeMap::new(),
            warnings,
        };
        let peer_authn = super::peer_auth::PeerAuthn::new(fx);
        for (i, p) in mesh.pods.iter().enumerate() {
            if p.has_sidecar() {
                mesh.inbound_mtls
                    .insert(i, peer_authn.workload(&p.namespace, &p.labels));
            }
            // A workload's sidecar gets the policies that attach to its pod, as a
            // gateway does (listener_inbound.go; authz::sidecar_plan).
            if p.role == PodRole::App && p.has_sidecar() {
                let plan =
                    super::authz::sidecar_plan(fx, &p.namespace, &p.labels, &mut mesh.warnings);
                if plan.jwt.is_some() || !plan.rbac.is_empty() || !plan.custom.is_empty() {
                    mesh.sidecar_authz.insert(i, plan);
                }
            }
        }
        mesh.ingress_services = ingress_services(fx, &mesh.pods);
        let mut vss: Vec<&Item<VirtualService>> = fx.virtual_services.iter().collect();
        // Istio orders by creation time, then name, then namespace; fixtures applied
        // together share a creation second, so name order decides.
        vss.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
        for (i, pod) in mesh.pods.iter().enumerate() {
            if pod.role != PodRole::Gateway {
                continue;
            }
            let gws: Vec<&Item<Gateway>> = fx
                .gateways
                .iter()
                .filter(|g| fx.gateway_selects(g, &pod.namespace, &pod.labels))
                .collect();
            let mut listeners =
                super::gateway::build_listeners(fx, pod, &gws, &vss, &mut mesh.warnings);
            let hops = fx
                .proxy_config(&pod.annotations)
                .num_trusted_proxies()
                .unwrap_or(0);
            for c in listeners.iter_mut().flat_map(|l| l.chains.iter_mut()) {
                c.hcm = c.hcm.clone().with_mesh(fx.path_normalization(), hops);
            }
            let authz = super::authz::plan(fx, &pod.namespace, &pod.labels, &mut mesh.warnings);
            mesh.gateways.push(GatewayProxy {
                pod: i,
                listeners,
                authz,
            });
        }
        // Clusters for every destination any VirtualService names (istiod builds them
        // whether or not a route is bound to a gateway).
        // The clusters the gateway routes name, and those of every other destination
        // whose port is known without a listener (analyses look at those too).
        let mut wanted: Vec<(String, String, u16, Option<String>)> = Vec::new();
        for r in mesh
            .gateways
            .iter()
            .flat_map(|g| g.listeners.iter())
            .flat_map(|l| l.route_configs())
            .flat_map(|rc| rc.vhosts.iter())
            .flat_map(|v| v.routes.iter())
        {
            let mirrored = r.mirrors.iter().map(|m| &m.cluster);
            for c in r.destinations.iter().map(|d| &d.cluster).chain(mirrored) {
                if let Some((port, subset, fqdn)) = parse_cluster_name(c) {
                    wanted.push((c.clone(), fqdn, port, subset));
                }
            }
        }
        // CUSTOM's ext_authz providers (authz/ext_authz.rs): istiod builds a cluster for
        // every Service; the local gateways and sidecars need the providers'.
        for e in mesh
            .gateways
            .iter()
            .map(|g| &g.authz)
            .chain(mesh.sidecar_authz.values())
            .flat_map(|a| a.custom.iter())
            .filter_map(|c| c.ext_authz.as_ref())
        {
            if let Some((port, subset, fqdn)) = parse_cluster_name(&e.cluster) {
                wanted.push((e.cluster.clone(), fqdn, port, subset));
            }
        }
        for vs in &vss {
            for http in &vs.spec.spec.http {
                for d in &http.route {
                    let fqdn = resolve_host(&d.destination.host, &vs.namespace);
                    let written = d.destination.port.as_ref().map(|p| p.number);
                    let Some(port) = destination_port(fx, written, &fqdn) else {
                        continue;
                    };
                    let subset = d.destination.subset.clone();
                    wanted.push((
                        cluster_name(port, subset.as_deref(), &fqdn),
                        fqdn,
                        port,
                        subset,
                    ));
                }
            }
        }
        let gw_namespaces: Vec<String> = mesh
            .gateways
            .iter()
            .map(|g| mesh.pods[g.pod].namespace.clone())
            .collect();
        for (name, fqdn, port, subset) in wanted {
            if mesh.clusters.contains_key(&name) {
                continue;
            }
            if let Some(c) = build_cluster(
                fx,
                &peer_authn,
                &mesh.pods,
                &gw_namespaces,
                (&fqdn, port, subset.as_deref()),
                &mut mesh.warnings,
            ) {
                mesh.clusters.insert(name, c);
            }
        }
        mesh
    }

    /// The gateway Service port `port` as exposed on the nodes: (service, nodePort).
    pub fn node_port_for(&self, port: u16) -> Option<(&IngressService, u16)> {
        self.ingress_services.iter().find_map(|s| {
            s.ports
                .iter()
                .find(|(p, _, _)| *p == port)
                .map(|(_, np, _)| (s, *np))
        })
    }

    /// The NodePort of `port` of the gateway Service `gateway` names (a Gateway API
    /// Gateway or a Service, `ns/name`), or of the ingress when None.
    pub fn node_port_via(
        &self,
        gateway: Option<&str>,
        port: u16,
    ) -> Option<(&IngressService, u16)> {
        let Some(g) = gateway else {
            return self.node_port_for(port);
        };
        let svc = self.gateway_refs.get(g).map_or(g, String::as_str);
        self.ingress_services
            .iter()
            .filter(|s| format!("{}/{}", s.namespace, s.name) == svc)
            .find_map(|s| {
                s.ports
                    .iter()
                    .find(|(p, _, _)| *p == port)
                    .map(|(_, np, _)| (s, *np))
            })
    }

    /// SPIFFE identities of the gateway pods.
    pub fn gateway_identities(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.role == PodRole::Gateway)
            .map(|p| p.spiffe_id(&self.trust_domain))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// `outbound|port|subset|fqdn` -> (port, subset, fqdn).
pub fn parse_cluster_name(name: &str) -> Option<(u16, Option<String>, String)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let fqdn = parts.next()?;
    Some((
        port,
        (!subset.is_empty()).then(|| subset.to_string()),
        fqdn.to_string(),
    ))
}

fn ingress_services(fx: &Fixtures, pods: &[PodPlan]) -> Vec<IngressService> {
    let mut used: Vec<u16> = fx
        .services
        .iter()
        .flat_map(|s| s.spec.spec.ports.iter().filter_map(|p| p.node_port))
        .collect();
    let mut out = Vec::new();
    // The API server allocates a NodePort to every port of every NodePort or
    // LoadBalancer Service, in the order they are applied, whatever pods they front:
    // the allocation is the same whichever pods are asked about.
    for s in &fx.services {
        let kind = s.spec.spec.kind();
        if kind != "LoadBalancer" && kind != "NodePort" {
            continue;
        }
        let fronts_gateway = pods.iter().any(|p| {
            p.role == PodRole::Gateway
                && p.namespace == s.namespace
                && selects(&s.spec.spec.selector, &p.labels)
        });
        let ports = s
            .spec
            .spec
            .ports
            .iter()
            .map(|p| {
                let np = p.node_port.unwrap_or_else(|| {
                    // The API server allocates one; pick the lowest free one.
                    let np = NODE_PORT_RANGE
                        .clone()
                        .find(|c| !used.contains(c))
                        .unwrap_or(30000);
                    used.push(np);
                    np
                });
                (p.port, np, p.name.clone())
            })
            .collect();
        if !fronts_gateway {
            continue;
        }
        out.push(IngressService {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            source: s.source.clone(),
            ports,
        });
    }
    out
}

/// The Services (in the gateway pod's namespace) that select the pod.
pub(crate) fn services_selecting<'a>(fx: &'a Fixtures, pod: &PodPlan) -> Vec<&'a Item<Service>> {
    fx.services
        .iter()
        .filter(|s| s.namespace == pod.namespace && selects(&s.spec.spec.selector, &pod.labels))
        .collect()
}

/// Label by which a gateway Service opts out of port translation
/// (pilot/pkg/model/gateway.go, DisableGatewayPortTranslationLabel).
const DISABLE_PORT_TRANSLATION: &str = "experimental.istio.io/disable-gateway-port-translation";

/// The port Envoy binds for Gateway server port `number` (pilot/pkg/model/gateway.go,
/// 1.30.3, resolvePorts with the legacy label selector): the targetPort of the first
/// Service port numbered `number` among the Services selecting the gateway pod; with
/// none, `number` as written.
pub(crate) fn translate_port(services: &[&Item<Service>], pod: &PodPlan, number: u16) -> u16 {
    services
        .iter()
        .filter(|s| {
            !s.spec
                .metadata
                .labels
                .contains_key(DISABLE_PORT_TRANSLATION)
        })
        .flat_map(|s| s.spec.spec.ports.iter())
        .find(|p| p.port == number)
        .and_then(|p| pod.resolve_port(&p.target_port.clone().unwrap_or(IntOrString::Int(p.port))))
        .unwrap_or(number)
}

/// The NodePorts kube-proxy forwards to `target` on the gateway pod: those of every
/// NodePort/LoadBalancer Service port whose targetPort is `target` on this pod.
pub(crate) fn node_ports_reaching(
    fx: &Fixtures,
    services: &[&Item<Service>],
    pod: &PodPlan,
    target: u16,
) -> Vec<u16> {
    let allocated = ingress_services(fx, std::slice::from_ref(pod));
    let mut out = Vec::new();
    for s in services {
        if !matches!(s.spec.spec.kind(), "LoadBalancer" | "NodePort") {
            continue;
        }
        for p in &s.spec.spec.ports {
            let t = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            if pod.resolve_port(&t) != Some(target) {
                continue;
            }
            // A NodePort the fixtures do not fix is allocated by the API server;
            // ingress_services picked it.
            let np = p.node_port.or_else(|| {
                allocated
                    .iter()
                    .filter(|i| i.name == s.name && i.namespace == s.namespace)
                    .flat_map(|i| i.ports.iter())
                    .find(|(sp, _, _)| *sp == p.port)
                    .map(|(_, np, _)| *np)
            });
            if let Some(np) = np.filter(|np| !out.contains(np)) {
                out.push(np);
            }
        }
    }
    out
}

/// pilot/pkg/networking/core/route/route.go (1.30.3), SortVHostRoutes: catch-all
/// routes (prefix `/`, nothing else to match) move to the end of the virtual host,
/// the others keep their order.
pub(crate) fn sort_catch_all_last(routes: &mut Vec<RoutePlan>) {
    let (catch_all, rest): (Vec<RoutePlan>, Vec<RoutePlan>) =
        routes.drain(..).partition(is_catch_all);
    routes.extend(rest);
    routes.extend(catch_all);
}

/// route.go IsCatchAllRoute: prefix `/` or regex `.*`, and no header or query match
/// (method and authority matches are header matches in Envoy).
fn is_catch_all(r: &RoutePlan) -> bool {
    let path = match &r.path {
        PathMatch::Prefix(p) => p == "/",
        PathMatch::Regex(x) => x == ".*",
        PathMatch::Exact(_) | PathMatch::PathSeparatedPrefix(_) => false,
    };
    path && r.headers.is_empty()
        && r.query.is_empty()
        && r.method.is_none()
        && r.authority.is_none()
}

/// Whether `vs` names `gw` in its `gateways` (Istio's namespace rules).
pub fn binds(vs: &Item<VirtualService>, gw: &Item<Gateway>) -> bool {
    vs.spec.spec.gateways.iter().any(|g| {
        let (ns, name) = match g.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (vs.namespace.as_str(), g.as_str()),
        };
        ns == gw.namespace && name == gw.name
    })
}

fn header_ops(h: Option<&crate::fixtures::istio::HeaderOperations>) -> HeaderOps {
    h.map(|h| HeaderOps {
        set: h.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        add: h.add.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        remove: h.remove.clone(),
    })
    .unwrap_or_default()
}

/// The Envoy routes for one VirtualService, in order (one per match clause).
/// A route's decorator operation, as pilot writes it (route.go GetRouteOperation):
/// `<host>:<port><path>` of the route's only cluster, else `<VirtualService
/// name>:<listener port><path>`; the path is the prefix with `*`, the exact path or the
/// regex.
fn route_operation(
    path: &PathMatch,
    destinations: &[WeightedDestination],
    action: &RouteKind,
    vs_name: &str,
    listen_port: u16,
) -> String {
    let path = match path {
        PathMatch::Prefix(p) => format!("{p}*"),
        // GetRouteOperation knows prefix, path and safe_regex; any other keeps "/*".
        PathMatch::PathSeparatedPrefix(_) => "/*".to_string(),
        PathMatch::Exact(p) | PathMatch::Regex(p) => p.clone(),
    };
    let only_cluster = match (action, destinations) {
        (RouteKind::Forward, [only]) => parse_cluster_name(&only.cluster),
        _ => None,
    };
    match only_cluster {
        Some((port, _, fqdn)) => format!("{fqdn}:{port}{path}"),
        None => format!("{vs_name}:{listen_port}{path}"),
    }
}

pub(crate) fn routes_of(
    fx: &Fixtures,
    vs: &Item<VirtualService>,
    listener_port: u16,
    is_tls: bool,
    warnings: &mut Vec<Warning>,
) -> Vec<RoutePlan> {
    let mut out = Vec::new();
    if refused_for_its_mirrors(vs, warnings) {
        return out;
    }
    let gateway_semantics =
        crate::fixtures::gateway_api::gateway_semantics(&vs.spec.metadata.annotations);
    for (hi, http) in vs.spec.spec.http.iter().enumerate() {
        // pilot route.go (1.30.3), BuildHTTPRoutesForVirtualService: an http route
        // without match is a catch-all, and so is a match Envoy takes as one
        // (IsCatchAllRoute); routes match in order, so pilot programs nothing after it
        // (istiod's validation only warns: pkg/config/validation/validation.go
        // analyzeUnreachableHTTPRules, "virtualService rule N not used (route without
        // matches defined before)").
        let mut catch_all = http.matches.is_empty();
        let action = match route_kind(http, listener_port, is_tls, gateway_semantics) {
            Ok(a) => a,
            Err(why) => {
                warnings.push(Warning {
                    at: vs.source.clone(),
                    object: vs.describe(),
                    message: format!("http[{hi}]: {why}"),
                    field: None,
                });
                if catch_all {
                    break;
                }
                continue;
            }
        };
        let rule = HttpRule {
            vs,
            http,
            index: hi,
            listener_port,
            gateway_semantics,
            destinations: weighted_destinations(fx, vs, http, listener_port),
            // Only routes that forward carry mirrors (applyHTTPRouteDestination).
            mirrors: match action {
                RouteKind::Forward => mirror_plans(fx, vs, http, listener_port),
                _ => Vec::new(),
            },
            action,
        };
        let matches = if http.matches.is_empty() {
            vec![Default::default()]
        } else {
            http.matches.clone()
        };
        for (mi, m) in matches.iter().enumerate() {
            out.push(rule.route_for(mi, m));
            if out.last().is_some_and(is_catch_all) {
                catch_all = true;
                break;
            }
        }
        if catch_all {
            break;
        }
    }
    out
}

/// istiod's validation refuses the whole VirtualService when a route has both
/// `mirror` and `mirrors` (pkg/config/validation/virtualservice.go, 1.30.3,
/// validateHTTPRoute): nothing of it is programmed. True (and warned) then.
fn refused_for_its_mirrors(vs: &Item<VirtualService>, warnings: &mut Vec<Warning>) -> bool {
    let Some(hi) = vs
        .spec
        .spec
        .http
        .iter()
        .position(|h| h.mirror.is_some() && !h.mirrors.is_empty())
    else {
        return false;
    };
    warnings.push(Warning {
        at: vs.source.clone(),
        object: vs.describe(),
        message: format!(
            "http[{hi}] has both mirror and mirrors: istiod refuses the VirtualService, none of its routes is programmed"
        ),
        field: None,
    });
    true
}

/// The destinations of one http route with their weights (route.go
/// applyHTTPRouteDestination): an unset weight is 100 for a single destination and 0
/// among several; a destination weighted 0 among several is left out.
fn weighted_destinations(
    fx: &Fixtures,
    vs: &Item<VirtualService>,
    http: &crate::fixtures::istio::HttpRoute,
    listener_port: u16,
) -> Vec<WeightedDestination> {
    let mut destinations = Vec::new();
    for d in &http.route {
        let fqdn = resolve_host(&d.destination.host, &vs.namespace);
        let port = destination_port(fx, d.destination.port.as_ref().map(|p| p.number), &fqdn)
            .unwrap_or(listener_port);
        let weight = match d.weight {
            None if http.route.len() == 1 => 100,
            None => 0,
            Some(w) if w < 0 => 0,
            Some(w) => w as u32,
        };
        if weight == 0 && http.route.len() > 1 {
            continue;
        }
        destinations.push(WeightedDestination {
            // route.go GetDestinationCluster: an invalid Gateway API backendRef
            // (no host) names "UnknownService".
            cluster: if fqdn.is_empty() {
                "UnknownService".to_string()
            } else {
                cluster_name(port, d.destination.subset.as_deref(), &fqdn)
            },
            weight,
            request_headers: header_ops(d.headers.as_ref().and_then(|h| h.request.as_ref())),
            response_headers: header_ops(d.headers.as_ref().and_then(|h| h.response.as_ref())),
        });
    }
    destinations
}

/// One http route of a VirtualService, with what its matches share: each match
/// becomes one Envoy route (route.go BuildHTTPRoutesForVirtualService).
struct HttpRule<'a> {
    vs: &'a Item<VirtualService>,
    http: &'a crate::fixtures::istio::HttpRoute,
    /// Its index in the VirtualService's `http`.
    index: usize,
    listener_port: u16,
    /// Gateway API route semantics (model.UseGatewaySemantics).
    gateway_semantics: bool,
    destinations: Vec<WeightedDestination>,
    mirrors: Vec<MirrorPlan>,
    action: RouteKind,
}

impl HttpRule<'_> {
    /// The Envoy route of match `mi` (`m`).
    fn route_for(&self, mi: usize, m: &crate::fixtures::istio::HttpMatch) -> RoutePlan {
        let (vs, http) = (self.vs, self.http);
        let path = path_match(m, self.gateway_semantics);
        let rewrite = self.uri_rewrite(&path);
        let operation = route_operation(
            &path,
            &self.destinations,
            &self.action,
            &vs.name,
            self.listener_port,
        );
        RoutePlan {
            name: format!("{}/{}#{}.{mi}", vs.namespace, vs.name, self.index),
            envoy_name: envoy_route_name(http.name.as_deref(), m.name.as_deref()),
            operation,
            virtual_service: vs.describe(),
            source: vs.source.clone(),
            http_index: self.index,
            path,
            ignore_case: m.ignore_uri_case,
            headers: header_matchers(m),
            claims: claim_matchers(m),
            query: m
                .query_params
                .iter()
                .map(|(k, v)| Matcher::new(k, v.0.as_ref(), false))
                .collect(),
            method: m.method.clone(),
            authority: m.authority.clone(),
            rewrite,
            rewrite_authority: http.rewrite.as_ref().and_then(|r| r.authority.clone()),
            request_headers: header_ops(http.headers.as_ref().and_then(|h| h.request.as_ref())),
            response_headers: header_ops(http.headers.as_ref().and_then(|h| h.response.as_ref())),
            destinations: self.destinations.clone(),
            action: self.action.clone(),
            // pilot route.go setTimeout and retry.ConvertPolicy; routes the
            // gateway answers itself carry neither.
            timeout_ms: http.timeout.as_deref().and_then(duration_ms).unwrap_or(0),
            retry: retry_plan(http.retries.as_ref()),
            filters: super::route_filters::RouteFilters::of(http),
            mirrors: self.mirrors.clone(),
            hash_policy: Vec::new(),
            cluster_not_found: if self.gateway_semantics { 500 } else { 503 },
        }
    }

    /// pilot/pkg/networking/core/route/route.go (1.30.3), applyHTTPRouteDestination:
    /// `uriRegexRewrite` becomes Envoy regex_rewrite; otherwise `uri` becomes
    /// prefix_rewrite, whatever the match (the prefix-stripping regex form is only for
    /// Gateway API routes, model.UseGatewaySemantics). So `prefix: /a` rewritten to `/`
    /// sends `/a/items` on as `//items` (istio/istio#26828).
    fn uri_rewrite(&self, path: &PathMatch) -> Option<UriRewrite> {
        let rewrite = self.http.rewrite.as_ref()?;
        match (&rewrite.uri_regex_rewrite, &rewrite.uri) {
            (Some(rr), _) => Some(UriRewrite::Regex(rr.pattern.clone(), rr.rewrite.clone())),
            // Gateway API ReplacePrefixMatch `/` removes the prefix without leaving a
            // double slash (route.go applyHTTPRouteDestination, UseGatewaySemantics).
            (None, Some(uri)) if self.gateway_semantics && uri == "/" => {
                let prefix = match path {
                    PathMatch::PathSeparatedPrefix(p) => p.as_str(),
                    _ => "",
                };
                Some(UriRewrite::Regex(
                    format!("^{}(/?)(.*)", quote_meta(prefix)),
                    r"/\2".to_string(),
                ))
            }
            (None, Some(uri)) if !uri.is_empty() => Some(UriRewrite::Prefix(uri.clone())),
            _ => None,
        }
    }
}

/// The path match of `m` (none: prefix `/`); under Gateway API semantics a prefix
/// other than `/` is path-separated (route.go TranslateRouteMatch).
fn path_match(m: &crate::fixtures::istio::HttpMatch, gateway_semantics: bool) -> PathMatch {
    match &m.uri {
        None => PathMatch::Prefix("/".into()),
        Some(StringMatch::Prefix(p)) if gateway_semantics && p != "/" => {
            PathMatch::PathSeparatedPrefix(p.trim_end_matches('/').to_string())
        }
        Some(StringMatch::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(StringMatch::Exact(p)) => PathMatch::Exact(p.clone()),
        Some(StringMatch::Regex(p)) => PathMatch::Regex(p.clone()),
    }
}

/// The Envoy route's name: the http route's name, with `.` and the match's name when
/// it has one (route.go TranslateRoute).
fn envoy_route_name(route: Option<&str>, matched: Option<&str>) -> String {
    match matched {
        Some(mn) if !mn.is_empty() => format!("{}.{mn}", route.unwrap_or("")),
        _ => route.unwrap_or_default().to_string(),
    }
}

/// The header matchers of `m` (headers, withoutHeaders, scheme); the JWT claim
/// pseudo-headers are [`claim_matchers`].
fn header_matchers(m: &crate::fixtures::istio::HttpMatch) -> Vec<Matcher> {
    let with = m
        .headers
        .iter()
        .filter(|(k, _)| routing_claims(k).is_none())
        .map(|(k, v)| Matcher::new(k, v.0.as_ref(), false));
    let without = m
        .without_headers
        .iter()
        .filter(|(k, _)| routing_claims(k).is_none())
        .map(|(k, v)| Matcher::new(k, v.0.as_ref(), true));
    let scheme = m
        .scheme
        .iter()
        .map(|v| Matcher::new(":scheme", Some(v), false));
    with.chain(without).chain(scheme).collect()
}

/// The `@request.auth.claims` matchers of `m`, in headers then withoutHeaders.
fn claim_matchers(m: &crate::fixtures::istio::HttpMatch) -> Vec<ClaimMatcher> {
    m.headers
        .iter()
        .map(|(k, v)| (k, v, false))
        .chain(m.without_headers.iter().map(|(k, v)| (k, v, true)))
        .filter_map(|(k, v, invert)| {
            routing_claims(k).map(|claims| ClaimMatcher {
                claims,
                value: v.0.clone(),
                invert,
            })
        })
        .collect()
}

/// A route's action as pilot translates it (route.go, 1.30.3: translateRoute,
/// ApplyRedirect, ApplyDirectResponse); Err: a route meshcheck cannot take.
fn route_kind(
    http: &crate::fixtures::istio::HttpRoute,
    listener_port: u16,
    is_tls: bool,
    gateway_semantics: bool,
) -> Result<RouteKind, String> {
    if let Some(r) = &http.redirect {
        let mut port = match (r.port, r.derive_port.as_deref()) {
            (Some(p), _) => p,
            (None, Some("FROM_REQUEST_PORT")) => u32::from(listener_port),
            _ => 0,
        };
        if r.port.is_some() || r.derive_port.is_some() {
            let scheme = r.scheme.clone().unwrap_or_else(|| {
                if is_tls {
                    "https".into()
                } else {
                    "http".into()
                }
            });
            // No explicit :80 or :443 for http and https.
            if (port == 80 && scheme == "http") || (port == 443 && scheme == "https") {
                port = 0;
            }
        }
        let code = match r.redirect_code.unwrap_or(0) {
            0 | 301 => 301,
            c @ (302 | 303 | 307 | 308) => c as u16,
            c => return Err(format!("redirectCode {c}: pilot programs no action for it")),
        };
        let uri = r.uri.clone().unwrap_or_default();
        let prefix = gateway_semantics
            .then(|| uri.strip_prefix("%PREFIX()%"))
            .flatten();
        return Ok(RouteKind::Redirect(Redirect {
            path: prefix.map(str::to_string).unwrap_or(uri.clone()),
            prefix: prefix.is_some(),
            host: r.authority.clone().unwrap_or_default(),
            scheme: r.scheme.clone(),
            port,
            code,
        }));
    }
    if let Some(d) = &http.direct_response {
        let body = d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(b64)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .ok()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            }
            _ => None,
        });
        return Ok(RouteKind::DirectResponse {
            status: d.status as u16,
            body,
        });
    }
    if http.route.is_empty() {
        return Err("has no route, redirect or directResponse (delegate is not modelled)".into());
    }
    Ok(RouteKind::Forward)
}

/// The port of a destination's cluster name (pilot/pkg/networking/core/route/route.go,
/// 1.30.3, GetDestinationCluster): the port as written; else the only port of the
/// Service; else (None) the gateway server's port.
pub fn destination_port(fx: &Fixtures, written: Option<u16>, fqdn: &str) -> Option<u16> {
    if written.is_some() {
        return written;
    }
    let svc = fx
        .services
        .iter()
        .find(|s| resolve_host(&s.name, &s.namespace) == fqdn)?;
    match svc.spec.spec.ports.as_slice() {
        [only] => Some(only.port),
        _ => None,
    }
}

/// The cluster for a destination, with its endpoints. `None` when the host names no
/// Service or a subset is named that no DestinationRule defines: Istio then routes to
/// a cluster that does not exist (503 NC).
fn build_cluster(
    fx: &Fixtures,
    peer_authn: &super::peer_auth::PeerAuthn,
    pods: &[PodPlan],
    gw_namespaces: &[String],
    (fqdn, port, subset): (&str, u16, Option<&str>),
    warnings: &mut Vec<Warning>,
) -> Option<ClusterPlan> {
    // istiod builds clusters only for Services it knows (a host naming none, e.g. the
    // dotted `authz.atlas`, has no cluster: 503 NC).
    let service = fx
        .services
        .iter()
        .find(|s| resolve_host(&s.name, &s.namespace) == fqdn);
    service?;
    // istiod builds a cluster per Service port: a destination port the Service does
    // not have names no cluster (503 NC).
    let svc_port = service.and_then(|s| s.spec.spec.ports.iter().find(|p| p.port == port).cloned());
    svc_port.as_ref()?;
    // DestinationRule: the gateway's namespace first, then the service's, then any.
    let dr = super::policy::destination_rule(fx, gw_namespaces, fqdn);
    let subset_def = match subset {
        Some(name) => Some(dr?.spec.spec.subsets.iter().find(|s| s.name == name)?),
        None => None,
    };
    // The policy for this Service port and subset (util.go MergeSubsetTrafficPolicy).
    let sections = super::policy::merged(
        dr.and_then(|d| d.spec.spec.traffic_policy.as_ref()),
        subset_def.and_then(|s| s.traffic_policy.as_ref()),
        port,
    );
    let name = cluster_name(port, subset, fqdn);
    let from = dr.map(|rule| super::policy::PolicySource {
        rule,
        cluster: &name,
    });
    let policy = super::policy::cluster_policy(&sections, from.as_ref(), warnings);
    // pilot/pkg/networking/core/cluster_tls.go (1.30.3) buildUpstreamTLSSettings: no
    // `tls` is auto-mTLS, unless the service's inferred mode (cluster_builder.go:
    // BestEffortInferServiceMTLSMode, its namespace's PeerAuthentication) is DISABLE:
    // then no TLS at all; a `tls` without `mode` is the enum's zero, DISABLE.
    let service_ns = service.map_or("", |s| s.namespace.as_str());
    let tls_origin = match (sections.tls, dr) {
        (Some(_), Some(rule)) => TlsOrigin::Rule {
            object: rule.describe(),
            at: rule.source.clone(),
        },
        _ => TlsOrigin::Auto {
            service: peer_authn.service_mode(service_ns),
        },
    };
    let tls = match sections.tls.map(|t| t.mode.as_deref()) {
        None => match &tls_origin {
            TlsOrigin::Auto { service } if service.mode == super::peer_auth::MtlsMode::Disable => {
                UpstreamTls::Disable
            }
            _ => UpstreamTls::Auto,
        },
        Some(Some("ISTIO_MUTUAL")) => UpstreamTls::IstioMutual,
        Some(None | Some("DISABLE")) => UpstreamTls::Disable,
        Some(Some(other)) => {
            // SIMPLE and MUTUAL originate TLS with the rule's own certificates, which
            // the local target does not have: said, never silently auto-mTLS.
            if let Some(rule) = dr {
                warnings.push(Warning {
                    at: rule.source.clone(),
                    object: rule.describe(),
                    message: format!(
                        "cluster {name}: trafficPolicy.tls.mode {other} is not modelled by meshcheck (TLS origination with the rule's certificates); meshcheck uses auto mTLS, istiod would not"
                    ),
                    field: None,
                });
            }
            UpstreamTls::Auto
        }
    };
    let port_number = svc_port.as_ref().map(|p| p.port).unwrap_or(port);
    let endpoint_dr_mode = super::policy::endpoint_tls_mode(dr, subset, port);
    let mut endpoints = Vec::new();
    let mut identities = Vec::new();
    if let (Some(s), Some(sp)) = (service, &svc_port) {
        for (i, p) in pods.iter().enumerate() {
            if p.namespace != s.namespace
                || p.role != PodRole::App
                || !selects(&s.spec.spec.selector, &p.labels)
            {
                continue;
            }
            if let Some(sd) = subset_def {
                if !sd.labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)) {
                    continue;
                }
            }
            let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
            let Some(tp) = p.resolve_port(&target) else {
                continue;
            };
            endpoints.push(EndpointPlan {
                pod: i,
                port: tp,
                // EDS metadata `tlsMode` (pilot/pkg/xds/endpoints/endpoint_builder.go
                // buildEnvoyLbEndpoint): the pod's label, cleared when mTLS is off
                // (mtls_checker.go checkMtlsEnabled: a rule naming a mode other than
                // ISTIO_MUTUAL for this subset and port; without one, the workload's
                // PeerAuthentication DISABLE at the endpoint port).
                istio_tls: p
                    .labels
                    .get("security.istio.io/tlsMode")
                    .is_some_and(|v| v == "istio")
                    && match endpoint_dr_mode {
                        Some(m) => m == "ISTIO_MUTUAL",
                        None => {
                            peer_authn
                                .workload(&p.namespace, &p.labels)
                                .for_port(tp)
                                .mode
                                != super::peer_auth::MtlsMode::Disable
                        }
                    },
            });
            let id = p.spiffe_id(CLUSTER_DOMAIN);
            if !identities.contains(&id) {
                identities.push(id);
            }
        }
    }
    Some(ClusterPlan {
        policy,
        name,
        fqdn: fqdn.to_string(),
        port: port_number,
        subset: subset.map(str::to_string),
        tls,
        tls_origin,
        endpoints,
        identities,
        sni: format!("outbound_.{port_number}_.{}_.{fqdn}", subset.unwrap_or("")),
    })
}

/// Go's regexp.QuoteMeta (what pilot quotes a prefix with): only `\.+*?()|[]{}^$`
/// are escaped, so the regex istiod writes is reproduced byte for byte.
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
