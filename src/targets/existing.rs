//! The existing target: the cluster of the user's kubeconfig. Applies the fixtures
//! (unless `--no-apply`: then it checks what is deployed), optionally under a namespace
//! prefix so a run does not collide with real workloads, and deletes only what it
//! created.

use super::cluster::{deploy, ClusterTarget, DeployOptions};
use super::TargetError;
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use crate::suite::{CheckKind, Suite};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct ExistingOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub no_apply: bool,
    pub namespace_prefix: Option<String>,
    pub node_address: Option<IpAddr>,
    /// Replace `meshcheck/stub` images by this reference (an image the cluster can pull).
    pub stub_image: Option<String>,
    pub keep: bool,
    pub rollout_timeout: Option<Duration>,
    /// Take over fixture objects that exist already and meshcheck did not create.
    pub adopt: bool,
    /// `--revision R`: label namespaces `istio.io/rev=R` (revision-only installs).
    pub revision: Option<String>,
    /// `--service-type NodePort`: LoadBalancer Services applied as NodePort.
    pub node_port_services: bool,
    /// Check, right after the deploy, that the gateway answers at the address and
    /// port the checks will use (the selected checks send traffic).
    pub reach_gateway: bool,
    /// Where diagnostics go when the apply or a rollout fails.
    pub diagnostics_dir: Option<PathBuf>,
    /// `--install-gateway-api-crds`: install the Gateway API CRDs the cluster lacks
    /// when the fixtures use the Gateway API (without it: exit 3 naming them).
    pub install_gateway_api_crds: bool,
}

fn unavailable(why: impl Into<String>) -> TargetError {
    TargetError::Unavailable {
        target: "existing".into(),
        why: why.into(),
    }
}

/// Where the kubeconfig comes from, in kubectl's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// `--kubeconfig FILE`, or `~/.kube/config`.
    File(PathBuf),
    /// `$KUBECONFIG`: its files that exist (kubectl ignores missing ones), merged as
    /// kubectl merges them (the first file to set a value or a named entry wins).
    Env(Vec<PathBuf>),
}

impl KubeconfigSource {
    /// For messages and reports: the file, or the files joined like `$KUBECONFIG`.
    pub fn describe(&self) -> String {
        match self {
            KubeconfigSource::File(p) => p.display().to_string(),
            KubeconfigSource::Env(ps) => ps
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        }
    }

    /// The merged kubeconfig (kube-rs' `Kubeconfig::merge`, kubectl's rules).
    pub fn read(&self) -> Result<::kube::config::Kubeconfig, TargetError> {
        use ::kube::config::Kubeconfig;
        let read = |p: &Path| {
            Kubeconfig::read_from(p)
                .map_err(|e| unavailable(format!("cannot read kubeconfig {}: {e}", p.display())))
        };
        match self {
            KubeconfigSource::File(p) => read(p),
            KubeconfigSource::Env(ps) => ps.iter().try_fold(Kubeconfig::default(), |merged, p| {
                merged.merge(read(p)?).map_err(|e| {
                    unavailable(format!("cannot merge kubeconfig {}: {e}", p.display()))
                })
            }),
        }
    }
}

/// The kubeconfig to use: `--kubeconfig`, else every existing file of
/// `$KUBECONFIG`, else `~/.kube/config`.
pub fn kubeconfig_source(explicit: Option<&Path>) -> Result<KubeconfigSource, TargetError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(KubeconfigSource::File(p.to_path_buf()))
        } else {
            Err(unavailable(format!(
                "--kubeconfig {} does not exist",
                p.display()
            )))
        };
    }
    if let Some(env) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let files: Vec<PathBuf> = std::env::split_paths(&env)
            .filter(|p| p.is_file())
            .collect();
        if files.is_empty() {
            return Err(unavailable(format!(
                "KUBECONFIG={} names no existing file",
                env.to_string_lossy()
            )));
        }
        return Ok(KubeconfigSource::Env(files));
    }
    let home = dirs::home_dir().map(|h| h.join(".kube/config"));
    match home {
        Some(p) if p.is_file() => Ok(KubeconfigSource::File(p)),
        _ => Err(unavailable(
            "no kubeconfig: KUBECONFIG is unset and ~/.kube/config does not exist; pass --kubeconfig FILE (and --context NAME), or run with --target local",
        )),
    }
}

/// A client for the kubeconfig file `path` (and `context`), checked with a version
/// request.
pub async fn client_from_kubeconfig(
    path: &Path,
    context: Option<&str>,
) -> Result<::kube::Client, TargetError> {
    client_from_source(&KubeconfigSource::File(path.to_path_buf()), context).await
}

/// A client for `source` (and `context`), checked with a version request.
pub async fn client_from_source(
    source: &KubeconfigSource,
    context: Option<&str>,
) -> Result<::kube::Client, TargetError> {
    let kc = source.read()?;
    let opts = ::kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = ::kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| unavailable(format!("kubeconfig {}: {e}", source.describe())))?;
    let server = config.cluster_url.to_string();
    let client = ::kube::Client::try_from(config)
        .map_err(|e| unavailable(format!("cannot build a client for {server}: {e}")))?;
    match tokio::time::timeout(Duration::from_secs(15), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(unavailable(format!(
            "the API server {server} does not answer: {e}"
        ))),
        Err(_) => Err(unavailable(format!(
            "the API server {server} did not answer within 15s"
        ))),
    }
}

/// Applying fixtures whose workloads run the stub image needs `--stub-image`: the
/// `meshcheck/stub` image exists only where meshcheck builds it (local, kind); an
/// existing cluster would pull it from a public registry (someone else's image, or
/// an ImagePullBackOff until the rollout times out). Checked before anything is
/// contacted.
pub fn check_stub_image(fx: &Fixtures, opts: &ExistingOptions) -> Result<(), TargetError> {
    if opts.no_apply || opts.stub_image.is_some() {
        return Ok(());
    }
    match super::kube::first_using_image(&fx.objects, crate::istio::STUB_IMAGE) {
        None => Ok(()),
        Some(o) => Err(TargetError::BadInput(format!(
            "{}: {} runs the image {}, which only exists where meshcheck builds it: \
             pass --stub-image REGISTRY/meshcheck/stub:TAG (the Dockerfile's image, pushed \
             where the cluster can pull it), or --no-apply to check what is deployed",
            o.source,
            o.describe(),
            crate::istio::STUB_IMAGE
        ))),
    }
}

/// With `--namespace-prefix`, the namespaces the suite's expectations name
/// (`backend.namespace` and `mirrored_to.namespace` of http checks and steps,
/// `sidecars.namespaces` and `sidecars.plaintext_refused`) as the cluster has
/// them: the fixtures' namespaces prefixed, others (not the fixtures') unchanged.
pub fn rename_expectations(suite: &mut Suite, prefix: &str, fx: &Fixtures) {
    let renamer = super::kube::NamespaceRenamer::new(prefix, &fx.objects);
    for check in &mut suite.checks {
        match &mut check.kind {
            CheckKind::Http(h) => rename_http(&mut h.expect, &renamer),
            CheckKind::Steps(steps) => {
                for s in steps {
                    rename_http(&mut s.http.expect, &renamer);
                }
            }
            CheckKind::Sidecars(s) => {
                for ns in s.namespaces.iter_mut().chain(&mut s.plaintext_refused) {
                    *ns = renamer.rename(ns);
                }
            }
            // A status check names the fixtures' namespaces; the target maps them.
            CheckKind::Distribution(_) | CheckKind::Ports(_) | CheckKind::Status(_) => {}
        }
    }
}

/// Connects to every gateway port the checks will use, at the address they will use
/// (a node's InternalIP, `--node-address`, or the load balancer's): a run whose
/// traffic cannot reach the gateway stops here, saying what to pass, instead of
/// failing every check with a connection error. Only an accepted connection counts.
async fn check_reachable(target: &ClusterTarget, node_given: bool) -> Result<(), TargetError> {
    let node = target.node;
    for (service_port, port) in &target.node_ports {
        let connect = tokio::net::TcpStream::connect((node, *port));
        let why = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5s".to_string(),
        };
        let how = if node_given {
            "the --node-address given"
        } else {
            "the address read from the cluster"
        };
        return Err(unavailable(format!(
            "the gateway's port {service_port} is not reachable at {node}:{port} ({how}): {why}; \
             pass --node-address with the address of a node this machine can reach \
             (a node's ExternalIP, or 127.0.0.1 with a port forward), or run where the \
             nodes are reachable"
        )));
    }
    Ok(())
}

/// `backend.namespace` and `mirrored_to.namespace` of an http expectation (a check's
/// or a step's).
fn rename_http(e: &mut crate::suite::HttpExpect, renamer: &super::kube::NamespaceRenamer) {
    if let Some(ns) = e.backend.as_mut().and_then(|b| b.namespace.as_mut()) {
        *ns = renamer.rename(ns);
    }
    if let Some(ns) = e.mirrored_to.as_mut().and_then(|m| m.namespace.as_mut()) {
        *ns = renamer.rename(ns);
    }
}

/// The Gateway API CRDs on an existing cluster: installed only when asked
/// (`--install-gateway-api-crds`), at the version the pinned Istio supports (the
/// cluster's Istio is the user's: meshcheck does not read its version).
fn gateway_api_crds(install: bool) -> super::cluster::GatewayApiCrds {
    let version = super::kube::gateway_api::version_for_istio(super::kind::tools::ISTIO_VERSION);
    if install {
        super::cluster::GatewayApiCrds::install(version)
    } else {
        super::cluster::GatewayApiCrds::Require {
            version: version.to_string(),
        }
    }
}

pub async fn bring_up(
    fx: &Fixtures,
    mesh: &Mesh,
    opts: &ExistingOptions,
) -> Result<ClusterTarget, TargetError> {
    check_stub_image(fx, opts)?;
    let source = kubeconfig_source(opts.kubeconfig.as_deref())?;
    let client = client_from_source(&source, opts.context.as_deref()).await?;
    let dopts = DeployOptions {
        apply: !opts.no_apply,
        namespace_prefix: opts.namespace_prefix.clone(),
        image_rewrite: opts
            .stub_image
            .clone()
            .map(|i| (crate::istio::STUB_IMAGE.to_string(), i)),
        rollout_timeout: opts.rollout_timeout.unwrap_or(Duration::from_secs(300)),
        crd_timeout: Duration::from_secs(30),
        delete_created: !opts.keep && !opts.no_apply,
        adopt: opts.adopt,
        revision: opts.revision.clone(),
        node_port_services: opts.node_port_services,
        diagnostics_dir: opts.diagnostics_dir.clone(),
        gateway_api_crds: gateway_api_crds(opts.install_gateway_api_crds),
    };
    let mut target = deploy("existing", client, fx, mesh, &dopts, opts.node_address).await?;
    if opts.reach_gateway {
        check_reachable(&target, opts.node_address.is_some()).await?;
    }
    target.props.push(("kubeconfig".into(), source.describe()));
    if let Some(c) = &opts.context {
        target.props.push(("kube.context".into(), c.clone()));
    }
    // istioctl on PATH, if any, for the gateway's config dump in diagnostics: on the
    // same cluster (the file, or $KUBECONFIG which istioctl merges as kubectl does,
    // and the context).
    if let Some(bin) = super::kind::which("istioctl") {
        target.istioctl = Some(super::cluster::Istioctl {
            bin,
            kubeconfig: match source {
                KubeconfigSource::File(p) => Some(p),
                KubeconfigSource::Env(_) => None,
            },
            context: opts.context.clone(),
            install_files: Vec::new(),
        });
    }
    Ok(target)
}

#[cfg(test)]
mod rename_tests {
    use super::*;

    #[test]
    fn namespaces_in_http_checks_and_steps_get_the_prefix() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        let step = "http: { request: { path: /authz }, expect: { status: 200, backend: { namespace: atlas }, mirrored_to: { service: authz, namespace: atlas } } }";
        std::fs::write(
            &path,
            format!(
                "name: s\nfixtures: {}\nchecks:\n  - group: g\n    name: h\n    {step}\n  - group: g\n    name: s\n    steps:\n      - name: one\n        {step}\n  - group: g\n    name: p\n    sidecars: {{ namespaces: [atlas], plaintext_refused: [atlas, other] }}\n",
                root.join("fixtures/ingress").display()
            ),
        )
        .unwrap();
        let mut suite = crate::suite::load(&path).unwrap();
        let fx = crate::fixtures::load_dirs(&suite.fixtures_dirs()).unwrap();
        rename_expectations(&mut suite, "t1-", &fx);
        let expects: Vec<&crate::suite::HttpExpect> = suite
            .checks
            .iter()
            .flat_map(|c| match &c.kind {
                CheckKind::Http(h) => vec![&h.expect],
                CheckKind::Steps(s) => s.iter().map(|s| &s.http.expect).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(expects.len(), 2);
        let sidecars = suite
            .checks
            .iter()
            .find_map(|c| match &c.kind {
                CheckKind::Sidecars(s) => Some(s),
                _ => None,
            })
            .unwrap();
        assert_eq!(sidecars.namespaces, ["t1-atlas"]);
        // `other` is not a fixture namespace: unchanged.
        assert_eq!(sidecars.plaintext_refused, ["t1-atlas", "other"]);
        for e in expects {
            assert_eq!(
                e.backend.as_ref().unwrap().namespace.as_deref(),
                Some("t1-atlas")
            );
            assert_eq!(
                e.mirrored_to.as_ref().unwrap().namespace.as_deref(),
                Some("t1-atlas")
            );
        }
    }
}
