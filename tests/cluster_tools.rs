//! External tools of the cluster targets (kind, istioctl, docker) as Ctrl-C meets
//! them: the interrupt path stops a running tool's whole process group before the
//! cleanups run (so `kind create cluster` does not go on creating a node while
//! `kind delete cluster` runs). Its own test binary: `procs::stop_all` stops every
//! process of the test process. And the environments the kind target refuses
//! before it runs any tool (podman as kind's provider, a Docker engine on another
//! host), through the CLI.

use meshcheck::targets::cluster::run_tool;
use meshcheck::targets::local::procs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(target_os = "linux"), ignore = "needs Linux (reads /proc)")]
async fn the_interrupt_path_stops_a_running_tools_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    // A tool that starts a helper in its process group (as kind runs docker) and
    // waits for it.
    let script = format!(
        "sleep 120 & echo $! > '{}.tmp' && mv '{0}.tmp' '{0}'; wait",
        pidfile.display()
    );
    let tool = tokio::spawn(async move {
        run_tool(
            Path::new("/bin/sh"),
            &["-c".to_string(), script],
            Duration::from_secs(120),
            "kind create cluster",
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let grandchild: u32 = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile) {
            break p.trim().parse().expect("a pid");
        }
        assert!(Instant::now() < deadline, "the tool did not start");
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(alive(grandchild));

    // What Ctrl-C does first (then the cleanups run).
    let stopped = tokio::task::spawn_blocking(|| procs::stop_all(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(stopped >= 1, "no tool group was stopped");
    let result = tokio::time::timeout(Duration::from_secs(5), tool)
        .await
        .expect("the tool was stopped")
        .unwrap();
    let err = result.expect_err("a stopped tool fails");
    assert!(err.to_string().contains("kind create cluster"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(grandchild) {
        assert!(
            Instant::now() < deadline,
            "the tool's helper {grandchild} is still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `meshcheck --target kind` in `env`, with a `docker` first on PATH that records
/// its arguments (and says `context` is the current context's endpoint): the exit
/// code, stderr and the docker calls.
fn kind_run(env: &[(&str, &str)], context: &str) -> (i32, String, Vec<String>) {
    meshcheck_with_docker(&[], env, context)
}

/// `meshcheck ARGS --target kind --offline --junit F` as [`kind_run`] runs it.
fn meshcheck_with_docker(
    args: &[&str],
    env: &[(&str, &str)],
    context: &str,
) -> (i32, String, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let docker = dir.path().join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n[ \"$1\" = context ] && echo '{context}'\nexit 0\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .args(["--target", "kind", "--offline", "--junit"])
        .arg(dir.path().join("junit.xml"))
        .env("PATH", path)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env_remove("MESHCHECK_TARGET")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("KIND_EXPERIMENTAL_PROVIDER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let calls = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
    )
}

/// kind with podman (or nerdctl) as its provider: refused before any tool runs,
/// as a broken environment (exit 3), saying what to do.
#[test]
fn the_kind_target_refuses_podman_before_anything_runs() {
    let (code, stderr, calls) = kind_run(&[("KIND_EXPERIMENTAL_PROVIDER", "podman")], "");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("KIND_EXPERIMENTAL_PROVIDER=podman") && stderr.contains("Docker only"),
        "{stderr}"
    );
    assert!(calls.is_empty(), "{calls:?}");
}

/// An engine on another host (DOCKER_HOST, or the docker CLI's current context):
/// refused before anything is created (exit 3); only the context was read.
#[test]
fn the_kind_target_refuses_a_remote_docker_engine() {
    let (code, stderr, calls) = kind_run(&[("DOCKER_HOST", "ssh://ci@build-host.example")], "");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("another host (build-host.example,"),
        "{stderr}"
    );
    assert!(calls.is_empty(), "{calls:?}");

    let (code, stderr, calls) = kind_run(&[], "tcp://10.1.2.3:2376");
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("another host (10.1.2.3,"), "{stderr}");
    assert_eq!(
        calls,
        vec!["context inspect --format {{.Endpoints.docker.Host}}".to_string()]
    );
}

/// `meshcheck upgrade` on kind across more minors than the strategy supports: a
/// usage error (exit 2) before any tool runs; a canary may cross two.
#[test]
fn an_upgrade_across_too_many_minors_is_refused_before_anything_runs() {
    let upgrade = |strategy: &'static str, from: &'static str| {
        meshcheck_with_docker(
            &[
                "upgrade",
                "--from",
                from,
                "--to",
                "1.30.3",
                "--strategy",
                strategy,
            ],
            &[],
            "",
        )
    };
    let (code, stderr, calls) = upgrade("in-place", "1.28.3");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("Istio 1.28.3 -> 1.30.3 crosses 2 minor version(s)")
            && stderr.contains("--strategy canary may cross two"),
        "{stderr}"
    );
    assert!(calls.is_empty(), "{calls:?}");
    let (code, stderr, calls) = upgrade("canary", "1.27.0");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("crosses 3 minor version(s)"), "{stderr}");
    assert!(calls.is_empty(), "{calls:?}");
}
