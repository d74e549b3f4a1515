//! Security policy on a real API server and a real istiod: `--target sandbox` applies
//! the fixtures' AuthorizationPolicy and RequestAuthentication unchanged (server-side
//! apply, like every other object), istiod turns them into the gateway's RBAC and
//! JWT filters over ADS, and the same suites that pass on the local target pass there
//! (tests/authz.rs, tests/authz_jwt.rs): every operation field, and the JWT rules
//! with their tokens. A fixture set carrying a mesh config that differs from the
//! installation's is refused (exit 3) before anything is applied, naming the field
//! and the `istioctl install --set` that makes them agree.
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
    for (policies, suite) in [
        ("operations.yaml", "operations.suite.yaml"),
        ("jwt.yaml", "jwt.suite.yaml"),
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

#[test]
fn a_mesh_config_the_installation_does_not_have_is_refused_before_anything_is_applied() {
    if !available("the sandbox mesh config refusal") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixtures(
        "spellings.yaml",
        &[(
            "05-mesh.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: MERGE_SLASHES\n",
        )],
    );
    let r = on_sandbox(&f, &data("spellings.suite.yaml"));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "meshConfig.pathNormalization.normalization: fixtures MERGE_SLASHES, cluster BASE"
        ) && r
            .stderr
            .contains("--set meshConfig.pathNormalization.normalization=MERGE_SLASHES"),
        "{}",
        r.stderr
    );
}
