use super::fake::{object, page_not_found, status, FakeApi};
use crate::fixtures::Object;
use crate::targets::kube::{apply_all, apply_all_into, delete_applied, ApplyOptions, KubeError};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request};

/// The ingress fixtures, in file order (as the loader returns them), which is not
/// the order they must be applied in.
fn ingress_fixtures() -> Vec<Object> {
    vec![
        object(
            "fixtures/ingress/00-namespaces.yaml",
            2,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "atlas", "labels": {"istio-injection": "enabled"}}}),
        ),
        object(
            "fixtures/ingress/00-namespaces.yaml",
            9,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-ingress"}}),
        ),
        object(
            "fixtures/ingress/20-backends.yaml",
            3,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "nb-rest", "namespace": "atlas"}}),
        ),
        object(
            "fixtures/ingress/20-backends.yaml",
            9,
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "nb-rest", "namespace": "atlas", "labels": {"app": "nb-rest"}},
                   "spec": {"selector": {"app": "nb-rest"},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        ),
        object(
            "fixtures/ingress/20-backends.yaml",
            23,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "nb-rest-v1", "namespace": "atlas"},
            "spec": {"replicas": 1,
                     "selector": {"matchLabels": {"app": "nb-rest", "version": "v1"}},
                     "template": {
                         "metadata": {"labels": {"app": "nb-rest", "version": "v1"}},
                         "spec": {
                             "serviceAccountName": "nb-rest",
                             "initContainers": [{"name": "wait", "image": "meshcheck/stub:latest",
                                                 "command": ["/meshcheck-stub", "--check"]}],
                             "containers": [
                                 {"name": "nb-rest", "image": "meshcheck/stub:latest",
                                  "imagePullPolicy": "IfNotPresent",
                                  "ports": [{"name": "http", "containerPort": 8080}],
                                  "env": [{"name": "SERVICE_NAME", "value": "nb-rest"},
                                          {"name": "UPSTREAM", "value": "http://authz.atlas.svc.cluster.local"}]},
                                 {"name": "log-shipper", "image": "docker.io/fluent/fluent-bit:3.2"}
                             ]}}}}),
        ),
        object(
            "fixtures/ingress/30-gateway.yaml",
            3,
            json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                   "metadata": {"name": "atlas-gateway", "namespace": "istio-ingress"},
                   "spec": {"selector": {"istio": "my-ingress-gateway"},
                            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                         "hosts": ["atlas/*", "./ops.example.com"]}]}}),
        ),
        object(
            "fixtures/ingress/40-virtualservices.yaml",
            3,
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "nb-rest", "namespace": "atlas"},
                   "spec": {"hosts": ["*"],
                            "gateways": ["istio-ingress/atlas-gateway"],
                            "exportTo": ["."],
                            "http": [{"name": "atlas-rest-v2-pinned",
                                      "match": [{"uri": {"prefix": "/atlas-rest"},
                                                 "headers": {"x-atlas-version": {"exact": "v2"}}}],
                                      "rewrite": {"uri": "/"},
                                      "route": [{"destination": {"host": "nb-rest.atlas.svc.cluster.local",
                                                                 "subset": "v2",
                                                                 "port": {"number": 80}}}]}]}}),
        ),
        object(
            "fixtures/ingress/50-destinationrules.yaml",
            3,
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": "nb-rest", "namespace": "atlas"},
                   "spec": {"host": "nb-rest",
                            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                            "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                        {"name": "v2", "labels": {"version": "v2"}}]}}),
        ),
    ]
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        crd_timeout: Duration::from_secs(5),
        ..ApplyOptions::default()
    }
}

async fn patches(fake: &FakeApi) -> Vec<Request> {
    fake.requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .collect()
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).expect("apply body is JSON (valid YAML)")
}

#[tokio::test]
async fn applies_with_server_side_apply_in_dependency_order() {
    let fake = FakeApi::start().await;
    let applied = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect("apply");

    let paths: Vec<String> = patches(&fake)
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/atlas",
            "/api/v1/namespaces/istio-ingress",
            "/api/v1/namespaces/atlas/serviceaccounts/nb-rest",
            "/api/v1/namespaces/atlas/services/nb-rest",
            "/apis/apps/v1/namespaces/atlas/deployments/nb-rest-v1",
            "/apis/networking.istio.io/v1/namespaces/atlas/destinationrules/nb-rest",
            "/apis/networking.istio.io/v1/namespaces/istio-ingress/gateways/atlas-gateway",
            "/apis/networking.istio.io/v1/namespaces/atlas/virtualservices/nb-rest",
        ]
    );
    for r in patches(&fake).await {
        assert_eq!(
            r.headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/apply-patch+yaml"),
            "{}",
            r.url
        );
        let query: Vec<(String, String)> = r.url.query_pairs().into_owned().collect();
        assert!(
            query.contains(&("fieldManager".into(), "meshcheck".into())),
            "{}",
            r.url
        );
        assert!(
            query.contains(&("force".into(), "true".into())),
            "{}",
            r.url
        );
    }
    // The bodies are the objects: identity, and the namespace of namespaced ones.
    let vs = body(&patches(&fake).await[7]);
    assert_eq!(vs["apiVersion"], "networking.istio.io/v1");
    assert_eq!(vs["kind"], "VirtualService");
    assert_eq!(
        vs["metadata"],
        json!({"name": "nb-rest", "namespace": "atlas",
               "labels": {"app.kubernetes.io/managed-by": "meshcheck"}})
    );
    assert_eq!(
        vs["spec"]["gateways"],
        json!(["istio-ingress/atlas-gateway"])
    );
    let ns = body(&patches(&fake).await[0]);
    assert_eq!(
        ns["metadata"],
        json!({"name": "atlas", "labels": {"istio-injection": "enabled",
                                           "app.kubernetes.io/managed-by": "meshcheck"}})
    );

    // Each object was looked up first, and each group version discovered once.
    let gets = fake.calls("GET").await;
    assert!(gets.contains(
        &"/apis/networking.istio.io/v1/namespaces/atlas/virtualservices/nb-rest".to_string()
    ));
    assert_eq!(
        gets.iter()
            .filter(|p| *p == "/apis/networking.istio.io/v1")
            .count(),
        3
    );
    assert_eq!(gets.iter().filter(|p| *p == "/api/v1").count(), 3);

    let described: Vec<String> = applied.iter().map(|a| a.describe()).collect();
    assert_eq!(described[0], "Namespace atlas");
    assert_eq!(described[7], "VirtualService atlas/nb-rest");
    assert!(applied.iter().all(|a| a.created));
    assert_eq!(applied[7].api_resource.plural, "virtualservices");
    assert_eq!(applied[7].api_resource.group, "networking.istio.io");
    assert_eq!(applied[1].namespace, "");
}

/// The Namespace istio-ingress as the API shows it, with these field managers.
fn existing_istio_ingress(managers: &[&str]) -> Value {
    let managed: Vec<Value> = managers
        .iter()
        .map(|m| {
            json!({"manager": m, "operation": if *m == "meshcheck" { "Apply" } else { "Update" },
                   "apiVersion": "v1", "time": "2025-06-02T09:10:00Z", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}}}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "istio-ingress", "uid": "0b1f2a10-6f1c-4d6e-9a55-3b1a1d7e0c6e",
                        "resourceVersion": "612", "creationTimestamp": "2025-06-02T09:10:00Z",
                        "labels": {"kubernetes.io/metadata.name": "istio-ingress"},
                        "managedFields": managed},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

#[tokio::test]
async fn objects_that_existed_are_not_marked_created() {
    let fake = FakeApi::start().await;
    // istio-ingress is there already: an earlier run applied it and kept it.
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress",
        existing_istio_ingress(&["meshcheck", "kube-apiserver"]),
    )
    .await;
    let applied = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect("apply");
    let created: Vec<(String, bool)> = applied.iter().map(|a| (a.describe(), a.created)).collect();
    assert_eq!(created[0], ("Namespace atlas".to_string(), true));
    assert_eq!(created[1], ("Namespace istio-ingress".to_string(), false));
}

#[tokio::test]
async fn an_object_meshcheck_did_not_create_is_not_taken_over() {
    let fake = FakeApi::start().await;
    // istio-ingress exists, made by someone else (kubectl).
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress",
        existing_istio_ingress(&["kubectl-create", "kubectl-label"]),
    )
    .await;
    let mut applied = Vec::new();
    let err = apply_all_into(&fake.client, &ingress_fixtures(), &opts(), &mut applied)
        .await
        .expect_err("not ours");
    assert!(
        matches!(&err, KubeError::NotOurs { object, source, managers }
            if object == "Namespace istio-ingress"
                && source.to_string() == "fixtures/ingress/00-namespaces.yaml:9"
                && managers == &["kubectl-create", "kubectl-label"]),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("fixtures/ingress/00-namespaces.yaml:9: Namespace istio-ingress exists already and meshcheck did not create it (managed by kubectl-create, kubectl-label)"),
        "{msg}"
    );
    assert!(msg.contains("--adopt"), "{msg}");
    // It was not applied; what came before it was (and is known for cleanup).
    let paths: Vec<String> = patches(&fake)
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(paths, ["/api/v1/namespaces/atlas"]);
    assert_eq!(applied.len(), 1);

    // --adopt: taken over, and not deleted at the end (not created).
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress",
        existing_istio_ingress(&["kubectl-create"]),
    )
    .await;
    let adopt = ApplyOptions {
        adopt: true,
        ..opts()
    };
    let applied = apply_all(&fake.client, &ingress_fixtures(), &adopt)
        .await
        .expect("adopted");
    assert_eq!(applied[1].describe(), "Namespace istio-ingress");
    assert!(!applied[1].created);
}

#[tokio::test]
async fn rewrites_images_and_prefixes_namespaces() {
    let fake = FakeApi::start().await;
    let opts = ApplyOptions {
        image_rewrite: Some((
            "meshcheck/stub".into(),
            "meshcheck/stub:build-3f9a2c1".into(),
        )),
        namespace_prefix: Some("mc-7f3a-".into()),
        ..opts()
    };
    let applied = apply_all(&fake.client, &ingress_fixtures(), &opts)
        .await
        .expect("apply");
    let patches = patches(&fake).await;
    let paths: Vec<&str> = patches.iter().map(|r| r.url.path()).collect();
    assert_eq!(paths[0], "/api/v1/namespaces/mc-7f3a-atlas");
    assert_eq!(paths[1], "/api/v1/namespaces/mc-7f3a-istio-ingress");
    assert_eq!(
        paths[7],
        "/apis/networking.istio.io/v1/namespaces/mc-7f3a-atlas/virtualservices/nb-rest"
    );

    assert_eq!(body(&patches[0])["metadata"]["name"], "mc-7f3a-atlas");
    let deploy = body(&patches[4]);
    assert_eq!(deploy["metadata"]["namespace"], "mc-7f3a-atlas");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "meshcheck/stub:build-3f9a2c1"
    );
    assert_eq!(
        pod["containers"][1]["image"],
        "docker.io/fluent/fluent-bit:3.2"
    );
    assert_eq!(
        pod["initContainers"][0]["image"],
        "meshcheck/stub:build-3f9a2c1"
    );
    // Environment values are the app's business: left alone.
    assert_eq!(
        pod["containers"][0]["env"][1]["value"],
        "http://authz.atlas.svc.cluster.local"
    );

    let gw = body(&patches[6]);
    assert_eq!(gw["metadata"]["namespace"], "mc-7f3a-istio-ingress");
    assert_eq!(
        gw["spec"]["servers"][0]["hosts"],
        json!(["mc-7f3a-atlas/*", "./ops.example.com"])
    );
    assert_eq!(
        gw["spec"]["selector"],
        json!({"istio": "my-ingress-gateway"})
    );

    let vs = body(&patches[7]);
    assert_eq!(
        vs["spec"]["gateways"],
        json!(["mc-7f3a-istio-ingress/atlas-gateway"])
    );
    assert_eq!(vs["spec"]["exportTo"], json!(["."]));
    assert_eq!(vs["spec"]["hosts"], json!(["*"]));
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["host"],
        "nb-rest.mc-7f3a-atlas.svc.cluster.local"
    );
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["subset"],
        "v2"
    );

    assert_eq!(applied[0].name, "mc-7f3a-atlas");
    assert_eq!(applied[7].namespace, "mc-7f3a-atlas");
}

#[tokio::test]
async fn waits_for_a_crd_that_is_not_established_yet() {
    let fake = FakeApi::start().await;
    // Right after the Istio install: the group is not served for two more looks.
    Mock::given(method("GET"))
        .and(path("/apis/networking.istio.io/v1"))
        .respond_with(page_not_found())
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let applied = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect("apply once the CRDs are served");
    assert_eq!(applied.len(), 8);
    let discovery = fake
        .calls("GET")
        .await
        .into_iter()
        .filter(|p| p == "/apis/networking.istio.io/v1")
        .count();
    // Two 404s, then one per kind (DestinationRule, Gateway, VirtualService).
    assert_eq!(discovery, 5);
    assert_eq!(patches(&fake).await.len(), 8);
}

#[tokio::test]
async fn fails_naming_the_object_when_the_crd_never_appears() {
    let fake = FakeApi::start_without_istio().await;
    let opts = ApplyOptions {
        crd_timeout: Duration::from_millis(400),
        ..opts()
    };
    let started = Instant::now();
    let mut applied = Vec::new();
    let err = apply_all_into(&fake.client, &ingress_fixtures(), &opts, &mut applied)
        .await
        .expect_err("the CRD never appears");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    match &err {
        KubeError::KindNotServed {
            object,
            source,
            api_version,
            waited,
            ..
        } => {
            assert_eq!(object, "DestinationRule atlas/nb-rest");
            assert_eq!(
                source.to_string(),
                "fixtures/ingress/50-destinationrules.yaml:3"
            );
            assert_eq!(api_version, "networking.istio.io/v1");
            assert!(*waited >= Duration::from_millis(400));
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("fixtures/ingress/50-destinationrules.yaml:3: cannot apply DestinationRule atlas/nb-rest: "),
        "{msg}"
    );
    assert!(msg.contains("404 page not found"), "{msg}");
    assert!(!err.is_bad_input());
    // What was applied before the failure is known, for cleanup.
    assert_eq!(applied.len(), 5);
    assert_eq!(applied[4].describe(), "Deployment atlas/nb-rest-v1");
}

#[tokio::test]
async fn webhook_denial_is_rejected_with_object_place_and_message() {
    let fake = FakeApi::start().await;
    let message = "admission webhook \"validation.istio.io\" denied the request: \
                   configuration is invalid: total destination weight 110 != 100";
    fake.mount(
        "PATCH",
        "/apis/networking.istio.io/v1/namespaces/atlas/virtualservices/nb-rest",
        422,
        status(
            422,
            "Invalid",
            message,
            json!({"name": "nb-rest", "group": "networking.istio.io", "kind": "VirtualService",
                   "causes": [{"message": "total destination weight 110 != 100"}]}),
        ),
    )
    .await;
    let err = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect_err("denied");
    match &err {
        KubeError::Rejected {
            object,
            source,
            status,
            reason,
            message: m,
        } => {
            assert_eq!(object, "VirtualService atlas/nb-rest");
            assert_eq!(
                source.to_string(),
                "fixtures/ingress/40-virtualservices.yaml:3"
            );
            assert_eq!(*status, 422);
            assert_eq!(reason, "Invalid");
            assert_eq!(m, message);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "fixtures/ingress/40-virtualservices.yaml:3: VirtualService atlas/nb-rest was rejected \
             by the API server (422 Invalid): {message}"
        )
    );
    assert!(err.is_bad_input());
}

#[tokio::test]
async fn conflict_is_rejected_too() {
    let fake = FakeApi::start().await;
    fake.mount(
        "PATCH",
        "/apis/apps/v1/namespaces/atlas/deployments/nb-rest-v1",
        409,
        status(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
            json!({"name": "nb-rest-v1", "group": "apps", "kind": "deployments",
                   "causes": [{"reason": "FieldManagerConflict",
                               "message": "conflict with \"kubectl-client-side-apply\" using apps/v1",
                               "field": ".spec.replicas"}]}),
        ),
    )
    .await;
    let err = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect_err("conflict");
    assert!(
        matches!(&err, KubeError::Rejected { object, status: 409, source, .. }
            if object == "Deployment atlas/nb-rest-v1" && source.line == 23),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("(409 Conflict): Apply failed with 1 conflict"),
        "{err}"
    );
    assert!(!err.is_bad_input());
    // Nothing after the failing object was sent.
    assert_eq!(patches(&fake).await.len(), 5);
}

#[tokio::test]
async fn other_api_errors_name_the_action_and_place() {
    let fake = FakeApi::start().await;
    fake.mount(
        "PATCH",
        "/api/v1/namespaces/atlas/services/nb-rest",
        500,
        status(
            500,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
            json!({}),
        ),
    )
    .await;
    let err = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect_err("500");
    assert_eq!(
        err.to_string(),
        "fixtures/ingress/20-backends.yaml:9: failed to apply Service atlas/nb-rest: the API server \
         answered 500 InternalError: Internal error occurred: etcdserver: request timed out"
    );
}

#[tokio::test]
async fn delete_applied_deletes_only_created_objects_in_reverse_order() {
    let fake = FakeApi::start().await;
    fake.mount_get(
        "/api/v1/namespaces/istio-ingress",
        existing_istio_ingress(&["meshcheck"]),
    )
    .await;
    // Already gone: fine.
    fake.mount(
        "DELETE",
        "/api/v1/namespaces/atlas/serviceaccounts/nb-rest",
        404,
        status(
            404,
            "NotFound",
            "serviceaccounts \"nb-rest\" not found",
            json!({"name": "nb-rest", "kind": "serviceaccounts"}),
        ),
    )
    .await;
    let applied = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect("apply");
    delete_applied(&fake.client, &applied)
        .await
        .expect("delete");
    assert_eq!(
        fake.calls("DELETE").await,
        [
            "/apis/networking.istio.io/v1/namespaces/atlas/virtualservices/nb-rest",
            "/apis/networking.istio.io/v1/namespaces/istio-ingress/gateways/atlas-gateway",
            "/apis/networking.istio.io/v1/namespaces/atlas/destinationrules/nb-rest",
            "/apis/apps/v1/namespaces/atlas/deployments/nb-rest-v1",
            "/api/v1/namespaces/atlas/services/nb-rest",
            "/api/v1/namespaces/atlas/serviceaccounts/nb-rest",
            "/api/v1/namespaces/atlas",
        ]
    );
}

#[tokio::test]
async fn delete_applied_reports_a_failure_after_trying_the_rest() {
    let fake = FakeApi::start().await;
    let applied = apply_all(&fake.client, &ingress_fixtures(), &opts())
        .await
        .expect("apply");
    fake.mount(
        "DELETE",
        "/apis/apps/v1/namespaces/atlas/deployments/nb-rest-v1",
        403,
        status(403, "Forbidden",
               "deployments.apps \"nb-rest-v1\" is forbidden: User \"ci\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"atlas\"",
               json!({"name": "nb-rest-v1", "group": "apps", "kind": "deployments"})),
    )
    .await;
    let err = delete_applied(&fake.client, &applied)
        .await
        .expect_err("forbidden");
    assert!(
        err.to_string().starts_with(
            "failed to delete Deployment atlas/nb-rest-v1: the API server answered 403 Forbidden"
        ),
        "{err}"
    );
    assert_eq!(fake.calls("DELETE").await.len(), 8);
}

/// `(path, body)` of every PATCH, in order.
async fn sent(fake: &FakeApi) -> Vec<(String, Value)> {
    patches(fake)
        .await
        .iter()
        .map(|r| (r.url.path().to_string(), body(r)))
        .collect()
}

fn sent_to(all: &[(String, Value)], suffix: &str) -> Value {
    all.iter()
        .find(|(p, _)| p.ends_with(suffix))
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| panic!("no PATCH of {suffix}"))
}

/// With a prefix the run is isolated on a shared cluster: no fixed NodePort (the API
/// server allocates a free one), and the labels the run's Gateway selects its gateway
/// pods by are the run's own, everywhere they are used.
#[tokio::test]
async fn a_prefix_drops_node_ports_and_makes_the_gateway_selector_unique() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = crate::fixtures::load_dir(&root.join("fixtures/ingress")).expect("fixtures");
    let fake = FakeApi::start().await;
    let prefixed = ApplyOptions {
        namespace_prefix: Some("mc-7f3a-".into()),
        ..opts()
    };
    apply_all(&fake.client, &fx.objects, &prefixed)
        .await
        .expect("apply");
    let all = sent(&fake).await;

    let svc = sent_to(
        &all,
        "/namespaces/mc-7f3a-istio-ingress/services/my-ingress-gateway",
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": 8080}])
    );
    assert_eq!(
        svc["spec"]["selector"],
        json!({"istio": "mc-7f3a-my-ingress-gateway"})
    );
    // Labels that are not selectors stay.
    assert_eq!(svc["metadata"]["labels"]["istio"], "my-ingress-gateway");

    let gw_deploy = sent_to(
        &all,
        "/namespaces/mc-7f3a-istio-ingress/deployments/my-ingress-gateway",
    );
    assert_eq!(
        gw_deploy["spec"]["selector"]["matchLabels"],
        json!({"istio": "mc-7f3a-my-ingress-gateway"})
    );
    let labels = &gw_deploy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["istio"], "mc-7f3a-my-ingress-gateway");
    assert_eq!(labels["app"], "devel-platform-gateway");
    assert_eq!(labels["sidecar.istio.io/inject"], "true");

    let gateway = sent_to(&all, "/namespaces/mc-7f3a-atlas/gateways/atlas-gateway");
    assert_eq!(
        gateway["spec"]["selector"],
        json!({"istio": "mc-7f3a-my-ingress-gateway"})
    );

    // The apps' labels are not gateway selectors: unchanged.
    let app = all
        .iter()
        .find(|(p, _)| p.contains("/namespaces/mc-7f3a-atlas/deployments/"))
        .map(|(_, b)| b.clone())
        .expect("an app Deployment");
    let app_labels = app["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels");
    assert!(
        app_labels
            .values()
            .all(|v| !v.as_str().unwrap_or_default().starts_with("mc-7f3a-")),
        "{app_labels:?}"
    );

    // Without a prefix the fixtures go as written.
    let fake = FakeApi::start().await;
    apply_all(&fake.client, &fx.objects, &opts())
        .await
        .expect("apply");
    let all = sent(&fake).await;
    let svc = sent_to(
        &all,
        "/namespaces/istio-ingress/services/my-ingress-gateway",
    );
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"istio": "my-ingress-gateway"})
    );
}
