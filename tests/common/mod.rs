//! Drives the real CLI: a small builder over `meshcheck` and fixture copies with edits.
#![allow(dead_code)]

pub mod oracle;
pub mod policy_case;
pub mod sandbox;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the shipped fixtures in a temp dir, to mutate.
pub struct FixtureCopy {
    pub dir: tempfile::TempDir,
    /// Compared with istiod when dropped (see `Drop`); off for a test that shows a
    /// disagreement on purpose.
    pub oracle_check: std::cell::Cell<bool>,
    /// The suites (their text) run on this fixture set: their requests are asked of
    /// istiod too when it is dropped.
    pub suites: std::cell::RefCell<Vec<String>>,
}

impl FixtureCopy {
    pub fn new() -> FixtureCopy {
        FixtureCopy::of("fixtures/ingress")
    }

    /// A copy of the shipped fixture set `dir` (relative to the repository; symlinked
    /// files are copied as their content).
    pub fn of(dir: &str) -> FixtureCopy {
        let dir_in_repo = root().join(dir);
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(dir_in_repo).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        FixtureCopy {
            dir,
            oracle_check: std::cell::Cell::new(true),
            suites: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// This fixture set disagrees with istiod on purpose: not compared when dropped.
    pub fn disagrees_with_istiod(&self) -> &Self {
        self.oracle_check.set(false);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A suite file for these fixtures, whose requests are compared with istiod's
    /// answers when the fixture set is dropped (with the ingress suite's).
    pub fn suite_file(&self, text: &str) -> tempfile::NamedTempFile {
        self.suites.borrow_mut().push(text.to_string());
        suite_file(text)
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path().join(file)).unwrap()
    }

    pub fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.path().join(file), text).unwrap();
        self
    }

    /// Replaces the first `from` by `to` in `file` (which must contain it).
    #[track_caller]
    pub fn replacen_first(&self, file: &str, from: &str, to: &str) -> &Self {
        let text = self.read(file);
        assert!(text.contains(from), "{file} does not contain {from:?}");
        self.write(file, &text.replacen(from, to, 1))
    }

    /// Replaces `from` by `to` in `file`; `from` must occur (a mutation that does not
    /// apply would make a negative test vacuous).
    #[track_caller]
    pub fn replace(&self, file: &str, from: &str, to: &str) -> &Self {
        let text = self.read(file);
        assert!(text.contains(from), "{file} does not contain {from:?}");
        self.write(file, &text.replace(from, to))
    }
}

/// Every fixture set a test builds is compared with istiod when the test ends
/// (oracle.rs), with the ingress suite's requests and those of every suite run on it;
/// a passing test whose fixtures the model gets wrong fails here.
impl Drop for FixtureCopy {
    fn drop(&mut self) {
        if self.oracle_check.get() && !std::thread::panicking() {
            oracle::assert_agrees(self.path());
            for text in self.suites.borrow().iter() {
                oracle::assert_agrees_with_suite(self.path(), text);
            }
        }
    }
}

/// The outcome of one CLI run.
#[derive(Debug)]
pub struct RunResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub passed: BTreeSet<String>,
    pub failed: BTreeSet<String>,
}

#[must_use]
pub struct Run {
    cmd: Command,
}

impl Run {
    pub fn new() -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcheck"));
        cmd.current_dir(root());
        cmd.env_remove("MESHCHECK_TARGET");
        Run { cmd }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Run {
        self.cmd.arg(a);
        self
    }

    pub fn fixtures(self, dir: &Path) -> Run {
        self.arg("--fixtures").arg(dir)
    }

    pub fn command(self) -> Command {
        self.cmd
    }

    /// Runs without adding `--junit` (for subcommands and callers that set it).
    pub fn run_plain(mut self) -> RunResult {
        parse(self.cmd.output().unwrap())
    }

    pub fn run(mut self) -> RunResult {
        let junit = tempfile::NamedTempFile::new().unwrap();
        self.cmd.arg("--junit").arg(junit.path());
        let out: Output = self.cmd.output().unwrap();
        parse(out)
    }
}

/// A suite file of its own (a fixtures directory holds manifests only).
pub fn suite_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// Runs the suite `text` on the fixtures of `f`, with a 3 s consistency budget.
pub fn run_suite(f: &FixtureCopy, text: &str) -> RunResult {
    let suite = f.suite_file(text);
    Run::new()
        .arg("--suite")
        .arg(suite.path())
        .fixtures(f.path())
        .arg("--budget")
        .arg("3s")
        .run()
}

pub fn parse(out: Output) -> RunResult {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let mut passed = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for line in stdout.lines() {
        // `test [http]         routing::atlas-ui ... ok`
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = if rest.starts_with('[') {
            rest.split_once(']')
                .map(|(_, r)| r.trim_start())
                .unwrap_or(rest)
        } else {
            rest
        };
        if let Some((name, result)) = rest.split_once(" ... ") {
            match result.trim() {
                "ok" => passed.insert(name.trim().to_string()),
                "FAILED" => failed.insert(name.trim().to_string()),
                _ => false,
            };
        }
    }
    RunResult {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
        passed,
        failed,
    }
}

/// The static testcases of the ingress suite (analyses, then one simulation per
/// traffic check).
pub const STATIC_CHECKS: &[&str] = &[
    "static::fields",
    "static::workload-selectors",
    "static::injection",
    "static::gateway-selector",
    "static::exposed-ports",
    "static::gateway-references",
    "static::gateway-hosts",
    "static::destination-hosts",
    "static::subsets",
    "static::weights",
    "static::route-conflicts",
    "static::gateway-credentials",
    "static::mtls",
    "static::rewrites",
    "static::gateway-api-status",
    "static::authorization",
    "static::simulate::routing::atlas-ui",
    "static::simulate::routing::authz",
    "static::simulate::routing::atlas-rest",
    "static::simulate::routing::unmatched-path-404",
    "static::simulate::routing::atlas-rest-rewrite",
    "static::simulate::routing::atlas-rest-root-rewrite",
    "static::simulate::subsets::header-pins-v2",
    "static::simulate::subsets::split-90-10",
    "static::simulate::security::no-other-path::as-written",
    "static::simulate::security::no-other-path::dot-segment",
    "static::simulate::security::no-other-path::dot-dot-segment",
    "static::simulate::security::no-other-path::encoded-dot",
    "static::simulate::security::no-other-path::percent-encoded-letter",
    "static::simulate::security::no-other-path::double-slash",
    "static::simulate::security::no-other-path::upper-case",
    "static::simulate::security::no-other-path::trailing-slash",
    "static::simulate::security::no-other-path::semicolon",
    "static::simulate::security::no-other-path::fragment",
    "static::simulate::security::no-path-beside-a-route::as-written",
    "static::simulate::security::no-path-beside-a-route::dot-segment",
    "static::simulate::security::no-path-beside-a-route::dot-dot-segment",
    "static::simulate::security::no-path-beside-a-route::encoded-dot",
    "static::simulate::security::no-path-beside-a-route::percent-encoded-letter",
    "static::simulate::security::no-path-beside-a-route::double-slash",
    "static::simulate::security::no-path-beside-a-route::upper-case",
    "static::simulate::security::no-path-beside-a-route::trailing-slash",
    "static::simulate::security::no-path-beside-a-route::semicolon",
    "static::simulate::security::no-path-beside-a-route::fragment",
];

/// `static::simulate::<check>` for each of `checks`.
pub fn simulated(checks: &[&str]) -> Vec<String> {
    checks
        .iter()
        .map(|c| format!("static::simulate::{c}"))
        .collect()
}

pub const ALL_CHECKS: &[&str] = &[
    "routing::atlas-ui",
    "routing::authz",
    "routing::atlas-rest",
    "routing::unmatched-path-404",
    "routing::atlas-rest-rewrite",
    "routing::atlas-rest-root-rewrite",
    "subsets::header-pins-v2",
    "subsets::split-90-10",
    "ports::only-http-nodeport",
    "sidecars::injected",
    "sidecars::mtls-at-backends",
    "security::no-other-path::as-written",
    "security::no-other-path::dot-segment",
    "security::no-other-path::dot-dot-segment",
    "security::no-other-path::encoded-dot",
    "security::no-other-path::percent-encoded-letter",
    "security::no-other-path::double-slash",
    "security::no-other-path::upper-case",
    "security::no-other-path::trailing-slash",
    "security::no-other-path::semicolon",
    "security::no-other-path::fragment",
    "security::no-path-beside-a-route::as-written",
    "security::no-path-beside-a-route::dot-segment",
    "security::no-path-beside-a-route::dot-dot-segment",
    "security::no-path-beside-a-route::encoded-dot",
    "security::no-path-beside-a-route::percent-encoded-letter",
    "security::no-path-beside-a-route::double-slash",
    "security::no-path-beside-a-route::upper-case",
    "security::no-path-beside-a-route::trailing-slash",
    "security::no-path-beside-a-route::semicolon",
    "security::no-path-beside-a-route::fragment",
    "security::mtls-strict",
];

/// The ingress suite's `security` checks on paths (the attack spellings).
pub fn security_checks() -> Vec<&'static str> {
    ALL_CHECKS
        .iter()
        .copied()
        .filter(|c| c.starts_with("security::no-"))
        .collect()
}

/// Asserts the run failed exactly `want_failed` (traffic and static testcases) and
/// passed every other one.
#[track_caller]
pub fn assert_fails_exactly<S: AsRef<str>>(r: &RunResult, want_failed: &[S]) {
    let want: BTreeSet<String> = want_failed.iter().map(|s| s.as_ref().to_string()).collect();
    let all: BTreeSet<String> = ALL_CHECKS
        .iter()
        .chain(STATIC_CHECKS)
        .map(|s| s.to_string())
        .collect();
    let want_passed: BTreeSet<String> = all.difference(&want).cloned().collect();
    assert_eq!(
        r.failed, want,
        "failed checks differ\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout, r.stderr
    );
    assert_eq!(
        r.passed, want_passed,
        "passed checks differ\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout, r.stderr
    );
    let code = if want.is_empty() { 0 } else { 1 };
    assert_eq!(
        r.code, code,
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout, r.stderr
    );
}

/// Pids of live processes (not zombies, not this one) whose command line contains
/// `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'));
        if !zombie
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// The shipped ingress fixtures on a local target started in this process, with the
/// ingress suite and a runtime to run its checks on (for tests that act on the target
/// between checks: kill a pod's app or sidecar).
pub struct LiveIngress {
    pub target: std::sync::Arc<meshcheck::targets::local::LocalTarget>,
    pub suite: meshcheck::suite::Suite,
    pub ctx: meshcheck::checks::Ctx,
    pub rt: tokio::runtime::Runtime,
}

impl LiveIngress {
    pub fn start(timeouts: meshcheck::timeouts::Timeouts) -> LiveIngress {
        LiveIngress::start_with(
            &root().join("fixtures/ingress"),
            &root().join("suites/ingress.yaml"),
            timeouts,
        )
    }

    /// The fixtures in `dir` with the suite at `suite`.
    pub fn start_with(
        dir: &Path,
        suite: &Path,
        timeouts: meshcheck::timeouts::Timeouts,
    ) -> LiveIngress {
        use meshcheck::targets::local::{LocalOptions, LocalTarget};
        use meshcheck::targets::Target;
        let fx = meshcheck::fixtures::load_dir(dir).unwrap();
        let opts = LocalOptions::new(vec![env!("CARGO_BIN_EXE_meshcheck-stub").into()]);
        let mesh = meshcheck::istio::Mesh::build(&fx);
        let target = std::sync::Arc::new(LocalTarget::start(mesh, &opts).unwrap());
        let suite = meshcheck::suite::load(suite).unwrap();
        let dyn_target: std::sync::Arc<dyn Target> = target.clone();
        let ctx = meshcheck::checks::Ctx::new(dyn_target, timeouts, 80);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        LiveIngress {
            target,
            suite,
            ctx,
            rt,
        }
    }

    /// Runs the suite's check `name` (e.g. `routing::atlas-ui`) once.
    pub fn run(&self, name: &str) -> meshcheck::checks::Outcome {
        self.rt
            .block_on(meshcheck::checks::run(&self.ctx, self.check(name)))
    }

    /// The suite's check `name`.
    pub fn check(&self, name: &str) -> &meshcheck::suite::CheckSpec {
        self.suite
            .checks
            .iter()
            .find(|c| c.full_name() == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    }
}

/// Lines from `rx` until `done` holds for all of them so far (at most `within`):
/// what was read. Panics with `what` and the lines when the deadline passes first.
pub fn read_until(
    rx: &std::sync::mpsc::Receiver<String>,
    within: std::time::Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + within;
    let mut seen = String::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{what} within {within:?}:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    seen
}

/// Sends SIGINT (Ctrl-C) to `child` and waits for it to exit, at most `within`: its
/// status and how long the exit took. Panics with `what` when it does not exit.
pub fn ctrl_c(
    child: &mut std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> (std::process::ExitStatus, std::time::Duration) {
    let sent = std::time::Instant::now();
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, sent.elapsed());
        }
        assert!(sent.elapsed() < within, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The traffic checks (`group::name`) the suite `text` declares.
pub fn declared_checks(text: &str) -> BTreeSet<String> {
    let file = suite_file(text);
    let suite = meshcheck::suite::load(file.path()).unwrap();
    suite.checks.iter().map(|c| c.full_name()).collect()
}

/// Judges run `r` of the suite `text`: it failed exactly `checks` (each live and in
/// the simulation), `live_only` (live only: what the static judgement does not cover,
/// said where used) and `static_findings`; every other check of the suite passed, live
/// and simulated; the exit code says so; nothing was reported as not modelled.
#[track_caller]
pub fn assert_suite_fails_exactly(
    r: &RunResult,
    text: &str,
    checks: &[&str],
    live_only: &[&str],
    static_findings: &[&str],
) {
    let declared = declared_checks(text);
    for c in checks.iter().chain(live_only) {
        assert!(declared.contains(*c), "the suite has no check {c}");
    }
    let want: BTreeSet<String> = checks
        .iter()
        .flat_map(|c| [c.to_string(), format!("static::simulate::{c}")])
        .chain(live_only.iter().map(|c| c.to_string()))
        .chain(static_findings.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(
        r.failed, want,
        "failed checks differ\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout, r.stderr
    );
    for c in &declared {
        for name in [c.clone(), format!("static::simulate::{c}")] {
            assert!(
                want.contains(&name) || r.passed.contains(&name),
                "{name} did not pass\n--- stdout\n{}\n--- stderr\n{}",
                r.stdout,
                r.stderr
            );
        }
    }
    assert_eq!(
        r.code,
        i32::from(!want.is_empty()),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        !r.stdout.contains("not modelled") && !r.stderr.contains("not modelled"),
        "something is not modelled\n{}\n{}",
        r.stdout,
        r.stderr
    );
}
