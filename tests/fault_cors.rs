//! VirtualService `fault` and `corsPolicy`, end to end on the local target: modelled as
//! pilot translates them (route.go TranslateFault, TranslateCORSPolicy: Envoy's fault
//! and CORS filters, configured per route), served by real Envoy, predicted by the
//! simulation, and (through the FixtureCopy hook) agreeing with istiod.

mod common;
use common::*;

/// Istio's "Fault Injection" task on the shipped fixtures: requests to /atlas-ui from
/// the user `jason` are aborted with 500; CORS on /authz as in Istio's CORS examples.
fn fault_and_cors() -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        "  http:\n  - name: jason-aborted\n    match:\n    - uri:\n        prefix: /atlas-ui\n      headers:\n        end-user:\n          exact: jason\n    fault:\n      abort:\n        httpStatus: 500\n        percentage:\n          value: 100\n    route:\n    - destination:\n        host: atlas-ui\n  - name: atlas-ui\n",
    );
    f.replace(
        "40-virtualservices.yaml",
        "        prefix: /authz\n    route:\n",
        "        prefix: /authz\n    corsPolicy:\n      allowOrigins:\n      - exact: https://example.com\n      - regex: https://.*[.]example[.]org\n      allowMethods: [GET, POST]\n      allowHeaders: [x-atlas-token]\n      maxAge: 24h\n    route:\n",
    );
    f
}

const SUITE: &str = r#"name: fault-and-cors
fixtures: .
checks:
  - group: fault
    name: jason-aborted
    http:
      request: { path: /atlas-ui, headers: { end-user: jason } }
      repeat: 5
      expect: { status: 500, body_contains: fault filter abort }
  - group: fault
    name: others-reach-atlas-ui
    http:
      request: { path: /atlas-ui, headers: { end-user: alice } }
      expect: { status: 200, backend: { service: atlas-ui } }
  - group: cors
    name: preflight-answered
    http:
      request:
        path: /authz/check
        method: OPTIONS
        headers: { origin: "https://example.com", access-control-request-method: POST }
      expect:
        status: 200
        backend: none
        response_headers:
          access-control-allow-origin: { equals: "https://example.com" }
          access-control-allow-methods: { equals: "GET,POST" }
          access-control-allow-headers: { equals: x-atlas-token }
          access-control-max-age: { equals: "86400" }
  - group: cors
    name: allowed-origin
    http:
      request: { path: /authz/check, headers: { origin: "https://app.example.org" } }
      expect:
        status: 200
        backend: { service: authz }
        response_headers:
          access-control-allow-origin: { equals: "https://app.example.org" }
  - group: cors
    name: other-origin
    http:
      request: { path: /authz/check, headers: { origin: "https://evil.test" } }
      expect:
        status: 200
        backend: { service: authz }
        response_headers:
          access-control-allow-origin: { absent: true }
"#;

fn run(f: &FixtureCopy) -> RunResult {
    run_suite(f, SUITE)
}

#[test]
fn fault_abort_and_cors_behave_as_istio_documents() {
    let f = fault_and_cors();
    let r = run(&f);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for c in [
        "fault::jason-aborted",
        "static::simulate::fault::jason-aborted",
        "fault::others-reach-atlas-ui",
        "cors::preflight-answered",
        "cors::allowed-origin",
        "cors::other-origin",
    ] {
        assert!(r.passed.contains(c), "{c}\n{}", r.stdout);
    }
    assert!(
        !r.stderr.contains("not modelled") && !r.stdout.contains("not modelled"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn without_the_fault_the_abort_check_and_its_simulation_fail() {
    let f = fault_and_cors();
    f.replace(
        "40-virtualservices.yaml",
        "    fault:\n      abort:\n        httpStatus: 500\n        percentage:\n          value: 100\n",
        "",
    );
    let r = run(&f);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("fault::jason-aborted")
            && r.failed.contains("static::simulate::fault::jason-aborted"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("expected status 500, got 200 from atlas-ui"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_abort_without_percentage_never_aborts_as_envoy_reads_it() {
    // pilot leaves Envoy's abort percentage unset, which Envoy reads as 0%.
    let f = fault_and_cors();
    f.replace(
        "40-virtualservices.yaml",
        "        httpStatus: 500\n        percentage:\n          value: 100\n",
        "        httpStatus: 500\n",
    );
    let r = run(&f);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("fault::jason-aborted")
            && r.failed.contains("static::simulate::fault::jason-aborted"),
        "{}",
        r.stdout
    );
    assert!(
        r.passed.contains("fault::others-reach-atlas-ui"),
        "{}",
        r.stdout
    );
}

#[test]
fn without_the_cors_policy_preflights_reach_the_backend_and_no_origin_is_allowed() {
    let f = fault_and_cors();
    f.replace(
        "40-virtualservices.yaml",
        "    corsPolicy:\n      allowOrigins:\n      - exact: https://example.com\n      - regex: https://.*[.]example[.]org\n      allowMethods: [GET, POST]\n      allowHeaders: [x-atlas-token]\n      maxAge: 24h\n",
        "",
    );
    let r = run(&f);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let failed: Vec<&str> = r.failed.iter().map(String::as_str).collect();
    assert_eq!(
        failed,
        [
            "cors::allowed-origin",
            "cors::preflight-answered",
            "static::simulate::cors::preflight-answered"
        ],
        "{}",
        r.stdout
    );
}

#[test]
fn a_preflight_from_another_origin_goes_on_unless_ignored() {
    // forward_not_matching_preflights (pilot: true unless unmatchedPreflights IGNORE).
    let suite = |backend: &str| {
        format!(
            "name: preflight\nfixtures: .\nchecks:\n  - group: cors\n    name: other-origin-preflight\n    http:\n      request:\n        path: /authz/check\n        method: OPTIONS\n        headers: {{ origin: \"https://evil.test\", access-control-request-method: POST }}\n      expect: {{ status: 200, backend: {backend} }}\n"
        )
    };
    let f = fault_and_cors();
    let run_with = |text: &str| {
        let file = f.suite_file(text);
        Run::new()
            .arg("--suite")
            .arg(file.path())
            .fixtures(f.path())
            .arg("--budget")
            .arg("3s")
            .run()
    };
    let r = run_with(&suite("{ service: authz }"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    f.replace(
        "40-virtualservices.yaml",
        "      maxAge: 24h\n",
        "      maxAge: 24h\n      unmatchedPreflights: IGNORE\n",
    );
    let r = run_with(&suite("none"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let r = run_with(&suite("{ service: authz }"));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("cors::other-origin-preflight")
            && r.failed
                .contains("static::simulate::cors::other-origin-preflight"),
        "{}",
        r.stdout
    );
}

// ---- latency at the boundary of a configured delay -----------------------------

/// A 2 s fault delay on /atlas-ui for jason, and a check that asks for exactly that.
const DELAY_SUITE: &str = r#"name: delay-boundary
fixtures: .
checks:
  - group: fault
    name: jason-delayed-2s
    http:
      request: { path: /atlas-ui, headers: { end-user: jason } }
      expect: { status: 200, backend: { service: atlas-ui }, latency: { at_least: 2s } }
"#;

fn delayed_2s() -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        "  http:\n  - name: jason-delayed\n    match:\n    - uri:\n        prefix: /atlas-ui\n      headers:\n        end-user:\n          exact: jason\n    fault:\n      delay:\n        fixedDelay: 2s\n        percentage:\n          value: 100\n    route:\n    - destination:\n        host: atlas-ui\n  - name: atlas-ui\n",
    );
    f
}

/// Measurement, not a timed test (`cargo test --test fault_cors -- --ignored
/// --nocapture at_least`): `at_least: 2s` on a route with a 2 s `fault.delay`, checked
/// `MESHCHECK_BOUNDARY_RUNS` times (default 200; 3 answers each, 50 at a time) on one
/// local target. Every run must pass at its first 3 attempts (no answer judged early);
/// prints the count.
#[test]
#[ignore = "measurement: 200 check runs of a 2 s delay, about 30 s"]
fn at_least_the_configured_delay_holds_at_every_run() {
    let runs: usize = std::env::var("MESHCHECK_BOUNDARY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let f = delayed_2s();
    let suite = f.suite_file(DELAY_SUITE);
    let live = LiveIngress::start_with(f.path(), suite.path(), Default::default());
    let check = live.check("fault::jason-delayed-2s").clone();
    let ctx = std::sync::Arc::new(live.ctx.clone());
    let outcomes = live.rt.block_on(async {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..runs {
            let (ctx, check, gate) = (ctx.clone(), check.clone(), gate.clone());
            set.spawn(async move {
                let _slot = gate.acquire().await;
                meshcheck::checks::run(&ctx, &check).await
            });
        }
        set.join_all().await
    });
    let clean = outcomes
        .iter()
        .filter(|o| o.passed && o.attempts == 3)
        .count();
    let failures: Vec<&str> = outcomes
        .iter()
        .filter(|o| !(o.passed && o.attempts == 3))
        .map(|o| o.message.as_str())
        .collect();
    eprintln!(
        "at_least 2s on a 2 s fault delay: {clean} of {runs} runs passed at their first 3 answers"
    );
    assert_eq!(clean, runs, "{}", failures.join("\n"));
}
