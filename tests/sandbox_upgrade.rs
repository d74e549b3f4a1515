//! `meshcheck upgrade --target sandbox --from 1.30.3 --to 1.31`: the real
//! `istioctl x precheck` and `istioctl upgrade` of 1.31 (in place), or 1.31 installed
//! as a revision with the namespaces relabelled and 1.30.3 uninstalled (canary), the
//! workloads restarted onto 1.31's pilot-agent: the three phases pass with no traffic
//! error; a restart that force-deletes pods (nothing drains) fails continuity.

mod common;
use common::sandbox::available;
use common::*;
use meshcheck::report::compare::{read, Case, Verdict};
use std::collections::BTreeMap;
use std::path::Path;

/// One upgrade at a time: each brings up a whole control plane and two istiods, and
/// two at once on a 2-core machine starve each other's proxies (traffic errors that
/// say nothing about the upgrade).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn upgrade(junit: &Path, extra: &[&str]) -> RunResult {
    let mut run = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("sandbox")
        .arg("--from")
        .arg("1.30.3")
        .arg("--to")
        .arg("1.31")
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

/// The run passed every phase and the upgrade testsuite, with 0 traffic errors, and
/// every injected pod ended on 1.31's proxy.
fn assert_clean_upgrade(r: &RunResult, junit: &Path) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let c = cases(junit);
    for phase in ["before", "skew", "after"] {
        assert!(
            c.keys().any(|k| k.starts_with(&format!("{phase}/"))),
            "no {phase} phase in {:?}",
            c.keys().collect::<Vec<_>>()
        );
    }
    assert!(c.values().all(|x| x.verdict == Verdict::Passed), "{c:#?}");
    assert_eq!(
        c["upgrade/upgrade::traffic-continuity"].verdict,
        Verdict::Passed
    );
    let probe = r
        .stdout
        .lines()
        .find(|l| l.starts_with("probe: "))
        .unwrap_or_default();
    assert!(probe.ends_with(", 0 error(s)"), "{probe}\n{}", r.stdout);
    assert!(r.stderr.contains("runs Istio 1.31's proxy"), "{}", r.stderr);
    assert!(
        r.stderr.contains("istioctl x precheck --from-version 1.30"),
        "{}",
        r.stderr
    );
}

#[test]
fn in_place_upgrade_to_1_31_with_istioctl_upgrade_keeps_traffic_flowing() {
    if !available("the sandbox in-place upgrade") {
        return;
    }
    let _one = one_at_a_time();
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let r = upgrade(&junit, &[]);
    assert_clean_upgrade(&r, &junit);
    assert!(r.stderr.contains("istioctl upgrade -y"), "{}", r.stderr);
}

#[test]
fn canary_upgrade_installs_a_revision_relabels_and_removes_the_old_one() {
    if !available("the sandbox canary upgrade") {
        return;
    }
    let _one = one_at_a_time();
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let r = upgrade(&junit, &["--strategy", "canary"]);
    assert_clean_upgrade(&r, &junit);
    for line in [
        "--revision 1-31",
        "Namespace atlas: istio.io/rev=1-31",
        "Namespace istio-ingress: istio.io/rev=1-31",
        "istioctl uninstall --revision default -y",
    ] {
        assert!(r.stderr.contains(line), "{line}\n{}", r.stderr);
    }
}

#[test]
fn a_restart_that_does_not_drain_fails_traffic_continuity() {
    if !available("the sandbox non-draining upgrade") {
        return;
    }
    let _one = one_at_a_time();
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let r = upgrade(&junit, &["--test-restart-without-drain"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let c = cases(&junit);
    let continuity = &c["upgrade/upgrade::traffic-continuity"];
    assert_eq!(continuity.verdict, Verdict::Failed, "{continuity:?}");
    assert!(
        continuity
            .message
            .contains("traffic error(s) during the upgrade, over the budget of 0"),
        "{}",
        continuity.message
    );
    assert!(
        r.stderr.contains("pods deleted at once (no drain)"),
        "{}",
        r.stderr
    );
}

/// Ctrl-C while the canary restarts the proxies: the step is abandoned, the
/// namespaces get their injection labels back from the real API server (as it
/// answers the patch), the sandbox stops, and the run exits 130 with its report.
#[test]
fn ctrl_c_during_a_canary_puts_the_namespace_labels_back() {
    if !available("the sandbox canary interrupted") {
        return;
    }
    let _one = one_at_a_time();
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("upgrade.xml");
    let mut child = Run::new()
        .arg("upgrade")
        .arg("--target")
        .arg("sandbox")
        .arg("--from")
        .arg("1.30.3")
        .arg("--to")
        .arg("1.31")
        .arg("--strategy")
        .arg("canary")
        .arg("--junit")
        .arg(&junit)
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = read_until(
        &rx,
        std::time::Duration::from_secs(900),
        "the canary's proxy restarts",
        |s| {
            s.contains("Namespace istio-ingress: istio.io/rev=1-31")
                && s.contains("restarting every proxy onto the new version ...")
        },
    );
    let (status, _) = ctrl_c(
        &mut child,
        std::time::Duration::from_secs(120),
        "the run exits after Ctrl-C",
    );
    seen.extend(rx.try_iter().map(|l| l + "\n"));
    assert_eq!(status.code(), Some(130), "{seen}");
    for line in [
        "interrupted (Ctrl-C): the step was abandoned",
        "Namespace atlas: injection labels restored (istio-injection=enabled)",
        "Namespace istio-ingress: injection labels restored (none)",
    ] {
        assert!(seen.contains(line), "{line}\n{seen}");
    }
    assert!(junit.exists(), "the report is written\n{seen}");
    // Nothing of this run's sandbox is left (other sandboxes may run on the machine).
    let xml = std::fs::read_to_string(&junit).unwrap();
    let key = "name=\"sandbox.dir\" value=\"";
    let dir = xml[xml.find(key).expect("sandbox.dir property") + key.len()..]
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert!(processes_with(&dir).is_empty(), "{dir}: {seen}");
    assert!(!Path::new(&dir).exists(), "{dir} is left behind");
}
