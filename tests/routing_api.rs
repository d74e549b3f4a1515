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

/// Matches on query parameters, absent headers and the scheme, as pilot translates
/// them; the FixtureCopy hook checks istiod programs the same conditions.
const MATCH_SUITE: &str = r#"name: matches
fixtures: .
checks:
  - group: matches
    name: query-selects-v2
    http:
      request: { path: "/canary?canary=yes" }
      expect: { status: 200, backend: { service: nb-rest, version: v2 } }
  - group: matches
    name: without-header-goes-to-ui
    http:
      request: { path: /beta }
      expect: { status: 200, backend: { service: atlas-ui } }
  - group: matches
    name: with-header-is-404
    http:
      request: { path: /beta, headers: { x-no-beta: "1" } }
      expect: { status: 404 }
"#;

fn with_matches() -> FixtureCopy {
    let f = FixtureCopy::new();
    // A canary route on /canary?canary=yes (nothing else matches /canary: without the
    // query condition met the answer is a deterministic 404).
    f.replace(
        "40-virtualservices.yaml",
        "  - name: atlas-rest-v2-pinned\n",
        "  - name: canary\n    match:\n    - uri:\n        exact: /canary\n      queryParams:\n        canary:\n          exact: \"yes\"\n    rewrite:\n      uri: /\n    route:\n    - destination:\n        host: nb-rest\n        subset: v2\n        port:\n          number: 80\n  - name: atlas-rest-v2-pinned\n",
    );
    // /beta reaches atlas-ui unless x-no-beta is sent, over http only.
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        "  http:\n  - name: beta\n    match:\n    - uri:\n        prefix: /beta\n      withoutHeaders:\n        x-no-beta:\n          regex: \"*\"\n      scheme:\n        exact: http\n    route:\n    - destination:\n        host: atlas-ui\n  - name: atlas-ui\n",
    );
    f
}

#[test]
fn query_without_headers_and_scheme_matches_route_as_in_istio() {
    let f = with_matches();
    let r = run_suite(&f, MATCH_SUITE);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        !r.stderr.contains("not modelled") && !r.stdout.contains("not modelled"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// Breaks one condition of `with_matches()` and checks exactly `check` fails, on the
/// local target and in the simulation.
#[track_caller]
fn breaking(from: &str, to: &str, check: &str) {
    let f = with_matches();
    f.replace("40-virtualservices.yaml", from, to);
    let r = run_suite(&f, MATCH_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want: std::collections::BTreeSet<String> =
        [check.to_string(), format!("static::simulate::{check}")].into();
    assert_eq!(r.failed, want, "{}", r.stdout);
}

#[test]
fn without_the_query_condition_the_canary_is_not_selected() {
    breaking(
        "          exact: \"yes\"\n",
        "          exact: \"no\"\n",
        "matches::query-selects-v2",
    );
}

#[test]
fn without_header_condition_on_another_header_lets_the_header_through() {
    breaking(
        "        x-no-beta:\n",
        "        x-other:\n",
        "matches::with-header-is-404",
    );
}

#[test]
fn a_scheme_condition_for_https_does_not_match_http() {
    breaking(
        "        exact: http\n",
        "        exact: https\n",
        "matches::without-header-goes-to-ui",
    );
}

#[test]
fn an_empty_string_match_is_a_presence_condition_as_in_istio() {
    // pilot route.go canBeConvertedToPresentMatch: `{}` (no match type) is
    // present_match, as `regex: "*"` is; `withoutHeaders: {x: {}}` means x is absent.
    let f = with_matches();
    f.replace(
        "40-virtualservices.yaml",
        "        x-no-beta:\n          regex: \"*\"\n",
        "        x-no-beta: {}\n",
    );
    let r = run_suite(&f, MATCH_SUITE);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // A StringMatch with two match types is bad input naming the file.
    f.replace(
        "40-virtualservices.yaml",
        "        x-no-beta: {}\n",
        "        x-no-beta: {exact: a, prefix: b}\n",
    );
    let r = run_suite(&f, MATCH_SUITE);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("40-virtualservices.yaml")
            && r.stderr.contains("one of exact, prefix, regex"),
        "{}",
        r.stderr
    );
    f.disagrees_with_istiod();
}
