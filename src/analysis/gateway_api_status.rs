//! The conditions istiod's gateway controller would write on the fixtures' Gateway API
//! objects (computed by the conversion, src/fixtures/gateway_api/status.rs), as static
//! findings: a route not accepted by a parent (MC140: its rules are not programmed
//! there), a reference not resolved (MC141: that backend's share answers 500), a
//! listener or Gateway not accepted or programmed (MC142).

use super::{Ctx, Severity};

/// What a False condition means for traffic, per condition type.
fn consequence(kind: &str, type_: &str, reason: &str) -> &'static str {
    match (kind, type_, reason) {
        ("HTTPRoute", "Accepted", _) => {
            "istiod programs none of this route's rules on that parent: its paths answer 404 there"
        }
        ("HTTPRoute", "ResolvedRefs", "UnsupportedValue") => {
            "istiod leaves the rule out: its paths fall through to other routes (or 404)"
        }
        ("HTTPRoute", "ResolvedRefs", _) => {
            "Envoy answers 500 for that backend's share of the requests (cluster_not_found_response_code, route.go applyHTTPRouteDestination)"
        }
        _ => "istiod does not program this listener (or Gateway) as written",
    }
}

/// One finding per condition that says something is wrong.
pub fn gateway_api_status(c: &mut Ctx) {
    for s in &c.fx.gateway_api.statuses {
        for cond in s.problems() {
            let code = match (s.kind.as_str(), cond.type_.as_str()) {
                ("HTTPRoute", "Accepted") => "MC140",
                ("HTTPRoute", _) => "MC141",
                _ => "MC142",
            };
            c.push(
                "gateway-api-status",
                Severity::Error,
                code,
                None,
                s.object.clone(),
                &s.source,
                format!("{}: {}", cond.describe(), cond.message),
                consequence(&s.kind, &cond.type_, &cond.reason),
            );
        }
    }
}
