//! The run as a user lives it: bad input, listing and filtering, unavailable targets,
//! Ctrl-C mid-run, a backend killed mid-run, and nothing left behind.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The node address and workdir the local target printed.
fn node_and_workdir(stderr: &str) -> (String, String) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" node ") && l.contains("workdir"))
        .expect(stderr);
    let node = line
        .split(" node ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let wd = line.split("workdir ").nth(1).unwrap().trim().to_string();
    (node, wd)
}

/// What the command line of the run's stub fork server and of every pod it forked
/// contains.
fn stubs_of(workdir: &str) -> String {
    format!("--fork-server {workdir}")
}

#[test]
fn a_run_leaves_no_process_and_no_workdir_behind() {
    let r = Run::new().run();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let (_, wd) = node_and_workdir(&r.stderr);
    assert!(processes_with(&wd).is_empty(), "Envoy processes left");
    assert!(
        processes_with(&stubs_of(&wd)).is_empty(),
        "stub processes left"
    );
    assert!(!std::path::Path::new(&wd).exists(), "workdir {wd} left");
}

#[test]
fn malformed_fixture_exits_2_naming_file_and_line() {
    let f = FixtureCopy::new();
    f.replace(
        "30-gateway.yaml",
        "    hosts:\n    - \"*\"\n",
        "    hosts:\n    - \"*\n",
    );
    let r = Run::new().fixtures(f.path()).run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("30-gateway.yaml:"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "no check may run: {}", r.stdout);

    let f = FixtureCopy::new();
    f.replace("20-backends.yaml", "    port: 80\n", "    port: eighty\n");
    let r = Run::new().fixtures(f.path()).run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("20-backends.yaml:") && r.stderr.contains("Service atlas/"),
        "{}",
        r.stderr
    );

    let r = Run::new()
        .arg("--fixtures")
        .arg("/nonexistent/fixtures")
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/fixtures"), "{}", r.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let r = Run::new().arg("--no-such-flag").run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = Run::new().arg("--suite").arg("no-such-suite").run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("no suite named no-such-suite"),
        "{}",
        r.stderr
    );
    let r = Run::new().arg("--budget").arg("soon").run();
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn list_and_filters_work_like_cargo_test() {
    let r = Run::new().arg("--list").run();
    assert_eq!(r.code, 0);
    for c in ALL_CHECKS {
        assert!(
            r.stdout.contains(&format!("{c}: test")),
            "{c} missing from\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stderr.contains("local target"),
        "--list must start nothing: {}",
        r.stderr
    );

    let r = Run::new()
        .arg("routing::")
        .arg("--skip")
        .arg("rewrite")
        .run();
    assert_eq!(r.code, 0, "{}", r.stdout);
    // The filter matches the checks and their static simulations.
    let checks = [
        "routing::atlas-rest",
        "routing::atlas-ui",
        "routing::authz",
        "routing::unmatched-path-404",
    ];
    let mut want: Vec<String> = checks.iter().map(|c| c.to_string()).collect();
    want.extend(checks.iter().map(|c| format!("static::simulate::{c}")));
    want.sort();
    assert_eq!(r.passed.iter().cloned().collect::<Vec<_>>(), want);

    let r = Run::new().arg("--exact").arg("routing::authz").run();
    assert_eq!(r.passed.len(), 1, "{}", r.stdout);
}

#[test]
fn cluster_targets_without_docker_or_kubeconfig_exit_3() {
    // Deterministic on any machine: no Docker socket, no kubeconfig.
    let home = tempfile::tempdir().unwrap();
    let run = |t: &str| {
        let mut run = Run::new().arg("--target").arg(t);
        if t == "existing" {
            // Applying on an existing cluster needs an image it can pull.
            run = run
                .arg("--stub-image")
                .arg("registry.example/meshcheck/stub:1");
        }
        let out = run
            .command()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("HOME", home.path())
            // Keep using the real cache (Envoy is provisioned once per machine).
            .env(
                "XDG_CACHE_HOME",
                dirs::cache_dir().unwrap_or_else(std::env::temp_dir),
            )
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        parse(out)
    };
    let r = run("kind");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("target kind is not available: no Docker engine answers"),
        "{}",
        r.stderr
    );
    let r = run("existing");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("target existing is not available: no kubeconfig"),
        "{}",
        r.stderr
    );
    // auto falls back to local, and says why.
    let r = run("auto");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("target: local (no Docker engine answers"),
        "{}",
        r.stderr
    );
}

#[test]
fn ctrl_c_mid_run_exits_fast_and_leaves_nothing() {
    // A Gateway that selects no pod: every traffic check retries for its whole budget,
    // so the run is certainly in progress when Ctrl-C arrives.
    let f = FixtureCopy::new();
    f.replace(
        "30-gateway.yaml",
        "    istio: my-ingress-gateway\n",
        "    istio: nobody\n",
    );
    let mut cmd = Run::new()
        .fixtures(f.path())
        .arg("--budget")
        .arg("60s")
        .command();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    // Wait until the checks are running (libtest's "running N tests" header).
    let seen = read_until(
        &rx,
        Duration::from_secs(120),
        "target never became ready",
        |s| s.contains("ready in") && s.contains("\nrunning "),
    );
    let (_, wd) = node_and_workdir(&seen);
    assert!(
        !processes_with(&wd).is_empty(),
        "Envoys should be running mid-run"
    );
    assert!(
        processes_with(&stubs_of(&wd)).len() > 1,
        "the stub fork server and the pods it forked should run mid-run"
    );
    let (status, took) = ctrl_c(
        &mut child,
        Duration::from_secs(10),
        "meshcheck did not exit after Ctrl-C",
    );
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert_eq!(status.code(), Some(130));
    assert!(
        processes_with(&wd).is_empty(),
        "Envoy processes left after Ctrl-C"
    );
    assert!(
        processes_with(&stubs_of(&wd)).is_empty(),
        "stubs left after Ctrl-C"
    );
    assert!(
        !std::path::Path::new(&wd).exists(),
        "workdir {wd} left after Ctrl-C"
    );
}

#[test]
fn killing_a_backend_mid_run_fails_its_checks_with_a_clear_message() {
    let live = LiveIngress::start(meshcheck::timeouts::Timeouts {
        consistency: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    assert!(live.run("routing::atlas-ui").passed);
    let pid = live.target.app_pid("atlas-ui").unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let started = Instant::now();
    let o = live.run("routing::atlas-ui");
    assert!(!o.passed);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        o.message.contains("expected status 200, got 503"),
        "{}",
        o.message
    );
    assert!(
        o.message.contains("atlas-ui") && o.message.contains("was killed (SIGKILL)"),
        "{}",
        o.message
    );
    assert!(o.attempts > 1, "retried within the budget");
    // Other backends are unaffected.
    assert!(live.run("routing::authz").passed);
    let LiveIngress { target, ctx, .. } = live;
    drop(ctx);
    let workdir = target.workdir().to_path_buf();
    drop(target);
    assert!(!workdir.exists());
}

#[test]
fn two_runs_at_once_do_not_collide() {
    let spawn = || {
        Run::new()
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        parse(a.wait_with_output().unwrap()),
        parse(b.wait_with_output().unwrap()),
    );
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    assert_eq!(b.code, 0, "{}\n{}", b.stdout, b.stderr);
    let (na, _) = node_and_workdir(&a.stderr);
    let (nb, _) = node_and_workdir(&b.stderr);
    assert_ne!(na, nb, "each run claims its own node address");
}

#[test]
fn a_failed_check_leaves_every_envoys_config_dump_beside_the_report() {
    // The admin API answers HTTP/1.1 only (HTTP/1.0 gets 426): the dumps must be there.
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        host: atlas-ui\n",
        "        host: authz\n",
    );
    let out = tempfile::tempdir().unwrap();
    let r = Run::new()
        .arg("--suite")
        .arg("ingress")
        .fixtures(f.path())
        .arg("--budget")
        .arg("1s")
        .arg("--junit")
        .arg(out.path().join("report.xml"))
        .run_plain();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let dir = out.path().join("ingress-diagnostics");
    let dumps: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", dir.display(), r.stderr))
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".config_dump.json")
        })
        .collect();
    assert!(!dumps.is_empty(), "no config dump in {}", dir.display());
    for d in dumps {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.path()).unwrap()).unwrap();
        assert!(v.get("configs").is_some(), "{}", d.path().display());
    }
}
