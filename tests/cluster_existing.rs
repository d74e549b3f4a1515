//! The existing target as a user runs it (`meshcheck --target existing`), against a
//! fake API server (wiremock) behind a kubeconfig, with a stub backend standing in
//! for the pods behind the gateway's NodePort: what the run sends to the cluster, and
//! how it judges what comes back.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A kubeconfig naming the fake API server (plain HTTP, a token).
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             users:\n- name: ci\n  user:\n    token: not-a-secret\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ci\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    p
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
           "gitTreeState": "clean", "buildDate": "2025-05-15T08:19:08Z", "goVersion": "go1.24.2",
           "compiler": "gc", "platform": "linux/amd64"})
}

/// Any Deployment, rolled out (applied by meshcheck).
struct RolledOut;

impl Respond for RolledOut {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let seg: Vec<&str> = request.url.path().split('/').collect();
        let (ns, name) = (seg[5], seg[7]);
        ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "generation": 1,
                         "managedFields": [{"manager": "meshcheck", "operation": "Apply", "apiVersion": "apps/v1"}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "True"},
                                      {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        }))
    }
}

/// A pod of `ns` Istio injected (classic sidecar), running.
fn injected_pod(ns: &str, name: &str, app: &str) -> Value {
    let status = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#;
    let running = |c: &str| {
        json!({"name": c, "image": "x", "imageID": "", "ready": true, "restartCount": 0,
               "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}}})
    };
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                     "annotations": {"sidecar.istio.io/status": status}},
        "spec": {"initContainers": [{"name": "istio-init", "image": "proxyv2"}],
                 "containers": [{"name": app, "image": "registry.example/meshcheck/stub:1"},
                                {"name": "istio-proxy", "image": "proxyv2"}]},
        "status": {"phase": "Running", "containerStatuses": [running(app), running("istio-proxy")]}
    })
}

/// A stub backend answering as atlas-ui of namespace `ns` (what the gateway's
/// NodePort would reach on the cluster), on a free loopback port.
async fn atlas_ui_at(ns: &str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let identity = meshcheck::stub::Identity {
        service: "atlas-ui".into(),
        version: "v1".into(),
        pod: "atlas-ui-7d9f8b6c5-x2x7q".into(),
        namespace: ns.into(),
    };
    tokio::spawn(meshcheck::stub::serve(
        listener,
        identity,
        meshcheck::stub::Seen::default(),
    ));
    port
}

/// A fake API server with the fixtures deployed under `prefix` (rolled out, the
/// gateway Service's NodePort `node_port`, injected pods).
async fn cluster_with_fixtures(prefix: &str, node_port: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/version"))
        .respond_with(ResponseTemplate::new(200).set_body_json(version()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
        ))
        .respond_with(RolledOut)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/namespaces/{prefix}istio-ingress/services/my-ingress-gateway"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "my-ingress-gateway", "namespace": format!("{prefix}istio-ingress")},
            "spec": {"type": "LoadBalancer", "selector": {"istio": format!("{prefix}my-ingress-gateway")},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": node_port, "protocol": "TCP"}]}
        })))
        .mount(&server)
        .await;
    let atlas = format!("{prefix}atlas");
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/namespaces/{atlas}/pods")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [injected_pod(&atlas, "atlas-ui-7d9f8b6c5-x2x7q", "atlas-ui"),
                      injected_pod(&atlas, "authz-6b7c8d9e0f-abcde", "authz")]
        })))
        .mount(&server)
        .await;
    let ingress = format!("{prefix}istio-ingress");
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/namespaces/{ingress}/pods")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [injected_pod(&ingress, "my-ingress-gateway-5f7c9d-q2w3e", "my-ingress-gateway")]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/namespaces/[^/]+/pods$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

/// `meshcheck --target existing` against `server` (through a kubeconfig file), in a
/// blocking thread.
async fn run_existing(server: &MockServer, args: &[&str]) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &server.uri());
    let mut all = vec!["--kubeconfig".to_string(), kc.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let r = run_meshcheck(&all, Vec::new()).await;
    drop(dir);
    r
}

/// `meshcheck --target existing --node-address 127.0.0.1 --budget 3s ARGS` with the
/// environment `env`, its JUnit report and diagnostics in a temporary directory.
async fn run_meshcheck(args: &[String], env: Vec<(String, String)>) -> RunResult {
    let out = tempfile::tempdir().unwrap();
    let mut run = Run::new()
        .arg("--target")
        .arg("existing")
        .arg("--node-address")
        .arg("127.0.0.1")
        .arg("--budget")
        .arg("3s")
        .arg("--junit")
        .arg(out.path().join("junit.xml"));
    for a in args {
        run = run.arg(a);
    }
    let mut cmd = run.command();
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || {
        let r = parse(cmd.output().unwrap());
        drop(out);
        r
    })
    .await
    .unwrap()
}

/// `--namespace-prefix`: the suite's `backend.namespace: atlas` and
/// `sidecars.namespaces: [atlas]` mean the fixtures' atlas, which is `mc-atlas` on the
/// cluster; the run compares with the renamed namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_prefix_renames_the_namespaces_expectations_name() {
    let port = atlas_ui_at("mc-atlas").await;
    let server = cluster_with_fixtures("mc-", port).await;
    let common = ["--no-apply", "--namespace-prefix", "mc-", "--exact"];
    let r = run_existing(&server, &[&common[..], &["routing::atlas-ui"]].concat()).await;
    assert!(
        r.passed.contains("routing::atlas-ui"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let r = run_existing(&server, &[&common[..], &["sidecars::injected"]].concat()).await;
    assert!(
        r.passed.contains("sidecars::injected"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// A gateway NodePort that does not answer at the node address is found right after
/// the deploy when the selected checks send traffic (exit 3, saying to pass
/// `--node-address`); a run of checks that send none does not need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_reported_before_the_checks_when_they_send_traffic() {
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = cluster_with_fixtures("mc-", closed).await;
    let common = ["--no-apply", "--namespace-prefix", "mc-", "--exact"];
    let r = run_existing(&server, &[&common[..], &["routing::atlas-ui"]].concat()).await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!("the gateway's port 80 is not reachable at 127.0.0.1:{closed} (the --node-address given)"))
            && r.stderr.contains("pass --node-address"),
        "{}",
        r.stderr
    );
    let r = run_existing(&server, &[&common[..], &["sidecars::injected"]].concat()).await;
    assert!(
        r.passed.contains("sidecars::injected"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// Without `--stub-image` the fixtures' `meshcheck/stub` would be pulled from a
/// public registry: refused before the cluster is contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_without_a_stub_image_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let r = run_existing(&server, &["--namespace-prefix", "mc-"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--stub-image"), "{}", r.stderr);
    assert!(r.stderr.contains("meshcheck/stub"), "{}", r.stderr);
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "the API server was contacted"
    );
}

/// `$KUBECONFIG` with several files (one missing): every existing file is read and
/// merged as kubectl does. Here the context and user are in one file, the cluster in
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_of_a_multi_file_kubeconfig_is_read() {
    let port = atlas_ui_at("atlas").await;
    let server = cluster_with_fixtures("", port).await;
    let dir = tempfile::tempdir().unwrap();
    let contexts = dir.path().join("contexts.yaml");
    std::fs::write(
        &contexts,
        "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user:\n    token: not-a-secret\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ci\ncurrent-context: fake\n",
    )
    .unwrap();
    let clusters = dir.path().join("clusters.yaml");
    std::fs::write(
        &clusters,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n",
            server.uri()
        ),
    )
    .unwrap();
    let env = std::env::join_paths([
        dir.path().join("missing.yaml"),
        contexts.clone(),
        clusters.clone(),
    ])
    .unwrap();
    let args: Vec<String> = ["--no-apply", "--exact", "routing::atlas-ui"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let r = run_meshcheck(
        &args,
        vec![("KUBECONFIG".into(), env.to_string_lossy().into_owned())],
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.passed.contains("routing::atlas-ui"), "{}", r.stdout);
}

/// Diagnostics after a failed check dump the gateway's Envoy config with istioctl on
/// the run's cluster: the same `--context` as the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istioctl_diagnostics_use_the_runs_context() {
    let port = atlas_ui_at("atlas").await;
    let server = cluster_with_fixtures("", port).await;
    let dir = tempfile::tempdir().unwrap();
    // An istioctl that records how it was called.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = dir.path().join("istioctl-calls");
    let istioctl = bin.join("istioctl");
    std::fs::write(
        &istioctl,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho '{{}}'\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&istioctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kc = kubeconfig(dir.path(), &server.uri());
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    // routing::authz fails: atlas-ui answers.
    let args: Vec<String> = [
        "--kubeconfig",
        &kc.display().to_string(),
        "--context",
        "fake",
        "--no-apply",
        "--exact",
        "routing::authz",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let r = run_meshcheck(
        &args,
        vec![("PATH".into(), path.to_string_lossy().into_owned())],
    )
    .await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(
        calls.trim(),
        format!(
            "proxy-config all my-ingress-gateway-5f7c9d-q2w3e -n istio-ingress -o json --kubeconfig {} --context fake",
            kc.display()
        ),
        "{}",
        r.stderr
    );
}

/// An object of the fixtures that exists and that meshcheck did not apply is not
/// taken over: the run stops naming it (nothing sent), unless `--adopt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_meshcheck_did_not_create_is_taken_over_only_with_adopt() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/version"))
        .respond_with(ResponseTemplate::new(200).set_body_json(version()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "172.18.0.2:6443"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [{"name": "namespaces", "singularName": "namespace", "namespaced": false,
                           "kind": "Namespace", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]})))
        .mount(&server)
        .await;
    // Istio's default injector is installed.
    Mock::given(method("GET"))
        .and(path("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfigurationList",
            "metadata": {}, "items": [{"metadata": {"name": "istio-sidecar-injector"}, "webhooks": [
                {"name": "namespace.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                 "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system"}}}]}]})))
        .mount(&server)
        .await;
    // mc-atlas exists, made by someone with kubectl.
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/mc-atlas"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "mc-atlas", "uid": "0b1f2a10-6f1c-4d6e-9a55-3b1a1d7e0c6e",
                         "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1"}]},
            "status": {"phase": "Active"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/namespaces/mc-istio-ingress"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "namespaces \"mc-istio-ingress\" not found", "reason": "NotFound", "code": 404})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/v1/namespaces/mc-atlas"))
        .respond_with(|r: &Request| {
            ResponseTemplate::new(200).set_body_raw(r.body.clone(), "application/json")
        })
        .mount(&server)
        .await;
    // What comes next fails at once: this test is about the first object.
    Mock::given(method("PATCH"))
        .and(path("/api/v1/namespaces/mc-istio-ingress"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})))
        .mount(&server)
        .await;
    let args = [
        "--namespace-prefix",
        "mc-",
        "--stub-image",
        "registry.example/meshcheck/stub:1",
    ];
    let patches = |requests: Vec<Request>| -> Vec<String> {
        requests
            .iter()
            .filter(|r| r.method.as_str() == "PATCH")
            .map(|r| r.url.path().to_string())
            .collect()
    };

    let r = run_existing(&server, &args).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("Namespace mc-atlas exists already and meshcheck did not create it (managed by kubectl-create)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--adopt"), "{}", r.stderr);
    assert!(
        patches(server.received_requests().await.unwrap_or_default()).is_empty(),
        "an object was applied"
    );

    let r = run_existing(&server, &[&args[..], &["--adopt"]].concat()).await;
    assert!(!r.stderr.contains("exists already"), "{}", r.stderr);
    assert_eq!(
        patches(server.received_requests().await.unwrap_or_default()),
        [
            "/api/v1/namespaces/mc-atlas",
            "/api/v1/namespaces/mc-istio-ingress"
        ],
        "{}",
        r.stderr
    );
}
