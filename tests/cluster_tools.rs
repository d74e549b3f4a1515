//! External tools of the cluster targets (kind, istioctl, docker) as Ctrl-C meets
//! them: the interrupt path stops a running tool's whole process group before the
//! cleanups run (so `kind create cluster` does not go on creating a node while
//! `kind delete cluster` runs). Its own test binary: `procs::stop_all` stops every
//! process of the test process.

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
