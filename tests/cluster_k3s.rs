//! The existing target on a real API server: K3s in Docker (the K3s module of
//! testcontainers) with Istio installed by the pinned istioctl. What the fake API
//! server of `tests/cluster_existing.rs` cannot show: server-side apply on a real
//! apiserver, the CRDs istioctl registers, Istio's validating and injecting webhooks
//! admitting the fixtures, real Deployments rolling out, the sidecars check on pods
//! Istio really injected, and the run deleting what it created.
//!
//!     cargo test --test cluster_k3s -- --nocapture
//!
//! A plain test, listed by `cargo test` like any other. It needs a Docker engine that
//! runs privileged containers, and the docker CLI (it builds the stub image from the
//! `Dockerfile`). Without them it returns at once, after one line on stderr saying it
//! did not run and why: it then passes without having run. With
//! `MESHCHECK_REQUIRE_DOCKER=1` (the nightly job) that is a failure instead.
//! `MESHCHECK_ISTIO_VERSION` picks another Istio (one that supports Kubernetes 1.34,
//! the K3s below).
//!
//! Steps, each bounded in time: istioctl provisioned as the kind target does (cached,
//! sha256-verified); the stub image built and saved to a tarball; K3s started with the
//! tarball in its image import directory (Traefik and metrics-server off); the
//! kubeconfig K3s writes pointed at the published API port; `istioctl install`
//! (profile minimal), istiod rolled out, its validating webhook accepting a
//! VirtualService; then `meshcheck --target existing --namespace-prefix k3s-
//! --stub-image ... --exact sidecars::injected`, which applies the fixtures, waits for
//! the rollouts, runs the sidecars check and deletes what it created; then the
//! fixtures' namespaces must be gone. The container is removed at the end (also when a
//! step fails: testcontainers removes it on drop, and a container left half-started is
//! found by its label and removed). The JUnit report, diagnostics of a failed bring-up
//! and the K3s log go to `target/meshcheck/k3s/`.

mod common;

use meshcheck::targets::cluster::run_tool;
use meshcheck::targets::kind::{config, tools};
use meshcheck::targets::kube::{wait_for, wait_rollouts, Check};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testcontainers_modules::k3s::{K3s, KUBE_SECURE_PORT};
use testcontainers_modules::testcontainers::core::error::ClientError;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt, TestcontainersError};

/// K3s with Kubernetes 1.34: supported by the pinned Istio (1.30: 1.32 to 1.36) and
/// the previous minor (1.29: 1.30 to 1.35), see ISTIO_KUBERNETES in
/// src/targets/kind/config.rs. (The module's default, v1.28.8, is too old for both.)
const K3S_TAG: &str = "v1.34.6-k3s1";
/// The run's namespace prefix: the fixtures' `atlas` is `k3s-atlas` on the cluster.
const PREFIX: &str = "k3s-";
/// The stub image as built here and imported into K3s (never `latest`: the fixtures'
/// `IfNotPresent` then uses the imported image, nothing is pulled).
const STUB_IMAGE: &str = "meshcheck/stub:k3s-e2e";
/// Where K3s imports image tarballs from when it starts.
const K3S_IMAGES: &str = "/var/lib/rancher/k3s/agent/images";
/// The label that finds this run's container if testcontainers could not hand it over.
const RUN_LABEL: &str = "meshcheck.test.cluster-k3s";
/// The namespace the suite's `sidecars::injected` judges (suites/ingress.yaml).
const SIDECAR_NAMESPACE: &str = "atlas";

/// Building the stub image compiles the project in release mode (minutes; the first
/// build on a 2-core runner is the long one).
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Pulling the K3s image, creating and starting the container, until K3s is ready.
const START_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Everything once K3s runs: Istio, the meshcheck run, the cleanup's check.
const RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The meshcheck run (its own rollout timeout is 300 s).
const MESHCHECK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Says on the real stderr (past libtest's capture, which only takes the print
/// macros) that the test did not run, in one line; or fails where Docker is required.
fn not_run(why: &str) {
    if std::env::var_os("MESHCHECK_REQUIRE_DOCKER").is_some_and(|v| v == "1") {
        panic!("MESHCHECK_REQUIRE_DOCKER=1, but {why}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "cluster_k3s: NOT RUN, passed without running: {why} (it needs a Docker engine and the docker CLI; the nightly workflow runs it)"
    );
}

/// `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn existing_target_on_k3s_with_istio() {
    if !meshcheck::targets::docker_answers() {
        return not_run(
            "no Docker engine answers (DOCKER_HOST, the docker CLI's current context, /var/run/docker.sock)",
        );
    }
    let Some(docker) = which("docker") else {
        return not_run(
            "a Docker engine answers, but the docker CLI (to build the stub image) is not on PATH",
        );
    };
    tools::install_crypto_provider();
    // Multi-threaded: testcontainers removes a dropped container with block_in_place.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&docker));
}

async fn run(docker: &Path) {
    let root = common::root();
    let out = root.join("target/meshcheck/k3s");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let istio = std::env::var("MESHCHECK_ISTIO_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| tools::ISTIO_VERSION.to_string());

    // istioctl at the pinned version, as the kind target provisions it.
    let istioctl = tokio::time::timeout(
        Duration::from_secs(15 * 60),
        tools::ensure(
            &tools::ToolSpec::istioctl(&istio),
            &tools::ToolOptions::new(false),
        ),
    )
    .await
    .expect("provisioning istioctl did not finish within 15 min")
    .unwrap_or_else(|e| panic!("{e}"));

    // The stub image, as a tarball K3s imports when it starts.
    let build = config::docker_build_args(
        STUB_IMAGE,
        &root.join("Dockerfile").to_string_lossy(),
        &root.to_string_lossy(),
    );
    run_tool(docker, &build, BUILD_TIMEOUT, "docker build")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tar = work.path().join("meshcheck-stub.tar");
    let save = [
        "save".to_string(),
        "-o".into(),
        tar.to_string_lossy().into_owned(),
        STUB_IMAGE.into(),
    ];
    run_tool(docker, &save, Duration::from_secs(300), "docker save")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // K3s. Its kubeconfig is written into `conf` (mounted at /etc/rancher/k3s).
    let conf = work.path().join("k3s-conf");
    std::fs::create_dir(&conf).unwrap();
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let request = K3s::default()
        .with_conf_mount(&conf)
        .with_tag(K3S_TAG)
        // The module's command (`server --snapshotter=native`) without the add-ons the
        // test does not use: Traefik would also claim port 80 of the node.
        .with_cmd([
            "server",
            "--snapshotter=native",
            "--disable=traefik",
            "--disable=metrics-server",
        ])
        .with_privileged(true)
        .with_userns_mode("host")
        .with_label(RUN_LABEL, run_id.as_str())
        .with_copy_to(format!("{K3S_IMAGES}/meshcheck-stub.tar"), tar.clone())
        .with_startup_timeout(Duration::from_secs(5 * 60));
    let container = match tokio::time::timeout(START_TIMEOUT, request.start()).await {
        Ok(Ok(c)) => c,
        Ok(Err(TestcontainersError::Client(ClientError::Init(e)))) => {
            return not_run(&format!("testcontainers finds no Docker engine: {e}"));
        }
        Ok(Err(e)) => {
            remove_labelled(docker, &run_id).await;
            panic!("K3s {K3S_TAG} did not start: {e}");
        }
        Err(_) => {
            remove_labelled(docker, &run_id).await;
            panic!("K3s {K3S_TAG} did not start within {START_TIMEOUT:?}");
        }
    };

    let outcome = tokio::time::timeout(
        RUN_TIMEOUT,
        exercise(&container, &istioctl, &istio, work.path(), &out),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "the run on K3s did not finish within {RUN_TIMEOUT:?}"
        ))
    });

    // The K3s log, for the nightly artifact.
    if let Ok((o, e)) = tokio::time::timeout(Duration::from_secs(60), async {
        (
            container.stdout_to_vec().await,
            container.stderr_to_vec().await,
        )
    })
    .await
    {
        let mut log = o.unwrap_or_default();
        log.extend(e.unwrap_or_default());
        let _ = std::fs::write(out.join("k3s.log"), log);
    }
    let removed = tokio::time::timeout(Duration::from_secs(120), container.rm()).await;
    if let Err(why) = outcome {
        panic!(
            "{why}\n(JUnit report, diagnostics and the K3s log in {})",
            out.display()
        );
    }
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the K3s container was not removed: {e}"),
        Err(_) => panic!("removing the K3s container did not finish within 120s"),
    }
}

/// Istio on K3s, then the existing target as a user runs it; `Err` says what failed.
async fn exercise(
    container: &ContainerAsync<K3s>,
    istioctl: &Path,
    istio: &str,
    work: &Path,
    out: &Path,
) -> Result<(), String> {
    // The kubeconfig, pointed at the API port as published on the Docker host.
    let port = container
        .get_host_port_ipv4(KUBE_SECURE_PORT)
        .await
        .map_err(|e| format!("the published port of 6443: {e}"))?;
    let host = container
        .get_host()
        .await
        .map_err(|e| format!("the Docker host: {e}"))?
        .to_string();
    // The port is published on IPv4: not `localhost`, which may resolve to ::1 first.
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let k3s_yaml = wait_for(
        "K3s to write its kubeconfig",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            Ok(match container.image().read_kube_config() {
                Ok(text) if text.contains("server:") => Check::Ready(text),
                Ok(_) => Check::Pending("k3s.yaml is incomplete".into()),
                Err(e) => Check::Pending(e.to_string()),
            })
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let kubeconfig = work.join("kubeconfig");
    std::fs::write(&kubeconfig, published_kubeconfig(&k3s_yaml, &host, port)?)
        .map_err(|e| format!("writing {}: {e}", kubeconfig.display()))?;
    let client = wait_for(
        "the K3s API server to answer",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async {
            Ok(
                match meshcheck::targets::existing::client_from_kubeconfig(&kubeconfig, None).await
                {
                    Ok(c) => Check::Ready(c),
                    Err(e) => Check::Pending(e.to_string()),
                },
            )
        },
    )
    .await
    .map_err(|e| e.to_string())?;

    // Istio, as the kind target installs it (istiod only; its images from
    // MESHCHECK_ISTIO_HUB when set, as --istio-hub).
    let mut install = config::istioctl_install_args(&config::IstioInstall {
        version: istio.to_string(),
        revision: None,
        kubeconfig: kubeconfig.to_string_lossy().into_owned(),
        context: None,
    });
    install.extend(config::hub_args(
        std::env::var("MESHCHECK_ISTIO_HUB").ok().as_deref(),
    ));
    run_tool(
        istioctl,
        &install,
        Duration::from_secs(15 * 60),
        "istioctl install",
    )
    .await
    .map_err(|e| e.to_string())?;
    wait_rollouts(
        &client,
        &[("istio-system".into(), "istiod".into())],
        Duration::from_secs(300),
        &|_: &str| {},
    )
    .await
    .map_err(|e| e.to_string())?;
    webhook_accepts_a_virtual_service(&client).await?;

    // The existing target, as a user runs it.
    let junit = out.join("junit.xml");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshcheck"));
    cmd.current_dir(common::root())
        .env_remove("MESHCHECK_TARGET")
        .env_remove("MESHCHECK_SUITE")
        .env_remove("MESHCHECK_FIXTURES")
        .env_remove("MESHCHECK_JUNIT")
        .arg("--target")
        .arg("existing")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--namespace-prefix")
        .arg(PREFIX)
        .arg("--stub-image")
        .arg(STUB_IMAGE)
        .arg("--junit")
        .arg(&junit)
        .arg("--exact")
        .arg("sidecars::injected")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(MESHCHECK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("meshcheck did not finish within {MESHCHECK_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run meshcheck: {e}"))?;
    let r = common::parse(output);
    let shown = format!("--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr);
    if r.code != 0 || !r.failed.is_empty() || !r.passed.contains("sidecars::injected") {
        return Err(format!(
            "meshcheck on K3s: exit code {}, passed {:?}, failed {:?}\n{shown}",
            r.code, r.passed, r.failed
        ));
    }
    for step in ["applying ", "waiting for ", "deleting the "] {
        if !r.stderr.contains(step) {
            return Err(format!("meshcheck did not say `{step}...`\n{shown}"));
        }
    }
    if r.stderr.contains("warning: cleanup") {
        return Err(format!("meshcheck's cleanup failed\n{shown}"));
    }

    // What the check judged: a pod of each of the namespace's Deployments, injected
    // (its detail lines, in the JUnit report's system-out).
    let fx = meshcheck::fixtures::load_dir(&common::root().join("fixtures/ingress"))
        .map_err(|e| e.to_string())?;
    let report =
        std::fs::read_to_string(&junit).map_err(|e| format!("reading {}: {e}", junit.display()))?;
    let judged: Vec<&str> = fx
        .objects
        .iter()
        .filter(|o| o.kind == "Deployment" && o.namespace == SIDECAR_NAMESPACE)
        .map(|o| o.name.as_str())
        .collect();
    if judged.is_empty() {
        return Err(format!(
            "the fixtures have no Deployment in {SIDECAR_NAMESPACE}"
        ));
    }
    for d in judged {
        if !injected_pod_line(&report, &format!("{PREFIX}{SIDECAR_NAMESPACE}"), d) {
            return Err(format!(
                "no injected pod of Deployment {PREFIX}{SIDECAR_NAMESPACE}/{d} in the sidecars check's detail\n--- {}\n{report}",
                junit.display()
            ));
        }
    }

    // The cleanup: every namespace of the fixtures (all it created) is gone.
    let namespaces: Vec<String> = fx
        .objects
        .iter()
        .filter(|o| o.kind == "Namespace")
        .map(|o| format!("{PREFIX}{}", o.name))
        .collect();
    let api: ::kube::Api<k8s_openapi::api::core::v1::Namespace> = ::kube::Api::all(client);
    wait_for(
        "the fixtures' namespaces to be deleted",
        Duration::from_secs(300),
        Duration::from_secs(3),
        || {
            let (api, namespaces) = (api.clone(), namespaces.clone());
            async move {
                let mut left = Vec::new();
                for ns in &namespaces {
                    match api.get_opt(ns).await {
                        Ok(None) => {}
                        Ok(Some(n)) if n.metadata.deletion_timestamp.is_some() => {
                            left.push(format!("{ns} (terminating)"))
                        }
                        Ok(Some(_)) => left.push(format!("{ns} (not deleted)")),
                        Err(e) => left.push(format!("{ns} ({e})")),
                    }
                }
                Ok(if left.is_empty() {
                    Check::Ready(())
                } else {
                    Check::Pending(format!("left: {}", left.join(", ")))
                })
            }
        },
    )
    .await
    .map_err(|e| format!("{e}\n{shown}"))?;
    Ok(())
}

/// Istio's readiness test, as the kind target waits for it: the validating webhook
/// accepts a VirtualService (a server-side dry run: nothing is created).
async fn webhook_accepts_a_virtual_service(client: &::kube::Client) -> Result<(), String> {
    use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &ar);
    let vs = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "meshcheck-webhook-probe", "namespace": "istio-system"},
        "spec": {"hosts": ["meshcheck-probe.invalid"], "http": [{"route": [{"destination": {"host": "meshcheck-probe.invalid"}}]}]}
    });
    let mut pp = PatchParams::apply("meshcheck-test").force();
    pp.dry_run = true;
    wait_for(
        "the Istio validating webhook to accept a VirtualService",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || {
            let (api, vs, pp) = (api.clone(), vs.clone(), pp.clone());
            async move {
                Ok(
                    match api
                        .patch("meshcheck-webhook-probe", &pp, &Patch::Apply(&vs))
                        .await
                    {
                        Ok(_) => Check::Ready(()),
                        Err(e) => Check::Pending(e.to_string()),
                    },
                )
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// Removes the containers labelled with this run (one testcontainers created but did
/// not hand over: a start that failed or timed out).
async fn remove_labelled(docker: &Path, run_id: &str) {
    let list = [
        "ps".to_string(),
        "-aq".into(),
        "--filter".into(),
        format!("label={RUN_LABEL}={run_id}"),
    ];
    let Ok(ids) = run_tool(docker, &list, Duration::from_secs(60), "docker ps").await else {
        return;
    };
    let ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
    if !ids.is_empty() {
        let rm: Vec<String> = ["rm".to_string(), "-f".into(), "-v".into()]
            .into_iter()
            .chain(ids)
            .collect();
        let _ = run_tool(docker, &rm, Duration::from_secs(120), "docker rm").await;
    }
}

/// K3s' kubeconfig (`server: https://127.0.0.1:6443`) pointed at the API port as
/// published on `host`. K3s' serving certificate names `localhost` and 127.0.0.1 (not
/// a remote Docker host's name): for another host the TLS name stays `localhost`.
fn published_kubeconfig(k3s_yaml: &str, host: &str, port: u16) -> Result<String, String> {
    let mut out = String::new();
    let mut replaced = 0;
    for line in k3s_yaml.lines() {
        let rest = line.trim_start();
        if rest.strip_prefix("server:").map(str::trim) == Some("https://127.0.0.1:6443") {
            let indent = &line[..line.len() - rest.len()];
            out.push_str(&format!("{indent}server: https://{host}:{port}\n"));
            if !matches!(host, "localhost" | "127.0.0.1") {
                out.push_str(&format!("{indent}tls-server-name: localhost\n"));
            }
            replaced += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if replaced == 1 {
        Ok(out)
    } else {
        Err(format!(
            "K3s' kubeconfig does not name the server https://127.0.0.1:6443 once:\n{k3s_yaml}"
        ))
    }
}

/// Whether the sidecars check's detail (`NS/POD: istio-proxy (Shape)` per pod) has a
/// pod of Deployment `deployment` (`DEPLOYMENT-<replicaset hash>-<suffix>`) of `ns`.
fn injected_pod_line(report: &str, ns: &str, deployment: &str) -> bool {
    let prefix = format!("{ns}/{deployment}-");
    report.lines().any(|l| {
        l.trim_start()
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once(": istio-proxy ("))
            .is_some_and(|(pod, _)| pod.split('-').count() == 2)
    })
}

/// The pieces that need no Docker: they run everywhere.
#[test]
fn the_k3s_kubeconfig_is_pointed_at_the_published_port() {
    let k3s = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443\n  name: default\n\
               contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\n\
               preferences: {}\nusers:\n- name: default\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";
    let local = published_kubeconfig(k3s, "localhost", 32771).unwrap();
    let kc = ::kube::config::Kubeconfig::from_yaml(&local).unwrap();
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://localhost:32771"));
    assert_eq!(cluster.tls_server_name, None);
    assert_eq!(kc.current_context.as_deref(), Some("default"));

    let remote = published_kubeconfig(k3s, "docker.example", 32771).unwrap();
    let kc = ::kube::config::Kubeconfig::from_yaml(&remote).unwrap();
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(
        cluster.server.as_deref(),
        Some("https://docker.example:32771")
    );
    assert_eq!(cluster.tls_server_name.as_deref(), Some("localhost"));

    assert!(published_kubeconfig("apiVersion: v1\nclusters: []\n", "localhost", 1).is_err());
}

#[test]
fn the_sidecar_detail_names_a_pod_of_each_deployment() {
    let report = "3 pod(s) with a running istio-proxy\n\
                  k3s-atlas/atlas-ui-7d9f8b6c5-x2x7q: istio-proxy (Native)\n\
                  k3s-atlas/nb-rest-v2-6b7c8d9e0f-abcde: istio-proxy (Classic)\n";
    assert!(injected_pod_line(report, "k3s-atlas", "atlas-ui"));
    assert!(injected_pod_line(report, "k3s-atlas", "nb-rest-v2"));
    // nb-rest-v2's pod is not one of a Deployment `nb-rest`.
    assert!(!injected_pod_line(report, "k3s-atlas", "nb-rest"));
    assert!(!injected_pod_line(report, "k3s-atlas", "authz"));
    assert!(!injected_pod_line(report, "atlas", "atlas-ui"));
}
