//! A pod's volumes as files, and each container's view of them. There are no mount
//! namespaces: a container runs in a directory of its own (its "root"), where each
//! `volumeMount` is a symbolic link at `mountPath` (relative to that root) to the
//! volume's directory. Istio's pilot-agent reads and writes its volumes by paths
//! relative to its working directory (`./var/run/secrets/...`, `./etc/istio/...`:
//! pkg/security/security.go, pkg/config/constants), so it runs unchanged.
//!
//! Volume sources, as the kubelet's volume plugins write them: emptyDir, configMap,
//! secret, downwardAPI, and projected (serviceAccountToken through the TokenRequest
//! API, with the audience and expiry asked; configMap, secret, downwardAPI).

use super::env::{downward_map, field, Sources};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Writes `data` at `dir/rel` (creating parents), readable by every container user.
fn put(dir: &Path, rel: &str, data: &[u8]) -> Result<(), String> {
    let path = dir.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    std::fs::write(&path, data).map_err(|e| io(&path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io(&path, e))
}

/// The files of a key map, or of `items` of it.
fn keyed_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    what: &str,
    optional: bool,
) -> Result<(), String> {
    match items {
        None => {
            for (k, v) in data {
                put(dir, k, v)?;
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => put(dir, &it.path, v)?,
                    None if optional => {}
                    None => return Err(format!("{what} has no key {}", it.key)),
                }
            }
        }
    }
    Ok(())
}

fn config_map_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    out
}

fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// What the pod's volumes are made of.
pub struct Context<'a> {
    pub pod: &'a Pod,
    pub src: Sources<'a>,
}

impl Context<'_> {
    async fn config_map(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&Vec<KeyToPath>>,
        optional: bool,
    ) -> Result<(), String> {
        let what = format!("ConfigMap {}/{name}", self.src.namespace);
        match self.src.config_map(name).await? {
            Some(cm) => keyed_files(dir, &config_map_data(cm), items, &what, optional),
            None if optional => Ok(()),
            None => Err(format!("{what} not found")),
        }
    }

    async fn secret(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&Vec<KeyToPath>>,
        optional: bool,
    ) -> Result<(), String> {
        let what = format!("Secret {}/{name}", self.src.namespace);
        match self.src.secret(name).await? {
            Some(s) => keyed_files(dir, &secret_data(s), items, &what, optional),
            None if optional => Ok(()),
            None => Err(format!("{what} not found")),
        }
    }

    fn downward(&self, dir: &Path, items: &[DownwardAPIVolumeFile]) -> Result<(), String> {
        for it in items {
            let value = match &it.field_ref {
                Some(f) => match f.field_path.as_str() {
                    "metadata.labels" => downward_map(self.pod.metadata.labels.as_ref()),
                    "metadata.annotations" => downward_map(self.pod.metadata.annotations.as_ref()),
                    p => field(self.pod, p)?,
                },
                None => {
                    return Err(format!(
                        "downwardAPI {}: only fieldRef is supported",
                        it.path
                    ))
                }
            };
            put(dir, &it.path, value.as_bytes())?;
        }
        Ok(())
    }

    /// A token for the pod's ServiceAccount, bound to the pod, as the kubelet asks
    /// for a projected `serviceAccountToken`.
    async fn token(
        &self,
        dir: &Path,
        path: &str,
        audience: Option<&str>,
        expiration: Option<i64>,
    ) -> Result<(), String> {
        let meta = &self.pod.metadata;
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let req: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": expiration.unwrap_or(3600),
                "boundObjectRef": {
                    "apiVersion": "v1", "kind": "Pod",
                    "name": meta.name, "uid": meta.uid,
                },
            },
        }))
        .map_err(|e| e.to_string())?;
        let api: Api<ServiceAccount> = Api::namespaced(self.src.client.clone(), self.src.namespace);
        let answer: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &req)
            .await
            .map_err(|e| {
                format!(
                    "TokenRequest for ServiceAccount {}/{sa}: {e}",
                    self.src.namespace
                )
            })?;
        let token = answer.status.map(|s| s.token).unwrap_or_default();
        put(dir, path, token.as_bytes())
    }

    /// Writes volume `v` into `dir`.
    async fn write(&self, v: &Volume, dir: &Path) -> Result<(), String> {
        if v.empty_dir.is_some() {
            return Ok(());
        }
        if let Some(c) = &v.config_map {
            return self
                .config_map(dir, &c.name, c.items.as_ref(), c.optional.unwrap_or(false))
                .await;
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            return self
                .secret(dir, &name, s.items.as_ref(), s.optional.unwrap_or(false))
                .await;
        }
        if let Some(d) = &v.downward_api {
            return self.downward(dir, d.items.as_deref().unwrap_or_default());
        }
        if let Some(p) = &v.projected {
            for s in p.sources.iter().flatten() {
                if let Some(t) = &s.service_account_token {
                    self.token(dir, &t.path, t.audience.as_deref(), t.expiration_seconds)
                        .await?;
                }
                if let Some(c) = &s.config_map {
                    self.config_map(dir, &c.name, c.items.as_ref(), c.optional.unwrap_or(false))
                        .await?;
                }
                if let Some(sec) = &s.secret {
                    self.secret(
                        dir,
                        &sec.name,
                        sec.items.as_ref(),
                        sec.optional.unwrap_or(false),
                    )
                    .await?;
                }
                if let Some(d) = &s.downward_api {
                    self.downward(dir, d.items.as_deref().unwrap_or_default())?;
                }
            }
            return Ok(());
        }
        Err(format!(
            "volume {}: the sandbox supports emptyDir, configMap, secret, downwardAPI and projected volumes only",
            v.name
        ))
    }
}

/// Makes every volume of the pod under `dir/volumes/<name>`; returns their paths.
pub async fn materialize(
    ctx: &Context<'_>,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let volumes = ctx.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let vdir = dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&vdir).map_err(|e| io(&vdir, e))?;
        // emptyDir is world-writable, as the kubelet makes it; others read-only data.
        let mode = if v.empty_dir.is_some() { 0o777 } else { 0o755 };
        std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(&vdir, e))?;
        ctx.write(v, &vdir).await?;
        out.insert(v.name.clone(), vdir);
    }
    Ok(out)
}

/// Makes container `c`'s root `root` with its mounts as links to `volumes`.
pub fn mount(
    c: &Container,
    root: &Path,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(root, e))?;
    for m in c.volume_mounts.iter().flatten() {
        let Some(vdir) = volumes.get(&m.name) else {
            return Err(format!(
                "container {} mounts unknown volume {}",
                c.name, m.name
            ));
        };
        let target = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => vdir.join(sub),
            None => vdir.clone(),
        };
        let at = root.join(m.mount_path.trim_start_matches('/'));
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(&target, &at).map_err(|e| io(&at, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_links_at_the_mount_path_under_the_container_root() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("volumes/istio-envoy");
        std::fs::create_dir_all(&vol).unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "istio-proxy",
            "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}]
        }))
        .unwrap();
        let volumes = BTreeMap::from([("istio-envoy".to_string(), vol.clone())]);
        let root = dir.path().join("containers/istio-proxy");
        mount(&c, &root, &volumes).unwrap();
        std::fs::write(root.join("etc/istio/proxy/envoy-rev.json"), "{}").unwrap();
        assert!(vol.join("envoy-rev.json").is_file());
        let bad: Container = serde_json::from_value(serde_json::json!({
            "name": "x", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]
        }))
        .unwrap();
        assert!(mount(&bad, &root, &volumes)
            .unwrap_err()
            .contains("unknown volume nope"));
    }

    #[test]
    fn items_pick_keys_and_a_missing_key_is_an_error_unless_optional() {
        let dir = tempfile::tempdir().unwrap();
        let data = BTreeMap::from([("root-cert.pem".to_string(), b"PEM".to_vec())]);
        let items: Vec<KeyToPath> = vec![serde_json::from_value(
            serde_json::json!({"key": "root-cert.pem", "path": "root-cert.pem"}),
        )
        .unwrap()];
        keyed_files(dir.path(), &data, Some(&items), "ConfigMap x", false).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("root-cert.pem")).unwrap(),
            b"PEM"
        );
        let missing: Vec<KeyToPath> =
            vec![serde_json::from_value(serde_json::json!({"key": "nope", "path": "n"})).unwrap()];
        assert!(keyed_files(dir.path(), &data, Some(&missing), "ConfigMap x", false).is_err());
        keyed_files(dir.path(), &data, Some(&missing), "ConfigMap x", true).unwrap();
    }
}
