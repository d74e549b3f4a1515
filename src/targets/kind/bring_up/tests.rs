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
        let mesh = Mesh::build(&fx);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["bin", "cache", "work", "project/src"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("project/Dockerfile"), "FROM scratch\n").unwrap();
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
            "#!/bin/sh\necho \"kind $*\" >> '{calls}'\ncase \"$1 $2\" in\n  'get clusters') cat '{}' ;;\n  'get kubeconfig') cat '{}' ;;\nesac\nexit 0\n",
            d.join("clusters").display(),
            d.join("kubeconfig.yaml").display(),
        );
        let istioctl = format!("#!/bin/sh\necho \"istioctl $*\" >> '{calls}'\nexit 0\n");
        let docker = format!(
            "#!/bin/sh\necho \"docker $*\" >> '{calls}'\ncase \"$1\" in\n  info) echo '{engine_os}|[name=seccomp,profile=builtin]|2' ;;\n  image) exit {} ;;\n  port) echo '127.0.0.1:{mapped}' ;;\nesac\nexit 0\n",
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
    let opts = f.options(false);
    let target = f.bring_up(&opts).await;

    let work = f.path("work");
    let kubeconfig = work.join("kubeconfig");
    let kc = kubeconfig.display().to_string();
    let node_image = config::node_image_for(tools::ISTIO_VERSION).unwrap();
    let tag = f.stub_tag();
    let project = f.path("project");
    let calls = f.calls();
    let mut expected = vec![
        "kind get clusters".to_string(),
        "docker info --format {{.OperatingSystem}}|{{.SecurityOptions}}|{{.CgroupVersion}}"
            .to_string(),
        "kind create cluster".to_string(),
        line("kind", &config::kubeconfig_args(NAME)),
        line(
            "istioctl",
            &config::istioctl_install_args(&config::IstioInstall {
                version: tools::ISTIO_VERSION.into(),
                revision: None,
                kubeconfig: kc.clone(),
                context: None,
            }),
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
        line("kind", &config::load_image_args(NAME, &tag)),
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
    let node = config::node_container(NAME);
    let service_ports = f.service_node_ports();
    let first_port = *service_ports.values().next().unwrap();
    assert_eq!(
        f.calls(),
        vec![
            "kind get clusters".to_string(),
            line("kind", &config::kubeconfig_args(NAME)),
            format!("docker image inspect {tag}"),
            line("kind", &config::load_image_args(NAME, &tag)),
            line("docker", &config::docker_port_args(&node, first_port)),
        ]
    );
    assert!(!f.path("work/kind-config.yaml").exists());
    // 127.0.0.1 is reachable (a connect is refused or answered): the NodePorts as the
    // Service has them.
    assert_eq!(target.node, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(target.node_ports, service_ports);
    // Kept: nothing to delete at shutdown.
    assert!(target.cleanup_ids.lock().unwrap().is_empty());
    target.shutdown().await;
    assert_eq!(f.calls().len(), 5);
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
