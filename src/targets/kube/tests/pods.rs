use super::fake::FakeApi;
use crate::targets::kube::{list_pods, node_address, pod_info, KubeError};
use crate::targets::{ContainerInfo, PodInfo};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use std::net::IpAddr;

const PROXY_IMAGE: &str = "docker.io/istio/proxyv2:1.26.0";

fn running_status(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image, "imageID": format!("{image}@sha256:4b0c1d"),
           "containerID": "containerd://9a0e1f", "ready": true, "restartCount": 0, "started": true,
           "state": {"running": {"startedAt": "2025-06-02T09:14:12Z"}}})
}

fn completed_status(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image, "imageID": format!("{image}@sha256:4b0c1d"),
           "containerID": "containerd://1c2d3e", "ready": true, "restartCount": 0, "started": false,
           "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                    "startedAt": "2025-06-02T09:14:09Z", "finishedAt": "2025-06-02T09:14:09Z"}}})
}

fn crashing_status(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image, "imageID": format!("{image}@sha256:4b0c1d"),
           "containerID": "containerd://7f8e9d", "ready": false, "restartCount": 4, "started": false,
           "state": {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": "back-off 1m20s restarting failed container"}},
           "lastState": {"terminated": {"exitCode": 255, "reason": "Error",
                                        "startedAt": "2025-06-02T09:16:00Z", "finishedAt": "2025-06-02T09:16:01Z"}}})
}

fn istio_init() -> Value {
    json!({"name": "istio-init", "image": PROXY_IMAGE,
           "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
           "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                               "runAsUser": 0, "runAsNonRoot": false}})
}

fn istio_proxy(native: bool) -> Value {
    let mut c = json!({"name": "istio-proxy", "image": PROXY_IMAGE,
                       "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                                "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
                       "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
                       "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
                       "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true}});
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

fn app(name: &str) -> Value {
    json!({"name": name, "image": "meshcheck/stub:build-3f9a2c1", "imagePullPolicy": "IfNotPresent",
           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]})
}

fn meta(name: &str, app: &str, annotations: Value) -> Value {
    json!({"name": name, "namespace": "atlas", "generateName": format!("{app}-7d9f8b6c5-"),
           "uid": "b7e4f1a2-0c3d-4e5f-8a9b-1c2d3e4f5a6b", "resourceVersion": "48455",
           "creationTimestamp": "2025-06-02T09:14:07Z",
           "labels": {"app": app, "version": "v1", "pod-template-hash": "7d9f8b6c5",
                      "security.istio.io/tlsMode": "istio",
                      "service.istio.io/canonical-name": app, "service.istio.io/canonical-revision": "v1"},
           "annotations": annotations,
           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8b6c5"),
                                "uid": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", "controller": true, "blockOwnerDeletion": true}]})
}

const CLASSIC_STATUS: &str = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#;
const NATIVE_STATUS: &str = r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#;

/// Istio 1.26, classic injection: istio-proxy is a regular container.
fn classic_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta("atlas-ui-7d9f8b6c5-x2x7q", "atlas-ui", json!({
            "istio.io/rev": "default",
            "kubectl.kubernetes.io/default-container": "atlas-ui",
            "kubectl.kubernetes.io/default-logs-container": "atlas-ui",
            "prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020", "prometheus.io/scrape": "true",
            "sidecar.istio.io/status": CLASSIC_STATUS
        })),
        "spec": {"serviceAccountName": "atlas-ui", "nodeName": "kind-control-plane",
                 "initContainers": [istio_init()],
                 "containers": [app("atlas-ui"), istio_proxy(false)]},
        "status": {"phase": "Running", "podIP": "10.244.0.12", "qosClass": "Burstable",
                   "initContainerStatuses": [completed_status("istio-init", PROXY_IMAGE)],
                   "containerStatuses": [running_status("atlas-ui", "meshcheck/stub:build-3f9a2c1"),
                                         running_status("istio-proxy", PROXY_IMAGE)]}
    })
}

/// Istio 1.28, native sidecar: istio-proxy is an init container with
/// `restartPolicy: Always`. Here the app crash-loops.
fn native_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta("nb-rest-v1-7d9f8b6c5-k9qzp", "nb-rest", json!({
            "istio.io/rev": "default",
            "kubectl.kubernetes.io/default-container": "nb-rest",
            "sidecar.istio.io/status": NATIVE_STATUS
        })),
        "spec": {"serviceAccountName": "nb-rest",
                 "initContainers": [istio_init(), istio_proxy(true)],
                 "containers": [app("nb-rest")]},
        "status": {"phase": "Running",
                   "initContainerStatuses": [completed_status("istio-init", PROXY_IMAGE),
                                             running_status("istio-proxy", PROXY_IMAGE)],
                   "containerStatuses": [crashing_status("nb-rest", "meshcheck/stub:build-3f9a2c1")]}
    })
}

/// Injection disabled, and still being created.
fn plain_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "authz-6b7c8d9e0f-abcde", "namespace": "atlas",
                     "labels": {"app": "authz", "sidecar.istio.io/inject": "false"}},
        "spec": {"containers": [app("authz")]},
        "status": {"phase": "Pending",
                   "containerStatuses": [{"name": "authz", "image": "meshcheck/stub:build-3f9a2c1", "imageID": "",
                                          "ready": false, "restartCount": 0, "started": false,
                                          "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    })
}

fn info(v: Value) -> PodInfo {
    pod_info(&serde_json::from_value::<Pod>(v).expect("a Pod"))
}

fn c(name: &str, image: &str, restart_policy: Option<&str>, running: bool) -> ContainerInfo {
    ContainerInfo {
        name: name.into(),
        image: image.into(),
        restart_policy: restart_policy.map(str::to_string),
        running,
    }
}

#[test]
fn classic_injection() {
    let p = info(classic_pod());
    assert_eq!(p.namespace, "atlas");
    assert_eq!(p.name, "atlas-ui-7d9f8b6c5-x2x7q");
    assert_eq!(p.labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(p.annotations["sidecar.istio.io/status"], CLASSIC_STATUS);
    assert_eq!(
        p.containers,
        [
            c("atlas-ui", "meshcheck/stub:build-3f9a2c1", None, true),
            c("istio-proxy", PROXY_IMAGE, None, true)
        ]
    );
    assert_eq!(
        p.init_containers,
        [c("istio-init", PROXY_IMAGE, None, false)]
    );
    // The plaintext check's address: the app's port, not the proxy's (15090).
    assert_eq!(p.ip, Some("10.244.0.12".parse().unwrap()));
    assert_eq!(p.ports, [8080]);
}

#[test]
fn native_sidecar() {
    let p = info(native_pod());
    assert_eq!(p.annotations["sidecar.istio.io/status"], NATIVE_STATUS);
    assert_eq!(
        p.containers,
        [c("nb-rest", "meshcheck/stub:build-3f9a2c1", None, false)]
    );
    assert_eq!(
        p.init_containers,
        [
            c("istio-init", PROXY_IMAGE, None, false),
            c("istio-proxy", PROXY_IMAGE, Some("Always"), true)
        ]
    );
}

#[test]
fn pod_without_sidecar() {
    let p = info(plain_pod());
    assert_eq!(p.labels["sidecar.istio.io/inject"], "false");
    assert!(p.annotations.is_empty());
    assert_eq!(
        p.containers,
        [c("authz", "meshcheck/stub:build-3f9a2c1", None, false)]
    );
    assert!(p.init_containers.is_empty());
}

#[tokio::test]
async fn lists_the_pods_of_each_namespace() {
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/namespaces/atlas/pods",
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48460"},
               "items": [classic_pod(), native_pod(), plain_pod()]}),
    )
    .await;
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress/pods",
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48460"}, "items": []}),
    )
    .await;
    let pods = list_pods(
        &fake.client,
        &["atlas".to_string(), "istio-ingress".to_string()],
    )
    .await
    .expect("list");
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "atlas-ui-7d9f8b6c5-x2x7q",
            "nb-rest-v1-7d9f8b6c5-k9qzp",
            "authz-6b7c8d9e0f-abcde"
        ]
    );
    assert_eq!(pods[1], info(native_pod()));
}

fn node(name: &str, ready: &str, addresses: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": "10.244.1.0/24", "providerID": format!("kind://docker/kind/{name}")},
        "status": {
            "addresses": addresses,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "lastHeartbeatTime": "2025-06-02T09:20:00Z", "lastTransitionTime": "2025-06-02T09:00:00Z"},
                {"type": "Ready", "status": ready,
                 "reason": if ready == "True" { "KubeletReady" } else { "KubeletNotReady" },
                 "message": if ready == "True" { "kubelet is posting ready status" }
                            else { "container runtime network not ready: NetworkReady=false" },
                 "lastHeartbeatTime": "2025-06-02T09:20:00Z", "lastTransitionTime": "2025-06-02T09:01:00Z"}
            ],
            "nodeInfo": {"architecture": "amd64", "bootID": "b1", "containerRuntimeVersion": "containerd://2.1.1",
                         "kernelVersion": "6.8.0", "kubeProxyVersion": "", "kubeletVersion": "v1.33.1",
                         "machineID": "m1", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "systemUUID": "s1"}
        }
    })
}

#[tokio::test]
async fn node_address_is_the_internal_ip_of_the_first_ready_node() {
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/nodes",
        json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "48470"},
               "items": [
                   node("kind-worker", "False",
                        json!([{"type": "InternalIP", "address": "172.18.0.3"}, {"type": "Hostname", "address": "kind-worker"}])),
                   node("kind-control-plane", "True",
                        json!([{"type": "Hostname", "address": "kind-control-plane"}, {"type": "InternalIP", "address": "172.18.0.2"}])),
               ]}),
    )
    .await;
    let ip = node_address(&fake.client).await.expect("address");
    assert_eq!(ip, "172.18.0.2".parse::<IpAddr>().unwrap());
}

#[tokio::test]
async fn node_address_fails_without_a_ready_node() {
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/nodes",
        json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {},
               "items": [node("kind-control-plane", "False",
                              json!([{"type": "InternalIP", "address": "172.18.0.2"}]))]}),
    )
    .await;
    let err = node_address(&fake.client).await.expect_err("none ready");
    assert!(matches!(err, KubeError::NoNodeAddress { .. }));
    assert_eq!(
        err.to_string(),
        "cannot find the address of a Ready node: kind-control-plane is not Ready"
    );
}

/// The sidecars check's reading of the pods Istio 1.26 and 1.28 inject.
#[test]
fn sidecar_detection_on_istio_shapes() {
    use crate::checks::{injection_status, sidecar_shape};
    use crate::istio::SidecarShape;
    let classic = info(classic_pod());
    assert_eq!(sidecar_shape(&classic), Some(SidecarShape::Classic));
    assert_eq!(
        injection_status(&classic).unwrap().containers,
        ["istio-proxy"]
    );
    let native = info(native_pod());
    assert_eq!(sidecar_shape(&native), Some(SidecarShape::Native));
    let st = injection_status(&native).unwrap();
    assert_eq!(st.init_containers, ["istio-init", "istio-proxy"]);
    assert!(st.containers.is_empty());
    let plain = info(plain_pod());
    assert_eq!(sidecar_shape(&plain), None);
    assert_eq!(injection_status(&plain), None);
}

/// A pod of the old ReplicaSet on its way out after a re-run, and a finished Job pod:
/// neither has a sidecar, and neither is judged.
#[tokio::test]
async fn terminating_and_finished_pods_are_not_listed() {
    let fake = FakeApi::start().await;
    let mut terminating = plain_pod();
    terminating["metadata"]["name"] = json!("authz-5a6b7c8d9e-old01");
    terminating["metadata"]["deletionTimestamp"] = json!("2025-06-02T09:20:00Z");
    terminating["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    terminating["status"]["phase"] = json!("Running");
    let mut succeeded = plain_pod();
    succeeded["metadata"]["name"] = json!("migrate-x7k2p");
    succeeded["status"]["phase"] = json!("Succeeded");
    let mut failed = plain_pod();
    failed["metadata"]["name"] = json!("migrate-q9w8e");
    failed["status"]["phase"] = json!("Failed");
    fake.mount_get(
        "/api/v1/namespaces/atlas/pods",
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48461"},
               "items": [classic_pod(), terminating, succeeded, failed, plain_pod()]}),
    )
    .await;
    let pods = list_pods(&fake.client, &["atlas".to_string()])
        .await
        .expect("list");
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    // A Pending pod is still judged: it is meant to run.
    assert_eq!(
        names,
        ["atlas-ui-7d9f8b6c5-x2x7q", "authz-6b7c8d9e0f-abcde"]
    );
}

/// What a failed rollout names: the reason of the first pod that is not ready.
#[test]
fn why_a_pod_is_not_ready() {
    use crate::targets::kube::not_ready_reason;
    let pod = |v: Value| serde_json::from_value::<Pod>(v).expect("a Pod");
    assert_eq!(not_ready_reason(&pod(classic_pod())), None);
    assert_eq!(
        not_ready_reason(&pod(native_pod())).as_deref(),
        Some("container nb-rest is waiting: CrashLoopBackOff (back-off 1m20s restarting failed container)")
    );
    assert_eq!(
        not_ready_reason(&pod(plain_pod())).as_deref(),
        Some("container authz is waiting: ContainerCreating")
    );
    let mut pulling = plain_pod();
    pulling["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": "ImagePullBackOff",
        "message": "Back-off pulling image \"meshcheck/stub:latest\""}});
    assert_eq!(
        not_ready_reason(&pod(pulling)).as_deref(),
        Some("container authz is waiting: ImagePullBackOff (Back-off pulling image \"meshcheck/stub:latest\")")
    );
    let mut init_failed = native_pod();
    init_failed["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 1, "reason": "Error"}});
    assert_eq!(
        not_ready_reason(&pod(init_failed)).as_deref(),
        Some("init container istio-init terminated: Error (exit code 1)")
    );
    let unschedulable = json!({"metadata": {"name": "p", "namespace": "atlas"},
        "spec": {"containers": [app("authz")]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory."}]}});
    assert_eq!(
        not_ready_reason(&pod(unschedulable)).as_deref(),
        Some("not scheduled: Unschedulable (0/1 nodes are available: 1 Insufficient memory.)")
    );
}

/// A stub's log: a startup line, then one `{"seen":...}` line per request.
fn stub_log(service: &str, ids: &[&str]) -> String {
    let mut log = String::from("meshcheck-stub: serving\n");
    for id in ids {
        let mut e = crate::stub::Echo {
            identity: crate::stub::Identity {
                service: service.into(),
                version: "v1".into(),
                pod: format!("{service}-pod"),
                namespace: "atlas".into(),
            },
            method: "GET".into(),
            path: "/p".into(),
            host: "h".into(),
            ..Default::default()
        };
        e.headers
            .insert(crate::stub::ID_HEADER.into(), vec![id.to_string()]);
        log.push_str(&serde_json::to_string(&crate::stub::seen::SeenLine { seen: e }).unwrap());
        log.push('\n');
    }
    log
}

#[tokio::test]
async fn what_the_stubs_saw_is_read_from_the_app_containers_logs() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, ResponseTemplate};
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/namespaces/atlas/pods",
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48460"},
               "items": [classic_pod(), native_pod()]}),
    )
    .await;
    for (pod, container, ids) in [
        ("atlas-ui-7d9f8b6c5-x2x7q", "atlas-ui", &["a", "b"][..]),
        ("nb-rest-v1-7d9f8b6c5-k9qzp", "nb-rest", &["b"][..]),
    ] {
        // Only the app container is read (an istio-proxy log request would get the
        // fake's 404 and fail the call), and only the stub's last lines.
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/namespaces/atlas/pods/{pod}/log")))
            .and(query_param("container", container))
            .and(query_param("tailLines", "4096"))
            .respond_with(ResponseTemplate::new(200).set_body_string(stub_log(container, ids)))
            .expect(2)
            .mount(&fake.server)
            .await;
    }
    let ns = ["atlas".to_string()];
    let got = crate::targets::kube::seen_in_logs(&fake.client, &ns, "b")
        .await
        .unwrap();
    let who: Vec<&str> = got.iter().map(|e| e.identity.service.as_str()).collect();
    assert_eq!(who, ["atlas-ui", "nb-rest"]);
    let got = crate::targets::kube::seen_in_logs(&fake.client, &ns, "a")
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}
