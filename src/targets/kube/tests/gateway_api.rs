//! The Gateway API on a cluster, against the fake API server: an existing cluster
//! lacking the CRDs is refused (exit 3, naming them and the flag) before anything is
//! applied; with the flag (kind, the sandbox) the CRDs it lacks are applied first and
//! waited for until established, the ones it has left alone; a cluster that has them
//! all gets nothing but the fixtures; and for a managed Gateway the rollout of the
//! Deployment istiod creates is waited for, nothing of istiod's is applied, and the
//! NodePort comes from the Service istiod created (found by its labels), or the run
//! stops naming the Gateway when istiod never creates it.

use super::fake::{FakeApi, RolledOut, FALLBACK};
use crate::fixtures::load_dir;
use crate::istio::Mesh;
use crate::targets::cluster::{deploy, CrdSource, DeployOptions, GatewayApiCrds};
use crate::targets::kube::gateway_api::REQUIRED;
use crate::targets::{Target, TargetError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

const CRD_PATH: &str = r"^/apis/apiextensions\.k8s\.io/v1/customresourcedefinitions/[^/]+$";

fn opts(crds: GatewayApiCrds) -> DeployOptions {
    DeployOptions {
        apply: true,
        namespace_prefix: None,
        image_rewrite: None,
        rollout_timeout: Duration::from_secs(2),
        crd_timeout: Duration::from_secs(5),
        delete_created: false,
        adopt: false,
        revision: None,
        node_port_services: false,
        diagnostics_dir: None,
        gateway_api_crds: crds,
    }
}

/// Installing from `dir` (as the sandbox provides it).
fn install_from(dir: Result<PathBuf, String>) -> GatewayApiCrds {
    GatewayApiCrds::Install(CrdSource::Provided {
        version: "v1.5.1".into(),
        dir,
    })
}

fn require() -> GatewayApiCrds {
    GatewayApiCrds::Require {
        version: "v1.5.1".into(),
    }
}

/// A CRD as the API server shows it once established.
fn crd_json(name: &str) -> Value {
    let (plural, group) = name.split_once('.').unwrap();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": name, "annotations": {"gateway.networking.k8s.io/bundle-version": "v1.5.1"}},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": plural, "kind": plural},
                    "versions": [{"name": "v1", "served": true, "storage": true}]},
           "status": {"conditions": [
               {"type": "NamesAccepted", "status": "True"},
               {"type": "Established", "status": "True"}]}})
}

/// The cluster's CRDs: those present from the start, and those applied (server-side
/// apply answers them established).
struct CrdStore {
    have: Arc<Mutex<BTreeSet<String>>>,
}

impl Respond for CrdStore {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let name = request.url.path().rsplit('/').next().unwrap().to_string();
        let mut have = self.have.lock().unwrap();
        if request.method.as_str() == "PATCH" {
            have.insert(name.clone());
        }
        if have.contains(&name) {
            ResponseTemplate::new(200).set_body_json(crd_json(&name))
        } else {
            ResponseTemplate::new(404).set_body_json(super::fake::status(
                404,
                "NotFound",
                &format!("customresourcedefinitions.apiextensions.k8s.io \"{name}\" not found"),
                json!({"name": name, "group": "apiextensions.k8s.io", "kind": "customresourcedefinitions"}),
            ))
        }
    }
}

fn resource(name: &str, kind: &str, namespaced: bool) -> Value {
    json!({"name": name, "singularName": name.trim_end_matches('s'), "namespaced": namespaced, "kind": kind,
           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
}

/// A fake cluster with `present` CRDs, serving the Gateway API and every
/// Deployment rolled out.
async fn cluster(present: &[&str]) -> (FakeApi, Arc<Mutex<BTreeSet<String>>>) {
    let fake = FakeApi::start().await;
    let have = Arc::new(Mutex::new(
        present
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    ));
    for verb in ["GET", "PATCH"] {
        Mock::given(method(verb))
            .and(path_regex(CRD_PATH))
            .respond_with(CrdStore { have: have.clone() })
            .with_priority(1)
            .mount(&fake.server)
            .await;
    }
    fake.mount_get(
        "/apis/apiextensions.k8s.io/v1",
        json!({"kind": "APIResourceList", "groupVersion": "apiextensions.k8s.io/v1",
               "resources": [resource("customresourcedefinitions", "CustomResourceDefinition", false)]}),
    )
    .await;
    fake.mount_get(
        "/apis/gateway.networking.k8s.io/v1",
        json!({"kind": "APIResourceList", "groupVersion": "gateway.networking.k8s.io/v1",
               "resources": [resource("gatewayclasses", "GatewayClass", false),
                             resource("gateways", "Gateway", true),
                             resource("httproutes", "HTTPRoute", true),
                             resource("referencegrants", "ReferenceGrant", true)]}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
        ))
        .respond_with(RolledOut("x".into()))
        .mount(&fake.server)
        .await;
    (fake, have)
}

/// A Service as the API server shows it, with its NodePorts.
fn service_json(ns: &str, name: &str, labels: Value, ports: &[(u16, u16, &str)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port, np, name)| json!({"name": name, "port": port, "targetPort": port, "nodePort": np, "protocol": "TCP"}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "labels": labels,
                        "managedFields": [{"manager": "meshcheck", "operation": "Apply", "apiVersion": "v1"}]},
           "spec": {"type": "LoadBalancer", "ports": ports}})
}

/// The manual deployment's gateway Service (fixtures/ingress-gateway-api).
async fn serve_manual_gateway_service(fake: &FakeApi) {
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress/services/my-ingress-gateway",
        service_json(
            "istio-ingress",
            "my-ingress-gateway",
            json!({"istio": "my-ingress-gateway"}),
            &[(80, 30080, "http")],
        ),
    )
    .await;
}

/// A directory of CRD manifests for `names` (as scripts/gateway-api-crds.sh prints).
fn crd_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let (plural, group) = name.split_once('.').unwrap();
        std::fs::write(
            dir.path().join(format!("{group}_{plural}.yaml")),
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  annotations:\n    gateway.networking.k8s.io/bundle-version: v1.5.1\n    gateway.networking.k8s.io/channel: standard\n  name: {name}\nspec:\n  group: {group}\n  names:\n    kind: K{plural}\n    plural: {plural}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n"
            ),
        )
        .unwrap();
    }
    dir
}

fn gateway_api_fixtures() -> crate::fixtures::Fixtures {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    load_dir(&root.join("fixtures/ingress-gateway-api")).unwrap()
}

async fn patches(fake: &FakeApi) -> Vec<(String, Value)> {
    fake.requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| {
            (
                r.url.path().to_string(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_on_an_existing_cluster_are_refused_naming_them_and_the_flag() {
    let (fake, _) = cluster(&["grpcroutes.gateway.networking.k8s.io"]).await;
    let fx = gateway_api_fixtures();
    let mesh = Mesh::build(&fx);
    let res = deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(require()),
        None,
    )
    .await;
    let Err(e) = res else {
        panic!("a cluster without the Gateway API CRDs was not refused")
    };
    // Unavailable: exit 3 (environment), not 2.
    assert!(!e.is_bad_input(), "{e}");
    let TargetError::Unavailable { why, .. } = e else {
        panic!("not an environment error: {e}")
    };
    for crd in REQUIRED {
        assert!(why.contains(crd), "{crd} not named: {why}");
    }
    assert!(!why.contains("grpcroutes"), "{why}");
    assert!(why.contains("--install-gateway-api-crds"), "{why}");
    assert!(patches(&fake).await.is_empty(), "nothing may be applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_without_gateway_api_objects_never_look_for_the_crds() {
    let (fake, _) = cluster(&[]).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);
    serve_manual_gateway_service(&fake).await;
    let local = IpAddr::from([127, 0, 0, 1]);
    deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(require()),
        Some(local),
    )
    .await
    .unwrap();
    let crd_calls: Vec<String> = fake
        .requests()
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .filter(|p| p.contains("customresourcedefinitions"))
        .collect();
    assert!(crd_calls.is_empty(), "{crd_calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_the_missing_crds_are_applied_first_and_established() {
    // The cluster has GRPCRoute (someone installed it): left alone.
    let grpc = "grpcroutes.gateway.networking.k8s.io";
    let (fake, have) = cluster(&[grpc]).await;
    serve_manual_gateway_service(&fake).await;
    let mut all: Vec<&str> = REQUIRED.to_vec();
    all.push(grpc);
    let dir = crd_dir(&all);
    let fx = gateway_api_fixtures();
    let mesh = Mesh::build(&fx);
    let target = deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(install_from(Ok(dir.path().to_path_buf()))),
        Some(IpAddr::from([127, 0, 0, 1])),
    )
    .await
    .unwrap();
    let sent = patches(&fake).await;
    let crd_patches: Vec<&(String, Value)> = sent
        .iter()
        .filter(|(p, _)| p.contains("customresourcedefinitions"))
        .collect();
    let names: BTreeSet<&str> = crd_patches
        .iter()
        .map(|(_, b)| b["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, REQUIRED.iter().copied().collect(), "{sent:?}");
    // Applied as published (the bundle-version annotation istiod requires), before
    // any fixture object.
    for (_, b) in &crd_patches {
        assert_eq!(
            b["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"], "v1.5.1",
            "{b}"
        );
    }
    assert!(
        sent[..REQUIRED.len()]
            .iter()
            .all(|(p, _)| p.contains("customresourcedefinitions")),
        "the CRDs go first: {:?}",
        sent.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    // Then the fixtures, Gateway API objects as written.
    assert!(
        sent.iter()
            .any(|(p, _)| p.ends_with("/namespaces/atlas/httproutes/atlas-ui")),
        "{sent:?}"
    );
    assert_eq!(have.lock().unwrap().len(), 5);
    assert_eq!(target.node_port(80), Some(30080));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_that_cannot_be_provided_stop_the_run_with_why() {
    let (fake, _) = cluster(&[]).await;
    let fx = gateway_api_fixtures();
    let mesh = Mesh::build(&fx);
    let res = deploy(
        "sandbox",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(install_from(Err("Go is not installed".into()))),
        None,
    )
    .await;
    let Err(TargetError::Unavailable { why, .. }) = res else {
        panic!("not refused as unavailable")
    };
    assert!(
        why.contains("cannot install the Gateway API CRDs: Go is not installed"),
        "{why}"
    );
    assert!(patches(&fake).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_the_crds_gets_only_the_fixtures() {
    let (fake, _) = cluster(&REQUIRED).await;
    serve_manual_gateway_service(&fake).await;
    let fx = gateway_api_fixtures();
    let mesh = Mesh::build(&fx);
    // Install allowed, but the CRDs must not even be looked for on disk.
    deploy(
        "kind",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(install_from(Err("must not be read".into()))),
        Some(IpAddr::from([127, 0, 0, 1])),
    )
    .await
    .unwrap();
    let sent = patches(&fake).await;
    assert!(
        !sent
            .iter()
            .any(|(p, _)| p.contains("customresourcedefinitions")),
        "{sent:?}"
    );
    assert_eq!(sent.len(), fx.objects.len());
    // And without the flag on an existing cluster, too.
    let (fake, _) = cluster(&REQUIRED).await;
    serve_manual_gateway_service(&fake).await;
    deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(require()),
        Some(IpAddr::from([127, 0, 0, 1])),
    )
    .await
    .unwrap();
}

/// fixtures/ingress-gateway-api with a managed Gateway: no `addresses`, and no
/// gateway Deployment/Service of the fixtures' own (istiod deploys it).
fn managed_fixtures() -> (tempfile::TempDir, crate::fixtures::Fixtures) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root.join("fixtures/ingress-gateway-api")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name == "10-ingress-gateway.yaml" {
            continue;
        }
        let mut text = std::fs::read_to_string(&p).unwrap();
        if name == "30-gateway.yaml" {
            text = text.replace(
                "  addresses:\n  - type: Hostname\n    value: my-ingress-gateway.istio-ingress.svc.cluster.local\n",
                "",
            );
            assert!(!text.contains("  addresses:"), "{text}");
        }
        std::fs::write(dir.path().join(&name), text).unwrap();
    }
    let fx = load_dir(dir.path()).unwrap();
    (dir, fx)
}

/// istiod's Service for the managed Gateway `atlas-gateway`: listed by its labels
/// and read by name.
async fn serve_generated_service(fake: &FakeApi) {
    let labels = json!({"gateway.networking.k8s.io/gateway-name": "atlas-gateway",
                        "gateway.istio.io/managed": "istio.io-gateway-controller"});
    let svc = service_json(
        "istio-ingress",
        "atlas-gateway-istio",
        labels,
        &[(15021, 31021, "status-port"), (80, 31080, "http")],
    );
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/istio-ingress/services"))
        .and(wiremock::matchers::query_param(
            "labelSelector",
            "gateway.networking.k8s.io/gateway-name=atlas-gateway,gateway.istio.io/managed=istio.io-gateway-controller",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": [svc.clone()]}),
        ))
        .mount(&fake.server)
        .await;
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress/services/atlas-gateway-istio",
        svc,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_gateway_is_reached_at_the_nodeport_of_the_service_istiod_created() {
    let (_dir, fx) = managed_fixtures();
    let mesh = Mesh::build(&fx);
    assert!(
        mesh.ingress_services
            .iter()
            .any(|s| s.name == "atlas-gateway-istio"),
        "the model has istiod's Service: {:?}",
        mesh.ingress_services
    );
    let (fake, _) = cluster(&REQUIRED).await;
    serve_generated_service(&fake).await;
    let target = deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(require()),
        Some(IpAddr::from([127, 0, 0, 1])),
    )
    .await
    .unwrap();
    // The live NodePort, not the one the model allocated; also for a request naming
    // the Gateway (`request.gateway`) or istiod's Service.
    assert_eq!(target.node_port(80), Some(31080));
    assert_eq!(
        target.node_port_via("istio-ingress/atlas-gateway", 80),
        Some(31080)
    );
    assert_eq!(
        target.node_port_via("istio-ingress/atlas-gateway-istio", 80),
        Some(31080)
    );
    assert_eq!(target.node_port_via("istio-ingress/other", 80), None);
    let sent = patches(&fake).await;
    assert!(
        !sent.iter().any(|(p, _)| p.contains("atlas-gateway-istio")),
        "istiod's objects are not applied: {sent:?}"
    );
    assert_eq!(sent.len(), fx.objects.len());
    // Its rollout was waited for like the fixtures' own Deployments.
    let gets = fake.calls("GET").await;
    assert!(
        gets.iter()
            .any(|p| p == "/apis/apps/v1/namespaces/istio-ingress/deployments/atlas-gateway-istio"),
        "{gets:?}"
    );
    // Its NodePorts are the run's own, not another Service's.
    assert!(target
        .fixture_services
        .contains(&"istio-ingress/atlas-gateway-istio".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_gateway_whose_service_istiod_never_creates_stops_the_run_naming_it() {
    let (_dir, fx) = managed_fixtures();
    let mesh = Mesh::build(&fx);
    let (fake, _) = cluster(&REQUIRED).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/istio-ingress/services"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": []}),
        ))
        .with_priority(FALLBACK - 1)
        .mount(&fake.server)
        .await;
    let mut o = opts(require());
    o.rollout_timeout = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let res = deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &o,
        Some(IpAddr::from([127, 0, 0, 1])),
    )
    .await;
    let Err(TargetError::Unavailable { why, .. }) = res else {
        panic!("not refused as unavailable")
    };
    assert!(
        why.contains("managed Gateway istio-ingress/atlas-gateway")
            && why.contains("not created yet"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
}
