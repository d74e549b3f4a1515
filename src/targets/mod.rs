//! Targets: where the fixtures run. Checks see a target only through [`Target`], so
//! they do not know whether Envoy runs locally or in a cluster.

pub mod cluster;
pub mod existing;
pub mod kind;
pub mod kube;
pub mod local;
pub mod plaintext;
#[cfg(target_os = "linux")]
pub mod sandbox;

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
    /// The pod's address (`status.podIP`), once it has one.
    pub ip: Option<IpAddr>,
    /// The TCP ports its containers other than istio-proxy declare
    /// (`containerPort`), sorted.
    pub ports: Vec<u16>,
}

/// A running environment the checks can talk to.
pub trait Target: Send + Sync {
    /// `local`, `kind`, `existing`.
    fn name(&self) -> &'static str;
    /// The address of a node: where NodePorts answer.
    fn node_address(&self) -> IpAddr;
    /// The NodePort of the ingress gateway Service's `service_port`.
    fn node_port(&self, service_port: u16) -> Option<u16>;
    /// The NodePort of `service_port` of the gateway a request names
    /// (`request.gateway`: a Gateway API Gateway or a gateway Service, `ns/name`).
    /// None where the target does not know it (the local target from the model; the
    /// cluster targets from the live gateway Services).
    fn node_port_via(&self, gateway: &str, service_port: u16) -> Option<u16> {
        let _ = (gateway, service_port);
        None
    }
    /// SPIFFE identities of the ingress gateway pods.
    fn gateway_identities(&self) -> Vec<String>;
    /// The status of Gateway API object `kind` `namespace`/`name` as this target shows
    /// it (None: no such object).
    fn gateway_api_status<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::fixtures::gateway_api::ObjectStatus>, String>> {
        let _ = (kind, namespace, name);
        Box::pin(async move {
            Err(format!(
                "the {} target does not read Gateway API status",
                self.name()
            ))
        })
    }
    /// Every pod of the fixtures' namespaces, as the API shows them now.
    fn pods(&self) -> BoxFuture<'_, Result<Vec<PodInfo>, String>>;
    /// How long an expectation may take to become consistently true here.
    fn consistency_budget(&self) -> Duration;
    /// Problems the target noticed since it came up (a process that died), for
    /// failure messages. Empty when healthy.
    fn health(&self) -> Vec<String>;
    /// Key/values for reports (target, versions, addresses).
    fn properties(&self) -> Vec<(String, String)>;
    /// Stops what the target started and deletes what it created (unless kept):
    /// processes, objects, the kind cluster. Idempotent; dropping the target does the
    /// same on paths that could not call it.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    /// A PEM CA that signed the gateway's server certificates, when the target made
    /// them (the local target's per-run CA); https requests trust it.
    fn tls_ca_file(&self) -> Option<PathBuf> {
        None
    }
    /// NodePorts of the cluster's Services that are not the fixtures' (another
    /// tenant's, on a shared cluster), each with the Service's `namespace/name`: the
    /// ports check lists them as information rather than judging them. Empty where
    /// every Service is the run's own (local); `Err` when they cannot be read.
    fn other_node_ports(&self) -> BoxFuture<'_, Result<Vec<(u16, String)>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// The requests carrying `x-meshcheck-id: id` that the stubs of the fixtures
    /// received (each says which service, version and pod answered): what a mirrored
    /// request left behind. Asked of the stubs directly where possible (local), read
    /// from the pods' logs on a cluster.
    fn seen<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<crate::stub::Echo>, String>> {
        let _ = id;
        let name = self.name();
        Box::pin(async move {
            Err(format!(
                "the {name} target cannot read what the backends received"
            ))
        })
    }
    /// Writes what helps explain a failure (proxy config dumps, logs, events, the
    /// objects with status) under `dir`; returns the files written.
    fn diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Vec<PathBuf>> {
        let _ = dir;
        Box::pin(async { Vec::new() })
    }
    /// A plaintext HTTP request straight to a pod's address `addr` (no gateway, no
    /// Istio certificate), as a client outside the mesh sends it: from this machine
    /// where the pod network is reachable from here (local, sandbox, an existing
    /// cluster routed to its pods); a target whose pods are only reachable from its
    /// node sends it from there.
    fn plaintext_to_pod(
        &self,
        addr: std::net::SocketAddr,
        connect: Duration,
        answer: Duration,
    ) -> BoxFuture<'_, plaintext::PlaintextAnswer> {
        Box::pin(plaintext::from_here(addr, connect, answer))
    }
    /// How the `ports` check scans the node when a scan of
    /// [`Target::node_address`] from here would not see the node: a kind node
    /// reached through port mappings on 127.0.0.1 (Docker Desktop), where such a scan
    /// sees this host's own ports. `None`: scan the node address from here.
    fn node_scan(&self) -> Option<std::sync::Arc<dyn NodeScan>> {
        None
    }
}

/// A scan of the node's ports from where the node is (inside its container).
pub trait NodeScan: Send + Sync {
    /// Where the scan runs, for the report (`inside the node container X`).
    fn place(&self) -> String;
    /// The node's own address, scanned there.
    fn node(&self) -> IpAddr;
    /// The NodePort of the gateway Service's `service_port`, as the node has it.
    fn node_port(&self, service_port: u16) -> Option<u16>;
    /// The open ones among `ports` (sorted), each connect bounded by `timeout`.
    fn open_ports<'a>(
        &'a self,
        ports: &'a [u16],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u16>, String>>;
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

/// Whether a Docker engine answers, found the way the docker CLI (and so kind)
/// finds it: see [`engine_answers`].
pub fn docker_answers() -> bool {
    let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|d| d.join("config.json"));
    let context = std::env::var("DOCKER_CONTEXT").ok();
    // Without DOCKER_HOST or a chosen context the CLI talks to the default socket,
    // which is pinged directly: asking the CLI costs 30-300 ms a run.
    let cli = kind::which("docker")
        .filter(|_| host.is_some() || context_chosen(context.as_deref(), config.as_deref()));
    engine_answers(
        host.as_deref(),
        cli.as_deref(),
        Path::new("/var/run/docker.sock"),
    )
}

/// Whether the docker CLI would use a context other than `default`: DOCKER_CONTEXT,
/// else `currentContext` of its config file (docker/cli cli/command/cli.go,
/// resolveContextName, after the --context flag and DOCKER_HOST).
fn context_chosen(env_context: Option<&str>, config: Option<&Path>) -> bool {
    let named = |c: &str| !c.is_empty() && c != "default";
    if let Some(c) = env_context.filter(|c| !c.is_empty()) {
        return named(c);
    }
    config
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("currentContext")?.as_str().map(named))
        .unwrap_or(false)
}

/// Whether a Docker engine answers: `DOCKER_HOST=unix://PATH` is pinged directly
/// (`GET /_ping` -> 200); otherwise the docker CLI, when there is one, is asked
/// (`docker version`, which honours `DOCKER_HOST=tcp://...`, `DOCKER_CONTEXT` and
/// `docker context use`, e.g. Colima, Rancher Desktop, a remote engine); without a
/// CLI, `default_socket` is pinged.
pub fn engine_answers(
    docker_host: Option<&str>,
    docker_cli: Option<&Path>,
    default_socket: &Path,
) -> bool {
    let docker_host = docker_host.filter(|h| !h.is_empty());
    if let Some(socket) = docker_host.and_then(|h| h.strip_prefix("unix://")) {
        return ping_unix(Path::new(socket));
    }
    match docker_cli {
        Some(cli) => cli_answers(cli),
        None => docker_host.is_none() && ping_unix(default_socket),
    }
}

/// `docker version` succeeds (it fails when the engine of the current context does
/// not answer), within 15 s.
fn cli_answers(cli: &Path) -> bool {
    let mut cmd = std::process::Command::new(cli);
    cmd.args(["version", "--format", "{{.Server.Version}}"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    local::provision::status_within(&mut cmd, Duration::from_secs(15))
        .map(|st| st.success())
        .unwrap_or(false)
}

/// `GET /_ping` on a unix socket answers 200.
fn ping_unix(path: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(path) else {
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

#[cfg(test)]
mod engine_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A `docker` CLI whose `docker version` exits with `code`.
    fn cli(dir: &Path, code: i32) -> PathBuf {
        let p = dir.join(format!("docker-{code}"));
        std::fs::write(&p, format!("#!/bin/sh\nexit {code}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// An engine answering `GET /_ping` on a unix socket, for one connection.
    fn engine(dir: &Path) -> PathBuf {
        let sock = dir.join("docker.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 256];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
            }
        });
        sock
    }

    #[test]
    fn a_docker_context_is_chosen_as_the_cli_chooses_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        assert!(!context_chosen(None, None));
        assert!(!context_chosen(None, Some(&config)));
        std::fs::write(&config, r#"{"auths": {}}"#).unwrap();
        assert!(!context_chosen(None, Some(&config)));
        std::fs::write(&config, r#"{"currentContext": "default"}"#).unwrap();
        assert!(!context_chosen(None, Some(&config)));
        std::fs::write(&config, r#"{"currentContext": "colima"}"#).unwrap();
        assert!(context_chosen(None, Some(&config)));
        // DOCKER_CONTEXT wins over the config file.
        assert!(!context_chosen(Some("default"), Some(&config)));
        assert!(context_chosen(Some("rancher-desktop"), None));
        assert!(context_chosen(None, Some(&config)));
    }

    #[test]
    fn the_engine_is_found_as_the_docker_cli_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("no.sock");
        // A docker context (Colima, a remote engine): no default socket, the CLI answers.
        assert!(engine_answers(None, Some(&cli(dir.path(), 0)), &none));
        assert!(engine_answers(
            Some("tcp://10.0.0.5:2376"),
            Some(&cli(dir.path(), 0)),
            &none
        ));
        // The CLI's engine is down.
        assert!(!engine_answers(None, Some(&cli(dir.path(), 1)), &none));
        // No CLI: the default socket.
        assert!(!engine_answers(None, None, &none));
        assert!(!engine_answers(Some("tcp://10.0.0.5:2376"), None, &none));
        let sock = engine(dir.path());
        assert!(engine_answers(None, None, &sock));
        // DOCKER_HOST names a socket: that socket decides.
        assert!(!engine_answers(
            Some(&format!("unix://{}", none.display())),
            Some(&cli(dir.path(), 0)),
            &none
        ));
        let sock2 = {
            let d = dir.path().join("b");
            std::fs::create_dir(&d).unwrap();
            engine(&d)
        };
        assert!(engine_answers(
            Some(&format!("unix://{}", sock2.display())),
            Some(&cli(dir.path(), 1)),
            &none
        ));
    }
}

/// A target made of fixed answers, for the checks' unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    pub struct FixedTarget {
        pub node_ports: BTreeMap<u16, u16>,
        pub pods: Vec<PodInfo>,
        pub other_node_ports: Result<Vec<(u16, String)>, String>,
        /// What the backends received (by `x-meshcheck-id`).
        pub seen: Vec<crate::stub::Echo>,
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
                seen: Vec::new(),
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
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn other_node_ports(&self) -> BoxFuture<'_, Result<Vec<(u16, String)>, String>> {
            Box::pin(async move { self.other_node_ports.clone() })
        }
        fn seen<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Vec<crate::stub::Echo>, String>> {
            Box::pin(async move {
                Ok(self
                    .seen
                    .iter()
                    .filter(|e| e.header(crate::stub::ID_HEADER) == Some(id))
                    .cloned()
                    .collect())
            })
        }
    }
}
