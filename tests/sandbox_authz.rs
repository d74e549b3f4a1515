//! Security policy on a real API server and a real istiod: `--target sandbox` applies
//! the fixtures' AuthorizationPolicy and RequestAuthentication unchanged (server-side
//! apply, like every other object), istiod turns them into the gateway's RBAC and
//! JWT filters over ADS, and the same suites that pass on the local target pass there
//! (tests/authz.rs, tests/authz_jwt.rs): every operation field, and the JWT rules
//! with their tokens, CUSTOM at the gateway and at nb-rest's sidecars. The sandbox
//! installs Istio with the fixtures' mesh config (their extension providers, their
//! path normalization); an existing cluster whose mesh config differs is refused
//! (tests/sandbox_existing.rs).
//!
//! Skipped (saying why) where the sandbox cannot run, failing under
//! `MESHCHECK_REQUIRE_SANDBOX=1`, as the other sandbox tests.

mod common;
use common::sandbox::available;
use common::*;

/// One sandbox at a time: the machine has 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn data(file: &str) -> String {
    let path = root().join("tests/authz").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seed's ingress plus `policies` (a file of tests/authz/) and `extra` files.
fn fixtures(policies: &str, extra: &[(&str, &str)]) -> FixtureCopy {
    let f = FixtureCopy::new();
    f.write("60-authz.yaml", &data(policies));
    for (name, text) in extra {
        f.write(name, text);
    }
    f
}

fn on_sandbox(f: &FixtureCopy, suite: &str) -> RunResult {
    let suite = f.suite_file(suite);
    Run::new()
        .arg("--suite")
        .arg(suite.path())
        .arg("--target")
        .arg("sandbox")
        .fixtures(f.path())
        .run_plain()
}

#[test]
fn the_policies_apply_unchanged_and_istiod_enforces_what_the_model_predicts() {
    if !available("the sandbox security run") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // CUSTOM's provider comes with the fixtures' mesh config, installed with it; the
    // real gateway and the real sidecars of nb-rest ask the stub authorizer.
    for (policies, suite) in [
        ("operations.yaml", "operations.suite.yaml"),
        ("jwt.yaml", "jwt.suite.yaml"),
        ("ext-authz.yaml", "ext-authz.suite.yaml"),
        ("sidecar-ext-authz.yaml", "sidecar-ext-authz.suite.yaml"),
    ] {
        let f = fixtures(policies, &[]);
        let r = on_sandbox(&f, &data(suite));
        assert_eq!(r.code, 0, "{policies}\n{}\n{}", r.stdout, r.stderr);
        assert!(r.failed.is_empty(), "{policies}: {:?}", r.failed);
        assert!(
            r.passed.iter().any(|c| !c.starts_with("static::")),
            "{policies}: no traffic check ran\n{}",
            r.stdout
        );
    }
}

/// The sandbox installs Istio with the fixtures' mesh config (an IstioOperator
/// overlay whose meshConfig is their `mesh`): with `pathNormalization: NONE` the real
/// gateway lets the same spellings past the DENY as the local target does
/// (tests/authz.rs without_normalization_the_attack_finds_the_bypass); under the
/// installation's default they would be refused and the checks pass.
#[test]
fn the_sandbox_installs_istio_with_the_fixtures_mesh_config() {
    if !available("the sandbox mesh config install") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixtures(
        "spellings.yaml",
        &[(
            "05-mesh.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: NONE\n",
        )],
    );
    let suite = data("spellings.suite.yaml");
    let r = on_sandbox(&f, &suite);
    assert_suite_fails_exactly(
        &r,
        &suite,
        &[
            "nb-rest-admin::closed::inner-dot-segment",
            "nb-rest-admin::closed::inner-dot-dot-segment",
            "nb-rest-admin::closed::inner-double-slash",
        ],
        &[],
        &[],
    );
}
