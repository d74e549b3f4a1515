//! The whole cluster-target path short of kind/istioctl/docker: the fixtures are
//! applied to a fake API server, rollouts and the gateway Service's NodePort are read
//! from it, and the suite's traffic checks run against a real data plane (the local
//! target's Envoys) at the node address the fake API reports. Then cleanup deletes
//! exactly what the run created.

use super::fake::{FakeApi, RolledOut};
use crate::fixtures::load_dir;
use crate::istio::Mesh;
use crate::targets::cluster::{deploy, DeployOptions};
use crate::targets::local::{LocalOptions, LocalTarget};
use crate::targets::{PodInfo, Target};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{method, path_regex};
use wiremock::Mock;

/// A Pod object as the API would show the local target's pod.
fn pod_json(p: &PodInfo) -> Value {
    let spec = |cs: &[crate::targets::ContainerInfo]| -> Vec<Value> {
        cs.iter()
            .map(|c| {
                let mut v = json!({"name": c.name, "image": c.image});
                if c.name != "istio-proxy" && c.name != "istio-init" {
                    let ports: Vec<Value> = p
                        .ports
                        .iter()
                        .map(|port| json!({"containerPort": port, "protocol": "TCP"}))
                        .collect();
                    v["ports"] = json!(ports);
                }
                if let Some(r) = &c.restart_policy {
                    v["restartPolicy"] = json!(r);
                }
                v
            })
            .collect()
    };
    let status = |cs: &[crate::targets::ContainerInfo]| -> Vec<Value> {
        cs.iter()
            .map(|c| {
                let state = if c.running {
                    json!({"running": {"startedAt": "2026-11-26T10:00:00Z"}})
                } else {
                    json!({"terminated": {"exitCode": 0, "reason": "Completed"}})
                };
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": c.running, "restartCount": 0, "state": state})
            })
            .collect()
    };
    json!({
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels, "annotations": p.annotations},
        "spec": {"containers": spec(&p.containers), "initContainers": spec(&p.init_containers)},
        "status": {"phase": "Running", "podIP": p.ip, "containerStatuses": status(&p.containers), "initContainerStatuses": status(&p.init_containers)}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_target_applies_reads_the_cluster_and_passes_the_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);

    // The data plane: real Envoys on loopback.
    // The stub binary cargo builds beside this test binary (target/<profile>/).
    let exe = std::env::current_exe().unwrap();
    let stub = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("meshcheck-stub"))
        .unwrap();
    assert!(
        stub.is_file(),
        "{} is missing: `cargo test` builds it (`cargo build --bin meshcheck-stub`)",
        stub.display()
    );
    let stub = stub.into_os_string();
    let local = LocalTarget::start(mesh.clone(), &LocalOptions::new(vec![stub])).unwrap();
    let node = local.node_address();
    let pods = local.pods().await.unwrap();

    // The API: a fake server that reports that data plane.
    let fake = FakeApi::start().await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
        ))
        .respond_with(RolledOut("x".into()))
        .mount(&fake.server)
        .await;
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress/services/my-ingress-gateway",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "my-ingress-gateway", "namespace": "istio-ingress",
                            "managedFields": [{"manager": "meshcheck", "operation": "Apply", "apiVersion": "v1"}]},
               "spec": {"type": "LoadBalancer", "selector": {"istio": "my-ingress-gateway"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}}),
    )
    .await;
    fake.mount_get(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [{
            "metadata": {"name": "meshcheck-control-plane"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": node.to_string()},
                                     {"type": "Hostname", "address": "meshcheck-control-plane"}]}}]}),
    )
    .await;
    for ns in ["atlas", "istio-ingress"] {
        let items: Vec<Value> = pods
            .iter()
            .filter(|p| p.namespace == ns)
            .map(pod_json)
            .collect();
        fake.mount_get(
            &format!("/api/v1/namespaces/{ns}/pods"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
        )
        .await;
    }

    let opts = DeployOptions {
        apply: true,
        namespace_prefix: None,
        image_rewrite: Some((
            "meshcheck/stub".into(),
            "meshcheck/stub:0123456789ab".into(),
        )),
        rollout_timeout: Duration::from_secs(10),
        crd_timeout: Duration::from_secs(5),
        delete_created: true,
        adopt: false,
        revision: None,
        node_port_services: false,
        diagnostics_dir: None,
        gateway_api_crds: crate::targets::cluster::GatewayApiCrds::Require {
            version: "v1.5.1".into(),
        },
    };
    let cluster = deploy("existing", fake.client.clone(), &fx, &mesh, &opts, None)
        .await
        .unwrap();
    assert_eq!(cluster.node_address(), node);
    assert_eq!(cluster.node_port(80), Some(30080));
    assert_eq!(
        cluster.gateway_identities(),
        ["spiffe://cluster.local/ns/istio-ingress/sa/my-ingress-gateway"]
    );
    let applied = cluster.applied.len();
    assert_eq!(applied, fx.objects.len());
    let patches = fake.calls("PATCH").await;
    assert_eq!(patches.len(), applied);
    assert!(
        patches[0].starts_with("/api/v1/namespaces/"),
        "namespaces first: {patches:?}"
    );
    assert!(
        patches.last().unwrap().contains("/virtualservices/"),
        "VirtualServices last: {patches:?}"
    );
    // The stub image is the one built for the run.
    let bodies: Vec<String> = fake
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path().contains("/deployments/"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("meshcheck/stub:0123456789ab")),
        "{bodies:?}"
    );

    // Another tenant's NodePort Service on the shared cluster is not the fixtures':
    // the ports check lists it, and does not judge it.
    fake.mount_get(
        "/api/v1/services",
        json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": [
            {"metadata": {"name": "my-ingress-gateway", "namespace": "istio-ingress"},
             "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}]}},
            {"metadata": {"name": "checkout", "namespace": "payments"},
             "spec": {"type": "NodePort", "ports": [{"port": 443, "nodePort": 31443}, {"port": 80, "nodePort": 31080}]}},
            {"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"type": "ClusterIP", "ports": [{"port": 443}]}}]}),
    )
    .await;
    assert_eq!(
        cluster.other_node_ports().await,
        Ok(vec![
            (31080, "payments/checkout".to_string()),
            (31443, "payments/checkout".to_string())
        ])
    );

    // Every traffic check of the suite passes over the node address the API gave.
    let suite = crate::suite::load(&root.join("suites/ingress.yaml")).unwrap();
    let timeouts = crate::timeouts::Timeouts {
        consistency: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let cluster = Arc::new(cluster);
    let ctx = crate::checks::Ctx::new(cluster.clone(), timeouts, 80);
    for check in &suite.checks {
        let o = crate::checks::run(&ctx, check).await;
        assert!(
            o.passed,
            "{}: {} {}",
            check.full_name(),
            o.message,
            o.detail
        );
    }
    drop(ctx);
    let Ok(cluster) = Arc::try_unwrap(cluster) else {
        panic!("the checks keep no reference to the target")
    };

    // Cleanup deletes exactly what the run created, last applied first: the fake
    // API already had the Deployments and the gateway Service (it answered their GET
    // before the apply, as applied by an earlier meshcheck run), so those stay.
    let created = cluster.applied.iter().filter(|a| a.created).count();
    assert_eq!(created, applied - 6);
    cluster.shutdown().await;
    let deletes = fake.calls("DELETE").await;
    assert_eq!(deletes.len(), created);
    assert!(
        !deletes
            .iter()
            .any(|d| d.contains("/deployments/") || d.ends_with("/services/my-ingress-gateway")),
        "{deletes:?}"
    );
    assert!(
        deletes.first().unwrap().contains("/virtualservices/"),
        "{deletes:?}"
    );
    assert!(
        deletes.last().unwrap().starts_with("/api/v1/namespaces/"),
        "{deletes:?}"
    );
    drop(local);
}
