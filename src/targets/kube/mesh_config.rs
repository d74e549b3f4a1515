//! The fixtures' mesh config on a cluster. The `istio` ConfigMap in `istio-system` is
//! the installation's (istioctl writes it from `meshConfig`): meshcheck never applies
//! the fixtures' copy over it, which would drop everything else the installation set.
//! Instead the fields meshcheck models (fixtures/mesh_config.rs) are compared with the
//! live ConfigMap before anything is applied; a difference stops the run (exit 3) with
//! the `istioctl install --set` that makes the cluster match.

use crate::fixtures::mesh_config::MeshConfig;
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
/// `key: fixtures X, cluster Y`.
pub fn differences(want: &MeshConfig, live: &MeshConfig) -> Vec<String> {
    fields(want)
        .into_iter()
        .zip(fields(live))
        .filter(|((_, w), (_, l))| w != l)
        .map(|((k, w), (_, l))| format!("{k}: fixtures {w}, cluster {l}"))
        .collect()
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
    let diffs = differences(&want.spec, &live);
    if diffs.is_empty() {
        return Ok(None);
    }
    let sets: Vec<String> = fields(&want.spec)
        .into_iter()
        .map(|(k, v)| format!("--set {k}={v}"))
        .collect();
    Ok(Some(format!(
        "the fixtures' mesh config ({}) differs from the cluster's, which meshcheck does not overwrite: {}; install Istio with `istioctl install {}`",
        want.source,
        diffs.join("; "),
        sets.join(" ")
    )))
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
            differences(&fixtures, &live),
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
        assert!(differences(&default_spelled, &live).is_empty());
    }
}
