//! The local target at the size of a real mesh: the generated N-service fixtures load,
//! pass analysis and agree with istiod; a mesh larger than the old 100-pod limit runs
//! and passes; killing one pod's sidecar (served by a shared sidecar host) fails only
//! what goes through that pod.

mod common;
use common::*;
use meshcheck::gen_fixtures::{generate, GenSpec};
use std::sync::Arc;
use std::time::Duration;

fn generated(n: usize) -> (tempfile::TempDir, meshcheck::gen_fixtures::Generated) {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenSpec::new(n, root().join("suites/ingress.yaml"));
    let out = generate(&spec, dir.path()).unwrap();
    (dir, out)
}

#[test]
fn generated_fixtures_load_pass_analyze_and_agree_with_istiod() {
    let (_dir, out) = generated(3);
    let suite = meshcheck::suite::load(&out.suite).unwrap();
    assert_eq!(suite.name, "ingress-plus-3");
    let scale: Vec<String> = suite
        .checks
        .iter()
        .filter(|c| c.group == "scale")
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(scale, ["svc-001", "svc-002", "svc-003"]);
    let fx = meshcheck::fixtures::load_dirs(&suite.fixtures_dirs()).unwrap();
    assert!(
        fx.warnings.is_empty(),
        "generated fixtures use fields the model does not apply: {:?}",
        fx.warnings
    );
    let mesh = meshcheck::istio::Mesh::build(&fx);
    // Every generated service has its own injected pod.
    for name in &scale {
        let pod = mesh
            .pods
            .iter()
            .find(|p| p.deployment == *name)
            .unwrap_or_else(|| panic!("no pod of {name}"));
        assert!(pod.has_sidecar(), "{name} is not injected");
        assert_eq!(pod.namespace, "scale");
    }
    let r = Run::new()
        .arg("analyze")
        .arg("--suite")
        .arg(&out.suite)
        .run_plain();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("0 error(s)"), "{}", r.stdout);
    if let Some(d) = common::oracle::disagreements_with(&fx, &out.suite) {
        assert!(
            d.is_empty(),
            "the model disagrees with istiod:\n{}",
            d.join("\n")
        );
    }
}

/// 4 ingress pods + 100 generated: more than the old fixed limit of 100 pods.
#[test]
fn a_mesh_of_104_pods_runs_and_passes() {
    let (_dir, out) = generated(100);
    let r = Run::new().arg("--suite").arg(&out.suite).run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let scale = r.passed.iter().filter(|n| n.starts_with("scale::")).count();
    assert_eq!(scale, 100, "passed: {:?}", r.passed);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
}

#[test]
fn killing_one_pods_sidecar_fails_only_what_goes_through_it() {
    use meshcheck::targets::Target;

    let live = LiveIngress::start(meshcheck::timeouts::Timeouts {
        consistency: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let (target, rt) = (&live.target, &live.rt);
    let run = |name: &str| live.run(name);

    for name in [
        "routing::atlas-ui",
        "routing::authz",
        "sidecars::mtls-at-backends",
    ] {
        assert!(run(name).passed, "{name} before the kill");
    }
    target.kill_proxy("atlas-ui").unwrap();

    let o = run("routing::atlas-ui");
    assert!(!o.passed);
    assert!(
        o.message.contains("expected status 200, got 503"),
        "{}",
        o.message
    );
    assert!(
        o.message.contains("atlas/atlas-ui") && o.message.contains("istio-proxy was killed"),
        "{}",
        o.message
    );
    // The other pods' sidecars, served by the same host, are unaffected.
    assert!(run("routing::authz").passed);
    assert!(run("routing::atlas-rest").passed);
    // The pod shows its proxy not running; the others' run.
    let pods = rt.block_on(target.pods()).unwrap();
    let proxy_running = |dep: &str| {
        let p = pods.iter().find(|p| p.name.starts_with(dep)).unwrap();
        p.containers
            .iter()
            .chain(p.init_containers.iter())
            .any(|c| c.name == "istio-proxy" && c.running)
    };
    assert!(!proxy_running("atlas-ui"));
    assert!(proxy_running("authz"));
    let o = run("sidecars::injected");
    assert!(!o.passed, "the sidecars check sees the dead proxy");
    assert!(o.message.contains("atlas-ui"), "{}", o.message);
    assert!(target.kill_proxy("no-such-deployment").is_err());
}

/// `requests / seconds` of `wrk -c concurrency` on `url` for `secs`.
fn wrk_rate(url: &str, concurrency: u32, secs: u32) -> f64 {
    let out = std::process::Command::new("wrk")
        .args(["-t", &concurrency.min(2).to_string()])
        .args(["-c", &concurrency.to_string()])
        .args(["-d", &format!("{secs}s"), url])
        .output()
        .expect("wrk runs (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"))
}

/// The distribution check's request rate against wrk's on the same running gateway
/// and route, same concurrency (scripts/bench-prober.sh; release build).
#[test]
#[ignore = "benchmark: scripts/bench-prober.sh"]
fn bench_prober_against_wrk() {
    use meshcheck::istio::Mesh;
    use meshcheck::suite::CheckKind;
    use meshcheck::targets::local::{LocalOptions, LocalTarget};
    use meshcheck::targets::Target;

    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (requests, concurrency) = (env("REQUESTS", 20000), env("CONCURRENCY", 16));
    let fx = meshcheck::fixtures::load_dir(&root().join("fixtures/ingress")).unwrap();
    let opts = LocalOptions::new(vec![env!("CARGO_BIN_EXE_meshcheck-stub").into()]);
    let target = Arc::new(LocalTarget::start(Mesh::build(&fx), &opts).unwrap());
    let suite = meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap();
    let mut check = suite
        .checks
        .iter()
        .find(|c| c.full_name() == "subsets::split-90-10")
        .unwrap()
        .clone();
    let CheckKind::Distribution(d) = &mut check.kind else {
        panic!("split-90-10 is a distribution check")
    };
    d.requests = requests;
    d.concurrency = concurrency;
    let path = d.request.path.clone();
    let dyn_target: Arc<dyn Target> = target.clone();
    let ctx = meshcheck::checks::Ctx::new(dyn_target, Default::default(), 80);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!(
        "http://{}:{}{path}",
        target.node_address(),
        target.node_port(80).unwrap()
    );
    // Warm both up (connections, caches), then measure each alone.
    wrk_rate(&url, concurrency, 1);
    assert!(rt.block_on(meshcheck::checks::run(&ctx, &check)).passed);
    let started = std::time::Instant::now();
    let o = rt.block_on(meshcheck::checks::run(&ctx, &check));
    let prober = requests as f64 / started.elapsed().as_secs_f64();
    assert!(o.passed, "{}", o.message);
    let wrk = wrk_rate(&url, concurrency, 5);
    println!(
        "prober: {prober:.0} req/s ({requests} requests, concurrency {concurrency}); \
         wrk: {wrk:.0} req/s (same route, concurrency {concurrency}); prober/wrk = {:.2}",
        prober / wrk
    );
}
