use super::fake::{status, FakeApi, Sequence};
use crate::targets::kube::{
    all_available, all_updated, no_old_replicas, observed_latest, progress_deadline_exceeded,
    rollout_complete, rollout_status, wait_for, wait_rollouts_every, Check, KubeError,
};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::Mock;

const POLL: Duration = Duration::from_millis(50);

fn progressing(reason: &str, message: &str) -> Value {
    json!({"type": "Progressing", "status": if reason == "ProgressDeadlineExceeded" { "False" } else { "True" },
           "lastUpdateTime": "2025-06-02T09:15:02Z", "lastTransitionTime": "2025-06-02T09:14:07Z",
           "reason": reason, "message": message})
}

fn available(ok: bool) -> Value {
    if ok {
        json!({"type": "Available", "status": "True", "lastUpdateTime": "2025-06-02T09:15:02Z",
               "lastTransitionTime": "2025-06-02T09:15:02Z", "reason": "MinimumReplicasAvailable",
               "message": "Deployment has minimum availability."})
    } else {
        json!({"type": "Available", "status": "False", "lastUpdateTime": "2025-06-02T09:14:07Z",
               "lastTransitionTime": "2025-06-02T09:14:07Z", "reason": "MinimumReplicasUnavailable",
               "message": "Deployment does not have minimum availability."})
    }
}

/// A Deployment `atlas/<name>` as the API returns it, with `status` fields.
fn deployment(name: &str, generation: i64, replicas: i32, status: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": "atlas", "generation": generation,
            "uid": "2c5d0c1e-8a1f-4f57-b1f4-3c8e2f7d9a61", "resourceVersion": "48390",
            "creationTimestamp": "2025-06-02T09:14:07Z",
            "annotations": {"deployment.kubernetes.io/revision": generation.to_string()}
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": name, "version": "v1"}},
                "spec": {"containers": [{"name": name, "image": "meshcheck/stub:build-3f9a2c1"}]}
            }
        },
        "status": status
    })
}

fn typed(v: Value) -> Deployment {
    serde_json::from_value(v).expect("a Deployment")
}

/// Just created: the controller has not looked at it yet.
fn unobserved(name: &str) -> Value {
    deployment(name, 1, 2, json!({}))
}

/// 1 of 2 new pods created, none ready yet.
fn half_updated(name: &str) -> Value {
    deployment(
        name,
        1,
        2,
        json!({
            "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 2,
            "conditions": [available(false),
                           progressing("ReplicaSetUpdated", &format!("ReplicaSet \"{name}-7d9f8b6c5\" is progressing."))]
        }),
    )
}

/// A new template (generation 2) half rolled: 2 old pods still there.
fn rolling(name: &str) -> Value {
    deployment(
        name,
        2,
        2,
        json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2,
            "availableReplicas": 2, "unavailableReplicas": 1,
            "conditions": [available(true),
                           progressing("ReplicaSetUpdated", &format!("ReplicaSet \"{name}-5c8b7f9d4\" is progressing."))]
        }),
    )
}

fn complete(name: &str) -> Value {
    deployment(
        name,
        1,
        2,
        json!({
            "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [available(true),
                           progressing("NewReplicaSetAvailable",
                                       &format!("ReplicaSet \"{name}-7d9f8b6c5\" has successfully progressed."))]
        }),
    )
}

fn deadline_exceeded(name: &str) -> Value {
    deployment(
        name,
        1,
        2,
        json!({
            "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "unavailableReplicas": 2,
            "conditions": [available(false),
                           progressing("ProgressDeadlineExceeded",
                                       &format!("ReplicaSet \"{name}-7d9f8b6c5\" has timed out progressing."))]
        }),
    )
}

#[test]
fn predicates_follow_kubectl_rollout_status() {
    let d = typed(unobserved("atlas-ui"));
    assert!(!observed_latest(&d));
    assert!(!rollout_complete(&d));
    assert_eq!(
        rollout_status(&d),
        "waiting for the controller to observe generation 1"
    );

    let d = typed(half_updated("atlas-ui"));
    assert!(observed_latest(&d));
    assert!(!all_updated(&d));
    assert!(no_old_replicas(&d));
    assert!(!all_available(&d));
    assert_eq!(rollout_status(&d), "1/2 updated, 0 available");

    let d = typed(rolling("atlas-ui"));
    assert!(!all_updated(&d));
    assert!(!no_old_replicas(&d));
    assert!(all_available(&d));
    assert!(!rollout_complete(&d));
    assert_eq!(
        rollout_status(&d),
        "1/2 updated, 2 available, 2 old pending termination"
    );

    let d = typed(complete("atlas-ui"));
    assert!(rollout_complete(&d));
    assert_eq!(progress_deadline_exceeded(&d), None);
    assert_eq!(rollout_status(&d), "2/2 updated, 2 available");

    let d = typed(deadline_exceeded("atlas-ui"));
    assert!(!rollout_complete(&d));
    assert_eq!(
        progress_deadline_exceeded(&d).as_deref(),
        Some("ReplicaSet \"atlas-ui-7d9f8b6c5\" has timed out progressing.")
    );

    // A condition left from an older generation does not count (as kubectl).
    let mut stale = deadline_exceeded("atlas-ui");
    stale["metadata"]["generation"] = json!(2);
    assert_eq!(progress_deadline_exceeded(&typed(stale)), None);

    // Scaled to zero: complete as soon as observed.
    let zero = deployment("jobs", 3, 0, json!({"observedGeneration": 3}));
    assert!(rollout_complete(&typed(zero)));
}

async fn serve_sequence(fake: &FakeApi, name: &str, bodies: Vec<Value>) {
    Mock::given(method("GET"))
        .and(path(format!(
            "/apis/apps/v1/namespaces/atlas/deployments/{name}"
        )))
        .respond_with(Sequence::new(
            bodies.into_iter().map(|b| (200, b)).collect(),
        ))
        .mount(&fake.server)
        .await;
}

fn targets(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| ("atlas".to_string(), n.to_string()))
        .collect()
}

#[tokio::test]
async fn progressing_rollouts_complete() {
    let fake = FakeApi::start().await;
    serve_sequence(
        &fake,
        "atlas-ui",
        vec![
            unobserved("atlas-ui"),
            half_updated("atlas-ui"),
            half_updated("atlas-ui"),
            complete("atlas-ui"),
        ],
    )
    .await;
    serve_sequence(
        &fake,
        "nb-rest-v1",
        vec![rolling("nb-rest-v1"), complete("nb-rest-v1")],
    )
    .await;
    let lines = Mutex::new(Vec::new());
    let progress = |l: &str| lines.lock().unwrap().push(l.to_string());
    wait_rollouts_every(
        &fake.client,
        &targets(&["atlas-ui", "nb-rest-v1"]),
        Duration::from_secs(5),
        POLL,
        &progress,
    )
    .await
    .expect("rolled out");
    let lines = lines.into_inner().unwrap();
    assert_eq!(
        lines,
        [
            "atlas/atlas-ui: waiting for the controller to observe generation 1",
            "atlas/nb-rest-v1: 1/2 updated, 2 available, 2 old pending termination",
            "atlas/atlas-ui: 1/2 updated, 0 available",
            "atlas/nb-rest-v1: rolled out (2/2 updated, 2 available)",
            "atlas/atlas-ui: rolled out (2/2 updated, 2 available)",
        ]
    );
    // Complete Deployments are not polled again.
    let gets = fake.calls("GET").await;
    assert_eq!(
        gets.iter().filter(|p| p.ends_with("/nb-rest-v1")).count(),
        2
    );
    assert_eq!(gets.iter().filter(|p| p.ends_with("/atlas-ui")).count(), 4);
}

#[tokio::test]
async fn stuck_rollout_times_out_with_its_last_status() {
    let fake = FakeApi::start().await;
    serve_sequence(&fake, "atlas-ui", vec![complete("atlas-ui")]).await;
    serve_sequence(
        &fake,
        "nb-rest-v1",
        vec![unobserved("nb-rest-v1"), half_updated("nb-rest-v1")],
    )
    .await;
    let started = Instant::now();
    let err = wait_rollouts_every(
        &fake.client,
        &targets(&["atlas-ui", "nb-rest-v1"]),
        Duration::from_millis(500),
        POLL,
        &|_: &str| {},
    )
    .await
    .expect_err("stuck");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match &err {
        KubeError::RolloutTimeout {
            deployment,
            waited,
            last_status,
        } => {
            assert_eq!(deployment, "atlas/nb-rest-v1");
            assert_eq!(last_status, "1/2 updated, 0 available");
            assert!(*waited >= Duration::from_millis(500));
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("Deployment atlas/nb-rest-v1 did not finish rolling out within 0.5s"),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("(last status: 1/2 updated, 0 available)"),
        "{err}"
    );
}

#[tokio::test]
async fn progress_deadline_exceeded_fails_at_once() {
    let fake = FakeApi::start().await;
    serve_sequence(
        &fake,
        "atlas-ui",
        vec![half_updated("atlas-ui"), deadline_exceeded("atlas-ui")],
    )
    .await;
    let started = Instant::now();
    let err = wait_rollouts_every(
        &fake.client,
        &targets(&["atlas-ui"]),
        Duration::from_secs(30),
        POLL,
        &|_: &str| {},
    )
    .await
    .expect_err("deadline exceeded");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        err.to_string(),
        "Deployment atlas/atlas-ui failed to roll out (ProgressDeadlineExceeded): \
         ReplicaSet \"atlas-ui-7d9f8b6c5\" has timed out progressing."
    );
}

#[tokio::test]
async fn missing_deployment_is_waited_for_and_forbidden_fails() {
    let fake = FakeApi::start().await;
    // Not created yet (404 from the fake's fallback), then there.
    Mock::given(method("GET"))
        .and(path("/apis/apps/v1/namespaces/atlas/deployments/late"))
        .respond_with(Sequence::new(vec![
            (
                404,
                status(
                    404,
                    "NotFound",
                    "deployments.apps \"late\" not found",
                    json!({"name": "late"}),
                ),
            ),
            (200, complete("late")),
        ]))
        .mount(&fake.server)
        .await;
    wait_rollouts_every(
        &fake.client,
        &targets(&["late"]),
        Duration::from_secs(5),
        POLL,
        &|_: &str| {},
    )
    .await
    .expect("appears and is complete");

    fake.mount(
        "GET",
        "/apis/apps/v1/namespaces/atlas/deployments/secret-app",
        403,
        status(403, "Forbidden",
               "deployments.apps \"secret-app\" is forbidden: User \"system:serviceaccount:ci:meshcheck\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"atlas\"",
               json!({"name": "secret-app", "group": "apps", "kind": "deployments"})),
    )
    .await;
    let err = wait_rollouts_every(
        &fake.client,
        &targets(&["secret-app"]),
        Duration::from_secs(30),
        POLL,
        &|_: &str| {},
    )
    .await
    .expect_err("forbidden");
    assert!(
        err.to_string().starts_with(
            "failed to read Deployment atlas/secret-app: the API server answered 403 Forbidden"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn wait_for_polls_until_ready_or_deadline() {
    let calls = AtomicUsize::new(0);
    let got = wait_for(
        "the third call",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Ok(if n == 2 {
                Check::Ready(n)
            } else {
                Check::Pending(format!("call {n}"))
            })
        },
    )
    .await
    .expect("ready");
    assert_eq!(got, 2);

    let err = wait_for(
        "the gateway to answer",
        Duration::from_millis(200),
        Duration::from_millis(20),
        || async { Ok::<Check<()>, KubeError>(Check::Pending("connection refused".into())) },
    )
    .await
    .expect_err("never");
    assert!(
        matches!(&err, KubeError::Timeout { what, last, .. } if what == "the gateway to answer" && last == "connection refused"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("timed out after 0.2s waiting for the gateway to answer"),
        "{err}"
    );

    // A poll that hangs is cut at the deadline too.
    let started = Instant::now();
    let err = wait_for(
        "a hung call",
        Duration::from_millis(100),
        Duration::from_millis(10),
        || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<Check<()>, KubeError>(Check::Ready(()))
        },
    )
    .await
    .expect_err("hung");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, KubeError::Timeout { .. }));
}
