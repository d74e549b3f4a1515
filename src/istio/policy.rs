//! DestinationRule traffic policies as istiod applies them to a gateway's clusters and
//! routes (Istio 1.30.3): which policy holds for a cluster (top level, port level,
//! subset; pilot/pkg/networking/util/util.go MergeSubsetTrafficPolicy), what it makes
//! of the cluster (pilot/pkg/networking/core/cluster_traffic_policy.go
//! applyTrafficPolicy) and which hash policy a route gets
//! (pilot/pkg/networking/core/route/route.go HashForHTTPDestination).

use crate::fixtures::istio::{
    ClientTls, ConnectionPoolSettings, ConsistentHash, DestinationRule, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use crate::fixtures::{Fixtures, Item, Warning};

use super::mesh::{duration_ms, resolve_host};

/// The mesh-wide default `connectTimeout` istiod writes on every cluster (MeshConfig
/// default, pkg/config/mesh/mesh.go DefaultMeshConfig: 10s; Envoy's own is 5s).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// The four sections of a traffic policy that hold for one cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sections<'a> {
    pub tls: Option<&'a ClientTls>,
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
}

impl<'a> Sections<'a> {
    fn of(p: &'a TrafficPolicy) -> Sections<'a> {
        Sections {
            tls: p.tls.as_ref(),
            load_balancer: p.load_balancer.as_ref(),
            connection_pool: p.connection_pool.as_ref(),
            outlier_detection: p.outlier_detection.as_ref(),
        }
    }
}

/// util.go GetPortLevelTrafficPolicy: the `portLevelSettings` entry for `port` replaces
/// the whole policy (sections it leaves out fall back to the defaults, not to the
/// top level); the bool says whether one did.
fn port_level(policy: Option<&TrafficPolicy>, port: u16) -> (Option<Sections<'_>>, bool) {
    let Some(p) = policy else {
        return (None, false);
    };
    match p
        .port_level_settings
        .iter()
        .find(|s| s.port.as_ref().map(|x| x.number) == Some(port))
    {
        Some(s) => (
            Some(Sections {
                tls: s.tls.as_ref(),
                load_balancer: s.load_balancer.as_ref(),
                connection_pool: s.connection_pool.as_ref(),
                outlier_detection: s.outlier_detection.as_ref(),
            }),
            true,
        ),
        None => (Some(Sections::of(p)), false),
    }
}

/// The policy of the cluster for Service port `port`, subset policy `subset` (None for
/// the subset-less cluster): util.go MergeSubsetTrafficPolicy. A subset's section
/// replaces the DestinationRule's whole section (no field-by-field merge); a subset's
/// matching port-level entry replaces all four, absent ones included.
pub fn merged<'a>(
    top: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: u16,
) -> Sections<'a> {
    let (original, _) = port_level(top, port);
    let (sub, has_port_level) = port_level(subset, port);
    let Some(sub) = sub else {
        return original.unwrap_or_default();
    };
    let Some(mut out) = original else {
        return sub;
    };
    if sub.connection_pool.is_some() || has_port_level {
        out.connection_pool = sub.connection_pool;
    }
    if sub.outlier_detection.is_some() || has_port_level {
        out.outlier_detection = sub.outlier_detection;
    }
    if sub.load_balancer.is_some() || has_port_level {
        out.load_balancer = sub.load_balancer;
    }
    if sub.tls.is_some() || has_port_level {
        out.tls = sub.tls;
    }
    out
}

/// The DestinationRule a gateway in `gw_namespaces` uses for `fqdn`: one in the
/// gateway's namespace first, then one in the Service's namespace, then any
/// (pilot/pkg/model/sidecar.go DestinationRule, simplified: exportTo and merging of
/// several rules for one host are not modelled).
pub fn destination_rule<'a>(
    fx: &'a Fixtures,
    gw_namespaces: &[String],
    fqdn: &str,
) -> Option<&'a Item<DestinationRule>> {
    let service_ns = fx
        .services
        .iter()
        .find(|s| resolve_host(&s.name, &s.namespace) == fqdn)
        .map(|s| s.namespace.as_str());
    let mut drs: Vec<_> = fx
        .destination_rules
        .iter()
        .filter(|d| resolve_host(&d.spec.spec.host, &d.namespace) == fqdn)
        .collect();
    drs.sort_by_key(|d| {
        if gw_namespaces.contains(&d.namespace) {
            0
        } else if service_ns == Some(d.namespace.as_str()) {
            1
        } else {
            2
        }
    });
    drs.first().copied()
}

/// The TLS mode that decides whether the endpoints keep their `tlsMode: istio` EDS
/// metadata (pilot/pkg/xds/endpoints/mtls_checker.go, 1.30.3, tlsModeForDestinationRule;
/// any mode but ISTIO_MUTUAL clears it): not the cluster's merged policy. For a subset only the subset's own policy counts (no
/// fallback to the top level); a port-level entry counts only when it has `tls`. A
/// `tls` without `mode` is DISABLE (the enum's zero). None: the rule names none.
pub fn endpoint_tls_mode<'a>(
    dr: Option<&'a Item<DestinationRule>>,
    subset: Option<&str>,
    port: u16,
) -> Option<&'a str> {
    let rule = &dr?.spec.spec;
    let tp = match subset {
        None => rule.traffic_policy.as_ref(),
        Some(name) => rule
            .subsets
            .iter()
            .find(|s| s.name == name)?
            .traffic_policy
            .as_ref(),
    }?;
    let tls = tp
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().map(|x| x.number) == Some(port) && p.tls.is_some())
        .and_then(|p| p.tls.as_ref())
        .or(tp.tls.as_ref())?;
    Some(tls.mode.as_deref().unwrap_or("DISABLE"))
}

/// Envoy `lb_policy` and its config (cluster_traffic_policy.go applyLoadBalancer,
/// ApplyRingHashLoadBalancer).
#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    LeastRequest,
    RoundRobin,
    Random,
    /// `minimum_ring_size` (None: no ring_hash_lb_config).
    RingHash(Option<u64>),
    /// `table_size` (None: no maglev_lb_config).
    Maglev(Option<u64>),
}

impl LbPolicy {
    /// Envoy's name, with its config: `RING_HASH min ring 1024`.
    pub fn view(&self) -> String {
        match self {
            LbPolicy::LeastRequest => "LEAST_REQUEST".into(),
            LbPolicy::RoundRobin => "ROUND_ROBIN".into(),
            LbPolicy::Random => "RANDOM".into(),
            LbPolicy::RingHash(None) => "RING_HASH".into(),
            LbPolicy::RingHash(Some(n)) => format!("RING_HASH min ring {n}"),
            LbPolicy::Maglev(None) => "MAGLEV".into(),
            LbPolicy::Maglev(Some(n)) => format!("MAGLEV table {n}"),
        }
    }
}

/// Envoy circuit breaker thresholds (one, default priority).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

/// Envoy `outlier_detection` as applyOutlierDetection writes it (enforcing_success_rate
/// is always 0; enforcing_consecutive_* is 100 when the count is above 0, else 0).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPlan {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub interval_ms: Option<u64>,
    pub base_ejection_time_ms: Option<u64>,
    pub max_ejection_percent: Option<u32>,
}

/// What a traffic policy makes of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPolicy {
    pub lb: LbPolicy,
    pub connect_timeout_ms: u64,
    pub thresholds: Thresholds,
    /// `common_http_protocol_options.idle_timeout`.
    pub idle_timeout_ms: Option<u64>,
    /// `common_http_protocol_options.max_requests_per_connection`.
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_connection_duration`.
    pub max_connection_duration_ms: Option<u64>,
    pub outlier: Option<OutlierPlan>,
    /// `common_lb_config.healthy_panic_threshold` (set with outlierDetection).
    pub healthy_panic_threshold: Option<f64>,
}

impl Default for ClusterPolicy {
    /// What istiod writes without a DestinationRule (applyTrafficPolicy with an empty
    /// connection pool: getDefaultCircuitBreakerThresholds, every limit max uint32).
    fn default() -> Self {
        ClusterPolicy {
            lb: LbPolicy::LeastRequest,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            thresholds: Thresholds {
                max_connections: u32::MAX,
                max_pending_requests: u32::MAX,
                max_requests: u32::MAX,
                max_retries: u32::MAX,
            },
            idle_timeout_ms: None,
            max_requests_per_connection: None,
            max_connection_duration_ms: None,
            outlier: None,
            healthy_panic_threshold: None,
        }
    }
}

/// Where a policy comes from, for warnings.
pub struct PolicySource<'a> {
    pub rule: &'a Item<DestinationRule>,
    /// The cluster's name, for messages.
    pub cluster: &'a str,
}

impl PolicySource<'_> {
    fn warn(&self, warnings: &mut Vec<Warning>, message: String) {
        let w = Warning {
            at: self.rule.source.clone(),
            object: self.rule.describe(),
            message: format!("cluster {}: {message}", self.cluster),
            field: None,
        };
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }

    /// A duration field, or a warning when it is not one.
    fn duration(&self, warnings: &mut Vec<Warning>, field: &str, v: Option<&str>) -> Option<u64> {
        let v = v?;
        let ms = duration_ms(v);
        if ms.is_none() {
            self.warn(
                warnings,
                format!("{field}: {v:?} is not a duration; meshcheck ignores it (istiod rejects the rule)"),
            );
        }
        ms
    }
}

/// applyTrafficPolicy for a gateway's outbound cluster: connection pool
/// (applyConnectionPool), outlier detection (applyOutlierDetection), load balancer
/// (applyLoadBalancer). TLS is [`super::UpstreamTls`], decided beside.
pub fn cluster_policy(
    s: &Sections,
    from: Option<&PolicySource>,
    warnings: &mut Vec<Warning>,
) -> ClusterPolicy {
    let mut out = ClusterPolicy::default();
    let mut sink = Vec::new();
    let (w, src): (&mut Vec<Warning>, Option<&PolicySource>) = match from {
        Some(f) => (warnings, Some(f)),
        None => (&mut sink, None),
    };
    if let Some(cp) = s.connection_pool {
        connection_pool(&mut out, cp, src, w);
    }
    if let Some(od) = s.outlier_detection {
        outlier_detection(&mut out, od, src, w);
    }
    out.lb = load_balancer(s.load_balancer, src, w);
    out
}

fn duration(
    src: Option<&PolicySource>,
    w: &mut Vec<Warning>,
    field: &str,
    v: Option<&String>,
) -> Option<u64> {
    match src {
        Some(s) => s.duration(w, field, v.map(String::as_str)),
        None => v.and_then(|v| duration_ms(v)),
    }
}

/// A count pilot applies only when above 0 (`FIXME: zero is a valid value`).
fn positive(v: Option<i64>) -> Option<u32> {
    v.filter(|n| *n > 0)
        .map(|n| n.min(i64::from(u32::MAX)) as u32)
}

/// cluster_traffic_policy.go applyConnectionPool: http2MaxRequests -> max_requests,
/// http1MaxPendingRequests -> max_pending_requests, maxRetries -> max_retries,
/// tcp.maxConnections -> max_connections (each only when above 0); connectTimeout
/// replaces the mesh's; http.idleTimeout, else tcp.idleTimeout, maxRequestsPerConnection
/// and tcp.maxConnectionDuration go to common_http_protocol_options.
fn connection_pool(
    out: &mut ClusterPolicy,
    cp: &ConnectionPoolSettings,
    src: Option<&PolicySource>,
    w: &mut Vec<Warning>,
) {
    if let Some(h) = &cp.http {
        if let Some(n) = positive(h.http2_max_requests) {
            out.thresholds.max_requests = n;
        }
        if let Some(n) = positive(h.http1_max_pending_requests) {
            out.thresholds.max_pending_requests = n;
        }
        if let Some(n) = positive(h.max_retries) {
            out.thresholds.max_retries = n;
        }
        out.idle_timeout_ms = duration(
            src,
            w,
            "connectionPool.http.idleTimeout",
            h.idle_timeout.as_ref(),
        );
        out.max_requests_per_connection = positive(h.max_requests_per_connection);
    }
    if let Some(t) = &cp.tcp {
        if let Some(ms) = duration(
            src,
            w,
            "connectionPool.tcp.connectTimeout",
            t.connect_timeout.as_ref(),
        ) {
            out.connect_timeout_ms = ms;
        }
        if let Some(n) = positive(t.max_connections) {
            out.thresholds.max_connections = n;
        }
        out.max_connection_duration_ms = duration(
            src,
            w,
            "connectionPool.tcp.maxConnectionDuration",
            t.max_connection_duration.as_ref(),
        );
        if out.idle_timeout_ms.is_none() {
            out.idle_timeout_ms = duration(
                src,
                w,
                "connectionPool.tcp.idleTimeout",
                t.idle_timeout.as_ref(),
            );
        }
    }
}

/// cluster_traffic_policy.go applyOutlierDetection; and, whenever outlierDetection is
/// there, healthy_panic_threshold = minHealthPercent (0 when unset: no panic mode).
fn outlier_detection(
    out: &mut ClusterPolicy,
    od: &OutlierDetection,
    src: Option<&PolicySource>,
    w: &mut Vec<Warning>,
) {
    out.outlier = Some(OutlierPlan {
        consecutive_5xx: od.consecutive_5xx_errors,
        consecutive_gateway_failure: od.consecutive_gateway_errors,
        interval_ms: duration(src, w, "outlierDetection.interval", od.interval.as_ref()),
        base_ejection_time_ms: duration(
            src,
            w,
            "outlierDetection.baseEjectionTime",
            od.base_ejection_time.as_ref(),
        ),
        max_ejection_percent: positive(od.max_ejection_percent),
    });
    let min = od.min_health_percent.unwrap_or(0);
    if min >= 0 {
        out.healthy_panic_threshold = Some(min as f64);
    }
}

/// cluster_traffic_policy.go applyLoadBalancer and ApplyRingHashLoadBalancer: `simple`
/// picks the policy (unset: LEAST_REQUEST); a consistentHash overrides it with
/// MAGLEV, RING_HASH, or (neither given) RING_HASH with a 1024 (or
/// `minimumRingSize`) ring.
fn load_balancer(
    lb: Option<&LoadBalancerSettings>,
    src: Option<&PolicySource>,
    w: &mut Vec<Warning>,
) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    let mut policy = match lb.simple.as_deref() {
        Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("RANDOM") => LbPolicy::Random,
        Some("PASSTHROUGH") => {
            if let Some(s) = src {
                s.warn(
                    w,
                    "loadBalancer.simple PASSTHROUGH (an ORIGINAL_DST cluster) is not modelled: meshcheck balances with LEAST_REQUEST".into(),
                );
            }
            LbPolicy::LeastRequest
        }
        _ => LbPolicy::LeastRequest,
    };
    if let Some(ch) = &lb.consistent_hash {
        policy = ring_or_maglev(ch);
    }
    policy
}

fn ring_or_maglev(ch: &ConsistentHash) -> LbPolicy {
    if let Some(m) = &ch.maglev {
        return LbPolicy::Maglev(m.table_size.filter(|n| *n != 0));
    }
    if let Some(r) = &ch.ring_hash {
        return LbPolicy::RingHash(r.minimum_ring_size.filter(|n| *n != 0));
    }
    LbPolicy::RingHash(Some(
        ch.minimum_ring_size.filter(|n| *n != 0).unwrap_or(1024),
    ))
}

/// Envoy route `hash_policy` (route.go consistentHashToHashPolicy).
#[derive(Debug, Clone, PartialEq)]
pub enum HashPolicy {
    Header(String),
    Cookie {
        name: String,
        path: String,
        ttl_ms: Option<u64>,
    },
    SourceIp(bool),
    QueryParameter(String),
}

impl HashPolicy {
    pub fn view(&self) -> String {
        match self {
            HashPolicy::Header(h) => format!("header {}", h.to_ascii_lowercase()),
            HashPolicy::Cookie { name, path, ttl_ms } => {
                let mut v = format!("cookie {name}");
                if !path.is_empty() {
                    v.push_str(&format!(" path {path}"));
                }
                if let Some(t) = ttl_ms {
                    v.push_str(&format!(" ttl {t}ms"));
                }
                v
            }
            HashPolicy::SourceIp(b) => format!("source_ip {b}"),
            HashPolicy::QueryParameter(q) => format!("query {q}"),
        }
    }
}

/// route.go portLevelSettingsConsistentHash: only for a destination that writes its port.
fn port_level_hash(p: Option<&TrafficPolicy>, port: Option<u16>) -> Option<&ConsistentHash> {
    let port = port?;
    p?.port_level_settings
        .iter()
        .find(|s| s.port.as_ref().map(|x| x.number) == Some(port))
        .and_then(|s| ch_of(s.load_balancer.as_ref()))
}

fn ch_of(lb: Option<&LoadBalancerSettings>) -> Option<&ConsistentHash> {
    lb.and_then(|l| l.consistent_hash.as_ref())
}

/// route.go consistentHashToHashPolicy: a consistentHash without a hash key (ring or
/// maglev only) gives no hash policy.
fn hash_policy(ch: &ConsistentHash) -> Option<HashPolicy> {
    if let Some(h) = &ch.http_header_name {
        return Some(HashPolicy::Header(h.clone()));
    }
    if let Some(c) = &ch.http_cookie {
        return Some(HashPolicy::Cookie {
            name: c.name.clone(),
            path: c.path.clone().unwrap_or_default(),
            ttl_ms: c.ttl.as_deref().and_then(duration_ms),
        });
    }
    if let Some(b) = ch.use_source_ip {
        return Some(HashPolicy::SourceIp(b));
    }
    ch.http_query_parameter_name
        .as_ref()
        .map(|q| HashPolicy::QueryParameter(q.clone()))
}

/// The hash policy of a route destination (route.go HashForHTTPDestination): the
/// subset's port-level consistentHash, else the subset's, else the rule's port-level
/// one (only when the destination writes its `port`), else the top level's. This is
/// read from the rule directly, not from the merged cluster policy: a subset with
/// `simple: ROUND_ROBIN` under a top-level consistentHash keeps the top level's hash
/// policy on the route while its cluster is ROUND_ROBIN.
pub fn route_hash(
    dr: Option<&Item<DestinationRule>>,
    subset: Option<&str>,
    written_port: Option<u16>,
) -> Option<HashPolicy> {
    let rule = &dr?.spec.spec;
    let pls = |p| port_level_hash(p, written_port);
    let top = rule.traffic_policy.as_ref();
    let sub = rule
        .subsets
        .iter()
        .find(|s| s.name == subset.unwrap_or(""))
        .and_then(|s| s.traffic_policy.as_ref());
    let ch = pls(sub)
        .or_else(|| sub.and_then(|t| ch_of(t.load_balancer.as_ref())))
        .or_else(|| pls(top))
        .or_else(|| top.and_then(|t| ch_of(t.load_balancer.as_ref())))?;
    hash_policy(ch)
}

/// Sets the hash policies of `routes` (routes_of's translation of `vs` for a gateway
/// in `gw_namespace`) as pilot does (route.go processDestination and
/// processWeightedDestination append one hash policy per hashing destination to the
/// route's action; ConvertPolicy drops the previous_hosts retry predicate when the
/// route's single destination hashes).
pub fn hash_routes(
    fx: &Fixtures,
    vs: &Item<crate::fixtures::istio::VirtualService>,
    gw_namespace: &str,
    routes: &mut [super::RoutePlan],
) {
    let gw_ns = [gw_namespace.to_string()];
    for r in routes.iter_mut() {
        if r.action != super::RouteKind::Forward {
            continue;
        }
        let Some(http) = vs.spec.spec.http.get(r.http_index) else {
            continue;
        };
        let single = http.route.len() == 1;
        for d in &http.route {
            // Zero-weight destinations of a split get no cluster and no hash.
            if !single && d.weight.unwrap_or(0) <= 0 {
                continue;
            }
            let fqdn = resolve_host(&d.destination.host, &vs.namespace);
            let dr = destination_rule(fx, &gw_ns, &fqdn);
            let written = d.destination.port.as_ref().map(|p| p.number);
            if let Some(h) = route_hash(dr, d.destination.subset.as_deref(), written) {
                r.hash_policy.push(h);
                if single {
                    if let Some(retry) = r.retry.as_mut() {
                        retry.previous_hosts = false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(yaml: &str) -> TrafficPolicy {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn policy(
        top: Option<&TrafficPolicy>,
        sub: Option<&TrafficPolicy>,
        port: u16,
    ) -> ClusterPolicy {
        cluster_policy(&merged(top, sub, port), None, &mut Vec::new())
    }

    #[test]
    fn no_policy_is_istios_defaults() {
        let p = policy(None, None, 80);
        assert_eq!(p, ClusterPolicy::default());
        assert_eq!(p.lb, LbPolicy::LeastRequest);
        assert_eq!(p.connect_timeout_ms, 10_000);
        assert_eq!(p.thresholds.max_retries, u32::MAX);
        assert_eq!(p.outlier, None);
        assert_eq!(p.healthy_panic_threshold, None);
    }

    #[test]
    fn a_subset_section_replaces_the_whole_top_level_section() {
        let top = tp("connectionPool: {tcp: {maxConnections: 3}, http: {http2MaxRequests: 9}}\nloadBalancer: {simple: RANDOM}\n");
        let sub = tp("connectionPool: {http: {http1MaxPendingRequests: 2}}\n");
        let p = policy(Some(&top), Some(&sub), 80);
        // Not merged field by field: the top level's tcp and http2 limits are gone.
        assert_eq!(p.thresholds.max_connections, u32::MAX);
        assert_eq!(p.thresholds.max_requests, u32::MAX);
        assert_eq!(p.thresholds.max_pending_requests, 2);
        // A section the subset leaves out is the top level's.
        assert_eq!(p.lb, LbPolicy::Random);
    }

    #[test]
    fn a_port_level_entry_replaces_all_four_sections_and_only_on_its_port() {
        let top = tp("loadBalancer: {simple: ROUND_ROBIN}\noutlierDetection: {consecutive5xxErrors: 4}\nportLevelSettings:\n- port: {number: 80}\n  connectionPool: {tcp: {maxConnections: 7}}\n");
        let on80 = policy(Some(&top), None, 80);
        assert_eq!(on80.lb, LbPolicy::LeastRequest);
        assert_eq!(on80.outlier, None);
        assert_eq!(on80.thresholds.max_connections, 7);
        let on81 = policy(Some(&top), None, 81);
        assert_eq!(on81.lb, LbPolicy::RoundRobin);
        assert!(on81.outlier.is_some());
        // A subset's port-level entry wipes the sections it leaves out, even the
        // top level's.
        let sub =
            tp("portLevelSettings:\n- port: {number: 81}\n  loadBalancer: {simple: RANDOM}\n");
        let p = policy(Some(&top), Some(&sub), 81);
        assert_eq!(p.lb, LbPolicy::Random);
        assert_eq!(p.outlier, None);
    }

    #[test]
    fn connection_pool_counts_of_zero_keep_the_defaults() {
        let top = tp("connectionPool: {tcp: {maxConnections: 0, connectTimeout: 250ms}, http: {maxRetries: 0, idleTimeout: 1m, maxRequestsPerConnection: 0}}\n");
        let p = policy(Some(&top), None, 80);
        assert_eq!(p.thresholds.max_connections, u32::MAX);
        assert_eq!(p.thresholds.max_retries, u32::MAX);
        assert_eq!(p.connect_timeout_ms, 250);
        assert_eq!(p.idle_timeout_ms, Some(60_000));
        assert_eq!(p.max_requests_per_connection, None);
        // tcp.idleTimeout is used only without http.idleTimeout.
        let tcp_only = tp("connectionPool: {tcp: {idleTimeout: 5s}}\n");
        assert_eq!(
            policy(Some(&tcp_only), None, 80).idle_timeout_ms,
            Some(5000)
        );
    }

    #[test]
    fn outlier_detection_disables_panic_mode_by_default() {
        let top = tp("outlierDetection: {consecutive5xxErrors: 0, maxEjectionPercent: 0}\n");
        let p = policy(Some(&top), None, 80);
        let o = p.outlier.unwrap();
        assert_eq!(o.consecutive_5xx, Some(0));
        assert_eq!(o.max_ejection_percent, None);
        assert_eq!(p.healthy_panic_threshold, Some(0.0));
    }

    #[test]
    fn consistent_hash_picks_ring_or_maglev() {
        let lb = |y: &str| policy(Some(&tp(y)), None, 80).lb;
        assert_eq!(
            lb("loadBalancer: {consistentHash: {httpHeaderName: x}}"),
            LbPolicy::RingHash(Some(1024))
        );
        assert_eq!(
            lb("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 64}}"),
            LbPolicy::RingHash(Some(64))
        );
        assert_eq!(
            lb("loadBalancer: {consistentHash: {httpHeaderName: x, ringHash: {}}}"),
            LbPolicy::RingHash(None)
        );
        assert_eq!(
            lb("loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 65537}}}"),
            LbPolicy::Maglev(Some(65537))
        );
        assert_eq!(
            lb("loadBalancer: {simple: LEAST_CONN}"),
            LbPolicy::LeastRequest
        );
    }

    fn rule(yaml: &str) -> Item<DestinationRule> {
        Item {
            kind: "DestinationRule".into(),
            namespace: "ns".into(),
            name: "r".into(),
            source: Default::default(),
            spec: DestinationRule {
                metadata: Default::default(),
                spec: serde_saphyr::from_str(yaml).unwrap(),
            },
        }
    }

    #[test]
    fn route_hash_precedence_is_pilots() {
        let r = rule("host: s\ntrafficPolicy:\n  loadBalancer: {consistentHash: {httpHeaderName: top}}\n  portLevelSettings:\n  - port: {number: 80}\n    loadBalancer: {consistentHash: {httpHeaderName: top-port}}\nsubsets:\n- name: a\n  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: sub}}\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {consistentHash: {httpQueryParameterName: sub-port}}\n- name: b\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n");
        let h = |subset, port| route_hash(Some(&r), subset, port);
        assert_eq!(
            h(Some("a"), Some(80)),
            Some(HashPolicy::QueryParameter("sub-port".into()))
        );
        assert_eq!(h(Some("a"), None), Some(HashPolicy::Header("sub".into())));
        // The rule's port-level hash only when the destination writes its port.
        assert_eq!(
            h(None, Some(80)),
            Some(HashPolicy::Header("top-port".into()))
        );
        assert_eq!(h(None, None), Some(HashPolicy::Header("top".into())));
        // A subset balancing with ROUND_ROBIN still gets the top level's hash.
        assert_eq!(h(Some("b"), None), Some(HashPolicy::Header("top".into())));
        assert_eq!(route_hash(None, None, None), None);
    }

    #[test]
    fn endpoint_tls_follows_the_subset_alone_and_port_level_tls_only() {
        let r = rule("host: s\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n  portLevelSettings:\n  - port: {number: 81}\n    tls: {}\n  - port: {number: 82}\n    loadBalancer: {simple: RANDOM}\nsubsets:\n- name: a\n- name: b\n  trafficPolicy: {tls: {mode: DISABLE}}\n");
        let m = |subset, port| endpoint_tls_mode(Some(&r), subset, port);
        assert_eq!(m(None, 80), Some("ISTIO_MUTUAL"));
        assert_eq!(m(None, 81), Some("DISABLE"));
        // A port-level entry without tls leaves the top level's.
        assert_eq!(m(None, 82), Some("ISTIO_MUTUAL"));
        // A subset without a policy does not fall back to the top level.
        assert_eq!(m(Some("a"), 80), None);
        assert_eq!(m(Some("b"), 80), Some("DISABLE"));
        assert_eq!(endpoint_tls_mode(None, None, 80), None);
    }

    #[test]
    fn a_bad_duration_is_reported_not_dropped_silently() {
        let r = rule("host: s\ntrafficPolicy:\n  connectionPool: {tcp: {connectTimeout: soon}}\n");
        let mut w = Vec::new();
        let from = PolicySource {
            rule: &r,
            cluster: "outbound|80||s",
        };
        let p = cluster_policy(
            &merged(r.spec.spec.traffic_policy.as_ref(), None, 80),
            Some(&from),
            &mut w,
        );
        assert_eq!(p.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("connectTimeout"), "{}", w[0]);
    }
}
