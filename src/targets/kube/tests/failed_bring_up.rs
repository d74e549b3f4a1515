//! A bring-up that fails: the error says why (the first pod that is not ready), and
//! the diagnostics are collected before the cleanup deletes what the run created.

use super::fake::FakeApi;
use crate::fixtures::load_dir;
use crate::istio::Mesh;
use crate::targets::cluster::{deploy, progress_deadline_for, DeployOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use wiremock::matchers::{method, path, path_regex};
use wiremock::Mock;
use wiremock::ResponseTemplate;

/// A Deployment `<ns>/<name>`: rolled out, or stuck with its pod unavailable.
fn deployment(ns: &str, name: &str, rolled_out: bool) -> Value {
    let status = if rolled_out {
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
               "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                              {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})
    } else {
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
               "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                              {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": "x"}]}}},
        "status": status
    })
}

fn opts(dir: &Path) -> DeployOptions {
    DeployOptions {
        apply: true,
        namespace_prefix: None,
        image_rewrite: Some(("meshcheck/stub".into(), "registry.example/stub:1".into())),
        rollout_timeout: Duration::from_millis(1500),
        crd_timeout: Duration::from_secs(5),
        delete_created: true,
        adopt: false,
        revision: None,
        node_port_services: false,
        diagnostics_dir: Some(dir.to_path_buf()),
        gateway_api_crds: crate::targets::cluster::GatewayApiCrds::Require {
            version: "v1.5.1".into(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_names_the_pods_reason_and_diagnostics_precede_cleanup() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);
    let fake = FakeApi::start().await;
    // After the apply: atlas-ui is stuck, the others roll out.
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
        ))
        .respond_with(|r: &wiremock::Request| {
            let seg: Vec<&str> = r.url.path().split('/').collect();
            ResponseTemplate::new(200).set_body_json(deployment(
                seg[5],
                seg[7],
                seg[7] != "atlas-ui",
            ))
        })
        .with_priority(3)
        .mount(&fake.server)
        .await;
    // Before the apply (its one look at each Deployment): absent.
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
        ))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(super::fake::status(
                404,
                "NotFound",
                "not found",
                json!({}),
            )),
        )
        .up_to_n_times(fx.deployments.len() as u64)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let pulling = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "atlas-ui-7d9f8b6c5-x2x7q", "namespace": "atlas", "labels": {"app": "atlas-ui"}},
        "spec": {"containers": [{"name": "atlas-ui", "image": "registry.example/stub:1"}]},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "atlas-ui", "image": "registry.example/stub:1",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": "Back-off pulling image \"registry.example/stub:1\""}}}]}}]});
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/atlas/pods"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pulling))
        .mount(&fake.server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let diag = dir.path().join("ingress-diagnostics");
    let err = match deploy(
        "existing",
        fake.client.clone(),
        &fx,
        &mesh,
        &opts(&diag),
        None,
    )
    .await
    {
        Ok(_) => panic!("the rollout cannot complete"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("Deployment atlas/atlas-ui did not finish rolling out within 1.5s"),
        "{msg}"
    );
    assert!(
        msg.contains("pod atlas/atlas-ui-7d9f8b6c5-x2x7q: container atlas-ui is waiting: ImagePullBackOff (Back-off pulling image \"registry.example/stub:1\")"),
        "{msg}"
    );
    // The diagnostics were written...
    let pods = std::fs::read_to_string(diag.join("atlas.pods.json")).expect("pods diagnostics");
    assert!(pods.contains("ImagePullBackOff"), "{pods}");
    assert!(diag.join("applied-objects.json").is_file());
    // ...before the cleanup deleted what the run created.
    let requests = fake.requests().await;
    let last_diag = requests
        .iter()
        .rposition(|r| r.method.as_str() == "GET" && r.url.path().ends_with("/events"))
        .expect("events were read");
    let first_delete = requests
        .iter()
        .position(|r| r.method.as_str() == "DELETE")
        .expect("the created objects were deleted");
    assert!(last_diag < first_delete, "diagnostics after cleanup");
}

/// The Deployments' progress deadline is shorter than the rollout wait, so a
/// Deployment that cannot progress says so (ProgressDeadlineExceeded) instead of the
/// wait timing out first (Kubernetes' default deadline is 600 s, the wait 300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_deadline_agrees_with_the_rollout_timeout() {
    assert_eq!(
        progress_deadline_for(Duration::from_secs(300)),
        Duration::from_secs(270)
    );
    assert_eq!(
        progress_deadline_for(Duration::from_secs(60)),
        Duration::from_secs(50)
    );
    assert_eq!(
        progress_deadline_for(Duration::from_secs(4)),
        Duration::from_secs(2)
    );
    assert!(progress_deadline_for(Duration::from_millis(500)) >= Duration::from_secs(1));

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
    let mesh = Mesh::build(&fx);
    let fake = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = DeployOptions {
        rollout_timeout: Duration::from_secs(300),
        diagnostics_dir: None,
        gateway_api_crds: crate::targets::cluster::GatewayApiCrds::Require {
            version: "v1.5.1".into(),
        },
        ..opts(dir.path())
    };
    // The rollout never completes here (no Deployment is ever read back): only the
    // bodies sent matter. (Dropping the bring-up deletes what it created.)
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        deploy("existing", fake.client.clone(), &fx, &mesh, &opts, None),
    )
    .await;
    let deployments: Vec<Value> = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path().contains("/deployments/"))
        .map(|r| serde_json::from_slice(&r.body).expect("JSON"))
        .collect();
    assert_eq!(deployments.len(), fx.deployments.len());
    for d in &deployments {
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 270, "{d}");
    }
}
