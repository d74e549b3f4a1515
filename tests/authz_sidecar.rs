//! AuthorizationPolicy on a workload's pods, end to end on the local target: the seed's
//! ingress (fixtures/ingress) plus tests/authz/sidecar.yaml, run with the suite beside
//! it. nb-rest's sidecar enforces the RBAC filters the model writes for its pods, with
//! the gateway's SPIFFE identity as the peer on the mTLS hop and the path after the
//! gateway's rewrite; the simulation predicts each answer; breaking one field fails
//! exactly the checks that show it, live and simulated. tests/authz/sidecar-jwt.yaml:
//! a RequestAuthentication on nb-rest, verified by its sidecar (401 for a bad token;
//! the claim header for the app; the token's principal for its ALLOW policy).

mod common;
use common::*;

use common::policy_case::{data, PolicyCase as Case, POLICIES};

#[test]
fn the_sidecar_lets_in_the_gateway_by_principal_namespace_and_service_account() {
    Case::of("sidecar").fails_exactly(&[]);
}

#[test]
fn each_source_naming_another_identity_shuts_the_gateway_out_of_its_paths() {
    let c = Case::of("sidecar");
    c.breaks("sa/my-ingress-gateway\"]", "sa/other-gateway\"]")
        .breaks("namespaces: [\"istio-ingress\"]", "namespaces: [\"atlas\"]")
        .breaks(
            "serviceAccounts: [\"istio-ingress/my-ingress-gateway\"]",
            "serviceAccounts: [\"istio-ingress/default\"]",
        );
    c.fails_exactly(&[
        "principals::root-allowed",
        "client::forwarded-for-not-trusted",
        "namespaces::items-allowed",
        "service-accounts::orders-allowed",
    ]);
}

#[test]
fn the_sidecar_s_port_is_the_pod_s_not_the_service_s() {
    let c = Case::of("sidecar");
    c.breaks("ports: [\"8080\"]", "ports: [\"80\"]");
    c.fails_exactly(&["namespaces::items-allowed"]);
}

#[test]
fn the_sidecar_s_client_address_is_the_one_the_gateway_appended_not_its_peer() {
    let c = Case::of("sidecar");
    // `ipBlocks` is the connection's peer at the sidecar: the gateway pod.
    c.breaks(
        "remoteIpBlocks: [\"127.0.0.66\"]",
        "ipBlocks: [\"127.0.0.66\"]",
    );
    c.fails_exactly(&["client::client-address-denied"]);
}

#[test]
fn a_wrong_principal_alone_denies_only_its_route() {
    let c = Case::of("sidecar");
    c.breaks("sa/my-ingress-gateway\"]", "sa/other-gateway\"]");
    c.fails_exactly(&[
        "principals::root-allowed",
        "client::forwarded-for-not-trusted",
    ]);
}

#[test]
fn the_sidecar_sees_the_rewritten_path_not_the_client_s() {
    let c = Case::of("sidecar");
    // A DENY on the path after the rewrite (`/atlas-rest` arrives as `/`) denies it;
    // the one on the client's path (`/atlas-rest`) never matched.
    c.breaks("paths: [\"/atlas-rest\", ", "paths: [\"/\", ");
    c.fails_exactly(&[
        "principals::root-allowed",
        "client::forwarded-for-not-trusted",
    ]);
    // Without the DENY on `/secret`, the ALLOW by namespace lets it in.
    c.breaks("\"/atlas-rest/*\", \"/secret\"]", "\"/atlas-rest/*\"]");
    c.fails_exactly(&[
        "principals::root-allowed",
        "client::forwarded-for-not-trusted",
        "deny::rewritten-path-denied",
        "deny::rewritten-path-denied-rbac",
    ]);
}

#[test]
fn over_a_plaintext_hop_the_gateway_has_no_identity() {
    let c = Case::of("sidecar");
    // nb-rest's DestinationRule without mTLS and atlas PERMISSIVE: its sidecar takes
    // the plaintext, and no peer identity matches.
    c.breaks_in(
        "50-destinationrules.yaml",
        "mode: ISTIO_MUTUAL\n  subsets:",
        "mode: DISABLE\n  subsets:",
    )
    .breaks_in(
        "60-peerauthentication.yaml",
        "mode: STRICT",
        "mode: PERMISSIVE",
    );
    c.fails_exactly(&[
        "principals::root-allowed",
        "client::forwarded-for-not-trusted",
        "namespaces::items-allowed",
        "service-accounts::orders-allowed",
    ]);
}

#[test]
fn a_pod_without_a_sidecar_enforces_nothing() {
    let c = Case::of("sidecar");
    // nb-rest not injected (and reached in plaintext: nothing there terminates mTLS):
    // no proxy runs its policies, so every path is open, whoever asks.
    for v in ["v1", "v2"] {
        c.breaks_in(
            "20-backends.yaml",
            &format!("        app: nb-rest\n        version: {v}\n    spec:"),
            &format!("        app: nb-rest\n        version: {v}\n      annotations:\n        sidecar.istio.io/inject: \"false\"\n    spec:"),
        );
    }
    c.breaks_in(
        "50-destinationrules.yaml",
        "mode: ISTIO_MUTUAL\n  subsets:",
        "mode: DISABLE\n  subsets:",
    );
    // The analysis says so (MC112: pods opt out of injection).
    c.fails_exactly_and_findings(
        &[
            "deny::rewritten-path-denied",
            "deny::rewritten-path-denied-rbac",
            "allow::unlisted-path-denied",
            "client::client-address-denied",
        ],
        &["static::injection"],
    );
}

#[test]
fn without_the_policies_every_nb_rest_path_is_open() {
    let c = Case::of("sidecar");
    c.fixtures.write(POLICIES, "# no policy\n");
    c.fails_exactly(&[
        "deny::rewritten-path-denied",
        "deny::rewritten-path-denied-rbac",
        "allow::unlisted-path-denied",
        "client::client-address-denied",
    ]);
}

#[test]
fn the_sidecar_verifies_the_token_the_gateway_passes_on() {
    Case::of("sidecar-jwt").fails_exactly(&[]);
}

#[test]
fn without_the_request_authentication_the_sidecar_knows_no_token() {
    let c = Case::of("sidecar-jwt");
    // The RequestAuthentication for other pods: no JWT filter at nb-rest's sidecar, so
    // no token is refused (401) or verified (the ALLOW policy's principal, the claim
    // header): every tokened request is the policy's 403.
    c.breaks(
        "      app: nb-rest\n  jwtRules:",
        "      app: atlas-ui\n  jwtRules:",
    );
    // `denied: jwt` then fails on the sidecar's RBAC refusal (the other filter).
    c.fails_exactly(&[
        "valid::token-reaches-nb-rest",
        "invalid::unknown-issuer",
        "invalid::unknown-issuer-jwt",
    ]);
}

// ---- the comparison with istiod -------------------------------------------------------

use common::oracle::{error_findings, istiod_with, note_unavailable, oracle};

/// The model's filters for the pods of `app` (index into the mesh's pods).
fn pods_of(mesh: &meshcheck::istio::Mesh, app: &str) -> Vec<usize> {
    mesh.sidecar_authz
        .keys()
        .copied()
        .filter(|&i| mesh.pods[i].labels.get("app").map(String::as_str) == Some(app))
        .collect()
}

#[test]
fn a_sidecar_filter_other_than_istiods_is_an_mc408_naming_the_pod_and_the_field() {
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return;
        }
    };
    let c = Case::of("sidecar-jwt");
    let suite_file = suite_file(&c.suite);
    let suite = meshcheck::suite::load(suite_file.path()).unwrap();
    let (fx, mut mesh, out) = istiod_with(bin, c.fixtures.path(), &suite);
    assert!(
        out.sidecars
            .iter()
            .any(|s| s.pod.starts_with("atlas/nb-rest-")),
        "istiod was asked about nb-rest's sidecars"
    );
    assert_eq!(
        error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    let nb_rest = pods_of(&mesh, "nb-rest");
    assert_eq!(nb_rest.len(), 2);
    // A gateway's JWT filter (clear_route_cache) at a sidecar: istiod leaves it unset.
    for i in &nb_rest {
        let plan = mesh.sidecar_authz.get_mut(i).unwrap();
        plan.jwt.as_mut().unwrap().clear_route_cache = true;
    }
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(
        d.contains("MC408")
            && d.contains("Pod atlas/nb-rest-v1-")
            && d.contains("sidecar inbound filter chain")
            && d.contains("origins-0.clear_route_cache true")
            && d.contains("origins-0.clear_route_cache unset"),
        "{d}"
    );
    // No filter at the sidecar (the policies ignored, the defect this models): the
    // filter lists differ.
    for i in &nb_rest {
        mesh.sidecar_authz.remove(i);
    }
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(
        d.contains("MC408")
            && d.contains("security filters []")
            && d.contains("[jwt_authn, rbac ALLOW]"),
        "{d}"
    );
}

#[test]
fn custom_on_workload_pods_is_said_not_modelled_and_left_out_of_the_comparison() {
    // Main's ext-authz fixture with its CUSTOM policy on nb-rest's pods instead of the
    // gateway's: the sidecars would ask the authorizer, which meshcheck does not model.
    let c = Case::of("sidecar");
    let text = data("ext-authz.yaml").replacen(
        "  namespace: istio-ingress\nspec:\n  selector:\n    matchLabels:\n      istio: my-ingress-gateway\n  action: CUSTOM",
        "  namespace: atlas\nspec:\n  selector:\n    matchLabels:\n      app: nb-rest\n  action: CUSTOM",
        1,
    );
    assert!(text.contains("app: nb-rest\n  action: CUSTOM"));
    c.fixtures.write("70-custom.yaml", &text);
    let fx = meshcheck::fixtures::load_dir(c.fixtures.path()).unwrap();
    let mesh = meshcheck::istio::Mesh::build(&fx);
    assert!(
        mesh.warnings
            .iter()
            .any(|w| w.object == "AuthorizationPolicy atlas/ext-authz"
                && w.message.contains("not modelled")),
        "{:?}",
        mesh.warnings
    );
    // nb-rest's sidecars keep the other policies' filters, and no ext_authz.
    for i in pods_of(&mesh, "nb-rest") {
        let names: Vec<String> = mesh.sidecar_authz[&i]
            .http_filters()
            .iter()
            .map(|f| f["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            names,
            ["envoy.filters.http.rbac", "envoy.filters.http.rbac"]
        );
    }
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return;
        }
    };
    let suite_file = suite_file(&c.suite);
    let suite = meshcheck::suite::load(suite_file.path()).unwrap();
    let (fx, mesh, out) = istiod_with(bin, c.fixtures.path(), &suite);
    // istiod does put the pair there; the comparison leaves it out.
    assert!(out
        .sidecars
        .iter()
        .any(|s| s.pod.starts_with("atlas/nb-rest-")
            && s.inbound
                .iter()
                .any(|h| h.hcm.to_string().contains("envoy.filters.http.ext_authz"))));
    assert_eq!(
        error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
}
