//! `meshcheck upgrade --target local`: istiod A's configuration on real Envoys, B's
//! pushed under traffic, then every proxy restarted; three phases of the suite, the
//! prober's continuity, the configuration difference, one JUnit report. A restart that
//! does not drain must fail `upgrade::traffic-continuity` with the errors counted.
//!
//! Needs two Istio oracles: the pinned one (`$MESHCHECK_TEST_ORACLE`, as every
//! differential test) and the next minor (`$MESHCHECK_TEST_ORACLE_NEXT`, else built by
//! `scripts/istio-oracle.sh 1.31` when Go is installed). Without them the tests say so
//! on stderr and do not run.

mod common;
use common::*;
use meshcheck::report::compare::{read, Case, Verdict};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Upgrades run one at a time (each restarts every proxy of its run; the /dev/shm
/// check below must see only its own).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The next minor's oracle, or why there is none.
fn next_oracle() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MESHCHECK_TEST_ORACLE_NEXT").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/istio-oracle.sh"))
        .arg("1.31")
        .output()
        .map_err(|e| format!("cannot run scripts/istio-oracle.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/istio-oracle.sh 1.31 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// (from, to) oracle paths, or None after saying why on stderr.
fn oracles() -> Option<(PathBuf, PathBuf)> {
    let from = match common::oracle::oracle() {
        Ok(p) => p.to_path_buf(),
        Err(why) => {
            eprintln!("note: upgrade test NOT run: {why}");
            return None;
        }
    };
    match next_oracle() {
        Ok(to) => Some((from, to)),
        Err(why) => {
            eprintln!("note: upgrade test NOT run: {why}");
            None
        }
    }
}

fn shared_memory() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("envoy_shared_memory_"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn upgrade(from: &Path, to: &Path, junit: &Path, extra: &[&str]) -> RunResult {
    let mut run = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("local")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .arg("--junit")
        .arg(junit);
    for a in extra {
        run = run.arg(a);
    }
    run.run_plain()
}

/// `testsuite/classname::name` -> case.
fn cases(junit: &Path) -> BTreeMap<String, Case> {
    read(junit)
        .unwrap()
        .into_iter()
        .map(|c| (format!("{}/{}::{}", c.testsuite, c.classname, c.name), c))
        .collect()
}

#[test]
fn upgrade_to_the_next_minor_runs_three_phases_without_a_traffic_error() {
    let Some((from, to)) = oracles() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let shm_before = shared_memory();
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let r = upgrade(&from, &to, &junit, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // The configuration difference between the versions, in words.
    assert!(
        r.stdout
            .contains("configuration difference, istiod 1.30.3 -> istiod 1.31.0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("  gateway istio-ingress/"),
        "{}",
        r.stdout
    );
    // The steps, in order.
    let order = [
        "upgrade: bringing the target up on Istio",
        "upgrade: phase before",
        "upgrade: prober:",
        "upgrade: control plane to the new version: done",
        "upgrade: phase skew",
        "upgrade: restarting every proxy onto the new version: done",
        "upgrade: phase after",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|s| {
            r.stderr
                .find(s)
                .unwrap_or_else(|| panic!("{s}\n{}", r.stderr))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "steps out of order:\n{}",
        r.stderr
    );
    // One testsuite per phase and the upgrade's own.
    let c = cases(&junit);
    let suites: std::collections::BTreeSet<&str> =
        c.values().map(|x| x.testsuite.as_str()).collect();
    assert_eq!(
        suites.into_iter().collect::<Vec<_>>(),
        ["after", "before", "skew", "upgrade"]
    );
    for phase in ["before", "skew", "after"] {
        assert!(
            c.contains_key(&format!("{phase}/routing::atlas-ui")),
            "{phase} ran the suite: {c:?}"
        );
    }
    assert!(c.keys().any(|k| k.starts_with("before/static::")));
    assert!(!c.keys().any(|k| k.starts_with("skew/static::")));
    let continuity = &c["upgrade/upgrade::traffic-continuity"];
    assert_eq!(continuity.verdict, Verdict::Passed, "{continuity:?}");
    for name in [
        "precheck",
        "behaviour before->skew",
        "behaviour skew->after",
    ] {
        let k = format!("upgrade/upgrade::{name}");
        assert_eq!(c[&k].verdict, Verdict::Passed, "{k}: {:?}", c[&k]);
    }
    assert!(c.values().all(|x| x.verdict == Verdict::Passed));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("0 error(s) (budget 0)"),
        "continuity counts errors against the budget"
    );
    assert!(
        xml.contains("configuration difference, istiod 1.30.3"),
        "the difference is in the upgrade testsuite's system-out"
    );
    assert_eq!(
        shared_memory(),
        shm_before,
        "hot restart's shared memory is removed"
    );
}

#[test]
fn a_restart_that_does_not_drain_fails_traffic_continuity_with_the_errors_counted() {
    let Some((from, to)) = oracles() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let r = upgrade(&from, &to, &junit, &["--test-restart-without-drain"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let c = cases(&junit);
    let continuity = &c["upgrade/upgrade::traffic-continuity"];
    assert_eq!(continuity.verdict, Verdict::Failed, "{continuity:?}");
    // `N traffic error(s) during the upgrade, over the budget of 0 (M requests; ...)`
    let errors: usize = continuity
        .message
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", continuity.message));
    assert!(errors > 0, "{}", continuity.message);
    assert!(
        continuity
            .message
            .contains("traffic error(s) during the upgrade, over the budget of 0"),
        "{}",
        continuity.message
    );
    // The phases themselves still pass: only the transition broke traffic.
    assert!(c
        .iter()
        .filter(|(k, _)| !k.starts_with("upgrade/"))
        .all(|(_, x)| x.verdict == Verdict::Passed));

    // The same transition within a budget that covers its errors passes.
    let junit = d.path().join("budget.xml");
    let r = upgrade(
        &from,
        &to,
        &junit,
        &["--test-restart-without-drain", "--error-budget", "100000"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let c = cases(&junit);
    assert_eq!(
        c["upgrade/upgrade::traffic-continuity"].verdict,
        Verdict::Passed
    );
}

#[test]
fn a_version_whose_istiod_cannot_be_built_stops_before_anything_starts() {
    if std::process::Command::new("go")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("note: upgrade test NOT run: Go is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let r = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("local")
        .arg("--from")
        .arg("1.29.6")
        .arg("--to")
        .arg("1.30.3")
        .arg("--junit")
        .arg(&junit)
        .run_plain();
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("1.29.6"), "{}", r.stderr);
    assert!(!r.stderr.contains("local target: ready"), "{}", r.stderr);
    assert!(!junit.exists());
}

#[test]
fn ctrl_c_during_an_upgrade_leaves_no_process_workdir_or_shared_memory() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;
    let Some((from, to)) = oracles() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let shm_before = shared_memory();
    let d = tempfile::tempdir().unwrap();
    let mut child = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("local")
        .arg("--from")
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .arg("--junit")
        .arg(d.path().join("upgrade.xml"))
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Interrupt once every proxy is hot-restartable and the prober runs: in `skew`.
    let seen = read_until(
        &rx,
        Duration::from_secs(120),
        "never reached phase skew",
        |s| s.contains("upgrade: phase skew"),
    );
    let wd = seen
        .lines()
        .find_map(|l| l.split("workdir ").nth(1))
        .expect("the local target names its workdir")
        .trim()
        .to_string();
    assert!(!processes_with(&wd).is_empty(), "Envoys run mid-upgrade");
    assert_ne!(
        shared_memory(),
        shm_before,
        "hot-restartable Envoys hold shared memory"
    );
    let (status, _) = ctrl_c(&mut child, Duration::from_secs(15), "no exit after Ctrl-C");
    assert_eq!(status.code(), Some(130));
    assert!(processes_with(&wd).is_empty(), "Envoys left after Ctrl-C");
    assert!(!Path::new(&wd).exists(), "workdir {wd} left after Ctrl-C");
    assert_eq!(
        shared_memory(),
        shm_before,
        "shared memory left after Ctrl-C"
    );
}

#[test]
fn options_of_another_target_are_refused_before_anything_starts() {
    let r = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("local")
        .arg("--from")
        .arg("1.30.3")
        .arg("--to")
        .arg("1.31")
        .arg("--upgrade-cmd")
        .arg("true")
        .run_plain();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("--upgrade-cmd"), "{}", r.stderr);
    assert!(!r.stderr.contains("local target:"), "{}", r.stderr);
}
