//! The real thing: the ingress suite on a kind cluster with Istio. Needs a Docker
//! engine; kind and istioctl are provisioned by meshcheck (or taken from the cache /
//! PATH). Run it with:
//!
//!     cargo test --test kind_e2e -- --ignored --nocapture
//!
//! It creates the kind cluster `meshcheck-e2e`, installs the pinned Istio, builds and
//! loads the stub image, applies the fixtures, runs every check over the node's
//! NodePort, and deletes the cluster. `MESHCHECK_ISTIO_VERSION` picks another Istio.

mod common;
use common::*;

#[test]
#[ignore = "needs docker + kind"]
fn ingress_suite_passes_on_kind() {
    let r = Run::new()
        .arg("--target")
        .arg("kind")
        .arg("--cluster-name")
        .arg("meshcheck-e2e")
        .run();
    assert_fails_exactly::<&str>(&r, &[]);
}

#[test]
#[ignore = "needs docker + kind"]
fn a_routing_mistake_fails_on_kind_too() {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        host: atlas-ui\n",
        "        host: authz\n",
    );
    let r = Run::new()
        .fixtures(f.path())
        .arg("--target")
        .arg("kind")
        .arg("--cluster-name")
        .arg("meshcheck-e2e-neg")
        .run();
    assert_fails_exactly(
        &r,
        &["routing::atlas-ui", "static::simulate::routing::atlas-ui"],
    );
}
