//! The cluster upgrade against the fake API server (wiremock) and fake tools: an
//! istioctl in the tool cache that records its arguments, and the API calls, in one
//! timeline. The timelines are compared whole, so a step skipped or reordered (the
//! precheck after the upgrade, a workload before the gateway, a rollout not waited
//! for, a namespace not relabelled) fails them.

use super::istioctl::{relabel_patch, restart_patch, RESTARTED_AT};
use super::user::{wait_signal, UserStep};
use super::{ClusterTransition, ClusterUpgradeOptions, Strategy};
use crate::error::Error;
use crate::fixtures::load_dir;
use crate::istio::Mesh;
use crate::targets::cluster::{ClusterTarget, Istioctl};
use crate::targets::kind::tools::{ToolOptions, ToolSpec};
use crate::targets::kube::tests::fake::FakeApi;
use crate::upgrade::transition::Transition;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

const FROM: &str = "1.29.6";
const TO: &str = "1.30.3";

fn append(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// The cluster as the fake API keeps it: namespace labels, Deployment generations,
/// Deployments whose rollout never completes.
#[derive(Default)]
struct State {
    labels: BTreeMap<String, BTreeMap<String, String>>,
    generations: BTreeMap<String, i64>,
    stuck: BTreeSet<String>,
    /// The proxy of each Deployment's pod: (istio-proxy image tag, injected revision).
    /// A restart injects it anew: B's tag, the revision the namespace names.
    proxies: BTreeMap<String, (String, String)>,
    /// Deployments whose restarted pods keep A's proxy (an injector still on A).
    keep_a: BTreeSet<String>,
}

/// Namespaces and Deployments of the fake API; every call goes to the timeline.
#[derive(Clone)]
struct Cluster {
    log: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Cluster {
    fn namespace(&self, ns: &str) -> Value {
        let labels = self.state.lock().unwrap().labels.get(ns).cloned();
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": ns, "labels": labels.unwrap_or_default()}})
    }

    fn deployment(&self, ns: &str, name: &str) -> Value {
        let id = format!("{ns}/{name}");
        let st = self.state.lock().unwrap();
        let generation = st.generations.get(&id).copied().unwrap_or(1);
        let observed = if st.stuck.contains(&id) {
            generation - 1
        } else {
            generation
        };
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": ns, "generation": generation},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}},
               "status": {"observedGeneration": observed, "replicas": 1, "updatedReplicas": 1,
                          "readyReplicas": 1, "availableReplicas": 1}})
    }

    /// The namespace's pods, one per Deployment, with the proxy each was injected with.
    fn pods(&self, ns: &str) -> Value {
        let st = self.state.lock().unwrap();
        let items: Vec<Value> = st
            .proxies
            .iter()
            .filter_map(|(id, proxy)| Some((id.strip_prefix(&format!("{ns}/"))?, proxy)))
            .map(|(name, (tag, rev))| {
                let status = json!({"containers": ["istio-proxy"], "revision": rev}).to_string();
                json!({"metadata": {"name": format!("{name}-1"), "namespace": ns,
                                    "labels": {"app": name},
                                    "annotations": {"sidecar.istio.io/status": status}},
                       "spec": {"containers": [{"name": "app", "image": "x"},
                                               {"name": "istio-proxy", "image": format!("docker.io/istio/proxyv2:{tag}")}]},
                       "status": {"phase": "Running"}})
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
    }

    fn patch_namespace(&self, ns: &str, request: &Request) -> String {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        let labels = st.labels.entry(ns.to_string()).or_default();
        if let Some(patch) = body.pointer("/metadata/labels").and_then(Value::as_object) {
            for (k, v) in patch {
                match v.as_str() {
                    Some(v) => labels.insert(k.clone(), v.to_string()),
                    None => labels.remove(k),
                };
            }
        }
        format!("patch ns {ns} {} {body}", content_type(request))
    }

    fn patch_deployment(&self, ns: &str, name: &str, request: &Request) -> String {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        // kubectl's rollout restart: only the template annotation, an RFC 3339 time.
        let at = body
            .pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(RESTARTED_AT))
            .and_then(Value::as_str)
            .filter(|t| t.parse::<k8s_openapi::jiff::Timestamp>().is_ok());
        let shape = match at {
            Some(t) if body == restart_patch(t) => "restartedAt",
            _ => "NOT-A-RESTART",
        };
        let id = format!("{ns}/{name}");
        let mut st = self.state.lock().unwrap();
        *st.generations.entry(id.clone()).or_insert(1) += 1;
        if !st.keep_a.contains(&id) {
            let rev = st
                .labels
                .get(ns)
                .and_then(|l| l.get("istio.io/rev"))
                .cloned();
            st.proxies.insert(
                id,
                (TO.to_string(), rev.unwrap_or_else(|| "default".into())),
            );
        }
        format!("restart {ns}/{name} {} {shape}", content_type(request))
    }
}

fn content_type(r: &Request) -> &str {
    match r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
    {
        "application/merge-patch+json" => "merge",
        "application/strategic-merge-patch+json" => "strategic",
        _ => "other",
    }
}

impl Respond for Cluster {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let seg: Vec<&str> = request.url.path().split('/').collect();
        let verb = request.method.as_str();
        let (line, body) = match (verb, seg.as_slice()) {
            ("GET", ["", "api", "v1", "namespaces", ns]) => {
                (format!("get ns {ns}"), self.namespace(ns))
            }
            ("PATCH", ["", "api", "v1", "namespaces", ns]) => {
                (self.patch_namespace(ns, request), self.namespace(ns))
            }
            ("GET", ["", "api", "v1", "namespaces", ns, "pods"]) => {
                (format!("list pods {ns}"), self.pods(ns))
            }
            ("GET", ["", "apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
                (format!("get deploy {ns}/{name}"), self.deployment(ns, name))
            }
            ("PATCH", ["", "apis", "apps", "v1", "namespaces", ns, "deployments", name]) => (
                self.patch_deployment(ns, name, request),
                self.deployment(ns, name),
            ),
            _ => {
                append(
                    &self.log,
                    &format!("unexpected {verb} {}", request.url.path()),
                );
                return ResponseTemplate::new(404);
            }
        };
        append(&self.log, &line);
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// A fake cluster, a tool cache with fake istioctls of A and B, and the timeline.
struct Bench {
    fake: FakeApi,
    dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
}

/// An istioctl that records `istioctl[-A] ARGS` and fails (`fail-<subcommand>`) or
/// hangs (`hang-<subcommand>`, its helper's pid in `hang.pid`) when told to by a
/// file in `dir`.
fn fake_istioctl(dir: &Path, cache: &Path, version: &str, name: &str) -> PathBuf {
    let bin = ToolSpec::istioctl(version).install_path(cache);
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\necho \"{name} $*\" >> '{d}/log'\n\
         if [ -f '{d}/fail-'\"$1\" ]; then echo \"Error: $1 went wrong\"; echo 'details on stderr' >&2; exit 1; fi\n\
         if [ -f '{d}/hang-'\"$1\" ]; then sleep 120 & echo $! > '{d}/hang.pid.tmp'; mv '{d}/hang.pid.tmp' '{d}/hang.pid'; wait; fi\n\
         echo \"$1 done\"\nexit 0\n"
    );
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

impl Bench {
    async fn start() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeApi::start().await;
        let mut st = State::default();
        st.labels.insert(
            "atlas".into(),
            BTreeMap::from([("istio-injection".into(), "enabled".into())]),
        );
        st.labels.insert("istio-ingress".into(), BTreeMap::new());
        for id in DEPLOYMENTS {
            st.proxies
                .insert(id.into(), (FROM.into(), "default".into()));
        }
        let state = Arc::new(Mutex::new(st));
        let cluster = Cluster {
            log: dir.path().join("log"),
            state: state.clone(),
        };
        for verb in ["GET", "PATCH"] {
            Mock::given(path_regex(
                r"^/api/v1/namespaces/[^/]+(/pods)?$|^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+$",
            ))
            .and(method(verb))
            .respond_with(cluster.clone())
            .mount(&fake.server)
            .await;
        }
        let cache = dir.path().join("tools");
        fake_istioctl(dir.path(), &cache, FROM, "istioctl-A");
        fake_istioctl(dir.path(), &cache, TO, "istioctl");
        Bench { fake, dir, state }
    }

    fn kubeconfig(&self) -> String {
        self.dir.path().join("kubeconfig").display().to_string()
    }

    fn opts(&self, strategy: Strategy) -> ClusterUpgradeOptions {
        let mut o = ClusterUpgradeOptions::new(FROM, TO);
        o.strategy = strategy;
        o.tools = ToolOptions {
            offline: true,
            cache_dir: self.dir.path().join("tools"),
            ..ToolOptions::new(true)
        };
        o.rollout_timeout = Duration::from_secs(3);
        o.step_timeout = Duration::from_secs(20);
        o
    }

    /// The target the kind bring-up made: its client, namespaces and A's istioctl.
    fn target(&self, name: &'static str) -> ClusterTarget {
        ClusterTarget {
            name,
            client: self.fake.client.clone(),
            node: std::net::IpAddr::from([127, 0, 0, 1]),
            node_ports: BTreeMap::new(),
            namespace_prefix: None,
            gateway_node_ports: BTreeMap::new(),
            gateway_refs: BTreeMap::new(),
            identities: Vec::new(),
            namespaces: vec!["atlas".into(), "istio-ingress".into()],
            gateway_selector: Vec::new(),
            fixture_services: Vec::new(),
            deployments: DEPLOYMENTS.iter().map(|d| d.to_string()).collect(),
            applied: Vec::new(),
            delete_created: false,
            props: Vec::new(),
            istioctl: Some(Istioctl {
                bin: ToolSpec::istioctl(FROM).install_path(&self.dir.path().join("tools")),
                kubeconfig: Some(self.dir.path().join("kubeconfig")),
                context: None,
                install_files: Vec::new(),
            }),
            on_shutdown: Default::default(),
            cleanup_ids: Default::default(),
            stopped: Default::default(),
            node_scan: None,
            plaintext_from: None,
        }
    }

    fn transition(&self, opts: ClusterUpgradeOptions) -> ClusterTransition {
        ClusterTransition::with_terminal(&self.target("kind"), &mesh(), opts, false)
            .expect("a kind transition")
    }

    fn touch(&self, marker: &str) {
        std::fs::write(self.dir.path().join(marker), "").unwrap();
    }

    /// The timeline, repeated polls of one object folded into one line.
    fn timeline(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for l in text.lines() {
            if out.last().map(String::as_str) != Some(l) {
                out.push(l.to_string());
            }
        }
        out
    }

    fn labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.state.lock().unwrap().labels[ns].clone()
    }
}

fn mesh() -> Mesh {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Mesh::build(&load_dir(&root.join("fixtures/ingress")).unwrap())
}

fn v(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

/// The fixtures' Deployments, the gateway first.
const DEPLOYMENTS: [&str; 5] = [
    "istio-ingress/my-ingress-gateway",
    "atlas/atlas-ui",
    "atlas/authz",
    "atlas/nb-rest-v1",
    "atlas/nb-rest-v2",
];

/// Restart and wait, for each Deployment: the gateway first, then the workloads;
/// then every namespace's pods are listed to see that they run B's proxy.
fn restarts() -> Vec<String> {
    DEPLOYMENTS
        .iter()
        .flat_map(|d| {
            [
                format!("restart {d} strategic restartedAt"),
                format!("get deploy {d}"),
            ]
        })
        .chain([
            "list pods atlas".to_string(),
            "list pods istio-ingress".to_string(),
        ])
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| !r.starts_with('Z') && !r.starts_with('X'))
        })
        .unwrap_or(false)
}

/// Whether `pid` is gone within 5 s (a SIGKILLed group dies soon, not at once).
fn ends_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn message(e: &Error) -> String {
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_kind_upgrade_prechecks_upgrades_then_restarts_gateways_first() {
    let b = Bench::start().await;
    let mut t = b.transition(b.opts(Strategy::InPlace));
    let pre = t.precheck().await.unwrap();
    assert_eq!(pre.len(), 1);
    assert!(pre[0].passed, "{pre:?}");
    assert_eq!(pre[0].name, "precheck");
    assert!(pre[0].output.contains("x done"), "{pre:?}");
    t.upgrade_control_plane().await.unwrap();
    let after_control_plane = b.timeline().len();
    t.restart_proxies().await.unwrap();
    t.finish().await.unwrap();

    let kc = b.kubeconfig();
    let mut want = v(&[
        &format!("istioctl x precheck --from-version 1.29 --kubeconfig {kc}"),
        &format!(
            "istioctl upgrade -y --set profile=minimal --readiness-timeout 300s --kubeconfig {kc}"
        ),
        "get deploy istio-system/istiod",
    ]);
    assert_eq!(after_control_plane, want.len(), "{:?}", b.timeline());
    want.extend(restarts());
    // In place: no namespace relabelled, nothing uninstalled, A's istioctl unused.
    assert_eq!(b.timeline(), want);
    assert_eq!(b.labels("atlas")["istio-injection"], "enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_kind_upgrade_relabels_restarts_and_removes_the_old_revision() {
    let b = Bench::start().await;
    // B's images from the hub A's came from (`--istio-hub`).
    let mut opts = b.opts(Strategy::Canary);
    opts.hub = Some("gcr.io/istio-release".into());
    let mut t = b.transition(opts);
    t.precheck().await.unwrap();
    t.upgrade_control_plane().await.unwrap();
    // The skew phase: B's revision serves the relabelled namespaces' next pods.
    assert_eq!(
        b.labels("atlas"),
        BTreeMap::from([("istio.io/rev".into(), "1-30-3".into())])
    );
    assert_eq!(
        b.labels("istio-ingress"),
        BTreeMap::from([("istio.io/rev".into(), "1-30-3".into())])
    );
    t.restart_proxies().await.unwrap();
    t.finish().await.unwrap();

    let kc = b.kubeconfig();
    let relabel = format!("{}", relabel_patch("1-30-3"));
    let mut want = v(&[
        &format!("istioctl x precheck --from-version 1.29 --kubeconfig {kc}"),
        &format!("istioctl install -y --set profile=minimal --readiness-timeout 300s --kubeconfig {kc} --revision 1-30-3 --set hub=gcr.io/istio-release"),
        "get deploy istio-system/istiod-1-30-3",
        "get ns atlas",
        &format!("patch ns atlas merge {relabel}"),
        "get ns istio-ingress",
        &format!("patch ns istio-ingress merge {relabel}"),
    ]);
    want.extend(restarts());
    want.push(format!(
        "istioctl uninstall --revision default -y --kubeconfig {kc}"
    ));
    assert_eq!(b.timeline(), want);
    assert_eq!(
        relabel,
        r#"{"metadata":{"labels":{"istio-injection":null,"istio.io/rev":"1-30-3"}}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precheck_that_finds_issues_is_a_failed_testcase() {
    let b = Bench::start().await;
    b.touch("fail-x");
    let mut t = b.transition(b.opts(Strategy::InPlace));
    let pre = t.precheck().await.expect("the precheck ran");
    assert_eq!(pre.len(), 1);
    assert!(!pre[0].passed);
    assert!(
        pre[0]
            .message
            .contains("found issues upgrading from 1.29.6")
            && pre[0].message.contains("Error: x went wrong"),
        "{}",
        pre[0].message
    );
    assert!(pre[0].output.contains("details on stderr"), "{pre:?}");
}

/// A failed `istioctl upgrade`: the error names the step and the command; no
/// proxy was restarted; abort changes nothing (in place relabels nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_istioctl_upgrade_fails_the_control_plane_step() {
    let b = Bench::start().await;
    b.touch("fail-upgrade");
    let mut t = b.transition(b.opts(Strategy::InPlace));
    t.precheck().await.unwrap();
    let e = t
        .upgrade_control_plane()
        .await
        .expect_err("istioctl failed");
    let msg = message(&e);
    assert!(
        msg.contains("upgrade step `control-plane` failed")
            && msg.contains("istioctl upgrade -y")
            && msg.contains("exit status: 1")
            && msg.contains("details on stderr"),
        "{msg}"
    );
    assert_eq!(e.exit_code(), crate::error::exit::ENVIRONMENT);
    t.abort().await;
    let timeline = b.timeline();
    assert_eq!(timeline.len(), 2, "{timeline:?}");
    assert!(timeline[1].starts_with("istioctl upgrade"), "{timeline:?}");
}

/// A rollout that never completes fails the proxies step naming the Deployment;
/// the workloads after it are not restarted; abort puts the canary's namespace
/// labels back as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_fails_the_proxies_step_and_abort_restores_the_labels() {
    let b = Bench::start().await;
    b.state.lock().unwrap().stuck.insert("atlas/authz".into());
    let mut opts = b.opts(Strategy::Canary);
    opts.rollout_timeout = Duration::from_secs(2);
    let mut t = b.transition(opts);
    t.upgrade_control_plane().await.unwrap();
    let started = Instant::now();
    let e = t
        .restart_proxies()
        .await
        .expect_err("authz never rolls out");
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = message(&e);
    assert!(
        msg.contains("upgrade step `proxies` failed") && msg.contains("atlas/authz"),
        "{msg}"
    );
    let timeline = b.timeline();
    assert!(
        timeline.last().unwrap() == "get deploy atlas/authz"
            && !timeline.iter().any(|l| l.contains("nb-rest")),
        "{timeline:?}"
    );
    t.abort().await;
    let restored: Vec<String> = b.timeline()[timeline.len()..].to_vec();
    assert_eq!(
        restored,
        v(&[
            r#"patch ns istio-ingress merge {"metadata":{"labels":{"istio-injection":null,"istio.io/rev":null}}}"#,
            r#"patch ns atlas merge {"metadata":{"labels":{"istio-injection":"enabled","istio.io/rev":null}}}"#,
        ])
    );
    assert_eq!(b.labels("atlas")["istio-injection"], "enabled");
    assert!(!b.labels("atlas").contains_key("istio.io/rev"));
    assert!(b.labels("istio-ingress").is_empty());
    // Abort is done once.
    t.abort().await;
    assert_eq!(b.timeline().len(), timeline.len() + 2);
}

/// A pod whose restart left A's proxy in place (its injector still A's) fails the
/// proxies step, named with its image and revision, although every rollout completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_still_on_the_old_proxy_fails_the_proxies_step() {
    for strategy in [Strategy::InPlace, Strategy::Canary] {
        let b = Bench::start().await;
        b.state.lock().unwrap().keep_a.insert("atlas/authz".into());
        let mut t = b.transition(b.opts(strategy));
        t.upgrade_control_plane().await.unwrap();
        let msg = message(
            &t.restart_proxies()
                .await
                .expect_err("authz keeps A's proxy"),
        );
        assert!(
            msg.contains("upgrade step `proxies` failed")
                && msg.contains("1 of 5 injected pod(s) do not run Istio 1.30.3's proxy")
                && msg.contains(&format!(
                    "atlas/authz-1 (docker.io/istio/proxyv2:{FROM}, revision default)"
                )),
            "{strategy:?}: {msg}"
        );
    }
}

/// A command that outlives the step timeout is stopped with everything it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_istioctl_is_stopped_at_the_step_timeout() {
    let b = Bench::start().await;
    b.touch("hang-uninstall");
    let mut opts = b.opts(Strategy::Canary);
    opts.step_timeout = Duration::from_secs(3);
    let mut t = b.transition(opts);
    t.upgrade_control_plane().await.unwrap();
    t.restart_proxies().await.unwrap();
    let e = t.finish().await.expect_err("istioctl uninstall hangs");
    let msg = message(&e);
    assert!(
        msg.contains("upgrade step `finish` failed") && msg.contains("did not finish within 3s"),
        "{msg}"
    );
    let pid: u32 = std::fs::read_to_string(b.dir.path().join("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ends_soon(pid), "istioctl's helper {pid} is still running");
}

#[tokio::test]
async fn kind_refuses_the_existing_targets_options() {
    let b = Bench::start().await;
    let mut opts = b.opts(Strategy::InPlace);
    opts.upgrade_cmd = Some("true".into());
    let e = ClusterTransition::with_terminal(&b.target("kind"), &mesh(), opts, true)
        .err()
        .expect("refused");
    assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
    assert!(message(&e).contains("--target existing"), "{e}");
}

// ----------------------------------------------------------------------------------
// existing: the user's upgrade

fn existing(b: &Bench, opts: ClusterUpgradeOptions) -> ClusterTransition {
    ClusterTransition::with_terminal(&b.target("existing"), &mesh(), opts, false)
        .expect("an existing transition")
}

/// `--upgrade-cmd` runs once per step, told the step, the versions, and the run's
/// namespaces and Deployments; meshcheck itself touches neither istioctl nor the API,
/// except to list the pods after the proxies step: each must run B's proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_runs_the_upgrade_command_for_each_step() {
    let b = Bench::start().await;
    let log = b.dir.path().join("log");
    let mut opts = b.opts(Strategy::InPlace);
    opts.upgrade_cmd = Some(format!(
        "echo \"user $MESHCHECK_UPGRADE_STEP $MESHCHECK_UPGRADE_FROM $MESHCHECK_UPGRADE_TO [$MESHCHECK_UPGRADE_NAMESPACES] [$MESHCHECK_UPGRADE_DEPLOYMENTS]\" >> '{}'",
        log.display()
    ));
    let mut t = existing(&b, opts);
    assert!(t.precheck().await.unwrap().is_empty());
    t.upgrade_control_plane().await.unwrap();
    // The user's proxies step restarts the pods onto B.
    for d in DEPLOYMENTS {
        b.state
            .lock()
            .unwrap()
            .proxies
            .insert(d.into(), (TO.into(), "default".into()));
    }
    t.restart_proxies().await.unwrap();
    t.finish().await.unwrap();
    let scope = format!("[atlas istio-ingress] [{}]", DEPLOYMENTS.join(" "));
    assert_eq!(
        b.timeline(),
        v(&[
            &format!("user control-plane 1.29.6 1.30.3 {scope}"),
            &format!("user proxies 1.29.6 1.30.3 {scope}"),
            "list pods atlas",
            "list pods istio-ingress",
            &format!("user finish 1.29.6 1.30.3 {scope}"),
        ])
    );
}

/// The user's proxies step that left a pod on A's proxy fails, naming the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_proxies_step_fails_when_a_pod_still_runs_the_old_proxy() {
    let b = Bench::start().await;
    let mut opts = b.opts(Strategy::InPlace);
    opts.upgrade_cmd = Some("true".into());
    let mut t = existing(&b, opts);
    t.upgrade_control_plane().await.unwrap();
    let msg = message(&t.restart_proxies().await.expect_err("no pod was restarted"));
    assert!(
        msg.contains("target existing")
            && msg.contains("5 of 5 injected pod(s) do not run Istio 1.30.3's proxy")
            && msg.contains("atlas/authz-1"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upgrade_command_fails_its_step() {
    let b = Bench::start().await;
    let mut opts = b.opts(Strategy::InPlace);
    opts.upgrade_cmd = Some(
        "if [ \"$MESHCHECK_UPGRADE_STEP\" = proxies ]; then echo 'rollout of gw failed' >&2; exit 3; fi"
            .into(),
    );
    let mut t = existing(&b, opts);
    t.upgrade_control_plane().await.unwrap();
    let e = t.restart_proxies().await.expect_err("the command failed");
    let msg = message(&e);
    assert!(
        msg.contains("target existing")
            && msg.contains("upgrade step `proxies` failed")
            && msg.contains("exit status: 3")
            && msg.contains("rollout of gw failed"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upgrade_command_is_stopped_with_what_it_started() {
    let b = Bench::start().await;
    let pidfile = b.dir.path().join("user.pid");
    let mut opts = b.opts(Strategy::InPlace);
    opts.step_timeout = Duration::from_secs(3);
    opts.upgrade_cmd = Some(format!(
        "sleep 120 & echo $! > '{0}.tmp'; mv '{0}.tmp' '{0}'; wait",
        pidfile.display()
    ));
    let mut t = existing(&b, opts);
    let started = Instant::now();
    let e = t.upgrade_control_plane().await.expect_err("it hangs");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        message(&e).contains("upgrade step `control-plane` failed")
            && message(&e).contains("did not finish within 3s"),
        "{e}"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ends_soon(pid), "the command's child {pid} is still running");
}

#[tokio::test]
async fn existing_needs_a_way_to_upgrade_when_not_on_a_terminal() {
    let b = Bench::start().await;
    let e = ClusterTransition::with_terminal(
        &b.target("existing"),
        &mesh(),
        b.opts(Strategy::InPlace),
        false,
    )
    .err()
    .expect("no way to upgrade");
    assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
    assert!(
        message(&e).contains("--upgrade-cmd") && message(&e).contains("--upgrade-signal"),
        "{e}"
    );
    // On a terminal it asks; both options at once are refused.
    assert!(ClusterTransition::with_terminal(
        &b.target("existing"),
        &mesh(),
        b.opts(Strategy::InPlace),
        true
    )
    .is_ok());
    let mut both = b.opts(Strategy::InPlace);
    both.upgrade_cmd = Some("true".into());
    both.upgrade_signal = Some(b.dir.path().join("signal"));
    assert!(ClusterTransition::with_terminal(&b.target("existing"), &mesh(), both, true).is_err());
    // The same check before anything is brought up.
    let opts = b.opts(Strategy::InPlace);
    assert!(opts.check("existing", false).is_err());
    assert!(opts.check("existing", true).is_ok());
    assert!(opts.check("kind", false).unwrap().is_none());
    // kind and the sandbox: no more minors than the strategy supports, before
    // anything is brought up (a usage error, exit 2).
    for target in ["kind", "sandbox"] {
        let mut far = b.opts(Strategy::InPlace);
        far.from = "1.28.3".into();
        let e = far.check(target, false).expect_err("two minors in place");
        assert!(message(&e).contains("crosses 2 minor version(s)"), "{e}");
        assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
        far.strategy = Strategy::Canary;
        assert!(far.check(target, false).unwrap().is_none());
        far.from = "1.27.0".into();
        assert!(
            far.check(target, false).is_err(),
            "three minors as a canary"
        );
    }
    // The strategy is meshcheck's on kind only.
    let mut canary = b.opts(Strategy::Canary);
    canary.upgrade_cmd = Some("true".into());
    let e = ClusterTransition::with_terminal(&b.target("existing"), &mesh(), canary, true)
        .err()
        .expect("canary refused on existing");
    assert!(
        message(&e).contains("--strategy canary is for --target kind"),
        "{e}"
    );
}

/// The signal file: the step's name written after the wait began ends the wait; a
/// file that named the step already, another step's name, or nothing do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signal_file_must_name_the_step_after_the_wait_began() {
    let dir = tempfile::tempdir().unwrap();
    let signal = dir.path().join("signal");
    let poll = Duration::from_millis(20);
    let short = Duration::from_millis(400);

    let e = wait_signal(&signal, "control-plane", short, poll)
        .await
        .expect_err("no file");
    assert!(e.contains("does not exist"), "{e}");

    std::fs::write(&signal, "control-plane\n").unwrap();
    let e = wait_signal(&signal, "control-plane", short, poll)
        .await
        .expect_err("left from before the wait");
    assert!(e.contains("holds \"control-plane\""), "{e}");
    let e = wait_signal(&signal, "proxies", short, poll)
        .await
        .expect_err("another step");
    assert!(e.contains("did not name the step \"proxies\""), "{e}");

    // Written while meshcheck waits (by the user, here a task once the wait began).
    let s = signal.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&s, "proxies\n").unwrap();
    });
    wait_signal(
        &signal,
        UserStep::Proxies.name(),
        Duration::from_secs(10),
        poll,
    )
    .await
    .expect("the step named");
    writer.await.unwrap();
}

/// Through the transition: the signal wait of each step, with the step timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_waits_for_the_signal_of_each_step() {
    let b = Bench::start().await;
    let signal = b.dir.path().join("signal");
    let mut opts = b.opts(Strategy::InPlace);
    opts.upgrade_signal = Some(signal.clone());
    opts.step_timeout = Duration::from_secs(1);
    let mut t = existing(&b, opts);
    let e = t.upgrade_control_plane().await.expect_err("nobody signals");
    assert!(
        message(&e).contains("upgrade step `control-plane` failed")
            && message(&e).contains("within 1s"),
        "{e}"
    );
    let s = signal.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&s, "control-plane").unwrap();
    });
    t.upgrade_control_plane().await.expect("signalled");
    writer.await.unwrap();
    assert!(b.fake.requests().await.is_empty());
}
