//! Differential checking against istiod's own config generation (the Istio oracle).
//! Needs the oracle (see tests/common/oracle.rs); without Go these tests say so on
//! stderr and pass without comparing.

mod common;
use common::oracle::{error_findings, istiod_with, note_unavailable, oracle};
use common::*;
use meshcheck::istio::{Mesh, UriRewrite};
use meshcheck::oracle::output::Output;
use std::path::Path;

/// The oracle, or `None` (said on stderr) when it cannot run here.
fn bin() -> Option<&'static Path> {
    match oracle() {
        Ok(b) => Some(b),
        Err(why) => {
            note_unavailable(why);
            None
        }
    }
}

fn suite() -> meshcheck::suite::Suite {
    meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap()
}

/// istiod's answer for the fixtures in `dir`, with the model built from them.
fn istiod(bin: &Path, dir: &Path) -> (meshcheck::fixtures::Fixtures, Mesh, Output) {
    istiod_with(bin, dir, &suite())
}

/// The error findings of comparing `mesh` (possibly doctored) with `out`.
fn disagreements(fx: &meshcheck::fixtures::Fixtures, mesh: &Mesh, out: &Output) -> Vec<String> {
    error_findings(fx, mesh, &suite(), out)
}

/// `analyze --oracle` found nothing.
#[track_caller]
fn assert_no_disagreement(r: &RunResult) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("oracle: 0 disagreement(s) with istiod 1.30.3"),
        "{}",
        r.stdout
    );
}

#[test]
fn shipped_fixtures_agree_with_istiod_and_analyze_exits_0() {
    let Some(bin) = bin() else { return };
    let r = Run::new()
        .arg("analyze")
        .arg("--oracle")
        .arg(bin)
        .run_plain();
    assert_no_disagreement(&r);
}

#[test]
fn a_match_the_model_does_not_take_is_a_disagreement_with_both_answers() {
    // A match on the listener `port` is not modelled by meshcheck (it warns, MC302, and
    // keeps the route); istiod leaves the route out of the port-80 listener.
    // analyze --oracle shows both answers and exits 1.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.disagrees_with_istiod();
    f.replace(
        "40-virtualservices.yaml",
        "    - uri:\n        prefix: /atlas-ui\n",
        "    - uri:\n        prefix: /atlas-ui\n      port: 8443\n",
    );
    let r = Run::new()
        .arg("analyze")
        .fixtures(f.path())
        .arg("--oracle")
        .arg(bin)
        .run_plain();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("40-virtualservices.yaml:3: VirtualService atlas/atlas-ui: http.8080 *:80 route 0: meshcheck: VirtualService atlas/atlas-ui prefix /atlas-ui -> outbound|80||atlas-ui.atlas.svc.cluster.local 100%")
            && r.stdout.contains("istiod 1.30.3: no such route")
            && r.stdout.contains("check routing::atlas-ui (GET /atlas-ui): meshcheck: outcome route")
            && r.stdout.contains("istiod 1.30.3: outcome 404"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("oracle: 2 disagreement(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn unknown_oracle_version_is_bad_input() {
    let r = Run::new()
        .arg("analyze")
        .arg("--oracle")
        .arg("0.9.9")
        .run_plain();
    if r.stderr.contains("Go is not installed") {
        note_unavailable("Go is not installed");
        return;
    }
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("unknown Istio version '0.9.9'"),
        "{}",
        r.stderr
    );
}

// Each defect the model once had, put back into the model in memory: the comparison
// with istiod must catch it and show both answers.

#[test]
fn reintroduced_regex_rewrite_is_caught() {
    // The model once turned `prefix: /x` + `rewrite.uri: /` into a prefix-stripping
    // regex_rewrite; pilot makes prefix_rewrite (route.go applyHTTPRouteDestination).
    let Some(bin) = bin() else { return };
    let (fx, mut mesh, out) = istiod(bin, &root().join("fixtures/ingress"));
    for r in mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0]
        .routes
        .iter_mut()
    {
        if r.rewrite.is_some() {
            r.rewrite = Some(UriRewrite::Regex("^/atlas-rest/*".into(), "/".into()));
        }
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC403]")
            && f.contains("meshcheck: rewrite regex_rewrite ^/atlas-rest/* -> /")
            && f.contains("istiod 1.30.3: rewrite prefix_rewrite /")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_missing_https_redirect_is_caught() {
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replace(
        "30-gateway.yaml",
        "    hosts:\n    - \"*\"\n",
        "    hosts:\n    - \"*\"\n    tls:\n      httpsRedirect: true\n",
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(disagreements(&fx, &mesh, &out).is_empty());
    for vh in mesh.gateways[0].listeners[0].chains[0]
        .route_config
        .vhosts
        .iter_mut()
    {
        vh.require_tls = false;
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC402]")
            && f.contains("check routing::atlas-ui")
            && f.contains("meshcheck: outcome route")
            && f.contains("istiod 1.30.3: outcome https redirect (301)")),
        "{}",
        d.join("\n")
    );
    assert!(
        d.iter()
            .any(|f| f.contains("require_tls NONE") && f.contains("require_tls ALL")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_port_translation_defect_is_caught() {
    // Istio's Bookinfo gateway listens on 8080, the targetPort of the ingress Service's
    // port 80: pilot binds it as written and the NodePort reaches it.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replace(
        "30-gateway.yaml",
        "      number: 80\n",
        "      number: 8080\n",
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(disagreements(&fx, &mesh, &out).is_empty());
    mesh.gateways[0].listeners[0].node_ports.clear();
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("check routing::atlas-ui")
            && f.contains("meshcheck: outcome no listener")
            && f.contains("istiod 1.30.3: outcome route")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_short_host_defect_is_caught() {
    // A VirtualService host `atlas-ui` at a gateway is atlas-ui.atlas.svc.cluster.local.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replacen_first(
        "40-virtualservices.yaml",
        "  hosts:\n  - \"*\"\n",
        "  hosts:\n  - atlas-ui\n",
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(disagreements(&fx, &mesh, &out).is_empty());
    for vh in mesh.gateways[0].listeners[0].chains[0]
        .route_config
        .vhosts
        .iter_mut()
    {
        if vh.domains == ["atlas-ui.atlas.svc.cluster.local"] {
            vh.domains = vec!["atlas-ui".into()];
        }
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("domains [atlas-ui]")
            && f.contains("domains [atlas-ui.atlas.svc.cluster.local]")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_tls_mode_defect_is_caught() {
    // DestinationRule ISTIO_MUTUAL is what istiod originates toward the backends.
    let Some(bin) = bin() else { return };
    let (fx, mut mesh, out) = istiod(bin, &root().join("fixtures/ingress"));
    for c in mesh.clusters.values_mut() {
        c.tls = meshcheck::istio::UpstreamTls::Auto;
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC404]")
            && f.contains("50-destinationrules.yaml")
            && f.contains("meshcheck: TLS AUTO")
            && f.contains("istiod 1.30.3: TLS ISTIO_MUTUAL")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn invalid_objects_are_reported_as_refused_by_istiod() {
    // istiod's validation (pkg/config/validation/validation.go, 1.30.3) refuses
    // several destinations whose weights total 0, as the webhook would: the model
    // takes the object, so this is a disagreement (MC401).
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.disagrees_with_istiod();
    f.replace(
        "40-virtualservices.yaml",
        "      weight: 10\n",
        "      weight: 0\n",
    );
    f.replace(
        "40-virtualservices.yaml",
        "      weight: 90\n",
        "      weight: 0\n",
    );
    let (fx, mesh, out) = istiod(bin, f.path());
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC401]")
            && f.contains("VirtualService atlas/nb-rest")
            && f.contains("40-virtualservices.yaml:45")
            && f.contains("istiod does not take this object")
            && f.contains("total destination weight = 0")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_retry_on_503_is_caught() {
    // meshcheck's local routes once retried 503s; pilot's default retry policy lists
    // no status code (retry.go). And a VirtualService's timeout and retries must
    // become what pilot writes.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /authz\n    route:\n",
        "        prefix: /authz\n    timeout: 2.5s\n    retries:\n      attempts: 4\n      perTryTimeout: 500ms\n      retryOn: gateway-error,503\n    route:\n",
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(disagreements(&fx, &mesh, &out).is_empty());
    for r in mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0]
        .routes
        .iter_mut()
    {
        if let Some(p) = r.retry.as_mut() {
            if p.attempts == 2 {
                p.status_codes = vec![503];
            }
        }
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("VirtualService atlas/atlas-ui")
            && f.contains("meshcheck: timeout and retries timeout 0ms, retries 2 on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes codes [503]")
            && f.contains("istiod 1.30.3: timeout and retries timeout 0ms, retries 2 on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes")),
        "{}",
        d.join("\n")
    );
    // The authz route (timeout 2.5s, 4 attempts on gateway-error and 503) agreed.
    assert!(
        !d.iter().any(|f| f.contains("VirtualService atlas/authz")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_single_https_chain_is_caught() {
    // The model once served every HTTPS server of a port from one chain (one route
    // configuration, one certificate): two servers on 443 must be two chains, each
    // matched by its SNI with its own credential, as istiod writes them.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replace(
        "10-ingress-gateway.yaml",
        "    nodePort: 30080\n",
        "    nodePort: 30080\n  - name: https\n    port: 443\n    targetPort: 8443\n",
    );
    f.replace(
        "30-gateway.yaml",
        "    hosts:\n    - \"*\"\n",
        "    hosts:\n    - \"*\"\n  - port:\n      number: 443\n      name: https-a\n      protocol: HTTPS\n    hosts:\n    - a.example.com\n    tls:\n      mode: SIMPLE\n      credentialName: a-cert\n  - port:\n      number: 443\n      name: https-b\n      protocol: HTTPS\n    hosts:\n    - b.example.com\n    tls:\n      mode: SIMPLE\n      credentialName: b-cert\n",
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(
        disagreements(&fx, &mesh, &out).is_empty(),
        "{}",
        disagreements(&fx, &mesh, &out).join("\n")
    );
    let l = mesh.gateways[0]
        .listeners
        .iter_mut()
        .find(|l| l.name == "0.0.0.0_8443")
        .expect("the 443 listener");
    assert_eq!(l.chains.len(), 2);
    l.chains.truncate(1);
    l.chains[0].server_names.clear();
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC405]")
            && f.contains("meshcheck: listener 0.0.0.0_8443 filter chains SNI [] cert [kubernetes://a-cert] rds https.443.https-a.atlas-gateway.atlas")
            && f.contains("SNI [b.example.com] cert [kubernetes://b-cert] rds https.443.https-b.atlas-gateway.atlas")),
        "{}",
        d.join("\n")
    );
    assert!(
        d.iter().any(|f| f.contains("error[MC403]")
            && f.contains("no route configuration https.443.https-b.atlas-gateway.atlas")),
        "{}",
        d.join("\n")
    );
}

/// A fault (abort of 50%, delay with the deprecated integer percent) and a CORS policy
/// on the atlas-ui route, as the tests of tests/fault_cors.rs use them.
const FAULT_AND_CORS: &str = "        prefix: /atlas-ui\n    fault:\n      abort:\n        httpStatus: 503\n        percentage:\n          value: 50\n      delay:\n        fixedDelay: 1s\n        percent: 20\n    corsPolicy:\n      allowOrigins:\n      - exact: https://example.com\n      - regex: https://.*[.]example[.]org\n      allowMethods: [GET, POST]\n      allowHeaders: [x-a]\n      maxAge: 24h\n      allowCredentials: true\n    route:\n";

#[test]
fn reintroduced_fault_and_cors_defects_are_caught() {
    // pilot route.go TranslateFault: `percentage` becomes value*10000 of a MILLION,
    // the deprecated `percent` n of a HUNDRED; TranslateCORSPolicy: maxAge in seconds,
    // forwardNotMatchingPreflights true unless IGNORE.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /atlas-ui\n    route:\n",
        FAULT_AND_CORS,
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(disagreements(&fx, &mesh, &out).is_empty());
    fn ui(mesh: &mut Mesh) -> &mut meshcheck::istio::RoutePlan {
        mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0]
            .routes
            .iter_mut()
            .find(|r| r.virtual_service.ends_with("atlas-ui"))
            .unwrap()
    }
    // A percentage read as a share of a hundred, a dropped abort, a CORS max age in ms.
    ui(&mut mesh)
        .filters
        .fault
        .as_mut()
        .unwrap()
        .delay
        .as_mut()
        .unwrap()
        .percentage
        .denominator = 1_000_000;
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("fault and CORS")
            && f.contains("meshcheck: fault and CORS fault delay 1000ms 20/1000000")
            && f.contains("istiod 1.30.3: fault and CORS fault delay 1000ms 20/100")),
        "{}",
        d.join("\n")
    );
    ui(&mut mesh).filters.fault = None;
    ui(&mut mesh)
        .filters
        .cors
        .as_mut()
        .unwrap()
        .forward_not_matching_preflights = false;
    let d = disagreements(&fx, &mesh, &out).join("\n");
    assert!(d.contains("fault abort 503 500000/1000000"), "{d}");
    assert!(d.contains("forward_not_matching_preflights=false"), "{d}");
}

#[test]
fn reintroduced_missing_attempt_count_is_caught() {
    // pilot gateway.go: gateway virtual hosts carry include_request_attempt_count, so
    // the backend sees x-envoy-attempt-count (the retries example counts on it).
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(disagreements(&fx, &mesh, &out).is_empty());
    mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0].attempt_count = false;
    let d = disagreements(&fx, &mesh, &out).join("\n");
    assert!(
        d.contains("meshcheck: include_request_attempt_count false")
            && d.contains("istiod 1.30.3: include_request_attempt_count true"),
        "{d}"
    );
}

#[test]
fn reintroduced_mirror_defects_are_caught() {
    // `mirror` with `mirrorPercentage` 50.5 (pilot: 505000/MILLION) and `mirrors` to
    // a host without a Service (pilot still names the cluster, with the gateway
    // server's port); a mirror at 0% is not written.
    let Some(bin) = bin() else { return };
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /authz\n    route:\n",
        "        prefix: /authz\n    mirror:\n      host: nb-rest\n      subset: v2\n    mirrorPercentage:\n      value: 50.5\n    route:\n",
    );
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /atlas-ui\n    route:\n",
        "        prefix: /atlas-ui\n    mirrors:\n    - destination:\n        host: shadow-of-nothing\n    - destination:\n        host: authz\n      percentage:\n        value: 0\n    route:\n",
    );
    let (fx, mut mesh, out) = istiod(bin, f.path());
    assert!(
        disagreements(&fx, &mesh, &out).is_empty(),
        "{}",
        disagreements(&fx, &mesh, &out).join("\n")
    );
    // The percentage read as a whole-number percent (HUNDRED).
    for r in authz_routes(&mut mesh) {
        r.mirrors[0].fraction = meshcheck::istio::Fraction {
            numerator: 50,
            denominator: 100,
        };
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("request mirrors")
            && f.contains("outbound|80|v2|nb-rest.atlas.svc.cluster.local 50%")
            && f.contains("outbound|80|v2|nb-rest.atlas.svc.cluster.local 50.5%")),
        "{}",
        d.join("\n")
    );
    // The mirrors dropped.
    for r in mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0]
        .routes
        .iter_mut()
    {
        r.mirrors.clear();
    }
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter()
            .any(|f| f.contains("request mirrors") && f.contains("shadow-of-nothing")),
        "{}",
        d.join("\n")
    );
}

/// The gateway routes of VirtualService atlas/authz.
fn authz_routes(mesh: &mut Mesh) -> impl Iterator<Item = &mut meshcheck::istio::RoutePlan> {
    mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0]
        .routes
        .iter_mut()
        .filter(|r| r.virtual_service.contains("atlas/authz"))
}

#[test]
fn checks_with_query_and_path_or_a_host_with_a_port_agree_with_istiod() {
    // The path a backend sees excludes the query string (the stub reports them apart);
    // the model once put the query into it, and istiod's request carried no query, so
    // `analyze --oracle` reported a disagreement where traffic passed.
    let Some(bin) = bin() else { return };
    let suite = suite_file(
        r#"name: query
fixtures: .
checks:
  - group: query
    name: with-path
    http:
      request: { path: /authz/q, query: { x: "1" } }
      expect: { status: 200, path: /authz/q }
  - group: query
    name: rewritten
    http:
      request: { path: /atlas-rest/items, query: { page: "2" } }
      expect: { status: 200, path: /items }
  - group: host
    name: with-port
    http:
      request: { path: /authz/h, host: "very.specific.com:1234" }
      expect: { status: 200, headers: { host: "very.specific.com:1234" } }
"#,
    );
    let r = Run::new()
        .arg("analyze")
        .arg("--suite")
        .arg(suite.path())
        .fixtures(&root().join("fixtures/ingress"))
        .arg("--oracle")
        .arg(bin)
        .run_plain();
    assert_no_disagreement(&r);
}

#[test]
fn reintroduced_strip_any_host_port_is_caught() {
    // The model once set strip_any_host_port on the gateway's connection manager;
    // istiod 1.30 does not, so a backend sees `host:port` as sent. Every field the
    // model sets on the HttpConnectionManager is compared with istiod's.
    let Some(bin) = bin() else { return };
    let (fx, mut mesh, out) = istiod(bin, &root().join("fixtures/ingress"));
    mesh.gateways[0].listeners[0].chains[0]
        .hcm
        .strip_any_host_port = true;
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC405]")
            && f.contains("HttpConnectionManager")
            && f.contains("meshcheck: strip_any_host_port true")
            && f.contains("istiod 1.30.3: strip_any_host_port unset")),
        "{}",
        d.join("\n")
    );
    // And a setting of a nested field (the XFCC details the gateway sets).
    let (fx, mut mesh, out) = istiod(bin, &root().join("fixtures/ingress"));
    mesh.gateways[0].listeners[0].chains[0]
        .hcm
        .set_current_client_cert_details[1]
        .1 = false;
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter()
            .any(|f| f.contains("set_current_client_cert_details.cert false")),
        "{}",
        d.join("\n")
    );
}

#[test]
fn reintroduced_route_name_and_decorator_are_caught() {
    // The model once named Envoy routes and their decorators after its own report
    // names (`atlas/atlas-ui#0.0`); pilot uses the http route's name and
    // GetRouteOperation. Every field of the route the model writes is compared.
    let Some(bin) = bin() else { return };
    let (fx, mut mesh, out) = istiod(bin, &root().join("fixtures/ingress"));
    let r = &mut mesh.gateways[0].listeners[0].chains[0].route_config.vhosts[0].routes[0];
    r.envoy_name = r.name.clone();
    r.operation = r.name.clone();
    let d = disagreements(&fx, &mesh, &out);
    assert!(
        d.iter().any(|f| f.contains("error[MC403]")
            && f.contains("Envoy route meshcheck: decorator.operation \"atlas/atlas-ui#0.0\"; name \"atlas/atlas-ui#0.0\"")
            && f.contains("istiod 1.30.3: decorator.operation \"atlas-ui.atlas.svc.cluster.local:80/atlas-ui*\"; name \"atlas-ui\"")),
        "{}",
        d.join("\n")
    );
}
