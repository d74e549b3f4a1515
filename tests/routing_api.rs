//! Routes the gateway answers itself (VirtualService `redirect` and `directResponse`),
//! end to end on the local target: modelled as pilot translates them (route.go
//! ApplyRedirect, ApplyDirectResponse), served by real Envoy, predicted by the
//! simulation, and (through the FixtureCopy hook) agreeing with istiod.

mod common;
use common::*;

/// The shipped fixtures plus a redirect of /atlas-ui/old and a maintenance page.
fn gateway_answers() -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        "  http:\n  - name: old-ui\n    match:\n    - uri:\n        prefix: /atlas-ui/old\n    redirect:\n      uri: /atlas-ui\n      redirectCode: 302\n  - name: maintenance\n    match:\n    - uri:\n        exact: /maintenance\n    directResponse:\n      status: 503\n      body:\n        string: down for maintenance\n  - name: atlas-ui\n",
    );
    f
}

/// A suite file of its own (the fixtures directory holds manifests only).
fn suite_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// Two checks on the routes the gateway answers.
const ANSWERS_SUITE: &str = r#"name: gateway-answers
fixtures: .
checks:
  - group: answers
    name: redirect
    http:
      request: { path: /atlas-ui/old }
      expect:
        status: 302
        response_headers: { location: { contains: /atlas-ui } }
  - group: answers
    name: maintenance
    http:
      request: { path: /maintenance }
      expect: { status: 503, body_contains: down for maintenance }
"#;

fn run(f: &FixtureCopy) -> RunResult {
    run_suite(f, ANSWERS_SUITE)
}

fn run_suite(f: &FixtureCopy, suite: &str) -> RunResult {
    let suite = suite_file(suite);
    Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(f.path())
        .arg("--budget")
        .arg("3s")
        .run()
}

#[test]
fn redirect_and_direct_response_are_answered_by_the_gateway() {
    let f = gateway_answers();
    let r = run(&f);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.passed.contains("answers::redirect") && r.passed.contains("answers::maintenance"),
        "{}",
        r.stdout
    );
    // Nothing about them is reported as not modelled.
    assert!(
        !r.stderr.contains("not modelled") && !r.stdout.contains("not modelled"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn without_the_redirect_the_checks_fail_and_the_simulation_says_why() {
    let f = gateway_answers();
    f.replace(
        "40-virtualservices.yaml",
        "    redirect:\n      uri: /atlas-ui\n      redirectCode: 302\n",
        "    route:\n    - destination:\n        host: atlas-ui\n",
    );
    f.replace(
        "40-virtualservices.yaml",
        "      status: 503\n",
        "      status: 200\n",
    );
    let r = run(&f);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("answers::redirect")
            && r.failed.contains("static::simulate::answers::redirect")
            && r.failed.contains("answers::maintenance")
            && r.failed.contains("static::simulate::answers::maintenance"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("expected status 302, got 200 from atlas-ui")
            && r.stdout.contains("expected status 503, got 200"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_wrong_location_or_body_fails_the_check() {
    let f = gateway_answers();
    f.replace(
        "40-virtualservices.yaml",
        "      uri: /atlas-ui\n      redirectCode",
        "      uri: /elsewhere\n      redirectCode",
    );
    f.replace(
        "40-virtualservices.yaml",
        "        string: down for maintenance\n",
        "        string: back soon\n",
    );
    let r = run(&f);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("expected response header location")
            && r.stdout
                .contains("expected the body to contain \"down for maintenance\""),
        "{}",
        r.stdout
    );
}

/// atlas-ui answers with a header set by the route and without Envoy's upstream timing.
const RESPONSE_HEADERS_SUITE: &str = r#"name: response-headers
fixtures: .
checks:
  - group: headers
    name: set-and-removed
    http:
      request: { path: /atlas-ui }
      expect:
        status: 200
        backend: { service: atlas-ui }
        response_headers:
          x-served-by: atlas-gateway
          x-envoy-upstream-service-time: { absent: true }
"#;

fn with_response_headers() -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /atlas-ui\n    route:\n",
        "        prefix: /atlas-ui\n    headers:\n      response:\n        set:\n          x-served-by: atlas-gateway\n        remove:\n        - x-envoy-upstream-service-time\n    route:\n",
    );
    f
}

#[test]
fn response_header_operations_are_applied() {
    let f = with_response_headers();
    let r = run_suite(&f, RESPONSE_HEADERS_SUITE);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.passed.contains("headers::set-and-removed"),
        "{}",
        r.stdout
    );
}

#[test]
fn without_response_header_operations_the_check_fails() {
    let f = FixtureCopy::new();
    let r = run_suite(&f, RESPONSE_HEADERS_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("headers::set-and-removed")
            && r.stdout
                .contains("expected response header x-envoy-upstream-service-time"),
        "{}",
        r.stdout
    );
}
