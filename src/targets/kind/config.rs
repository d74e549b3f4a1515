//! What the kind target asks of `kind`, `istioctl` and `docker`, as pure functions: the
//! kind cluster config, every command line, the node image for an Istio version, the
//! stub image tag and which `kind create cluster` failures are worth a retry.
//!
//! Nothing here runs a process or touches the file system; the caller writes
//! [`kind_config_yaml`] to a file and passes the argument vectors to the tools that
//! [`super::tools::ensure`] provides. Everything is deterministic and unit-tested with
//! exact expected strings.
//!
//! # Node image
//!
//! [`node_image_for`] picks the newest Kubernetes minor that both the chosen Istio
//! supports ([`supported_kubernetes`]) and the pinned kind release
//! ([`super::tools::KIND_VERSION`]) ships a node image for ([`KIND_NODE_IMAGES`]).
//! Images are pinned by digest: kind supports an image only with the release that built
//! it, and a tag alone may point at a build for another release.
//!
//! # Reaching the gateway
//!
//! On Linux the node container's IP is reachable from the host, so the NodePort is
//! reached directly. Docker Desktop needs `extraPortMappings` with
//! `containerPort == hostPort == nodePort`; [`kind_config_yaml`] always writes them, on
//! [`KindConfig::listen_address`] (loopback by default), so both work.

use super::tools::KIND_VERSION;

/// Name of the kind cluster unless the user chooses another.
pub const DEFAULT_CLUSTER_NAME: &str = "meshcheck";

/// `kind create cluster --wait`: how long kind waits for the control plane to be Ready
/// (Istio's CI uses 180s).
pub const KIND_WAIT: &str = "180s";

/// `istioctl install --readiness-timeout` (istioctl's default, written out so the
/// command line states it).
pub const ISTIO_READINESS_TIMEOUT: &str = "300s";

/// Node images published with kind v0.31.0 ([`KIND_VERSION`]), newest first:
/// `(Kubernetes minor, image@digest)`.
///
/// Source: the "Images pre-built for this release" list of
/// <https://github.com/kubernetes-sigs/kind/releases/tag/v0.31.0>; the v1.35.0 digest is
/// also the release's default image (`kind version` prints it). Replace the whole table
/// when `KIND_VERSION` changes (a unit test fails until then).
pub const KIND_NODE_IMAGES: &[(u32, &str)] = &[
    (
        35,
        "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f",
    ),
    (
        34,
        "kindest/node:v1.34.3@sha256:08497ee19eace7b4b5348db5c6a1591d7752b164530a36f855cb0f2bdcbadd48",
    ),
    (
        33,
        "kindest/node:v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040",
    ),
    (
        32,
        "kindest/node:v1.32.11@sha256:5fc52d52a7b9574015299724bd68f183702956aa4a2116ae75a63cb574b35af8",
    ),
    (
        31,
        "kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b",
    ),
];

/// Kubernetes minors per Istio minor: `(Istio minor, min, max)`, all of major 1.
///
/// - min: the minimum `istioctl install` accepts
///   (istioctl/pkg/install/k8sversion/version.go, see ISTIO-NOTES.md).
/// - max: the newest minor of "Istio 1.X.0 is officially supported on Kubernetes
///   versions A to B" in each minor's release announcement
///   (istio.io `content/en/news/releases/1.X.x/announcing-1.X/index.md`; for 1.22 the
///   supported-releases table, `data/compatibility/supportStatus.yml`). That table is
///   edited after a release (1.26 later gained 1.33); the announcement is the
///   release-time statement.
///
/// Istio 1.31 is left out until its istioctl minimum is confirmed.
const ISTIO_KUBERNETES: &[(u32, u32, u32)] = &[
    (22, 26, 30),
    (23, 26, 30),
    (24, 28, 31),
    (25, 28, 32),
    (26, 29, 32),
    (27, 29, 33),
    (28, 29, 34),
    (29, 30, 35),
    (30, 32, 36),
];

/// Substrings (compared case-insensitively) of `kind create cluster` stderr that mark a
/// failure worth retrying: the node or its network came up too slowly or flaked.
const TRANSIENT_KIND_FAILURES: &[&str] = &[
    "failed to init node with kubeadm",
    "failed to join node with kubeadm",
    "could not find a log line that matches",
    "timed out waiting for the condition",
    "error creating network",
    "context deadline exceeded",
    "tls handshake timeout",
    "connection reset by peer",
];

/// The kind cluster to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindConfig {
    /// `kind create cluster --name`; also the node container prefix
    /// ([`node_container`]) and the kubeconfig context `kind-<name>`.
    pub cluster_name: String,
    /// Image of the control-plane node, e.g. from [`node_image_for`]; empty: kind's
    /// default image (no `image:` line is written).
    pub node_image: String,
    /// NodePorts to publish on the host, e.g. the gateway Service's nodePort 30080.
    /// Written sorted, duplicates once. Empty where the node is reachable from the
    /// host anyway ([`needs_port_mappings`]).
    pub node_ports: Vec<u16>,
    /// The host port of a NodePort when it is not the same number (that one is taken,
    /// e.g. by another kept cluster); absent: `hostPort == containerPort`.
    pub host_ports: std::collections::BTreeMap<u16, u16>,
    /// Host address the published ports listen on; `127.0.0.1` keeps them off the
    /// network.
    pub listen_address: String,
}

impl KindConfig {
    /// [`DEFAULT_CLUSTER_NAME`] on `node_image`, publishing `node_ports` on 127.0.0.1.
    pub fn new(node_image: impl Into<String>, node_ports: Vec<u16>) -> Self {
        KindConfig {
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            node_image: node_image.into(),
            node_ports,
            host_ports: Default::default(),
            listen_address: "127.0.0.1".to_string(),
        }
    }
}

/// Whether the NodePorts must be published on the host (`extraPortMappings`): only
/// where the node's own address is not reachable from the host: not a Linux host
/// (Docker Desktop, Colima: the engine runs in a VM), a remote engine (`DOCKER_HOST`
/// not a unix socket), Docker Desktop on Linux, or a rootless engine (the
/// containers' network is in another namespace). `engine_os` and
/// `security_options` are `docker info`'s `OperatingSystem` and `SecurityOptions`.
pub fn needs_port_mappings(
    linux_host: bool,
    docker_host: Option<&str>,
    engine_os: &str,
    security_options: &str,
) -> bool {
    let remote = docker_host
        .filter(|h| !h.is_empty())
        .is_some_and(|h| !h.starts_with("unix://"));
    !linux_host
        || remote
        || engine_os.contains("Docker Desktop")
        || security_options.contains("rootless")
}

/// The host port `docker port NODE PORT/tcp` reports (`127.0.0.1:30080`,
/// `0.0.0.0:31234`, `[::]:31234`; IPv4 preferred).
pub fn parse_docker_port(out: &str) -> Option<u16> {
    let ports: Vec<(bool, u16)> = out
        .lines()
        .filter_map(|l| {
            let (addr, port) = l.trim().rsplit_once(':')?;
            Some((!addr.starts_with('['), port.parse().ok()?))
        })
        .collect();
    ports
        .iter()
        .find(|(v4, _)| *v4)
        .or(ports.first())
        .map(|(_, p)| *p)
}

/// `docker port NODE PORT/tcp`: where a published NodePort is on the host.
pub fn docker_port_args(node_container: &str, port: u16) -> Vec<String> {
    strings(&["port", node_container, &format!("{port}/tcp")])
}

/// A YAML double-quoted scalar (JSON string syntax is a subset of YAML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("serializing a str cannot fail")
}

/// The kind cluster config (`kind.x-k8s.io/v1alpha4`): one control-plane node on
/// [`KindConfig::node_image`], with an `extraPortMappings` entry (TCP,
/// `containerPort == hostPort`, on [`KindConfig::listen_address`]) per node port.
/// No `kubeadmConfigPatches`: nothing in the kind target needs them.
pub fn kind_config_yaml(c: &KindConfig) -> String {
    let mut ports = c.node_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut y = String::new();
    y.push_str("# kind cluster config written by meshcheck (src/targets/kind/config.rs)\n");
    y.push_str("kind: Cluster\n");
    y.push_str("apiVersion: kind.x-k8s.io/v1alpha4\n");
    y.push_str(&format!("name: {}\n", quoted(&c.cluster_name)));
    y.push_str("nodes:\n");
    y.push_str("  - role: control-plane\n");
    if !c.node_image.is_empty() {
        y.push_str(&format!("    image: {}\n", quoted(&c.node_image)));
    }
    if !ports.is_empty() {
        y.push_str("    extraPortMappings:\n");
        for p in ports {
            y.push_str(&format!("      - containerPort: {p}\n"));
            y.push_str(&format!(
                "        hostPort: {}\n",
                c.host_ports.get(&p).copied().unwrap_or(p)
            ));
            y.push_str(&format!(
                "        listenAddress: {}\n",
                quoted(&c.listen_address)
            ));
            y.push_str("        protocol: TCP\n");
        }
    }
    y
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `kind create cluster --name N --image I --config PATH --kubeconfig K --wait 180s`
/// (`--image` left out when [`KindConfig::node_image`] is empty). `K` is a file in the
/// run's working directory: kind would otherwise add the cluster to the user's
/// `~/.kube/config` (or `$KUBECONFIG`) and switch its current context.
pub fn create_cluster_args(c: &KindConfig, config_path: &str, kubeconfig: &str) -> Vec<String> {
    let mut a = strings(&["create", "cluster", "--name", &c.cluster_name]);
    if !c.node_image.is_empty() {
        a.extend(strings(&["--image", &c.node_image]));
    }
    a.extend(strings(&[
        "--config",
        config_path,
        "--kubeconfig",
        kubeconfig,
        "--wait",
        KIND_WAIT,
    ]));
    a
}

/// `kind delete cluster --name N --kubeconfig K` (succeeds when the cluster does not
/// exist); `K` as for [`create_cluster_args`], so the user's kubeconfig is untouched.
pub fn delete_cluster_args(name: &str, kubeconfig: &str) -> Vec<String> {
    strings(&[
        "delete",
        "cluster",
        "--name",
        name,
        "--kubeconfig",
        kubeconfig,
    ])
}

/// Substrings (lowercase) of what kubeadm and the kubelet print when Kubernetes 1.35+
/// refuses a cgroup v1 host (`failCgroupV1` defaults to true since 1.35).
const CGROUP_V1_REFUSALS: &[&str] = &[
    "cgroups v1 support is unsupported",
    "cgroup v1 support is unsupported",
    "to not run on a host using cgroup v1",
    "failcgroupv1",
];

/// The Kubernetes minor of a node image reference (`kindest/node:v1.35.0@sha256:..`
/// -> 35).
pub fn node_image_minor(image: &str) -> Option<u32> {
    let tag = image.split('@').next()?.rsplit_once(':')?.1;
    major_minor(tag).map(|(_, minor)| minor)
}

/// Why a failed `kind create cluster` (its whole stderr) will fail the same way
/// every time, or `None`: kubeadm init with a Kubernetes 1.35+ node image on a
/// cgroup v1 host (recognised by kubeadm's or the kubelet's words, or by the Docker
/// engine's `CgroupVersion` 1 when kubeadm init failed). Checked before
/// [`is_transient_kind_failure`], which would retry it.
pub fn deterministic_kind_failure(
    stderr: &str,
    node_image: &str,
    engine_cgroup_version: Option<&str>,
) -> Option<String> {
    let s = stderr.to_ascii_lowercase();
    let said = CGROUP_V1_REFUSALS.iter().any(|n| s.contains(n));
    let inferred = s.contains("failed to init node with kubeadm")
        && engine_cgroup_version.map(str::trim) == Some("1")
        && node_image_minor(node_image).is_some_and(|m| m >= 35);
    (said || inferred).then(|| {
        format!(
            "kubeadm init cannot succeed here: the Docker engine's host uses cgroup v1, which \
             Kubernetes 1.35 and newer refuse (node image {}). Run on a host with cgroup v2 \
             (or a Docker Desktop/VM that has it), or pass --node-image with Kubernetes 1.34 \
             (not retried: it fails the same way every time)",
            if node_image.is_empty() {
                "kind's default"
            } else {
                node_image
            }
        )
    })
}

/// `docker save -o ARCHIVE IMAGE`: the image as a tar archive for
/// [`load_image_archive_args`]. `kind load docker-image` is not used: with Docker's
/// containerd image store (the default of Docker Engine 29 and Docker Desktop) the
/// archive it saves lacks layers and the import fails ("content digest ... not
/// found", kubernetes-sigs/kind#3795); an archive saved by the engine's CLI loads.
pub fn save_image_args(image: &str, archive: &str) -> Vec<String> {
    strings(&["save", "-o", archive, image])
}

/// `kind load image-archive ARCHIVE --name N`: imports an image archive
/// ([`save_image_args`]) into every node's containerd.
pub fn load_image_archive_args(name: &str, archive: &str) -> Vec<String> {
    strings(&["load", "image-archive", archive, "--name", name])
}

/// `kind get kubeconfig --name N`: the cluster's kubeconfig on stdout (context
/// `kind-<name>`).
pub fn kubeconfig_args(name: &str) -> Vec<String> {
    strings(&["get", "kubeconfig", "--name", name])
}

/// The Docker container of the control-plane node: `<name>-control-plane` (for
/// `docker inspect`, i.e. the node IP on Linux).
pub fn node_container(name: &str) -> String {
    format!("{name}-control-plane")
}

/// `(major, minor)` of `1.30.3`, `v1.30.3`, `1.30`, `1.31.0-rc.0`.
pub(crate) fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut parts = v.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    if let Some(rest) = parts.next() {
        // The patch must start with a digit; anything may follow (-rc.0, -alpha.x).
        if !rest.starts_with(|ch: char| ch.is_ascii_digit()) {
            return None;
        }
    }
    Some((major, minor))
}

/// The Kubernetes minors `(min, max)` (major 1) that Istio `istio_version` supports, or
/// `None` for a version that does not parse or whose minor is not in the table
/// (1.22 to 1.30).
pub fn supported_kubernetes(istio_version: &str) -> Option<(u32, u32)> {
    match major_minor(istio_version)? {
        (1, minor) => ISTIO_KUBERNETES
            .iter()
            .find(|(m, _, _)| *m == minor)
            .map(|&(_, lo, hi)| (lo, hi)),
        _ => None,
    }
}

/// The node image (`kindest/node:vX.Y.Z@sha256:…`) for a cluster that Istio
/// `istio_version` supports: the newest Kubernetes minor that both it supports and
/// kind [`KIND_VERSION`] ships an image for. The error says which of the two is
/// missing.
pub fn node_image_for(istio_version: &str) -> Result<String, String> {
    let Some((major, minor)) = major_minor(istio_version) else {
        return Err(format!(
            "Istio version {istio_version:?} is not of the form 1.MINOR.PATCH"
        ));
    };
    let Some((lo, hi)) = supported_kubernetes(istio_version) else {
        let (first, last) = (ISTIO_KUBERNETES[0].0, ISTIO_KUBERNETES.last().unwrap().0);
        return Err(format!(
            "no Kubernetes range is known for Istio {major}.{minor} (known: 1.{first} to \
             1.{last}); choose one of those, or add the version to ISTIO_KUBERNETES in \
             src/targets/kind/config.rs"
        ));
    };
    KIND_NODE_IMAGES
        .iter()
        .filter(|(k, _)| (lo..=hi).contains(k))
        .max_by_key(|(k, _)| *k)
        .map(|(_, image)| image.to_string())
        .ok_or_else(|| {
            let newest = KIND_NODE_IMAGES.iter().map(|(k, _)| *k).max().unwrap_or(0);
            let oldest = KIND_NODE_IMAGES.iter().map(|(k, _)| *k).min().unwrap_or(0);
            format!(
                "Istio {major}.{minor} supports Kubernetes 1.{lo} to 1.{hi}, but kind \
                 {KIND_VERSION} ships node images for Kubernetes 1.{oldest} to 1.{newest} \
                 only; choose another Istio version"
            )
        })
}

/// How to run `istioctl install` (the istioctl binary itself must be of `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioInstall {
    /// The Istio version; selects the istioctl binary, it is not an argument.
    pub version: String,
    /// `--revision`, a DNS-1123 label ([`revision_for`]); `None`: the default revision.
    pub revision: Option<String>,
    /// Path of the kubeconfig file.
    pub kubeconfig: String,
    /// Kubeconfig context; `None`: the file's current context.
    pub context: Option<String>,
}

/// `istioctl install -y --set profile=minimal --readiness-timeout 300s --kubeconfig K
/// [--context C] [--revision R]`: istiod only; the fixtures bring their own gateway.
pub fn istioctl_install_args(i: &IstioInstall) -> Vec<String> {
    let mut a = strings(&[
        "install",
        "-y",
        "--set",
        "profile=minimal",
        "--readiness-timeout",
        ISTIO_READINESS_TIMEOUT,
        "--kubeconfig",
        &i.kubeconfig,
    ]);
    if let Some(ctx) = &i.context {
        a.extend(strings(&["--context", ctx]));
    }
    if let Some(rev) = &i.revision {
        a.extend(strings(&["--revision", rev]));
    }
    a
}

/// `--set hub=HUB`: the registry Istio's images (pilot, proxyv2) come from; nothing
/// for `None` (istioctl's default, docker.io/istio). Istio publishes every release
/// to gcr.io/istio-release too, without Docker Hub's anonymous pull limits.
pub fn hub_args(hub: Option<&str>) -> Vec<String> {
    match hub.map(str::trim).filter(|h| !h.is_empty()) {
        Some(h) => strings(&["--set", &format!("hub={h}")]),
        None => Vec::new(),
    }
}

/// The revision name for an Istio version, a DNS-1123 label: `1.30.3` -> `1-30-3`,
/// `v1.31.0-rc.0` -> `1-31-0-rc-0` (lowercase; a leading `v` dropped; every run of
/// other characters one `-`; at most 63 characters, no `-` at either end).
pub fn revision_for(version: &str) -> String {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut out = String::with_capacity(v.len());
    for ch in v.chars().map(|c| c.to_ascii_lowercase()) {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            out.push(ch);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `istioctl proxy-config all POD -n NS -o json [--kubeconfig K] [--context C]`: the
/// whole Envoy config of one proxy (for diagnostics), on the cluster the run uses.
/// Without a kubeconfig file istioctl reads `$KUBECONFIG` (every file, as kubectl).
pub fn istioctl_proxy_config_args(
    pod: &str,
    namespace: &str,
    kubeconfig: Option<&str>,
    context: Option<&str>,
) -> Vec<String> {
    let mut a = strings(&["proxy-config", "all", pod, "-n", namespace, "-o", "json"]);
    if let Some(k) = kubeconfig {
        a.extend(strings(&["--kubeconfig", k]));
    }
    if let Some(c) = context {
        a.extend(strings(&["--context", c]));
    }
    a
}

/// `docker build -t TAG -f DOCKERFILE CONTEXT`.
pub fn docker_build_args(tag: &str, dockerfile: &str, context_dir: &str) -> Vec<String> {
    strings(&["build", "-t", tag, "-f", dockerfile, context_dir])
}

/// The stub image tag for a content hash: `meshcheck/stub:<first 12 hex digits>`,
/// lowercase, after an optional `sha256:` prefix. `latest` is never used, so a node
/// never runs a stale stub. The hash must start with hex digits (a sha256 in hex does).
pub fn stub_image_tag(content_hash: &str) -> String {
    let h = content_hash.trim();
    let h = h.strip_prefix("sha256:").unwrap_or(h);
    let short: String = h
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .take(12)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // The fixtures name `meshcheck/stub:latest`; the kind target rewrites it to this.
    format!("{}:{short}", crate::istio::STUB_IMAGE)
}

/// Whether a failed `kind create cluster` (its stderr) is a known transient failure
/// worth a retry (Istio's CI retries each step 5 times, 5 s apart). Anything else
/// (name taken, no Docker, a bad config) is reported at once.
pub fn is_transient_kind_failure(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    TRANSIENT_KIND_FAILURES
        .iter()
        .any(|needle| s.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::super::tools::{ISTIO_PREVIOUS, ISTIO_VERSION};
    use super::*;

    const V135: &str =
        "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f";

    fn cfg(ports: Vec<u16>) -> KindConfig {
        KindConfig::new(V135, ports)
    }

    fn v(a: &[&str]) -> Vec<String> {
        strings(a)
    }

    #[test]
    fn config_one_port() {
        let expected = r#"# kind cluster config written by meshcheck (src/targets/kind/config.rs)
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: "meshcheck"
nodes:
  - role: control-plane
    image: "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f"
    extraPortMappings:
      - containerPort: 30080
        hostPort: 30080
        listenAddress: "127.0.0.1"
        protocol: TCP
"#;
        assert_eq!(kind_config_yaml(&cfg(vec![30080])), expected);
    }

    #[test]
    fn config_two_ports() {
        let expected = r#"# kind cluster config written by meshcheck (src/targets/kind/config.rs)
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: "meshcheck"
nodes:
  - role: control-plane
    image: "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f"
    extraPortMappings:
      - containerPort: 30080
        hostPort: 30080
        listenAddress: "127.0.0.1"
        protocol: TCP
      - containerPort: 32143
        hostPort: 32143
        listenAddress: "127.0.0.1"
        protocol: TCP
"#;
        assert_eq!(kind_config_yaml(&cfg(vec![30080, 32143])), expected);
        // Sorted and deduplicated: the order of discovery does not change the file.
        assert_eq!(kind_config_yaml(&cfg(vec![32143, 30080, 32143])), expected);
    }

    /// A second kept cluster: its NodePort published on another host port.
    #[test]
    fn config_with_another_host_port() {
        let mut c = cfg(vec![30080]);
        c.host_ports.insert(30080, 41234);
        let y = kind_config_yaml(&c);
        assert!(
            y.contains("      - containerPort: 30080\n        hostPort: 41234\n"),
            "{y}"
        );
    }

    #[test]
    fn port_mappings_only_where_the_node_is_not_reachable() {
        // Native Linux engine: the node's address is reachable.
        assert!(!needs_port_mappings(
            true,
            None,
            "Ubuntu 24.04.1 LTS",
            "name=seccomp,profile=builtin"
        ));
        assert!(!needs_port_mappings(
            true,
            Some("unix:///run/docker.sock"),
            "Debian GNU/Linux 12 (bookworm)",
            ""
        ));
        // macOS / Windows, Docker Desktop on Linux, remote and rootless engines.
        assert!(needs_port_mappings(false, None, "Docker Desktop", ""));
        assert!(needs_port_mappings(true, None, "Docker Desktop", ""));
        assert!(needs_port_mappings(
            true,
            Some("tcp://10.0.0.5:2376"),
            "Ubuntu 24.04",
            ""
        ));
        assert!(needs_port_mappings(
            true,
            None,
            "Ubuntu 24.04",
            "name=seccomp,profile=builtin name=rootless name=cgroupns"
        ));
    }

    #[test]
    fn docker_port_output() {
        assert_eq!(parse_docker_port("127.0.0.1:30080\n"), Some(30080));
        assert_eq!(
            parse_docker_port("[::]:41234\n0.0.0.0:41234\n"),
            Some(41234)
        );
        assert_eq!(parse_docker_port("[::1]:41235\n"), Some(41235));
        assert_eq!(parse_docker_port(""), None);
        assert_eq!(
            parse_docker_port("Error: No public port '30080/tcp' published"),
            None
        );
        assert_eq!(
            docker_port_args("meshcheck-control-plane", 30080),
            v(&["port", "meshcheck-control-plane", "30080/tcp"])
        );
    }

    #[test]
    fn config_without_ports_or_image() {
        let c = KindConfig {
            cluster_name: "mc-2".into(),
            node_image: String::new(),
            node_ports: vec![],
            host_ports: Default::default(),
            listen_address: "127.0.0.1".into(),
        };
        let expected = r#"# kind cluster config written by meshcheck (src/targets/kind/config.rs)
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: "mc-2"
nodes:
  - role: control-plane
"#;
        assert_eq!(kind_config_yaml(&c), expected);
    }

    #[test]
    fn config_quotes_strings() {
        let mut c = cfg(vec![30080]);
        c.cluster_name = "a\"b\\c".into();
        let y = kind_config_yaml(&c);
        assert!(y.contains("name: \"a\\\"b\\\\c\"\n"), "{y}");
    }

    #[test]
    fn config_parses_as_json_compatible_scalars() {
        // Every quoted value is a valid JSON (hence YAML) string.
        let y = kind_config_yaml(&cfg(vec![30080]));
        for line in y.lines().filter(|l| l.contains(": \"")) {
            let value = line.split_once(": ").unwrap().1;
            let s: String = serde_json::from_str(value).unwrap();
            assert!(!s.is_empty());
        }
    }

    #[test]
    fn kind_args() {
        let c = cfg(vec![30080]);
        assert_eq!(
            create_cluster_args(&c, "/tmp/w/kind.yaml", "/tmp/w/kubeconfig"),
            v(&[
                "create",
                "cluster",
                "--name",
                "meshcheck",
                "--image",
                V135,
                "--config",
                "/tmp/w/kind.yaml",
                "--kubeconfig",
                "/tmp/w/kubeconfig",
                "--wait",
                "180s"
            ])
        );
        let mut d = c.clone();
        d.node_image.clear();
        assert_eq!(
            create_cluster_args(&d, "k.yaml", "kc"),
            v(&[
                "create",
                "cluster",
                "--name",
                "meshcheck",
                "--config",
                "k.yaml",
                "--kubeconfig",
                "kc",
                "--wait",
                "180s"
            ])
        );
        assert_eq!(
            delete_cluster_args("meshcheck", "/tmp/w/kubeconfig"),
            v(&[
                "delete",
                "cluster",
                "--name",
                "meshcheck",
                "--kubeconfig",
                "/tmp/w/kubeconfig"
            ])
        );
        assert_eq!(
            save_image_args("meshcheck/stub:0123456789ab", "/tmp/w/stub-image.tar"),
            v(&[
                "save",
                "-o",
                "/tmp/w/stub-image.tar",
                "meshcheck/stub:0123456789ab"
            ])
        );
        assert_eq!(
            load_image_archive_args("meshcheck", "/tmp/w/stub-image.tar"),
            v(&[
                "load",
                "image-archive",
                "/tmp/w/stub-image.tar",
                "--name",
                "meshcheck"
            ])
        );
        assert_eq!(
            kubeconfig_args("meshcheck"),
            v(&["get", "kubeconfig", "--name", "meshcheck"])
        );
        assert_eq!(node_container("meshcheck"), "meshcheck-control-plane");
    }

    /// The nightly workflow and the Dockerfile state the pins of the code: the Istio
    /// versions of the matrices, Istio's images from its release hub, a Docker Hub
    /// login before each job pulls (when a token exists), and the crate's
    /// rust-version in the Dockerfile's comment, below its Rust image.
    #[test]
    fn the_ci_and_the_dockerfile_state_the_pins() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let nightly = read(".github/workflows/nightly.yml");
        assert!(
            nightly.contains(&format!("'[\"{ISTIO_VERSION}\", \"{ISTIO_PREVIOUS}\"]'")),
            "the kind matrix is not [{ISTIO_VERSION}, {ISTIO_PREVIOUS}]"
        );
        assert!(nightly.contains(&format!("FROM: \"{ISTIO_PREVIOUS}\"")));
        assert!(nightly.contains(&format!("TO: \"{ISTIO_VERSION}\"")));
        assert!(nightly.contains("\n  MESHCHECK_ISTIO_HUB: gcr.io/istio-release\n"));
        // Every job that pulls from Docker Hub (docker version marks them) logs in
        // first, only with a token.
        let pulls = nightly.matches("- name: docker version").count();
        let logins: Vec<&str> = nightly
            .split("- name: log in to Docker Hub")
            .skip(1)
            .collect();
        assert!(
            pulls >= 3 && logins.len() == pulls,
            "{pulls} jobs, {} logins",
            logins.len()
        );
        for l in logins {
            let step = &l[..l.find("- name:").unwrap_or(l.len())];
            assert!(step.contains("if: env.DOCKERHUB_TOKEN != ''"), "{step}");
            assert!(
                step.contains("password: ${{ env.DOCKERHUB_TOKEN }}"),
                "{step}"
            );
        }
        let manifest = read("Cargo.toml");
        let rust_version = manifest
            .lines()
            .find_map(|l| l.strip_prefix("rust-version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap();
        let dockerfile = read("Dockerfile");
        assert!(
            dockerfile.contains(&format!("rust-version ({rust_version}, Cargo.toml)")),
            "the Dockerfile's comment does not say rust-version {rust_version}"
        );
        let image = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("FROM rust:"))
            .and_then(|l| l.split('-').next())
            .unwrap();
        assert!(
            major_minor(image).unwrap() >= major_minor(rust_version).unwrap(),
            "rust:{image} is older than rust-version {rust_version}"
        );
    }

    #[test]
    fn kind_config_defaults() {
        let c = KindConfig::new("img", vec![30080]);
        assert_eq!(c.cluster_name, DEFAULT_CLUSTER_NAME);
        assert_eq!(c.cluster_name, "meshcheck");
        assert_eq!(c.listen_address, "127.0.0.1");
    }

    #[test]
    fn node_image_table_is_for_the_pinned_kind() {
        assert_eq!(
            KIND_VERSION, "v0.31.0",
            "KIND_NODE_IMAGES lists kind v0.31.0's images; replace it with the images of \
             the new release's notes"
        );
        for (minor, image) in KIND_NODE_IMAGES {
            let prefix = format!("kindest/node:v1.{minor}.");
            assert!(image.starts_with(&prefix), "{image}");
            let digest = image.split_once("@sha256:").expect("pinned by digest").1;
            assert_eq!(digest.len(), 64, "{image}");
            assert!(digest.chars().all(|c| c.is_ascii_hexdigit()), "{image}");
        }
    }

    #[test]
    fn node_images_for_pinned_istio_versions() {
        // 1.30 supports 1.32-1.36, 1.29 supports 1.30-1.35; kind v0.31.0 ships 1.31-1.35.
        assert_eq!(node_image_for(ISTIO_VERSION).unwrap(), V135);
        assert_eq!(node_image_for(ISTIO_PREVIOUS).unwrap(), V135);
        assert_eq!(node_image_for("1.30.3").unwrap(), V135);
        assert_eq!(node_image_for("v1.29.4").unwrap(), V135);
        assert_eq!(
            node_image_for("1.26.0").unwrap(),
            "kindest/node:v1.32.11@sha256:5fc52d52a7b9574015299724bd68f183702956aa4a2116ae75a63cb574b35af8"
        );
        assert_eq!(
            node_image_for("1.24.6").unwrap(),
            "kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b"
        );
        assert_eq!(
            node_image_for("1.28.0-rc.1").unwrap().split('@').next(),
            Some("kindest/node:v1.34.3")
        );
    }

    #[test]
    fn node_image_errors() {
        let e = node_image_for("1.10.0").unwrap_err();
        assert!(
            e.contains("Istio 1.10") && e.contains("1.22 to 1.30"),
            "{e}"
        );
        // Known to Istio, but older than any image of kind v0.31.0.
        let e = node_image_for("1.23.2").unwrap_err();
        assert!(
            e.contains("1.26 to 1.30") && e.contains("v0.31.0") && e.contains("1.31 to 1.35"),
            "{e}"
        );
        for bad in ["", "latest", "1", "1.x.0", "2.0.0", "1.30.x"] {
            assert!(node_image_for(bad).is_err(), "{bad:?}");
        }
        assert!(node_image_for("1.31.0").is_err());
    }

    #[test]
    fn kubernetes_ranges() {
        assert_eq!(supported_kubernetes(ISTIO_VERSION), Some((32, 36)));
        assert_eq!(supported_kubernetes(ISTIO_PREVIOUS), Some((30, 35)));
        assert_eq!(supported_kubernetes("1.22.0"), Some((26, 30)));
        assert_eq!(supported_kubernetes("1.30"), Some((32, 36)));
        assert_eq!(supported_kubernetes("1.10.0"), None);
        assert_eq!(supported_kubernetes("nonsense"), None);
        // Ranges are well formed and contiguous from 1.22.
        for (i, (m, lo, hi)) in ISTIO_KUBERNETES.iter().enumerate() {
            assert!(lo <= hi, "1.{m}");
            assert_eq!(*m, 22 + i as u32);
        }
    }

    #[test]
    fn istioctl_args() {
        let mut i = IstioInstall {
            version: "1.30.3".into(),
            revision: None,
            kubeconfig: "/w/kubeconfig".into(),
            context: None,
        };
        assert_eq!(
            istioctl_install_args(&i),
            v(&[
                "install",
                "-y",
                "--set",
                "profile=minimal",
                "--readiness-timeout",
                "300s",
                "--kubeconfig",
                "/w/kubeconfig"
            ])
        );
        i.context = Some("kind-meshcheck".into());
        i.revision = Some(revision_for(&i.version));
        assert_eq!(
            istioctl_install_args(&i),
            v(&[
                "install",
                "-y",
                "--set",
                "profile=minimal",
                "--readiness-timeout",
                "300s",
                "--kubeconfig",
                "/w/kubeconfig",
                "--context",
                "kind-meshcheck",
                "--revision",
                "1-30-3"
            ])
        );
        assert_eq!(
            istioctl_proxy_config_args(
                "my-ingress-gateway-7d9f-x",
                "istio-ingress",
                Some("/w/kc"),
                None
            ),
            v(&[
                "proxy-config",
                "all",
                "my-ingress-gateway-7d9f-x",
                "-n",
                "istio-ingress",
                "-o",
                "json",
                "--kubeconfig",
                "/w/kc"
            ])
        );
        // The existing target's context, and $KUBECONFIG left to istioctl.
        assert_eq!(
            istioctl_proxy_config_args(
                "my-ingress-gateway-7d9f-x",
                "istio-ingress",
                None,
                Some("staging")
            ),
            v(&[
                "proxy-config",
                "all",
                "my-ingress-gateway-7d9f-x",
                "-n",
                "istio-ingress",
                "-o",
                "json",
                "--context",
                "staging"
            ])
        );
    }

    #[test]
    fn revisions() {
        assert_eq!(revision_for("1.30.3"), "1-30-3");
        assert_eq!(ISTIO_PREVIOUS, "1.29.6");
        assert_eq!(revision_for(ISTIO_PREVIOUS), "1-29-6");
        assert_eq!(revision_for("v1.31.0-rc.0"), "1-31-0-rc-0");
        assert_eq!(revision_for("1.31.0-RC.0"), "1-31-0-rc-0");
        assert_eq!(revision_for(" 1..30_3. "), "1-30-3");
        let long = revision_for(&"1.".repeat(50));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
        for r in [revision_for(ISTIO_VERSION), long] {
            assert!(r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert!(!r.starts_with('-') && !r.ends_with('-'));
        }
    }

    #[test]
    fn the_istio_hub_is_set_only_when_given() {
        assert_eq!(
            hub_args(Some("gcr.io/istio-release")),
            v(&["--set", "hub=gcr.io/istio-release"])
        );
        assert!(hub_args(None).is_empty());
        assert!(hub_args(Some(" ")).is_empty());
    }

    #[test]
    fn docker_and_tags() {
        assert_eq!(
            docker_build_args("meshcheck/stub:0123456789ab", "/repo/Dockerfile", "/repo"),
            v(&[
                "build",
                "-t",
                "meshcheck/stub:0123456789ab",
                "-f",
                "/repo/Dockerfile",
                "/repo"
            ])
        );
        let hash = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(stub_image_tag(hash), "meshcheck/stub:0123456789ab");
        assert_eq!(
            stub_image_tag(&format!("sha256:{}", &hash[2..])),
            "meshcheck/stub:23456789abcd"
        );
        assert_eq!(stub_image_tag("abc"), "meshcheck/stub:abc");
    }

    #[test]
    fn a_cgroup_v1_host_is_a_deterministic_failure() {
        let kubeadm = "ERROR: failed to create cluster: failed to init node with kubeadm: command \"docker exec --privileged meshcheck-control-plane kubeadm init --config=/kind/kubeadm.conf --skipTokenPrint --v=6\" failed with error: exit status 1";
        let said = format!(
            "{kubeadm}\nCommand Output: [preflight] Running pre-flight checks\n\
             error execution phase preflight: [preflight] Some fatal errors occurred:\n\
             \t[ERROR SystemVerification]: cgroups v1 support is unsupported and will be removed in a future release. Please migrate to cgroups v2."
        );
        // Transient by its first line, deterministic by what kubeadm said.
        assert!(is_transient_kind_failure(&said));
        let why = deterministic_kind_failure(&said, V135, None).expect("deterministic");
        assert!(why.contains("cgroup v1"), "{why}");
        assert!(why.contains("not retried"), "{why}");
        // The engine says cgroup v1 and the node runs 1.35: kubeadm cannot succeed.
        assert!(deterministic_kind_failure(kubeadm, V135, Some("1\n")).is_some());
        // ...but with Kubernetes 1.34, or on cgroup v2, it may be a flake.
        assert_eq!(
            deterministic_kind_failure(kubeadm, "kindest/node:v1.34.0", Some("1")),
            None
        );
        assert_eq!(deterministic_kind_failure(kubeadm, V135, Some("2")), None);
        // kind's own wait names "detected cgroup v1": not a refusal.
        assert_eq!(
            deterministic_kind_failure(
                "ERROR: failed to create cluster: could not find a log line that matches \"Reached target .*Multi-User System.*|detected cgroup v1\"",
                V135,
                Some("2")
            ),
            None
        );
        assert_eq!(node_image_minor(V135), Some(35));
        assert_eq!(node_image_minor("kindest/node:v1.34.0"), Some(34));
        assert_eq!(node_image_minor(""), None);
    }

    #[test]
    fn transient_kind_failures() {
        for stderr in [
            "ERROR: failed to create cluster: failed to init node with kubeadm: command \"docker exec --privileged meshcheck-control-plane kubeadm init\" failed with error: exit status 1",
            "ERROR: failed to create cluster: could not find a log line that matches \"Reached target .*Multi-User System.*|detected cgroup v1\"",
            "error: timed out waiting for the condition on nodes/meshcheck-control-plane",
            "Error response from daemon: error creating network: something",
            "ERROR: failed to create cluster: FAILED TO INIT NODE WITH KUBEADM",
        ] {
            assert!(is_transient_kind_failure(stderr), "{stderr}");
        }
        for stderr in [
            "",
            "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"meshcheck\"",
            "ERROR: failed to create cluster: failed to get docker info: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
            "ERROR: failed to create cluster: error unmarshaling YAML: line 3: cannot unmarshal",
            "ERROR: failed to create cluster: could not find a log line",
        ] {
            assert!(!is_transient_kind_failure(stderr), "{stderr}");
        }
    }
}
