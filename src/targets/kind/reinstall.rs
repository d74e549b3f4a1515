//! Istio on a `--reuse`d cluster that runs another version: installed over it only
//! within one minor (`istioctl install` over an older or newer istiod is an in-place
//! upgrade, which Istio supports one minor at a time), and, once the fixtures are
//! deployed, their injected Deployments restarted (gateways first), so that every
//! proxy runs the version the run reports rather than the one it was injected with.

use crate::istio::{Mesh, PodRole};
use crate::targets::kube as k;
use crate::targets::TargetError;
use k8s_openapi::api::apps::v1::Deployment;
use std::time::Duration;

/// The pod template annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// What to do with the istiod of a reused cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    /// It runs the requested version: nothing to install.
    Keep,
    /// Nothing installed (a fresh cluster, or a reused one without istiod).
    Install,
    /// Another version runs (`installed`): install over it, then restart the
    /// injected workloads.
    Replace { installed: String },
}

/// What the run does with istiod `installed` (its image tag, if istiod exists) when
/// `requested` is wanted on a reused (`reuse`) cluster `name`; refuses a version more
/// than one minor away (the error says how to go on).
pub fn decide(
    name: &str,
    reuse: bool,
    installed: Option<&str>,
    requested: &str,
) -> Result<Reuse, TargetError> {
    let Some(installed) = installed.filter(|_| reuse) else {
        return Ok(Reuse::Install);
    };
    let bare = |v: &str| v.trim().trim_start_matches('v').to_string();
    if bare(installed) == bare(requested) {
        return Ok(Reuse::Keep);
    }
    let minor = |v: &str| super::config::major_minor(v);
    let within_one = match (minor(installed), minor(requested)) {
        (Some((a, x)), Some((b, y))) => a == b && x.abs_diff(y) <= 1,
        // A tag that is not a version (a dev build): installed over, as before.
        _ => true,
    };
    if within_one {
        return Ok(Reuse::Replace {
            installed: installed.to_string(),
        });
    }
    Err(super::unavailable(format!(
        "kind cluster {name} runs Istio {installed}, and installing {requested} over it would cross more than one minor version, which an in-place upgrade does not support: pass --istio-version {installed}, delete the cluster (`kind delete cluster --name {name}`), or use another --cluster-name"
    )))
}

/// The fixtures' injected Deployments `(namespace, name)`: gateways first, then the
/// workloads, each once, in fixture order.
pub fn injected_deployments(mesh: &Mesh) -> Vec<(String, String)> {
    let mut gateways = Vec::new();
    let mut workloads = Vec::new();
    for p in mesh.pods.iter().filter(|p| p.injected) {
        let id = (p.namespace.clone(), p.deployment.clone());
        let list = if p.role == PodRole::Gateway {
            &mut gateways
        } else {
            &mut workloads
        };
        if !list.contains(&id) {
            list.push(id);
        }
    }
    gateways.extend(workloads);
    gateways
}

/// `kubectl rollout restart` of each of `deployments` (a strategic merge patch of
/// the pod template's restartedAt annotation, as kubectl sends it), then waits for
/// their rollouts.
pub async fn restart_injected(
    client: &::kube::Client,
    deployments: &[(String, String)],
    timeout: Duration,
    note: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), TargetError> {
    use ::kube::api::{ApiResource, DynamicObject, Patch};
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    let resource = ApiResource::erase::<Deployment>(&());
    for (ns, name) in deployments {
        let api: ::kube::Api<DynamicObject> =
            ::kube::Api::namespaced_with(client.clone(), ns, &resource);
        api.patch(name, &Default::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|e| {
                super::unavailable(format!(
                    "cannot restart Deployment {ns}/{name} onto the reinstalled Istio: {e}"
                ))
            })?;
    }
    k::wait_rollouts(client, deployments, timeout, note).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_istiod_is_kept_replaced_within_one_minor_or_refused() {
        let d = |reuse, installed, requested| decide("mc", reuse, installed, requested);
        assert_eq!(d(true, Some("1.30.3"), "1.30.3").unwrap(), Reuse::Keep);
        assert_eq!(d(true, Some("v1.30.3"), "1.30.3").unwrap(), Reuse::Keep);
        assert_eq!(d(true, None, "1.30.3").unwrap(), Reuse::Install);
        assert_eq!(d(false, Some("1.30.3"), "1.30.3").unwrap(), Reuse::Install);
        for installed in ["1.29.6", "1.30.0", "1.31.0"] {
            assert_eq!(
                d(true, Some(installed), "1.30.3").unwrap(),
                Reuse::Replace {
                    installed: installed.into()
                }
            );
        }
        let e = d(true, Some("1.28.3"), "1.30.3").unwrap_err().to_string();
        assert!(
            e.contains("runs Istio 1.28.3") && e.contains("--istio-version 1.28.3"),
            "{e}"
        );
        assert!(d(true, Some("1.30.3"), "1.28.0").is_err());
    }
}
