//! Every HTTPRoute match type, filter and backendRef case istiod supports at the
//! ingress, end to end on the local target: each fixture set is the Gateway API
//! ingress (fixtures/ingress-gateway-api) plus one HTTPRoute file of
//! tests/gateway_api_features/, run with the suite beside it; it passes, and breaking
//! its features fails exactly the checks that show them (the mutations of a negative
//! each touch one feature, and the checks of the others still pass). Every fixture
//! set, broken or not, is compared with istiod when the test ends
//! (tests/common/oracle.rs).

mod common;
use common::*;

const BASE: &str = "fixtures/ingress-gateway-api";
/// Where the HTTPRoutes are written in the fixture copy.
const ROUTES: &str = "60-features.yaml";

fn data(file: &str) -> String {
    let path = root().join("tests/gateway_api_features").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One fixture set and its suite: `<name>.yaml` (HTTPRoutes) and `<name>.suite.yaml`.
struct Feature {
    fixtures: FixtureCopy,
    suite: String,
}

impl Feature {
    fn new(name: &str) -> Feature {
        let fixtures = FixtureCopy::of(BASE);
        fixtures.write(ROUTES, &data(&format!("{name}.yaml")));
        Feature {
            fixtures,
            suite: data(&format!("{name}.suite.yaml")),
        }
    }

    /// Replaces `from` (which must occur exactly once) by `to` in the HTTPRoutes.
    #[track_caller]
    fn breaks(&self, from: &str, to: &str) -> &Self {
        let text = self.fixtures.read(ROUTES);
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} occurs once in the routes"
        );
        self.fixtures.write(ROUTES, &text.replacen(from, to, 1));
        self
    }

    fn run(&self) -> RunResult {
        run_suite(&self.fixtures, &self.suite)
    }

    /// The run failed exactly `checks` (each live and in the simulation) and
    /// `static_findings`; every other check of the suite passed, live and simulated.
    #[track_caller]
    fn fails_exactly(&self, r: &RunResult, checks: &[&str], static_findings: &[&str]) {
        self.fails_exactly_with(r, checks, &[], static_findings)
    }

    /// [`Feature::fails_exactly`], with `live_only`: checks that fail live while their
    /// simulation passes (what the static judgement does not cover, said where used).
    #[track_caller]
    fn fails_exactly_with(
        &self,
        r: &RunResult,
        checks: &[&str],
        live_only: &[&str],
        static_findings: &[&str],
    ) {
        assert_suite_fails_exactly(r, &self.suite, checks, live_only, static_findings);
    }
}

// --- matches ------------------------------------------------------------------------

#[test]
fn every_match_type_routes_what_it_matches_and_nothing_else() {
    let f = Feature::new("matches");
    let r = f.run();
    f.fails_exactly(&r, &[], &[]);
}

#[test]
fn a_match_of_another_type_or_without_its_condition_routes_what_it_should_not() {
    let f = Feature::new("matches");
    // Exact read as a prefix, a prefix as an exact path, a regex as an exact path; a
    // header regex as an exact value, the header, query and method conditions dropped.
    f.breaks(
        "{ type: Exact, value: /m/exact }",
        "{ type: PathPrefix, value: /m/exact }",
    )
    .breaks(
        "{ type: PathPrefix, value: /m/prefix/ }",
        "{ type: Exact, value: /m/prefix }",
    )
    .breaks(
        "{ type: RegularExpression, value: \"/re/[0-9]+\" }",
        "{ type: Exact, value: \"/re/[0-9]+\" }",
    )
    .breaks(
        "      headers:\n      - { name: x-tier, value: gold }\n",
        "",
    )
    .breaks(
        "{ type: RegularExpression, name: x-build, value: \"[0-9]+\" }",
        "{ type: Exact, name: x-build, value: \"[0-9]+\" }",
    )
    .breaks(
        "      queryParams:\n      - { name: version, value: v2 }\n",
        "",
    )
    .breaks("      method: POST\n", "");
    let r = f.run();
    f.fails_exactly(
        &r,
        &[
            "path::exact-not-below",
            "path::prefix-below",
            "path::regex",
            "headers::exact-other-value",
            "headers::regex",
            "query::other-value",
            "method::get",
        ],
        &[],
    );
}

// --- precedence across HTTPRoutes ---------------------------------------------------

#[test]
fn the_most_specific_rule_of_two_httproutes_wins() {
    let f = Feature::new("precedence");
    let r = f.run();
    f.fails_exactly(&r, &[], &[]);
}

#[test]
fn without_what_makes_a_rule_more_specific_the_first_httproute_wins() {
    let f = Feature::new("precedence");
    // A regex ranks below any prefix; equal header counts and no method leave the
    // merged order (`broad` first).
    f.breaks(
        "{ type: PathPrefix, value: /p/long }",
        "{ type: RegularExpression, value: \"/p/long.*\" }",
    )
    .breaks(
        "{ type: Exact, value: /e/x }",
        "{ type: RegularExpression, value: /e/x }",
    )
    .breaks("      - { name: x-b, value: \"1\" }\n", "")
    .breaks("      method: GET\n", "");
    let r = f.run();
    f.fails_exactly(
        &r,
        &[
            "precedence::longer-prefix",
            "precedence::exact-over-prefix",
            "precedence::more-headers",
            "precedence::method-over-headers",
        ],
        &[],
    );
}

// --- filters, weights and timeouts --------------------------------------------------

#[test]
fn every_filter_weight_and_timeout_does_what_it_says() {
    let f = Feature::new("filters");
    let r = f.run();
    f.fails_exactly(&r, &[], &[]);
}

#[test]
fn without_the_header_modifiers_the_headers_arrive_as_sent() {
    let f = Feature::new("filters");
    f.breaks(
        "    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{ name: x-set, value: route }]\n        add: [{ name: x-add, value: route }]\n        remove: [x-remove]\n",
        "",
    )
    .breaks(
        "    filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n        set: [{ name: x-r-set, value: route }]\n        add: [{ name: x-r-add, value: route }]\n        remove: [x-r-remove]\n",
        "",
    )
    // One backend of two loses its filters: the check fails on its share.
    .breaks(
        "      weight: 1\n      filters:\n      - type: RequestHeaderModifier\n        requestHeaderModifier:\n          set: [{ name: x-leg, value: to-v2 }]\n      - type: ResponseHeaderModifier\n        responseHeaderModifier:\n          set: [{ name: x-leg-answer, value: from-v2 }]\n",
        "      weight: 1\n",
    );
    let r = f.run();
    // The simulation judges a request header's `values` only, and a response header
    // only when the stub is asked for it or the route touches it: v2's missing
    // x-leg (`contains`) and x-leg-answer are seen live alone.
    f.fails_exactly_with(
        &r,
        &[
            "headers::request-set-add-remove",
            "headers::response-set-add-remove",
        ],
        &["headers::per-backend"],
        &[],
    );
}

#[test]
fn a_redirect_without_its_scheme_hostname_port_or_path_keeps_the_requests() {
    let f = Feature::new("filters");
    f.breaks("{ scheme: https, statusCode: 301 }", "{ statusCode: 301 }")
        .breaks(
            "{ hostname: moved.example.com, statusCode: 302 }",
            "{ statusCode: 302 }",
        )
        .breaks("{ port: 8443, statusCode: 303 }", "{ statusCode: 303 }")
        .breaks(
            "        path: { type: ReplaceFullPath, replaceFullPath: /new/full }\n",
            "",
        )
        .breaks(
            "        path: { type: ReplacePrefixMatch, replacePrefixMatch: /moved }\n",
            "",
        );
    let r = f.run();
    f.fails_exactly(
        &r,
        &[
            "redirect::scheme-301",
            "redirect::hostname-302",
            "redirect::port-303",
            "redirect::full-path-307",
            "redirect::prefix-308",
        ],
        &[],
    );
}

#[test]
fn a_redirect_with_another_status_code_fails_its_check() {
    let f = Feature::new("filters");
    f.breaks(
        "{ port: 8443, statusCode: 303 }",
        "{ port: 8443, statusCode: 302 }",
    )
    .breaks("        statusCode: 307\n", "        statusCode: 308\n");
    let r = f.run();
    f.fails_exactly(&r, &["redirect::port-303", "redirect::full-path-307"], &[]);
    assert!(
        r.stdout.contains("expected status 303, got 302"),
        "{}",
        r.stdout
    );
}

#[test]
fn without_the_rewrites_the_backend_sees_the_request_as_sent() {
    let f = Feature::new("filters");
    f.breaks(
        "    filters:\n    - type: URLRewrite\n      urlRewrite: { hostname: rewritten.example.com }\n",
        "",
    )
    .breaks(
        "    filters:\n    - type: URLRewrite\n      urlRewrite:\n        path: { type: ReplaceFullPath, replaceFullPath: /replaced }\n",
        "",
    )
    .breaks(
        "    filters:\n    - type: URLRewrite\n      urlRewrite:\n        path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }\n",
        "",
    );
    let r = f.run();
    // The simulation does not predict the Host header the backend receives (nor
    // judge a request header but by `values`): the hostname rewrite is seen live.
    f.fails_exactly_with(
        &r,
        &["rewrite::full-path", "rewrite::prefix"],
        &["rewrite::hostname"],
        &[],
    );
}

#[test]
fn a_mirror_removed_or_at_zero_percent_sends_no_copy() {
    let f = Feature::new("filters");
    f.breaks(
        "    filters:\n    - type: RequestMirror\n      requestMirror:\n        backendRef: { name: nb-rest-v2, port: 80 }\n    backendRefs:\n",
        "    backendRefs:\n",
    )
    // The second mirror of two goes; the first still gets its copy.
    .breaks(
        "    - type: RequestMirror\n      requestMirror:\n        backendRef: { name: atlas-ui, port: 80 }\n",
        "",
    )
    .breaks(
        "fraction: { numerator: 2, denominator: 2 }",
        "fraction: { numerator: 0, denominator: 2 }",
    )
    .breaks("        percent: 100\n", "        percent: 0\n");
    let r = f.run();
    f.fails_exactly(
        &r,
        &[
            "mirror::one",
            "mirror::several-second",
            "mirror::fraction",
            "mirror::percent",
        ],
        &[],
    );
}

#[test]
fn swapped_weights_and_no_timeouts_fail_the_split_and_the_504s() {
    let f = Feature::new("filters");
    f.breaks(
        "    - { name: nb-rest-v1, port: 80, weight: 3 }\n    - { name: nb-rest-v2, port: 80, weight: 1 }\n",
        "    - { name: nb-rest-v1, port: 80, weight: 1 }\n    - { name: nb-rest-v2, port: 80, weight: 3 }\n",
    )
    .breaks("    timeouts: { request: 500ms }\n", "")
    .breaks("    timeouts: { backendRequest: 500ms }\n", "");
    let r = f.run();
    f.fails_exactly(
        &r,
        &[
            "weights::three-to-one",
            "timeouts::request",
            "timeouts::backend-request",
        ],
        &[],
    );
}

// --- backends that cannot be reached ------------------------------------------------

#[test]
fn a_missing_service_an_unknown_kind_no_backend_and_zero_weights_answer_500_or_404() {
    let f = Feature::new("refs");
    let r = f.run();
    // istiod reports an unresolved reference on the route: one ResolvedRefs per
    // parent, the last erring rule's (route_collections.go computeRoute keeps the
    // last error), so the unknown kind and not the missing Service.
    f.fails_exactly(&r, &[], &["static::gateway-api-status"]);
    assert!(
        r.stdout.contains("ResolvedRefs=False (InvalidKind)")
            && !r.stdout.contains("BackendNotFound"),
        "{}",
        r.stdout
    );
}

#[test]
fn with_each_backend_resolvable_the_rules_answer_from_it() {
    let f = Feature::new("refs");
    f.breaks("{ name: ghost, port: 80 }", "{ name: authz, port: 80 }")
        .breaks(
            "{ group: storage.example.com, kind: Bucket, name: atlas-ui, port: 80 }",
            "{ name: atlas-ui, port: 80 }",
        )
        .breaks(
            "    - path: { value: /r/none }\n",
            "    - path: { value: /r/none }\n    backendRefs:\n    - { name: authz, port: 80 }\n",
        )
        .breaks(
            "{ name: authz, port: 80, weight: 0 }",
            "{ name: authz, port: 80, weight: 1 }",
        );
    let r = f.run();
    f.fails_exactly(
        &r,
        &[
            "refs::missing-service-500",
            "refs::unknown-kind-500",
            "refs::no-backend-404",
            "refs::zero-weight-500",
        ],
        &[],
    );
}
