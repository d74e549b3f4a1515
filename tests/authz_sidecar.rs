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

use common::policy_case::{PolicyCase as Case, POLICIES};

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

/// The case's fixtures, model and istiod's answer for its suite; None (said) when no
/// oracle is available.
fn istiod_for(
    c: &Case,
) -> Option<(
    meshcheck::fixtures::Fixtures,
    meshcheck::istio::Mesh,
    meshcheck::oracle::output::Output,
    meshcheck::suite::Suite,
)> {
    let bin = oracle().map_err(note_unavailable).ok()?;
    let suite_file = suite_file(&c.suite);
    let suite = meshcheck::suite::load(suite_file.path()).unwrap();
    let (fx, mesh, out) = istiod_with(bin, c.fixtures.path(), &suite);
    Some((fx, mesh, out, suite))
}

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
    let c = Case::of("sidecar-jwt");
    let Some((fx, mut mesh, out, suite)) = istiod_for(&c) else {
        return;
    };
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
fn a_sidecar_verdict_other_than_istiods_is_an_mc409_naming_the_check_and_the_pod() {
    let c = Case::of("sidecar");
    let Some((fx, mut mesh, out, suite)) = istiod_for(&c) else {
        return;
    };
    // istiod's filters judged on each hop, as the model has the gateway send it: the
    // rewritten path (/secret) denied by name, the gateway's identity let in.
    let verdict = |check: &str| {
        out.sidecar_verdicts
            .iter()
            .find(|v| v.id.starts_with(&format!("{check}@atlas/nb-rest-v1-")))
            .and_then(|v| v.authz.clone())
            .unwrap_or_else(|| panic!("no sidecar verdict for {check}"))
    };
    let secret = verdict("deny::rewritten-path-denied");
    assert!(secret.denied, "{secret:?}");
    assert_eq!(secret.policy, "ns[atlas]-policy[nb-rest-deny]-rule[0]");
    let root = verdict("principals::root-allowed");
    assert!(!root.denied, "{root:?}");
    assert_eq!(
        root.policy,
        "ns[atlas]-policy[nb-rest-from-gateway]-rule[0]"
    );
    assert_eq!(
        error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    // The model's sidecars without their DENY filter: it lets /secret in where istiod
    // denies it.
    for i in pods_of(&mesh, "nb-rest") {
        let plan = mesh.sidecar_authz.get_mut(&i).unwrap();
        plan.rbac.retain(|f| {
            f.rules.as_ref().map(|r| r.action) != Some(meshcheck::istio::authz::rbac::Action::Deny)
        });
    }
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(
        d.contains("MC409")
            && d.contains("check deny::rewritten-path-denied (GET /atlas-rest/secret) at the sidecar of pod atlas/nb-rest-v1-")
            && d.contains("istiod 1.30.3: denied (ns[atlas]-policy[nb-rest-deny]-rule[0])"),
        "{d}"
    );
}

#[test]
fn custom_on_workload_pods_is_compared_whole_with_istiod_s_sidecar_filters() {
    // tests/authz/sidecar-ext-authz.yaml: the CUSTOM policy on nb-rest's pods makes
    // their sidecars' shadow RBAC and ext_authz filters, as it does a gateway's.
    let c = Case::of("sidecar-ext-authz");
    let fx = meshcheck::fixtures::load_dir(c.fixtures.path()).unwrap();
    let mesh = meshcheck::istio::Mesh::build(&fx);
    assert!(
        !mesh
            .warnings
            .iter()
            .any(|w| w.message.contains("not modelled")),
        "{:?}",
        mesh.warnings
    );
    let nb_rest = pods_of(&mesh, "nb-rest");
    assert_eq!(nb_rest.len(), 2);
    for i in &nb_rest {
        let names: Vec<String> = mesh.sidecar_authz[i]
            .http_filters()
            .iter()
            .map(|f| f["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            names,
            ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz"]
        );
    }
    // The provider's cluster exists for the sidecars to call.
    assert!(mesh
        .clusters
        .contains_key("outbound|8000||ext-authz.ext-authz.svc.cluster.local"));
    let Some((fx, mut mesh, out, suite)) = istiod_for(&c) else {
        return;
    };
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
    // Without the pair (CUSTOM ignored at the sidecar, as meshcheck once did): MC408.
    for i in &nb_rest {
        mesh.sidecar_authz.get_mut(i).unwrap().custom.clear();
    }
    let d = error_findings(&fx, &mesh, &suite, &out).join("\n");
    assert!(
        d.contains("MC408") && d.contains("security filters []") && d.contains("ext_authz"),
        "{d}"
    );
}

/// CUSTOM on nb-rest's pods: their sidecar asks the authorizer (the stub as Istio's
/// sample server) about the request as the gateway sends it on.
#[test]
fn custom_on_workload_pods_asks_the_authorizer_from_their_sidecar() {
    Case::of("sidecar-ext-authz").fails_exactly(&[]);
}

#[test]
fn the_sidecar_s_authorizer_is_asked_about_the_rewritten_path() {
    // The client's path never reaches the sidecar: a CUSTOM rule on it asks nothing.
    let c = Case::of("sidecar-ext-authz");
    c.breaks("paths: [\"/checked\"]", "paths: [\"/atlas-rest/checked\"]");
    c.fails_exactly_and_live(
        &["custom::denied", "custom::denied-other-value"],
        &["custom::allowed"],
    );
}

#[test]
fn a_custom_policy_on_another_workload_leaves_nb_rest_unchecked() {
    let c = Case::of("sidecar-ext-authz");
    c.breaks(
        "      app: nb-rest\n  action: CUSTOM",
        "      app: atlas-ui\n  action: CUSTOM",
    );
    c.fails_exactly_and_live(
        &["custom::denied", "custom::denied-other-value"],
        &["custom::allowed"],
    );
}

#[test]
fn the_sidecar_s_check_request_carries_only_the_headers_named() {
    let c = Case::of("sidecar-ext-authz");
    c.breaks(
        "includeRequestHeadersInCheck: [\"x-ext-authz\"]",
        "includeRequestHeadersInCheck: [\"x-other\"]",
    );
    c.fails_exactly(&["custom::allowed"]);
}

// ---- a config push under --control-plane istiod ----------------------------------------

/// A DENY at nb-rest's sidecar on its root path (the gateway's rewrite of
/// `/atlas-rest`), for the pushed answer.
const DENY_ROOT_AT_NB_REST: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-root\n  namespace: atlas\nspec:\n  selector:\n    matchLabels:\n      app: nb-rest\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/\"]\n";

/// The status of `GET path` through the gateway of `target` (HTTP/1.1, one
/// connection), retried until `want` answers or 10 s pass: the last status.
fn status_until(target: &meshcheck::targets::local::LocalTarget, path: &str, want: u16) -> u16 {
    use meshcheck::targets::Target;
    use std::io::{Read, Write};
    let port = target.node_port(80).expect("a NodePort for port 80");
    let addr = std::net::SocketAddr::new(target.node_address(), port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .ok()?;
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
                )
                .ok()?;
                let mut text = String::new();
                s.read_to_string(&mut text).ok()?;
                text.split_whitespace().nth(1)?.parse::<u16>().ok()
            })
            .unwrap_or(0);
        if status == want || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_config_push_gives_the_sidecars_the_new_answers_filters() {
    let Ok(bin) = oracle().map_err(note_unavailable) else {
        return;
    };
    let c = Case::of("sidecar");
    let suite = meshcheck::suite::load(suite_file(&c.suite).path()).unwrap();
    let bin = bin.to_string_lossy().into_owned();
    let answer = |dir: &std::path::Path| {
        let fx = meshcheck::fixtures::load_dir(dir).unwrap();
        let mesh = meshcheck::istio::Mesh::build(&fx);
        let out = meshcheck::oracle::ask(&bin, &fx, &mesh, &suite, true).unwrap();
        (mesh, out)
    };
    let (mesh, before) = answer(c.fixtures.path());
    c.fixtures.write("70-deny-root.yaml", DENY_ROOT_AT_NB_REST);
    let (_, after) = answer(c.fixtures.path());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut opts =
        meshcheck::targets::local::LocalOptions::new(vec![
            env!("CARGO_BIN_EXE_meshcheck-stub").into()
        ]);
    opts.istiod = Some(std::sync::Arc::new(before));
    let target = meshcheck::targets::local::LocalTarget::start(mesh, &opts).unwrap();
    // istiod's first answer lets the gateway in at nb-rest's root.
    assert_eq!(status_until(&target, "/atlas-rest", 200), 200);
    // The second one's DENY is at nb-rest's sidecar alone: pushed, it refuses there
    // (the gateway's own filters are unchanged; /atlas-ui stays open).
    target
        .push_istiod_config(&after, std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(status_until(&target, "/atlas-rest", 403), 403);
    assert_eq!(status_until(&target, "/atlas-ui", 200), 200);
    // The same answer again changes no listener: nothing to wait for.
    target
        .push_istiod_config(&after, std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(status_until(&target, "/atlas-rest", 403), 403);
}
