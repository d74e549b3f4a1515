//! The example suites (examples/*.yaml), each following an Istio docs task on the
//! shared Bookinfo/httpbin base: every one passes on the local target, `--list` shows
//! every check it makes, and its fixtures agree with istiod (the Istio oracle).

mod common;
use common::oracle::{note_unavailable, oracle};
use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn suite_path(name: &str) -> PathBuf {
    root().join("examples").join(format!("{name}.yaml"))
}

/// The traffic checks the suite declares (`group::name`).
fn declared_checks(name: &str) -> BTreeSet<String> {
    let suite = meshcheck::suite::load(&suite_path(name)).unwrap();
    suite.checks.iter().map(|c| c.full_name()).collect()
}

fn passes_and_lists_its_checks(name: &str) {
    let path = suite_path(name);
    let declared = declared_checks(name);
    assert!(!declared.is_empty(), "{name} declares no check");
    let r = Run::new().arg("--suite").arg(&path).run();
    assert_eq!(r.code, 0, "{name}\n{}\n{}", r.stdout, r.stderr);
    for c in &declared {
        assert!(
            r.passed.contains(c),
            "{name}: {c} did not pass\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("not modelled") && !r.stderr.contains("not modelled"),
        "{name} uses a field meshcheck does not model\n{}\n{}",
        r.stdout,
        r.stderr
    );
    let list = Run::new()
        .arg("--suite")
        .arg(&path)
        .arg("--list")
        .run_plain();
    assert_eq!(list.code, 0, "{}", list.stderr);
    for c in &declared {
        assert!(list.stdout.contains(c.as_str()), "{c}\n{}", list.stdout);
        assert!(
            list.stdout.contains(&format!("static::simulate::{c}")),
            "{c}\n{}",
            list.stdout
        );
    }
}

fn agrees_with_istiod(name: &str) {
    if let Some(r) = suite_agrees_with_istiod(&suite_path(name)) {
        assert_eq!(r.code, 0, "{name}\n{}\n{}", r.stdout, r.stderr);
    }
}

/// `analyze --oracle` of the suite at `path` (its fixtures and requests) finds 0
/// disagreements with istiod (the run, or `None` without the oracle).
#[track_caller]
fn suite_agrees_with_istiod(path: &std::path::Path) -> Option<RunResult> {
    let name = path.display();
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return None;
        }
    };
    let r = Run::new()
        .arg("analyze")
        .arg("--suite")
        .arg(path)
        .arg("--oracle")
        .arg(bin)
        .run_plain();
    assert!(
        r.stdout.contains("oracle: 0 disagreement(s)"),
        "{name}\n{}",
        r.stdout
    );
    Some(r)
}

macro_rules! examples {
    ($($test:ident => $name:literal),* $(,)?) => {
        const EXAMPLES: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                passes_and_lists_its_checks($name);
                agrees_with_istiod($name);
            }
        )*
    };
}

examples! {
    request_routing => "request-routing",
    traffic_shifting => "traffic-shifting",
    fault_injection_abort => "fault-injection-abort",
    ingress_httpbin => "ingress-httpbin",
    redirects => "redirects",
    fault_injection_delay => "fault-injection-delay",
    request_timeouts => "request-timeouts",
    retries => "retries",
    mirroring => "mirroring",
    circuit_breaking => "circuit-breaking",
    outlier_detection => "outlier-detection",
    outlier_ejection => "outlier-ejection",
    authz_http => "authz-http",
    authz_ingress_ip => "authz-ingress-ip",
    authz_ingress_ip_local => "authz-ingress-ip-local",
    authz_deny => "authz-deny",
    authz_dry_run => "authz-dry-run",
    authz_jwt => "authz-jwt",
}

/// The Gateway API form of the tasks (examples/gateway-api/<task>.yaml), on a Gateway
/// istiod deploys itself.
macro_rules! gateway_api_examples {
    ($($test:ident => $name:literal),* $(,)?) => {
        const GATEWAY_API_EXAMPLES: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                passes_and_lists_its_checks(concat!("gateway-api/", $name));
                agrees_with_istiod(concat!("gateway-api/", $name));
            }
        )*
    };
}

gateway_api_examples! {
    gateway_api_request_routing => "request-routing",
    gateway_api_traffic_shifting => "traffic-shifting",
    gateway_api_request_timeouts => "request-timeouts",
    gateway_api_mirroring => "mirroring",
    gateway_api_redirects_rewrites => "redirects-rewrites",
    gateway_api_ingress_httpbin => "ingress-httpbin",
}

#[test]
fn every_gateway_api_example_suite_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("examples/gateway-api"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = GATEWAY_API_EXAMPLES.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(on_disk, tested);
}

#[test]
fn every_example_suite_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(on_disk, tested);
}

/// A copy of examples/ with `from` replaced by `to` in `file`; runs `suite` from it and
/// returns the run (the copy is removed at the end). The mutated example must still
/// agree with istiod (what the failing checks show is Istio's behaviour).
fn run_broken(suite: &str, file: &str, from: &str, to: &str) -> RunResult {
    run_broken_all(suite, file, &[(from, to)])
}

/// [`run_broken`] with several replacements in `file`, in order.
fn run_broken_all(suite: &str, file: &str, edits: &[(&str, &str)]) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("examples"), dir.path());
    let path = dir.path().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{file} does not contain {from:?}");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(&path, text).unwrap();
    let suite = dir.path().join(format!("{suite}.yaml"));
    suite_agrees_with_istiod(&suite);
    Run::new()
        .arg("--suite")
        .arg(suite)
        .arg("--budget")
        .arg("3s")
        .run()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The failed testcases of `r` must be exactly `checks` and their simulations.
#[track_caller]
fn fails_exactly(r: &RunResult, checks: &[&str]) {
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want: BTreeSet<String> = checks
        .iter()
        .flat_map(|c| [c.to_string(), format!("static::simulate::{c}")])
        .collect();
    assert_eq!(r.failed, want, "{}", r.stdout);
}

#[test]
fn without_the_route_timeout_the_slow_backend_answers() {
    let r = run_broken(
        "request-timeouts",
        "request-timeouts/reviews.yaml",
        "    timeout: 0.5s\n",
        "",
    );
    fails_exactly(&r, &["timeouts::slow-backend-504"]);
}

#[test]
fn without_the_delay_fault_jason_is_answered_at_once() {
    let r = run_broken(
        "fault-injection-delay",
        "fault-injection-delay/ratings.yaml",
        "        fixedDelay: 7s\n",
        "        fixedDelay: 10ms\n",
    );
    fails_exactly(&r, &["fault-delay::jason-delayed"]);
    assert!(
        r.stdout.contains(
            "expected an answer after at least 7000ms, the configuration delays it by 10ms"
        ),
        "{}",
        r.stdout
    );
}

/// Each slow answer (7 s) outlasts the budget; a wrong expectation on it still fails,
/// with what came back, and nothing claims a run of successes that never was.
#[test]
fn a_wrong_expectation_on_the_7s_delay_still_fails() {
    let r = run_broken(
        "fault-injection-delay",
        "fault-injection-delay.yaml",
        "        backend: { service: ratings, version: v1 }\n        latency: { at_least: 7s",
        "        backend: { service: ratings, version: v2 }\n        latency: { at_least: 7s",
    );
    fails_exactly(&r, &["fault-delay::jason-delayed"]);
    assert!(
        r.stdout
            .contains("expected version v2, got 200 from ratings v1")
            && !r.stdout.contains("consecutive successes within the budget"),
        "{}",
        r.stdout
    );
}

/// The 504 after 4 tries of 2 s is right; expecting the backend's answer fails.
#[test]
fn a_wrong_expectation_on_the_retried_slow_backend_still_fails() {
    let r = run_broken(
        "retries",
        "retries.yaml",
        "        status: 504\n        backend: none\n",
        "        status: 200\n        backend: { service: ratings }\n",
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("retries::slow-backend-cut-after-4-tries")
            && r.stdout.contains("expected status 200, got 504"),
        "{}",
        r.stdout
    );
}

#[test]
fn without_retries_the_backend_is_tried_once() {
    // Pilot's default policy retries no status code: 503 is passed on at once.
    let r = run_broken(
        "retries",
        "retries/ratings.yaml",
        "    retries:\n      attempts: 3\n      perTryTimeout: 2s\n      retryOn: 5xx\n",
        "",
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("retries::five-hundreds-retried-3-times"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("x-envoy-attempt-count"), "{}", r.stdout);
}

#[test]
fn a_fifty_percent_abort_that_is_not_there_fails_the_status_shares() {
    let r = run_broken(
        "fault-injection-abort",
        "fault-injection-abort/ratings.yaml",
        "          value: 50.0\n",
        "          value: 10.0\n",
    );
    fails_exactly(&r, &["fault-abort::flaky-half-503"]);
}

#[test]
fn without_connection_pool_limits_nothing_overflows() {
    let r = run_broken(
        "circuit-breaking",
        "circuit-breaking/httpbin.yaml",
        "    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n        maxRequestsPerConnection: 1\n",
        "",
    );
    fails_exactly(&r, &["circuit-breaking::overflow-503"]);
    assert!(
        r.stdout
            .contains("status 503: expected at least 1 answer(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn without_outlier_detection_the_failing_pod_keeps_answering() {
    let r = run_broken(
        "outlier-detection",
        "outlier-detection/httpbin.yaml",
        "    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n",
        "    connectionPool:\n      tcp:\n        maxConnections: 100\n",
    );
    fails_exactly(&r, &["outlier-detection::failing-pod-ejected"]);
    assert!(r.stdout.contains("503 from httpbin v1"), "{}", r.stdout);
}

/// The ejected state is the gateway's own 503: expecting the pod's 503 after the
/// ejection fails, live and in the simulation, naming the step; the check beside it
/// still passes.
#[test]
fn expecting_the_pods_own_503_after_the_ejection_fails_at_that_step() {
    let r = run_broken(
        "outlier-ejection",
        "outlier-ejection.yaml",
        "expect: { status: 503, backend: none, body_contains: no healthy upstream }",
        "expect: { status: 503, backend: { service: ratings } }",
    );
    fails_exactly(&r, &["outlier-detection::ejected-then-no-healthy-upstream"]);
    assert!(
        r.passed.contains("routing::reviews-beside-it"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "step 3/3 no-healthy-upstream: expected an answer from a backend, got 503: no healthy upstream"
        ) && r.stdout.contains("steps before it, each as expected: healthy, pod-answers-503")
            && r.stdout.contains(
                "step 3/3 no-healthy-upstream: expected an answer from a backend, predicted 503 from the gateway"
            )
            && r.stdout.contains("ejected by outlier detection"),
        "{}",
        r.stdout
    );
}

/// With two consecutive errors needed, the one 503 ejects nothing: the last step gets
/// the pod's answer, live and in the simulation.
#[test]
fn when_one_error_does_not_eject_the_pod_the_last_step_fails() {
    let r = run_broken(
        "outlier-ejection",
        "outlier-ejection/ratings.yaml",
        "    outlierDetection:\n      consecutive5xxErrors: 1\n",
        "    outlierDetection:\n      consecutive5xxErrors: 2\n",
    );
    fails_exactly(&r, &["outlier-detection::ejected-then-no-healthy-upstream"]);
    assert!(
        r.stdout
            .contains("step 3/3 no-healthy-upstream: expected status 503, got 200 from ratings v1")
            && r.stdout.contains(
                "step 3/3 no-healthy-upstream: expected status 503, predicted 200 from ratings v1"
            ),
        "{}",
        r.stdout
    );
}

// --- the Gateway API examples, each with its feature broken -------------------------

#[test]
fn gateway_api_without_the_header_match_everyone_gets_v2() {
    // Both rules now match every /reviews request; the first (v2) wins.
    let r = run_broken(
        "gateway-api/request-routing",
        "gateway-api/request-routing/reviews.yaml",
        "      headers:\n      - name: end-user\n        value: jason\n",
        "",
    );
    fails_exactly(
        &r,
        &[
            "request-routing::others-get-v1",
            "request-routing::anonymous-gets-v1",
        ],
    );
}

#[test]
fn gateway_api_weights_of_90_10_fail_the_50_50_split() {
    let r = run_broken(
        "gateway-api/traffic-shifting",
        "gateway-api/traffic-shifting/reviews.yaml",
        "      weight: 50\n    - name: reviews-v3\n      port: 9080\n      weight: 50\n",
        "      weight: 90\n    - name: reviews-v3\n      port: 9080\n      weight: 10\n",
    );
    fails_exactly(&r, &["traffic-shifting::split-50-50"]);
}

#[test]
fn gateway_api_without_the_request_timeout_the_slow_backend_answers() {
    let r = run_broken(
        "gateway-api/request-timeouts",
        "gateway-api/request-timeouts/reviews.yaml",
        "    timeouts:\n      request: 500ms\n",
        "",
    );
    fails_exactly(&r, &["timeouts::slow-backend-504"]);
}

#[test]
fn gateway_api_without_the_mirror_filter_v2_sees_nothing() {
    let r = run_broken(
        "gateway-api/mirroring",
        "gateway-api/mirroring/httpbin.yaml",
        "    filters:\n    - type: RequestMirror\n      requestMirror:\n        backendRef:\n          name: httpbin-v2\n          port: 80\n",
        "",
    );
    fails_exactly(&r, &["mirroring::v1-answers-v2-sees-a-copy"]);
}

#[test]
fn gateway_api_a_redirect_without_its_hostname_or_scheme_keeps_the_requests() {
    let r = run_broken_all(
        "gateway-api/redirects-rewrites",
        "gateway-api/redirects-rewrites/ratings.yaml",
        &[
            ("        hostname: newratings.example.com\n", ""),
            ("        scheme: https\n", ""),
        ],
    );
    fails_exactly(&r, &["redirects::moved-permanently", "redirects::to-https"]);
}

#[test]
fn gateway_api_without_the_rewrite_ratings_sees_the_request_as_sent() {
    let r = run_broken(
        "gateway-api/redirects-rewrites",
        "gateway-api/redirects-rewrites/ratings.yaml",
        "    filters:\n    - type: URLRewrite\n      urlRewrite:\n        hostname: ratings.bookinfo.svc.cluster.local\n        path:\n          type: ReplacePrefixMatch\n          replacePrefixMatch: /ratings\n",
        "",
    );
    fails_exactly(&r, &["rewrites::prefix-and-host"]);
}

#[test]
fn gateway_api_without_hostnames_the_route_serves_every_host_of_the_listener() {
    let r = run_broken(
        "gateway-api/ingress-httpbin",
        "gateway-api/ingress-httpbin/httpbin.yaml",
        "  hostnames: [\"httpbin.example.com\"]\n",
        "",
    );
    fails_exactly(&r, &["ingress-httpbin::other-host-404"]);
}

// --- the authorization examples, each with its policy feature broken ----------------

/// The authorization examples: the suites, with the fixture sets they load.
const AUTHZ_EXAMPLES: &[&str] = &[
    "authz-http",
    "authz-ingress-ip",
    "authz-ingress-ip-local",
    "authz-deny",
    "authz-dry-run",
    "authz-jwt",
];

/// The run passed every check (a mutation that must change nothing the suite sees).
#[track_caller]
fn passes_every_check(r: &RunResult) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.failed.is_empty(), "{:?}\n{}", r.failed, r.stdout);
}

/// The analysis of each authorization example's whole fixture set (its base and its
/// own objects, as the suite loads them) finds none of the classic mistakes
/// (MC150-MC154): no policy attaching to nothing, no peer identity or connection
/// address where they mean nothing, no DENY a spelling slips past, no route an ALLOW
/// closes.
#[test]
fn the_authz_examples_have_no_authorization_finding() {
    for name in AUTHZ_EXAMPLES {
        let r = Run::new()
            .arg("analyze")
            .arg("--suite")
            .arg(suite_path(name))
            .run_plain();
        assert_eq!(r.code, 0, "{name}\n{}\n{}", r.stdout, r.stderr);
        let found: Vec<&str> = r
            .stdout
            .lines()
            .chain(r.stderr.lines())
            .filter(|l| (150..=154).any(|c| l.contains(&format!("[MC{c}]"))))
            .collect();
        assert!(found.is_empty(), "{name}: {found:#?}");
    }
}

#[test]
fn without_the_allow_rule_allow_nothing_denies_every_request() {
    let r = run_broken(
        "authz-http",
        "authz-http/policies.yaml",
        "  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/productpage\", \"/static*\", \"/api/v1/products*\"]\n",
        "",
    );
    fails_exactly(
        &r,
        &[
            "viewer::productpage-get",
            "viewer::products-api-get",
            "viewer::static-get",
        ],
    );
    assert!(
        r.stdout
            .contains("expected status 200, got 403: RBAC: access denied")
            && r.stdout.contains(
                "ALLOW policies apply and none of [ns[istio-system]-policy[allow-nothing]-rule[0], ns[istio-system]-policy[productpage-viewer]-rule[0]] matches"
            ),
        "{}",
        r.stdout
    );
}

#[test]
fn an_allow_without_methods_lets_post_and_delete_in() {
    let r = run_broken(
        "authz-http",
        "authz-http/policies.yaml",
        "        methods: [\"GET\"]\n",
        "",
    );
    fails_exactly(&r, &["denied::post-productpage", "denied::delete-product"]);
}

/// The gateway trusts no proxy: Envoy ignores X-Forwarded-For and the client is the
/// connection's peer, outside the allowed range. ipBlocks never read the header, so
/// the connection-address part passes unchanged.
#[test]
fn without_a_trusted_proxy_the_forwarded_client_is_not_the_client() {
    let annotation =
        "        proxy.istio.io/config: '{\"gatewayTopology\": {\"numTrustedProxies\": 1}}'\n";
    let file = "authz-ingress-ip/10-ingressgateway.yaml";
    let r = run_broken("authz-ingress-ip", file, annotation, "");
    fails_exactly(&r, &["remote-ip::allowed-client"]);
    passes_every_check(&run_broken("authz-ingress-ip-local", file, annotation, ""));
}

#[test]
fn another_remote_ip_block_lets_the_wrong_clients_in_and_the_right_one_out() {
    let r = run_broken(
        "authz-ingress-ip",
        "authz-ingress-ip/60-policies.yaml",
        "remoteIpBlocks: [\"203.0.113.0/24\"]",
        "remoteIpBlocks: [\"198.51.100.0/24\"]",
    );
    fails_exactly(
        &r,
        &[
            "remote-ip::allowed-client",
            "remote-ip::other-client-denied",
            "remote-ip::spoofed-first-entry-ignored",
        ],
    );
}

#[test]
fn another_ip_block_lets_the_wrong_peer_in_and_the_right_one_out() {
    let r = run_broken(
        "authz-ingress-ip-local",
        "authz-ingress-ip/60-policies.yaml",
        "ipBlocks: [\"127.0.0.55\"]",
        "ipBlocks: [\"127.0.0.56\"]",
    );
    fails_exactly(
        &r,
        &[
            "direct-ip::allowed-peer",
            "direct-ip::other-peer-denied",
            "direct-ip::forwarded-for-does-not-change-the-peer",
        ],
    );
}

/// A deny list on remoteIpBlocks reads X-Forwarded-For: the deny-listed peer gets in
/// by naming an allowed client.
#[test]
fn a_deny_list_on_the_forwarded_address_lets_the_deny_listed_peer_in() {
    let r = run_broken(
        "authz-ingress-ip-local",
        "authz-ingress-ip/60-policies.yaml",
        "ipBlocks: [\"127.0.0.66\"]",
        "remoteIpBlocks: [\"127.0.0.66\"]",
    );
    fails_exactly(&r, &["direct-ip::deny-listed-peer"]);
}

#[test]
fn without_the_header_condition_the_admin_is_denied_too() {
    let r = run_broken(
        "authz-deny",
        "authz-deny/httpbin.yaml",
        "    when:\n    - key: request.headers[x-token]\n      notValues: [\"admin\"]\n",
        "",
    );
    fails_exactly(&r, &["deny-headers::admin-token-allowed"]);
}

/// `values` for `notValues`: only the admin is denied; everyone else reaches /headers
/// in every spelling the gateway normalizes to it (the others find no route: 404).
#[test]
fn a_deny_on_values_instead_of_not_values_turns_it_around() {
    let r = run_broken(
        "authz-deny",
        "authz-deny/httpbin.yaml",
        "notValues: [\"admin\"]",
        "values: [\"admin\"]",
    );
    fails_exactly(
        &r,
        &[
            "deny-headers::no-token-denied",
            "deny-headers::guest-token-denied",
            "deny-headers::admin-token-allowed",
            "deny-headers::closed::as-written",
            "deny-headers::closed::dot-segment",
            "deny-headers::closed::dot-dot-segment",
            "deny-headers::closed::encoded-dot",
            "deny-headers::closed::percent-encoded-letter",
            "deny-headers::closed::fragment",
        ],
    );
}

#[test]
fn without_the_dry_run_annotation_the_policy_denies() {
    let r = run_broken(
        "authz-dry-run",
        "authz-dry-run/httpbin.yaml",
        "  annotations:\n    istio.io/dry-run: \"true\"\n",
        "",
    );
    fails_exactly(&r, &["dry-run::headers-not-denied"]);
    assert!(
        r.stdout.contains(
            "RBAC: access denied by DENY policy ns[istio-system]-policy[deny-path-headers]-rule[0]"
        ),
        "{}",
        r.stdout
    );
}

// --- authz-jwt: the JWT tasks at the ingress ----------------------------------------

#[test]
fn a_deny_of_every_principal_but_one_refuses_valid_tokens_too() {
    let r = run_broken(
        "authz-jwt",
        "authz-jwt/httpbin.yaml",
        "        notRequestPrincipals: [\"*\"]\n",
        "        notRequestPrincipals: [\"nobody/nothing\"]\n",
    );
    // A request without a token has no principal, which notRequestPrincipals
    // [nobody/nothing] still matches: /headers stays refused; a token of another
    // subject now is too.
    fails_exactly(&r, &["per-path::headers-with-token"]);
}

#[test]
fn the_per_path_policy_on_another_path_lets_headers_in_without_a_token() {
    let r = run_broken(
        "authz-jwt",
        "authz-jwt/httpbin.yaml",
        "        paths: [\"/headers\"]\n",
        "        paths: [\"/status\"]\n",
    );
    fails_exactly(&r, &["per-path::headers-without-token-403"]);
}

#[test]
fn another_issuer_in_the_request_authentication_refuses_the_suite_s_tokens() {
    let r = run_broken(
        "authz-jwt",
        "authz-jwt/httpbin.yaml",
        "  - issuer: testing@secure.istio.io\n",
        "  - issuer: someone-else@example.com\n",
    );
    // Every minted token is now of an issuer no rule names: 401 ("Jwt issuer is not
    // configured"), where the suite expects it through or refused by RBAC.
    fails_exactly(
        &r,
        &[
            "per-path::headers-with-token",
            "groups::group1-allowed",
            "groups::group2-denied",
        ],
    );
}

#[test]
fn the_group_condition_on_another_value_turns_the_groups_around() {
    let r = run_broken(
        "authz-jwt",
        "authz-jwt/httpbin.yaml",
        "notValues: [\"group1\"]",
        "notValues: [\"group2\"]",
    );
    // group1's token also carries group2: still in. group2's alone: now in too.
    fails_exactly(&r, &["groups::group2-denied"]);
}
