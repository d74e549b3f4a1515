//! istiod's answers (the oracle's request simulation over the Envoy config istiod
//! generates) to a request, as facts: what the gateway does (forward, redirect,
//! answer directly, or why nothing matches), the destination clusters and their
//! shares, the path forwarded, and the route's redirect, direct response, header
//! operations, fault and mirrors as Envoy config. Names of the objects that wrote
//! the route are left out: they are the form, not the meaning.

use super::answers::{Answers, Fact};
use crate::istio::Mesh;
use crate::oracle::output::{Destination, RouteResult, SimResult};
use serde_json::Value;

/// What the oracle says a request gets; `None`: the oracle was asked nothing (no
/// gateway pod behind the request's port).
pub fn answers(s: Option<&SimResult>, mesh: &Mesh) -> Answers {
    let Some(s) = s else {
        return Answers::from_shares([(vec![("outcome", "no listener".to_string())], 1.0)]);
    };
    let Some(r) = &s.route else {
        return Answers::from_shares([(vec![("outcome", unrouted(&s.error))], 1.0)]);
    };
    let route = route_facts(r);
    let total: u32 = r.destinations.iter().map(|d| d.weight).sum();
    if r.destinations.is_empty() {
        return Answers::from_shares([(route, 1.0)]);
    }
    Answers::from_shares(r.destinations.iter().map(|d| {
        let share = if total == 0 {
            1.0 / r.destinations.len() as f64
        } else {
            f64::from(d.weight) / f64::from(total)
        };
        let mut facts = route.clone();
        facts.extend(destination_facts(r, d, mesh));
        (facts, share)
    }))
}

/// istiod's way through its config for the request, one step a line.
pub fn decision_path(s: Option<&SimResult>) -> String {
    let Some(s) = s else {
        return "no gateway pod behind the request's port: the oracle was asked nothing"
            .to_string();
    };
    let mut steps = vec![format!("gateway pod {} listener {}", s.gateway, s.listener)];
    if !s.route_config.is_empty() {
        steps.push(format!(
            "route config {}, virtual host {}",
            s.route_config, s.virtual_host
        ));
    }
    if let Some(r) = &s.route {
        let by = r.virtual_service().unwrap_or_else(|| r.config.clone());
        steps.push(format!(
            "route {} `{}` of {by}: {}",
            r.index, r.name, r.action
        ));
        for d in &r.destinations {
            steps.push(format!("cluster {} weight {}", d.cluster, d.weight));
        }
    }
    if !s.error.is_empty() {
        steps.push(s.error.clone());
    }
    steps.join("\n  -> ")
}

/// What the gateway does when no route matched (the oracle's error, in the words
/// of the comparison with the model, oracle/views.rs).
fn unrouted(error: &str) -> String {
    match error {
        "no listener matched" | "no filter chains matched" => "no listener".into(),
        "no virtual host matched" | "no route matched" => "404".into(),
        "tls required, sending 301" => "https redirect (301)".into(),
        e => format!("error: {e}"),
    }
}

/// The facts every answer of a matched route shares.
fn route_facts(r: &RouteResult) -> Vec<Fact> {
    let outcome = match r.action.as_str() {
        "route" => "forwarded".to_string(),
        "direct_response" | "cors_preflight" => format!(
            "{} {}",
            r.action.replace('_', " "),
            r.direct_response.as_ref().map_or(0, |d| d.status)
        ),
        other => other.to_string(),
    };
    let body = r
        .direct_response
        .as_ref()
        .map_or(String::new(), |d| d.body.clone());
    let envoy_route = r.envoy.get("route");
    vec![
        ("outcome", outcome),
        ("path", r.rewritten_path.clone()),
        ("host rewrite", r.host_rewrite.clone()),
        ("redirect", compact(r.redirect.as_ref())),
        ("body", body),
        ("header operations", header_operations(&r.envoy)),
        (
            "fault",
            compact(
                r.envoy
                    .pointer("/typed_per_filter_config/envoy.filters.http.fault"),
            ),
        ),
        (
            "mirrors",
            compact(envoy_route.and_then(|a| a.get("request_mirror_policies"))),
        ),
    ]
}

/// Who a destination reaches: the backends (service, version, namespace) of its
/// endpoints' pods and the TLS toward them, not the cluster's name (a subset of one
/// Service and a Service per version are the same destination when they reach the
/// same pods); a cluster that does not exist answers the route's status for it.
fn reached(d: &Destination, r: &RouteResult, mesh: &Mesh) -> String {
    if !d.exists {
        let status = match r.cluster_not_found_status {
            0 => 503,
            s => s,
        };
        return format!("no such cluster: {status}");
    }
    let mut backends: Vec<String> = d
        .endpoints
        .iter()
        .map(|e| {
            crate::oracle::input::pod_index(&e.address)
                .and_then(|i| mesh.pods.get(i))
                .map_or_else(
                    || format!("{}:{}", e.address, e.port),
                    |p| {
                        format!(
                            "{} {} ({}) port {}",
                            p.env_value("SERVICE_NAME")
                                .unwrap_or_else(|| p.deployment.clone()),
                            p.env_value("VERSION").unwrap_or_else(|| "-".into()),
                            p.namespace,
                            e.port
                        )
                    },
                )
        })
        .collect();
    backends.sort();
    backends.dedup();
    if backends.is_empty() {
        return "no endpoints: 503".into();
    }
    format!("{} tls {}", backends.join(", "), d.tls)
}

/// The facts of one weighted destination: who it reaches and its own header
/// operations.
fn destination_facts(r: &RouteResult, d: &Destination, mesh: &Mesh) -> Vec<Fact> {
    let cluster = reached(d, r, mesh);
    let own = r
        .envoy
        .pointer("/route/weighted_clusters/clusters")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name") == Some(&d.cluster.clone().into()))
        })
        .map_or(String::new(), header_operations);
    vec![
        ("destination", cluster),
        ("destination header operations", own),
    ]
}

/// The request and response header operations of an Envoy route or weighted
/// cluster, each entry as JSON, sorted (the order pilot writes a `set` map in is
/// not part of its meaning).
fn header_operations(v: &Value) -> String {
    let mut ops: Vec<String> = [
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
    ]
    .iter()
    .flat_map(|key| {
        v.get(*key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(move |e| format!("{key} {e}"))
    })
    .collect();
    ops.sort();
    ops.join("; ")
}

/// A JSON value on one line; empty when absent or null.
fn compact(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Mesh {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
        Mesh::build(&crate::fixtures::load_dir(&dir).unwrap())
    }

    fn answers(s: Option<&SimResult>) -> Answers {
        super::answers(s, &mesh())
    }

    fn sim(route: Value, error: &str) -> SimResult {
        serde_json::from_value(serde_json::json!({
            "id": "routing::x", "gateway": "istio-system/gw", "listener": "0.0.0.0_8080",
            "route": route, "error": error,
        }))
        .unwrap()
    }

    fn split(w1: u32, w2: u32, path: &str) -> Value {
        serde_json::json!({
            "index": 1, "match": {}, "action": "route", "rewritten_path": path,
            "config": "/apis/networking.istio.io/v1/namespaces/atlas/virtual-service/nb-rest",
            "destinations": [
                {"cluster": "outbound|80|v1|nb-rest.atlas.svc.cluster.local", "weight": w1, "exists": true},
                {"cluster": "outbound|80|v2|nb-rest.atlas.svc.cluster.local", "weight": w2, "exists": true},
            ],
        })
    }

    #[test]
    fn weights_of_another_scale_are_the_same_answers() {
        let a = answers(Some(&sim(split(90, 10, "/items"), "")));
        let b = answers(Some(&sim(split(9, 1, "/items"), "")));
        assert_eq!(a, b);
    }

    #[test]
    fn another_forwarded_path_is_a_path_difference() {
        let a = answers(Some(&sim(split(90, 10, "/items"), "")));
        let b = answers(Some(&sim(split(90, 10, "/atlas-rest/items"), "")));
        assert_eq!(a.differing_aspects(&b), vec!["path"]);
    }

    #[test]
    fn no_route_is_a_404_and_no_request_is_no_listener() {
        let none = answers(Some(&sim(Value::Null, "no route matched")));
        assert_eq!(none.lines(), vec!["[100%] outcome 404"]);
        assert_eq!(answers(None).lines(), vec!["[100%] outcome no listener"]);
    }

    #[test]
    fn the_decision_path_names_the_route_and_its_clusters() {
        let s = sim(split(90, 10, "/items"), "");
        let path = decision_path(Some(&s));
        assert!(path.contains("VirtualService atlas/nb-rest"), "{path}");
        assert!(
            path.contains("outbound|80|v1|nb-rest.atlas.svc.cluster.local weight 90"),
            "{path}"
        );
    }

    #[test]
    fn a_subset_and_a_per_version_service_reaching_the_same_pods_are_one_destination() {
        let m = mesh();
        let v2 = m
            .pods
            .iter()
            .position(|p| {
                p.env_value("VERSION").as_deref() == Some("v2") && p.deployment.contains("nb-rest")
            })
            .unwrap();
        let ip = crate::oracle::input::pod_ip(v2).to_string();
        let route = |cluster: &str| {
            serde_json::json!({
                "index": 0, "match": {}, "action": "route", "rewritten_path": "/",
                "destinations": [{"cluster": cluster, "weight": 100, "exists": true, "tls": "ISTIO_MUTUAL",
                                  "endpoints": [{"address": ip, "port": 8080}]}],
            })
        };
        let a = super::answers(
            Some(&sim(
                route("outbound|80|v2|nb-rest.atlas.svc.cluster.local"),
                "",
            )),
            &m,
        );
        let b = super::answers(
            Some(&sim(
                route("outbound|80||nb-rest-v2.atlas.svc.cluster.local"),
                "",
            )),
            &m,
        );
        assert_eq!(a, b);
        assert!(
            a.lines()[0].contains("nb-rest v2 (atlas)"),
            "{:?}",
            a.lines()
        );
        // Another pod is another destination.
        let other = serde_json::json!({
            "index": 0, "match": {}, "action": "route", "rewritten_path": "/",
            "destinations": [{"cluster": "outbound|80||x.atlas.svc.cluster.local", "weight": 100, "exists": false}],
        });
        let c = super::answers(Some(&sim(other, "")), &m);
        assert_ne!(a, c);
    }
}
