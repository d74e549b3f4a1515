//! The simulation's answers to a request as facts a client and a backend observe:
//! status, who answers, the path, query and request headers the backend receives,
//! the response headers the model predicts, a redirect's Location, a direct
//! response's body, the route's fault delay and mirrors. How the configuration is
//! written (object names, short or FQDN hosts, weights' scale) is not among them.

use super::answers::{Answers, Fact};
use crate::istio::headers::Headers;
use crate::istio::{
    redirect_location, Branch, Mesh, Prediction, RouteKind, RoutePlan, RouteRef, SimRequest,
    HANDSHAKE_FAILS,
};

/// What `req` gets, by the prediction `p` the model of `mesh` made for it.
pub fn answers(mesh: &Mesh, req: &SimRequest, p: &Prediction) -> Answers {
    let route = p.route.as_ref().and_then(|r| route_plan(mesh, r));
    let shared = prediction_facts(p);
    Answers::from_shares(p.outcomes().iter().map(|b| {
        let mut facts = branch_facts(b);
        facts.extend(gateway_answer(route, req, b));
        facts.extend(shared.iter().cloned());
        (facts, b.share)
    }))
}

/// The facts of one branch: status, backend, what the backend receives, the
/// response headers.
fn branch_facts(b: &Branch) -> Vec<Fact> {
    let backend = b.backend.as_ref().map_or(String::new(), |be| {
        format!("{} {} ({})", be.service, be.version, be.namespace)
    });
    let path = match (&b.path_seen, b.query.as_str()) {
        (Some(p), "") => p.clone(),
        (Some(p), q) => format!("{p}?{q}"),
        (None, _) => String::new(),
    };
    vec![
        ("status", status(b)),
        ("backend", backend),
        ("path", path),
        ("request headers", render_headers(&b.headers_seen)),
        ("response headers", render_headers(&b.response.headers)),
    ]
}

/// The status, or how the connection fails.
fn status(b: &Branch) -> String {
    match b.status {
        Some(s) => s.to_string(),
        None if b.reason.ends_with(HANDSHAKE_FAILS) => HANDSHAKE_FAILS.to_string(),
        None => "connection refused".to_string(),
    }
}

/// What the matched route adds to every answer: its fault delay and its mirrors.
fn prediction_facts(p: &Prediction) -> Vec<Fact> {
    let delay = p.delay().map_or(String::new(), |(ms, share)| {
        format!("{ms}ms for {}%", share * 100.0)
    });
    let mirrors: Vec<String> = p
        .mirrors
        .iter()
        .map(|m| {
            let to: Vec<String> = m
                .backends
                .iter()
                .map(|(b, _)| format!("{} {} ({})", b.service, b.version, b.namespace))
                .collect();
            let to = if to.is_empty() {
                "nobody".to_string()
            } else {
                to.join(", ")
            };
            format!("{}% to {to}", m.percent)
        })
        .collect();
    vec![("fault delay", delay), ("mirrored", mirrors.join("; "))]
}

/// The Location of a redirect or the body of a direct response, when the gateway
/// answers `b` from the matched `route`'s action (not a fault abort or a CORS
/// preflight, which answer with other statuses before the route's action).
fn gateway_answer(route: Option<&RoutePlan>, req: &SimRequest, b: &Branch) -> Vec<Fact> {
    let Some(route) = route.filter(|_| b.backend.is_none() && b.cluster.is_none()) else {
        return Vec::new();
    };
    match &route.action {
        RouteKind::Redirect(r) if b.status == Some(r.code) => {
            vec![("location", redirect_location(req, route, r))]
        }
        RouteKind::DirectResponse { status, body } if b.status == Some(*status) => {
            vec![("body", body.clone().unwrap_or_default())]
        }
        _ => Vec::new(),
    }
}

/// The route a prediction names (the same VirtualService http route is one action
/// on every virtual host it is bound to).
fn route_plan<'m>(mesh: &'m Mesh, r: &RouteRef) -> Option<&'m RoutePlan> {
    mesh.gateways
        .iter()
        .flat_map(|g| &g.listeners)
        .flat_map(|l| &l.chains)
        .flat_map(|c| &c.route_config.vhosts)
        .flat_map(|v| &v.routes)
        .find(|p| p.virtual_service == r.virtual_service && p.http_index == r.http_index)
}

/// `name: v1, v2; other: v`, by name.
pub fn render_headers(h: &Headers) -> String {
    h.iter()
        .map(|(k, v)| format!("{k}: {}", v.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branch(status: Option<u16>, reason: &str) -> Branch {
        Branch::unanswered(1.0, status, reason.into())
    }

    #[test]
    fn a_failed_handshake_is_not_a_refused_connection() {
        let tls = branch(None, &format!("listener x: {HANDSHAKE_FAILS}"));
        let refused = branch(None, "no listener: connection refused");
        assert_eq!(status(&tls), HANDSHAKE_FAILS);
        assert_eq!(status(&refused), "connection refused");
    }

    #[test]
    fn the_query_is_part_of_the_path_the_backend_sees() {
        let mut b = branch(Some(200), "");
        b.path_seen = Some("/items".into());
        b.query = "a=1".into();
        let facts = branch_facts(&b);
        assert!(
            facts.contains(&("path", "/items?a=1".to_string())),
            "{facts:?}"
        );
    }

    #[test]
    fn headers_render_by_name_with_every_value() {
        let mut h = Headers::new();
        h.insert("x-b".into(), vec!["1".into(), "2".into()]);
        h.insert("x-a".into(), vec!["v".into()]);
        assert_eq!(render_headers(&h), "x-a: v; x-b: 1, 2");
    }
}
