//! The whole kind bring-up against fakes: `kind`, `istioctl` (in the tool cache) and
//! `docker` are shell scripts that record their arguments in one shared log, and the
//! cluster `kind get kubeconfig` names is a fake API server with istiod installed.

use super::*;
use crate::fixtures::load_dir;
use crate::targets::kube::tests::fake::{FakeApi, RolledOut};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use wiremock::matchers::{method, path_regex};
use wiremock::Mock;

const NAME: &str = "meshcheck-fake";

/// The fakes of one run, in a temporary directory.
struct Fakes {
    dir: tempfile::TempDir,
    api: FakeApi,
    docker: PathBuf,
    fx: Fixtures,
    mesh: Mesh,
}

impl Fakes {
    /// `clusters`: what `kind get clusters` lists; `engine_os`: what `docker info`
    /// says; `have_image`: whether `docker image inspect` succeeds; `node`: the
    /// node's InternalIP; `mapped`: what `docker port` answers (`127.0.0.1:<port>`).
    async fn start(
        clusters: &str,
        engine_os: &str,
        have_image: bool,
        istiod_version: &str,
        node: &str,
        mapped: u16,
    ) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fx = load_dir(&root.join("fixtures/ingress")).unwrap();
        Self::start_with(
            fx,
            clusters,
            engine_os,
            have_image,
            istiod_version,
            node,
            mapped,
        )
        .await
    }

    /// [`Fakes::start`] on the fixtures `fx`.
    async fn start_with(
        fx: Fixtures,
        clusters: &str,
        engine_os: &str,
        have_image: bool,
        istiod_version: &str,
        node: &str,
        mapped: u16,
    ) -> Self {
        let mesh = Mesh::build(&fx);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["bin", "cache", "work", "project/src"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("project/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            d.join("project/Cargo.toml"),
            "[package]\nname = \"meshcheck\"\n",
        )
        .unwrap();
        std::fs::write(d.join("project/src/main.rs"), "fn main() {}\n").unwrap();

        let api = FakeApi::start().await;
        api.mount_get(
            "/version",
            json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0", "gitCommit": "0",
                   "gitTreeState": "clean", "buildDate": "2025-12-01T00:00:00Z",
                   "goVersion": "go1.25.0", "compiler": "gc", "platform": "linux/amd64"}),
        )
        .await;
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
            ))
            .respond_with(RolledOut(format!("docker.io/istio/pilot:{istiod_version}")))
            .mount(&api.server)
            .await;
        for s in &mesh.ingress_services {
            let ports: Vec<Value> = s
                .ports
                .iter()
                .map(|(sp, np, _)| json!({"port": sp, "nodePort": np, "protocol": "TCP"}))
                .collect();
            api.mount_get(
                &format!("/api/v1/namespaces/{}/services/{}", s.namespace, s.name),
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": s.name, "namespace": s.namespace},
                       "spec": {"type": "LoadBalancer", "ports": ports}}),
            )
            .await;
        }
        api.mount_get(
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [{
                "metadata": {"name": format!("{NAME}-control-plane")},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "addresses": [{"type": "InternalIP", "address": node}]}}]}),
        )
        .await;
        std::fs::write(
            d.join("kubeconfig.yaml"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-{NAME}\n  cluster:\n    server: {}\n\
                 contexts:\n- name: kind-{NAME}\n  context:\n    cluster: kind-{NAME}\n    user: kind-{NAME}\n\
                 current-context: kind-{NAME}\nusers:\n- name: kind-{NAME}\n  user: {{}}\n",
                api.server.uri()
            ),
        )
        .unwrap();
        std::fs::write(d.join("clusters"), clusters).unwrap();

        let calls = d.join("calls").display().to_string();
        let kind = format!(
            "#!/bin/sh\necho \"kind $*\" >> '{calls}'\ncase \"$1 $2\" in\n  'get clusters') cat '{}' ;;\n  'get kubeconfig') cat '{}' ;;\n  'load image-archive') [ -s \"$3\" ] || {{ echo \"no archive $3\" >&2; exit 1; }} ;;\nesac\nexit 0\n",
            d.join("clusters").display(),
            d.join("kubeconfig.yaml").display(),
        );
        let istioctl = format!("#!/bin/sh\necho \"istioctl $*\" >> '{calls}'\nexit 0\n");
        let docker = format!(
            "#!/bin/sh\necho \"docker $*\" >> '{calls}'\ncase \"$1\" in\n  info) echo '{engine_os}|[name=seccomp,profile=builtin]|2' ;;\n  image) exit {} ;;\n  port) echo '127.0.0.1:{mapped}' ;;\n  save) echo archive > \"$3\" ;;\nesac\nexit 0\n",
            if have_image { 0 } else { 1 },
        );
        let cache = d.join("cache");
        let kind_path = tools::ToolSpec::kind(tools::KIND_VERSION).install_path(&cache);
        let istioctl_path = tools::ToolSpec::istioctl(tools::ISTIO_VERSION).install_path(&cache);
        let docker_path = d.join("bin/docker");
        for (p, script) in [
            (&kind_path, kind),
            (&istioctl_path, istioctl),
            (&docker_path, docker),
        ] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, script).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fakes {
            dir,
            api,
            docker: docker_path,
            fx,
            mesh,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The options of a run on the fakes (tools from the fake cache, never
    /// downloaded).
    fn options(&self, reuse: bool) -> KindOptions {
        let mut opts = KindOptions::new(self.path("project"));
        opts.cluster_name = NAME.into();
        opts.reuse = reuse;
        opts.tools.offline = true;
        opts.tools.cache_dir = self.path("cache");
        opts.rollout_timeout = Duration::from_secs(10);
        opts
    }

    async fn bring_up(&self, opts: &KindOptions) -> ClusterTarget {
        bring_up_with_docker(&self.docker, &self.fx, &self.mesh, opts, &self.path("work"))
            .await
            .expect("bring-up on the fakes")
    }

    /// The tools' calls so far, one line each: `<tool> <args>`.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The gateway Services' port -> NodePort, as the fake API has them.
    fn service_node_ports(&self) -> std::collections::BTreeMap<u16, u16> {
        let ports: std::collections::BTreeMap<u16, u16> = self
            .mesh
            .ingress_services
            .iter()
            .flat_map(|s| s.ports.iter().map(|(sp, np, _)| (*sp, *np)))
            .collect();
        assert!(!ports.is_empty(), "the fixtures have a gateway NodePort");
        ports
    }

    fn stub_tag(&self) -> String {
        config::stub_image_tag(&source_hash(&self.path("project")))
    }

    fn prop(target: &ClusterTarget, key: &str) -> Option<String> {
        target
            .props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

fn line(tool: &str, args: &[String]) -> String {
    format!("{tool} {}", args.join(" "))
}

/// A fresh cluster on an engine whose node is not reachable from here (Docker
/// Desktop): its deletion is registered, the kind config publishes the gateway
/// NodePorts, Istio is installed, the stub image is built then loaded, the checks
/// reach the NodePorts at 127.0.0.1 on the ports `docker port` reports, and the
/// cluster is deleted at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_is_created_istio_installed_the_stub_built_and_loaded() {
    // Where `docker port` says 127.0.0.1 publishes the NodePorts: it answers.
    let published = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let published_port = published.local_addr().unwrap().port();
    // 192.0.2.10 (TEST-NET-1) is not reachable from here.
    let f = Fakes::start(
        "other\n",
        "Docker Desktop",
        false,
        tools::ISTIO_VERSION,
        "192.0.2.10",
        published_port,
    )
    .await;
    let mut opts = f.options(false);
    opts.istio_hub = Some("gcr.io/istio-release".into());
    let target = f.bring_up(&opts).await;

    let work = f.path("work");
    let kubeconfig = work.join("kubeconfig");
    let kc = kubeconfig.display().to_string();
    let node_image = config::node_image_for(tools::ISTIO_VERSION).unwrap();
    let tag = f.stub_tag();
    let project = f.path("project");
    let archive = work.join("stub-image.tar").display().to_string();
    let calls = f.calls();
    let mut expected = vec![
        "kind get clusters".to_string(),
        "docker info --format {{.OperatingSystem}}|{{.SecurityOptions}}|{{.CgroupVersion}}"
            .to_string(),
        "kind create cluster".to_string(),
        line("kind", &config::kubeconfig_args(NAME)),
        format!(
            "{} --set hub=gcr.io/istio-release",
            line(
                "istioctl",
                &config::istioctl_install_args(&config::IstioInstall {
                    version: tools::ISTIO_VERSION.into(),
                    revision: None,
                    kubeconfig: kc.clone(),
                    context: None,
                }),
            )
        ),
        format!("docker image inspect {tag}"),
        line(
            "docker",
            &config::docker_build_args(
                &tag,
                &project.join("Dockerfile").to_string_lossy(),
                &project.to_string_lossy(),
            ),
        ),
        line("docker", &config::save_image_args(&tag, &archive)),
        line("kind", &config::load_image_archive_args(NAME, &archive)),
    ];
    // Where the first NodePort is published, then every NodePort's host port.
    let node = config::node_container(NAME);
    let service_ports = f.service_node_ports();
    let first_port = *service_ports.values().next().unwrap();
    expected.push(line("docker", &config::docker_port_args(&node, first_port)));
    for np in service_ports.values() {
        expected.push(line("docker", &config::docker_port_args(&node, *np)));
    }
    assert_eq!(calls.len(), expected.len(), "{calls:#?}");
    for (i, (call, want)) in calls.iter().zip(&expected).enumerate() {
        // (`kind create cluster`'s arguments are looked at below.)
        let same = if i == 2 {
            call.starts_with(want.as_str())
        } else {
            call == want
        };
        assert!(same, "{call} is not {want}: {calls:#?}");
    }
    // kind creates the cluster from the config written, with the run's kubeconfig.
    let create = &calls[2];
    assert!(
        create.starts_with(&format!(
            "kind create cluster --name {NAME} --image {node_image} --config {} --kubeconfig {kc} ",
            work.join("kind-config.yaml").display()
        )),
        "{create}"
    );
    let yaml = std::fs::read_to_string(work.join("kind-config.yaml")).unwrap();
    assert!(yaml.contains(&format!("name: \"{NAME}\"")), "{yaml}");
    assert!(yaml.contains(&format!("image: \"{node_image}\"")), "{yaml}");
    for np in f.service_node_ports().values() {
        assert!(yaml.contains(&format!("containerPort: {np}\n")), "{yaml}");
    }
    // The run's kubeconfig is what kind printed.
    assert_eq!(
        std::fs::read_to_string(&kubeconfig).unwrap(),
        std::fs::read_to_string(f.path("kubeconfig.yaml")).unwrap()
    );
    // The fixtures were applied with the stub image built for the run.
    let patches: Vec<String> = f
        .api
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path().contains("/deployments/"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(patches.len(), f.fx.deployments.len());
    // (The gateway's image is injected: `auto`.)
    assert!(patches.iter().any(|b| b.contains(&tag)), "{patches:?}");
    assert!(
        patches.iter().all(
            |b| b.contains(&format!("\"image\":\"{tag}\"")) || b.contains("\"image\":\"auto\"")
        ),
        "{patches:?}"
    );

    // The node's InternalIP does not answer: 127.0.0.1 and the published ports.
    assert_eq!(target.node, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(
        target.node_ports.keys().collect::<Vec<_>>(),
        service_ports.keys().collect::<Vec<_>>()
    );
    assert!(
        target.node_ports.values().all(|p| *p == published_port),
        "{:?}",
        target.node_ports
    );
    assert_eq!(
        Fakes::prop(&target, "node.address").as_deref(),
        Some("127.0.0.1")
    );
    // The ports check scans the node inside its container, at its InternalIP, for
    // the Service's NodePorts (not 127.0.0.1, which is this host).
    let scan = crate::targets::Target::node_scan(&target).expect("scanned from inside");
    assert_eq!(scan.node(), IpAddr::from([192, 0, 2, 10]));
    assert_eq!(scan.place(), format!("inside the node container {node}"));
    for (sp, np) in &service_ports {
        assert_eq!(scan.node_port(*sp), Some(*np));
    }
    for (key, value) in [
        ("istio.version", tools::ISTIO_VERSION),
        ("kind.version", tools::KIND_VERSION),
        ("kind.cluster", NAME),
        ("kind.node_image", &node_image),
        ("stub.image", &tag),
    ] {
        assert_eq!(Fakes::prop(&target, key).as_deref(), Some(value), "{key}");
    }
    let istioctl = target.istioctl.as_ref().unwrap();
    assert_eq!(
        istioctl.bin,
        tools::ToolSpec::istioctl(tools::ISTIO_VERSION).install_path(&f.path("cache"))
    );
    assert_eq!(istioctl.kubeconfig.as_deref(), Some(kubeconfig.as_path()));

    // The deletion registered for the interrupt path moved onto the target, which
    // deletes the cluster when it shuts down.
    assert_eq!(target.cleanup_ids.lock().unwrap().len(), 1);
    target.shutdown().await;
    let calls = f.calls();
    assert_eq!(calls.len(), expected.len() + 1, "{calls:#?}");
    assert_eq!(
        calls.last().unwrap(),
        &line("kind", &config::delete_cluster_args(NAME, &kc))
    );
    assert!(target.cleanup_ids.lock().unwrap().is_empty());
    drop(published);
}

/// `--reuse` of an existing cluster whose istiod runs the requested version: not
/// created, Istio not installed, the stub image (already built) only loaded, the
/// node reached at its InternalIP, and the cluster kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_cluster_running_the_version_is_not_installed_again() {
    let f = Fakes::start(
        &format!("other\n{NAME}\n"),
        "Ubuntu 24.04.3 LTS",
        true,
        &format!("v{}", tools::ISTIO_VERSION),
        "127.0.0.1",
        31999,
    )
    .await;
    let opts = f.options(true);
    let target = f.bring_up(&opts).await;
    let tag = f.stub_tag();
    let archive = f.path("work/stub-image.tar").display().to_string();
    let node = config::node_container(NAME);
    let service_ports = f.service_node_ports();
    let first_port = *service_ports.values().next().unwrap();
    assert_eq!(
        f.calls(),
        vec![
            "kind get clusters".to_string(),
            line("kind", &config::kubeconfig_args(NAME)),
            format!("docker image inspect {tag}"),
            line("docker", &config::save_image_args(&tag, &archive)),
            line("kind", &config::load_image_archive_args(NAME, &archive)),
            line("docker", &config::docker_port_args(&node, first_port)),
        ]
    );
    assert!(!f.path("work/kind-config.yaml").exists());
    // The archive `kind load image-archive` read is not left behind.
    assert!(!f.path("work/stub-image.tar").exists());
    // The InternalIP is 127.0.0.1 itself (no mapping to prefer): the NodePorts as
    // the Service has them.
    assert_eq!(target.node, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(target.node_ports, service_ports);
    // Reached directly: the ports check scans from here.
    assert!(crate::targets::Target::node_scan(&target).is_none());
    // Kept: nothing to delete at shutdown.
    assert!(target.cleanup_ids.lock().unwrap().is_empty());
    target.shutdown().await;
    assert_eq!(f.calls().len(), 6);
}

/// A cluster of that name without `--reuse`: refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_cluster_without_reuse_is_refused() {
    let f = Fakes::start(
        &format!("{NAME}\n"),
        "Ubuntu 24.04.3 LTS",
        true,
        tools::ISTIO_VERSION,
        "127.0.0.1",
        31999,
    )
    .await;
    let opts = f.options(false);
    let err = match bring_up_with_docker(&f.docker, &f.fx, &f.mesh, &opts, &f.path("work")).await {
        Ok(_) => panic!("the name is taken"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("--reuse"), "{err}");
    assert_eq!(f.calls(), vec!["kind get clusters".to_string()]);
}

/// The stub image comes from meshcheck's own Dockerfile only: a directory with
/// another project's Dockerfile (what the current directory may hold) is refused
/// before any tool runs, with exit code 3 (environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_projects_dockerfile_is_never_built() {
    let f = Fakes::start(
        "",
        "Ubuntu 24.04.3 LTS",
        false,
        tools::ISTIO_VERSION,
        "127.0.0.1",
        31999,
    )
    .await;
    let other = f.path("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("Dockerfile"), "FROM alpine\n").unwrap();
    std::fs::write(other.join("Cargo.toml"), "[package]\nname = \"webshop\"\n\n[dependencies]\nmeshcheck = \"0.1\"\nname = \"meshcheck\"\n").unwrap();
    let mut opts = f.options(false);
    opts.project_dir = other.clone();
    let err = match bring_up_with_docker(&f.docker, &f.fx, &f.mesh, &opts, &f.path("work")).await {
        Ok(_) => panic!("another project's Dockerfile was accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("meshcheck's own Dockerfile") && msg.contains(&other.display().to_string()),
        "{msg}"
    );
    assert_eq!(
        crate::error::Error::from(err).exit_code(),
        crate::error::exit::ENVIRONMENT
    );
    assert!(f.calls().is_empty(), "{:?}", f.calls());
    // meshcheck's own checkout is accepted, and it is what the CLI builds from,
    // wherever it runs.
    assert_eq!(
        crate::targets::kind::project_dir(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
    );
    crate::targets::kind::check_project_dir(&crate::targets::kind::project_dir()).unwrap();
}

/// `--reuse` of a cluster whose istiod runs the previous minor: Istio is installed
/// over it, and once the fixtures are deployed every injected Deployment restarts
/// (a rollout restart, gateways first), so no proxy keeps the old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_cluster_of_another_version_restarts_its_injected_workloads() {
    let f = Fakes::start(
        &format!("{NAME}\n"),
        "Ubuntu 24.04.3 LTS",
        true,
        tools::ISTIO_PREVIOUS,
        "127.0.0.1",
        31999,
    )
    .await;
    let target = f.bring_up(&f.options(true)).await;
    let calls = f.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("istioctl install")),
        "{calls:#?}"
    );
    let patches: Vec<(String, String, String)> = f
        .api
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path().contains("/deployments/"))
        .map(|r| {
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (
                ct,
                r.url.path().to_string(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .collect();
    let restarts: Vec<&(String, String, String)> = patches
        .iter()
        .filter(|(ct, _, body)| {
            ct.starts_with("application/strategic-merge-patch+json")
                && body.contains("kubectl.kubernetes.io/restartedAt")
        })
        .collect();
    let injected = reinstall::injected_deployments(&f.mesh);
    assert!(injected.len() >= 2, "{injected:?}");
    let restarted: Vec<String> = restarts.iter().map(|(_, p, _)| p.clone()).collect();
    let want: Vec<String> = injected
        .iter()
        .map(|(ns, n)| format!("/apis/apps/v1/namespaces/{ns}/deployments/{n}"))
        .collect();
    assert_eq!(restarted, want);
    // Gateways first.
    let gateway = f
        .mesh
        .pods
        .iter()
        .find(|p| p.injected && p.role == crate::istio::PodRole::Gateway)
        .unwrap();
    assert!(restarted[0].ends_with(&format!("/deployments/{}", gateway.deployment)));
    // After the apply: the last PATCHes are the restarts.
    assert!(patches[patches.len() - restarts.len()..]
        .iter()
        .all(|(ct, _, _)| ct.starts_with("application/strategic-merge-patch+json")));
    target.shutdown().await;
}

/// `--reuse` of a cluster two minors away: refused before anything is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_cluster_two_minors_away_is_refused() {
    let f = Fakes::start(
        &format!("{NAME}\n"),
        "Ubuntu 24.04.3 LTS",
        true,
        "1.28.3",
        "127.0.0.1",
        31999,
    )
    .await;
    let opts = f.options(true);
    let err = match bring_up_with_docker(&f.docker, &f.fx, &f.mesh, &opts, &f.path("work")).await {
        Ok(_) => panic!("two minors over a reused cluster"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("runs Istio 1.28.3"), "{err}");
    assert!(
        !f.calls().iter().any(|c| c.starts_with("istioctl")),
        "{:#?}",
        f.calls()
    );
}

/// A gateway Service without a fixed nodePort: the port the model chose is published
/// by the kind config and written into the Service applied, so the API server does
/// not allocate another one that nothing publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_service_without_a_node_port_gets_the_published_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root.join("fixtures/ingress")).unwrap() {
        let e = e.unwrap();
        let text = std::fs::read_to_string(e.path()).unwrap();
        std::fs::write(
            copy.path().join(e.file_name()),
            text.replace("    nodePort: 30080\n", ""),
        )
        .unwrap();
    }
    let fx = load_dir(copy.path()).unwrap();
    let f = Fakes::start_with(
        fx,
        "",
        "Docker Desktop",
        true,
        tools::ISTIO_VERSION,
        "192.0.2.10",
        1,
    )
    .await;
    let target = f.bring_up(&f.options(false)).await;
    let gw = &f.mesh.ingress_services[0];
    let (_, np, _) = gw.ports[0];
    assert_ne!(np, 30080, "the fixture's fixed port was removed");
    let yaml = std::fs::read_to_string(f.path("work/kind-config.yaml")).unwrap();
    assert!(yaml.contains(&format!("containerPort: {np}\n")), "{yaml}");
    let service = format!("/api/v1/namespaces/{}/services/{}", gw.namespace, gw.name);
    let applied: Vec<Value> = f
        .api
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH" && r.url.path() == service)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(
        applied[0]["spec"]["ports"][0]["nodePort"],
        json!(np),
        "{}",
        applied[0]
    );
    target.shutdown().await;
}
