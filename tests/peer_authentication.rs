//! PeerAuthentication end to end on the local target: each fixture set is the seed's
//! ingress (fixtures/ingress) plus one policy file of tests/peer/, with the
//! DestinationRules' tls changed where a case says so. The sidecars take what their
//! mode says per port (STRICT mTLS only, PERMISSIVE both, DISABLE plaintext only), the
//! gateway sends what the DestinationRule or auto mTLS says, and the runs fail exactly
//! the checks whose hop does not fit, live and in the simulation, with the analysis's
//! finding (MC160/MC161 in `static::mtls`). Every fixture set is compared with istiod
//! when the test ends (tests/common/oracle.rs): the clusters' TLS and their endpoints'
//! `tlsMode` (MC404) show the PeerAuthentications reached istiod and that the model
//! reads them as pilot does.

mod common;
use common::*;

/// Where the policies are written in the fixture copy: in place of the seed's own
/// (namespace atlas STRICT).
const POLICIES: &str = "60-peerauthentication.yaml";
const RULES: &str = "50-destinationrules.yaml";

fn data(file: &str) -> String {
    let path = root().join("tests/peer").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seed's fixtures with the policies of tests/peer/`name`.yaml.
fn with(name: &str) -> FixtureCopy {
    let f = FixtureCopy::new();
    f.write(POLICIES, &data(&format!("{name}.yaml")));
    f
}

/// The shipped DestinationRule of `host` (ISTIO_MUTUAL) set to `mode`, or to no `tls`
/// at all (auto mTLS) when None.
fn rule_tls(f: &FixtureCopy, host: &str, mode: Option<&str>) {
    let from = format!("  host: {host}\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n");
    let to = match mode {
        Some(m) => format!("  host: {host}\n  trafficPolicy:\n    tls:\n      mode: {m}\n"),
        None => format!("  host: {host}\n"),
    };
    f.replace(RULES, &from, &to);
}

/// Every shipped DestinationRule without `tls` (auto mTLS everywhere).
fn auto_mtls(f: &FixtureCopy) {
    for host in ["atlas-ui", "authz", "nb-rest"] {
        rule_tls(f, host, None);
    }
}

/// Replaces `from` (which must occur exactly once) by `to` in the policies.
#[track_caller]
fn edit(f: &FixtureCopy, from: &str, to: &str) {
    let text = f.read(POLICIES);
    assert_eq!(text.matches(from).count(), 1, "{from:?} occurs once");
    f.write(POLICIES, &text.replacen(from, to, 1));
}

/// The ingress suite on `f`.
fn ingress(f: &FixtureCopy) -> RunResult {
    Run::new()
        .arg("--target")
        .arg("local")
        .fixtures(f.path())
        .arg("--budget")
        .arg("3s")
        .run()
}

/// authz's route fails, live and simulated, and the analysis says why.
const AUTHZ_FAILS: &[&str] = &[
    "routing::authz",
    "static::simulate::routing::authz",
    "static::mtls",
];

/// The seed's check that a client outside the mesh gets no plaintext answer from any
/// atlas pod: it fails wherever a policy leaves a pod port PERMISSIVE or DISABLE.
const PLAINTEXT_IN: &str = "security::mtls-strict";

/// `fails` and [`PLAINTEXT_IN`].
fn with_plaintext_in(fails: &[&'static str]) -> Vec<&'static str> {
    let mut all = fails.to_vec();
    all.push(PLAINTEXT_IN);
    all
}

/// Nothing in the run was reported as not modelled.
#[track_caller]
fn all_modelled(r: &RunResult) {
    assert!(
        !r.stdout.contains("not modelled") && !r.stderr.contains("not modelled"),
        "something is not modelled\n{}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn a_strict_namespace_passes_the_ingress_suite_over_istio_mtls() {
    let f = with("namespace-strict");
    let r = ingress(&f);
    assert_fails_exactly(&r, &[] as &[&str]);
    all_modelled(&r);
}

#[test]
fn a_strict_namespace_fails_exactly_the_service_its_destination_rule_sends_plaintext() {
    let f = with("namespace-strict");
    rule_tls(&f, "authz", Some("DISABLE"));
    let r = ingress(&f);
    assert_fails_exactly(&r, AUTHZ_FAILS);
    // Live: the gateway's own 503 after the sidecar closed the connection.
    assert!(
        r.stdout
            .contains("got 503: upstream connect error or disconnect/reset before headers. reset reason: connection termination"),
        "{}",
        r.stdout
    );
    // The decision path names the DestinationRule and the PeerAuthentication.
    let rule = format!(
        "DestinationRule atlas/authz ({}:14) tls.mode DISABLE",
        f.path().join(RULES).display()
    );
    let policy = format!(
        "STRICT (PeerAuthentication atlas/default ({}:3) mtls.mode STRICT)",
        f.path().join(POLICIES).display()
    );
    assert!(r.stdout.contains(&rule), "{rule}\n{}", r.stdout);
    assert!(r.stdout.contains(&policy), "{policy}\n{}", r.stdout);
    assert!(
        r.stdout
            .contains("the sidecar closes the connection: 503 (UC)"),
        "{}",
        r.stdout
    );
    // The finding, on the DestinationRule.
    assert!(
        r.stdout.contains("MC160") && r.stdout.contains("tls.mode DISABLE toward authz.atlas.svc.cluster.local port 80, but pod(s) atlas/authz-"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_workload_that_disables_mtls_fails_istio_mutual_toward_it() {
    let f = with("workload-disable");
    let r = ingress(&f);
    assert_fails_exactly(&r, &with_plaintext_in(AUTHZ_FAILS));
    assert!(
        r.stdout
            .contains("retried and the latest reset reason: remote connection failur"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("MC161")
            && r.stdout.contains("but its sidecar takes only plaintext there: DISABLE (PeerAuthentication atlas/authz-plaintext"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_workload_that_disables_mtls_gets_plaintext_from_auto_mtls() {
    // Negative of the above: without the DestinationRule's tls, pilot clears the
    // endpoint's tlsMode metadata (mtls_checker.go), the gateway sends plaintext and
    // authz answers; only the check that wants the gateway's identity at authz fails.
    let f = with("workload-disable");
    rule_tls(&f, "authz", None);
    let r = ingress(&f);
    assert_fails_exactly(&r, &["sidecars::mtls-at-backends", PLAINTEXT_IN]);
    all_modelled(&r);
}

#[test]
fn a_permissive_namespace_takes_mtls_and_plaintext() {
    let f = with("namespace-permissive");
    assert_fails_exactly(&ingress(&f), &[PLAINTEXT_IN]);
    rule_tls(&f, "authz", Some("DISABLE"));
    // Plaintext to authz is taken: authz answers, without the gateway's identity.
    let r = ingress(&f);
    assert_fails_exactly(&r, &["sidecars::mtls-at-backends", PLAINTEXT_IN]);
    all_modelled(&r);
}

#[test]
fn each_hop_gets_what_its_sidecar_mode_answers() {
    let f = with("mixed");
    rule_tls(&f, "authz", Some("DISABLE"));
    rule_tls(&f, "nb-rest", Some("DISABLE"));
    let r = run_suite(&f, &data("mixed.suite.yaml"));
    // The analysis's findings fail static::mtls; every check holds, live and simulated.
    assert_eq!(
        r.failed,
        ["static::mtls".to_string()].into(),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    for c in [
        "strict::plaintext-closed",
        "disable::mtls-refused",
        "permissive::plaintext-taken",
    ] {
        assert!(r.passed.contains(c), "{c}\n{}", r.stdout);
        assert!(
            r.passed.contains(&format!("static::simulate::{c}")),
            "{c}\n{}",
            r.stdout
        );
    }
    all_modelled(&r);
}

#[test]
fn without_the_policies_every_hop_of_the_mixed_case_goes_through() {
    // Negative of the above: the same DestinationRules, Istio's default (PERMISSIVE)
    // everywhere: authz and atlas-ui answer, nb-rest still gets plaintext.
    let f = with("mixed");
    rule_tls(&f, "authz", Some("DISABLE"));
    rule_tls(&f, "nb-rest", Some("DISABLE"));
    f.write(POLICIES, "");
    let r = run_suite(&f, &data("mixed.suite.yaml"));
    let want: std::collections::BTreeSet<String> = [
        "strict::plaintext-closed",
        "disable::mtls-refused",
        "static::simulate::strict::plaintext-closed",
        "static::simulate::disable::mtls-refused",
    ]
    .map(String::from)
    .into();
    assert_eq!(r.failed, want, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.passed.contains("permissive::plaintext-taken"),
        "{}",
        r.stdout
    );
}

#[test]
fn the_namespace_policy_overrides_the_mesh_and_an_unset_workload_policy_inherits_it() {
    // Mesh STRICT, atlas PERMISSIVE, authz UNSET: plaintext to authz is taken.
    let f = with("precedence");
    rule_tls(&f, "authz", Some("DISABLE"));
    let r = ingress(&f);
    assert_fails_exactly(&r, &["sidecars::mtls-at-backends", PLAINTEXT_IN]);
    all_modelled(&r);
}

#[test]
fn without_the_namespace_policy_the_mesh_wide_strict_holds() {
    let f = with("precedence");
    rule_tls(&f, "authz", Some("DISABLE"));
    edit(
        &f,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: atlas\nspec:\n  mtls:\n    mode: PERMISSIVE\n---\n",
        "",
    );
    let r = ingress(&f);
    assert_fails_exactly(&r, AUTHZ_FAILS);
    assert!(
        r.stdout
            .contains("STRICT (PeerAuthentication istio-system/default"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_workload_policy_overrides_its_namespace() {
    // authz's own STRICT beats atlas's PERMISSIVE.
    let f = with("precedence");
    rule_tls(&f, "authz", Some("DISABLE"));
    edit(&f, "    mode: UNSET\n", "    mode: STRICT\n");
    let r = ingress(&f);
    assert_fails_exactly(&r, &with_plaintext_in(AUTHZ_FAILS));
    assert!(
        r.stdout.contains("STRICT (PeerAuthentication atlas/authz"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_workload_policy_reaches_only_the_pods_it_selects() {
    // atlas-ui alone is STRICT: plaintext to atlas-ui and authz fails atlas-ui only.
    let f = with("precedence");
    rule_tls(&f, "authz", Some("DISABLE"));
    rule_tls(&f, "atlas-ui", Some("DISABLE"));
    let r = ingress(&f);
    assert_fails_exactly(
        &r,
        &[
            "routing::atlas-ui",
            "static::simulate::routing::atlas-ui",
            "sidecars::mtls-at-backends",
            PLAINTEXT_IN,
            "static::mtls",
        ],
    );
    assert!(
        r.stdout
            .contains("take only mTLS on port 8080: STRICT (PeerAuthentication atlas/atlas-ui"),
        "{}",
        r.stdout
    );
    // Negative: a selector no pod's labels hold reaches nobody.
    let f = with("precedence");
    rule_tls(&f, "authz", Some("DISABLE"));
    rule_tls(&f, "atlas-ui", Some("DISABLE"));
    edit(
        &f,
        "      app: atlas-ui
",
        "      app: atlas-ui-v2
",
    );
    assert_fails_exactly(&ingress(&f), &["sidecars::mtls-at-backends", PLAINTEXT_IN]);
}

#[test]
fn a_port_level_mode_applies_to_the_workload_port() {
    let f = with("port-level");
    rule_tls(&f, "authz", Some("DISABLE"));
    let r = ingress(&f);
    assert_fails_exactly(&r, &["sidecars::mtls-at-backends", PLAINTEXT_IN]);
    all_modelled(&r);
}

#[test]
fn a_port_level_mode_on_the_service_port_applies_to_nothing() {
    // Negative: 80 is the Service's port; the sidecar's port is 8080, which stays
    // STRICT. The analysis says which port was meant.
    let f = with("port-level");
    rule_tls(&f, "authz", Some("DISABLE"));
    edit(&f, "    8080:\n", "    80:\n");
    let r = ingress(&f);
    assert_fails_exactly(&r, AUTHZ_FAILS);
    assert!(
        r.stdout.contains("MC163")
            && r.stdout.contains(
                "portLevelMtls 80 names the port of Service atlas/authz; pod atlas/authz-"
            ),
        "{}",
        r.stdout
    );
}

#[test]
fn a_port_level_disable_fails_istio_mutual_on_that_port_only() {
    let f = with("port-level");
    edit(&f, "      mode: PERMISSIVE\n", "      mode: DISABLE\n");
    let r = ingress(&f);
    assert_fails_exactly(&r, &with_plaintext_in(AUTHZ_FAILS));
    assert!(
        r.stdout
            .contains("DISABLE (PeerAuthentication atlas/authz-port")
            && r.stdout.contains("portLevelMtls 8080 DISABLE)"),
        "{}",
        r.stdout
    );
}

#[test]
fn auto_mtls_sends_plaintext_into_a_disabled_namespace_even_to_a_strict_workload() {
    let f = with("auto-mtls");
    auto_mtls(&f);
    let r = ingress(&f);
    // Plaintext everywhere (no backend sees the gateway's identity); authz's STRICT
    // sidecar closes it.
    let mut want = AUTHZ_FAILS.to_vec();
    want.push("sidecars::mtls-at-backends");
    want.push(PLAINTEXT_IN);
    assert_fails_exactly(&r, &want);
    assert!(
        r.stdout.contains("no DestinationRule tls: auto mTLS, service mode DISABLE (PeerAuthentication atlas/default"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("MC160")
            && r.stdout.contains(
                "PeerAuthentication atlas/authz-strict: mtls.mode STRICT makes pod(s) atlas/authz-"
            ),
        "{}",
        r.stdout
    );
}

#[test]
fn auto_mtls_into_a_permissive_namespace_reaches_a_strict_workload_over_mtls() {
    // Negative of the above: with atlas PERMISSIVE, auto mTLS sends mTLS to every
    // sidecar and the whole suite passes.
    let f = with("auto-mtls");
    auto_mtls(&f);
    edit(&f, "    mode: DISABLE\n", "    mode: PERMISSIVE\n");
    let r = ingress(&f);
    assert_fails_exactly(&r, &[PLAINTEXT_IN]);
    all_modelled(&r);
}

#[test]
fn peer_authentication_reaches_istiod_and_the_model_agrees_on_each_cluster() {
    // The comparison itself catches a model that ignores PeerAuthentication: the
    // auto-mTLS case with the clusters' TLS and endpoints' tlsMode as they would be
    // without it (auto mTLS, every sidecar labelled) disagrees with istiod (MC404).
    let Ok(bin) = oracle::oracle() else {
        return;
    };
    let f = with("auto-mtls");
    auto_mtls(&f);
    let suite = meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap();
    let (fx, mut mesh, out) = oracle::istiod_with(bin, f.path(), &suite);
    assert_eq!(
        oracle::error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    for c in mesh.clusters.values_mut() {
        assert_eq!(c.tls, meshcheck::istio::UpstreamTls::Disable, "{}", c.name);
        c.tls = meshcheck::istio::UpstreamTls::Auto;
        for e in &mut c.endpoints {
            e.istio_tls = true;
        }
    }
    let found = oracle::error_findings(&fx, &mesh, &suite, &out);
    assert!(
        found.iter().any(
            |f| f.contains("MC404") && f.contains("outbound|80||authz.atlas.svc.cluster.local")
        ),
        "{found:#?}"
    );
}

#[test]
fn policies_istio_refuses_are_left_out_as_istiod_leaves_them_out() {
    // A namespace-wide policy with port-level modes and a mode no enum has: the API
    // server refuses both (MC304), so atlas stays PERMISSIVE and plaintext to authz is
    // taken. istiod refuses the same objects (compared when the fixtures are dropped).
    let f = with("namespace-strict");
    edit(
        &f,
        "    mode: STRICT\n",
        "    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: STRICT\n",
    );
    f.write(
        "61-peer-typo.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: authz\n  namespace: atlas\nspec:\n  selector:\n    matchLabels:\n      app: authz\n  mtls:\n    mode: STRICTT\n",
    );
    rule_tls(&f, "authz", Some("DISABLE"));
    let r = ingress(&f);
    assert_fails_exactly(
        &r,
        &["static::fields", "sidecars::mtls-at-backends", PLAINTEXT_IN],
    );
    for refusal in [
        "PeerAuthentication atlas/default: Istio's validation refuses the object: spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS",
        "PeerAuthentication atlas/authz: Istio's validation refuses the object: spec.mtls.mode: mode \"STRICTT\": expected one of UNSET, DISABLE, PERMISSIVE, STRICT",
    ] {
        assert!(r.stdout.contains(refusal), "{refusal}\n{}", r.stdout);
    }
}

#[test]
fn a_policy_meshcheck_refuses_but_istiod_takes_is_a_disagreement() {
    // The comparison's other direction: the model doctored to refuse an object istiod
    // accepts is told (MC401), so the agreement above is not vacuous.
    let Ok(bin) = oracle::oracle() else {
        return;
    };
    let f = with("namespace-strict");
    let suite = meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap();
    let (mut fx, mesh, out) = oracle::istiod_with(bin, f.path(), &suite);
    assert_eq!(
        oracle::error_findings(&fx, &mesh, &suite, &out),
        Vec::<String>::new()
    );
    fx.refused.push(meshcheck::fixtures::Warning {
        at: meshcheck::fixtures::Source::default(),
        object: "PeerAuthentication atlas/default".into(),
        message: "spec: doctored".into(),
        field: None,
    });
    let found = oracle::error_findings(&fx, &mesh, &suite, &out);
    assert!(
        found.iter().any(|f| f.contains("MC401")
            && f.contains("PeerAuthentication atlas/default: meshcheck refuses this object (spec: doctored); istiod takes it")),
        "{found:#?}"
    );
}
