//! A gateway pod's listeners as pilot merges its Gateways (pilot/pkg/model/gateway.go,
//! 1.30.3, mergeGateways) and builds their filter chains
//! (pilot/pkg/networking/core/gateway.go, buildGatewayTCPBasedFilterChains,
//! createGatewayHTTPFilterChainOpts): the HTTP servers of a port share one filter
//! chain and the route configuration `http.<port>`; each HTTPS server terminating TLS
//! gets its own filter chain, matched by SNI (its hosts), with its own route
//! configuration `https.<port>.<port name>.<Gateway>.<namespace>` holding only its
//! own hosts, and its certificate from the Secret its `credentialName` names.

use super::hcm::HcmPlan;
use super::mesh::{
    binds, host_matches, narrower, node_ports_reaching, resolve_host, routes_of,
    services_selecting, sort_catch_all_last, translate_port, ChainPlan, ListenerPlan,
    ListenerProtocol, RouteConfigPlan, ServerTlsPlan, VHostPlan,
};
use super::pods::PodPlan;
use crate::fixtures::istio::{Gateway, Server, VirtualService};
use crate::fixtures::{Fixtures, Item, Warning};
use std::collections::BTreeMap;

/// The TLS modes pilot has; only SIMPLE is modelled.
const UNMODELLED_TLS_MODES: &[&str] = &[
    "PASSTHROUGH",
    "MUTUAL",
    "ISTIO_MUTUAL",
    "AUTO_PASSTHROUGH",
    "OPTIONAL_MUTUAL",
];

/// The SDS resource name of a credentialName (pilot/pkg/model/credentials/resource.go,
/// 1.30.3, ToResourceName): `kubernetes://<name>` unless it names a scheme already.
pub fn sds_name(credential: &str) -> String {
    if credential.starts_with("kubernetes://")
        || credential.starts_with("sds://")
        || credential.starts_with("builtin://")
    {
        credential.to_string()
    } else {
        format!("kubernetes://{credential}")
    }
}

/// The Secret (namespace, name) a credentialName reads for a gateway pod in
/// `proxy_ns` (pilot/pkg/model/credentials/resource.go ParseResourceName with the
/// proxy's namespace as default; pilot/pkg/xds/sds.go filterAuthorizedResources only
/// serves Secrets of the proxy's own namespace).
pub fn secret_ref(credential: &str, proxy_ns: &str) -> (String, String) {
    let name = credential
        .strip_prefix("kubernetes://")
        .unwrap_or(credential);
    match name.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (proxy_ns.to_string(), name.to_string()),
    }
}

/// Why a credential gives the gateway no certificate (None: it does).
pub fn credential_problem(fx: &Fixtures, credential: &str, proxy_ns: &str) -> Option<String> {
    let (ns, name) = secret_ref(credential, proxy_ns);
    if ns != proxy_ns {
        return Some(format!(
            "Secret {ns}/{name} is not in the gateway pod's namespace {proxy_ns}: istiod's SDS does not serve it"
        ));
    }
    let Some(s) = fx
        .secrets
        .iter()
        .find(|s| s.namespace == ns && s.name == name)
    else {
        return Some(format!("no Secret {ns}/{name} among the fixtures"));
    };
    // pilot/pkg/credentials/kube/secrets.go (1.30.3) ExtractCertInfo: tls.crt/tls.key,
    // or cert/key (generic Secrets).
    let keyed = (s.spec.has_key("tls.crt") && s.spec.has_key("tls.key"))
        || (s.spec.has_key("cert") && s.spec.has_key("key"));
    if !keyed {
        return Some(format!(
            "Secret {ns}/{name} has neither tls.crt/tls.key nor cert/key"
        ));
    }
    None
}

/// Gateways in the order istiod takes them (creation time, then name, then
/// namespace; fixtures applied together share a creation second).
fn in_istio_order<'a>(gws: &[&'a Item<Gateway>]) -> Vec<&'a Item<Gateway>> {
    let mut out = gws.to_vec();
    out.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
    out
}

fn warn(warnings: &mut Vec<Warning>, gw: &Item<Gateway>, message: String) {
    warnings.push(Warning {
        at: gw.source.clone(),
        object: gw.describe(),
        message,
        field: None,
    });
}

/// The listener protocol of a server, or None when pilot builds nothing for it that
/// meshcheck models (then a warning says so).
fn server_protocol(
    gw: &Item<Gateway>,
    si: usize,
    server: &Server,
    warnings: &mut Vec<Warning>,
) -> ListenerProtocol {
    let proto = server
        .port
        .protocol
        .clone()
        .unwrap_or_else(|| "HTTP".into())
        .to_uppercase();
    let number = server.port.number;
    let mode = server
        .tls
        .as_ref()
        .and_then(|t| t.mode.clone())
        .unwrap_or_else(|| "SIMPLE".into())
        .to_uppercase();
    match proto.as_str() {
        "HTTP" | "HTTP2" | "GRPC" => ListenerProtocol::Http,
        "HTTPS" if server.tls.is_some() && mode == "SIMPLE" => ListenerProtocol::Https,
        "HTTPS" if server.tls.is_some() && UNMODELLED_TLS_MODES.contains(&mode.as_str()) => {
            warn(warnings, gw, format!(
                "server {si} (HTTPS, tls.mode {mode}): TLS mode {mode} is not modelled (only SIMPLE is; not modelled: {}): the local target binds port {number} but routes nothing",
                UNMODELLED_TLS_MODES.join(", ")
            ));
            ListenerProtocol::Opaque(format!("HTTPS {mode}"))
        }
        other => {
            warn(warnings, gw, format!(
                "server {si} protocol {other} is not emulated: the local target binds port {number} but routes nothing"
            ));
            ListenerProtocol::Opaque(other.to_string())
        }
    }
}

/// pilot's SNI hosts of a server (model/gateway.go GetSNIHostsForServer): the hosts
/// without their namespace part, sorted, without duplicates.
fn sni_hosts(server: &Server) -> Vec<String> {
    let mut out: Vec<String> = server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A gateway pod's listeners, one per bound port.
pub(crate) fn build_listeners(
    fx: &Fixtures,
    pod: &PodPlan,
    gws: &[&Item<Gateway>],
    vss: &[&Item<VirtualService>],
    warnings: &mut Vec<Warning>,
) -> Vec<ListenerPlan> {
    let services = services_selecting(fx, pod);
    let mut by_port: BTreeMap<u16, ListenerPlan> = BTreeMap::new();
    // Bound port -> SNI host -> the Gateway that has it (model/gateway.go
    // CheckDuplicates: a TLS server repeating a host on the same port is skipped).
    let mut tls_hosts: BTreeMap<u16, BTreeMap<String, String>> = BTreeMap::new();
    for gw in in_istio_order(gws) {
        for (si, server) in gw.spec.spec.servers.iter().enumerate() {
            let number = server.port.number;
            let target = translate_port(&services, pod, number);
            // What the server's protocol leaves unmodelled is said only when the server
            // gets a listener at all.
            let mut protocol_warnings = Vec::new();
            let protocol = server_protocol(gw, si, server, &mut protocol_warnings);
            if !has_filter_chain(gw, si, server, &protocol, vss, warnings) {
                continue;
            }
            warnings.extend(protocol_warnings);
            if protocol == ListenerProtocol::Https {
                let known = tls_hosts.entry(target).or_default();
                let dup: Vec<String> = sni_hosts(server)
                    .into_iter()
                    .filter(|h| known.contains_key(h))
                    .collect();
                if !dup.is_empty() {
                    warn(warnings, gw, format!(
                        "server {si}: host(s) {} already served with TLS on port {number} by {}: istiod skips this server (model/gateway.go mergeGateways, CheckDuplicates)",
                        dup.join(", "),
                        known[&dup[0]]
                    ));
                    continue;
                }
                for h in sni_hosts(server) {
                    known.insert(h, gw.describe());
                }
            }
            if let Some(existing) = by_port.get(&target) {
                if !mergeable(&existing.protocol, &protocol) {
                    warn(warnings, gw, format!(
                        "server {si} ({}) on port {number} conflicts with the {} server already on that port: istiod skips it (model/gateway.go mergeGateways)",
                        protocol_name(&protocol),
                        protocol_name(&existing.protocol)
                    ));
                    continue;
                }
            }
            let node_ports = node_ports_reaching(fx, &services, pod, target);
            let l = by_port.entry(target).or_insert_with(|| ListenerPlan {
                name: format!("0.0.0.0_{target}"),
                target_port: target,
                server_port: number,
                node_ports: Vec::new(),
                protocol: protocol.clone(),
                chains: Vec::new(),
            });
            for np in node_ports {
                if !l.node_ports.contains(&np) {
                    l.node_ports.push(np);
                }
            }
            match protocol {
                ListenerProtocol::Http => {
                    if l.chains.is_empty() {
                        l.chains.push(ChainPlan {
                            server_names: Vec::new(),
                            tls: None,
                            hcm: HcmPlan::gateway(&l.name, None),
                            route_config: RouteConfigPlan {
                                name: format!("http.{target}"),
                                vhosts: Vec::new(),
                            },
                        });
                    }
                    let vhosts = &mut l.chains[0].route_config.vhosts;
                    add_server_vhosts(fx, (gw, &pod.namespace), server, vss, vhosts, warnings);
                }
                ListenerProtocol::Https => {
                    let mut vhosts = Vec::new();
                    add_server_vhosts(fx, (gw, &pod.namespace), server, vss, &mut vhosts, warnings);
                    let credential = server
                        .tls
                        .as_ref()
                        .and_then(|t| t.credential_name.clone())
                        .unwrap_or_default();
                    l.chains.push(ChainPlan {
                        server_names: sni_hosts(server).into_iter().filter(|h| h != "*").collect(),
                        tls: Some(server_tls(fx, pod, (gw, si), server, &credential, warnings)),
                        hcm: HcmPlan::gateway(&l.name, server.name.as_deref()),
                        route_config: RouteConfigPlan {
                            name: format!(
                                "https.{number}.{}.{}.{}",
                                server.port.name.as_deref().unwrap_or(""),
                                gw.name,
                                gw.namespace
                            ),
                            vhosts,
                        },
                    });
                }
                ListenerProtocol::Opaque(_) => {}
            }
        }
    }
    by_port.into_values().map(finish).collect()
}

/// Whether pilot builds a filter chain for the server: HTTP and HTTPS-terminating
/// servers always get one; the others only from a VirtualService `tcp` block
/// (gateway_tcp.rs). Without one the server adds nothing, said in a warning.
fn has_filter_chain(
    gw: &Item<Gateway>,
    si: usize,
    server: &Server,
    protocol: &ListenerProtocol,
    vss: &[&Item<VirtualService>],
    warnings: &mut Vec<Warning>,
) -> bool {
    let tcp_like = matches!(protocol, ListenerProtocol::Opaque(p) if !p.starts_with("HTTPS"));
    if !tcp_like
        || !super::gateway_tcp::needs_tcp_route(server)
        || super::gateway_tcp::tcp_route_source(gw, server, vss).is_some()
    {
        return true;
    }
    warn(warnings, gw, format!(
        "server {si} ({}) on port {}: no VirtualService bound to the Gateway has a tcp route for it, so istiod builds no filter chain and, alone on its port, no listener (gateway.go createGatewayTCPFilterChainOpts: \"listener missed network filter\")",
        protocol_name(protocol),
        server.port.number
    ));
    false
}

/// Whether pilot merges a server of protocol `new` into a port already serving `old`
/// (model/gateway.go mergeGateways: plaintext HTTP servers merge; TLS servers are told
/// apart by SNI; anything else on the same port is skipped).
fn mergeable(old: &ListenerProtocol, new: &ListenerProtocol) -> bool {
    matches!(
        (old, new),
        (ListenerProtocol::Http, ListenerProtocol::Http)
            | (ListenerProtocol::Https, ListenerProtocol::Https)
    )
}

fn protocol_name(p: &ListenerProtocol) -> String {
    match p {
        ListenerProtocol::Http => "HTTP".into(),
        ListenerProtocol::Https => "HTTPS".into(),
        ListenerProtocol::Opaque(o) => o.clone(),
    }
}

fn server_tls(
    fx: &Fixtures,
    pod: &PodPlan,
    (gw, si): (&Item<Gateway>, usize),
    server: &Server,
    credential: &str,
    warnings: &mut Vec<Warning>,
) -> ServerTlsPlan {
    let (secret_namespace, secret_name) = secret_ref(credential, &pod.namespace);
    let (sds, problem) = match (credential.is_empty(), certificate_files(server)) {
        (false, _) => (
            sds_name(credential),
            credential_problem(fx, credential, &pod.namespace),
        ),
        // pilot listener.go (1.30.3) BuildListenerTLSContext: without credentialName
        // the server's certificate files, as SDS resource `file-cert:<cert>~<key>`
        // (pkg/security/security.go SdsCertificateConfig.GetResourceName).
        (true, Some((cert, key))) => {
            let problem = format!(
                "certificate files {cert} and {key} are read from the gateway pod's filesystem, which meshcheck does not model: the local target has no certificate for this server"
            );
            warn(warnings, gw, format!("server {si}: {problem}"));
            (format!("file-cert:{cert}~{key}"), Some(problem))
        }
        (true, None) => (
            sds_name(credential),
            Some("the server has no credentialName".to_string()),
        ),
    };
    ServerTlsPlan {
        gateway: gw.describe(),
        source: gw.source.clone(),
        server: si,
        credential: credential.to_string(),
        sds_name: sds,
        secret_namespace,
        secret_name,
        problem,
        hosts: sni_hosts(server),
    }
}

/// `serverCertificate` and `privateKey`, when both are set (SdsCertificateConfig
/// IsKeyCertificate).
fn certificate_files(server: &Server) -> Option<(String, String)> {
    let tls = server.tls.as_ref()?;
    match (&tls.server_certificate, &tls.private_key) {
        (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => Some((c.clone(), k.clone())),
        _ => None,
    }
}

/// A listener's route configurations completed: a chain without virtual hosts gets
/// pilot's `blackhole:<port>` one, and catch-all routes go last.
fn finish(mut l: ListenerPlan) -> ListenerPlan {
    let port = l.server_port;
    for chain in &mut l.chains {
        let vh = &mut chain.route_config.vhosts;
        if vh.is_empty() {
            vh.push(VHostPlan {
                name: format!("blackhole:{port}"),
                domains: vec!["*".into()],
                routes: Vec::new(),
                require_tls: false,
                // pilot gateway.go: the blackhole virtual host has no ProxyHeaders.
                attempt_count: false,
                route_sources: Vec::new(),
            });
        }
        *vh = collapse_duplicate_routes(std::mem::take(vh));
        for v in vh.iter_mut() {
            sort_catch_all_last(&mut v.routes);
        }
    }
    l
}

/// pilot gateway.go (1.30.3) collapseDuplicateRoutes (PILOT_ENABLE_ROUTE_COLLAPSE_
/// OPTIMIZATION, default on): hosts whose virtual hosts hold the same route objects
/// (here: the same route sources), the same require_tls and attempt count, become one
/// virtual host with several domains, named after the first host in host.Names order
/// (more specific first); then util.SortVirtualHosts orders them by name.
fn collapse_duplicate_routes(mut vhosts: Vec<VHostPlan>) -> Vec<VHostPlan> {
    vhosts.sort_by(|a, b| more_specific_first(&a.domains[0], &b.domains[0]));
    let mut out: Vec<VHostPlan> = Vec::new();
    // Route list -> the virtual host it last started (pilot's `known`, by hash).
    let mut known: Vec<(Vec<String>, usize)> = Vec::new();
    for vh in vhosts {
        let seen = known.iter_mut().find(|(k, _)| *k == vh.route_sources);
        match seen {
            Some((_, i))
                if out[*i].require_tls == vh.require_tls
                    && out[*i].attempt_count == vh.attempt_count =>
            {
                out[*i].domains.extend(vh.domains);
            }
            Some((_, i)) => {
                *i = out.len();
                out.push(vh);
            }
            None => {
                known.push((vh.route_sources.clone(), out.len()));
                out.push(vh);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// pkg/config/host/name.go MoreSpecific: non-wildcards first, longer first, then
/// alphabetically.
fn more_specific_first(a: &str, b: &str) -> std::cmp::Ordering {
    (a.starts_with('*'), std::cmp::Reverse(a.len()), a).cmp(&(
        b.starts_with('*'),
        std::cmp::Reverse(b.len()),
        b,
    ))
}

/// The virtual hosts a server contributes: for each of its hosts, the VirtualServices
/// bound to its Gateway whose hosts intersect it (pilot/pkg/networking/core/gateway.go
/// buildGatewayHTTPRouteConfig, buildGatewayVirtualHosts).
fn add_server_vhosts(
    fx: &Fixtures,
    (gw, pod_namespace): (&Item<Gateway>, &str),
    server: &Server,
    vss: &[&Item<VirtualService>],
    vh_list: &mut Vec<VHostPlan>,
    warnings: &mut Vec<Warning>,
) {
    let number = server.port.number;
    let https_redirect = server
        .tls
        .as_ref()
        .and_then(|t| t.https_redirect)
        .unwrap_or(false);
    let is_tls = server.tls.is_some();
    for server_host in &server.hosts {
        let (host_ns, host) = match server_host.split_once('/') {
            Some((ns, h)) => (Some(ns), h),
            None => (None, server_host.as_str()),
        };
        for vs in vss {
            let ns_ok = match host_ns {
                None | Some("*") => true,
                Some(".") => vs.namespace == gw.namespace,
                Some("~") => false,
                Some(ns) => vs.namespace == ns,
            };
            if !ns_ok || !binds(vs, gw) {
                continue;
            }
            for vs_host in &vs.spec.spec.hosts {
                // VirtualService hosts are resolved like any host
                // (pilot/pkg/model/virtualservice.go, resolveVirtualServiceShortnames).
                let vs_host = resolve_host(vs_host, &vs.namespace);
                if !host_matches(&vs_host, host) {
                    continue;
                }
                let domain = narrower(&vs_host, host).to_ascii_lowercase();
                let vh_name = format!("{domain}:{number}");
                if let Some(v) = vh_list.iter_mut().find(|v| {
                    v.name == vh_name && v.routes.iter().any(|r| r.virtual_service == vs.describe())
                }) {
                    v.require_tls |= https_redirect;
                    continue; // the same VirtualService via another server host
                }
                // pilot BuildHTTPRoutesForVirtualService: a VirtualService with no
                // http route ("no routes matched") adds no virtual host.
                let mut routes = routes_of(fx, vs, number, is_tls, warnings);
                if routes.is_empty() {
                    continue;
                }
                super::policy::hash_routes(fx, vs, pod_namespace, &mut routes);
                let idx = match vh_list.iter().position(|v| v.name == vh_name) {
                    Some(i) => i,
                    None => {
                        vh_list.push(VHostPlan {
                            name: vh_name,
                            domains: vec![domain.clone()],
                            routes: Vec::new(),
                            require_tls: false,
                            attempt_count: true,
                            route_sources: Vec::new(),
                        });
                        vh_list.len() - 1
                    }
                };
                let vh = &mut vh_list[idx];
                vh.require_tls |= https_redirect;
                vh.route_sources
                    .push(format!("{} {}", gw.describe(), vs.describe()));
                vh.routes.extend(routes);
            }
        }
        // pilot/pkg/networking/core/gateway.go (buildGatewayVirtualHosts): a
        // redirecting server's host gets a virtual host even with no route.
        if https_redirect {
            let host = host.to_ascii_lowercase();
            let vh_name = format!("{host}:{number}");
            match vh_list.iter_mut().find(|v| v.name == vh_name) {
                Some(v) => v.require_tls = true,
                None => vh_list.push(VHostPlan {
                    name: vh_name,
                    domains: vec![host],
                    routes: Vec::new(),
                    require_tls: true,
                    attempt_count: true,
                    route_sources: Vec::new(),
                }),
            }
        }
    }
}
