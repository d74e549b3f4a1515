//! The existing target's cluster code against a real API server (the shared sandbox,
//! its API exposed on 127.0.0.1): server-side apply and field managers, namespace
//! prefix isolation, `--adopt` and a foreign object never taken over, rollout waits
//! with real pods (and one that cannot roll out), a Terminating namespace, injection by
//! revision, a mesh config the installation lacks, istiod's validation refusing an
//! object (named with the fixture's file:line), and cleanup leaving nothing. Each test runs under a namespace prefix
//! of its own, so they share one sandbox. The traffic checks are covered by
//! `--target sandbox` (tests/sandbox.rs), which deploys through the same code; here
//! the run is limited to `sidecars::injected` (read through the API), since the
//! sandbox's node address is inside its network namespace.

mod common;
use common::sandbox::{available, client, existing_with};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

fn existing(prefix: &str, extra: &[&str]) -> RunResult {
    existing_with(prefix, None, extra)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until `done` holds (polling every 200 ms), at most `within`.
fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    rt().block_on(async {
        let api: Api<Namespace> = Api::all(client().await);
        namespaces_with_async(&api, prefix).await
    })
}

/// Deletes the namespaces of `prefix` (what a `--keep` run or a test left) and waits
/// until they are gone.
fn delete_namespaces(prefix: &str) {
    rt().block_on(async {
        let api: Api<Namespace> = Api::all(client().await);
        for ns in namespaces_with_async(&api, prefix).await {
            let _ = api.delete(&ns, &DeleteParams::default()).await;
        }
    });
    wait_until(Duration::from_secs(120), "the namespaces are gone", || {
        namespaces_with(prefix).is_empty()
    });
}

async fn namespaces_with_async(api: &Api<Namespace>, prefix: &str) -> Vec<String> {
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn assert_passed(r: &RunResult) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.passed.contains("sidecars::injected"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// Every object of the run is applied server-side by the field manager `meshcheck`
/// (an `Apply` entry in managedFields), the pods are injected by the real injector,
/// and a run that finds the objects of an earlier `--keep` run applies them again
/// but, not having created them, does not delete them.
#[test]
fn objects_are_applied_server_side_by_meshcheck_and_pods_injected_by_istiod() {
    if !available("the real-API server-side apply test") {
        return;
    }
    let r = existing("ssa-", &["--keep", "--service-type", "NodePort"]);
    assert_passed(&r);
    rt().block_on(async {
        let c = client().await;
        let deploys: Api<Deployment> = Api::namespaced(c.clone(), "ssa-atlas");
        let services: Api<Service> = Api::namespaced(c.clone(), "ssa-istio-ingress");
        let d = deploys.get("authz").await.unwrap();
        let s = services.get("my-ingress-gateway").await.unwrap();
        // --service-type NodePort: no load balancer asked of the cluster.
        assert_eq!(s.spec.as_ref().unwrap().type_.as_deref(), Some("NodePort"));
        for (what, fields) in [
            ("Deployment authz", &d.metadata.managed_fields),
            ("Service my-ingress-gateway", &s.metadata.managed_fields),
        ] {
            let fields = fields.as_ref().unwrap();
            assert!(
                fields
                    .iter()
                    .any(|f| f.manager.as_deref() == Some("meshcheck")
                        && f.operation.as_deref() == Some("Apply")),
                "{what}: {fields:?}"
            );
        }
        // The image the run was told to use, played by the sandbox as the stub.
        let image = d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone();
        assert_eq!(
            image.as_deref(),
            Some("registry.example/team/meshcheck/stub:v1")
        );
        let pods: Api<Pod> = Api::namespaced(c, "ssa-atlas");
        let list = pods.list(&ListParams::default()).await.unwrap();
        assert!(!list.items.is_empty());
        for p in &list.items {
            let status = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("sidecar.istio.io/status"));
            assert!(
                status.is_some_and(
                    |s| s.contains("istio-proxy") && s.contains("\"revision\":\"default\"")
                ),
                "{:?}: {status:?}",
                p.metadata.name
            );
        }
    });
    // Again: ours (the manager is meshcheck), applied without --adopt, not deleted.
    let again = existing("ssa-", &[]);
    assert_passed(&again);
    assert!(
        again
            .stderr
            .contains("deleting the 0 object(s) this run created"),
        "{}",
        again.stderr
    );
    assert_eq!(namespaces_with("ssa-").len(), 2);
    delete_namespaces("ssa-");
}

/// A run deletes what it created: its namespaces (and with them every pod, which the
/// sandbox's kubelet stops) are gone afterwards.
#[test]
fn a_run_leaves_nothing_behind_on_the_cluster() {
    if !available("the real-API cleanup test") {
        return;
    }
    let r = existing("clean-", &[]);
    assert_passed(&r);
    wait_until(
        Duration::from_secs(120),
        "the run's namespaces are deleted",
        || namespaces_with("clean-").is_empty(),
    );
}

/// Two runs at once under different prefixes: the fixtures' fixed NodePort is dropped
/// (the API server allocates one for each), and each run's Gateway selects only its
/// own gateway pods.
#[test]
fn namespace_prefixes_isolate_concurrent_runs() {
    if !available("the real-API isolation test") {
        return;
    }
    let a = std::thread::spawn(|| existing("iso1-", &["--keep"]));
    let b = existing("iso2-", &["--keep"]);
    let a = a.join().unwrap();
    assert_passed(&a);
    assert_passed(&b);
    rt().block_on(async {
        let c = client().await;
        let mut ports = Vec::new();
        for p in ["iso1-", "iso2-"] {
            let svc: Api<Service> = Api::namespaced(c.clone(), &format!("{p}istio-ingress"));
            let s = svc.get("my-ingress-gateway").await.unwrap();
            let spec = s.spec.unwrap();
            ports.push(spec.ports.unwrap()[0].node_port.unwrap());
            let selector = spec.selector.unwrap();
            assert_eq!(
                selector.get("istio").map(String::as_str),
                Some(format!("{p}my-ingress-gateway").as_str())
            );
            let gw: Api<kube::api::DynamicObject> = Api::namespaced_with(
                c.clone(),
                &format!("{p}istio-ingress"),
                &kube::api::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                    "networking.istio.io",
                    "v1",
                    "Gateway",
                )),
            );
            let list = gw.list(&ListParams::default()).await.unwrap();
            for g in list.items {
                assert_eq!(
                    g.data["spec"]["selector"]["istio"],
                    json!(format!("{p}my-ingress-gateway"))
                );
            }
        }
        assert_ne!(ports[0], ports[1], "{ports:?}");
    });
    delete_namespaces("iso1-");
    delete_namespaces("iso2-");
}

/// A fixture object that exists and was not created by meshcheck (here a Service
/// created by `someone-else`) is refused, named with the fixture's file:line, and left
/// unchanged; with `--adopt` it is taken over, and not deleted at the end (the run did
/// not create it) while what the run created is.
#[test]
fn a_foreign_object_is_taken_over_only_with_adopt() {
    if !available("the real-API adopt test") {
        return;
    }
    rt().block_on(async {
        let c = client().await;
        let ns: Api<Namespace> = Api::all(c.clone());
        let pp = PostParams { field_manager: Some("someone-else".into()), ..Default::default() };
        ns.create(&pp, &serde_json::from_value(json!({"metadata": {"name": "adopt-atlas"}})).unwrap())
            .await
            .unwrap();
        let svc: Api<Service> = Api::namespaced(c, "adopt-atlas");
        let s = json!({"metadata": {"name": "authz", "labels": {"owner": "someone-else"}},
                       "spec": {"selector": {"app": "authz"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        svc.create(&pp, &serde_json::from_value(s).unwrap()).await.unwrap();
    });
    let refused = existing("adopt-", &[]);
    assert_eq!(refused.code, 3, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("Namespace adopt-atlas exists already and meshcheck did not create it")
            && refused.stderr.contains("someone-else")
            && refused.stderr.contains("--adopt")
            && refused.stderr.contains("00-namespaces.yaml:"),
        "{}",
        refused.stderr
    );
    let managers = || {
        rt().block_on(async {
            let svc: Api<Service> = Api::namespaced(client().await, "adopt-atlas");
            let s = svc.get("authz").await.unwrap();
            let m: Vec<String> = s
                .metadata
                .managed_fields
                .unwrap()
                .into_iter()
                .filter_map(|f| f.manager)
                .collect();
            m
        })
    };
    assert_eq!(managers(), vec!["someone-else".to_string()]);
    let adopted = existing("adopt-", &["--adopt"]);
    assert_passed(&adopted);
    assert!(
        managers().contains(&"meshcheck".to_string()),
        "{:?}",
        managers()
    );
    // The run created adopt-istio-ingress (deleted) and the Deployments; it found
    // adopt-atlas and the Service (kept).
    wait_until(
        Duration::from_secs(120),
        "adopt-istio-ingress is deleted",
        || namespaces_with("adopt-") == vec!["adopt-atlas".to_string()],
    );
    rt().block_on(async {
        let c = client().await;
        let deploys: Api<Deployment> = Api::namespaced(c, "adopt-atlas");
        assert!(deploys
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty());
    });
    delete_namespaces("adopt-");
}

/// A Deployment whose image the cluster cannot run never rolls out: the wait ends at
/// `--rollout-timeout`, naming the Deployment and why its pod is not ready, and the
/// run still deletes what it created.
#[test]
fn a_rollout_that_cannot_complete_fails_at_the_rollout_timeout_with_the_reason() {
    if !available("the real-API stuck rollout test") {
        return;
    }
    let f = FixtureCopy::new();
    f.replace(
        "20-backends.yaml",
        "meshcheck/stub:latest",
        "registry.example/not-a-stub:v1",
    );
    let started = Instant::now();
    let r = existing_with("stuck-", Some(f.path()), &["--rollout-timeout", "20s"]);
    let took = started.elapsed();
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("stuck-atlas/") && r.stderr.contains("registry.example/not-a-stub:v1"),
        "{}",
        r.stderr
    );
    assert!(took < Duration::from_secs(90), "{took:?}");
    wait_until(
        Duration::from_secs(120),
        "the failed run's namespaces are deleted",
        || namespaces_with("stuck-").is_empty(),
    );
}

/// A namespace being deleted (held by a finalizer) is refused before anything is
/// applied, named with what holds it.
#[test]
fn a_terminating_namespace_is_refused_before_anything_is_applied() {
    if !available("the real-API Terminating namespace test") {
        return;
    }
    rt().block_on(async {
        let c = client().await;
        let ns: Api<Namespace> = Api::all(c.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "term-atlas"}})).unwrap(),
        )
        .await
        .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(c, "term-atlas");
        let cm = json!({"metadata": {"name": "held", "finalizers": ["meshcheck.test/hold"]}});
        cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
            .await
            .unwrap();
        ns.delete("term-atlas", &DeleteParams::default())
            .await
            .unwrap();
    });
    let phase = || {
        rt().block_on(async {
            let ns: Api<Namespace> = Api::all(client().await);
            ns.get("term-atlas")
                .await
                .unwrap()
                .status
                .and_then(|s| s.phase)
        })
    };
    wait_until(Duration::from_secs(30), "term-atlas is Terminating", || {
        phase().as_deref() == Some("Terminating")
    });
    let r = existing("term-", &[]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("Namespace term-atlas is being deleted (Terminating since"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("applying"), "{}", r.stderr);
    assert!(namespaces_with("term-istio-ingress").is_empty());
    // Release it.
    rt().block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client().await, "term-atlas");
        let patch = json!({"metadata": {"finalizers": null}});
        cms.patch("held", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    });
    wait_until(Duration::from_secs(120), "term-atlas is gone", || {
        namespaces_with("term-").is_empty()
    });
}

/// The fixtures' mesh config is compared with the installation's before anything is
/// applied: a modelled field, or an ext_authz provider a CUSTOM policy names, that the
/// cluster does not have stops the run (exit 3) naming it and the `istioctl install`
/// that makes them agree.
#[test]
fn a_mesh_config_the_installation_does_not_have_is_refused_before_anything_is_applied() {
    if !available("the real-API mesh config refusal") {
        return;
    }
    let f = FixtureCopy::new();
    f.write(
        "05-mesh.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: MERGE_SLASHES\n",
    );
    let r = existing_with("mesh-", Some(f.path()), &[]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "meshConfig.pathNormalization.normalization: fixtures MERGE_SLASHES, cluster BASE"
        ) && r
            .stderr
            .contains("--set meshConfig.pathNormalization.normalization=MERGE_SLASHES"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("applying"), "{}", r.stderr);
    assert!(namespaces_with("mesh-").is_empty());
    // A CUSTOM policy's provider the installation lacks: istiod would make the
    // policy a DENY, while the fixtures ask an authorizer.
    let g = FixtureCopy::new();
    let authz = std::fs::read_to_string(root().join("tests/authz/ext-authz.yaml")).unwrap();
    g.write("60-authz.yaml", &authz);
    let r = existing_with("mesh-", Some(g.path()), &[]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "meshConfig.extensionProviders sample-ext-authz-http: fixtures envoyExtAuthzHttp, cluster none"
        ) && r.stderr.contains("istioctl install -f FILE"),
        "{}",
        r.stderr
    );
    assert!(namespaces_with("mesh-").is_empty());
}

/// `--revision default`: the namespaces are labelled `istio.io/rev=default` (never
/// `istio-injection`) and Istio's revision webhook injects the pods; a revision no
/// injector serves is refused before anything is applied, naming the ones there are.
#[test]
fn revision_labels_namespaces_for_that_revisions_injector() {
    if !available("the real-API revision test") {
        return;
    }
    let r = existing("rev-", &["--revision", "default", "--keep"]);
    assert_passed(&r);
    rt().block_on(async {
        let ns: Api<Namespace> = Api::all(client().await);
        let labels = ns
            .get("rev-atlas")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        assert_eq!(
            labels.get("istio.io/rev").map(String::as_str),
            Some("default"),
            "{labels:?}"
        );
        assert!(!labels.contains_key("istio-injection"), "{labels:?}");
    });
    delete_namespaces("rev-");
    let refused = existing("rev2-", &["--revision", "canary"]);
    assert_eq!(refused.code, 3, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(
            "--revision canary: no sidecar injector of this cluster serves revision canary"
        ) && refused
            .stderr
            .contains("revisions with an injector: default"),
        "{}",
        refused.stderr
    );
    assert!(namespaces_with("rev2-").is_empty());
}

/// istiod's validating webhook refuses a VirtualService meshcheck's loader accepts:
/// the run stops with the API server's answer and the fixture's file:line, and
/// deletes what it had created.
#[test]
fn istiods_validation_refusal_names_the_fixture_file_and_line() {
    if !available("the real-API validation test") {
        return;
    }
    let f = FixtureCopy::new();
    f.replacen_first(
        "40-virtualservices.yaml",
        "prefix: /atlas-ui",
        "regex: \"((\"",
    )
    .disagrees_with_istiod();
    let r = existing_with("val-", Some(f.path()), &[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("40-virtualservices.yaml:") && r.stderr.contains("validation.istio.io"),
        "{}",
        r.stderr
    );
    wait_until(
        Duration::from_secs(120),
        "the refused run's namespaces are deleted",
        || namespaces_with("val-").is_empty(),
    );
}

/// The sandbox's node address is inside its network namespace, not reachable from
/// this host (and traffic must not leave it): with `--node-address 127.0.0.1`, where
/// the run's NodePort has no listener, a run whose checks send traffic stops right
/// after the deploy, naming the address and port it tried and what to pass, and
/// deletes what it created.
#[test]
fn an_unreachable_node_address_is_named_before_the_checks_run() {
    if !available("the real-API reachability test") {
        return;
    }
    let r = common::sandbox::existing_checks(
        "reach-",
        None,
        &["--node-address", "127.0.0.1"],
        "routing::atlas-ui",
    );
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("the gateway's port 80 is not reachable at 127.0.0.1:")
            && r.stderr.contains("(the --node-address given)")
            && r.stderr.contains("pass --node-address"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("routing::atlas-ui ..."),
        "no check ran: {}",
        r.stdout
    );
    wait_until(
        Duration::from_secs(120),
        "the run's namespaces are deleted",
        || namespaces_with("reach-").is_empty(),
    );
}
