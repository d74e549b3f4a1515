//! The sandbox target: a real Kubernetes control plane and a real istiod on this
//! machine, without containers. etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kube-proxy (Kubernetes 1.36.3), kwok (the node), and Istio's
//! istiod, istioctl and pilot-agent are built from their Go modules (binaries.rs) and
//! run in a private network namespace of their own (netns.rs); the sandbox's kubelet
//! (kubelet/) runs each pod's containers as processes in a namespace per pod. Istio is
//! installed with its own istioctl; the fixtures go on through the same code path as
//! the existing target (`cluster::deploy`: server-side apply through Istio's
//! webhooks, rollout waits, live NodePorts, cleanup).
//!
//! Real: the API server, controllers, scheduler, kube-proxy's NodePort rules,
//! istiod (injection, validation, xDS, its CA), istioctl, pilot-agent, the sidecars'
//! iptables capture (istio-init), Envoy. Not real: there is no container runtime or
//! kubelet (kwok and kubelet/ stand in: processes, not images), and the proxies run
//! upstream Envoy (the PyPI build) instead of istio-proxy.
//!
//! The network namespace is the calling thread's: [`prepare`] (builds, Envoy, then
//! the namespace) runs on the main thread before the async runtime starts, so every
//! thread and process of the run is inside it, and nothing of it outlives the run.

mod binaries;
pub mod command;
mod install;
pub mod istiod;
mod kubelet;
pub mod netns;
mod pki;
mod stack;
mod target;
pub mod upgrade;

pub use binaries::{BuildError, IstioBins, KubeBins};
pub use target::{bring_up, start_sandbox, Sandbox, SandboxOptions, SandboxTarget};

use std::path::{Path, PathBuf};

/// Why the sandbox could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("sandbox: {name} {why}{}", log_tail.as_ref().map(|t| format!("\n--- last lines of its log ---\n{t}")).unwrap_or_default())]
    Component {
        name: String,
        why: String,
        log_tail: Option<String>,
    },
    #[error("sandbox: {what} was not ready within {timeout:?} (last: {last})")]
    NotReady {
        what: String,
        timeout: std::time::Duration,
        last: String,
    },
    #[error("sandbox: the API server: {0}")]
    Kube(String),
    #[error("sandbox: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox target runs on Linux only (network namespaces)")]
    NotLinux,
}

impl SandboxError {
    pub fn io(path: &Path, source: std::io::Error) -> SandboxError {
        SandboxError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An Istio version the build scripts do not know is the user's input.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, SandboxError::Build(b) if b.is_bad_input())
    }
}

/// What the sandbox needs before its network namespace exists (downloads and builds
/// need the host's network): the built programs and Envoy.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kube: KubeBins,
    /// Istio builds, the one installed first.
    pub istio: Vec<IstioBins>,
    pub envoy: PathBuf,
    /// The stub's program and the arguments before the container's (`meshcheck-stub`,
    /// or `meshcheck stub`).
    pub stub: (PathBuf, Vec<String>),
    /// The Gateway API CRDs of the first Istio's version (standard channel): the
    /// version, and the directory `scripts/gateway-api-crds.sh` printed or why it
    /// could not (only an error when fixtures need them).
    pub gateway_api: (String, Result<PathBuf, String>),
}

/// Builds (or finds) everything for Istio `versions` (the first is installed), finds
/// Envoy and the stub, then moves the calling thread into the sandbox's network
/// namespace and sets it up. Call on the main thread before the async runtime starts.
pub fn prepare(
    versions: &[String],
    stub: (PathBuf, Vec<String>),
) -> Result<Prepared, SandboxError> {
    netns::check_permission()?;
    iptables_present()?;
    let kube = binaries::kube()?;
    let istio = versions
        .iter()
        .map(|v| binaries::istio(v))
        .collect::<Result<Vec<_>, _>>()?;
    let envoy = crate::targets::local::provision::locate_envoy(true)
        .map_err(|e| SandboxError::Component {
            name: "envoy".into(),
            why: e.to_string(),
            log_tail: None,
        })?
        .path;
    let gateway_api_version = crate::targets::kube::gateway_api::version_for_istio(
        versions.first().map(String::as_str).unwrap_or_default(),
    );
    let gateway_api = (
        gateway_api_version.to_string(),
        binaries::gateway_api_crds(gateway_api_version).map_err(|e| e.to_string()),
    );
    netns::unshare_current_thread()?;
    netns::configure_node()?;
    Ok(Prepared {
        kube,
        istio,
        envoy,
        stub,
        gateway_api,
    })
}

/// istio-init and kube-proxy program iptables (nf_tables or legacy): the binaries must
/// be there.
fn iptables_present() -> Result<(), SandboxError> {
    let found = std::process::Command::new("iptables-restore")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if found {
        Ok(())
    } else {
        Err(SandboxError::Component {
            name: "iptables".into(),
            why: "is not installed: the sidecars' traffic capture (istio-init) and kube-proxy's NodePorts need iptables-restore (apt-get install iptables)".into(),
            log_tail: None,
        })
    }
}
