//! Envoy bootstrap configuration for the local target, built from the Istio model the
//! way istiod programs its proxies: the gateway's listeners, routes and
//! `outbound|port|subset|fqdn` clusters with Istio's TLS modes and auto-mTLS
//! transport-socket matching; each sidecar's inbound listener accepting Istio mTLS
//! (and plaintext, PERMISSIVE) and forwarding XFCC to the app.

use super::certs::CertFiles;
use crate::fixtures::istio::StringMatch;
use crate::istio::authz::AuthzPlan;
use crate::istio::peer_auth::MtlsMode;
use crate::istio::policy::{ClusterPolicy, HashPolicy, LbPolicy, OutlierPlan};
use crate::istio::{
    ChainPlan, ClaimMatcher, ClusterPlan, CorsPlan, FaultPlan, Fraction, HeaderOps, ListenerPlan,
    ListenerProtocol, Matcher, Mesh, MirrorPlan, PathMatch, Redirect, RetryPlan, RouteFilters,
    RouteKind, RoutePlan, UpstreamTls, UriRewrite,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// Where the pods of the mesh live on this machine.
pub struct Addresses<'a> {
    pub node: Ipv4Addr,
    /// Pod index -> pod IP.
    pub pod_ip: &'a [Ipv4Addr],
}

fn pipe(path: &Path) -> Value {
    json!({"pipe": {"path": path.to_string_lossy()}})
}

fn sock(ip: Ipv4Addr, port: u16) -> Value {
    json!({"socket_address": {"address": ip.to_string(), "port_value": port}})
}

fn tls_files(c: &CertFiles) -> Value {
    json!([{ "certificate_chain": {"filename": c.cert.to_string_lossy()},
             "private_key": {"filename": c.key.to_string_lossy()} }])
}

fn string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(v) => json!({"exact": v}),
        StringMatch::Prefix(v) => json!({"prefix": v}),
        StringMatch::Regex(v) => json!({"safe_regex": {"regex": v}}),
    }
}

/// A route's JWT claim condition as pilot writes it (route.go translateMetadataMatch:
/// authz MetadataMatcherForJWTClaims, a list containing the value or the value).
fn claim_matcher(c: &ClaimMatcher) -> Value {
    let mut path = vec![json!({"key": "payload"})];
    path.extend(c.claims.iter().map(|k| json!({ "key": k })));
    let value = c
        .value
        .as_ref()
        .map(string_match)
        .unwrap_or_else(|| json!({}));
    let mut m = json!({"filter": "envoy.filters.http.jwt_authn", "path": path,
        "value": {"or_match": {"value_matchers": [
            {"list_match": {"one_of": {"string_match": value}}},
            {"string_match": value}]}}});
    if c.invert {
        m["invert"] = json!(true);
    }
    m
}

fn headers_to_add(ops: &HeaderOps) -> Vec<Value> {
    let mut out: Vec<Value> = ops
        .set
        .iter()
        .map(|(k, v)| json!({"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}))
        .collect();
    // `add` is APPEND_IF_EXISTS_OR_ADD, the enum's zero value: pilot (route.go
    // translateAppendHeaders) leaves it at that, so istiod's config does not spell it.
    out.extend(
        ops.add
            .iter()
            .map(|(k, v)| json!({"header": {"key": k, "value": v}})),
    );
    out
}

/// The gateway's HTTP filters as pilot orders them (listener.go
/// buildHTTPConnectionManager; Istio's own extensions are left out, as with istiod's
/// feature flags): the security filters (RBAC: authz/), fault and CORS, empty (the
/// routes' typed_per_filter_config decides), then the router.
fn gateway_http_filters(authz: &AuthzPlan) -> Value {
    let mut filters = authz.http_filters();
    filters.extend([
        json!({"name": "envoy.filters.http.fault",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}}),
        json!({"name": "envoy.filters.http.cors",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
        router_filter(),
    ]);
    Value::Array(filters)
}

fn fraction(f: &Fraction) -> Value {
    json!({"numerator": f.numerator, "denominator": f.denominator_name()})
}

/// pilot route.go TranslateFault.
fn fault_config(f: &FaultPlan) -> Value {
    let mut v =
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
    if let Some(d) = &f.delay {
        v["delay"] = json!({"fixed_delay": format!("{:.3}s", d.fixed_delay_ms as f64 / 1000.0),
                            "percentage": fraction(&d.percentage)});
    }
    if let Some(a) = &f.abort {
        v["abort"] = json!({"http_status": a.http_status});
        if let Some(p) = &a.percentage {
            v["abort"]["percentage"] = fraction(p);
        }
    }
    v
}

/// pilot route.go TranslateCORSPolicy.
fn cors_config(c: &CorsPlan) -> Value {
    let mut v = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": c.allow_origins.iter().map(string_match).collect::<Vec<_>>(),
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "forward_not_matching_preflights": c.forward_not_matching_preflights,
    });
    for (k, s) in [
        ("allow_methods", &c.allow_methods),
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        if !s.is_empty() {
            v[k] = json!(s);
        }
    }
    if let Some(s) = c.max_age_s {
        v["max_age"] = json!(s.to_string());
    }
    if let Some(b) = c.allow_credentials {
        v["allow_credentials"] = json!(b);
    }
    v
}

/// pilot route.go TranslateRoute: `typed_per_filter_config` for fault and CORS.
fn per_filter_config_into(out: &mut Value, f: &RouteFilters) {
    let mut m = serde_json::Map::new();
    if let Some(fault) = &f.fault {
        m.insert("envoy.filters.http.fault".into(), fault_config(fault));
    }
    if let Some(cors) = &f.cors {
        m.insert("envoy.filters.http.cors".into(), cors_config(cors));
    }
    if !m.is_empty() {
        out["typed_per_filter_config"] = Value::Object(m);
    }
}

fn router_filter() -> Value {
    json!({"name": "envoy.filters.http.router",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// Istio's default route retry policy.
/// Envoy's retry policy as pilot writes it (retry.go ConvertPolicy).
fn retry_policy(r: &RetryPlan) -> Value {
    let mut v = json!({
        "retry_on": r.retry_on,
        "num_retries": r.attempts,
        "host_selection_retry_max_attempts": "5",
    });
    if r.previous_hosts {
        v["retry_host_predicate"] = json!([{"name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]);
    }
    if !r.status_codes.is_empty() {
        v["retriable_status_codes"] = json!(r.status_codes);
    }
    if let Some(ms) = r.per_try_timeout_ms {
        v["per_try_timeout"] = json!(format!("{:.3}s", ms as f64 / 1000.0));
    }
    v
}

/// A header or query condition as pilot writes it (route.go translateHeaderMatch):
/// present_match, or string_match; withoutHeaders inverted, a missing header read as
/// empty unless the condition is "present".
fn matcher(m: &Matcher) -> Value {
    let mut v = match &m.value {
        None => json!({"name": m.name, "present_match": true}),
        Some(sm) => json!({"name": m.name, "string_match": string_match(sm)}),
    };
    if m.invert {
        v["invert_match"] = json!(true);
        if m.value.is_some() {
            v["treat_missing_header_as_empty"] = json!(true);
        }
    }
    v
}

/// A route the gateway answers itself, as pilot writes it (route.go ApplyRedirect,
/// ApplyDirectResponse): (`redirect` | `direct_response`, its value).
fn gateway_answer(kind: &RouteKind) -> Option<(&'static str, Value)> {
    match kind {
        RouteKind::Forward => None,
        RouteKind::Redirect(r) => {
            let path_key = if r.prefix {
                "prefix_rewrite"
            } else {
                "path_redirect"
            };
            let mut v = json!({path_key: r.path, "host_redirect": r.host,
                               "response_code": Redirect::envoy_code(r.code)});
            if let Some(s) = &r.scheme {
                v["scheme_redirect"] = json!(s);
            }
            if r.port != 0 {
                v["port_redirect"] = json!(r.port);
            }
            Some(("redirect", v))
        }
        RouteKind::DirectResponse { status, body } => {
            let mut d = json!({ "status": status });
            if let Some(b) = body {
                d["body"] = json!({ "inline_string": b });
            }
            Some(("direct_response", d))
        }
    }
}

/// A gateway route as Envoy JSON, as pilot writes it (route.go TranslateRoute).
pub(crate) fn route(r: &RoutePlan) -> Value {
    let mut m = serde_json::Map::new();
    match &r.path {
        PathMatch::Prefix(p) => m.insert("prefix".into(), json!(p)),
        PathMatch::Exact(p) => m.insert("path".into(), json!(p)),
        PathMatch::Regex(p) => m.insert("safe_regex".into(), json!({"regex": p})),
        PathMatch::PathSeparatedPrefix(p) => m.insert("path_separated_prefix".into(), json!(p)),
    };
    m.insert("case_sensitive".into(), json!(!r.ignore_case));
    let mut headers: Vec<Value> = r.headers.iter().map(matcher).collect();
    if !r.query.is_empty() {
        m.insert(
            "query_parameters".into(),
            json!(r.query.iter().map(matcher).collect::<Vec<_>>()),
        );
    }
    if let Some(meth) = &r.method {
        headers.push(json!({"name": ":method", "string_match": string_match(meth)}));
    }
    if let Some(auth) = &r.authority {
        headers.push(json!({"name": ":authority", "string_match": string_match(auth)}));
    }
    if !headers.is_empty() {
        m.insert("headers".into(), json!(headers));
    }
    if !r.claims.is_empty() {
        m.insert(
            "dynamic_metadata".into(),
            json!(r.claims.iter().map(claim_matcher).collect::<Vec<_>>()),
        );
    }
    if let Some(answer) = gateway_answer(&r.action) {
        let mut out =
            json!({"name": r.envoy_name, "match": m, "decorator": {"operation": r.operation}});
        let (key, value) = answer;
        out[key] = value;
        header_ops_into(&mut out, "request", &r.request_headers);
        header_ops_into(&mut out, "response", &r.response_headers);
        per_filter_config_into(&mut out, &r.filters);
        return out;
    }
    let mut action = serde_json::Map::new();
    if r.destinations.len() == 1 {
        action.insert("cluster".into(), json!(r.destinations[0].cluster));
    } else {
        let clusters: Vec<Value> = r
            .destinations
            .iter()
            .map(|d| {
                let mut c = json!({"name": d.cluster, "weight": d.weight});
                header_ops_into(&mut c, "request", &d.request_headers);
                header_ops_into(&mut c, "response", &d.response_headers);
                c
            })
            .collect();
        action.insert("weighted_clusters".into(), json!({"clusters": clusters}));
    }
    action.insert(
        "timeout".into(),
        json!(format!("{:.3}s", r.timeout_ms as f64 / 1000.0)),
    );
    // route.go applyHTTPRouteDestination: Gateway API routes answer 500 for a backend
    // that is missing or not permitted (Envoy's default is 503).
    if r.cluster_not_found == 500 {
        action.insert(
            "cluster_not_found_response_code".into(),
            json!("INTERNAL_SERVER_ERROR"),
        );
    }
    if let Some(retry) = &r.retry {
        action.insert("retry_policy".into(), retry_policy(retry));
    }
    if !r.hash_policy.is_empty() {
        action.insert(
            "hash_policy".into(),
            json!(r.hash_policy.iter().map(hash_policy).collect::<Vec<_>>()),
        );
    }
    match &r.rewrite {
        Some(UriRewrite::Prefix(p)) => {
            action.insert("prefix_rewrite".into(), json!(p));
        }
        Some(UriRewrite::Regex(pat, sub)) => {
            action.insert(
                "regex_rewrite".into(),
                json!({"pattern": {"regex": pat}, "substitution": sub}),
            );
        }
        None => {}
    }
    if let Some(a) = &r.rewrite_authority {
        action.insert("host_rewrite_literal".into(), json!(a));
    }
    if !r.mirrors.is_empty() {
        action.insert(
            "request_mirror_policies".into(),
            json!(r.mirrors.iter().map(mirror_policy).collect::<Vec<_>>()),
        );
    }
    let mut out = json!({"name": r.envoy_name, "match": m, "route": action,
                         "decorator": {"operation": r.operation}});
    // pilot (route.go processDestination): a single destination's header operations
    // go on the route, after the route's own.
    let (req, resp) = match r.destinations.as_slice() {
        [only] => (
            r.request_headers.then(&only.request_headers),
            r.response_headers.then(&only.response_headers),
        ),
        _ => (r.request_headers.clone(), r.response_headers.clone()),
    };
    header_ops_into(&mut out, "request", &req);
    header_ops_into(&mut out, "response", &resp);
    per_filter_config_into(&mut out, &r.filters);
    out
}

/// A request mirror policy as pilot writes it (route.go TranslateRequestMirrorPolicy).
fn mirror_policy(m: &MirrorPlan) -> Value {
    json!({"cluster": m.cluster,
           "runtime_fraction": {"default_value": fraction(&m.fraction)},
           "trace_sampled": false,
           "disable_shadow_host_suffix_append": true})
}

/// `<which>_headers_to_add` / `_to_remove` on a route or weighted cluster.
fn header_ops_into(v: &mut Value, which: &str, ops: &HeaderOps) {
    let add = headers_to_add(ops);
    if !add.is_empty() {
        v[format!("{which}_headers_to_add")] = json!(add);
    }
    if !ops.remove.is_empty() {
        v[format!("{which}_headers_to_remove")] = json!(ops.remove);
    }
}

/// The HTTP connection manager of gateway filter chain `c`: the model's settings
/// (HcmPlan, as istiod writes them), the route configuration inline, the filters.
fn gateway_hcm(c: &ChainPlan, authz: &AuthzPlan) -> Value {
    let rc = &c.route_config;
    let vhosts: Vec<Value> = rc
        .vhosts
        .iter()
        .map(|vh| {
            let mut v = json!({"name": vh.name, "domains": vh.domains,
                         "routes": vh.routes.iter().map(route).collect::<Vec<_>>()});
            if vh.require_tls {
                v["require_tls"] = json!("ALL");
            }
            if vh.attempt_count {
                v["include_request_attempt_count"] = json!(true);
            }
            v
        })
        .collect();
    let mut config = c.hcm.envoy_fields();
    config.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
    );
    config.insert(
        "route_config".into(),
        json!({"name": rc.name, "validate_clusters": false, "virtual_hosts": vhosts}),
    );
    config.insert("http_filters".into(), gateway_http_filters(authz));
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": config})
}

fn upstream_tls(c: &ClusterPlan, gw_cert: &CertFiles, root: &Path) -> Value {
    let mut validation = json!({"trusted_ca": {"filename": root.to_string_lossy()}});
    if !c.identities.is_empty() {
        validation["match_typed_subject_alt_names"] = json!(c
            .identities
            .iter()
            .map(|id| json!({"san_type": "URI", "matcher": {"exact": id}}))
            .collect::<Vec<_>>());
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": c.sni,
            "common_tls_context": {
                "alpn_protocols": ["istio-peer-exchange", "istio"],
                "tls_certificates": tls_files(gw_cert),
                "validation_context": validation
            }
        }
    })
}

/// A route's hash policy as pilot writes it (route.go consistentHashToHashPolicy).
fn hash_policy(h: &HashPolicy) -> Value {
    match h {
        HashPolicy::Header(name) => json!({"header": {"header_name": name}}),
        HashPolicy::Cookie { name, path, ttl_ms } => {
            let mut c = json!({"name": name});
            if !path.is_empty() {
                c["path"] = json!(path);
            }
            if let Some(ms) = ttl_ms {
                c["ttl"] = json!(seconds(*ms));
            }
            json!({ "cookie": c })
        }
        HashPolicy::SourceIp(b) => json!({"connection_properties": {"source_ip": b}}),
        HashPolicy::QueryParameter(q) => json!({"query_parameter": {"name": q}}),
    }
}

/// A protobuf Duration in JSON (`1.500s`).
fn seconds(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

/// The traffic policy's part of a cluster, as pilot's applyTrafficPolicy writes it
/// (cluster_traffic_policy.go: applyConnectionPool, applyOutlierDetection,
/// applyLoadBalancer, ApplyRingHashLoadBalancer).
pub(crate) fn apply_policy(out: &mut Value, p: &ClusterPolicy) {
    out["connect_timeout"] = json!(seconds(p.connect_timeout_ms));
    let (lb, config) = match &p.lb {
        LbPolicy::LeastRequest => ("LEAST_REQUEST", None),
        LbPolicy::RoundRobin => ("ROUND_ROBIN", None),
        LbPolicy::Random => ("RANDOM", None),
        LbPolicy::RingHash(n) => (
            "RING_HASH",
            n.map(|n| {
                (
                    "ring_hash_lb_config",
                    json!({"minimum_ring_size": n.to_string()}),
                )
            }),
        ),
        LbPolicy::Maglev(n) => (
            "MAGLEV",
            n.map(|n| ("maglev_lb_config", json!({"table_size": n.to_string()}))),
        ),
    };
    out["lb_policy"] = json!(lb);
    if let Some((key, v)) = config {
        out[key] = v;
    }
    let t = &p.thresholds;
    out["circuit_breakers"] = json!({"thresholds": [{
        "max_connections": t.max_connections,
        "max_pending_requests": t.max_pending_requests,
        "max_requests": t.max_requests,
        "max_retries": t.max_retries,
    }]});
    let mut common = serde_json::Map::new();
    if let Some(ms) = p.idle_timeout_ms {
        common.insert("idle_timeout".into(), json!(seconds(ms)));
    }
    if let Some(n) = p.max_requests_per_connection {
        common.insert("max_requests_per_connection".into(), json!(n));
    }
    if let Some(ms) = p.max_connection_duration_ms {
        common.insert("max_connection_duration".into(), json!(seconds(ms)));
    }
    if !common.is_empty() {
        out["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": common,
                "explicit_http_config": {"http_protocol_options": {}}
            }
        });
    }
    if let Some(o) = &p.outlier {
        out["outlier_detection"] = outlier_detection(o);
    }
    if let Some(pct) = p.healthy_panic_threshold {
        out["common_lb_config"] = json!({"healthy_panic_threshold": {"value": pct}});
    }
}

fn outlier_detection(o: &OutlierPlan) -> Value {
    let mut v = json!({"enforcing_success_rate": 0});
    let enforcing = |n: u32| if n > 0 { 100 } else { 0 };
    if let Some(n) = o.consecutive_5xx {
        v["consecutive_5xx"] = json!(n);
        v["enforcing_consecutive_5xx"] = json!(enforcing(n));
    }
    if let Some(n) = o.consecutive_gateway_failure {
        v["consecutive_gateway_failure"] = json!(n);
        v["enforcing_consecutive_gateway_failure"] = json!(enforcing(n));
    }
    if let Some(ms) = o.interval_ms {
        v["interval"] = json!(seconds(ms));
    }
    if let Some(ms) = o.base_ejection_time_ms {
        v["base_ejection_time"] = json!(seconds(ms));
    }
    if let Some(n) = o.max_ejection_percent {
        v["max_ejection_percent"] = json!(n);
    }
    v
}

fn cluster(c: &ClusterPlan, addrs: &Addresses, gw_cert: &CertFiles, root: &Path) -> Value {
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .map(|e| {
            let mut ep = json!({"endpoint": {"address": sock(addrs.pod_ip[e.pod], e.port)}});
            if e.istio_tls {
                ep["metadata"] = json!({"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}});
            }
            ep
        })
        .collect();
    let mut out = json!({
        "name": c.name,
        "type": "STATIC",
        "load_assignment": {"cluster_name": c.name, "endpoints": [{"lb_endpoints": endpoints}]}
    });
    apply_policy(&mut out, &c.policy);
    match c.tls {
        UpstreamTls::IstioMutual => out["transport_socket"] = upstream_tls(c, gw_cert, root),
        UpstreamTls::Disable => {}
        UpstreamTls::Auto => {
            out["transport_socket_matches"] = json!([
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
                 "transport_socket": upstream_tls(c, gw_cert, root)},
                {"name": "tlsMode-disabled", "match": {},
                 "transport_socket": {"name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}
            ])
        }
    }
    out
}

fn node(mesh: &Mesh, pod: usize, ip: Ipv4Addr, kind: &str) -> Value {
    let p = &mesh.pods[pod];
    json!({"id": format!("{kind}~{ip}~{}.{}~{}.svc.cluster.local", p.name, p.namespace, p.namespace),
           "cluster": format!("{}.{}", p.deployment, p.namespace)})
}

/// The filter chains of a gateway listener: the HTTP one; one per HTTPS server,
/// matched by SNI, terminating TLS with the per-run certificate standing for its
/// Secret (pilot gateway.go createGatewayHTTPFilterChainOpts,
/// buildGatewayListenerTLSContext); a TCP black hole for what is not emulated. A
/// server whose Secret istiod cannot serve gets no chain: its SNI finds none and the
/// handshake fails, as it does on Istio (the chain waits for a secret SDS never sends).
fn filter_chains(
    l: &ListenerPlan,
    authz: &AuthzPlan,
    credentials: &BTreeMap<String, CertFiles>,
) -> Vec<Value> {
    if let ListenerProtocol::Opaque(_) = &l.protocol {
        return vec![json!({"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                             "stat_prefix": "blackhole", "cluster": "BlackHoleCluster"}}]})];
    }
    let mut out = Vec::new();
    for c in &l.chains {
        let mut chain = json!({"filters": [gateway_hcm(c, authz)]});
        if let Some(tls) = &c.tls {
            let Some(files) = credentials
                .get(&tls.sds_name)
                .filter(|_| tls.problem.is_none())
            else {
                continue;
            };
            if !c.server_names.is_empty() {
                chain["filter_chain_match"] = json!({"server_names": c.server_names});
            }
            chain["transport_socket"] = json!({"name": "envoy.transport_sockets.tls",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {"alpn_protocols": ["h2", "http/1.1"],
                                           "tls_certificates": tls_files(files)}}});
        }
        out.push(chain);
    }
    if out.is_empty() {
        out.push(no_certificate_chain());
    }
    out
}

/// kube-proxy hands a NodePort connection to the pod's port, so the RBAC filter of a
/// gateway pod sees that port as the destination; here the node's NodePorts are the
/// listener's own additional addresses, and Envoy sees the NodePort. Each
/// `destination_port` permission on the listener's port in its RBAC filters also takes
/// its NodePorts, so policies on the pod's port answer as on a cluster.
pub(crate) fn destination_ports_as_kube_proxy(
    listener: &mut Value,
    target_port: u16,
    node_ports: &[u16],
) {
    if node_ports.is_empty() {
        return;
    }
    fn walk(v: &mut Value, port: u16, node_ports: &[u16]) {
        match v {
            Value::Object(m) => {
                if m.len() == 1
                    && m.get("destination_port").and_then(Value::as_u64) == Some(u64::from(port))
                {
                    let mut rules = vec![json!({ "destination_port": port })];
                    rules.extend(
                        node_ports
                            .iter()
                            .map(|np| json!({ "destination_port": np })),
                    );
                    *v = json!({"or_rules": {"rules": rules}});
                    return;
                }
                m.values_mut().for_each(|x| walk(x, port, node_ports));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, port, node_ports)),
            _ => {}
        }
    }
    let filters = listener
        .get_mut("filter_chains")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get_mut("filters").and_then(Value::as_array_mut))
        .flatten()
        .filter_map(|f| {
            f.pointer_mut("/typed_config/http_filters")
                .and_then(Value::as_array_mut)
        })
        .flatten()
        .filter(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.rbac"));
    for f in filters {
        walk(f, target_port, node_ports);
    }
}

/// A listener must have a filter chain: when no server of a TLS port has a
/// certificate, one that no SNI matches keeps the port's behaviour (every handshake
/// fails).
pub(crate) fn no_certificate_chain() -> Value {
    json!({"filter_chain_match": {"server_names": ["no-certificate.meshcheck.invalid"]},
           "filters": [{"name": "envoy.filters.network.tcp_proxy",
               "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                "stat_prefix": "blackhole", "cluster": "BlackHoleCluster"}}]})
}

/// The bootstrap of gateway proxy `gw` (index into `mesh.gateways`).
pub fn gateway_bootstrap(
    mesh: &Mesh,
    gw: usize,
    addrs: &Addresses,
    admin: &Path,
    cert: &CertFiles,
    credentials: &BTreeMap<String, CertFiles>,
    root: &Path,
) -> Value {
    let g = &mesh.gateways[gw];
    let pod_ip = addrs.pod_ip[g.pod];
    let listeners: Vec<Value> = g
        .listeners
        .iter()
        .map(|l| {
            let chains = filter_chains(l, &g.authz, credentials);
            // Envoy listens in the pod on the target port; kube-proxy's NodePorts are
            // the same listener's additional addresses on the node.
            let extra: Vec<Value> = l
                .node_ports
                .iter()
                .map(|np| json!({"address": sock(addrs.node, *np)}))
                .collect();
            let mut lis = json!({"name": l.name, "address": sock(pod_ip, l.target_port),
                                 "filter_chains": chains});
            if !extra.is_empty() {
                lis["additional_addresses"] = json!(extra);
            }
            destination_ports_as_kube_proxy(&mut lis, l.target_port, &l.node_ports);
            // SNI matching needs the TLS inspector (pilot adds it to TLS listeners).
            if l.protocol == ListenerProtocol::Https {
                lis["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]);
            }
            lis
        })
        .collect();
    let mut clusters: Vec<Value> = mesh
        .clusters
        .values()
        .map(|c| cluster(c, addrs, cert, root))
        .collect();
    clusters.push(
        json!({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s",
                         "load_assignment": {"cluster_name": "BlackHoleCluster", "endpoints": []}}),
    );
    json!({
        "node": node(mesh, g.pod, pod_ip, "router"),
        "admin": {"address": pipe(admin)},
        "layered_runtime": istio_runtime(),
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// The runtime flags Istio's bootstrap gives every proxy that change how a request is
/// read (pkg/bootstrap/config.go extractRuntimeFlags): a fragment in the path is
/// stripped, not refused with 400 (`http_reject_path_with_fragment: false`); RE2
/// programs up to Istio's size.
pub(crate) fn istio_runtime() -> Value {
    json!({"layers": [
        {"name": "global config", "static_layer": {
            "envoy.reloadable_features.http_reject_path_with_fragment": false,
            "re2.max_program_size.error_level": 32768}},
        {"name": "admin", "admin_layer": {}}]})
}

/// The sidecar of `pod` as a sidecar host serves it: one inbound listener per app
/// port on the pod IP (what Istio's iptables capture sends to 15006), accepting Istio
/// mTLS with the pod's own certificate, plaintext, or both, as the port's
/// PeerAuthentication mode says (STRICT, DISABLE, PERMISSIVE), and forwarding
/// XFCC to the app on `app_ip`; and the cluster of each port. Names carry the pod
/// (`<ns>/<pod>`), so that many pods' sidecars fit in one Envoy.
pub struct SidecarPod<'a> {
    pub pod: usize,
    pub pod_ip: Ipv4Addr,
    pub app_ip: Ipv4Addr,
    pub ports: &'a [u16],
    pub cert: &'a CertFiles,
    /// istiod's security filters by port (`--control-plane istiod`); None: the
    /// model's.
    pub istiod_filters: Option<&'a [(u32, Vec<Value>)]>,
}

/// The listeners and clusters of one pod's sidecar (see [`SidecarPod`]).
pub fn sidecar_resources(mesh: &Mesh, s: &SidecarPod, root: &Path) -> (Vec<Value>, Vec<Value>) {
    let p = &mesh.pods[s.pod];
    let key = format!("{}/{}", p.namespace, p.name);
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    for &port in s.ports {
        let mut http_filters = security_filters(mesh, s, port);
        http_filters.push(router_filter());
        let cluster_name = format!("inbound|{port}||{key}");
        let hcm = json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("inbound_0.0.0.0_{port}"),
                "codec_type": "AUTO",
                "server_name": "istio-envoy",
                "forward_client_cert_details": "APPEND_FORWARD",
                "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
                "route_config": {"name": format!("inbound|{port}||"), "validate_clusters": false,
                    "virtual_hosts": [{"name": format!("inbound|http|{port}"), "domains": ["*"],
                        "routes": [{"name": "default", "match": {"prefix": "/"},
                                    "route": {"cluster": cluster_name, "timeout": "0s"},
                                    "decorator": {"operation": format!("{}:{port}/*", p.name)}}]}]},
                "http_filters": http_filters
            }
        });
        // The chains the port's PeerAuthentication mode implies (filterchain_options.go
        // getFilterChainMatchOptions): STRICT mTLS only, PERMISSIVE both, DISABLE
        // plaintext only; a connection no chain takes is closed.
        let mode = mesh
            .inbound_mtls
            .get(&s.pod)
            .map_or(MtlsMode::Permissive, |w| w.for_port(port).mode);
        let mut chains = Vec::new();
        if mode.takes_mtls() {
            chains.push(json!({"name": "inbound_mtls", "filter_chain_match": {"transport_protocol": "tls"},
                 "transport_socket": {"name": "envoy.transport_sockets.tls",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": true,
                        "common_tls_context": {"tls_certificates": tls_files(s.cert),
                            "validation_context": {"trusted_ca": {"filename": root.to_string_lossy()}}}}},
                 "filters": [hcm.clone()]}));
        }
        if mode.takes_plaintext() {
            chains.push(json!({"name": "inbound_plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"},
                 "filters": [hcm]}));
        }
        listeners.push(json!({
            "name": format!("{key} virtualInbound_{port}"),
            "address": sock(s.pod_ip, port),
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
            "filter_chains": chains
        }));
        clusters.push(
            json!({"name": cluster_name, "type": "STATIC", "connect_timeout": "10s",
            "load_assignment": {"cluster_name": cluster_name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sock(s.app_ip, port)}}]}]}}),
        );
    }
    (listeners, clusters)
}

/// The security filters before the router in `s`'s inbound connection manager of
/// `port` (listener_inbound.go buildInboundNetworkFiltersForHTTP; authz::sidecar_plan):
/// istiod's, when it programs the sidecars (the port's chain, else the passthrough
/// chain's: both carry the pod's filters), else the model's.
fn security_filters(mesh: &Mesh, s: &SidecarPod, port: u16) -> Vec<Value> {
    match s.istiod_filters {
        Some(by_port) => by_port
            .iter()
            .find(|(p, _)| *p == u32::from(port))
            .or_else(|| by_port.iter().find(|(p, _)| *p == 0))
            .map(|(_, f)| f.clone())
            .unwrap_or_default(),
        None => mesh
            .sidecar_authz
            .get(&s.pod)
            .map(AuthzPlan::http_filters)
            .unwrap_or_default(),
    }
}

/// The outbound clusters `pods`' sidecars call themselves: each CUSTOM provider's
/// cluster their ext_authz filters name (`outbound|<port>||<host>`, built as the
/// gateway's, mTLS toward an injected authorizer). One Envoy serves many pods here, so
/// a provider's cluster is one, presenting the first such pod's certificate: an
/// authorizer's own policies see that pod's identity for all of them.
pub fn sidecar_outbound_clusters(
    mesh: &Mesh,
    pods: &[SidecarPod],
    addrs: &Addresses,
    root: &Path,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for s in pods {
        for port in s.ports {
            for f in security_filters(mesh, s, *port) {
                let Some(name) = f
                    .pointer("/typed_config/http_service/server_uri/cluster")
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                if out.iter().any(|c| c["name"] == name) {
                    continue;
                }
                if let Some(c) = mesh.clusters.get(name) {
                    out.push(cluster(c, addrs, s.cert, root));
                }
            }
        }
    }
    out
}

/// The bootstrap of a sidecar host: an Envoy serving the sidecars of many pods. The
/// pods' clusters are static; their listeners come from the file `lds` (LDS), so
/// that one pod's sidecar can be taken away without touching the others. Statistics
/// are off (nothing reads them; they are most of the per-listener cost).
pub fn sidecar_host_bootstrap(name: &str, clusters: Vec<Value>, lds: &Path, admin: &Path) -> Value {
    json!({
        "node": {"id": format!("sidecar~127.0.0.1~{name}.meshcheck~meshcheck.svc.cluster.local"),
                 "cluster": format!("{name}.meshcheck")},
        "admin": {"address": pipe(admin)},
        "layered_runtime": istio_runtime(),
        "stats_config": {"stats_matcher": {"reject_all": true}},
        "static_resources": {"clusters": clusters},
        "dynamic_resources": {"lds_config": {"resource_api_version": "V3",
            "path_config_source": {"path": lds.to_string_lossy()}}}
    })
}

/// The LDS file content (a DiscoveryResponse) of a sidecar host.
pub fn lds_response(version: u64, listeners: Vec<Value>) -> Value {
    let resources: Vec<Value> = listeners
        .into_iter()
        .map(|mut l| {
            l["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
            l
        })
        .collect();
    json!({"version_info": version.to_string(), "resources": resources})
}

#[cfg(test)]
mod sidecar_tests {
    use super::*;

    fn http_filter_names(listeners: &[Value]) -> Vec<Vec<String>> {
        listeners
            .iter()
            .flat_map(|l| l["filter_chains"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                c.pointer("/filters/0/typed_config/http_filters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|f| f["name"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_sidecar_runs_istiods_filters_for_its_port_or_the_model_s() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fx = crate::fixtures::load_dir(&root.join("fixtures/ingress")).unwrap();
        let mut mesh = Mesh::build(&fx);
        let pod = mesh
            .pods
            .iter()
            .position(|p| p.name.starts_with("nb-rest-v1"))
            .unwrap();
        let cert = CertFiles {
            cert: "c.crt".into(),
            key: "c.key".into(),
        };
        let rbac = json!({"name": "envoy.filters.http.rbac", "typed_config": {}});
        let jwt = json!({"name": "envoy.filters.http.jwt_authn", "typed_config": {}});
        let istiod = [(8080, vec![jwt.clone(), rbac.clone()]), (0, vec![rbac])];
        let at = |ports, istiod_filters| SidecarPod {
            pod,
            pod_ip: Ipv4Addr::new(127, 0, 0, 2),
            app_ip: Ipv4Addr::new(127, 0, 0, 3),
            ports,
            cert: &cert,
            istiod_filters,
        };
        let s = |istiod_filters| at(&[8080, 9090], istiod_filters);
        let router = "envoy.filters.http.router".to_string();
        // Every chain of a port (mTLS, plaintext as the PeerAuthentication says): 8080's
        // own filters, 9090 the passthrough chain's.
        let (l, _) = sidecar_resources(&mesh, &at(&[8080], Some(&istiod)), Path::new("r"));
        let names = http_filter_names(&l);
        assert!(!names.is_empty());
        assert!(names.iter().all(|n| *n
            == [
                "envoy.filters.http.jwt_authn",
                "envoy.filters.http.rbac",
                &router
            ]));
        let (l, _) = sidecar_resources(&mesh, &at(&[9090], Some(&istiod)), Path::new("r"));
        let names = http_filter_names(&l);
        assert!(!names.is_empty());
        assert!(names
            .iter()
            .all(|n| *n == ["envoy.filters.http.rbac", &router]));
        // The model's: none without a policy; the pod's plan with one.
        let (l, _) = sidecar_resources(&mesh, &s(None), Path::new("root.pem"));
        assert!(http_filter_names(&l).iter().all(|n| *n == [router.clone()]));
        let mut plan = crate::istio::authz::AuthzPlan::default();
        plan.rbac.push(crate::istio::authz::rbac::RbacFilter {
            rules: None,
            shadow_rules: None,
            shadow_rules_stat_prefix: String::new(),
        });
        mesh.sidecar_authz.insert(pod, plan);
        let (l, _) = sidecar_resources(&mesh, &s(None), Path::new("root.pem"));
        assert!(http_filter_names(&l)
            .iter()
            .all(|n| *n == ["envoy.filters.http.rbac", &router]));
    }
}
