//! The arguments of a plain run (`meshcheck [--suite S]`) and the target selection
//! every command that brings a target up shares (run, probe, upgrade).

use crate::timeouts::parse_duration;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// kind when a Docker engine answers, else local.
    Auto,
    /// Real Envoy processes on loopback.
    Local,
    /// A kind cluster with a chosen Istio version.
    Kind,
    /// The cluster of the current kubeconfig.
    Existing,
    /// A real Kubernetes control plane and istiod built from their Go modules, run in
    /// a private network namespace on this machine (no containers; Linux, root).
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControlPlane {
    /// meshcheck's model of Istio writes the Envoy config.
    Model,
    /// istiod's own config generation (pilot, in process) writes the gateways' config.
    Istiod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarArg {
    Native,
    Classic,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Suite to run: a name under suites/ or a path to a suite file.
    #[arg(long, env = "MESHCHECK_SUITE", default_value = "ingress")]
    pub suite: String,
    /// Where to run the fixtures.
    #[arg(long, value_enum, env = "MESHCHECK_TARGET", default_value = "auto")]
    pub target: TargetKind,
    /// Run the suite against these manifests instead of the suite's own fixtures.
    #[arg(long, env = "MESHCHECK_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    /// JUnit report path [default: target/meshcheck/<suite>-junit.xml].
    #[arg(long, env = "MESHCHECK_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Keep the target's working directory (configs, certificates, logs).
    #[arg(long)]
    pub keep: bool,
    /// Stop after the static analysis when it finds an error (start no target).
    #[arg(long)]
    pub fail_fast: bool,
    /// Budget for an expectation to become consistently true (e.g. 30s, 500ms)
    /// [default: the target's: local 5s, clusters 30s].
    #[arg(long, value_parser = parse_duration, env = "MESHCHECK_BUDGET")]
    pub budget: Option<Duration>,
    /// Sidecar shape the local target reports (Istio 1.27+ on Kubernetes 1.33+: native).
    #[arg(long, value_enum, default_value = "native")]
    pub local_sidecars: SidecarArg,
    /// Who programs the local target's gateway Envoys: meshcheck's model of Istio, or
    /// istiod's own config generation (the Istio oracle, see --oracle).
    #[arg(
        long,
        value_enum,
        env = "MESHCHECK_CONTROL_PLANE",
        default_value = "model"
    )]
    pub control_plane: ControlPlane,
    /// With --control-plane istiod: the Istio version (its oracle is built by
    /// scripts/istio-oracle.sh and cached) or a built oracle's path.
    #[arg(long, env = "MESHCHECK_ORACLE", value_name = "VERSION|PATH", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub oracle: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub test: libtest_mimic::Arguments,
}

/// Options of the cluster targets (kind, existing).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Istio version the kind target installs.
    #[arg(long, env = "MESHCHECK_ISTIO_VERSION", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub istio_version: String,
    /// Registry the kind target (and its upgrade) pulls Istio's images from, e.g.
    /// gcr.io/istio-release (Istio's release mirror, no Docker Hub pull limits)
    /// [default: istioctl's, docker.io/istio].
    #[arg(long, env = "MESHCHECK_ISTIO_HUB")]
    pub istio_hub: Option<String>,
    /// kind cluster name.
    #[arg(long = "cluster-name", default_value = crate::targets::kind::config::DEFAULT_CLUSTER_NAME)]
    pub cluster_name: String,
    /// Run on an existing kind cluster of that name, and keep it.
    #[arg(long)]
    pub reuse: bool,
    /// kindest/node image [default: the newest the Istio version supports].
    #[arg(long)]
    pub node_image: Option<String>,
    /// Use only cached tools (or on PATH); never download.
    #[arg(long)]
    pub offline: bool,
    /// kubeconfig of the existing target [default: $KUBECONFIG, ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context of the existing target.
    #[arg(long)]
    pub context: Option<String>,
    /// Do not apply the fixtures: check what is already deployed.
    #[arg(long)]
    pub no_apply: bool,
    /// Prefix every fixture namespace (existing target), so runs do not collide with real workloads.
    #[arg(long)]
    pub namespace_prefix: Option<String>,
    /// Where NodePorts answer [default: a node's InternalIP].
    #[arg(long)]
    pub node_address: Option<std::net::IpAddr>,
    /// Image the cluster can pull for the stub backend (existing target).
    #[arg(long)]
    pub stub_image: Option<String>,
    /// Take over fixture objects that exist on the cluster and meshcheck did not
    /// create (existing target; without it such an object is an error).
    #[arg(long)]
    pub adopt: bool,
    /// Label the fixtures' namespaces `istio.io/rev=REVISION` instead of
    /// `istio-injection=enabled`, for a cluster whose Istio is installed as revisions
    /// only (existing target). Without it, such a cluster is refused before anything
    /// is applied.
    #[arg(long, value_name = "REVISION")]
    pub revision: Option<String>,
    /// How long each Deployment of the fixtures may take to roll out (existing
    /// target; e.g. 90s, 5m).
    #[arg(long, value_parser = crate::timeouts::parse_duration, value_name = "DURATION")]
    pub rollout_timeout: Option<std::time::Duration>,
    /// Apply the fixtures' LoadBalancer Services as NodePort Services, so that a
    /// cloud cluster does not provision a real (public) load balancer for the stubs
    /// (existing target).
    #[arg(long, value_enum, value_name = "TYPE")]
    pub service_type: Option<ServiceType>,
    /// When the fixtures use the Kubernetes Gateway API and the cluster lacks its
    /// CRDs, install them (standard channel, the version the Istio release supports;
    /// kept after the run). Without it such a cluster is refused (existing target;
    /// kind and the sandbox install them).
    #[arg(long)]
    pub install_gateway_api_crds: bool,
}

/// `--service-type`: what the fixtures' LoadBalancer Services become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceType {
    #[value(name = "NodePort")]
    NodePort,
}
