//! The kind target's bring-up, one function per step: provision kind and istioctl,
//! find or create the cluster, fetch its kubeconfig, install Istio, wait for istiod,
//! build and load the stub image, deploy the fixtures, find where the NodePorts
//! answer, and arrange the cluster's deletion.

use super::reinstall::{self, Reuse};
use super::{
    choose_node_address, config, create_cluster, node_ports, node_scan, plaintext, preflight,
    tool_err, tools, unavailable, KindOptions, CREATE_RETRY_PAUSE, NODE_PROBE_TIMEOUT,
};
use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use crate::targets::cluster::{deploy, run_tool, ClusterTarget, DeployOptions, Step};
use crate::targets::local::procs;
use crate::targets::TargetError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cluster of the run, as decided before it is created.
struct Cluster {
    name: String,
    node_image: String,
    /// Where kind writes the cluster's credentials, never the user's kubeconfig.
    kubeconfig: PathBuf,
    /// Neither `--keep` nor `--reuse`: deleted at the end (and on an interrupt).
    delete_at_end: bool,
}

/// Brings up kind + Istio + the fixtures.
pub async fn bring_up(
    fx: &Fixtures,
    mesh: &Mesh,
    opts: &KindOptions,
    workdir: &Path,
) -> Result<ClusterTarget, TargetError> {
    let docker = preflight()?;
    bring_up_with_docker(&docker, fx, mesh, opts, workdir).await
}

/// [`bring_up`] with the docker CLI `docker` (what [`preflight`] found).
pub(crate) async fn bring_up_with_docker(
    docker: &Path,
    fx: &Fixtures,
    mesh: &Mesh,
    opts: &KindOptions,
    workdir: &Path,
) -> Result<ClusterTarget, TargetError> {
    super::check_project_dir(&opts.project_dir)?;
    let (kind, istioctl) = provision_tools(opts).await?;
    let exists = cluster_exists(&kind, &opts.cluster_name).await?;
    let cluster = Cluster {
        name: opts.cluster_name.clone(),
        node_image: node_image(opts)?,
        kubeconfig: workdir.join("kubeconfig"),
        delete_at_end: !opts.keep && !opts.reuse,
    };
    if exists && !opts.reuse {
        return Err(name_taken(&cluster.name));
    }
    let cleanup_id = if exists {
        None
    } else {
        create_kind_cluster(docker, &kind, mesh, &cluster, workdir).await?
    };
    let client = fetch_kubeconfig(&kind, &cluster).await?;
    let install_files: Vec<PathBuf> =
        crate::targets::kube::mesh_config::write_install_overlay(fx, workdir)?
            .into_iter()
            .collect();
    let reuse = ensure_istio(&client, &istioctl, opts, &cluster, &install_files).await?;
    wait_istiod(&client).await?;
    let tag = ensure_stub_image(docker, &kind, opts, &cluster.name, workdir).await?;
    let dopts = deploy_options(opts, &tag);
    let fx = &node_ports::with_model_node_ports(fx, mesh);
    let mut target = deploy("kind", client.clone(), fx, mesh, &dopts, opts.node_address).await?;
    if let Reuse::Replace { installed } = reuse {
        restart_onto(&client, mesh, opts, &installed).await?;
    }
    if opts.node_address.is_none() {
        reach_node_ports(&mut target, docker, &cluster.name).await;
    }
    describe_target(&mut target, istioctl, install_files, opts, &cluster, tag);
    delete_at_shutdown(&mut target, &kind, &cluster, cleanup_id);
    Ok(target)
}

/// kind and istioctl at the versions of the run (cached, on PATH or downloaded).
async fn provision_tools(opts: &KindOptions) -> Result<(PathBuf, PathBuf), TargetError> {
    let step = Step::start(format!(
        "provisioning kind {} and istioctl {}",
        tools::KIND_VERSION,
        opts.istio_version
    ));
    let kind = tools::ensure(&tools::ToolSpec::kind(tools::KIND_VERSION), &opts.tools)
        .await
        .map_err(tool_err)?;
    let istioctl = tools::ensure(&tools::ToolSpec::istioctl(&opts.istio_version), &opts.tools)
        .await
        .map_err(tool_err)?;
    step.done();
    Ok((kind, istioctl))
}

/// Whether `kind get clusters` lists `name`.
async fn cluster_exists(kind: &Path, name: &str) -> Result<bool, TargetError> {
    let existing = run_tool(
        kind,
        &["get".into(), "clusters".into()],
        Duration::from_secs(30),
        "kind get clusters",
    )
    .await?;
    Ok(existing.lines().any(|l| l.trim() == name))
}

/// `--node-image`, else the newest kindest/node the Istio version supports.
fn node_image(opts: &KindOptions) -> Result<String, TargetError> {
    match &opts.node_image {
        Some(i) => Ok(i.clone()),
        None => config::node_image_for(&opts.istio_version)
            .map_err(|e| TargetError::BadInput(e.to_string())),
    }
}

/// A cluster of that name exists and `--reuse` was not given.
fn name_taken(name: &str) -> TargetError {
    unavailable(format!(
        "a kind cluster named {name} already exists: pass --reuse to run on it, --cluster-name for another, or delete it with `kind delete cluster --name {name}`"
    ))
}

/// Creates the cluster: its deletion registered first (unless kept), then the kind
/// config for this engine, then `kind create cluster`. Returns the registered
/// deletion's id.
async fn create_kind_cluster(
    docker: &Path,
    kind: &Path,
    mesh: &Mesh,
    cluster: &Cluster,
    workdir: &Path,
) -> Result<Option<u64>, TargetError> {
    // Registered before creation: an interrupt or a failed step deletes the cluster.
    let cleanup_id = cluster
        .delete_at_end
        .then(|| register_deletion(kind, cluster));
    let engine = engine_info(docker).await;
    let node_ports = published_node_ports(mesh, &engine);
    let cfg = config::KindConfig {
        cluster_name: cluster.name.clone(),
        node_image: cluster.node_image.clone(),
        host_ports: host_ports(&node_ports),
        node_ports,
        listen_address: "127.0.0.1".into(),
    };
    let cfg_path = write_kind_config(workdir, &cfg)?;
    let step = Step::start(format!(
        "creating kind cluster {} ({})",
        cluster.name, cluster.node_image
    ));
    create_cluster(
        kind,
        &cfg,
        &cfg_path,
        &cluster.kubeconfig,
        engine.cgroup.as_deref(),
        CREATE_RETRY_PAUSE,
        &|l: &str| step.note(l),
    )
    .await?;
    step.done();
    Ok(cleanup_id)
}

/// Registers the cluster's deletion for the interrupt and error paths.
fn register_deletion(kind: &Path, cluster: &Cluster) -> u64 {
    let (k, n, kc) = (
        kind.to_path_buf(),
        cluster.name.clone(),
        cluster.kubeconfig.clone(),
    );
    procs::register_cleanup(Box::new(move || delete_cluster_blocking(&k, &n, &kc)))
}

/// What the engine is: where the node is reachable from, and its cgroup version (a
/// deterministic kubeadm failure).
#[derive(Debug, Default, PartialEq, Eq)]
struct EngineInfo {
    os: String,
    security: String,
    cgroup: Option<String>,
}

impl EngineInfo {
    /// `OperatingSystem|SecurityOptions|CgroupVersion` as `docker info` formats them.
    fn parse(info: &str) -> Self {
        let mut info = info.trim().splitn(3, '|');
        EngineInfo {
            os: info.next().unwrap_or_default().to_string(),
            security: info.next().unwrap_or_default().to_string(),
            cgroup: info.next().map(str::to_string),
        }
    }
}

/// `docker info` about the engine (empty when it fails).
async fn engine_info(docker: &Path) -> EngineInfo {
    let info = run_tool(
        docker,
        &[
            "info".into(),
            "--format".into(),
            "{{.OperatingSystem}}|{{.SecurityOptions}}|{{.CgroupVersion}}".into(),
        ],
        Duration::from_secs(30),
        "docker info",
    )
    .await
    .unwrap_or_default();
    EngineInfo::parse(&info)
}

/// The gateway NodePorts to publish on the host: none where the node is reachable
/// from here anyway ([`config::needs_port_mappings`]).
fn published_node_ports(mesh: &Mesh, engine: &EngineInfo) -> Vec<u16> {
    let mappings = config::needs_port_mappings(
        cfg!(target_os = "linux"),
        std::env::var("DOCKER_HOST").ok().as_deref(),
        &engine.os,
        &engine.security,
    );
    if mappings {
        mesh.ingress_services
            .iter()
            .flat_map(|s| s.ports.iter().map(|(_, np, _)| *np))
            .collect()
    } else {
        Vec::new()
    }
}

/// A NodePort whose number is taken on the host (another kept cluster) is published
/// on a free port instead; found again with `docker port`.
fn host_ports(node_ports: &[u16]) -> std::collections::BTreeMap<u16, u16> {
    node_ports
        .iter()
        .filter_map(|&np| {
            let free = std::net::TcpListener::bind(("127.0.0.1", np)).is_ok();
            (!free)
                .then(|| std::net::TcpListener::bind(("127.0.0.1", 0)).ok())
                .flatten()
                .and_then(|l| l.local_addr().ok())
                .map(|a| (np, a.port()))
        })
        .collect()
}

/// Writes the kind config to `<workdir>/kind-config.yaml`; returns its path.
fn write_kind_config(workdir: &Path, cfg: &config::KindConfig) -> Result<PathBuf, TargetError> {
    let cfg_path = workdir.join("kind-config.yaml");
    std::fs::write(&cfg_path, config::kind_config_yaml(cfg)).map_err(|source| TargetError::Io {
        what: format!("cannot write {}", cfg_path.display()),
        source,
    })?;
    Ok(cfg_path)
}

/// `kind get kubeconfig` into the run's kubeconfig; a client from it.
async fn fetch_kubeconfig(kind: &Path, cluster: &Cluster) -> Result<::kube::Client, TargetError> {
    let kubeconfig_text = run_tool(
        kind,
        &config::kubeconfig_args(&cluster.name),
        Duration::from_secs(30),
        "kind get kubeconfig",
    )
    .await?;
    std::fs::write(&cluster.kubeconfig, &kubeconfig_text).map_err(|source| TargetError::Io {
        what: format!("cannot write {}", cluster.kubeconfig.display()),
        source,
    })?;
    crate::targets::existing::client_from_kubeconfig(&cluster.kubeconfig, None).await
}

/// Installs Istio unless the reused cluster's istiod runs the requested version
/// ([`reinstall::decide`]: refused more than one minor away); says what it decided.
async fn ensure_istio(
    client: &::kube::Client,
    istioctl: &Path,
    opts: &KindOptions,
    cluster: &Cluster,
    install_files: &[PathBuf],
) -> Result<Reuse, TargetError> {
    let installed = installed_istio_version(client).await;
    let reuse = reinstall::decide(
        &cluster.name,
        opts.reuse,
        installed.as_deref(),
        &opts.istio_version,
    )?;
    if let Reuse::Replace { installed } = &reuse {
        eprintln!(
            "kind: cluster {} runs Istio {installed}; installing {} over it (its injected workloads restart onto it after the deploy)",
            cluster.name, opts.istio_version
        );
    }
    if reuse != Reuse::Keep {
        install_istio(istioctl, opts, &cluster.kubeconfig, install_files).await?;
    }
    Ok(reuse)
}

/// After Istio `installed` was replaced: the fixtures' injected Deployments restart
/// (gateways first), so their proxies run the requested version.
async fn restart_onto(
    client: &::kube::Client,
    mesh: &Mesh,
    opts: &KindOptions,
    installed: &str,
) -> Result<(), TargetError> {
    let step = Step::start(format!(
        "restarting the injected workloads (their proxies were injected by Istio {installed}) onto {}",
        opts.istio_version
    ));
    let deployments = reinstall::injected_deployments(mesh);
    reinstall::restart_injected(client, &deployments, opts.rollout_timeout, &|l: &str| {
        step.note(l)
    })
    .await?;
    step.done();
    Ok(())
}

/// `istioctl install` (profile minimal) with the run's kubeconfig and the fixtures'
/// mesh config (`install_files`).
async fn install_istio(
    istioctl: &Path,
    opts: &KindOptions,
    kubeconfig: &Path,
    install_files: &[PathBuf],
) -> Result<(), TargetError> {
    let step = Step::start(format!(
        "installing Istio {} (profile minimal)",
        opts.istio_version
    ));
    let mut args = config::istioctl_install_args(&config::IstioInstall {
        version: opts.istio_version.clone(),
        revision: None,
        kubeconfig: kubeconfig.to_string_lossy().into(),
        context: None,
    });
    args.extend(config::hub_args(opts.istio_hub.as_deref()));
    args.extend(crate::targets::cluster::file_args(install_files));
    run_tool(
        istioctl,
        &args,
        Duration::from_secs(900),
        "istioctl install",
    )
    .await?;
    step.done();
    Ok(())
}

/// Until istiod is rolled out and its validating webhook accepts a VirtualService.
async fn wait_istiod(client: &::kube::Client) -> Result<(), TargetError> {
    let step = Step::start("waiting for istiod and its validating webhook");
    crate::targets::kube::wait_rollouts(
        client,
        &[("istio-system".into(), "istiod".into())],
        Duration::from_secs(300),
        &|l: &str| step.note(l),
    )
    .await?;
    wait_webhook(client).await?;
    step.done();
    Ok(())
}

/// The stub image of the project's sources, built unless the engine has it, loaded
/// into the cluster (through an archive in `workdir`); returns its tag.
async fn ensure_stub_image(
    docker: &Path,
    kind: &Path,
    opts: &KindOptions,
    name: &str,
    workdir: &Path,
) -> Result<String, TargetError> {
    let tag = config::stub_image_tag(&source_hash(&opts.project_dir));
    if !image_exists(docker, &tag).await {
        build_stub_image(docker, &tag, &opts.project_dir).await?;
    }
    load_image(docker, kind, name, &tag, workdir).await?;
    Ok(tag)
}

/// `docker image inspect` succeeds.
async fn image_exists(docker: &Path, tag: &str) -> bool {
    run_tool(
        docker,
        &["image".into(), "inspect".into(), tag.to_string()],
        Duration::from_secs(30),
        "docker image inspect",
    )
    .await
    .is_ok()
}

/// `docker build` of the project's Dockerfile as `tag`.
async fn build_stub_image(docker: &Path, tag: &str, project: &Path) -> Result<(), TargetError> {
    let step = Step::start(format!(
        "building the stub image {tag} (first build compiles the project: minutes)"
    ));
    let args = config::docker_build_args(
        tag,
        &project.join("Dockerfile").to_string_lossy(),
        &project.to_string_lossy(),
    );
    run_tool(docker, &args, Duration::from_secs(3600), "docker build").await?;
    step.done();
    Ok(())
}

/// `docker save` into `<workdir>/stub-image.tar`, then `kind load image-archive`
/// (not `kind load docker-image`: [`config::save_image_args`] says why); the archive
/// is removed afterwards.
async fn load_image(
    docker: &Path,
    kind: &Path,
    name: &str,
    tag: &str,
    workdir: &Path,
) -> Result<(), TargetError> {
    let step = Step::start(format!("loading {tag} into kind"));
    let archive = workdir.join("stub-image.tar");
    let archive_s = archive.to_string_lossy();
    let saved = run_tool(
        docker,
        &config::save_image_args(tag, &archive_s),
        Duration::from_secs(600),
        "docker save",
    )
    .await;
    let loaded = match saved {
        Ok(_) => run_tool(
            kind,
            &config::load_image_archive_args(name, &archive_s),
            Duration::from_secs(600),
            "kind load image-archive",
        )
        .await
        .map(|_| ()),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&archive);
    loaded?;
    step.done();
    Ok(())
}

/// How the fixtures are deployed: applied, the stub image rewritten to `tag`.
fn deploy_options(opts: &KindOptions, tag: &str) -> DeployOptions {
    DeployOptions {
        apply: true,
        namespace_prefix: None,
        image_rewrite: Some((crate::istio::STUB_IMAGE.into(), tag.to_string())),
        rollout_timeout: opts.rollout_timeout,
        crd_timeout: Duration::from_secs(60),
        delete_created: false,
        // The cluster is meshcheck's own (created, or reused from an earlier run).
        adopt: true,
        revision: None,
        node_port_services: false,
        diagnostics_dir: opts.diagnostics_dir.clone(),
        // The cluster is meshcheck's own: the CRDs the Istio version supports.
        gateway_api_crds: crate::targets::cluster::GatewayApiCrds::install(
            crate::targets::kube::gateway_api::version_for_istio(&opts.istio_version),
        ),
    }
}

/// The node's InternalIP (reachable where the engine runs on this host), else
/// 127.0.0.1 and the extraPortMappings (Docker Desktop, remote engines).
async fn reach_node_ports(target: &mut ClusterTarget, docker: &Path, name: &str) {
    let Some(&port) = target.node_ports.values().next() else {
        return;
    };
    let node = config::node_container(name);
    // Pod addresses are on the node's network only: plaintext to a pod goes from there.
    target.plaintext_from = Some(std::sync::Arc::new(plaintext::FromNodeContainer {
        docker: docker.to_path_buf(),
        container: node.clone(),
    }));
    let loopback_port = published_port(docker, &node, port).await;
    let (addr, why) =
        choose_node_address(target.node, port, loopback_port, NODE_PROBE_TIMEOUT).await;
    eprintln!("kind: reaching NodePorts at {addr} ({why})");
    if addr.is_loopback() && !target.node.is_loopback() {
        // A scan of 127.0.0.1 would see this host: the ports check scans the node
        // from inside its container.
        target.node_scan = Some(std::sync::Arc::new(node_scan::DockerExecScan {
            docker: docker.to_path_buf(),
            container: node.clone(),
            node: target.node,
            node_ports: target.node_ports.clone(),
        }));
        // The checks connect to the host ports the NodePorts are published on.
        let mut mapped = std::collections::BTreeMap::new();
        for (sp, np) in &target.node_ports {
            mapped.insert(*sp, published_port(docker, &node, *np).await.unwrap_or(*np));
        }
        target.node_ports = mapped;
    }
    use_node_address(target, addr);
}

/// Where 127.0.0.1 publishes the NodePort `np` of the node container `node`, if the
/// cluster has mappings (`docker port`).
async fn published_port(docker: &Path, node: &str, np: u16) -> Option<u16> {
    run_tool(
        docker,
        &config::docker_port_args(node, np),
        Duration::from_secs(30),
        "docker port",
    )
    .await
    .ok()
    .and_then(|out| config::parse_docker_port(&out))
}

/// The checks reach the node at `addr` (also its `node.address` property).
fn use_node_address(target: &mut ClusterTarget, addr: IpAddr) {
    target.node = addr;
    for (k, v) in target.props.iter_mut() {
        if k == "node.address" {
            *v = addr.to_string();
        }
    }
}

/// istioctl for config dumps, and the run's properties (versions, cluster, images).
fn describe_target(
    target: &mut ClusterTarget,
    istioctl: PathBuf,
    install_files: Vec<PathBuf>,
    opts: &KindOptions,
    cluster: &Cluster,
    tag: String,
) {
    target.istioctl = Some(crate::targets::cluster::Istioctl {
        bin: istioctl,
        kubeconfig: Some(cluster.kubeconfig.clone()),
        context: None,
        install_files,
    });
    target.props.extend([
        ("istio.version".into(), opts.istio_version.clone()),
        ("kind.version".into(), tools::KIND_VERSION.into()),
        ("kind.cluster".into(), cluster.name.clone()),
        ("kind.node_image".into(), cluster.node_image.clone()),
        ("stub.image".into(), tag),
    ]);
}

/// The cluster is deleted when the target shuts down (the deletion registered for
/// the interrupt path, `cleanup_id`, moves onto the target), unless it is kept.
fn delete_at_shutdown(
    target: &mut ClusterTarget,
    kind: &Path,
    cluster: &Cluster,
    cleanup_id: Option<u64>,
) {
    let name = &cluster.name;
    if cluster.delete_at_end {
        let (k, n, kc) = (kind.to_path_buf(), name.clone(), cluster.kubeconfig.clone());
        target
            .on_shutdown_mut()
            .push(Box::new(move || delete_cluster_blocking(&k, &n, &kc)));
        target.cleanup_ids_mut().extend(cleanup_id);
    } else {
        eprintln!(
            "kind: keeping cluster {name} (delete it with `kind delete cluster --name {name}`)"
        );
    }
}

/// A content hash of what the stub image is built from.
fn source_hash(project: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut files = vec![
        project.join("Cargo.toml"),
        project.join("Cargo.lock"),
        project.join("Dockerfile"),
    ];
    let mut stack = vec![project.join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(
            f.strip_prefix(project)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(std::fs::read(&f).unwrap_or_default());
    }
    format!("{:x}", h.finalize())
}

/// The tag of the istiod image (`docker.io/istio/pilot:1.30.3` -> `1.30.3`), if istiod
/// is installed.
async fn installed_istio_version(client: &::kube::Client) -> Option<String> {
    let api: ::kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        ::kube::Api::namespaced(client.clone(), "istio-system");
    let d = api.get_opt("istiod").await.ok()??;
    let image = d.spec?.template.spec?.containers.first()?.image.clone()?;
    image.rsplit_once(':').map(|(_, tag)| tag.to_string())
}

/// Istio's own readiness test: the validating webhook accepts a VirtualService
/// (a server-side dry run), retried for up to a minute.
async fn wait_webhook(client: &::kube::Client) -> Result<(), TargetError> {
    use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &ar);
    let vs = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "meshcheck-webhook-probe", "namespace": "istio-system"},
        "spec": {"hosts": ["meshcheck-probe.invalid"], "http": [{"route": [{"destination": {"host": "meshcheck-probe.invalid"}}]}]}
    });
    let mut pp = PatchParams::apply("meshcheck").force();
    pp.dry_run = true;
    crate::targets::kube::wait_for(
        "the Istio validating webhook to accept a VirtualService",
        Duration::from_secs(60),
        Duration::from_secs(2),
        || {
            let api = api.clone();
            let vs = vs.clone();
            let pp = pp.clone();
            async move {
                match api
                    .patch("meshcheck-webhook-probe", &pp, &Patch::Apply(&vs))
                    .await
                {
                    Ok(_) => Ok(crate::targets::kube::Check::Ready(())),
                    Err(e) => Ok(crate::targets::kube::Check::Pending(e.to_string())),
                }
            }
        },
    )
    .await?;
    Ok(())
}

fn delete_cluster_blocking(kind: &Path, name: &str, kubeconfig: &Path) {
    eprintln!("kind: deleting cluster {name}");
    let _ = std::process::Command::new(kind)
        .args(config::delete_cluster_args(
            name,
            &kubeconfig.to_string_lossy(),
        ))
        .status();
}

#[cfg(test)]
mod tests;
