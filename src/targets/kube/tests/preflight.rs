//! What a bring-up checks before it applies anything, against the fake API server:
//! a revision-only Istio (no default injector) is refused unless `--revision` names a
//! revision that has one; `--revision` relabels the namespaces; a Terminating
//! namespace is refused. Nothing is applied when refused. And where the checks will
//! reach the gateway: a load balancer's address before a node's; `--service-type NodePort`.

use super::fake::{injector_list, FakeApi};
use crate::fixtures::load_dir;
use crate::istio::Mesh;
use crate::targets::cluster::{deploy, DeployOptions};
use crate::targets::TargetError;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn opts(revision: Option<&str>) -> DeployOptions {
    DeployOptions {
        apply: true,
        namespace_prefix: None,
        image_rewrite: None,
        rollout_timeout: Duration::from_millis(500),
        crd_timeout: Duration::from_secs(5),
        delete_created: false,
        adopt: false,
        revision: revision.map(str::to_string),
        node_port_services: false,
        diagnostics_dir: None,
        gateway_api_crds: crate::targets::cluster::GatewayApiCrds::Require {
            version: "v1.5.1".into(),
        },
    }
}

/// Deploys the ingress fixtures on `fake`: the error (if any) and the PATCH bodies sent.
async fn bring_up(fake: &FakeApi, revision: Option<&str>) -> (Option<String>, Vec<Value>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        deploy(
            "existing",
            fake.client.clone(),
            &fx,
            &mesh,
            &opts(revision),
            None,
        ),
    )
    .await;
    let err = match res {
        Ok(Err(TargetError::Unavailable { why, .. })) => Some(why),
        Ok(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let patches = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    (err, patches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_only_istio_is_refused_before_anything_is_applied() {
    let fake = FakeApi::start().await;
    fake.serve_webhooks(injector_list(&[(
        "rev.namespace.sidecar-injector.istio.io",
        "1-30-3",
    )]))
    .await;
    let (err, patches) = bring_up(&fake, None).await;
    let err = err.expect("refused");
    assert!(
        err.contains("no default sidecar injector") && err.contains("1-30-3"),
        "{err}"
    );
    assert!(patches.is_empty(), "{patches:?}");
    let (err, patches) = bring_up(&fake, Some("canary")).await;
    assert!(err.expect("refused").contains("--revision canary"));
    assert!(patches.is_empty(), "{patches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_labels_the_namespaces_for_that_revision() {
    let fake = FakeApi::start().await;
    fake.serve_webhooks(injector_list(&[(
        "rev.namespace.sidecar-injector.istio.io",
        "1-30-3",
    )]))
    .await;
    let (_, patches) = bring_up(&fake, Some("1-30-3")).await;
    let atlas = patches
        .iter()
        .find(|p| p["kind"] == "Namespace" && p["metadata"]["name"] == "atlas")
        .expect("atlas applied");
    assert_eq!(
        atlas["metadata"]["labels"]["istio.io/rev"], "1-30-3",
        "{atlas}"
    );
    assert!(
        atlas["metadata"]["labels"].get("istio-injection").is_none(),
        "{atlas}"
    );
    let gateway = patches
        .iter()
        .find(|p| p["kind"] == "Deployment" && p["metadata"]["name"] == "my-ingress-gateway")
        .expect("the gateway applied");
    let labels = &gateway["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["istio.io/rev"], "1-30-3", "{labels}");
    assert_eq!(labels["sidecar.istio.io/inject"], "true", "{labels}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_namespace_is_refused_before_anything_is_applied() {
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/namespaces/atlas",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "atlas", "deletionTimestamp": "2026-12-07T12:00:00Z"},
               "status": {"phase": "Terminating"}}),
    )
    .await;
    let (err, patches) = bring_up(&fake, None).await;
    let err = err.expect("refused");
    assert!(err.contains("Namespace atlas is being deleted"), "{err}");
    assert!(patches.is_empty(), "{patches:?}");
}

/// A gateway Service with `status.loadBalancer.ingress` is reached where clients reach
/// it: the load balancer's address at the Service port, not a node's NodePort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_address_is_preferred_to_the_node_port() {
    use wiremock::matchers::{method, path_regex};
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress/services/my-ingress-gateway",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "my-ingress-gateway", "namespace": "istio-ingress"},
               "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}}),
    )
    .await;
    wiremock::Mock::given(method("GET"))
        .and(path_regex(r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$"))
        .respond_with(|r: &wiremock::Request| {
            let seg: Vec<&str> = r.url.path().split('/').collect();
            wiremock::ResponseTemplate::new(200).set_body_json(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": seg[7], "namespace": seg[5], "generation": 1},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": seg[7]}},
                         "template": {"metadata": {"labels": {"app": seg[7]}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
                "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}}))
        })
        .mount(&fake.server)
        .await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);
    let mut o = opts(None);
    o.apply = false;
    let t = deploy("existing", fake.client.clone(), &fx, &mesh, &o, None)
        .await
        .unwrap();
    use crate::targets::Target;
    assert_eq!(t.node_address(), std::net::IpAddr::from([127, 0, 0, 9]));
    assert_eq!(t.node_port(80), Some(80));
    // --node-address wins over it: the NodePort at the given address.
    let t = deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &o,
        Some([127, 0, 0, 1].into()),
    )
    .await
    .unwrap();
    assert_eq!(t.node_address(), std::net::IpAddr::from([127, 0, 0, 1]));
    assert_eq!(t.node_port(80), Some(30080));
}

/// `--service-type NodePort`: the fixtures' LoadBalancer Services are applied as
/// NodePort (no cloud load balancer provisioned for the stubs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_type_node_port_applies_load_balancers_as_node_ports() {
    let fake = FakeApi::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);
    let mut o = opts(None);
    o.node_port_services = true;
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        deploy("existing", fake.client.clone(), &fx, &mesh, &o, None),
    )
    .await;
    let services: Vec<Value> = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path().contains("/services/"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let gw = services
        .iter()
        .find(|s| s["metadata"]["name"] == "my-ingress-gateway")
        .expect("applied");
    assert_eq!(gw["spec"]["type"], "NodePort", "{gw}");
}
