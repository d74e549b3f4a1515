//! Which sidecar injectors a cluster has, and whether the fixtures' injection labels
//! would reach one, read before anything is applied.
//!
//! Istio's injector webhooks (manifests/charts/istio-control/istio-discovery/templates/
//! mutatingwebhook.yaml, and revision-tags.yaml for `istioctl tag`): every revision `R`
//! has `rev.namespace.sidecar-injector.istio.io`, selecting namespaces labelled
//! `istio.io/rev=R` *without* `istio-injection`; only the default revision (or a
//! `default` tag) adds `namespace.sidecar-injector.istio.io`, selecting
//! `istio-injection=enabled`, and `object.sidecar-injector.istio.io`. In a
//! revision-only install nothing answers `istio-injection=enabled`: the pods would
//! start without sidecars, and every sidecar check would fail for a reason the run
//! never names.

use super::apply::pod_labels_pointer;
use super::KubeError;
use crate::fixtures::Object;
use ::kube::api::{Api, ListParams};
use ::kube::Client;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use std::collections::BTreeSet;

/// The namespace label of the default injector.
pub const INJECTION_LABEL: &str = "istio-injection";
/// The namespace (and pod) label of a revision's injector.
pub const REVISION_LABEL: &str = "istio.io/rev";

/// The injectors a cluster has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injectors {
    /// A webhook answers `istio-injection=enabled` (`namespace.sidecar-injector.istio.io`).
    pub default: bool,
    /// The revisions (and tags) whose webhook answers `istio.io/rev=R`.
    pub revisions: BTreeSet<String>,
}

impl Injectors {
    /// Reads Istio's webhooks out of the cluster's MutatingWebhookConfigurations.
    pub fn from_configs(configs: &[MutatingWebhookConfiguration]) -> Injectors {
        let mut out = Injectors::default();
        for hook in configs.iter().flat_map(|c| c.webhooks.iter().flatten()) {
            match hook.name.as_str() {
                "namespace.sidecar-injector.istio.io" | "object.sidecar-injector.istio.io" => {
                    out.default = true
                }
                "rev.namespace.sidecar-injector.istio.io" => {
                    out.revisions.extend(selected_revisions(hook));
                }
                _ => {}
            }
        }
        out
    }

    /// Why the fixtures' injection cannot work here, if it cannot: `revision` is
    /// `--revision`; `wanted` whether the fixtures ask for injection at all.
    pub fn refusal(&self, wanted: bool, revision: Option<&str>) -> Option<String> {
        let known = || {
            if self.revisions.is_empty() {
                "none".to_string()
            } else {
                self.revisions
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        match revision {
            _ if !wanted => None,
            Some(r) if !self.revisions.contains(r) => Some(format!(
                "--revision {r}: no sidecar injector of this cluster serves revision {r} \
                 (no `rev.namespace.sidecar-injector.istio.io` webhook selecting istio.io/rev={r}; \
                 revisions with an injector: {})",
                known()
            )),
            Some(_) => None,
            None if !self.default => Some(format!(
                "the fixtures ask for injection (namespaces labelled istio-injection=enabled, \
                 pods labelled sidecar.istio.io/inject=true), but this cluster has no default \
                 sidecar injector (no `namespace.`/`object.sidecar-injector.istio.io` webhook: \
                 Istio is installed as revisions only), so the pods would start without \
                 sidecars; pass --revision R to label them istio.io/rev=R instead \
                 (revisions with an injector: {})",
                known()
            )),
            None => None,
        }
    }
}

/// The values of `istio.io/rev In [...]` in a webhook's namespace selector.
fn selected_revisions(
    hook: &k8s_openapi::api::admissionregistration::v1::MutatingWebhook,
) -> Vec<String> {
    let exprs = hook
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref());
    exprs
        .into_iter()
        .flatten()
        .filter(|e| e.key == REVISION_LABEL && e.operator == "In")
        .flat_map(|e| e.values.clone().unwrap_or_default())
        .collect()
}

/// The cluster's injectors.
pub async fn injectors(client: &Client) -> Result<Injectors, KubeError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::from_kube(e, "list", "the MutatingWebhookConfigurations", None))?;
    Ok(Injectors::from_configs(&list.items))
}

/// The label by which a pod asks for injection itself (the default revision's
/// `object.sidecar-injector.istio.io`; with `istio.io/rev` also on the pod, that
/// revision's `rev.object.` webhook).
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";

fn label<'a>(v: &'a serde_json::Value, pointer: &str, key: &str) -> Option<&'a str> {
    v.pointer(pointer)?.get(key)?.as_str()
}

/// Whether a fixture object asks for the default injector: a Namespace labelled
/// `istio-injection=enabled`, or a workload whose pods are labelled
/// `sidecar.istio.io/inject: "true"` (the gateway's, typically).
pub fn asks_for_injection(o: &Object) -> bool {
    if o.kind == "Namespace" {
        return label(&o.raw, "/metadata/labels", INJECTION_LABEL) == Some("enabled");
    }
    pod_labels_pointer(&o.kind).is_some_and(|p| label(&o.raw, p, INJECT_LABEL) == Some("true"))
}

/// `--revision R` on an object's body: a Namespace's `istio-injection=enabled`
/// becomes `istio.io/rev=R` (Istio's injector gives `istio-injection` precedence, so
/// both cannot be set); pods labelled `sidecar.istio.io/inject: "true"` also get
/// `istio.io/rev=R`, which the revision's `rev.object.` webhook selects.
pub fn use_revision(kind: &str, body: &mut serde_json::Value, revision: &str) {
    if kind == "Namespace" {
        let Some(labels) = body
            .pointer_mut("/metadata/labels")
            .and_then(serde_json::Value::as_object_mut)
        else {
            return;
        };
        if labels.get(INJECTION_LABEL).and_then(|v| v.as_str()) == Some("enabled") {
            labels.remove(INJECTION_LABEL);
            labels.insert(REVISION_LABEL.into(), revision.into());
        }
        return;
    }
    let Some(pointer) = pod_labels_pointer(kind) else {
        return;
    };
    if let Some(labels) = body
        .pointer_mut(pointer)
        .and_then(serde_json::Value::as_object_mut)
    {
        if labels.get(INJECT_LABEL).and_then(|v| v.as_str()) == Some("true") {
            labels.insert(REVISION_LABEL.into(), revision.into());
        }
    }
}

/// An existing namespace labelled `istio.io/rev` keeps its revision when adopted:
/// `istio-injection` is not added (it would take precedence and move its workloads
/// to the default injector). Returns whether the body changed.
pub fn keep_live_revision(
    body: &mut serde_json::Value,
    live_labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    if !live_labels.is_some_and(|l| l.contains_key(REVISION_LABEL)) {
        return false;
    }
    body.pointer_mut("/metadata/labels")
        .and_then(serde_json::Value::as_object_mut)
        .is_some_and(|l| l.remove(INJECTION_LABEL).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(hooks: serde_json::Value) -> MutatingWebhookConfiguration {
        serde_json::from_value(
            json!({"metadata": {"name": "istio-sidecar-injector"}, "webhooks": hooks}),
        )
        .unwrap()
    }

    fn hook(name: &str, rev: &str) -> serde_json::Value {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"url": "https://127.0.0.1:15017/inject"},
               "namespaceSelector": {"matchExpressions": [
                   {"key": "istio.io/rev", "operator": "In", "values": [rev]},
                   {"key": "istio-injection", "operator": "DoesNotExist"}]}})
    }

    #[test]
    fn a_default_install_has_the_default_injector_and_its_revision() {
        let i = Injectors::from_configs(&[config(json!([
            hook("rev.namespace.sidecar-injector.istio.io", "default"),
            hook("namespace.sidecar-injector.istio.io", "ignored"),
        ]))]);
        assert!(i.default);
        assert_eq!(i.revisions, BTreeSet::from(["default".to_string()]));
        assert_eq!(i.refusal(true, None), None);
        assert_eq!(i.refusal(true, Some("default")), None);
    }

    #[test]
    fn a_revision_only_install_refuses_istio_injection_and_unknown_revisions() {
        let i = Injectors::from_configs(&[config(json!([hook(
            "rev.namespace.sidecar-injector.istio.io",
            "1-30-3"
        )]))]);
        assert!(!i.default);
        let why = i.refusal(true, None).expect("refused");
        assert!(
            why.contains("no default sidecar injector") && why.contains("1-30-3"),
            "{why}"
        );
        assert_eq!(i.refusal(true, Some("1-30-3")), None);
        let why = i.refusal(true, Some("canary")).expect("refused");
        assert!(
            why.contains("--revision canary") && why.contains("1-30-3"),
            "{why}"
        );
        // Fixtures that ask for no injection need no injector.
        assert_eq!(i.refusal(false, None), None);
    }

    #[test]
    fn revision_relabels_only_what_asks_for_injection() {
        let mut ns = json!({"metadata": {"labels": {"istio-injection": "enabled", "team": "a"}}});
        use_revision("Namespace", &mut ns, "canary");
        assert_eq!(
            ns,
            json!({"metadata": {"labels": {"istio.io/rev": "canary", "team": "a"}}})
        );
        let mut off = json!({"metadata": {"labels": {"istio-injection": "disabled"}}});
        use_revision("Namespace", &mut off, "canary");
        assert_eq!(
            off,
            json!({"metadata": {"labels": {"istio-injection": "disabled"}}})
        );
        // The gateway's pods ask for injection themselves.
        let mut gw = json!({"spec": {"template": {"metadata": {"labels": {"sidecar.istio.io/inject": "true"}}}}});
        use_revision("Deployment", &mut gw, "canary");
        assert_eq!(
            gw["spec"]["template"]["metadata"]["labels"]["istio.io/rev"],
            "canary"
        );
        let mut app = json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}});
        use_revision("Deployment", &mut app, "canary");
        assert_eq!(
            app,
            json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}})
        );
    }

    #[test]
    fn adopting_a_revision_labelled_namespace_never_adds_istio_injection() {
        let mut ns = json!({"metadata": {"labels": {"istio-injection": "enabled"}}});
        let live =
            std::collections::BTreeMap::from([("istio.io/rev".to_string(), "r1".to_string())]);
        assert!(keep_live_revision(&mut ns, Some(&live)));
        assert_eq!(ns, json!({"metadata": {"labels": {}}}));
        let mut ns = json!({"metadata": {"labels": {"istio-injection": "enabled"}}});
        assert!(!keep_live_revision(&mut ns, Some(&Default::default())));
        assert!(!keep_live_revision(&mut ns, None));
    }
}
