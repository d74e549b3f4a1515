//! RequestAuthentication at the ingress, end to end on the local target: each fixture
//! set is the seed's ingress (fixtures/ingress) plus one policy file of tests/authz/
//! (jwt*.yaml), run with the suite beside it, whose requests carry tokens minted at load
//! with Istio's sample key (src/token.rs). It passes (the gateway Envoy enforces the
//! jwt_authn filter the model writes, the RBAC filters read its payload, and the
//! simulation predicts each answer), and breaking one field of a rule fails exactly the
//! checks that show it. Every fixture set is compared with istiod when the test ends
//! (tests/common/oracle.rs): the JWT and RBAC filters whole (MC408) and the routes.

mod common;
use common::*;

use common::policy_case::{PolicyCase as Case, POLICIES};

#[test]
fn every_rule_field_verifies_reads_and_hands_on_as_envoy_does() {
    Case::of("jwt").fails_exactly(&[]);
}

#[test]
fn without_the_audience_a_token_for_someone_else_gets_in() {
    let c = Case::of("jwt");
    c.breaks("    audiences: [\"atlas-partner\"]\n", "");
    c.fails_exactly(&["audience::partner-wrong-audience"]);
}

#[test]
fn another_header_prefix_reads_no_token_there() {
    let c = Case::of("jwt");
    c.breaks("prefix: \"Token \"", "prefix: \"Bearer \"");
    c.fails_exactly(&[
        "audience::partner-wrong-audience",
        "partner::header-with-prefix",
    ]);
}

#[test]
fn without_the_param_and_cookie_locations_those_tokens_are_not_read() {
    let c = Case::of("jwt");
    c.breaks("    fromParams: [\"partner_token\"]\n", "")
        .breaks("    fromCookies: [\"partner_session\"]\n", "");
    c.fails_exactly(&["partner::query-param", "partner::cookie"]);
}

#[test]
fn the_default_locations_are_bearer_and_access_token_only_without_others() {
    // Given a location, the rule no longer reads `Authorization: Bearer` or
    // `access_token`.
    let c = Case::of("jwt");
    c.breaks(
        "    outputPayloadToHeader: x-jwt-payload\n",
        "    outputPayloadToHeader: x-jwt-payload\n    fromParams: [\"token\"]\n",
    );
    c.fails_exactly_and_live(
        &[
            "valid::access-token-param",
            "claims::admins",
            // Tokens nobody reads pass the JWT filter.
            "invalid::expired",
            "invalid::wrong-key",
            "invalid::unknown-issuer",
            "invalid::not-a-jwt",
            "partner::bearer-refused",
        ],
        // Through, but without the payload and claim headers.
        &["valid::bearer-reaches-backend"],
    );
}

#[test]
fn an_unforwarded_token_and_missing_outputs_do_not_reach_the_backend() {
    let c = Case::of("jwt");
    c.breaks("    forwardOriginalToken: true\n", "")
        .breaks("    outputPayloadToHeader: x-jwt-payload\n", "")
        .breaks(
            "    - header: x-jwt-sub\n      claim: sub\n    - header: x-jwt-team\n      claim: team\n",
            "    - header: x-jwt-team\n      claim: sub\n",
        );
    c.fails_exactly_and_live(
        // x-jwt-team is the subject (and x-jwt-sub and x-jwt-payload are missing).
        &["valid::bearer-reaches-backend"],
        &[
            // The client's x-jwt-sub and x-jwt-payload are no output: not dropped.
            "missing::spoofed-outputs-dropped",
            // The token's header is removed.
            "partner::header-with-prefix",
        ],
    );
}

#[test]
fn a_jwks_without_the_signing_key_refuses_every_token_of_its_issuer() {
    let c = Case::of("jwt");
    let fail_closed: serde_json::Value =
        serde_json::from_str(meshcheck::istio::authz::jwt::PUBLIC_ONLY_JWKS).unwrap();
    // The first rule's (the sample issuer's) JWKS only: what istiod inlines when it
    // cannot fetch a jwksUri.
    let text = c.fixtures.read(POLICIES);
    assert_eq!(
        text.matches(meshcheck::istio::authz::jwt::ISTIO_SAMPLE_JWKS)
            .count(),
        2
    );
    c.fixtures.write(
        POLICIES,
        &text.replacen(
            meshcheck::istio::authz::jwt::ISTIO_SAMPLE_JWKS,
            &fail_closed.to_string(),
            1,
        ),
    );
    c.fails_exactly(&[
        "valid::bearer-reaches-backend",
        "valid::access-token-param",
        "claims::admins",
        "claims::users",
    ]);
}

#[test]
fn principals_and_claims_in_the_policy_read_the_verified_payload() {
    let c = Case::of("jwt");
    // The subject (the issuer, by default) is not bob; the claim is `groups`.
    c.breaks(
        "requestPrincipals: [\"testing@secure.istio.io/*\"]",
        "requestPrincipals: [\"testing@secure.istio.io/bob\"]",
    )
    .breaks("request.auth.claims[groups]", "request.auth.claims[group]");
    c.fails_exactly(&["valid::access-token-param", "claims::admins"]);
}

#[test]
fn a_token_expired_within_envoys_clock_skew_still_passes() {
    // jwt_authn allows 60 s past `exp` (source/common/jwt jwt.cc verifyTimeConstraint).
    let mut c = Case::of("jwt");
    c.asks("expires_in: -5m", "expires_in: -20s");
    c.fails_exactly(&["invalid::expired"]);
}

#[test]
fn istios_sample_jwks_uri_is_inlined_as_istiod_does_once_fetched() {
    // istiod as the local control plane runs offline (the oracle's network is a closed
    // proxy): it cannot fetch the URI, so it inlines the fail-closed JWKS and refuses
    // every token, which is what the other jwksUri test shows. The model's answer (the
    // sample JWKS, as a connected istiod inlines it) is judged with the model only.
    if std::env::var("MESHCHECK_CONTROL_PLANE").as_deref() == Ok("istiod") {
        eprintln!("note: the sample jwksUri run is the model's only: istiod here is offline");
        return;
    }
    let c = Case::of("jwt-uri");
    c.fails_exactly(&[]);
    let r = run_suite(&c.fixtures, &c.suite);
    assert!(
        r.stderr.contains("is Istio's sample JWKS") || r.stdout.contains("is Istio's sample JWKS"),
        "the jwksUri is warned about\n{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// An unknown jwksUri: istiod (offline here) inlines its fail-closed JWKS, meshcheck
/// the JWKS of its served key; neither holds Istio's sample key, so the suite's
/// tokens of that key are refused either way.
#[test]
fn an_unknown_jwks_uri_refuses_tokens_of_istios_sample_key() {
    let c = Case::of("jwt-uri");
    c.breaks(
        "https://raw.githubusercontent.com/istio/istio/release-1.30/security/tools/jwt/samples/jwks.json",
        "https://idp.example.com/.well-known/jwks.json",
    );
    c.fails_exactly(&["uri::valid"]);
}

#[test]
fn an_unknown_jwks_uri_takes_the_tokens_minted_with_the_key_meshcheck_serves_for_it() {
    // istiod here is offline (it inlines its fail-closed JWKS): the served key is the
    // local target's and the model's alone, judged with the model only.
    if std::env::var("MESHCHECK_CONTROL_PLANE").as_deref() == Ok("istiod") {
        eprintln!("note: the served-jwks run is the model's only: istiod here is offline");
        return;
    }
    let mut c = Case::of("jwt-uri");
    c.breaks(
        "https://raw.githubusercontent.com/istio/istio/release-1.30/security/tools/jwt/samples/jwks.json",
        "https://idp.example.com/.well-known/jwks.json",
    );
    c.asks(
        "token: { issuer: testing@secure.istio.io } }",
        "token: { issuer: testing@secure.istio.io, key: served } }",
    );
    c.asks("expires_in: -2m }", "expires_in: -2m, key: served }");
    c.fails_exactly(&[]);
    // The served key verifies only where meshcheck serves it: with the rule's JWKS
    // inline (Istio's sample), the same token is refused.
    c.breaks(
        "    jwksUri: https://idp.example.com/.well-known/jwks.json\n",
        &format!(
            "    jwks: '{}'\n",
            meshcheck::istio::authz::jwt::ISTIO_SAMPLE_JWKS.trim()
        ),
    );
    c.fails_exactly(&["uri::valid"]);
}

#[test]
fn a_bad_token_in_the_suite_is_bad_input_naming_the_check() {
    let f = FixtureCopy::new();
    let suite = f.suite_file(
        "name: t\nfixtures: .\ningress: { port: 80 }\npolicy: { allowed_ports: [80] }\nchecks:\n  - { group: g, name: typo, http: { request: { path: /, token: { isuer: x } }, expect: { status: 200 } } }\n",
    );
    let r = Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(f.path())
        .run();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("unknown key `isuer`"), "{}", r.stderr);
    let suite = f.suite_file(
        "name: t\nfixtures: .\ningress: { port: 80 }\npolicy: { allowed_ports: [80] }\nchecks:\n  - { group: g, name: no-key, http: { request: { path: /, token: { issuer: x, key: nowhere.pem } }, expect: { status: 200 } } }\n",
    );
    let r = Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(f.path())
        .run();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("check g::no-key") && r.stderr.contains("nowhere.pem"),
        "{}",
        r.stderr
    );
}

// ---- the comparison with istiod -------------------------------------------------------

use common::oracle::{error_findings, istiod_with, note_unavailable, oracle};

#[test]
fn a_jwt_filter_other_than_istiods_is_an_mc408_naming_the_field() {
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return;
        }
    };
    let c = Case::of("jwt");
    let suite_file = suite_file(&c.suite);
    let suite = meshcheck::suite::load(suite_file.path()).unwrap();
    let (fx, mut mesh, out) = istiod_with(bin, c.fixtures.path(), &suite);
    assert_eq!(
        error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    // Providers by issuer: origins-0 the partner's (forwarded), origins-1 the sample's.
    let jwt = mesh.gateways[0].authz.jwt.as_mut().unwrap();
    assert_eq!(jwt.providers[1].issuer, "testing@secure.istio.io");
    jwt.providers[1].forward = true;
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(
        d.contains("MC408")
            && d.contains("jwt_authn filter.typed_config.providers.origins-1.forward true")
            && d.contains("origins-1.forward unset"),
        "{d}"
    );
    // No JWT filter at all: the filter lists differ.
    mesh.gateways[0].authz.jwt = None;
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(
        d.contains("MC408") && d.contains("[jwt_authn, rbac ALLOW]"),
        "{d}"
    );
}

#[test]
fn a_jwks_uri_s_jwks_is_left_out_of_the_comparison_and_nothing_else() {
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return;
        }
    };
    let c = Case::of("jwt-uri");
    let suite_file = suite_file(&c.suite);
    let suite = meshcheck::suite::load(suite_file.path()).unwrap();
    let (fx, mut mesh, out) = istiod_with(bin, c.fixtures.path(), &suite);
    assert_eq!(
        error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    let p = &mut mesh.gateways[0].authz.jwt.as_mut().unwrap().providers[0];
    p.jwks = "{\"keys\": []}".into();
    assert_eq!(
        error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    let p = &mut mesh.gateways[0].authz.jwt.as_mut().unwrap().providers[0];
    p.audiences = vec!["x".into()];
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(d.contains("MC408") && d.contains("audiences"), "{d}");
}

#[test]
fn istiods_own_filters_on_the_local_envoy_answer_the_suite_the_same() {
    // istiod's config (its JWT filter included) served to the local gateway Envoy.
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return;
        }
    };
    let c = Case::of("jwt");
    let suite = c.fixtures.suite_file(&c.suite);
    let r = Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(c.fixtures.path())
        .arg("--control-plane")
        .arg("istiod")
        .arg("--oracle")
        .arg(bin)
        .arg("--budget")
        .arg("3s")
        .run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
}
