//! `meshcheck probe`: steady traffic through the local target's ingress, counted per
//! route; errors (answers without the check's expected status) fail the route and the
//! probe; a backend killed mid-probe shows as errors and a gap; Ctrl-C ends the probe
//! with its report and leaves nothing running.

mod common;
use common::*;
use meshcheck::report::compare::{read, Case, Verdict};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The ingress suite's http checks and its distribution by version: the routes a
/// probe sends to.
const ROUTES: &[&str] = &[
    "routing::atlas-ui",
    "routing::authz",
    "routing::atlas-rest",
    "routing::unmatched-path-404",
    "routing::atlas-rest-rewrite",
    "routing::atlas-rest-root-rewrite",
    "subsets::header-pins-v2",
    "subsets::split-90-10",
];

fn probe(fixtures: Option<&Path>, duration: &str, junit: &Path) -> RunResult {
    let mut run = Run::new()
        .arg("probe")
        .arg("--target")
        .arg("local")
        .arg("--duration")
        .arg(duration)
        .arg("--junit")
        .arg(junit);
    if let Some(f) = fixtures {
        run = run.arg("--fixtures").arg(f);
    }
    run.run_plain()
}

/// route -> (requests, errors) from the end-of-probe table.
fn table(stdout: &str) -> BTreeMap<String, (usize, usize)> {
    stdout
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() >= 3 && ROUTES.contains(&w[0]) {
                Some((w[0].to_string(), (w[1].parse().ok()?, w[2].parse().ok()?)))
            } else {
                None
            }
        })
        .collect()
}

/// testcase name -> verdict of the probe's JUnit report (read back with compare's
/// reader).
fn junit_verdicts(junit: &Path) -> BTreeMap<String, Case> {
    read(junit)
        .unwrap()
        .into_iter()
        .inspect(|c| {
            assert_eq!(
                (c.testsuite.as_str(), c.classname.as_str()),
                ("probe", "probe")
            )
        })
        .map(|c| (c.name.clone(), c))
        .collect()
}

#[test]
fn probe_on_the_shipped_fixtures_reports_requests_no_error_and_the_rate() {
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("probe.xml");
    let r = probe(None, "3s", &junit);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let head = r
        .stdout
        .lines()
        .find(|l| l.starts_with("probe: "))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    // `probe: 150 requests in 3.0 s, 50.0/s (asked 50/s), 0 error(s)`
    let requests: usize = head["probe: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // At most 3 s × 50/s; a loaded machine may skip ticks, never burst.
    assert!((60..=155).contains(&requests), "about 3 s × 50/s: {head}");
    assert!(head.contains(" in 3.0 s, "), "{head}");
    assert!(head.contains("(asked 50/s), 0 error(s)"), "{head}");
    let rate: f64 = head
        .split(", ")
        .nth(1)
        .unwrap()
        .trim_end_matches("/s (asked 50/s)")
        .parse()
        .unwrap();
    assert!((20.0..=51.0).contains(&rate), "{head}");
    assert!((rate - requests as f64 / 3.0).abs() < 1.0, "{head}");
    let t = table(&r.stdout);
    assert_eq!(
        t.keys().map(String::as_str).collect::<Vec<_>>().len(),
        ROUTES.len(),
        "{}",
        r.stdout
    );
    for (route, (n, errors)) in &t {
        assert!(*n >= 8, "{route}: {n} requests");
        assert_eq!(*errors, 0, "{route}\n{}", r.stdout);
    }
    assert_eq!(t.values().map(|v| v.0).sum::<usize>(), requests);
    // Plain progress lines on a non-terminal stderr, ending with the final counts.
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("probe 3.0s: ") && l.contains("routing::atlas-ui ")),
        "{}",
        r.stderr
    );
    let cases = junit_verdicts(&junit);
    let mut names: Vec<&str> = ROUTES.to_vec();
    names.push("summary");
    names.sort();
    assert_eq!(cases.keys().map(String::as_str).collect::<Vec<_>>(), names);
    assert!(
        cases.values().all(|c| c.verdict == Verdict::Passed),
        "{cases:?}"
    );
}

#[test]
fn a_subset_matching_no_pod_makes_errors_that_are_counted_and_exit_1() {
    let f = FixtureCopy::new();
    f.replace(
        "50-destinationrules.yaml",
        "  - name: v2\n    labels:\n      version: v2\n",
        "  - name: v2\n    labels:\n      version: v3\n",
    );
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("probe.xml");
    let r = probe(Some(f.path()), "2s", &junit);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let t = table(&r.stdout);
    // Pinned to v2: every request is answered 503.
    let (n, errors) = t["subsets::header-pins-v2"];
    assert!(n > 0 && errors == n, "{}", r.stdout);
    assert!(r.stdout.contains("× status 503"), "{}", r.stdout);
    // Untouched routes, and the route expected to answer 404, have no error.
    for route in [
        "routing::atlas-ui",
        "routing::authz",
        "routing::unmatched-path-404",
    ] {
        assert_eq!(t[route].1, 0, "{route}\n{}", r.stdout);
    }
    let cases = junit_verdicts(&junit);
    let pins = &cases["subsets::header-pins-v2"];
    assert_eq!(pins.verdict, Verdict::Failed);
    assert!(
        pins.message
            .starts_with(&format!("{n} of {n} requests failed, first at ")),
        "{}",
        pins.message
    );
    assert!(
        pins.message.contains("expected status 200, got 503"),
        "{}",
        pins.message
    );
    assert_eq!(cases["routing::atlas-ui"].verdict, Verdict::Passed);
    assert_eq!(cases["summary"].verdict, Verdict::Failed);
}

#[test]
fn a_backend_killed_mid_probe_shows_as_errors_and_a_gap_on_its_route_only() {
    use meshcheck::probe::{self, Options, Quiet};

    let live = LiveIngress::start(Default::default());
    let (target, ctx, rt) = (&live.target, &live.ctx, &live.rt);
    let routes = probe::routes(&live.suite);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let opts = Options {
        duration: Duration::from_secs(3),
        rate: 70.0,
        drain: Duration::from_secs(11),
    };
    let pid = target.app_pid("atlas-ui").unwrap();
    let killed_at = Duration::from_secs(1);
    let mut quiet = Quiet;
    let report = rt.block_on(async {
        let aims = probe::aim(ctx, &routes).unwrap();
        let probing = probe::run(&aims, &routes, &opts, stop, &mut quiet);
        let kill = async {
            tokio::time::sleep(killed_at).await;
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        };
        let (report, ()) = tokio::join!(probing, kill);
        report
    });
    let by_name = |n: &str| report.routes.iter().find(|r| r.name == n).unwrap();
    let ui = by_name("routing::atlas-ui");
    assert!(ui.requests >= 25, "{ui:?}");
    assert!(
        ui.errors > 0 && ui.errors < ui.requests,
        "answers before the kill, errors after: {ui:?}"
    );
    assert!(ui.kinds.contains_key("status 503"), "{ui:?}");
    // No success after the kill: the gap runs from about the kill to the end.
    let gap = ui.longest_gap;
    assert!(
        gap.from <= killed_at + Duration::from_millis(300),
        "{gap:?}"
    );
    assert!(gap.to >= Duration::from_secs(3), "{gap:?}");
    for r in report
        .routes
        .iter()
        .filter(|r| r.name != "routing::atlas-ui")
    {
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.longest_gap.duration() < Duration::from_secs(1), "{r:?}");
    }
    assert!(!report.passed());
    assert_eq!(report.samples.len(), report.requests());
    let workdir = target.workdir().to_path_buf();
    let LiveIngress { target, ctx, .. } = live;
    drop(ctx);
    drop(target);
    assert!(!workdir.exists());
}

#[test]
fn ctrl_c_ends_the_probe_with_its_report_and_leaves_nothing_running() {
    let d = tempfile::tempdir().unwrap();
    let junit = d.path().join("probe.xml");
    let mut child = Run::new()
        .arg("probe")
        .arg("--target")
        .arg("local")
        .arg("--duration")
        .arg("120s")
        .arg("--junit")
        .arg(&junit)
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    // Wait for the first progress line (every route has had requests by then).
    let seen = read_until(&rx, Duration::from_secs(60), "no progress line", |s| {
        s.lines()
            .any(|l| l.starts_with("probe ") && l.contains(" requests, "))
    });
    let workdir = seen
        .lines()
        .find_map(|l| l.split("workdir ").nth(1))
        .unwrap_or_else(|| panic!("{seen}"))
        .trim()
        .to_string();
    assert!(!processes_with(&workdir).is_empty(), "Envoys run mid-probe");
    let (status, _) = ctrl_c(&mut child, Duration::from_secs(15), "probe did not stop");
    let stdout = out.join().unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}\n{seen}");
    assert!(
        stdout.contains("0 error(s) (stopped by Ctrl-C)"),
        "{stdout}"
    );
    let cases = junit_verdicts(&junit);
    assert_eq!(cases.len(), ROUTES.len() + 1);
    assert!(
        cases.values().all(|c| c.verdict == Verdict::Passed),
        "{cases:?}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<property name="probe.interrupted" value="true"/>"#),
        "{xml}"
    );
    assert!(
        processes_with(&workdir).is_empty(),
        "Envoys left after Ctrl-C"
    );
    assert!(!Path::new(&workdir).exists(), "workdir {workdir} left");
}
