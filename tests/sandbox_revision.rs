//! A revision-only Istio install on a real API server: the sandbox's default
//! injector webhooks (`namespace.` and `object.sidecar-injector.istio.io`) are removed,
//! as a cluster installed with `--revision` only has them; a run whose fixtures label
//! `istio-injection=enabled` is refused before anything is applied, and `--revision`
//! labels the namespaces for the revision's injector instead. Its own sandbox (this
//! test binary's), since it changes the injector.

mod common;
use common::sandbox::{available, client, existing_with};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_revision_only_install_is_refused_without_revision_and_served_with_it() {
    if !available("the real-API revision-only install test") {
        return;
    }
    // What `istioctl tag remove default` and a `--revision` install leave: only the
    // `rev.` webhooks (the default injector's live in istio-sidecar-injector and in
    // the `default` tag's istio-revision-tag-default).
    rt().block_on(async {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client().await);
        for mwc in api.list(&ListParams::default()).await.unwrap().items {
            let name = mwc.metadata.name.clone().unwrap();
            let hooks = mwc.webhooks.unwrap_or_default();
            if !hooks
                .iter()
                .any(|w| w.name.ends_with("sidecar-injector.istio.io"))
            {
                continue;
            }
            let kept: Vec<_> = hooks
                .into_iter()
                .filter(|w| w.name.starts_with("rev."))
                .collect();
            if kept.is_empty() {
                api.delete(&name, &DeleteParams::default()).await.unwrap();
            } else {
                let patch = json!({"webhooks": kept});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
        }
        let left: Vec<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .flat_map(|m| m.webhooks.unwrap_or_default())
            .map(|w| w.name)
            .collect();
        assert!(
            !left
                .iter()
                .any(|n| n == "namespace.sidecar-injector.istio.io"),
            "{left:?}"
        );
        assert!(
            left.iter()
                .any(|n| n == "rev.namespace.sidecar-injector.istio.io"),
            "{left:?}"
        );
    });
    let refused = existing_with("ro-", None, &[]);
    assert_eq!(refused.code, 3, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("this cluster has no default sidecar injector")
            && refused.stderr.contains("pass --revision R")
            && refused
                .stderr
                .contains("revisions with an injector: default"),
        "{}",
        refused.stderr
    );
    let none = rt().block_on(async {
        let api: Api<Namespace> = Api::all(client().await);
        let list = api.list(&ListParams::default()).await.unwrap();
        !list.items.iter().any(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("ro-"))
        })
    });
    assert!(none, "nothing applied");
    let served = existing_with("ro-", None, &["--revision", "default"]);
    assert_eq!(served.code, 0, "{}\n{}", served.stdout, served.stderr);
    assert!(
        served.passed.contains("sidecars::injected"),
        "{}",
        served.stdout
    );
}
