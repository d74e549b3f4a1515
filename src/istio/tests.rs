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
    let vh = &l[0].chains[0].route_config.vhosts;
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
        envoy_name: String::new(),
        operation: String::new(),
        name: "t".into(),
        virtual_service: "VirtualService ns/t".into(),
        source: Default::default(),
        http_index: 0,
        path,
        ignore_case: false,
        headers: vec![],
        claims: vec![],
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
        filters: Default::default(),
        mirrors: vec![],
        cluster_not_found: 503,
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

#[test]
fn a_fault_abort_takes_its_share_of_requests_before_the_route_forwards() {
    let forward = Branch {
        cluster: Some("c".into()),
        ..Branch::unanswered(1.0, Some(200), "forwarded".into())
    };
    let mut p = Prediction {
        steps: vec![],
        route: None,
        branches: vec![forward],
        fault: None,
        mirrors: vec![],
        longest_answer: Default::default(),
        authz: None,
    };
    assert_eq!(p.outcomes().len(), 1);
    p.fault = Some(FaultPlan {
        delay: Some(DelayPlan {
            fixed_delay_ms: 1500,
            percentage: Fraction::of_integer(20),
        }),
        abort: Some(AbortPlan {
            http_status: 503,
            percentage: Some(Fraction::of_percent(&crate::fixtures::istio::Percent {
                value: 25.0,
            })),
        }),
    });
    let o = p.outcomes();
    assert_eq!(o.len(), 2);
    assert_eq!((o[0].status, o[0].share), (Some(503), 0.25));
    assert_eq!((o[1].status, o[1].share), (Some(200), 0.75));
    assert_eq!(p.delay(), Some((1500, 0.2)));
    // 100% leaves nothing forwarded; the forwarding branches stay for the oracle.
    p.fault.as_mut().unwrap().abort.as_mut().unwrap().percentage = Some(Fraction::of_integer(100));
    assert_eq!(p.outcomes().len(), 1);
    assert_eq!(p.branches.len(), 1);
}

fn chain(names: &[&str], rc: &str) -> ChainPlan {
    ChainPlan {
        server_names: names.iter().map(|s| s.to_string()).collect(),
        tls: None,
        hcm: HcmPlan::gateway("0.0.0.0_8443", None),
        route_config: RouteConfigPlan {
            name: rc.into(),
            vhosts: Vec::new(),
        },
    }
}

#[test]
fn a_tls_connection_takes_the_chain_of_its_sni_as_envoy_picks_it() {
    let l = ListenerPlan {
        name: "0.0.0.0_8443".into(),
        target_port: 8443,
        server_port: 443,
        node_ports: vec![30443],
        protocol: ListenerProtocol::Https,
        chains: vec![
            chain(&["*.example.com"], "wild"),
            chain(&["*.a.example.com"], "longer-wild"),
            chain(&["httpbin.example.com"], "exact"),
        ],
    };
    let rc = |sni: Option<&str>| l.chain_for(sni).map(|c| c.route_config.name.clone());
    assert_eq!(rc(Some("httpbin.example.com")).as_deref(), Some("exact"));
    assert_eq!(rc(Some("HTTPBIN.example.com")).as_deref(), Some("exact"));
    assert_eq!(rc(Some("x.a.example.com")).as_deref(), Some("longer-wild"));
    assert_eq!(rc(Some("other.example.com")).as_deref(), Some("wild"));
    // `*.example.com` does not cover example.com itself; no chain without names.
    assert_eq!(rc(Some("example.com")), None);
    assert_eq!(rc(None), None);
}

#[test]
fn credential_names_resolve_in_the_gateway_pods_namespace() {
    assert_eq!(
        sds_name("httpbin-credential"),
        "kubernetes://httpbin-credential"
    );
    assert_eq!(sds_name("kubernetes://x"), "kubernetes://x");
    assert_eq!(
        secret_ref("httpbin-credential", "istio-ingress"),
        (
            "istio-ingress".to_string(),
            "httpbin-credential".to_string()
        )
    );
    assert_eq!(
        secret_ref("kubernetes://other/cred", "istio-ingress"),
        ("other".to_string(), "cred".to_string())
    );
}

/// The shipped fixtures with `form` added to the authz route.
fn with_authz(form: &str) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let mut text = std::fs::read_to_string(e.path()).unwrap();
        text = text.replace(
            "        prefix: /authz\n    route:\n",
            &format!("        prefix: /authz\n{form}    route:\n"),
        );
        std::fs::write(dir.path().join(e.file_name()), text).unwrap();
    }
    Mesh::build(&load_dir(dir.path()).unwrap())
}

fn authz_route(m: &Mesh) -> Option<&RoutePlan> {
    m.gateways[0].listeners[0].chains[0].route_config.vhosts[0]
        .routes
        .iter()
        .find(|r| r.name == "atlas/authz#0.0")
}

#[test]
fn mirrors_become_pilot_mirror_policies() {
    let m = with_authz("    mirror:\n      host: nb-rest\n      subset: v2\n    mirrorPercentage:\n      value: 50.5\n");
    let r = authz_route(&m).unwrap();
    assert_eq!(
        r.mirrors,
        [MirrorPlan {
            cluster: "outbound|80|v2|nb-rest.atlas.svc.cluster.local".into(),
            fraction: Fraction {
                numerator: 505_000,
                denominator: 1_000_000
            }
        }]
    );
    // The mirror's cluster is built (it is a destination of no route).
    assert!(m
        .clusters
        .contains_key("outbound|80|v2|nb-rest.atlas.svc.cluster.local"));
    let m = with_authz("    mirrors:\n    - destination:\n        host: ghost\n    - destination:\n        host: atlas-ui\n      percentage:\n        value: 0\n");
    let r = authz_route(&m).unwrap();
    // No Service: the gateway server's port; 0%: no policy; no percentage: 100/HUNDRED.
    assert_eq!(
        r.mirrors,
        [MirrorPlan {
            cluster: "outbound|80||ghost.atlas.svc.cluster.local".into(),
            fraction: Fraction {
                numerator: 100,
                denominator: 100
            }
        }]
    );
    assert!(!m
        .clusters
        .contains_key("outbound|80||ghost.atlas.svc.cluster.local"));
}

#[test]
fn mirror_and_mirrors_together_drop_the_virtual_service_as_istiod_does() {
    let m = with_authz("    mirror:\n      host: nb-rest\n    mirrors:\n    - destination:\n        host: atlas-ui\n");
    assert!(authz_route(&m).is_none());
    assert!(
        m.warnings
            .iter()
            .any(|w| w.message.contains("both mirror and mirrors")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn a_consistent_hash_is_in_the_decision_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let text = std::fs::read_to_string(e.path()).unwrap().replace(
            "  host: authz\n  trafficPolicy:\n",
            "  host: authz\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n",
        );
        std::fs::write(dir.path().join(e.file_name()), text).unwrap();
    }
    let req = SimRequest {
        gateway: None,
        service_port: 80,
        method: "GET".into(),
        host: "atlas.example".into(),
        path: "/authz/check".into(),
        ..Default::default()
    };
    let hashed = Mesh::build(&load_dir(dir.path()).unwrap()).simulate(&req);
    assert!(
        hashed
            .explain()
            .contains("consistent hash on header x-user"),
        "{}",
        hashed.explain()
    );
    assert!(!shipped()
        .simulate(&req)
        .explain()
        .contains("consistent hash"));
}

/// The mesh of an example suite's fixtures (examples/<base> + examples/<own>).
fn example(own: &str) -> Mesh {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let fx = crate::fixtures::load_dirs(&[root.join("bookinfo"), root.join(own)]).unwrap();
    Mesh::build(&fx)
}

fn ratings_request(headers: &[(&str, &str)]) -> SimRequest {
    SimRequest {
        gateway: None,
        service_port: 80,
        method: "GET".into(),
        host: "node".into(),
        path: "/ratings/0".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn the_longest_answer_counts_the_fault_delay() {
    // Istio's fault-injection task: 7 s for jason, nothing for others; pilot's default
    // retry policy (2 retries) may add 2 back-offs of at most 250 ms to either.
    let m = example("fault-injection-delay");
    let jason = m.simulate(&ratings_request(&[("end-user", "jason")]));
    assert_eq!(jason.longest_answer, std::time::Duration::from_millis(7500));
    let alice = m.simulate(&ratings_request(&[("end-user", "alice")]));
    assert_eq!(alice.longest_answer, std::time::Duration::from_millis(500));
}

#[test]
fn the_longest_answer_counts_every_try_of_a_slow_backend() {
    // retries: 3 attempts after the first, 2 s per try; the stub takes 3 s: 4 tries of
    // 2 s and 3 back-offs of at most 250 ms.
    let m = example("retries");
    let slow = m.simulate(&ratings_request(&[("x-meshcheck-delay", "3s")]));
    assert_eq!(slow.longest_answer, std::time::Duration::from_millis(8750));
    // A stub quicker than the per-try timeout is tried once per try at its own pace.
    let quick = m.simulate(&ratings_request(&[("x-meshcheck-delay", "500ms")]));
    assert_eq!(quick.longest_answer, std::time::Duration::from_millis(2750));
}

#[test]
fn the_route_timeout_ends_the_whole_exchange() {
    // request-timeouts: reviews has `timeout: 0.5s`; a 10 s stub is cut at 0.5 s.
    let m = example("request-timeouts");
    let mut req = ratings_request(&[("x-meshcheck-delay", "10s")]);
    req.path = "/reviews/0".into();
    let p = m.simulate(&req);
    assert_eq!(p.longest_answer, std::time::Duration::from_millis(500));
}

// ---- outlier ejection over ordered steps -------------------------------------------

/// examples/outlier-ejection with `from` replaced by `to` in its DestinationRule.
fn ejection_mesh(from: &str, to: &str) -> Mesh {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root.join("outlier-ejection/ratings.yaml")).unwrap();
    assert!(text.contains(from), "{from:?}");
    std::fs::write(dir.path().join("ratings.yaml"), text.replace(from, to)).unwrap();
    let fx =
        crate::fixtures::load_dirs(&[root.join("bookinfo"), dir.path().to_path_buf()]).unwrap();
    Mesh::build(&fx)
}

fn step(name: &str, headers: &[(&str, &str)], once: bool) -> steps::StepRequest {
    steps::StepRequest {
        name: name.into(),
        request: ratings_request(headers),
        repeat: 1,
        once,
    }
}

/// healthy (waits for a 200), one 503 sent once, then what the gateway answers (waits
/// for the gateway's own 503).
fn eject_then_ask(mesh: &Mesh) -> Vec<steps::StepPrediction> {
    let steps = [
        step("healthy", &[], false),
        step("fails", &[("x-meshcheck-status", "503")], true),
        step("after", &[], false),
    ];
    mesh.simulate_steps(&steps, |i, p| {
        let b = &p.outcomes()[0];
        match i {
            0 => b.status == Some(200),
            _ => b.status == Some(503) && b.backend.is_none(),
        }
    })
    .0
}

fn only(p: &Prediction) -> Branch {
    let o = p.outcomes();
    assert_eq!(o.len(), 1, "{}", p.explain());
    o[0].clone()
}

#[test]
fn one_5xx_ejects_the_only_pod_and_the_gateway_answers_no_healthy_upstream() {
    let mesh = ejection_mesh("", "");
    let s = eject_then_ask(&mesh);
    let fails = only(&s[1].requests[0]);
    assert_eq!(fails.status, Some(503));
    assert_eq!(fails.backend.map(|b| b.service), Some("ratings".into()));
    let after = only(s[2].shown().unwrap());
    assert_eq!((after.status, after.backend.is_none()), (Some(503), true));
    assert!(
        after.reason.contains("ejected by outlier detection")
            && after.reason.contains("no healthy upstream"),
        "{}",
        after.reason
    );
}

#[test]
fn a_pod_is_not_ejected_before_its_count_or_beyond_max_ejection_percent() {
    for (from, to) in [
        ("consecutive5xxErrors: 1", "consecutive5xxErrors: 2"),
        // Envoy's ejectHost: 100 * 1 / 1 host > 50: no room, even for one.
        ("maxEjectionPercent: 100", "maxEjectionPercent: 50"),
        // Unset: Envoy's 10%.
        ("      maxEjectionPercent: 100\n", ""),
    ] {
        let s = eject_then_ask(&ejection_mesh(from, to));
        let after = only(s[2].shown().unwrap());
        assert_eq!(after.status, Some(200), "{to}: {}", after.reason);
        assert_eq!(
            after.backend.map(|b| b.service),
            Some("ratings".into()),
            "{to}"
        );
    }
}

#[test]
fn below_min_health_percent_envoy_balances_over_the_ejected_pod_again() {
    let mesh = ejection_mesh(
        "      maxEjectionPercent: 100\n",
        "      maxEjectionPercent: 100\n      minHealthPercent: 50\n",
    );
    let after = only(eject_then_ask(&mesh)[2].shown().unwrap());
    assert_eq!(after.status, Some(200), "{}", after.reason);
    assert!(after.backend.is_some());
}

#[test]
fn in_the_steady_state_a_pod_that_always_fails_is_ejected_when_it_is_allowed() {
    let failing = ratings_request(&[("x-meshcheck-status", "503")]);
    let b = only(&ejection_mesh("", "").simulate(&failing));
    assert_eq!(
        (b.status, b.backend.is_none()),
        (Some(503), true),
        "{}",
        b.reason
    );
    assert!(b.reason.contains("no healthy upstream"), "{}", b.reason);
    // Panic mode: the pod's own 503 stays visible.
    let mesh = ejection_mesh(
        "      maxEjectionPercent: 100\n",
        "      maxEjectionPercent: 100\n      minHealthPercent: 50\n",
    );
    let b = only(&mesh.simulate(&failing));
    assert_eq!(b.status, Some(503));
    assert_eq!(b.backend.map(|b| b.service), Some("ratings".into()));
}

/// A fixture directory (`fixtures/<name>`) with `from` replaced by `to` in every file
/// (`from` must occur somewhere).
fn edited(name: &str, from: &str, to: &str) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut found = false;
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let text = std::fs::read_to_string(e.path()).unwrap();
        found |= text.contains(from);
        std::fs::write(dir.path().join(e.file_name()), text.replace(from, to)).unwrap();
    }
    assert!(found, "no fixture of {name} contains {from:?}");
    Mesh::build(&load_dir(dir.path()).unwrap())
}

/// nb-rest's VirtualService with a route without match first (the routes after it
/// are the ones pilot drops).
const CATCH_ALL_FIRST: &str = "  http:\n  - name: nb-rest-default\n    route:\n    - destination:\n        host: nb-rest\n        subset: v1\n        port:\n          number: 80\n  # Istio turns";

#[test]
fn routes_after_a_catch_all_are_not_programmed() {
    // pilot route.go BuildHTTPRoutesForVirtualService stops at a route without match.
    let m = edited("ingress", "  http:\n  # Istio turns", CATCH_ALL_FIRST);
    let routes = &m.gateways[0].listeners[0].chains[0].route_config.vhosts[0].routes;
    let names: Vec<_> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["atlas/atlas-ui#0.0", "atlas/authz#0.0", "atlas/nb-rest#0.0"]
    );
    // And a match Envoy takes as a catch-all (prefix /, nothing else) ends it too.
    let m = edited(
        "ingress",
        "  http:\n  # Istio turns",
        "  http:\n  - name: nb-rest-default\n    match:\n    - uri:\n        prefix: /atlas-rest\n    - uri:\n        prefix: /\n    - uri:\n        prefix: /never\n    route:\n    - destination:\n        host: nb-rest\n        subset: v1\n  # Istio turns",
    );
    let routes = &m.gateways[0].listeners[0].chains[0].route_config.vhosts[0].routes;
    let names: Vec<_> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "atlas/atlas-ui#0.0",
            "atlas/authz#0.0",
            "atlas/nb-rest#0.0",
            "atlas/nb-rest#0.1"
        ]
    );
}

fn gateway_reference() -> Mesh {
    let fx = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gateway-reference"))
        .unwrap();
    Mesh::build(&fx)
}

/// (route configuration, virtual host name, domains) of a gateway's listeners.
fn vhost_domains(m: &Mesh) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for l in &m.gateways[0].listeners {
        for c in &l.chains {
            for v in &c.route_config.vhosts {
                out.push((
                    c.route_config.name.clone(),
                    v.name.clone(),
                    v.domains.clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn istios_gateway_reference_example_is_programmed_as_pilot_programs_it() {
    let m = gateway_reference();
    let listeners: Vec<_> = m.gateways[0]
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    // No listener for the MONGO server: no VirtualService has a tcp route for port
    // 2379 (gateway_tcp.rs).
    assert_eq!(
        listeners,
        [
            "0.0.0.0_8080",
            "0.0.0.0_8443",
            "0.0.0.0_9080",
            "0.0.0.0_9443"
        ]
    );
    let s = |x: &str| x.to_string();
    // Hosts with the same routes share one virtual host (collapseDuplicateRoutes).
    assert_eq!(
        vhost_domains(&m),
        [
            (
                s("http.8080"),
                s("eu.bookinfo.com:80"),
                vec![s("eu.bookinfo.com"), s("uk.bookinfo.com")]
            ),
            (
                s("https.443.https-443.my-gateway.some-config-namespace"),
                s("eu.bookinfo.com:443"),
                vec![s("eu.bookinfo.com"), s("uk.bookinfo.com")]
            ),
            (
                s("http.9080"),
                s("reviews.prod.svc.cluster.local:9080"),
                vec![
                    s("reviews.prod.svc.cluster.local"),
                    s("eu.bookinfo.com"),
                    s("uk.bookinfo.com")
                ]
            ),
            (
                s("https.9443.https-9443.my-gateway.some-config-namespace"),
                s("eu.bookinfo.com:9443"),
                vec![s("eu.bookinfo.com"), s("uk.bookinfo.com")]
            ),
        ]
    );
    let tls: Vec<_> = m.gateways[0]
        .listeners
        .iter()
        .flat_map(|l| &l.chains)
        .filter_map(|c| c.tls.as_ref().map(|t| t.sds_name.as_str()))
        .collect();
    // File certificates are named as pilot names them (BuildListenerTLSContext).
    assert_eq!(
        tls,
        [
            "file-cert:/etc/certs/servercert.pem~/etc/certs/privatekey.pem",
            "kubernetes://bookinfo-secret"
        ]
    );
}

#[test]
fn a_tcp_server_gets_a_listener_only_from_a_tcp_route_for_it() {
    let names = |m: &Mesh| -> Vec<String> {
        m.gateways[0]
            .listeners
            .iter()
            .map(|l| l.name.clone())
            .collect()
    };
    let m = edited(
        "gateway-reference",
        "    - port: 27017\n",
        "    - port: 2379\n",
    );
    assert!(
        names(&m).contains(&"0.0.0.0_2379".to_string()),
        "{:?}",
        names(&m)
    );
    // A match naming another Gateway does not count; this one (short name, resolved
    // in the VirtualService's namespace) neither, the full name does.
    for (gateways, listens) in [
        ("[other-gateway]", false),
        ("[my-gateway]", false),
        ("[some-config-namespace/my-gateway]", true),
    ] {
        let m = edited(
            "gateway-reference",
            "    - port: 27017\n",
            &format!("    - port: 2379\n      gateways: {gateways}\n"),
        );
        assert_eq!(
            names(&m).contains(&"0.0.0.0_2379".to_string()),
            listens,
            "{gateways}"
        );
    }
    // No match at all fits every server.
    let m = edited(
        "gateway-reference",
        "  - match:\n    - port: 27017\n    route:\n",
        "  - route:\n",
    );
    assert!(
        names(&m).contains(&"0.0.0.0_2379".to_string()),
        "{:?}",
        names(&m)
    );
}
