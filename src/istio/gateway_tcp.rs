//! Whether a gateway server that is neither HTTP nor HTTPS-terminating gets a filter
//! chain at all. pilot builds one only from a VirtualService `tcp` block
//! (pilot/pkg/networking/core/gateway.go, 1.30.3, createGatewayTCPFilterChainOpts,
//! buildGatewayNetworkFiltersFromTCPRoutes); a port whose servers get no chain gets no
//! listener (MutableGatewayListener.build: "must have more than 0 chains"). The
//! forwarding itself is not modelled.

use super::mesh::{binds, host_matches, resolve_host};
use crate::fixtures::istio::{Gateway, L4Match, Server, VirtualService};
use crate::fixtures::Item;

/// The TLS modes that pass TLS through (gateway.IsPassThroughServer): their chains
/// come from `tls` blocks instead, which meshcheck does not model.
const PASSTHROUGH: &[&str] = &["PASSTHROUGH", "AUTO_PASSTHROUGH"];

/// A server whose chain comes from `tcp` routes: opaque TCP (no `tls`) or TCP with TLS
/// termination (createGatewayTCPFilterChainOpts, first two cases).
pub(crate) fn needs_tcp_route(server: &Server) -> bool {
    let mode = server
        .tls
        .as_ref()
        .and_then(|t| t.mode.clone())
        .unwrap_or_else(|| "SIMPLE".into())
        .to_uppercase();
    server.tls.is_none() || !PASSTHROUGH.contains(&mode.as_str())
}

/// The VirtualService whose `tcp` block gives `server` of `gw` its filter chain
/// (buildGatewayNetworkFiltersFromTCPRoutes: bound to the Gateway, a host matching
/// one of the server's (pickMatchingGatewayHosts), a tcp block whose matches fit
/// (l4MultiMatch)), or None: pilot builds no chain for the server.
pub(crate) fn tcp_route_source<'a>(
    gw: &Item<Gateway>,
    server: &Server,
    vss: &[&'a Item<VirtualService>],
) -> Option<&'a Item<VirtualService>> {
    vss.iter().copied().find(|vs| {
        binds(vs, gw)
            && hosts_match(server, vs)
            && vs
                .spec
                .spec
                .tcp
                .iter()
                .any(|t| l4_multi_match(&t.matches, server, gw, &vs.namespace))
    })
}

/// pickMatchingGatewayHosts: a server host `ns/h` counts only for VirtualServices of
/// namespace `ns`; then host.Name.Matches either way.
fn hosts_match(server: &Server, vs: &Item<VirtualService>) -> bool {
    server.hosts.iter().any(|gw_host| {
        let h = match gw_host.split_once('/') {
            Some((ns, h)) if ns == vs.namespace => h,
            Some(_) => return false,
            None => gw_host.as_str(),
        };
        vs.spec
            .spec
            .hosts
            .iter()
            .any(|vh| host_matches(h, &resolve_host(vh, &vs.namespace)))
    })
}

/// l4MultiMatch: no match fits every server; otherwise one whose port (if set) is the
/// server's and whose gateways (if any) name this Gateway (l4SingleMatch; a short
/// Gateway name is in the VirtualService's namespace: model/virtualservice.go
/// resolveVirtualServiceShortnames, resolveGatewayName).
fn l4_multi_match(matches: &[L4Match], server: &Server, gw: &Item<Gateway>, vs_ns: &str) -> bool {
    let this = format!("{}/{}", gw.namespace, gw.name);
    matches.is_empty()
        || matches.iter().any(|m| {
            let port_ok = m
                .port
                .is_none_or(|p| p == 0 || p == u32::from(server.port.number));
            let gw_ok = m.gateways.is_empty()
                || m.gateways.iter().any(|g| match g.split_once('/') {
                    Some(_) => *g == this,
                    None => format!("{vs_ns}/{g}") == this,
                });
            port_ok && gw_ok
        })
}
