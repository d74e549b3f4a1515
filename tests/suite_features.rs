//! What a suite can say, end to end on the local target (and with istiod as the
//! control plane): requests with a method, query and body; the stub told to answer
//! slowly or with a status; latency bounds; `backend: none`; status shares; and
//! VirtualService `mirror` / `mirrors` observed at the mirror backend. Every feature
//! has a run that fails when it is broken.

mod common;
use common::*;

#[track_caller]
fn assert_passed(r: &RunResult, checks: &[&str]) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for c in checks {
        assert!(r.passed.contains(*c), "{c} did not pass\n{}", r.stdout);
    }
}

// ---- requests and the stub's controls ------------------------------------------

const REQUESTS_SUITE: &str = r#"name: requests
fixtures: .
checks:
  - group: requests
    name: post-with-query-and-body
    http:
      request: { path: /authz/echo, method: post, query: { x: "a b", meshcheck-status: "202" }, body: hello mesh }
      expect:
        status: 202
        backend: { service: authz }
        body_contains: '"body":"hello mesh"'
  - group: requests
    name: query-encoded
    http:
      request: { path: /authz/q, query: { x: "a b&c" } }
      expect: { status: 200, body_contains: '"query":"x=a+b%26c"' }
  - group: requests
    name: query-and-path
    http:
      request: { path: /authz/q, query: { x: "1" } }
      expect: { status: 200, path: /authz/q, body_contains: '"query":"x=1"' }
  - group: requests
    name: host-with-port
    http:
      request: { path: /authz/h, host: "very.specific.com:1234" }
      expect: { status: 200, headers: { host: "very.specific.com:1234" } }
  - group: requests
    name: nothing-answers
    http:
      request: { path: /nowhere }
      expect: { status: 404, backend: none }
  - group: latency
    name: slow-stub
    http:
      request: { path: /authz/slow, headers: { x-meshcheck-delay: 300ms } }
      expect: { status: 200, latency: { at_least: 300ms, at_most: 2s } }
  - group: latency
    name: fast-stub
    http:
      request: { path: /authz/fast }
      expect: { status: 200, latency: { at_most: 1s } }
"#;

#[test]
fn requests_carry_method_query_and_body_and_the_stub_obeys_its_controls() {
    let f = FixtureCopy::new();
    let r = run_suite(&f, REQUESTS_SUITE);
    assert_passed(
        &r,
        &[
            "requests::post-with-query-and-body",
            "requests::query-encoded",
            "requests::query-and-path",
            // istiod does not strip the port from the Host: the backend sees it.
            "requests::host-with-port",
            "requests::nothing-answers",
            "latency::slow-stub",
            "latency::fast-stub",
            "static::simulate::requests::post-with-query-and-body",
            // The backend's path excludes the query string, in traffic as in the
            // simulation.
            "static::simulate::requests::query-and-path",
            "static::simulate::requests::nothing-answers",
        ],
    );
}

#[test]
fn a_slow_stub_fails_at_most_and_a_backend_fails_backend_none() {
    let f = FixtureCopy::new();
    let suite = REQUESTS_SUITE
        .replace("at_least: 300ms, at_most: 2s", "at_most: 100ms")
        .replace("path: /nowhere", "path: /authz/somewhere")
        .replace("status: 404, backend: none", "status: 200, backend: none")
        .replace("meshcheck-status: \"202\"", "meshcheck-status: \"503\"")
        .replace(
            "path: /authz/q, body_contains",
            "path: /authz/r, body_contains",
        );
    let r = run_suite(&f, &suite);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for c in [
        "requests::query-and-path",
        "static::simulate::requests::query-and-path",
        "latency::slow-stub",
        "requests::nothing-answers",
        "static::simulate::requests::nothing-answers",
        "requests::post-with-query-and-body",
        "static::simulate::requests::post-with-query-and-body",
    ] {
        assert!(r.failed.contains(c), "{c} did not fail\n{}", r.stdout);
    }
    assert!(
        r.stdout
            .contains("expected the answer within 100ms, it took")
            && r.stdout
                .contains("expected no backend to answer (the gateway itself), got 200 from authz")
            && r.stdout.contains("expected status 202, got 503 from authz")
            && r.stdout
                .contains("expected the backend to see path /authz/r, it saw /authz/q")
            && r.stdout
                .contains("expected the backend to see path /authz/r, predicted /authz/q"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_unknown_method_is_a_load_error_naming_the_suite_and_check() {
    let f = FixtureCopy::new();
    let suite = suite_file(&REQUESTS_SUITE.replace("method: post", "method: FETCH"));
    let r = Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(f.path())
        .run();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let name = suite.path().display().to_string();
    assert!(
        r.stderr.contains(&format!("{name}:"))
            && r.stderr
                .contains("check requests::post-with-query-and-body")
            && r.stderr.contains("unknown HTTP method \"FETCH\""),
        "{}",
        r.stderr
    );
}

// ---- status shares -------------------------------------------------------------

/// /split: half to atlas-ui told (by a header the route sets) to answer 503, half
/// to authz.
fn status_split(ui_weight: u32, authz_weight: u32) -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        &format!("  http:\n  - name: split\n    match:\n    - uri:\n        prefix: /split\n    route:\n    - destination:\n        host: atlas-ui\n        port:\n          number: 80\n      weight: {ui_weight}\n      headers:\n        request:\n          set:\n            x-meshcheck-status: \"503\"\n    - destination:\n        host: authz\n        port:\n          number: 80\n      weight: {authz_weight}\n  - name: atlas-ui\n"),
    );
    f
}

const STATUSES_SUITE: &str = r#"name: statuses
fixtures: .
checks:
  - group: faults
    name: half-503
    distribution:
      request: { path: /split }
      requests: 400
      statuses: { "200": 50, "503": 50 }
"#;

#[test]
fn status_shares_pass_on_the_configured_split() {
    let f = status_split(50, 50);
    let r = run_suite(&f, STATUSES_SUITE);
    assert_passed(
        &r,
        &["faults::half-503", "static::simulate::faults::half-503"],
    );
}

#[test]
fn status_shares_fail_when_the_split_is_wrong() {
    let f = status_split(10, 90);
    let r = run_suite(&f, STATUSES_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("faults::half-503")
            && r.failed.contains("static::simulate::faults::half-503"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("status 503: ") && r.stdout.contains("expected 50%"),
        "{}",
        r.stdout
    );
}

// ---- several container ports ----------------------------------------------------

#[test]
fn a_pod_with_two_container_ports_answers_on_both() {
    let f = FixtureCopy::new();
    f.replacen_first(
        "20-backends.yaml",
        "  - name: http\n    port: 80\n    targetPort: 8080\n",
        "  - name: http\n    port: 80\n    targetPort: 8080\n  - name: http-admin\n    port: 9090\n    targetPort: 9090\n",
    );
    f.replacen_first(
        "20-backends.yaml",
        "          containerPort: 8080\n        env:\n",
        "          containerPort: 8080\n        - name: admin\n          containerPort: 9090\n        env:\n        - name: LISTEN_ADDR\n          value: 0.0.0.0:8080,0.0.0.0:9090\n",
    );
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        "  http:\n  - name: admin\n    match:\n    - uri:\n        prefix: /atlas-admin\n    route:\n    - destination:\n        host: atlas-ui\n        port:\n          number: 9090\n  - name: atlas-ui\n",
    );
    let suite = r#"name: ports
fixtures: .
checks:
  - group: ports
    name: admin-port
    http:
      request: { path: /atlas-admin }
      expect: { status: 200, backend: { service: atlas-ui }, body_contains: '"port":9090' }
  - group: ports
    name: http-port
    http:
      request: { path: /atlas-ui }
      expect: { status: 200, backend: { service: atlas-ui }, body_contains: '"port":8080' }
"#;
    let r = run_suite(&f, suite);
    assert_passed(&r, &["ports::admin-port", "ports::http-port"]);
}

// ---- mirroring -----------------------------------------------------------------

/// /authz is mirrored to nb-rest v2 (`mirror`, or `mirrors` with `percentage`).
fn mirrored(form: &str) -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        host: authz\n        port:\n          number: 80\n",
        &format!("        host: authz\n        port:\n          number: 80\n{form}"),
    );
    f
}

const MIRROR: &str =
    "    mirror:\n      host: nb-rest\n      subset: v2\n      port:\n        number: 80\n";
const MIRRORS: &str = "    mirrors:\n    - destination:\n        host: nb-rest\n        subset: v2\n        port:\n          number: 80\n      percentage:\n        value: 100\n    - destination:\n        host: atlas-ui\n      percentage:\n        value: 0\n";

const MIRROR_SUITE: &str = r#"name: mirror
fixtures: .
checks:
  - group: mirror
    name: authz-to-nb-rest-v2
    http:
      request: { path: /authz/mirrored }
      repeat: 3
      expect:
        status: 200
        backend: { service: authz }
        mirrored_to: { service: nb-rest, version: v2 }
"#;

#[test]
fn a_mirrored_request_reaches_the_mirror_while_the_primary_answers() {
    for form in [MIRROR, MIRRORS] {
        let f = mirrored(form);
        let r = run_suite(&f, MIRROR_SUITE);
        assert_passed(
            &r,
            &[
                "mirror::authz-to-nb-rest-v2",
                "static::simulate::mirror::authz-to-nb-rest-v2",
            ],
        );
        // Nothing about the mirror is reported as not modelled.
        assert!(!r.stderr.contains("not modelled"), "{}", r.stderr);
    }
}

#[test]
fn without_the_mirror_mirrored_to_fails_live_and_in_the_simulation() {
    let f = FixtureCopy::new();
    let r = run_suite(&f, MIRROR_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("mirror::authz-to-nb-rest-v2")
            && r.failed
                .contains("static::simulate::mirror::authz-to-nb-rest-v2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("mirrored to nb-rest v2, it reached only authz v1")
            && r.stdout.contains("no mirror on the route"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_mirror_to_the_wrong_subset_or_at_zero_percent_fails() {
    // v1 instead of v2.
    let f = mirrored(&MIRROR.replace("subset: v2", "subset: v1"));
    let r = run_suite(&f, MIRROR_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("mirror::authz-to-nb-rest-v2"),
        "{}",
        r.stdout
    );
    // 0%: pilot writes no mirror policy.
    let f = mirrored(&format!("{MIRROR}    mirrorPercentage:\n      value: 0\n"));
    let r = run_suite(&f, MIRROR_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("mirror::authz-to-nb-rest-v2")
            && r.failed
                .contains("static::simulate::mirror::authz-to-nb-rest-v2"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_mirror_to_a_host_without_service_mirrors_nothing_and_the_primary_still_answers() {
    let f = mirrored("    mirror:\n      host: shadow-of-nothing\n");
    let suite = MIRROR_SUITE.replace(
        "\n        mirrored_to: { service: nb-rest, version: v2 }",
        "",
    );
    let r = run_suite(&f, &suite);
    assert_passed(&r, &["mirror::authz-to-nb-rest-v2"]);
}

// ---- what the backend received, and the stub's response headers ----------------

/// /authz with VirtualService header operations on both sides: the request gets one
/// more `x-tag` value; the answer one more `foo`, `x-over` set, `x-drop` removed.
fn header_ops() -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /authz\n    route:\n",
        "        prefix: /authz\n    headers:\n      request:\n        add:\n          x-tag: from-route\n      response:\n        add:\n          foo: from-route\n        set:\n          x-over: route\n        remove:\n        - x-drop\n    route:\n",
    );
    f
}

const SEEN_SUITE: &str = r#"name: seen
fixtures: .
checks:
  - group: seen
    name: method-query-and-every-header-value
    http:
      request: { path: /authz/tags, method: put, query: { page: "2", tag: "a b" }, headers: { x-tag: [a, b] } }
      expect:
        status: 200
        method: PUT
        query: { page: "2", tag: "a b", missing: { absent: true } }
        headers: { x-tag: { values: [a, b, from-route] } }
  - group: seen
    name: exact-query
    http:
      request: { path: /authz/q, query: { a: "1" } }
      expect: { status: 200, query: "a=1" }
  - group: response-headers
    name: stub-headers-through-the-route
    http:
      request:
        path: /authz/r
        headers: { x-meshcheck-response-header: [foo=bar, foo=baz, x-drop=1, x-over=stub, x-kept=yes] }
      expect:
        status: 200
        response_headers:
          foo: { values: [bar, baz, from-route] }
          x-drop: { absent: true }
          x-over: route
          x-kept: { values: ["yes"] }
"#;

#[test]
fn the_backend_saw_method_query_and_every_header_value_and_the_client_the_response_headers() {
    let f = header_ops();
    let r = run_suite(&f, SEEN_SUITE);
    assert_passed(
        &r,
        &[
            "seen::method-query-and-every-header-value",
            "seen::exact-query",
            "response-headers::stub-headers-through-the-route",
            "static::simulate::seen::method-query-and-every-header-value",
            "static::simulate::seen::exact-query",
            "static::simulate::response-headers::stub-headers-through-the-route",
        ],
    );
}

#[test]
fn wrong_expectations_on_what_the_backend_saw_fail_live_and_in_the_simulation() {
    let f = header_ops();
    let suite = SEEN_SUITE
        .replace("method: PUT", "method: POST")
        .replace(
            "expect: { status: 200, query: \"a=1\" }",
            "expect: { status: 200, query: \"a=2\" }",
        )
        .replace("values: [a, b, from-route]", "values: [a, b]")
        .replace(
            "foo: { values: [bar, baz, from-route] }",
            "foo: { values: [bar, baz] }",
        );
    let r = run_suite(&f, &suite);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for c in [
        "seen::method-query-and-every-header-value",
        "seen::exact-query",
        "response-headers::stub-headers-through-the-route",
    ] {
        assert!(
            r.failed.contains(c) && r.failed.contains(&format!("static::simulate::{c}")),
            "{c} did not fail live and in the simulation\n{}",
            r.stdout
        );
    }
    for m in [
        "expected the backend to receive method POST, it received PUT",
        "expected the backend to receive method POST, predicted PUT",
        "expected the backend to receive query \"a=2\", it received \"a=1\"",
        "expected the backend to receive query \"a=2\", predicted \"a=1\"",
        "expected response header foo has exactly the values [\"bar\", \"baz\"], got [\"bar\", \"baz\", \"from-route\"]",
        "expected response header foo has exactly the values [\"bar\", \"baz\"], predicted [\"bar\", \"baz\", \"from-route\"]",
    ] {
        assert!(r.stdout.contains(m), "missing {m:?}\n{}", r.stdout);
    }
    // With the method right, the header values are judged next.
    let suite = SEEN_SUITE.replace("values: [a, b, from-route]", "values: [a, b]");
    let r = run_suite(&f, &suite);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for m in [
        "expected header x-tag has exactly the values [\"a\", \"b\"] at the backend, got [\"a\", \"b\", \"from-route\"]",
        "expected header x-tag has exactly the values [\"a\", \"b\"] at the backend, predicted [\"a\", \"b\", \"from-route\"]",
    ] {
        assert!(r.stdout.contains(m), "missing {m:?}\n{}", r.stdout);
    }
}

#[test]
fn without_the_routes_header_operations_the_response_headers_are_the_stubs() {
    let f = FixtureCopy::new();
    let r = run_suite(&f, SEEN_SUITE);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed
            .contains("response-headers::stub-headers-through-the-route")
            && r.failed
                .contains("static::simulate::response-headers::stub-headers-through-the-route")
            && r.passed.contains("seen::exact-query"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "expected response header foo has exactly the values [\"bar\", \"baz\", \"from-route\"], got [\"bar\", \"baz\"]"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn a_bad_expectation_key_in_a_step_is_a_load_error_naming_the_line() {
    let f = FixtureCopy::new();
    let suite = suite_file(
        r#"name: steps
fixtures: .
checks:
  - group: g
    name: s
    steps:
      - name: one
        http:
          request: { path: /authz }
          expect: { status: 200, methd: GET }
"#,
    );
    let r = Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(f.path())
        .run();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!("{}:", suite.path().display())) && r.stderr.contains("methd"),
        "{}",
        r.stderr
    );
}

// ---- repeat and the consecutive-successes rule ------------------------------------

#[test]
fn one_round_of_fifty_successful_requests_is_fifty_consecutive_successes() {
    // header-pins-v2 (repeat 50) once sent 150 requests: the 3-consecutive rule
    // multiplied `repeat`. One attempt whose 50 requests all succeed passes; the
    // 3-request checks still take 3 attempts.
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("ingress.xml");
    let r = Run::new()
        .arg("--target")
        .arg("local")
        .arg("--junit")
        .arg(&junit)
        .run_plain();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("50 consecutive successes (1 attempt(s) of 50 requests in a row) after"),
        "{xml}"
    );
    assert!(xml.contains("3 consecutive successes after"), "{xml}");
}
