//! The Gateway API ingress (fixtures/ingress-gateway-api: a Gateway whose
//! `addresses` names the existing gateway Service, HTTPRoutes, a ReferenceGrant) on a
//! real API server and a real istiod: `--target sandbox` installs the Gateway API
//! CRDs (standard channel, the version Istio 1.30 requires, from the Go module
//! proxy), applies the fixtures as written, and the ingress suite passes (istiod
//! converts the HTTPRoutes, the gateway's Envoy gets them over ADS). On the shared
//! sandbox's API (`--target existing`, which has no Gateway API CRDs until a run
//! installs them) a run without `--install-gateway-api-crds` is refused with exit 3
//! naming them, and one with the flag installs them and deploys.
//!
//! A managed Gateway (no `addresses`) runs too: istiod's deployment controller
//! creates its Deployment and Service, the sandbox plays the pod, and meshcheck reads
//! the live NodePort.
//!
//! Skipped (saying why) where the sandbox cannot run, failing under
//! `MESHCHECK_REQUIRE_SANDBOX=1`, as the other sandbox tests.

mod common;
use common::sandbox::{available, client, existing_with};
use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

const GW_API: &str = "fixtures/ingress-gateway-api";

/// One sandbox at a time: the machine has 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const REQUIRED: [&str; 4] = [
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
];

/// An HTTPRoute to a Service in istio-ingress, which grants nothing to atlas.
const CROSS_NAMESPACE_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: cross
  namespace: atlas
spec:
  parentRefs:
  - name: atlas-gateway
    namespace: istio-ingress
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /cross
    backendRefs:
    - name: shared
      namespace: istio-ingress
      port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: shared
  namespace: istio-ingress
spec:
  selector:
    app: shared
  ports:
  - port: 80
";

const CROSS_NAMESPACE_CHECKS: &str = "  - group: status
    name: cross-500
    http:
      request: { path: /cross }
      expect: { status: 500, backend: none }
  - group: status
    name: cross-not-permitted
    status:
      object: HTTPRoute atlas/cross
      scope: Gateway istio-ingress/atlas-gateway
      conditions:
      - { type: ResolvedRefs, status: \"False\", reason: RefNotPermitted }
";

#[test]
fn the_gateway_api_ingress_passes_the_ingress_suite_on_the_real_control_plane() {
    if !available("the sandbox Gateway API ingress run") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let junit = tempfile::NamedTempFile::new().unwrap();
    // The ingress suite, plus the conditions the real istiod writes on the route: read
    // from the object's status on the cluster.
    // And a route to a Service of another namespace without a ReferenceGrant: istiod
    // answers 500 and writes ResolvedRefs=False (RefNotPermitted), as the model says.
    let f = FixtureCopy::of(GW_API);
    f.write("60-cross.yaml", CROSS_NAMESPACE_ROUTE);
    let text = std::fs::read_to_string(root().join("suites/ingress.yaml")).unwrap()
        + "\n  - group: status\n    name: nb-rest-accepted\n    status:\n      object: HTTPRoute atlas/nb-rest\n      scope: Gateway istio-ingress/atlas-gateway\n      conditions:\n      - { type: Accepted, status: \"True\", reason: Accepted }\n      - { type: ResolvedRefs, status: \"True\", reason: ResolvedRefs }\n"
        + CROSS_NAMESPACE_CHECKS;
    let suite = f.suite_file(&text);
    let r = Run::new()
        .arg("--suite")
        .arg(suite.path())
        .arg("--target")
        .arg("sandbox")
        .fixtures(f.path())
        .arg("--junit")
        .arg(junit.path())
        .run_plain();
    // The one failure: the static finding for the route istiod does not resolve.
    let failed: Vec<&str> = r.failed.iter().map(String::as_str).collect();
    assert_eq!(
        failed,
        vec!["static::gateway-api-status"],
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    for c in [
        "status::nb-rest-accepted",
        "static::simulate::status::nb-rest-accepted",
        "status::cross-500",
        "status::cross-not-permitted",
        "static::simulate::status::cross-not-permitted",
    ] {
        assert!(r.passed.contains(c), "{c}\n{}\n{}", r.stdout, r.stderr);
    }
    assert!(
        r.passed.contains("routing::atlas-rest-rewrite"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // The sandbox had no Gateway API: meshcheck installed the CRDs first.
    assert!(
        r.stderr
            .contains("installing the Gateway API CRDs v1.5.1 (standard channel; missing: gatewayclasses.gateway.networking.k8s.io"),
        "{}",
        r.stderr
    );
    // The gateway pod behind the Gateway's address took the routes over xDS.
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert!(
        xml.contains("name=\"sandbox.xds.proxies\" value=\"")
            && xml.contains("my-ingress-gateway-"),
        "{xml}"
    );
    // Nothing left: no process of the run, no directory.
    let dir = sandbox_dir(junit.path());
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let left = processes_with(&dir.display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// A managed Gateway (no `addresses`, no gateway Deployment of the fixtures' own):
/// istiod's deployment controller creates `atlas-gateway-istio` (Deployment, Service,
/// ServiceAccount) from its kube-gateway template, the sandbox's kubelet plays its
/// pod (`proxy router`, with the template's `net.ipv4.ip_unprivileged_port_start=0`
/// so that Envoy binds port 80 as uid 1337), meshcheck waits for that rollout and
/// reaches the gateway at the live NodePort of istiod's Service. What fails is what
/// the static analysis predicts: istiod's Service also exposes the status port 15021
/// (extractServicePorts), which the suite's port policy does not allow.
#[test]
fn a_managed_gateway_deployed_by_istiod_passes_the_routing_checks() {
    if !available("the sandbox managed Gateway run") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = FixtureCopy::of(GW_API);
    std::fs::remove_file(f.path().join("10-ingress-gateway.yaml")).unwrap();
    f.replace(
        "30-gateway.yaml",
        "  addresses:\n  - type: Hostname\n    value: my-ingress-gateway.istio-ingress.svc.cluster.local\n",
        "",
    );
    let junit = tempfile::NamedTempFile::new().unwrap();
    let r = Run::new()
        .arg("--suite")
        .arg("ingress")
        .arg("--target")
        .arg("sandbox")
        .fixtures(f.path())
        .arg("--junit")
        .arg(junit.path())
        .run_plain();
    assert_fails_exactly(&r, &["static::exposed-ports", "ports::only-http-nodeport"]);
    for check in [
        "routing::atlas-ui",
        "routing::atlas-rest-rewrite",
        "subsets::split-90-10",
        "sidecars::mtls-at-backends",
    ] {
        assert!(
            r.passed.contains(check),
            "{check}\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert!(
        r.stderr
            .contains("istio-ingress/atlas-gateway-istio: rolled out"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("exposes port 15021 (status-port)"),
        "{}",
        r.stdout
    );
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert!(xml.contains("atlas-gateway-istio-"), "{xml}");
    let dir = sandbox_dir(junit.path());
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let left = processes_with(&dir.display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// The `status` of `resource` (a Gateway API kind) `ns/name` once `done` holds for
/// it, polled for at most a minute (istiod's status writer, leader-elected, writes it).
fn wait_status(
    rt: &tokio::runtime::Runtime,
    ns: &str,
    resource: &str,
    name: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "");
    let ar = ApiResource::from_gvk_with_plural(&gvk, resource);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = rt.block_on(async {
            let api: Api<DynamicObject> = Api::namespaced_with(client().await, ns, &ar);
            api.get(name)
                .await
                .map(|o| o.data["status"].clone())
                .unwrap_or_default()
        });
        if done(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{resource} {ns}/{name}: status after 60s: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The status of condition `type_` in a conditions list.
fn condition<'a>(conditions: &'a serde_json::Value, type_: &str) -> Option<&'a str> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)?["status"].as_str()
}

/// The run's sandbox directory, from the JUnit report's `sandbox.dir` property.
fn sandbox_dir(junit: &std::path::Path) -> std::path::PathBuf {
    let xml = std::fs::read_to_string(junit).unwrap();
    let key = "name=\"sandbox.dir\" value=\"";
    let at = xml.find(key).expect("sandbox.dir property");
    let rest = &xml[at + key.len()..];
    std::path::PathBuf::from(&rest[..rest.find('"').unwrap()])
}

/// Waits (at most 2 min) until the namespaces of the runs under `prefixes` are gone,
/// so that no pod of theirs is still terminating when the shared sandbox stops with
/// the test binary.
fn wait_namespaces_gone(rt: &tokio::runtime::Runtime, prefixes: &[&str]) {
    use k8s_openapi::api::core::v1::Namespace;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left: Vec<String> = rt.block_on(async {
            let api: Api<Namespace> = Api::all(client().await);
            api.list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
                .collect()
        });
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "namespaces still there after 2 min: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn an_existing_cluster_without_the_crds_is_refused_and_the_flag_installs_them() {
    if !available("the existing-target Gateway API CRD test") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fixtures = root().join(GW_API);
    let refused = existing_with("gwc-", Some(&fixtures), &[]);
    assert_eq!(refused.code, 3, "{}\n{}", refused.stdout, refused.stderr);
    for crd in REQUIRED {
        assert!(refused.stderr.contains(crd), "{crd}: {}", refused.stderr);
    }
    assert!(
        refused.stderr.contains("--install-gateway-api-crds"),
        "{}",
        refused.stderr
    );
    // Nothing was applied: no namespace of the run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let crds_now = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let api: Api<CustomResourceDefinition> = Api::all(client().await);
            let mut have = Vec::new();
            for name in REQUIRED {
                if let Some(crd) = api.get_opt(name).await.unwrap() {
                    have.push((name.to_string(), crd));
                }
            }
            have
        })
    };
    assert!(crds_now(&rt).is_empty(), "the refused run installed CRDs");

    let installed = existing_with(
        "gwc-",
        Some(&fixtures),
        &[
            "--install-gateway-api-crds",
            "--keep",
            "--service-type",
            "NodePort",
        ],
    );
    assert_eq!(
        installed.code, 0,
        "{}\n{}",
        installed.stdout, installed.stderr
    );
    assert!(
        installed
            .stderr
            .contains("installing the Gateway API CRDs v1.5.1"),
        "{}",
        installed.stderr
    );
    let have = crds_now(&rt);
    assert_eq!(have.len(), 4, "{have:?}");
    for (name, crd) in &have {
        let conditions = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name}: {conditions:?}"
        );
        // As published: istiod ignores a Gateway API CRD without its bundle version.
        let annotations = crd.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("gateway.networking.k8s.io/bundle-version")
                .map(String::as_str),
            Some("v1.5.1"),
            "{name}"
        );
    }
    // Under the prefix, istiod accepted the routes: the Gateway's namespace selector
    // (`kubernetes.io/metadata.name: atlas`) was renamed with the namespace, and its
    // address names the run's own gateway Service (gwc-istio-ingress).
    let route = wait_status(&rt, "gwc-atlas", "httproutes", "atlas-ui", |st| {
        let c = &st["parents"][0]["conditions"];
        condition(c, "Accepted") == Some("True") && condition(c, "ResolvedRefs") == Some("True")
    });
    assert_eq!(
        route["parents"][0]["parentRef"]["namespace"], "gwc-istio-ingress",
        "{route}"
    );
    let gateway = wait_status(
        &rt,
        "gwc-istio-ingress",
        "gateways",
        "atlas-gateway",
        |st| condition(&st["conditions"], "Programmed") == Some("True"),
    );
    assert!(
        gateway.to_string().contains("gwc-istio-ingress"),
        "{gateway}"
    );
    rt.block_on(async {
        use k8s_openapi::api::core::v1::Namespace;
        let api: Api<Namespace> = Api::all(client().await);
        for ns in ["gwc-atlas", "gwc-istio-ingress"] {
            let _ = api.delete(ns, &Default::default()).await;
        }
    });
    wait_namespaces_gone(&rt, &["gwc-"]);

    // Now present: a run without the flag needs nothing installed.
    let again = existing_with("gwd-", Some(&fixtures), &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        !again.stderr.contains("installing the Gateway API CRDs"),
        "{}",
        again.stderr
    );
    wait_namespaces_gone(&rt, &["gwc-", "gwd-"]);
}
