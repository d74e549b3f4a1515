//! AuthorizationPolicy at the ingress, end to end on the local target: each fixture
//! set is the seed's ingress (fixtures/ingress) plus one policy file of tests/authz/,
//! run with the suite beside it. It passes (the gateway Envoys enforce the RBAC
//! filters the model writes, and the simulation predicts each answer), and breaking
//! one attribute of the policy fails exactly the checks that show it. Every fixture
//! set is compared with istiod when the test ends (tests/common/oracle.rs): the RBAC
//! filters whole (MC408) and the routes.

mod common;
use common::*;

use common::policy_case::{data, PolicyCase as Case, POLICIES};

/// The gateway Deployment trusts one proxy in front of it (X-Forwarded-For).
fn trust_one_proxy(c: &Case) {
    c.breaks_in(
        "10-ingress-gateway.yaml",
        "        inject.istio.io/templates: gateway\n",
        "        inject.istio.io/templates: gateway\n        proxy.istio.io/config: '{\"gatewayTopology\": {\"numTrustedProxies\": 1}}'\n",
    );
}

#[test]
fn every_operation_field_denies_what_it_names_and_nothing_else() {
    Case::of("operations").fails_exactly(&[]);
}

#[test]
fn an_operation_read_otherwise_denies_what_it_should_not_or_lets_through_what_it_should_deny() {
    let c = Case::of("operations");
    // An exact path as a prefix, a one-segment template as any-segments, the suffix
    // dropped; methods without their notPaths; a host case-sensitively; the Service
    // port where the pod's listener port is meant.
    c.breaks("\"/atlas-ui/admin\", ", "\"/atlas-ui/admin*\", ")
        .breaks("\"/authz/{*}/keys\"", "\"/authz/{**}/keys\"")
        .breaks("\"*.secret\", ", "")
        .breaks("        notPaths: [\"/atlas-ui/trash/*\"]\n", "")
        .breaks("\"blocked.example.com\", ", "")
        .breaks("ports: [\"8080\"]", "ports: [\"80\"]");
    c.fails_exactly(&[
        "path::exact-not-prefix",
        "path::one-segment-template-not-two",
        "path::suffix",
        "path::suffix-ignores-query",
        "method::delete-in-trash-allowed",
        "host::exact-any-case",
        "port::listener-port",
    ]);
}

#[test]
fn an_allow_policy_lets_in_its_clients_and_denies_everything_else() {
    let c = Case::of("sources");
    trust_one_proxy(&c);
    c.fails_exactly(&[]);
}

#[test]
fn without_the_exclusion_or_the_wildcard_the_wrong_clients_get_in_or_out() {
    let c = Case::of("sources");
    trust_one_proxy(&c);
    c.breaks("        notRemoteIpBlocks: [\"203.0.113.66\"]\n", "")
        .breaks("values: [\"key-*\"]", "values: [\"key-\"]");
    c.fails_exactly(&["remote::excluded-client-denied", "when::api-key-allowed"]);
}

#[test]
fn without_a_trusted_proxy_the_client_address_is_the_connection_s() {
    // X-Forwarded-For is not trusted: every client is 127.0.0.1, outside the block.
    Case::of("sources").fails_exactly(&["remote::forwarded-client-allowed"]);
}

#[test]
fn a_policy_that_does_not_attach_to_the_gateway_changes_nothing() {
    let c = Case::of("operations");
    // Another namespace's policy (not the root's, not the gateway's) and a selector
    // for other pods attach to nothing at the gateway.
    c.breaks("  namespace: istio-ingress\n", "  namespace: atlas\n");
    c.fails_exactly(&[
        "path::exact",
        "path::prefix",
        "path::suffix",
        "path::suffix-ignores-query",
        "path::one-segment-template",
        "path::any-segments-template",
        "method::delete-denied",
        "host::exact-any-case",
        "host::suffix",
        "port::listener-port",
    ]);
}

#[test]
fn a_dry_run_policy_denies_nothing() {
    let c = Case::of("operations");
    c.breaks(
        "  namespace: istio-ingress\n",
        "  namespace: istio-ingress\n  annotations:\n    istio.io/dry-run: \"true\"\n",
    );
    c.fails_exactly(&[
        "path::exact",
        "path::prefix",
        "path::suffix",
        "path::suffix-ignores-query",
        "path::one-segment-template",
        "path::any-segments-template",
        "method::delete-denied",
        "host::exact-any-case",
        "host::suffix",
        "port::listener-port",
    ]);
}

#[test]
fn rules_absent_allow_nothing_and_one_empty_rule_allows_everything() {
    let c = Case::of("sources");
    trust_one_proxy(&c);
    let text = c.fixtures.read(POLICIES);
    let rules_at = text.find("  rules:\n").unwrap();
    c.fixtures.write(POLICIES, &text[..rules_at]);
    c.fails_exactly(&[
        "remote::forwarded-client-allowed",
        "when::api-key-allowed",
        "to::health-open",
    ]);
    c.fixtures.write(
        POLICIES,
        &format!("{}  rules:\n  - {{}}\n", &text[..rules_at]),
    );
    c.fails_exactly(&[
        "remote::excluded-client-denied",
        "remote::untrusted-first-hop-ignored",
        "remote::no-header-denied",
        "when::other-key-denied",
        "to::unknown-path-denied-not-404",
    ]);
}

/// `code` findings of `meshcheck analyze` on `dir`, as `object: message` lines.
fn findings(dir: &std::path::Path, code: &str) -> Vec<String> {
    let r = Run::new().arg("analyze").fixtures(dir).run_plain();
    let tag = format!("[{code}]");
    r.stdout
        .lines()
        .chain(r.stderr.lines())
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

#[test]
fn each_classic_mistake_is_a_finding_naming_the_policy() {
    let f = FixtureCopy::new();
    f.write(POLICIES, &data("mistakes.yaml"));
    let has = |code: &str, needle: &str| {
        let found = findings(f.path(), code);
        assert!(
            found.iter().any(|l| l.contains(needle)),
            "{code} about {needle}: {found:#?}"
        );
    };
    has("MC150", "AuthorizationPolicy atlas/typo-selector");
    has("MC151", "istio-ingress/mesh-only");
    has("MC152", "istio-ingress/mesh-only");
    has(
        "MC153",
        "/atlas-ui%2Fadmin (encoded-slash: only DECODE_AND_MERGE_SLASHES decodes it",
    );
    has("MC154", "VirtualService atlas/nb-rest");
    has("MC155", "RequestAuthentication istio-ingress/jwt");
    // Each finding names only the policy at fault.
    assert!(findings(f.path(), "MC153")
        .iter()
        .all(|l| l.contains("deny-admin")));
    assert!(findings(f.path(), "MC154")
        .iter()
        .all(|l| l.contains("atlas/nb-rest")));
}

/// A DENY on a `{*}` template at the gateway, behind the seed's `/atlas-rest` prefix
/// route.
const DENY_TEMPLATE: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-item-admin\n  namespace: istio-ingress\nspec:\n  selector:\n    matchLabels:\n      istio: my-ingress-gateway\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/atlas-rest/{*}/admin\"]\n";

#[test]
fn a_deny_on_a_template_is_probed_with_the_attack_spellings() {
    let f = FixtureCopy::new();
    f.write(POLICIES, DENY_TEMPLATE);
    let found = findings(f.path(), "MC153");
    let about = |spelling: &str| found.iter().any(|l| l.contains(spelling));
    // Under BASE the route on /atlas-rest takes the inner doubled slash past it, and
    // no setting adds the trailing slash the template misses.
    assert!(
        about("but /atlas-rest//x/admin (inner-double-slash"),
        "{found:#?}"
    );
    assert!(
        about("but /atlas-rest/x/admin/ (trailing-slash"),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .all(|l| l.contains("denies /atlas-rest/{*}/admin")),
        "{found:#?}"
    );
    // Merged slashes close the first; the second stays.
    f.write(
        "05-mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: MERGE_SLASHES\n",
    );
    let found = findings(f.path(), "MC153");
    assert!(
        !found.iter().any(|l| l.contains("inner-double-slash")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|l| l.contains("(trailing-slash")),
        "{found:#?}"
    );
}

#[test]
fn the_mistakes_fixed_leave_no_finding() {
    let f = FixtureCopy::new();
    f.write(POLICIES, &data("mistakes.yaml"));
    // Paths decoded and merged, the DENY a prefix (an exact path misses its trailing
    // slash), remote addresses, a selector that matches, and /atlas-rest allowed.
    f.write(
        "05-mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: DECODE_AND_MERGE_SLASHES\n",
    );
    f.replace(POLICIES, "        notNamespaces: [\"atlas\"]\n", "");
    f.replace(
        POLICIES,
        "paths: [\"/atlas-ui/admin\"]",
        "paths: [\"/atlas-ui/admin*\"]",
    );
    f.replace(
        POLICIES,
        "ipBlocks: [\"192.0.2.0/24\"]",
        "remoteIpBlocks: [\"192.0.2.0/24\"]",
    );
    f.replace(POLICIES, "app: atlas-uii", "app: atlas-ui");
    f.replace(
        POLICIES,
        "\"/atlas-ui*\", \"/authz*\"",
        "\"/atlas-ui*\", \"/authz*\", \"/atlas-rest*\"",
    );
    // A token required where one is read.
    f.replace(
        POLICIES,
        "        paths: [\"/authz/internal*\"]\n",
        "        paths: [\"/authz/internal*\"]\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/atlas-rest/partner*\"]\n",
    );
    for code in ["MC150", "MC151", "MC152", "MC153", "MC154", "MC155"] {
        assert_eq!(findings(f.path(), code), Vec::<String>::new(), "{code}");
    }
}

#[test]
fn the_shipped_fixtures_and_examples_have_no_authorization_finding() {
    for d in ["fixtures/ingress", "fixtures/ingress-gateway-api"] {
        for code in ["MC150", "MC151", "MC152", "MC153", "MC154"] {
            assert_eq!(
                findings(&root().join(d), code),
                Vec::<String>::new(),
                "{d} {code}"
            );
        }
    }
    // Each example as its suite loads it (its base and its own directory).
    let mut suites = Vec::new();
    for base in ["examples", "examples/gateway-api"] {
        for e in std::fs::read_dir(root().join(base)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                suites.push(p);
            }
        }
    }
    assert!(suites.len() > 10, "{suites:?}");
    for s in suites {
        let r = Run::new().arg("analyze").arg("--suite").arg(&s).run_plain();
        for code in ["MC150", "MC151", "MC152", "MC153", "MC154", "MC155"] {
            let tag = format!("[{code}]");
            assert!(
                !r.stdout.contains(&tag) && !r.stderr.contains(&tag),
                "{} {code}\n{}\n{}",
                s.display(),
                r.stdout,
                r.stderr
            );
        }
    }
}

/// A route that needs a JWT claim (`@request.auth.claims.groups`), before atlas-ui's.
fn claims_route(f: &FixtureCopy) {
    f.replace(
        "40-virtualservices.yaml",
        "  http:\n  - name: atlas-ui\n",
        "  http:\n  - name: atlas-ui-admins\n    match:\n    - uri:\n        prefix: /atlas-ui/admin\n      headers:\n        \"@request.auth.claims.groups\":\n          exact: admins\n        x-real:\n          prefix: a\n    route:\n    - destination:\n        host: authz\n        port:\n          number: 80\n  - name: atlas-ui\n",
    );
}

#[test]
fn a_claim_condition_is_read_from_the_token_not_from_a_header_of_that_name() {
    let c = Case {
        fixtures: FixtureCopy::new(),
        suite: data("claims.suite.yaml"),
    };
    claims_route(&c.fixtures);
    c.fails_exactly(&[]);
    // Read as an ordinary header (what meshcheck did before), the request would take
    // the claim route.
    c.fixtures.replace(
        "40-virtualservices.yaml",
        "\"@request.auth.claims.groups\"",
        "\"x-groups\"",
    );
    let c2 = Case {
        fixtures: c.fixtures,
        suite: data("claims.suite.yaml"),
    };
    c2.fails_exactly(&["claims::no-token-not-routed-by-claim"]);
}

/// The spellings fixture set under meshConfig pathNormalization `mode` (None: no
/// mesh config, Istio's default BASE).
fn spellings(mode: Option<&str>) -> Case {
    let c = Case::of("spellings");
    if let Some(mode) = mode {
        c.fixtures.write(
            "05-mesh.yaml",
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: {mode}\n"),
        );
    }
    c
}

#[test]
fn a_deny_on_a_whole_route_holds_against_every_spelling_under_the_default_normalization() {
    // BASE leaves a doubled slash: after /atlas-rest/ (a route) it slips past the DENY
    // on /atlas-rest/admin*; /admin* closes a whole route, so every spelling stays out.
    spellings(None).fails_exactly(&["nb-rest-admin::closed::inner-double-slash"]);
}

#[test]
fn merging_slashes_closes_every_spelling() {
    spellings(Some("MERGE_SLASHES")).fails_exactly(&[]);
}

#[test]
fn without_normalization_the_attack_finds_the_bypass() {
    spellings(Some("NONE")).fails_exactly(&[
        "nb-rest-admin::closed::inner-dot-segment",
        "nb-rest-admin::closed::inner-dot-dot-segment",
        "nb-rest-admin::closed::inner-double-slash",
    ]);
}

#[test]
fn a_claim_condition_routes_by_the_verified_token_s_claim() {
    let c = Case::of("claims-jwt");
    claims_route(&c.fixtures);
    c.fails_exactly(&[]);
    // The claim condition on another claim: the admins token no longer matches it.
    c.fixtures.replace(
        "40-virtualservices.yaml",
        "\"@request.auth.claims.groups\"",
        "\"@request.auth.claims.roles\"",
    );
    c.fails_exactly(&["claims::admins-token-routed-by-claim"]);
}

#[test]
fn each_when_attribute_and_peer_identity_denies_what_it_names() {
    Case::of("when").fails_exactly(&[]);
}

#[test]
fn a_when_value_or_peer_identity_read_otherwise_changes_exactly_its_checks() {
    let c = Case::of("when");
    c.breaks("values: [\"127.0.0.55\"]", "values: [\"127.0.0.1\"]")
        .breaks("values: [\"127.0.0.56\"]", "values: [\"127.0.0.57\"]")
        .breaks("values: [\"8080\"]", "values: [\"80\"]")
        .breaks("values: [\"blocked-aud\"]", "values: [\"fine-aud\"]")
        .breaks("values: [\"blocked-app\"]", "values: [\"fine-app\"]")
        .breaks("{ notPrincipals: [\"*\"] }", "{ principals: [\"*\"] }")
        .breaks(
            "{ namespaces: [\"atlas\"] }",
            "{ notNamespaces: [\"atlas\"] }",
        )
        .breaks(
            "{ serviceAccounts: [\"atlas/atlas-ui\"] }",
            "{ notServiceAccounts: [\"atlas/atlas-ui\"] }",
        )
        .breaks(
            "{ trustDomains: [\"cluster.local\"] }",
            "{ notTrustDomains: [\"cluster.local\"] }",
        )
        .breaks(
            "{ key: source.principal, values: [\"*\"] }",
            "{ key: source.principal, notValues: [\"*\"] }",
        )
        .breaks(
            "{ key: source.namespace, notValues: [\"atlas\"] }",
            "{ key: source.namespace, values: [\"atlas\"] }",
        )
        .breaks(
            "values: [\"testing@secure.istio.io/blocked-sub\"]",
            "values: [\"testing@secure.istio.io/fine-sub\"]",
        );
    c.fails_exactly(&[
        "source-ip::denied",
        "source-ip::other-allowed",
        "remote-ip::denied",
        "destination-port::denied",
        "audiences::denied",
        "audiences::other-allowed",
        "presenter::denied",
        "presenter::other-allowed",
        "peer::no-principal-denied",
        "peer::namespace-never-external",
        "peer::service-account-never-external",
        "peer::trust-domain-never-external",
        "peer::source-principal-never-external",
        "peer::source-namespace-not-atlas-denied",
        "request-principal::denied",
        "request-principal::other-allowed",
    ]);
}

/// CUSTOM (ext_authz), after Istio's External Authorization task: the stub as Istio's
/// sample authorizer allows /authz/headers with `x-ext-authz: allow` only; other paths
/// never reach it.
#[test]
fn a_custom_policy_asks_the_authorizer_for_its_paths_only() {
    Case::of("ext-authz").fails_exactly(&[]);
}

#[test]
fn without_the_custom_policy_nothing_is_denied() {
    let c = Case::of("ext-authz");
    c.breaks("paths: [\"/authz/headers\"]", "paths: [\"/elsewhere\"]");
    let r = run_suite(&c.fixtures, &c.suite);
    // custom::allowed misses the authorizer's header at the backend: the simulation
    // judges a header it predicts, never one it predicts absent (live only).
    assert_suite_fails_exactly(
        &r,
        &c.suite,
        &["custom::denied", "custom::denied-other-value"],
        &["custom::allowed"],
        &[],
    );
}

#[test]
fn a_header_the_check_request_does_not_carry_is_never_allowed() {
    // Envoy's HTTP check request carries only the client headers
    // includeRequestHeadersInCheck names.
    let c = Case::of("ext-authz");
    c.breaks(
        "includeRequestHeadersInCheck: [\"x-ext-authz\"]",
        "includeRequestHeadersInCheck: [\"x-other\"]",
    );
    c.fails_exactly(&["custom::allowed"]);
}

#[test]
fn an_unknown_provider_denies_what_the_policy_matches() {
    // builder.go: a provider istiod cannot use turns the policy into a DENY filter
    // (`-deny-due-to-bad-CUSTOM-action`): 403 RBAC, not the authorizer's answer.
    let c = Case::of("ext-authz");
    c.breaks(
        "    name: sample-ext-authz-http\n  rules:",
        "    name: no-such-provider\n  rules:",
    );
    c.fails_exactly(&[
        "custom::allowed",
        "custom::denied",
        "custom::denied-other-value",
    ]);
}

#[test]
fn only_the_headers_named_reach_the_backend_from_the_authorizer() {
    let c = Case::of("ext-authz");
    c.breaks(
        "        headersToUpstreamOnAllow: [\"x-ext-authz-check-result\"]\n",
        "",
    );
    let r = run_suite(&c.fixtures, &c.suite);
    // The header predicted absent is not judged by the simulation (live only).
    assert_suite_fails_exactly(&r, &c.suite, &[], &["custom::allowed"], &[]);
}

#[test]
fn every_http_provider_field_is_written_as_istiod_writes_it() {
    // Compared with istiod whole (MC408) when the test ends: durations, the status enum,
    // header lists, the added check headers (sorted), the body settings.
    let c = Case::of("ext-authz");
    c.breaks(
        "        headersToUpstreamOnAllow: [\"x-ext-authz-check-result\"]\n",
        "        headersToUpstreamOnAllow: [\"x-ext-authz-check-result\", \"x-up-*\"]\n        timeout: 0.5s\n        statusOnError: \"503\"\n        failOpen: true\n        pathPrefix: /check\n        headersToDownstreamOnDeny: [\"*-result\"]\n        headersToDownstreamOnAllow: [x-a]\n        includeAdditionalHeadersInCheck: {x-b: \"2\", x-a: \"1\"}\n        includeRequestBodyInCheck: {maxRequestBytes: 100, packAsBytes: true}\n",
    );
    c.fails_exactly(&[]);
}

#[test]
fn a_dry_run_custom_policy_is_refused_as_istio_s_validation_refuses_it() {
    // checkDryRunAnnotation: istio.io/dry-run is for ALLOW and DENY only; the policy is
    // not taken (MC304), so nothing asks the authorizer.
    let c = Case::of("ext-authz");
    c.breaks(
        "  name: ext-authz\n  namespace: istio-ingress\n",
        "  name: ext-authz\n  namespace: istio-ingress\n  annotations:\n    istio.io/dry-run: \"true\"\n",
    );
    let r = run_suite(&c.fixtures, &c.suite);
    // custom::allowed misses the authorizer's header: not judged by the simulation.
    assert_suite_fails_exactly(
        &r,
        &c.suite,
        &["custom::denied", "custom::denied-other-value"],
        &["custom::allowed"],
        &["static::fields"],
    );
}

#[test]
fn custom_is_asked_before_a_deny_policy_on_the_same_path() {
    // listener_builder.go: CUSTOM's filters come first, then DENY: a request the
    // authorizer refuses gets its answer, one it lets through meets the DENY policy.
    let c = Case::of("ext-authz");
    let text = c.fixtures.read(POLICIES);
    c.fixtures.write(
        POLICIES,
        &format!("{text}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-headers\n  namespace: istio-ingress\nspec:\n  selector:\n    matchLabels:\n      istio: my-ingress-gateway\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/authz/headers\"]\n"),
    );
    c.fails_exactly(&["custom::allowed"]);
}
