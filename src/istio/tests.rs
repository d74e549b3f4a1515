use super::*;
use crate::fixtures::load_dir;
use std::path::Path;

fn shipped() -> Mesh {
    let fx = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress")).unwrap();
    assert!(fx.warnings.is_empty(), "{:?}", fx.warnings);
    Mesh::build(&fx)
}

#[test]
fn shipped_fixtures_program_one_gateway_listener_with_all_routes() {
    let m = shipped();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.pods.len(), 5);
    assert_eq!(m.gateways.len(), 1);
    let l = &m.gateways[0].listeners;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].name, "0.0.0.0_8080");
    assert_eq!(l[0].node_ports, vec![30080]);
    let vh = &l[0].route_config.vhosts;
    assert_eq!(vh.len(), 1);
    assert_eq!(vh[0].name, "*:80");
    // atlas-ui, authz, then nb-rest's two routes (VirtualServices in name order).
    let names: Vec<_> = vh[0].routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "atlas/atlas-ui#0.0",
            "atlas/authz#0.0",
            "atlas/nb-rest#0.0",
            "atlas/nb-rest#0.1",
            "atlas/nb-rest#1.0",
            "atlas/nb-rest#1.1"
        ]
    );
    let split = &vh[0].routes[4];
    assert_eq!(
        split
            .destinations
            .iter()
            .map(|d| (d.cluster.as_str(), d.weight))
            .collect::<Vec<_>>(),
        [
            ("outbound|80|v1|nb-rest.atlas.svc.cluster.local", 90),
            ("outbound|80|v2|nb-rest.atlas.svc.cluster.local", 10)
        ]
    );
    // pilot: `rewrite.uri` is prefix_rewrite (route.go applyHTTPRouteDestination).
    assert_eq!(split.rewrite, Some(UriRewrite::Prefix("/".into())));
    let v2 = &m.clusters["outbound|80|v2|nb-rest.atlas.svc.cluster.local"];
    assert_eq!(v2.tls, UpstreamTls::IstioMutual);
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(m.pods[v2.endpoints[0].pod].deployment, "nb-rest-v2");
    assert_eq!(
        v2.identities,
        ["spiffe://cluster.local/ns/atlas/sa/nb-rest"]
    );
    assert_eq!(
        m.gateway_identities(),
        ["spiffe://cluster.local/ns/istio-ingress/sa/my-ingress-gateway"]
    );
    assert_eq!(m.node_port_for(80).map(|(_, p)| p), Some(30080));
    assert!(m
        .pods
        .iter()
        .filter(|p| p.role == PodRole::App)
        .all(|p| p.has_sidecar()));
}

#[test]
fn injection_follows_istio_webhook_selection() {
    let l = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let none = l(&[]);
    assert!(injection(
        &l(&[("istio-injection", "enabled")]),
        &none,
        &none
    ));
    assert!(!injection(
        &l(&[("istio-injection", "enabled")]),
        &l(&[("sidecar.istio.io/inject", "false")]),
        &none
    ));
    assert!(!injection(
        &l(&[("istio-injection", "disabled")]),
        &l(&[("sidecar.istio.io/inject", "true")]),
        &none
    ));
    assert!(injection(
        &none,
        &l(&[("sidecar.istio.io/inject", "true")]),
        &none
    ));
    assert!(!injection(&none, &none, &none));
    assert!(injection(&l(&[("istio.io/rev", "1-30-3")]), &none, &none));
}

#[test]
fn hosts_resolve_and_match_like_istio() {
    assert_eq!(
        resolve_host("authz", "atlas"),
        "authz.atlas.svc.cluster.local"
    );
    // pilot's ResolveShortnameToFQDN: a dotted name is taken as fully qualified.
    assert_eq!(resolve_host("authz.atlas", "x"), "authz.atlas");
    assert_eq!(resolve_host("*", "x"), "*");
    assert_eq!(resolve_host("10.0.0.1", "x"), "10.0.0.1");
    assert_eq!(
        resolve_host("authz.atlas.svc.cluster.local", "x"),
        "authz.atlas.svc.cluster.local"
    );
    assert!(host_matches("*", "a.example.com"));
    assert!(host_matches("*.example.com", "a.example.com"));
    assert!(!host_matches("*.example.com", "example.org"));
    assert_eq!(
        parse_cluster_name("outbound|80|v1|x.y.svc.cluster.local"),
        Some((80, Some("v1".into()), "x.y.svc.cluster.local".into()))
    );
}

/// A route with `prefix` and `rewrite`, for the rewrite semantics below.
fn rewrite_route(path: PathMatch, rewrite: UriRewrite) -> RoutePlan {
    RoutePlan {
        name: "t".into(),
        virtual_service: "VirtualService ns/t".into(),
        source: Default::default(),
        http_index: 0,
        path,
        ignore_case: false,
        headers: vec![],
        query: vec![],
        method: None,
        authority: None,
        rewrite: Some(rewrite),
        rewrite_authority: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        destinations: vec![],
        action: RouteKind::Forward,
        timeout_ms: 0,
        retry: Some(RetryPlan::default()),
        hash_policy: Vec::new(),
    }
}

#[test]
fn prefix_rewrite_to_root_keeps_the_slash_after_the_prefix_as_pilot_and_envoy_do() {
    // istio/istio#26828: `prefix: /atlas-rest` + `rewrite.uri: /` is prefix_rewrite "/".
    let r = rewrite_route(
        PathMatch::Prefix("/atlas-rest".into()),
        UriRewrite::Prefix("/".into()),
    );
    assert_eq!(rewritten_path(&r, "/atlas-rest/items"), "//items");
    assert_eq!(rewritten_path(&r, "/atlas-rest"), "/");
    assert_eq!(rewritten_path(&r, "/atlas-rest/items?x=1"), "//items?x=1");
    // The shipped fixtures' form: the prefix with its slash, and the bare path exactly.
    let slash = rewrite_route(
        PathMatch::Prefix("/atlas-rest/".into()),
        UriRewrite::Prefix("/".into()),
    );
    assert_eq!(rewritten_path(&slash, "/atlas-rest/items"), "/items");
    let exact = rewrite_route(
        PathMatch::Exact("/atlas-rest".into()),
        UriRewrite::Prefix("/".into()),
    );
    assert_eq!(rewritten_path(&exact, "/atlas-rest?x=1"), "/?x=1");
}

#[test]
fn regex_rewrite_substitutes_envoy_style_groups_over_the_path_only() {
    let r = rewrite_route(
        PathMatch::Prefix("/atlas-rest".into()),
        UriRewrite::Regex("^/atlas-rest/?(.*)".into(), "/\\1".into()),
    );
    assert_eq!(rewritten_path(&r, "/atlas-rest/items"), "/items");
    assert_eq!(rewritten_path(&r, "/atlas-rest"), "/");
    assert_eq!(rewritten_path(&r, "/atlas-rest/a?b=/c"), "/a?b=/c");
}

#[test]
fn uri_rewrite_becomes_prefix_rewrite_and_uri_regex_rewrite_regex_rewrite() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: ns}
spec:
  hosts: ["*"]
  gateways: [g]
  http:
  - match: [{uri: {prefix: /a}}]
    rewrite: {uri: /}
    route: [{destination: {host: s}}]
  - match: [{uri: {prefix: /b}}]
    rewrite: {uriRegexRewrite: {match: "^/b/?(.*)", rewrite: "/\\1"}}
    route: [{destination: {host: s}}]
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.yaml"), yaml).unwrap();
    let fx = load_dir(dir.path()).unwrap();
    let vs = &fx.virtual_services[0];
    let mut warnings = Vec::new();
    let routes = super::mesh::routes_of(&fx, vs, 80, false, &mut warnings);
    assert_eq!(routes[0].rewrite, Some(UriRewrite::Prefix("/".into())));
    assert_eq!(
        routes[1].rewrite,
        Some(UriRewrite::Regex("^/b/?(.*)".into(), "/\\1".into()))
    );
}

#[test]
fn durations_parse_as_go_and_protobuf_write_them() {
    assert_eq!(duration_ms("5s"), Some(5000));
    assert_eq!(duration_ms("500ms"), Some(500));
    assert_eq!(duration_ms("0.500s"), Some(500));
    assert_eq!(duration_ms("1m30s"), Some(90_000));
    assert_eq!(duration_ms("1h"), Some(3_600_000));
    assert_eq!(duration_ms("0s"), Some(0));
    assert_eq!(duration_ms("5"), None);
    assert_eq!(duration_ms(""), None);
    assert_eq!(duration_ms("5x"), None);
}
