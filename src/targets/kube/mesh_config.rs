//! The fixtures' mesh config on a cluster. The `istio` ConfigMap in `istio-system` is
//! the installation's (istioctl writes it from `meshConfig`): meshcheck never applies
//! the fixtures' copy over it, which would drop everything else the installation set.
//! Where meshcheck installs Istio itself (kind, the sandbox) it installs it with the
//! fixtures' mesh config ([`install_overlay`]: an IstioOperator overlay, `istioctl
//! install -f`). Either way the fields meshcheck models (fixtures/mesh_config.rs) are
//! compared with the live ConfigMap before anything is applied; a difference stops
//! the run (exit 3) with the `istioctl install` that makes the cluster match.

use crate::fixtures::mesh_config::{is_mesh_config, ExtensionProvider, MeshConfig};
use crate::fixtures::Fixtures;
use ::kube::api::Api;
use k8s_openapi::api::core::v1::ConfigMap;

/// The modelled fields as `istioctl install --set` keys, with the fixtures' value
/// (or Istio's default when the fixtures leave it unset) and the live one.
fn fields(m: &MeshConfig) -> Vec<(&'static str, String)> {
    vec![
        (
            "meshConfig.pathNormalization.normalization",
            m.path_normalization
                .as_ref()
                .and_then(|p| p.normalization.clone())
                .map(|n| if n == "DEFAULT" { "BASE".into() } else { n })
                .unwrap_or_else(|| "BASE".into()),
        ),
        (
            "meshConfig.rootNamespace",
            m.root_namespace
                .clone()
                .unwrap_or_else(|| "istio-system".into()),
        ),
        (
            "meshConfig.defaultConfig.gatewayTopology.numTrustedProxies",
            m.default_config
                .as_ref()
                .and_then(|d| d.num_trusted_proxies())
                .unwrap_or(0)
                .to_string(),
        ),
    ]
}

/// How the live mesh config `live` differs from the fixtures' `want`, field by field:
/// `key: fixtures X, cluster Y`; and for each extension provider in `providers` (those
/// the fixtures' CUSTOM policies name: what decides their traffic), whether both
/// define it alike.
pub fn differences(want: &MeshConfig, live: &MeshConfig, providers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = fields(want)
        .into_iter()
        .zip(fields(live))
        .filter(|((_, w), (_, l))| w != l)
        .map(|((k, w), (_, l))| format!("{k}: fixtures {w}, cluster {l}"))
        .collect();
    // A Duration as protojson writes it (istioctl renders `0.5s` as `0.500s`).
    let find = |m: &MeshConfig, name: &str| -> Option<ExtensionProvider> {
        let mut p = m
            .extension_providers
            .iter()
            .find(|p| p.name == name)?
            .clone();
        if let Some(h) = &mut p.envoy_ext_authz_http {
            h.timeout = h
                .timeout
                .take()
                .map(|t| crate::istio::authz::ext_authz::duration(&t).unwrap_or(t));
        }
        Some(p)
    };
    for name in providers {
        let (w, l) = (find(want, name), find(live, name));
        if w == l {
            continue;
        }
        let shown = |p: &Option<ExtensionProvider>| match p {
            None => "none",
            Some(p) if p.envoy_ext_authz_http.is_some() => "envoyExtAuthzHttp",
            Some(_) => "another kind",
        };
        let what = if w.is_some() && l.is_some() && shown(&w) == shown(&l) {
            " (the same kind, other settings)".to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "meshConfig.extensionProviders {name}: fixtures {}, cluster {}{what}",
            shown(&w),
            shown(&l)
        ));
    }
    out
}

/// The extension providers the fixtures' CUSTOM AuthorizationPolicies name.
fn custom_providers(fx: &Fixtures) -> Vec<String> {
    let mut out: Vec<String> = fx
        .authorization_policies
        .iter()
        .filter(|p| p.spec.spec.action() == "CUSTOM")
        .filter_map(|p| p.spec.spec.provider.as_ref().map(|r| r.name.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The IstioOperator overlay that installs Istio with the fixtures' mesh config: the
/// `mesh` of their `istio` ConfigMap as `spec.meshConfig`, whole (istioctl writes the
/// ConfigMap from it: the istio-discovery chart's configmap.yaml); None when the
/// fixtures carry none. JSON, which istioctl reads as YAML.
pub fn install_overlay(fx: &Fixtures) -> Result<Option<String>, String> {
    let Some(o) = fx.objects.iter().find(|o| is_mesh_config(o)) else {
        return Ok(None);
    };
    let text = o
        .raw
        .pointer("/data/mesh")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let mesh: serde_json::Value = if text.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            format!(
                "{} ({}): its `mesh` is not YAML: {e}",
                o.describe(),
                o.source
            )
        })?
    };
    let overlay = serde_json::json!({
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "spec": {"meshConfig": if mesh.is_null() { serde_json::json!({}) } else { mesh }}
    });
    Ok(Some(
        serde_json::to_string_pretty(&overlay).unwrap_or_default() + "\n",
    ))
}

/// Writes the fixtures' [`install_overlay`] into `dir` ([`write_overlay`]); None when
/// they carry no mesh config.
pub fn write_install_overlay(
    fx: &Fixtures,
    dir: &std::path::Path,
) -> Result<Option<std::path::PathBuf>, crate::targets::TargetError> {
    match install_overlay(fx).map_err(crate::targets::TargetError::BadInput)? {
        Some(text) => write_overlay(dir, &text).map(Some),
        None => Ok(None),
    }
}

/// Writes an [`install_overlay`] `text` as `dir/istio-mesh-config.yaml`.
pub fn write_overlay(
    dir: &std::path::Path,
    text: &str,
) -> Result<std::path::PathBuf, crate::targets::TargetError> {
    let path = dir.join("istio-mesh-config.yaml");
    std::fs::write(&path, text).map_err(|source| crate::targets::TargetError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// Compares the fixtures' mesh config (if they carry one) with the cluster's; the
/// reason to stop, or None.
pub async fn mismatch(client: &::kube::Client, fx: &Fixtures) -> Result<Option<String>, String> {
    let Some(want) = &fx.mesh_config else {
        return Ok(None);
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "istio-system");
    let live = api
        .get_opt("istio")
        .await
        .map_err(|e| format!("reading ConfigMap istio-system/istio: {e}"))?;
    let text = live
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("mesh"))
        .cloned()
        .unwrap_or_default();
    let mut ignored = Vec::new();
    let live: MeshConfig = crate::fixtures::mesh_config::parse(
        &text,
        "meshConfig",
        &want.source,
        "ConfigMap istio-system/istio",
        &mut ignored,
    )
    .map_err(|e| format!("the cluster's ConfigMap istio-system/istio: {e}"))?;
    let providers = custom_providers(fx);
    let diffs = differences(&want.spec, &live, &providers);
    if diffs.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "the fixtures' mesh config ({}) differs from the cluster's, which meshcheck does not overwrite: {}; install Istio with {}",
        want.source,
        diffs.join("; "),
        how_to_install(&want.spec, !want.spec.extension_providers.is_empty())
    )))
}

/// The `istioctl install` that gives a cluster the fixtures' mesh config: `--set` for
/// each modelled field; the providers need an IstioOperator file.
fn how_to_install(want: &MeshConfig, providers: bool) -> String {
    let sets: Vec<String> = fields(want)
        .into_iter()
        .map(|(k, v)| format!("--set {k}={v}"))
        .collect();
    if providers {
        format!(
            "`istioctl install -f FILE`, FILE an IstioOperator whose spec.meshConfig is the fixtures' `mesh` (or `{}` and the extensionProviders in the file)",
            sets.join(" ")
        )
    } else {
        format!("`istioctl install {}`", sets.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mesh_config::PathNormalizationConfig;

    #[test]
    fn unset_fields_are_istio_defaults_and_only_differences_are_named() {
        let fixtures = MeshConfig {
            path_normalization: Some(PathNormalizationConfig {
                normalization: Some("MERGE_SLASHES".into()),
            }),
            ..Default::default()
        };
        let live = MeshConfig::default();
        assert_eq!(
            differences(&fixtures, &live, &[]),
            vec![
                "meshConfig.pathNormalization.normalization: fixtures MERGE_SLASHES, cluster BASE"
            ]
        );
        let default_spelled = MeshConfig {
            path_normalization: Some(PathNormalizationConfig {
                normalization: Some("DEFAULT".into()),
            }),
            root_namespace: Some("istio-system".into()),
            ..Default::default()
        };
        assert!(differences(&default_spelled, &live, &[]).is_empty());
    }

    fn with_provider(timeout: &str, port: u32) -> MeshConfig {
        use crate::fixtures::mesh_config::ExtAuthzHttpProvider;
        MeshConfig {
            extension_providers: vec![ExtensionProvider {
                name: "authz".into(),
                envoy_ext_authz_http: Some(ExtAuthzHttpProvider {
                    service: "ext-authz.ext-authz.svc.cluster.local".into(),
                    port,
                    timeout: Some(timeout.into()),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_provider_a_custom_policy_names_must_be_the_cluster_s_too() {
        let fixtures = with_provider("0.5s", 8000);
        let none = MeshConfig::default();
        let names = ["authz".to_string()];
        assert_eq!(
            differences(&fixtures, &none, &names),
            vec!["meshConfig.extensionProviders authz: fixtures envoyExtAuthzHttp, cluster none"]
        );
        // Not named by a policy: not what decides the fixtures' traffic.
        assert!(differences(&fixtures, &none, &[]).is_empty());
        // The same provider as istioctl renders it.
        assert!(differences(&fixtures, &with_provider("0.500s", 8000), &names).is_empty());
        assert_eq!(
            differences(&fixtures, &with_provider("0.5s", 9000), &names),
            vec!["meshConfig.extensionProviders authz: fixtures envoyExtAuthzHttp, cluster envoyExtAuthzHttp (the same kind, other settings)"]
        );
    }

    #[test]
    fn the_install_overlay_carries_the_fixtures_mesh_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mesh.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    pathNormalization:\n      normalization: NONE\n    trustDomain: example.org\n",
        )
        .unwrap();
        let fx = crate::fixtures::load_dir(dir.path()).unwrap();
        let text = install_overlay(&fx).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "IstioOperator");
        assert_eq!(
            v["spec"]["meshConfig"]["pathNormalization"]["normalization"],
            "NONE"
        );
        // A field meshcheck does not model is installed all the same.
        assert_eq!(v["spec"]["meshConfig"]["trustDomain"], "example.org");
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
        let none = crate::fixtures::load_dir(&seed).unwrap();
        assert_eq!(install_overlay(&none).unwrap(), None);
    }
}
