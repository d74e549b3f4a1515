//! The Kubernetes Gateway API at the ingress (fixtures/ingress-gateway-api): the
//! ingress suite passes on the local target (with the model; `.ci/run` runs this file
//! again with istiod as the control plane), it is equivalent to the VirtualService
//! fixtures, and what breaks it fails exactly the checks it should. Every fixture set
//! here is compared with istiod when the test ends (tests/common/oracle.rs).

mod common;
use common::*;

const GW_API: &str = "fixtures/ingress-gateway-api";

fn equivalent(old: &std::path::Path, new: &std::path::Path) -> RunResult {
    let mut run = Run::new()
        .arg("equivalent")
        .arg("--suite")
        .arg("ingress")
        .arg("--fixtures")
        .arg(old)
        .arg("--fixtures")
        .arg(new);
    if let Ok(bin) = common::oracle::oracle() {
        run = run.arg("--oracle").arg(bin);
    }
    run.run_plain()
}

#[test]
fn the_gateway_api_ingress_passes_the_ingress_suite() {
    let f = FixtureCopy::of(GW_API);
    let r = Run::new().fixtures(f.path()).run();
    assert_fails_exactly::<&str>(&r, &[]);
    assert!(
        r.passed.contains("routing::atlas-rest-rewrite"),
        "{}",
        r.stdout
    );
}

#[test]
fn the_gateway_api_ingress_is_equivalent_to_the_virtualservice_ingress() {
    let r = equivalent(&root().join("fixtures/ingress"), &root().join(GW_API));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("28 requests, 0 differ"), "{}", r.stdout);
}

#[test]
fn a_bare_prefix_rewritten_to_root_is_not_equivalent_to_replace_prefix_match() {
    // The VirtualService form many write first: `prefix: /atlas-rest` with
    // `rewrite.uri: /` sends /atlas-rest/items on as //items (prefix_rewrite);
    // ReplacePrefixMatch `/` sends /items.
    let vs = FixtureCopy::new();
    let text = vs.read("40-virtualservices.yaml");
    let start = text.find("  - name: atlas-rest-v2-pinned").unwrap();
    let bare = "  - name: atlas-rest-split\n    match:\n    - uri:\n        prefix: /atlas-rest\n    rewrite:\n      uri: /\n    route:\n    - destination:\n        host: nb-rest\n        subset: v1\n        port:\n          number: 80\n      weight: 90\n    - destination:\n        host: nb-rest\n        subset: v2\n        port:\n          number: 80\n      weight: 10\n";
    vs.write(
        "40-virtualservices.yaml",
        &format!("{}{bare}", &text[..start]),
    );
    let r = equivalent(vs.path(), &root().join(GW_API));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("routing::atlas-rest-rewrite"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("path //items"), "{}", r.stdout);
    assert!(r.stdout.contains("path /items"), "{}", r.stdout);
}

#[test]
fn an_httproute_sending_atlas_ui_to_authz_fails_that_route() {
    let f = FixtureCopy::of(GW_API);
    f.replace(
        "40-httproutes.yaml",
        "    backendRefs:\n    - name: atlas-ui\n",
        "    backendRefs:\n    - name: authz\n",
    );
    let r = Run::new().fixtures(f.path()).run();
    assert_fails_exactly(
        &r,
        &["routing::atlas-ui", "static::simulate::routing::atlas-ui"],
    );
}

#[test]
fn without_the_rewrite_filter_nb_rest_sees_the_prefix() {
    let f = FixtureCopy::of(GW_API);
    let text = f.read("40-httproutes.yaml");
    let split = text.find("  - name: atlas-rest-split").unwrap();
    let (head, tail) = text.split_at(split);
    let tail = tail.replacen(
        "    filters:\n    - type: URLRewrite\n      urlRewrite:\n        path:\n          type: ReplacePrefixMatch\n          replacePrefixMatch: /\n",
        "",
        1,
    );
    assert_ne!(tail.len(), text.len() - split, "the filter was removed");
    f.write("40-httproutes.yaml", &format!("{head}{tail}"));
    let r = Run::new().fixtures(f.path()).run();
    assert_fails_exactly(
        &r,
        &[
            "routing::atlas-rest-rewrite",
            "routing::atlas-rest-root-rewrite",
            "static::simulate::routing::atlas-rest-rewrite",
            "static::simulate::routing::atlas-rest-root-rewrite",
        ],
    );
}

#[test]
fn a_route_in_a_namespace_the_listener_does_not_allow_is_not_attached() {
    let f = FixtureCopy::of(GW_API);
    f.replace(
        "30-gateway.yaml",
        "kubernetes.io/metadata.name: atlas",
        "kubernetes.io/metadata.name: elsewhere",
    );
    let r = Run::new().fixtures(f.path()).run();
    assert!(
        r.failed.contains("static::gateway-api-status"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Accepted=False (NotAllowedByListeners)"),
        "{}",
        r.stdout
    );
    // Nothing routes: every routed check fails, the 404 and the ports still pass.
    assert!(r.failed.contains("routing::atlas-ui"));
    assert!(r.passed.contains("routing::unmatched-path-404"));
    assert!(r.passed.contains("ports::only-http-nodeport"));
}

#[test]
fn a_backend_in_another_namespace_without_a_reference_grant_answers_500() {
    let f = FixtureCopy::of(GW_API);
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: cross\n  namespace: atlas\nspec:\n  parentRefs:\n  - name: atlas-gateway\n    namespace: istio-ingress\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /cross\n    backendRefs:\n    - name: shared\n      namespace: istio-ingress\n      port: 80\n";
    let service = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: shared\n  namespace: istio-ingress\nspec:\n  selector:\n    app: shared\n  ports:\n  - port: 80\n";
    f.write("60-cross.yaml", &format!("{route}{service}"));
    let suite = "name: cross\nfixtures: .\ningress: { port: 80 }\nchecks:\n  - group: refs\n    name: cross-500\n    http:\n      request: { path: /cross }\n      expect: { status: 500, backend: none }\n  - group: refs\n    name: cross-status\n    status:\n      object: HTTPRoute atlas/cross\n      scope: Gateway istio-ingress/atlas-gateway\n      conditions:\n      - { type: Accepted, status: \"True\" }\n      - { type: ResolvedRefs, status: \"False\", reason: RefNotPermitted }\n";
    let r = run_suite(&f, suite);
    assert!(r.passed.contains("refs::cross-500"), "{}", r.stdout);
    assert!(r.passed.contains("refs::cross-status"), "{}", r.stdout);
    assert!(
        r.passed.contains("static::simulate::refs::cross-status"),
        "{}",
        r.stdout
    );
    assert!(
        r.failed.contains("static::gateway-api-status"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("60-cross.yaml:2"),
        "file:line of the HTTPRoute: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("ResolvedRefs=False (RefNotPermitted)"),
        "{}",
        r.stdout
    );

    // With the grant, the reference resolves (the Service has no pod: 503, no
    // status finding).
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata:\n  name: atlas-routes\n  namespace: istio-ingress\nspec:\n  from:\n  - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    namespace: atlas\n  to:\n  - group: \"\"\n    kind: Service\n";
    f.write("70-grant.yaml", grant);
    let r = run_suite(&f, suite);
    assert!(r.failed.contains("refs::cross-500"), "{}", r.stdout);
    // The status check says what changed, statically and live.
    assert!(r.failed.contains("refs::cross-status"), "{}", r.stdout);
    assert!(
        r.failed.contains("static::simulate::refs::cross-status"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("expected ResolvedRefs=False (RefNotPermitted), got Gateway istio-ingress/atlas-gateway: ResolvedRefs=True (ResolvedRefs)"),
        "{}",
        r.stdout
    );
    assert!(
        r.passed.contains("static::gateway-api-status"),
        "{}",
        r.stdout
    );
}

const TWO_GATEWAYS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: public
  namespace: atlas
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: a.example.com
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: internal
  namespace: atlas
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: b.example.com
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: a-route
  namespace: atlas
spec:
  parentRefs:
  - name: public
  hostnames: [a.example.com]
  rules:
  - backendRefs:
    - name: atlas-ui
      port: 80
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: b-route
  namespace: atlas
spec:
  parentRefs:
  - name: internal
  hostnames: [b.example.com]
  rules:
  - backendRefs:
    - name: authz
      port: 80
";

const TWO_GATEWAYS_SUITE: &str = "name: two-gateways
fixtures: .
ingress: { port: 80 }
policy: { allowed_ports: [80, 15021] }
checks:
  - group: gateways
    name: public-serves-a
    http:
      request: { path: /x, host: a.example.com, gateway: atlas/public }
      expect: { status: 200, backend: { service: atlas-ui } }
  - group: gateways
    name: internal-serves-b
    http:
      request: { path: /x, host: b.example.com, gateway: atlas/internal }
      expect: { status: 200, backend: { service: authz } }
  - group: gateways
    name: public-does-not-serve-b
    http:
      request: { path: /x, host: b.example.com, gateway: atlas/public }
      expect: { status: 404 }
";

#[test]
fn two_gateways_on_port_80_are_two_gateway_pods_each_checked_through_its_own() {
    let f = FixtureCopy::of(GW_API);
    f.write("60-two-gateways.yaml", TWO_GATEWAYS);
    let r = run_suite(&f, TWO_GATEWAYS_SUITE);
    for c in [
        "gateways::public-serves-a",
        "gateways::internal-serves-b",
        "gateways::public-does-not-serve-b",
    ] {
        assert!(r.passed.contains(c), "{c}\n{}\n{}", r.stdout, r.stderr);
    }
    let fx = meshcheck::fixtures::load_dir(f.path()).unwrap();
    let mesh = meshcheck::istio::Mesh::build(&fx);
    let gateway_pods: Vec<&str> = mesh
        .pods
        .iter()
        .filter(|p| p.role == meshcheck::istio::PodRole::Gateway)
        .map(|p| p.deployment.as_str())
        .collect();
    assert_eq!(
        gateway_pods,
        vec!["my-ingress-gateway", "public-istio", "internal-istio"]
    );

    // The internal Gateway's listener takes a.example.com instead: b's route no longer
    // attaches there (NoMatchingListenerHostname), the public one is untouched.
    f.replace(
        "60-two-gateways.yaml",
        "    hostname: b.example.com\n",
        "    hostname: a.example.com\n",
    );
    let r = run_suite(&f, TWO_GATEWAYS_SUITE);
    let failed: Vec<&str> = r.failed.iter().map(String::as_str).collect();
    assert_eq!(
        failed,
        vec![
            "gateways::internal-serves-b",
            "static::gateway-api-status",
            "static::simulate::gateways::internal-serves-b"
        ],
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Accepted=False (NoMatchingListenerHostname)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_parent_ref_to_a_listener_or_port_the_gateway_lacks_attaches_nothing() {
    // referenceAllowed: sectionName and port must name a listener of the Gateway
    // (NoMatchingParent); the route is then programmed nowhere. The statuses are
    // compared with istiod's own when the fixture set is dropped (MC407).
    for (bad, why) in [
        (
            "    namespace: istio-ingress\n    sectionName: https\n",
            "sectionName \"https\" not found",
        ),
        (
            "    namespace: istio-ingress\n    port: 443\n",
            "port 443 not found",
        ),
    ] {
        let f = FixtureCopy::of(GW_API);
        f.replacen_first("40-httproutes.yaml", "    namespace: istio-ingress\n", bad);
        let suite = "name: parents\nfixtures: .\ningress: { port: 80 }\nchecks:\n  - group: parents\n    name: atlas-ui-404\n    http:\n      request: { path: /atlas-ui }\n      expect: { status: 404 }\n  - group: parents\n    name: not-accepted\n    status:\n      object: HTTPRoute atlas/atlas-ui\n      conditions:\n      - { type: Accepted, status: \"False\", reason: NoMatchingParent }\n";
        let r = run_suite(&f, suite);
        for c in [
            "parents::atlas-ui-404",
            "parents::not-accepted",
            "static::simulate::parents::not-accepted",
        ] {
            assert!(r.passed.contains(c), "{c}: {}", r.stdout);
        }
        assert!(
            r.failed.contains("static::gateway-api-status"),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains(why), "{why}: {}", r.stdout);
    }
    // The same suite on the untouched fixtures: attached, so both checks fail.
    let f = FixtureCopy::of(GW_API);
    let suite = "name: parents\nfixtures: .\ningress: { port: 80 }\nchecks:\n  - group: parents\n    name: not-accepted\n    status:\n      object: HTTPRoute atlas/atlas-ui\n      conditions:\n      - { type: Accepted, status: \"False\", reason: NoMatchingParent }\n";
    let r = run_suite(&f, suite);
    assert!(r.failed.contains("parents::not-accepted"), "{}", r.stdout);
}
