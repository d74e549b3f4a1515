//! The Kubernetes Gateway API on a cluster: its CustomResourceDefinitions checked,
//! installed when missing (and allowed), and waited for until established.
//!
//! The Gateway API is not part of Kubernetes: its CRDs are installed separately, at
//! the version the Istio release supports, from the standard channel (Istio's docs,
//! "Getting Started with the Kubernetes Gateway API": `kubectl get crd
//! gateways.gateway.networking.k8s.io || kubectl kustomize
//! "github.com/kubernetes-sigs/gateway-api/config/crd?ref=vX" | kubectl apply -f -`).
//! istiod watches the CRDs and starts its Gateway API informers and its deployment
//! controller when they appear, without a restart (pkg/kube/kclient/crdwatcher.go;
//! pilot/pkg/bootstrap/configcontroller.go: the deployment controller runs once
//! `CrdWatcher().WaitForCRD(gvr.KubernetesGateway)` returns). It ignores a Gateway API
//! CRD without the `gateway.networking.k8s.io/bundle-version` annotation
//! (minimumVersionFilter), so the CRDs are applied as published, annotations kept.
//!
//! The CRDs come from the Go module `sigs.k8s.io/gateway-api` at [`version_for_istio`]
//! (`scripts/gateway-api-crds.sh`, cached); meshcheck's repository holds none of them.

use super::apply::{apply_each, ApplyOptions};
use super::error::KubeError;
use super::wait::{wait_for, Check};
use crate::fixtures::{Object, Source};
use ::kube::api::Api;
use ::kube::Client;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::path::Path;
use std::time::Duration;

/// The Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The CRDs meshcheck's Gateway API fixtures need: what istiod's gateway controller
/// reads for an HTTP ingress (GatewayClass, Gateway, HTTPRoute, ReferenceGrant).
pub const REQUIRED: [&str; 4] = [
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
];

/// The command-line flag that lets meshcheck install them on an existing cluster.
pub const INSTALL_FLAG: &str = "--install-gateway-api-crds";

/// The `sigs.k8s.io/gateway-api` version an Istio release requires (its go.mod):
/// Istio 1.30 (istio.io/istio@v0.0.0-20260826214018-9739e10eb9d7) v1.5.1, 1.31
/// (@v0.0.0-20260827124520-eed52ebb66ad) v1.6.0. Other releases get the pinned
/// Istio's (1.30): their go.mod is not readable here.
pub fn version_for_istio(istio: &str) -> &'static str {
    if istio == "1.31" || istio.starts_with("1.31.") {
        "v1.6.0"
    } else {
        "v1.5.1"
    }
}

/// Whether `objects` hold Gateway API objects (so the cluster needs the CRDs).
pub fn needs_crds(objects: &[Object]) -> bool {
    objects
        .iter()
        .any(|o| o.api_version.rsplit_once('/').map(|(g, _)| g) == Some(GROUP))
}

/// The CRDs of `names` the cluster does not have.
pub async fn missing(client: &Client, names: &[&str]) -> Result<Vec<String>, KubeError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for name in names {
        let found = api.get_metadata_opt(name).await.map_err(|e| {
            KubeError::from_kube(
                e,
                "look up",
                &format!("CustomResourceDefinition {name}"),
                None,
            )
        })?;
        if found.is_none() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// The CustomResourceDefinitions in the `*.yaml` files of `dir` (what
/// `scripts/gateway-api-crds.sh` printed), as objects to apply.
pub fn load_crds(dir: &Path) -> Result<Vec<Object>, KubeError> {
    let bad = |why: String| KubeError::GatewayApiCrds { why };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| bad(format!("cannot read {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
        for doc in crate::fixtures::load::split_documents(&text) {
            if doc.text.trim().is_empty() {
                continue;
            }
            let raw: serde_json::Value = serde_saphyr::from_str(&doc.text)
                .map_err(|e| bad(format!("{}:{}: {e}", file.display(), doc.first_line)))?;
            if raw["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let s = |p: &str| {
                raw.pointer(p)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            out.push(Object {
                kind: s("/kind"),
                api_version: s("/apiVersion"),
                namespace: String::new(),
                name: s("/metadata/name"),
                source: Source {
                    file: file.clone(),
                    line: doc.first_line,
                },
                raw,
            });
        }
    }
    if out.is_empty() {
        return Err(bad(format!(
            "{} holds no CustomResourceDefinition",
            dir.display()
        )));
    }
    Ok(out)
}

/// Applies the CRDs of `crds` the cluster does not have (server-side apply, as the
/// fixtures; the ones it has are left as they are, whoever installed them) and waits
/// until each is established. Returns the names applied.
pub async fn install(
    client: &Client,
    crds: &[Object],
    timeout: Duration,
) -> Result<Vec<String>, KubeError> {
    let names: Vec<&str> = crds.iter().map(|o| o.name.as_str()).collect();
    let absent = missing(client, &names).await?;
    let to_apply: Vec<Object> = crds
        .iter()
        .filter(|o| absent.contains(&o.name))
        .cloned()
        .collect();
    let opts = ApplyOptions {
        crd_timeout: timeout,
        ..ApplyOptions::default()
    };
    apply_each(client, &to_apply, &opts, |_| {}).await?;
    let applied: Vec<String> = to_apply.iter().map(|o| o.name.clone()).collect();
    wait_established(client, &applied, timeout).await?;
    Ok(applied)
}

/// Whether a CRD's `Established` condition is `True` (the API server serves it).
pub fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Waits until every CRD of `names` is established, at most `timeout` in all.
pub async fn wait_established(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> Result<(), KubeError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let what = format!(
        "the Gateway API CustomResourceDefinitions to be established ({})",
        names.join(", ")
    );
    wait_for(&what, timeout, Duration::from_millis(250), || {
        let api = api.clone();
        async move {
            for name in names {
                match api.get_opt(name).await {
                    Ok(Some(crd)) if established(&crd) => {}
                    Ok(Some(_)) => {
                        return Ok(Check::Pending(format!("{name} not established yet")))
                    }
                    Ok(None) => return Ok(Check::Pending(format!("{name} not found"))),
                    Err(e) => return Ok(Check::Pending(format!("reading {name}: {e}"))),
                }
            }
            Ok(Check::Ready(()))
        }
    })
    .await
}
