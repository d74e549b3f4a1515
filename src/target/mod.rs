//! Targets: where the fixtures run. Checks see a target only through [`Target`], so
//! they do not know whether Envoy runs locally or in a cluster.

pub mod cluster;
pub mod existing;
pub mod kind;
pub mod kube;
pub mod local;

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A boxed future: what the async methods of [`Target`] return (the trait stays
/// object-safe).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A container of a pod as the API would show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    /// `Always` marks a native sidecar (an init container that keeps running).
    pub restart_policy: Option<String>,
    /// Whether the container is running now.
    pub running: bool,
}

/// A pod as the API would show it: what the sidecars check inspects.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub containers: Vec<ContainerInfo>,
    pub init_containers: Vec<ContainerInfo>,
}

/// A running environment the checks can talk to.
pub trait Target: Send + Sync {
    /// `local`, `kind`, `existing`.
    fn name(&self) -> &'static str;
    /// The address of a node: where NodePorts answer.
    fn node_address(&self) -> IpAddr;
    /// The NodePort of the ingress gateway Service's `service_port`.
    fn node_port(&self, service_port: u16) -> Option<u16>;
    /// SPIFFE identities of the ingress gateway pods.
    fn gateway_identities(&self) -> Vec<String>;
    /// Every pod of the fixtures' namespaces, as the API shows them now.
    fn pods(&self) -> BoxFuture<'_, Result<Vec<PodInfo>, String>>;
    /// How long an expectation may take to become consistently true here.
    fn consistency_budget(&self) -> Duration;
    /// Problems the target noticed since it came up (a process that died), for
    /// failure messages. Empty when healthy.
    fn health(&self) -> Vec<String>;
    /// Key/values for reports (target, versions, addresses).
    fn properties(&self) -> Vec<(String, String)>;
    /// NodePorts of the cluster's Services that are not the fixtures' (another
    /// tenant's, on a shared cluster), each with the Service's `namespace/name`: the
    /// ports check lists them as information rather than judging them. Empty where
    /// every Service is the run's own (local); `Err` when they cannot be read.
    fn other_node_ports(&self) -> BoxFuture<'_, Result<Vec<(u16, String)>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Writes what helps explain a failure (proxy config dumps, logs, events, the
    /// objects with status) under `dir`; returns the files written.
    fn diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Vec<PathBuf>> {
        let _ = dir;
        Box::pin(async { Vec::new() })
    }
}

/// Why a target could not be brought up or used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Provision(#[from] local::provision::ProvisionError),
    #[error(transparent)]
    Certs(#[from] local::certs::CertError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not start: {why}{}", log_tail.as_ref().map(|t| format!("\n--- last lines of its log ---\n{t}")).unwrap_or_default())]
    Start {
        what: String,
        why: String,
        log_tail: Option<String>,
    },
    #[error("target {target} is not available: {why}")]
    Unavailable { target: String, why: String },
    #[error("{0}")]
    BadInput(String),
}

impl TargetError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, TargetError::BadInput(_))
    }
}

/// Whether a Docker engine answers on its socket (`DOCKER_HOST=unix://...` or
/// /var/run/docker.sock): `GET /_ping` -> `OK`.
pub fn docker_answers() -> bool {
    use std::io::{Read, Write};
    let path = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains(" 200 ")
}

/// A target made of fixed answers, for the checks' unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    pub struct FixedTarget {
        pub node_ports: BTreeMap<u16, u16>,
        pub pods: Vec<PodInfo>,
        pub other_node_ports: Result<Vec<(u16, String)>, String>,
    }

    impl FixedTarget {
        /// On 127.0.0.1, with no NodePort, no pod and no other Service.
        pub fn new() -> Self {
            Self::default()
        }
    }

    impl Default for FixedTarget {
        fn default() -> Self {
            FixedTarget {
                node_ports: BTreeMap::new(),
                pods: Vec::new(),
                other_node_ports: Ok(Vec::new()),
            }
        }
    }

    impl Target for FixedTarget {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn node_address(&self) -> IpAddr {
            IpAddr::from([127, 0, 0, 1])
        }
        fn node_port(&self, service_port: u16) -> Option<u16> {
            self.node_ports.get(&service_port).copied()
        }
        fn gateway_identities(&self) -> Vec<String> {
            Vec::new()
        }
        fn pods(&self) -> BoxFuture<'_, Result<Vec<PodInfo>, String>> {
            Box::pin(async move { Ok(self.pods.clone()) })
        }
        fn consistency_budget(&self) -> Duration {
            Duration::from_millis(200)
        }
        fn health(&self) -> Vec<String> {
            Vec::new()
        }
        fn properties(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn other_node_ports(&self) -> BoxFuture<'_, Result<Vec<(u16, String)>, String>> {
            Box::pin(async move { self.other_node_ports.clone() })
        }
    }
}
