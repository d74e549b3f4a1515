//! Istio as the local target's control plane (`--control-plane istiod`): each gateway
//! Envoy serves the configuration the oracle (istiod's own config generation) made for
//! its pod. Only the delivery is adapted, never what istiod decided:
//! - listeners bind the pod's local address (same port) and, as kube-proxy would, the
//!   node address at the NodePorts that reach that port;
//! - RDS becomes the same route configuration inline;
//! - EDS clusters become STATIC with istiod's endpoints, each pod's address mapped to
//!   its local address;
//! - SDS (`default`, `ROOTCA`, credentialName secrets) reads the run's certificates
//!   from files (`path_config_source`) instead of the `sds-grpc` cluster.
//!
//! Listeners, routes, clusters, their matching, actions and TLS settings stay istiod's.

use super::certs::CertFiles;
use super::envoy::Addresses;
use crate::istio::Mesh;
use crate::oracle::input::pod_index;
use crate::oracle::output::GatewayConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The certificates the run gives the gateway, by SDS secret name.
pub struct Secrets<'a> {
    /// The pod's SPIFFE certificate (`default`).
    pub identity: &'a CertFiles,
    /// The mesh root (`ROOTCA`).
    pub root: &'a Path,
    /// The per-run certificate of each credentialName secret istiod would serve
    /// (`kubernetes://httpbin-credential`).
    pub credentials: &'a BTreeMap<String, CertFiles>,
    /// Where the SDS files are written.
    pub dir: PathBuf,
}

/// The bootstrap of gateway proxy `gw` (index into `mesh.gateways`) from istiod's
/// config for its pod. Listeners and clusters are delivered as istiod delivers them,
/// over xDS, here from files in `xds` (LDS and CDS `path_config_source` with a watched
/// directory): [`write_xds`] with another answer is a real configuration update of the
/// running Envoy (what an istiod upgrade pushes), not a restart.
pub fn gateway_bootstrap(
    cfg: &GatewayConfig,
    mesh: &Mesh,
    gw: usize,
    addrs: &Addresses,
    admin: &Path,
    secrets: &Secrets,
    xds: &Xds,
) -> Result<Value, String> {
    let g = &mesh.gateways[gw];
    let pod = &mesh.pods[g.pod];
    let pod_ip = addrs.pod_ip[g.pod];
    let (listeners, clusters) = gateway_resources(cfg, mesh, gw, addrs, secrets)?;
    xds.write(&listeners, &clusters)?;
    Ok(json!({
        "node": {
            "id": format!("router~{pod_ip}~{}.{}~{}.svc.cluster.local", pod.name, pod.namespace, pod.namespace),
            "cluster": format!("{}.{}", pod.deployment, pod.namespace),
        },
        "admin": {"address": {"pipe": {"path": admin.to_string_lossy()}}},
        "layered_runtime": super::envoy::istio_runtime(),
        "dynamic_resources": {
            "lds_config": xds.source(Xds::LDS),
            "cds_config": xds.source(Xds::CDS),
        },
    }))
}

/// Listeners and clusters of gateway `gw` from istiod's config, adapted for local
/// delivery only (addresses, inline routes, static endpoints, secrets from files).
pub fn gateway_resources(
    cfg: &GatewayConfig,
    mesh: &Mesh,
    gw: usize,
    addrs: &Addresses,
    secrets: &Secrets,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut listeners = Vec::new();
    for l in &cfg.listeners {
        let mut l = l.clone();
        bind_locally(&mut l, mesh, gw, addrs)?;
        drop_chains_without_secret(&mut l, secrets);
        inline_routes(&mut l, cfg)?;
        files_for_sds(&mut l, secrets)?;
        listeners.push(l);
    }
    let mut clusters = Vec::new();
    for c in &cfg.clusters {
        let mut c = c.clone();
        static_endpoints(&mut c, cfg, addrs)?;
        files_for_sds(&mut c, secrets)?;
        clusters.push(c);
    }
    Ok((listeners, clusters))
}

/// A gateway's xDS files: `lds/lds.json` and `cds/cds.json`, each in a directory its
/// Envoy watches (one per type, so that a rename reloads only its own type). Each
/// write is a new version, renamed into place (Envoy reloads on the rename and never
/// reads a half-written file); clusters go first so that new routes never name a
/// cluster Envoy does not have yet. Envoy counts every update it applies or rejects
/// (`listener_manager.lds.update_success`, `cluster_manager.cds.update_rejected`, ...):
/// that is how a writer knows it was read.
#[derive(Debug)]
pub struct Xds {
    pub dir: PathBuf,
    version: std::sync::atomic::AtomicU32,
}

impl Xds {
    pub const LDS: &'static str = "lds";
    pub const CDS: &'static str = "cds";
    const LISTENER: &'static str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    const CLUSTER: &'static str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    pub fn new(dir: PathBuf) -> Self {
        Xds {
            dir,
            version: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The config source of one resource type, as the bootstrap names it.
    fn source(&self, kind: &str) -> Value {
        let dir = self.dir.join(kind);
        json!({
            "resource_api_version": "V3",
            "path_config_source": {
                "path": dir.join(format!("{kind}.json")).to_string_lossy(),
                "watched_directory": {"path": dir.to_string_lossy()},
            },
        })
    }

    /// Writes a new version of the listeners and clusters.
    pub fn write(&self, listeners: &[Value], clusters: &[Value]) -> Result<String, String> {
        for kind in [Self::LDS, Self::CDS] {
            let dir = self.dir.join(kind);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let version = (self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1)
        .to_string();
        self.write_one(Self::CDS, Self::CLUSTER, &version, clusters)?;
        self.write_one(Self::LDS, Self::LISTENER, &version, listeners)?;
        Ok(version)
    }

    fn write_one(
        &self,
        kind: &str,
        ty: &str,
        version: &str,
        items: &[Value],
    ) -> Result<(), String> {
        let resources: Vec<Value> = items
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v["@type"] = json!(ty);
                v
            })
            .collect();
        let body = json!({"version_info": version, "resources": resources});
        let tmp = self.dir.join(format!(".{kind}.json.tmp"));
        let path = self.dir.join(kind).join(format!("{kind}.json"));
        std::fs::write(&tmp, body.to_string()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("?")
}

/// The listener on the pod's local address (same port), plus the node address at each
/// NodePort that reaches that port (kube-proxy).
fn bind_locally(l: &mut Value, mesh: &Mesh, gw: usize, addrs: &Addresses) -> Result<(), String> {
    let name = name_of(l).to_string();
    let port = l
        .pointer("/address/socket_address/port_value")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("listener {name}: istiod gave no socket address port"))?;
    let g = &mesh.gateways[gw];
    let pod_ip = addrs.pod_ip[g.pod];
    l["address"] = sock(pod_ip, port);
    let node_ports: Vec<u16> = g
        .listeners
        .iter()
        .filter(|p| u64::from(p.target_port) == port)
        .flat_map(|p| p.node_ports.iter().copied())
        .collect();
    super::envoy::destination_ports_as_kube_proxy(l, port as u16, &node_ports);
    if !node_ports.is_empty() {
        l["additional_addresses"] = Value::Array(
            node_ports
                .iter()
                .map(|np| json!({"address": sock(addrs.node, u64::from(*np))}))
                .collect(),
        );
    }
    Ok(())
}

/// A filter chain whose credentialName secret istiod's SDS would not send (no such
/// Secret in the gateway pod's namespace, pilot/pkg/xds/sds.go) is dropped: on Istio
/// Envoy waits for the secret, then fails every handshake on that chain; without it
/// the handshake fails the same way (no chain matches the SNI), without the wait.
fn drop_chains_without_secret(l: &mut Value, s: &Secrets) {
    let Some(chains) = l.get_mut("filter_chains").and_then(Value::as_array_mut) else {
        return;
    };
    let before = chains.len();
    chains.retain(|c| {
        c.pointer(
            "/transport_socket/typed_config/common_tls_context/tls_certificate_sds_secret_configs",
        )
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|sc| sc.get("name").and_then(Value::as_str))
        .all(|n| matches!(n, "default" | "ROOTCA") || s.credentials.contains_key(n))
    });
    if before > 0 && chains.is_empty() {
        chains.push(super::envoy::no_certificate_chain());
    }
}

fn sock(ip: Ipv4Addr, port: u64) -> Value {
    json!({"socket_address": {"address": ip.to_string(), "port_value": port}})
}

/// Every HTTP connection manager's RDS reference becomes the same route configuration
/// inline.
fn inline_routes(l: &mut Value, cfg: &GatewayConfig) -> Result<(), String> {
    let lname = name_of(l).to_string();
    let Some(chains) = l.get_mut("filter_chains").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for chain in chains {
        let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) else {
            continue;
        };
        for f in filters {
            let Some(tc) = f.get_mut("typed_config") else {
                continue;
            };
            let Some(rds) = tc.get("rds").cloned() else {
                continue;
            };
            let rname = rds
                .get("route_config_name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let rc = cfg
                .routes
                .iter()
                .find(|r| name_of(r) == rname)
                .ok_or_else(|| {
                    format!("listener {lname}: istiod sent no route configuration {rname}")
                })?;
            let obj = tc.as_object_mut().ok_or("typed_config is not an object")?;
            obj.remove("rds");
            obj.insert("route_config".into(), rc.clone());
        }
    }
    Ok(())
}

/// An EDS cluster becomes STATIC with istiod's endpoints at the pods' local addresses.
fn static_endpoints(c: &mut Value, cfg: &GatewayConfig, addrs: &Addresses) -> Result<(), String> {
    if c.get("type").and_then(Value::as_str) != Some("EDS") {
        return Ok(());
    }
    let name = name_of(c).to_string();
    let service = c
        .pointer("/eds_cluster_config/service_name")
        .and_then(Value::as_str)
        .unwrap_or(&name)
        .to_string();
    let mut cla = cfg
        .endpoints
        .iter()
        .find(|e| e.get("cluster_name").and_then(Value::as_str) == Some(service.as_str()))
        .cloned()
        .unwrap_or_else(|| json!({"cluster_name": service, "endpoints": []}));
    for locality in cla
        .get_mut("endpoints")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for ep in locality
            .get_mut("lb_endpoints")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let sa = ep
                .pointer_mut("/endpoint/address/socket_address")
                .ok_or_else(|| format!("cluster {name}: an endpoint without a socket address"))?;
            let ip = sa
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let local = pod_index(&ip)
                .and_then(|i| addrs.pod_ip.get(i))
                .filter(|a| !a.is_unspecified())
                .ok_or_else(|| format!("cluster {name}: endpoint {ip} is no pod of this run"))?;
            sa["address"] = json!(local.to_string());
        }
    }
    let obj = c.as_object_mut().ok_or("cluster is not an object")?;
    obj.remove("eds_cluster_config");
    obj.insert("type".into(), json!("STATIC"));
    obj.insert("load_assignment".into(), cla);
    Ok(())
}

/// Every `sds_config` (istiod points them at the `sds-grpc` cluster of Istio's
/// bootstrap) reads its secret from a file of the run instead.
fn files_for_sds(v: &mut Value, s: &Secrets) -> Result<(), String> {
    match v {
        Value::Object(map) => {
            if map.contains_key("sds_config") {
                let name = map
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string();
                let path = write_secret(&name, s)?;
                map.insert(
                    "sds_config".into(),
                    json!({"path_config_source": {"path": path.to_string_lossy()}, "resource_api_version": "V3"}),
                );
            }
            for (_, child) in map.iter_mut() {
                files_for_sds(child, s)?;
            }
        }
        Value::Array(items) => {
            for child in items {
                files_for_sds(child, s)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn write_secret(name: &str, s: &Secrets) -> Result<PathBuf, String> {
    let files = |c: &CertFiles| {
        json!({"certificate_chain": {"filename": c.cert.to_string_lossy()},
               "private_key": {"filename": c.key.to_string_lossy()}})
    };
    let secret = match name {
        "default" => json!({"name": name, "tls_certificate": files(s.identity)}),
        "ROOTCA" => {
            json!({"name": name, "validation_context": {"trusted_ca": {"filename": s.root.to_string_lossy()}}})
        }
        other => match s.credentials.get(other) {
            Some(c) => json!({"name": other, "tls_certificate": files(c)}),
            None => {
                return Err(format!(
                    "istiod refers to secret {other}, which this run has no certificate for"
                ))
            }
        },
    };
    let mut secret = secret;
    secret["@type"] = json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret");
    let file: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = s.dir.join(format!("{file}.json"));
    let body = json!({"resources": [secret]});
    std::fs::create_dir_all(&s.dir).map_err(|e| format!("{}: {e}", s.dir.display()))?;
    std::fs::write(&path, body.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
