//! A fake Kubernetes API server (wiremock) answering like a kind cluster with
//! Istio installed: discovery documents, 404 `Status` for absent objects,
//! server-side apply echoing the object, deletes.

use crate::fixtures::{Object, Source};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Priority of the catch-all answers (wiremock: lower wins; default 5).
pub const FALLBACK: u8 = 10;

pub struct FakeApi {
    pub server: MockServer,
    pub client: ::kube::Client,
}

impl FakeApi {
    /// A server that serves core, apps and networking.istio.io/v1.
    pub async fn start() -> Self {
        let fake = Self::start_without_istio().await;
        fake.serve_istio().await;
        fake
    }

    /// A server whose Istio CRDs are not installed (yet): discovery of
    /// networking.istio.io/v1 answers 404 like a real API server.
    pub async fn start_without_istio() -> Self {
        let server = MockServer::start().await;
        let config = ::kube::Config::new(server.uri().parse().expect("mock server URI"));
        let client = ::kube::Client::try_from(config).expect("client for the fake API server");
        let fake = FakeApi { server, client };
        fake.mount_get("/api", api_versions()).await;
        fake.mount_get("/api/v1", core_v1_resources()).await;
        fake.mount_get("/apis", api_group_list()).await;
        fake.mount_get("/apis/apps/v1", apps_v1_resources()).await;
        for group in ["/apis/networking.istio.io/v1", "/apis/security.istio.io/v1"] {
            Mock::given(method("GET"))
                .and(path(group))
                .respond_with(page_not_found())
                .with_priority(FALLBACK)
                .mount(&fake.server)
                .await;
        }
        // Istio's default-revision injector (a cluster with `istioctl install`).
        Mock::given(method("GET"))
            .and(path(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(default_injector()))
            .with_priority(FALLBACK - 1)
            .mount(&fake.server)
            .await;
        // Objects not created yet.
        Mock::given(method("GET"))
            .and(path_regex(r"^/apis?/.+/[^/]+/[^/]+$"))
            .respond_with(NotFound)
            .with_priority(FALLBACK)
            .mount(&fake.server)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ApplyEcho)
            .with_priority(FALLBACK)
            .mount(&fake.server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "details": {}
            })))
            .with_priority(FALLBACK)
            .mount(&fake.server)
            .await;
        fake
    }

    /// Answers the MutatingWebhookConfigurations list with `body` (e.g. a revision-only
    /// install's).
    pub async fn serve_webhooks(&self, body: Value) {
        self.mount_get(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            body,
        )
        .await;
    }

    pub async fn serve_istio(&self) {
        self.mount_get(
            "/apis/networking.istio.io/v1",
            istio_networking_v1_resources(),
        )
        .await;
        self.mount_get("/apis/security.istio.io/v1", istio_security_v1_resources())
            .await;
    }

    /// Answers GET `p` with `body` (before the fallbacks).
    pub async fn mount_get(&self, p: &str, body: Value) {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    /// Answers every request `verb` `p` with `status` and `body`.
    pub async fn mount(&self, verb: &str, p: &str, status: u16, body: Value) {
        Mock::given(method(verb))
            .and(path(p))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .expect("request recording is on")
    }

    /// `(method, path)` of the requests with `verb`, in order.
    pub async fn calls(&self, verb: &str) -> Vec<String> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == verb)
            .map(|r| r.url.path().to_string())
            .collect()
    }
}

/// A fixture object as the loader makes it.
pub fn object(file: &str, line: usize, raw: Value) -> Object {
    let s = |p: &str| {
        raw.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let kind = s("/kind");
    let namespace = match (kind.as_str(), s("/metadata/namespace")) {
        ("Namespace", _) => String::new(),
        (_, ns) if ns.is_empty() => "default".to_string(),
        (_, ns) => ns,
    };
    Object {
        kind,
        api_version: s("/apiVersion"),
        namespace,
        name: s("/metadata/name"),
        source: Source {
            file: PathBuf::from(file),
            line,
        },
        raw,
    }
}

/// A Kubernetes `Status` failure body.
pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code
    })
}

/// What the API server answers for an API path nobody serves.
pub fn page_not_found() -> ResponseTemplate {
    ResponseTemplate::new(404)
        .insert_header("content-type", "text/plain; charset=utf-8")
        .set_body_string("404 page not found\n")
}

/// 404 NotFound `Status` naming the object of the path.
struct NotFound;

impl Respond for NotFound {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let segments: Vec<&str> = request.url.path().split('/').collect();
        let name = segments[segments.len() - 1];
        let resource = segments[segments.len() - 2];
        let group = if segments[1] == "apis" {
            segments[2]
        } else {
            ""
        };
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        ResponseTemplate::new(404).set_body_json(status(
            404,
            "NotFound",
            &format!("{qualified} \"{name}\" not found"),
            json!({"name": name, "group": group, "kind": resource}),
        ))
    }
}

/// Server-side apply: answers the applied object as stored.
struct ApplyEcho;

impl Respond for ApplyEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut body: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => {
                return ResponseTemplate::new(400).set_body_json(status(
                    400,
                    "BadRequest",
                    &format!("error decoding YAML: {e}"),
                    json!({}),
                ))
            }
        };
        let meta = &mut body["metadata"];
        meta["uid"] = json!("6f1c1d7e-3b1a-4d6e-9a55-0c6e0b1f2a10");
        meta["resourceVersion"] = json!("48213");
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!("2025-06-02T09:14:07Z");
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// Answers the `n`th matching request with `bodies[n]`, the last one after that.
pub struct Sequence {
    bodies: Vec<(u16, Value)>,
    calls: AtomicUsize,
}

impl Sequence {
    pub fn new(bodies: Vec<(u16, Value)>) -> Self {
        Sequence {
            bodies,
            calls: AtomicUsize::new(0),
        }
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let (code, body) = &self.bodies[n.min(self.bodies.len() - 1)];
        ResponseTemplate::new(*code).set_body_json(body)
    }
}

fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "172.18.0.2:6443"}]
    })
}

fn api_group_list() -> Value {
    let group = |name: &str, versions: &[&str]| {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        json!({"name": name, "versions": vs.clone(), "preferredVersion": vs[0].clone()})
    };
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            group("apiregistration.k8s.io", &["v1"]),
            group("apps", &["v1"]),
            group("rbac.authorization.k8s.io", &["v1"]),
            group("apiextensions.k8s.io", &["v1"]),
            group("admissionregistration.k8s.io", &["v1"]),
            group("networking.istio.io", &["v1", "v1beta1", "v1alpha3"]),
            group("security.istio.io", &["v1", "v1beta1"]),
        ]
    })
}

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource(name: &str, singular: &str, kind: &str, namespaced: bool, short: &[&str]) -> Value {
    let mut r = json!({
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": RW,
        "storageVersionHash": "Q3oi5N2YM8M="
    });
    if !short.is_empty() {
        r["shortNames"] = json!(short);
    }
    r
}

fn subresource(name: &str, kind: &str, namespaced: bool) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]})
}

fn core_v1_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            resource("configmaps", "configmap", "ConfigMap", true, &["cm"]),
            resource("namespaces", "namespace", "Namespace", false, &["ns"]),
            subresource("namespaces/finalize", "Namespace", false),
            subresource("namespaces/status", "Namespace", false),
            resource("nodes", "node", "Node", false, &["no"]),
            subresource("nodes/status", "Node", false),
            resource("pods", "pod", "Pod", true, &["po"]),
            subresource("pods/status", "Pod", true),
            resource("secrets", "secret", "Secret", true, &[]),
            resource("serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"]),
            resource("services", "service", "Service", true, &["svc"]),
            subresource("services/status", "Service", true),
        ]
    })
}

fn apps_v1_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apps/v1",
        "resources": [
            resource("daemonsets", "daemonset", "DaemonSet", true, &["ds"]),
            resource("deployments", "deployment", "Deployment", true, &["deploy"]),
            subresource("deployments/scale", "Scale", true),
            subresource("deployments/status", "Deployment", true),
            resource("replicasets", "replicaset", "ReplicaSet", true, &["rs"]),
            resource("statefulsets", "statefulset", "StatefulSet", true, &["sts"]),
        ]
    })
}

fn istio_networking_v1_resources() -> Value {
    let crd = |name: &str, singular: &str, kind: &str, short: &[&str]| {
        let mut r = resource(name, singular, kind, true, short);
        r["categories"] = json!(["istio-io", "networking-istio-io"]);
        r
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "networking.istio.io/v1",
        "resources": [
            crd("destinationrules", "destinationrule", "DestinationRule", &["dr"]),
            subresource("destinationrules/status", "DestinationRule", true),
            crd("gateways", "gateway", "Gateway", &["gw"]),
            subresource("gateways/status", "Gateway", true),
            crd("serviceentries", "serviceentry", "ServiceEntry", &["se"]),
            subresource("serviceentries/status", "ServiceEntry", true),
            crd("virtualservices", "virtualservice", "VirtualService", &["vs"]),
            subresource("virtualservices/status", "VirtualService", true),
        ]
    })
}

fn istio_security_v1_resources() -> Value {
    let crd = |name: &str, singular: &str, kind: &str, short: &[&str]| {
        let mut r = resource(name, singular, kind, true, short);
        r["categories"] = json!(["istio-io", "security-istio-io"]);
        r
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "security.istio.io/v1",
        "resources": [
            crd("authorizationpolicies", "authorizationpolicy", "AuthorizationPolicy", &["ap"]),
            subresource("authorizationpolicies/status", "AuthorizationPolicy", true),
            crd("peerauthentications", "peerauthentication", "PeerAuthentication", &["pa"]),
            subresource("peerauthentications/status", "PeerAuthentication", true),
            crd("requestauthentications", "requestauthentication", "RequestAuthentication", &["ra"]),
            subresource("requestauthentications/status", "RequestAuthentication", true),
        ]
    })
}

/// Any Deployment, rolled out; its one container runs `image` (istiod's tag is what
/// says which Istio is installed).
pub struct RolledOut(pub String);

impl Respond for RolledOut {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let seg: Vec<&str> = request.url.path().split('/').collect();
        let (ns, name) = (seg[5], seg[7]);
        ResponseTemplate::new(200).set_body_json(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "generation": 1,
                         "managedFields": [{"manager": "meshcheck", "operation": "Apply", "apiVersion": "apps/v1"}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": self.0}]}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "True"},
                                      {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        }))
    }
}

/// The MutatingWebhookConfigurations of a default `istioctl install`: the default
/// revision's `rev.namespace.` webhook and the default injector's `namespace.` one.
pub fn default_injector() -> Value {
    injector_list(&[
        ("rev.namespace.sidecar-injector.istio.io", "default"),
        ("namespace.sidecar-injector.istio.io", "default"),
    ])
}

/// A MutatingWebhookConfigurationList with one configuration holding `hooks`
/// (`(name, revision)`).
pub fn injector_list(hooks: &[(&str, &str)]) -> Value {
    let webhooks: Vec<Value> = hooks
        .iter()
        .map(|(name, rev)| {
            json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                   "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system"}},
                   "namespaceSelector": {"matchExpressions": [
                       {"key": "istio.io/rev", "operator": "In", "values": [rev]}]}})
        })
        .collect();
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfigurationList",
           "metadata": {}, "items": [{"metadata": {"name": "istio-sidecar-injector"}, "webhooks": webhooks}]})
}
