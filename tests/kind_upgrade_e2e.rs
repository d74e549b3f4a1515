//! The real upgrade: the ingress suite before, during and after an Istio upgrade on
//! a kind cluster, under steady traffic. Needs a Docker engine; kind and both
//! istioctls are provisioned by meshcheck (or taken from the cache / PATH). Run it
//! with:
//!
//!     cargo test --test kind_upgrade_e2e -- --ignored --nocapture
//!
//! It creates the kind cluster `meshcheck-upgrade-e2e` with Istio 1.29.6 (the
//! previous minor), applies the fixtures, runs the suite (`before`), upgrades the
//! control plane to the pinned 1.30.3 (`skew`: new istiod, old proxies), restarts
//! the gateway and the workloads (`after`), and deletes the cluster.
//! `MESHCHECK_UPGRADE_STRATEGY=canary` runs the canary strategy instead of in place.

mod common;
use common::*;
use meshcheck::report::compare::{read, Case, Verdict};
use std::collections::BTreeSet;

fn upgrade_on_kind(strategy: &str) -> (RunResult, Vec<Case>) {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let r = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("kind")
        .arg("--cluster-name")
        .arg("meshcheck-upgrade-e2e")
        .arg("--from")
        .arg("1.29.6")
        .arg("--to")
        .arg("1.30.3")
        .arg("--strategy")
        .arg(strategy)
        .arg("--suite")
        .arg("ingress")
        .arg("--junit")
        .arg(&junit)
        .run_plain();
    let cases = read(&junit).unwrap_or_else(|e| {
        panic!(
            "no JUnit report ({e}); exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            r.code, r.stdout, r.stderr
        )
    });
    (r, cases)
}

#[test]
#[ignore = "needs docker + kind"]
fn upgrade_from_the_previous_minor_passes_on_kind() {
    let strategy = std::env::var("MESHCHECK_UPGRADE_STRATEGY").unwrap_or("in-place".into());
    let (r, cases) = upgrade_on_kind(&strategy);
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| c.verdict == Verdict::Failed)
        .map(|c| format!("{}: {} ({})", c.testsuite, c.display(), c.message))
        .collect();
    assert!(
        r.code == 0 && failed.is_empty(),
        "exit {}; failed: {failed:#?}\n--- stderr ---\n{}",
        r.code,
        r.stderr
    );
    let suites: BTreeSet<&str> = cases.iter().map(|c| c.testsuite.as_str()).collect();
    for s in ["before", "skew", "after", "upgrade"] {
        assert!(suites.contains(s), "no testsuite {s}: {suites:?}");
        assert!(
            cases
                .iter()
                .any(|c| c.testsuite == s && c.verdict == Verdict::Passed),
            "nothing passed in testsuite {s}"
        );
    }
    let passed = |name: &str| {
        cases.iter().any(|c| {
            c.testsuite == "upgrade"
                && (c.display() == format!("upgrade::{name}") || c.name == name)
                && c.verdict == Verdict::Passed
        })
    };
    assert!(passed("traffic-continuity"), "{cases:#?}");
    assert!(passed("precheck"), "{cases:#?}");
}
