//! DestinationRule traffic policies (loadBalancer, connectionPool, outlierDetection,
//! per-subset policies, portLevelSettings), end to end on the local target: modelled as
//! pilot applies them (src/istio/policy.rs), programmed into the local Envoy (read back
//! from its admin config_dump), observable in traffic (Istio's "Circuit Breaking" task,
//! consistent hashing by header), and (through the FixtureCopy hook and the
//! reintroduced defects below) compared with istiod. Every test here runs with the
//! model and with `MESHCHECK_CONTROL_PLANE=istiod` (the gateway then serves istiod's
//! own config).

mod common;
use common::oracle::{note_unavailable, oracle};
use common::*;
use meshcheck::fixtures::load_dir;
use meshcheck::istio::policy::{HashPolicy, LbPolicy};
use meshcheck::istio::Mesh;
use meshcheck::targets::local::{LocalOptions, LocalTarget};
use meshcheck::targets::Target;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DRS: &str = "50-destinationrules.yaml";

/// The shipped fixtures with `policy` (YAML at the indentation of `tls:`) added to the
/// top-level trafficPolicy of the DestinationRule for `host`.
fn with_policy(host: &str, policy: &str) -> FixtureCopy {
    let f = FixtureCopy::new();
    add_policy(&f, host, policy);
    f
}

fn add_policy(f: &FixtureCopy, host: &str, policy: &str) {
    let anchor = format!("  host: {host}\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n");
    f.replace(DRS, &anchor, &format!("{anchor}{policy}"));
}

/// A route `/hash` to every pod of nb-rest (v1 and v2, no subset).
fn route_to_all_of_nb_rest(f: &FixtureCopy) {
    f.write(
        "45-hash.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: hash\n  namespace: atlas\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - atlas-gateway\n  http:\n  - match:\n    - uri:\n        prefix: /hash\n    route:\n    - destination:\n        host: nb-rest\n        port:\n          number: 80\n",
    );
}

/// The local target, up on the fixtures of `f`: serving the model, or istiod's config
/// with `MESHCHECK_CONTROL_PLANE=istiod` (and `MESHCHECK_ORACLE`).
struct Up {
    target: LocalTarget,
    rt: tokio::runtime::Runtime,
    base: String,
}

fn up(f: &FixtureCopy) -> Up {
    let fx = load_dir(f.path()).unwrap();
    let mesh = Mesh::build(&fx);
    let mut opts = LocalOptions::new(vec![env!("CARGO_BIN_EXE_meshcheck-stub").into()]);
    if std::env::var("MESHCHECK_CONTROL_PLANE").as_deref() == Ok("istiod") {
        let spec = std::env::var("MESHCHECK_ORACLE").expect("MESHCHECK_ORACLE with istiod");
        let suite = meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap();
        let answer = meshcheck::oracle::ask(&spec, &fx, &mesh, &suite, true).unwrap();
        opts.istiod = Some(Arc::new(answer));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let target = LocalTarget::start(mesh, &opts).unwrap();
    let port = target.node_port(80).expect("a NodePort for port 80");
    let base = format!("http://{}:{port}", target.node_address());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Up { target, rt, base }
}

/// One answer: status, `x-envoy-overloaded`, and the pod that answered (empty when
/// the gateway answered itself).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    overloaded: bool,
    pod: String,
}

impl Up {
    /// `n` requests for `path` at once (each on its own connection), with `headers(i)`.
    fn burst(
        &self,
        path: &str,
        n: usize,
        headers: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Vec<Answer> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..n {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut req = client.get(&url);
                for (k, v) in headers(i) {
                    req = req.header(k, v);
                }
                tasks.push(tokio::spawn(async move {
                    let r = req.send().await.expect("the gateway answers");
                    let status = r.status().as_u16();
                    let overloaded = r
                        .headers()
                        .get("x-envoy-overloaded")
                        .is_some_and(|v| v == "true");
                    let body = r.text().await.unwrap_or_default();
                    let pod = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("pod").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or_default();
                    Answer {
                        status,
                        overloaded,
                        pod,
                    }
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    }

    /// `n` requests one after the other.
    fn one_by_one(
        &self,
        path: &str,
        n: usize,
        headers: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Vec<Answer> {
        (0..n)
            .flat_map(|i| self.burst(path, 1, |_| headers(i)))
            .collect()
    }

    /// The gateway Envoy's admin `/config_dump` (the dump that has the gateway's
    /// outbound clusters; sidecars have inbound ones only).
    fn gateway_config_dump(&self) -> Value {
        let socks = std::fs::read_dir(self.target.workdir().join("s")).unwrap();
        for sock in socks.flatten() {
            // Stubs' control sockets live there too; they have no config dump.
            let Some(dump) = admin_get(&sock.path(), "/config_dump") else {
                continue;
            };
            if dump.to_string().contains(ATLAS_UI) {
                return dump;
            }
        }
        panic!("no Envoy admin socket answered with the gateway's config");
    }
}

/// `GET path` (HTTP/1.1) on an Envoy admin unix socket: the JSON body; None when the
/// socket answers with another status.
fn admin_get(sock: &std::path::Path, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// An HTTP/1.1 chunked body, joined.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// The cluster `name` in a config dump.
fn dumped_cluster(dump: &Value, name: &str) -> Value {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c.get("static_clusters")
                .or_else(|| c.get("dynamic_active_clusters"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["cluster"].clone())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in the config dump"))
}

/// Every route in a config dump.
fn dumped_routes(dump: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![dump.clone()];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if m.contains_key("match") && m.contains_key("route") {
                    out.push(Value::Object(m));
                } else {
                    stack.extend(m.into_iter().map(|(_, v)| v));
                }
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

const ATLAS_UI: &str = "outbound|80||atlas-ui.atlas.svc.cluster.local";

/// Every field family the model translates, on one DestinationRule.
const EVERY_FAMILY: &str = "    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n        ringHash:\n          minimumRingSize: 2048\n    connectionPool:\n      tcp:\n        maxConnections: 7\n        connectTimeout: 3s\n      http:\n        http1MaxPendingRequests: 5\n        http2MaxRequests: 9\n        maxRetries: 4\n        maxRequestsPerConnection: 6\n        idleTimeout: 30s\n    outlierDetection:\n      consecutive5xxErrors: 3\n      consecutiveGatewayErrors: 2\n      interval: 5s\n      baseEjectionTime: 1m\n      maxEjectionPercent: 50\n      minHealthPercent: 20\n";

#[test]
fn every_policy_field_reaches_the_local_envoy() {
    let f = with_policy("atlas-ui", EVERY_FAMILY);
    let up = up(&f);
    let dump = up.gateway_config_dump();
    let c = dumped_cluster(&dump, ATLAS_UI);
    assert_eq!(c["lb_policy"], "RING_HASH", "{c:#}");
    assert_eq!(
        c["ring_hash_lb_config"]["minimum_ring_size"], "2048",
        "{c:#}"
    );
    assert_eq!(c["connect_timeout"], "3s", "{c:#}");
    let t = &c["circuit_breakers"]["thresholds"][0];
    assert_eq!(
        (
            &t["max_connections"],
            &t["max_pending_requests"],
            &t["max_requests"],
            &t["max_retries"]
        ),
        (
            &Value::from(7),
            &Value::from(5),
            &Value::from(9),
            &Value::from(4)
        ),
        "{c:#}"
    );
    let o = &c["outlier_detection"];
    assert_eq!(o["consecutive_5xx"], 3, "{c:#}");
    assert_eq!(o["enforcing_consecutive_5xx"], 100, "{c:#}");
    assert_eq!(o["consecutive_gateway_failure"], 2, "{c:#}");
    assert_eq!(o["interval"], "5s", "{c:#}");
    assert_eq!(o["base_ejection_time"], "60s", "{c:#}");
    assert_eq!(o["max_ejection_percent"], 50, "{c:#}");
    assert_eq!(
        c["common_lb_config"]["healthy_panic_threshold"]["value"], 20.0,
        "{c:#}"
    );
    let opts = &c["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["common_http_protocol_options"];
    assert_eq!(opts["idle_timeout"], "30s", "{c:#}");
    assert_eq!(opts["max_requests_per_connection"], 6, "{c:#}");
    // The hash key is on the route (pilot route.go HashForHTTPDestination).
    let routes = dumped_routes(&dump);
    let ui = routes
        .iter()
        .find(|r| r["route"]["cluster"] == ATLAS_UI)
        .expect("a route to atlas-ui");
    assert_eq!(
        ui["route"]["hash_policy"][0]["header"]["header_name"], "x-user",
        "{ui:#}"
    );
    // And traffic still flows through it.
    let a = up.one_by_one("/atlas-ui", 3, |_| vec![]);
    assert!(a.iter().all(|a| a.status == 200), "{a:?}");
}

#[test]
fn without_a_policy_the_cluster_has_istios_defaults() {
    let f = FixtureCopy::new();
    let up = up(&f);
    let c = dumped_cluster(&up.gateway_config_dump(), ATLAS_UI);
    assert_eq!(c["lb_policy"], "LEAST_REQUEST", "{c:#}");
    assert_eq!(c["connect_timeout"], "10s", "{c:#}");
    let t = &c["circuit_breakers"]["thresholds"][0];
    for k in [
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "max_retries",
    ] {
        assert_eq!(t[k], u64::from(u32::MAX), "{k}: {c:#}");
    }
    assert!(c.get("outlier_detection").is_none(), "{c:#}");
}

/// Istio's "Circuit Breaking" task: one connection and one pending request allowed;
/// requests at once overflow with 503 and `x-envoy-overloaded: true`.
const CIRCUIT_BREAKER: &str = "    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n        maxRequestsPerConnection: 1\n";

/// Bursts of 40 requests at once until one overflows (or `rounds` bursts): the answers.
/// Each request asks the stub to hold it for 300 ms (`x-meshcheck-delay`), so the
/// burst's requests overlap at the gateway even when a busy machine starts them
/// slowly; without the hold, a loaded CI runner could serve them one after another
/// and never reach the thresholds.
fn bursts_until_overflow(up: &Up, rounds: usize) -> Vec<Answer> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = || vec![("x-meshcheck-delay".to_string(), "300ms".to_string())];
    for _ in 0..rounds {
        all.extend(up.burst("/atlas-ui", 40, |_| held()));
        if all.iter().any(|a| a.overloaded) || Instant::now() > deadline {
            break;
        }
    }
    all
}

#[test]
fn circuit_breaker_overflows_with_x_envoy_overloaded() {
    let f = with_policy("atlas-ui", CIRCUIT_BREAKER);
    let up = up(&f);
    let answers = bursts_until_overflow(&up, 10);
    let overflowed: Vec<&Answer> = answers.iter().filter(|a| a.overloaded).collect();
    assert!(
        !overflowed.is_empty(),
        "no request overflowed: (status, overloaded) counts {:?}",
        summary(&answers)
    );
    assert!(overflowed.iter().all(|a| a.status == 503), "{overflowed:?}");
    assert!(
        answers
            .iter()
            .any(|a| a.status == 200 && a.pod.starts_with("atlas-ui")),
        "some requests get through: {:?}",
        summary(&answers)
    );
}

#[test]
fn without_the_connection_pool_nothing_overflows() {
    // The negative of the above: the same bursts, Istio's default (unlimited)
    // thresholds: every request is answered by the backend.
    let f = FixtureCopy::new();
    let up = up(&f);
    let answers = bursts_until_overflow(&up, 3);
    assert_eq!(answers.len(), 120);
    assert!(
        answers.iter().all(|a| a.status == 200 && !a.overloaded),
        "(status, overloaded) counts {:?}",
        summary(&answers)
    );
}

/// `{(status, overloaded): count}`, for messages.
fn summary(answers: &[Answer]) -> std::collections::BTreeMap<(u16, bool), usize> {
    let mut m = std::collections::BTreeMap::new();
    for a in answers {
        *m.entry((a.status, a.overloaded)).or_insert(0) += 1;
    }
    m
}

/// The pods that answered.
fn pods(answers: &[Answer]) -> BTreeSet<String> {
    answers.iter().map(|a| a.pod.clone()).collect()
}

fn user(v: impl Into<String>) -> Vec<(String, String)> {
    vec![("x-user".to_string(), v.into())]
}

#[test]
fn consistent_hash_by_header_pins_each_user_to_one_pod() {
    let f = with_policy(
        "nb-rest",
        "    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n",
    );
    route_to_all_of_nb_rest(&f);
    let up = up(&f);
    for name in ["alice", "bob"] {
        let a = up.one_by_one("/hash", 20, |_| user(name));
        assert!(a.iter().all(|a| a.status == 200), "{a:?}");
        assert_eq!(pods(&a).len(), 1, "{name} should stay on one pod: {a:?}");
    }
    // Across users, both pods answer.
    let a = up.one_by_one("/hash", 24, |i| user(format!("user-{i}")));
    assert_eq!(pods(&a).len(), 2, "{a:?}");
}

#[test]
fn without_consistent_hash_one_user_sees_both_pods() {
    // The negative: round robin spreads one user over both pods, which the check above
    // would catch if the hash policy were dropped.
    let f = with_policy("nb-rest", "    loadBalancer:\n      simple: ROUND_ROBIN\n");
    route_to_all_of_nb_rest(&f);
    let up = up(&f);
    let a = up.one_by_one("/hash", 20, |_| user("alice"));
    assert_eq!(pods(&a).len(), 2, "{a:?}");
}

/// Subset and port-level policies, merged as pilot merges them.
const MERGED: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: nb-rest\n  namespace: atlas\nspec:\n  host: nb-rest\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n    loadBalancer:\n      consistentHash:\n        httpCookie:\n          name: session\n          ttl: 0s\n    connectionPool:\n      http:\n        http2MaxRequests: 10\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n    trafficPolicy:\n      portLevelSettings:\n      - port:\n          number: 80\n        tls:\n          mode: ISTIO_MUTUAL\n        outlierDetection:\n          consecutive5xxErrors: 7\n  - name: v2\n    labels:\n      version: v2\n    trafficPolicy:\n      loadBalancer:\n        simple: ROUND_ROBIN\n      outlierDetection:\n        consecutiveGatewayErrors: 2\n";

#[test]
fn subset_and_port_level_policies_merge_as_pilot_merges_them() {
    let f = FixtureCopy::new();
    let text = f.read(DRS);
    let start = text
        .find(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: nb-rest",
        )
        .unwrap();
    f.write(DRS, &format!("{}{MERGED}", &text[..start]));
    let fx = load_dir(f.path()).unwrap();
    let mesh = Mesh::build(&fx);
    let c = |s: &str| {
        &mesh.clusters[&format!("outbound|80|{s}|nb-rest.atlas.svc.cluster.local")].policy
    };
    // v2: its own loadBalancer and outlierDetection, the top level's connectionPool.
    assert_eq!(c("v2").lb, LbPolicy::RoundRobin);
    assert_eq!(c("v2").thresholds.max_requests, 10);
    assert!(c("v2").outlier.is_some());
    // v1: a port-level entry replaces all four sections: no pool limit, default lb.
    assert_eq!(c("v1").lb, LbPolicy::LeastRequest);
    assert_eq!(c("v1").thresholds.max_requests, u32::MAX);
    assert_eq!(c("v1").outlier.as_ref().unwrap().consecutive_5xx, Some(7));
    // The routes hash by the top level's cookie, whatever the subsets balance with.
    let routes: Vec<_> = mesh.gateways[0]
        .listeners
        .iter()
        .flat_map(|l| l.chains.iter().flat_map(|c| c.route_config.vhosts.iter()))
        .flat_map(|v| v.routes.iter())
        .filter(|r| r.virtual_service.contains("nb-rest"))
        .collect();
    assert!(!routes.is_empty());
    for r in routes {
        assert!(
            r.hash_policy
                .iter()
                .all(|h| matches!(h, HashPolicy::Cookie { name, .. } if name == "session"))
                && !r.hash_policy.is_empty(),
            "{:?}",
            r.hash_policy
        );
    }
    // The FixtureCopy is compared with istiod when dropped.
}

#[test]
fn policy_fields_meshcheck_does_not_apply_are_reported() {
    let f = with_policy(
        "atlas-ui",
        "    connectionPool:\n      http:\n        h2UpgradePolicy: UPGRADE\n    loadBalancer:\n      simple: PASSTHROUGH\n",
    );
    f.disagrees_with_istiod(); // PASSTHROUGH is not modelled: an ORIGINAL_DST cluster in istiod
    let r = Run::new().arg("analyze").fixtures(f.path()).run_plain();
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert!(
        all.contains("h2UpgradePolicy") && all.contains("not modelled"),
        "{all}"
    );
    assert!(
        all.contains("PASSTHROUGH") && all.contains("not modelled"),
        "{all}"
    );
}

// ---------------------------------------------------------------------------------
// Reintroduced defects: a model that gets a policy wrong disagrees with istiod.

/// istiod's answer and the model for `f`, or None without the oracle.
fn istiod(
    f: &FixtureCopy,
) -> Option<(
    meshcheck::fixtures::Fixtures,
    Mesh,
    meshcheck::oracle::output::Output,
)> {
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return None;
        }
    };
    let fx = load_dir(f.path()).unwrap();
    let mesh = Mesh::build(&fx);
    let suite = meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap();
    let input = meshcheck::oracle::input::build(&fx, &mesh, &suite);
    let out = meshcheck::oracle::run(bin, &input, false).unwrap();
    Some((fx, mesh, out))
}

fn disagreements(
    fx: &meshcheck::fixtures::Fixtures,
    mesh: &Mesh,
    out: &meshcheck::oracle::output::Output,
) -> String {
    let suite = meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap();
    meshcheck::oracle::compare(fx, mesh, &suite, out)
        .into_iter()
        .filter(|f| f.severity == meshcheck::analysis::Severity::Error)
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A change to the model that reintroduces a defect.
type Defect = Box<dyn Fn(&mut Mesh)>;

#[test]
fn reintroduced_policy_defects_are_caught_by_the_oracle() {
    let f = with_policy("atlas-ui", EVERY_FAMILY);
    let Some((fx, mesh, out)) = istiod(&f) else {
        return;
    };
    assert_eq!(disagreements(&fx, &mesh, &out), "", "the model agrees");
    let defects: Vec<(&str, Defect)> = vec![
        (
            "lb_policy",
            Box::new(|m| m.clusters.get_mut(ATLAS_UI).unwrap().policy.lb = LbPolicy::LeastRequest),
        ),
        (
            "circuit_breakers",
            Box::new(|m| {
                m.clusters
                    .get_mut(ATLAS_UI)
                    .unwrap()
                    .policy
                    .thresholds
                    .max_connections = u32::MAX
            }),
        ),
        (
            "outlier_detection",
            Box::new(|m| m.clusters.get_mut(ATLAS_UI).unwrap().policy.outlier = None),
        ),
        (
            "healthy_panic_threshold",
            Box::new(|m| {
                m.clusters
                    .get_mut(ATLAS_UI)
                    .unwrap()
                    .policy
                    .healthy_panic_threshold = None
            }),
        ),
        (
            "connect_timeout",
            Box::new(|m| {
                m.clusters
                    .get_mut(ATLAS_UI)
                    .unwrap()
                    .policy
                    .connect_timeout_ms = 10_000
            }),
        ),
        (
            "common_http_protocol_options",
            Box::new(|m| m.clusters.get_mut(ATLAS_UI).unwrap().policy.idle_timeout_ms = None),
        ),
        (
            "hash_policy",
            Box::new(|m| {
                for l in &mut m.gateways[0].listeners {
                    for v in l
                        .chains
                        .iter_mut()
                        .flat_map(|c| c.route_config.vhosts.iter_mut())
                    {
                        for r in &mut v.routes {
                            r.hash_policy.clear();
                        }
                    }
                }
            }),
        ),
    ];
    for (field, break_it) in defects {
        let mut broken = mesh.clone();
        break_it(&mut broken);
        let d = disagreements(&fx, &broken, &out);
        assert!(
            d.contains(field) && (d.contains("MC404") || d.contains("MC403")),
            "{field}: {d}"
        );
    }
}

#[test]
fn tls_without_mode_is_plaintext_as_in_istiod() {
    // `tls: {}` is mode DISABLE (the enum's zero): no auto-mTLS, and the endpoints'
    // EDS tlsMode follows the rule (mtls_checker.go), not the sidecar label.
    let f = FixtureCopy::new();
    f.replace(
        DRS,
        "  host: atlas-ui\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n",
        "  host: atlas-ui\n  trafficPolicy:\n    tls: {}\n",
    );
    let mesh = Mesh::build(&load_dir(f.path()).unwrap());
    let c = &mesh.clusters[ATLAS_UI];
    assert_eq!(c.tls, meshcheck::istio::UpstreamTls::Disable);
    assert!(c.endpoints.iter().all(|e| !e.istio_tls), "{c:?}");
    // The FixtureCopy is compared with istiod when dropped.
}
