//! A container's environment as a kubelet resolves it (pkg/kubelet/kubelet_pods.go
//! makeEnvironmentVariables): `envFrom` first, then `env` in order; `value`, the
//! downward API (`fieldRef`, `resourceFieldRef`, with the node's capacity standing in
//! for a missing limit), ConfigMap and Secret keys; `$(VAR)` references expanded.

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::Api;
use std::collections::BTreeMap;

/// The pod fields the downward API reads (`fieldRef.fieldPath`).
pub fn field(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let in_map = |m: &Option<BTreeMap<String, String>>, key: &str| {
        m.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    if let Some(key) = bracketed(path, "metadata.labels") {
        return Ok(in_map(&meta.labels, key));
    }
    if let Some(key) = bracketed(path, "metadata.annotations") {
        return Ok(in_map(&meta.annotations, key));
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        "metadata.labels" => downward_map(meta.labels.as_ref()),
        "metadata.annotations" => downward_map(meta.annotations.as_ref()),
        other => return Err(format!("unsupported fieldRef {other}")),
    })
}

/// `metadata.labels['key']` -> `key`.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// A map as the downward API writes it to a file: `key="value"` lines, sorted, values
/// quoted as Go's %q does (pkg/fieldpath FormatMap).
pub fn downward_map(m: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in m.into_iter().flatten() {
        out.push_str(k);
        out.push('=');
        out.push_str(&go_quote(v));
        out.push('\n');
    }
    out
}

fn go_quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// What the node offers when a container sets no limit (the downward API then
/// reports the node's allocatable).
#[derive(Debug, Clone, Copy)]
pub struct NodeCapacity {
    pub cpus: u64,
    pub memory_bytes: u64,
}

impl NodeCapacity {
    /// This machine's CPUs and memory.
    pub fn of_this_machine() -> NodeCapacity {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        // SAFETY: sysconf has no memory effects.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) }.max(0) as u64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
        NodeCapacity {
            cpus,
            memory_bytes: pages * page,
        }
    }
}

/// `resourceFieldRef` (`limits.cpu`, `requests.memory`...), rounded up to `divisor` as
/// the kubelet does (pkg/api/v1/resource ExtractContainerResourceValue).
fn resource(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: NodeCapacity,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resourceFieldRef {resource}"))?;
    let res = c.resources.as_ref();
    let set = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resourceFieldRef {resource}")),
    }
    .and_then(|m| m.get(name))
    .map(|q| q.0.clone());
    match name {
        "cpu" => {
            let millis = match set {
                Some(q) => cpu_millis(&q)?,
                None => node.cpus * 1000,
            };
            let div = divisor.map(cpu_millis).transpose()?.unwrap_or(1000).max(1);
            Ok(millis.div_ceil(div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let amount = match set {
                Some(q) => bytes(&q)?,
                None => node.memory_bytes,
            };
            let div = divisor.map(bytes).transpose()?.unwrap_or(1).max(1);
            Ok(amount.div_ceil(div).to_string())
        }
        _ => Err(format!("unsupported resourceFieldRef {resource}")),
    }
}

fn cpu_millis(q: &str) -> Result<u64, String> {
    let bad = || format!("bad CPU quantity {q}");
    match q.strip_suffix('m') {
        Some(m) => m.parse().map_err(|_| bad()),
        None => q
            .parse::<f64>()
            .map(|c| (c * 1000.0).ceil() as u64)
            .map_err(|_| bad()),
    }
}

fn bytes(q: &str) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return n
                .parse::<u64>()
                .map(|n| n * mult)
                .map_err(|_| format!("bad quantity {q}"));
        }
    }
    q.parse().map_err(|_| format!("bad quantity {q}"))
}

/// Expands `$(NAME)` from `env` (`$$` escapes), as the kubelet does for env values,
/// commands and args (third_party/forked/golang/expansion).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == inner.0) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(inner.0);
                    out.push(')');
                }
            }
            rest = inner.1;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Reads ConfigMaps and Secrets of the pod's namespace (for env and volumes).
pub struct Sources<'a> {
    pub client: &'a kube::Client,
    pub namespace: &'a str,
}

impl Sources<'_> {
    pub async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("ConfigMap {}/{name}: {e}", self.namespace))
    }

    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        Api::<Secret>::namespaced(self.client.clone(), self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("Secret {}/{name}: {e}", self.namespace))
    }

    /// The value of `key` in ConfigMap or Secret `name`; `None` when missing and
    /// `optional`.
    async fn key(
        &self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, String> {
        let value = if secret {
            self.secret(name).await?.and_then(|s| {
                s.data
                    .and_then(|d| {
                        d.get(key)
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    })
                    .or_else(|| s.string_data.and_then(|d| d.get(key).cloned()))
            })
        } else {
            self.config_map(name)
                .await?
                .and_then(|c| c.data.and_then(|d| d.get(key).cloned()))
        };
        match value {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(format!(
                "{} {}/{name} has no key {key}",
                if secret { "Secret" } else { "ConfigMap" },
                self.namespace
            )),
        }
    }
}

/// One `env` entry's value (`None`: an optional source that is missing).
async fn value_of(
    e: &EnvVar,
    pod: &Pod,
    c: &Container,
    src: &Sources<'_>,
    node: NodeCapacity,
    so_far: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(from) = &e.value_from else {
        return Ok(Some(expand(e.value.as_deref().unwrap_or(""), so_far)));
    };
    if let Some(f) = &from.field_ref {
        return field(pod, &f.field_path).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        let div = r.divisor.as_ref().map(|q| q.0.as_str());
        return resource(c, &r.resource, div, node).map(Some);
    }
    if let Some(k) = &from.config_map_key_ref {
        return src
            .key(false, &k.name, &k.key, k.optional.unwrap_or(false))
            .await;
    }
    if let Some(k) = &from.secret_key_ref {
        return src
            .key(true, &k.name, &k.key, k.optional.unwrap_or(false))
            .await;
    }
    Err(format!("env {}: unsupported valueFrom", e.name))
}

/// Every variable of container `c` of `pod`, in the kubelet's order.
pub async fn resolve(
    pod: &Pod,
    c: &Container,
    src: &Sources<'_>,
    node: NodeCapacity,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data: BTreeMap<String, String> = if let Some(r) = &from.config_map_ref {
            match src.config_map(&r.name).await? {
                Some(cm) => cm.data.unwrap_or_default(),
                None if r.optional.unwrap_or(false) => BTreeMap::new(),
                None => return Err(format!("ConfigMap {}/{} not found", src.namespace, r.name)),
            }
        } else if let Some(r) = &from.secret_ref {
            match src.secret(&r.name).await? {
                Some(s) => s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if r.optional.unwrap_or(false) => BTreeMap::new(),
                None => return Err(format!("Secret {}/{} not found", src.namespace, r.name)),
            }
        } else {
            BTreeMap::new()
        };
        env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = value_of(e, pod, c, src, node, &env).await? {
            env.retain(|(k, _)| k != &e.name);
            env.push((e.name.clone(), v));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                         "labels": {"app": "a", "version": "v\"1"}},
            "spec": {"nodeName": "n", "serviceAccountName": "sa", "containers": []},
            "status": {"podIP": "10.244.1.5", "hostIP": "10.244.0.1",
                       "podIPs": [{"ip": "10.244.1.5"}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_downward_api_reads_the_pod_as_the_kubelet_does() {
        let p = pod();
        assert_eq!(field(&p, "metadata.name").unwrap(), "p");
        assert_eq!(field(&p, "status.podIP").unwrap(), "10.244.1.5");
        assert_eq!(field(&p, "spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(field(&p, "metadata.labels['app']").unwrap(), "a");
        assert_eq!(field(&p, "metadata.labels['none']").unwrap(), "");
        assert_eq!(
            field(&p, "metadata.labels").unwrap(),
            "app=\"a\"\nversion=\"v\\\"1\"\n"
        );
        assert!(field(&p, "spec.nope").is_err());
    }

    #[test]
    fn resources_round_up_to_the_divisor_and_default_to_the_node() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}
        }))
        .unwrap();
        let node = NodeCapacity {
            cpus: 2,
            memory_bytes: 4 << 30,
        };
        assert_eq!(resource(&c, "limits.cpu", None, node).unwrap(), "2");
        assert_eq!(
            resource(&c, "limits.cpu", Some("1m"), node).unwrap(),
            "1500"
        );
        assert_eq!(
            resource(&c, "limits.memory", None, node).unwrap(),
            (1u64 << 30).to_string()
        );
        assert_eq!(resource(&c, "requests.cpu", None, node).unwrap(), "2");
    }

    #[test]
    fn references_expand_and_dollars_escape() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }
}
