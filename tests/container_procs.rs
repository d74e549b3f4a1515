//! The sandbox's containers as processes (procs): a container's other processes
//! (pilot-agent's Envoy) end with its first one, as a runtime ends a container's PID
//! namespace; and a container being stopped (its grace period running) is still
//! stopped, children included, when meshcheck stops everything (Ctrl-C, the end of
//! the run). Its own test binary: `procs::stop_all` stops every process of the test
//! process.

use meshcheck::targets::local::procs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
    }
}

/// Waits until `done` holds, at most `within`.
fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a container whose first process (`sh`) starts a child (`sleep`) that
/// outlives it unless killed; returns (owner, the child's pid).
fn container(dir: &Path, script: &str) -> (u64, u32) {
    let owner = procs::new_owner();
    let pidfile = dir.join("child.pid");
    let script = script.replace("PIDFILE", &pidfile.display().to_string());
    procs::spawn(
        owner,
        "c",
        Command::new("sh").args(["-c", &script]),
        &dir.join("c.log"),
    )
    .unwrap();
    let mut child = 0;
    wait_until(
        Duration::from_secs(10),
        "the container started its child",
        || {
            child = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            child != 0
        },
    );
    (owner, child)
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "needs Linux (reads /proc)")]
fn a_containers_children_end_with_its_first_process() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, child) = container(
        dir.path(),
        "sleep 300 & echo $! > PIDFILE; sleep 0.2; exit 0",
    );
    assert!(alive(child));
    let mut reaped = Vec::new();
    wait_until(
        Duration::from_secs(10),
        "the container's first process is reaped",
        || {
            reaped.extend(procs::reap_exited(owner));
            !reaped.is_empty()
        },
    );
    assert_eq!(reaped[0].0, "c");
    wait_until(Duration::from_secs(5), "its child is gone too", || {
        !alive(child)
    });
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "needs Linux (reads /proc)")]
fn a_container_in_its_grace_period_is_stopped_with_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    // Ignores SIGTERM: only the end of its 60 s grace period, or meshcheck stopping
    // everything, ends it.
    let (owner, child) = container(
        dir.path(),
        "trap '' TERM; sleep 300 & echo $! > PIDFILE; wait; sleep 300",
    );
    let stopping =
        std::thread::spawn(move || procs::stop_container(owner, "c", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    procs::stop_all(Duration::from_millis(500));
    wait_until(
        Duration::from_secs(10),
        "the child is stopped by stop_all",
        || !alive(child),
    );
    assert!(stopping.join().unwrap());
    assert!(started.elapsed() < Duration::from_secs(10));
}
