//! The Istio oracle in the tests: every fixture set a test builds (a `FixtureCopy`) is
//! compared with istiod's own config generation for the pinned Istio when the test
//! ends, and must agree with the model (or be listed in [`KNOWN_DIFFERENCES`]).
//!
//! The oracle is `$MESHCHECK_TEST_ORACLE` (a built binary; `.ci/run` sets it; `off`
//! turns the comparisons off), else
//! `scripts/istio-oracle.sh` builds or finds it when Go is installed. Without Go the
//! comparison cannot run: that is said once on stderr (past libtest's capture) and the
//! tests that only compare pass without it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Differences between the model and istiod that are understood and accepted, each
/// with its reason: (code, a text the finding contains, why). The README lists them.
pub const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[];

/// The oracle binary, or why there is none.
pub fn oracle() -> Result<&'static Path, &'static str> {
    static ORACLE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ORACLE
        .get_or_init(locate)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

fn locate() -> Result<PathBuf, String> {
    if std::env::var_os("MESHCHECK_TEST_ORACLE").is_some_and(|v| v == "off") {
        return Err("MESHCHECK_TEST_ORACLE=off".into());
    }
    if let Some(p) = std::env::var_os("MESHCHECK_TEST_ORACLE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "MESHCHECK_TEST_ORACLE={} is not a file",
                p.display()
            ))
        };
    }
    let go = std::process::Command::new("go").arg("version").output();
    if !go.map(|o| o.status.success()).unwrap_or(false) {
        return Err("Go is not installed, so the Istio oracle cannot be built".into());
    }
    let out = std::process::Command::new("bash")
        .arg(super::root().join("scripts/istio-oracle.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run scripts/istio-oracle.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/istio-oracle.sh failed ({})", out.status));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(path))
}

/// Says once, on the real stderr, that oracle comparisons are not running and why.
pub fn note_unavailable(why: &str) {
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: Istio oracle comparisons NOT run in this test binary: {why}"
        );
    });
}

/// The disagreements between the model of `dir` (with the ingress suite) and istiod
/// that are not known differences; `None` when the fixtures do not load (bad-input
/// tests) or the oracle is unavailable.
pub fn disagreements(dir: &Path) -> Option<Vec<String>> {
    let fx = meshcheck::fixtures::load_dir(dir).ok()?;
    disagreements_with(&fx, &super::root().join("suites/ingress.yaml"))
}

/// The disagreements between the model of `fx` (with the suite at `suite_path`) and
/// istiod that are not known differences; `None` when the oracle is unavailable.
pub fn disagreements_with(
    fx: &meshcheck::fixtures::Fixtures,
    suite_path: &Path,
) -> Option<Vec<String>> {
    use meshcheck::analysis::Severity;
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return None;
        }
    };
    let suite = meshcheck::suite::load(suite_path).expect("the suite loads");
    let mesh = meshcheck::istio::Mesh::build(fx);
    let input = meshcheck::oracle::input::build(fx, &mesh, &suite);
    let answer = meshcheck::oracle::run(bin, &input, false).expect("the oracle answers");
    let found = meshcheck::oracle::compare(fx, &mesh, &suite, &answer);
    Some(
        found
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string())
            .filter(|f| {
                !KNOWN_DIFFERENCES
                    .iter()
                    .any(|(code, text, _)| f.contains(code) && f.contains(text))
            })
            .collect(),
    )
}

/// Panics when the model of `dir` disagrees with istiod.
#[track_caller]
pub fn assert_agrees(dir: &Path) {
    if let Some(d) = disagreements(dir) {
        assert!(
            d.is_empty(),
            "the model of {} disagrees with istiod:\n{}\n--- fixtures:\n{}",
            dir.display(),
            d.join("\n"),
            dump(dir)
        );
    }
}

/// Panics when the model of `dir` disagrees with istiod on the requests of the suite
/// `text` (its checks; its `fixtures` is not read).
#[track_caller]
pub fn assert_agrees_with_suite(dir: &Path, text: &str) {
    let Ok(fx) = meshcheck::fixtures::load_dir(dir) else {
        return;
    };
    let suite = super::suite_file(text);
    if meshcheck::suite::load(suite.path()).is_err() {
        return; // a test of a suite meshcheck refuses
    }
    if let Some(d) = disagreements_with(&fx, suite.path()) {
        assert!(
            d.is_empty(),
            "the model of {} disagrees with istiod on the requests of the suite:\n{}\n--- suite:\n{text}\n--- fixtures:\n{}",
            dir.display(),
            d.join("\n"),
            dump(dir)
        );
    }
}

fn dump(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            out.push_str(&format!("# {}\n", f.display()));
            out.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
        }
    }
    out
}

/// istiod's answer for the fixtures in `dir` and the requests of `suite`, with the
/// model built from them (to doctor before [`error_findings`]).
pub fn istiod_with(
    bin: &Path,
    dir: &Path,
    suite: &meshcheck::suite::Suite,
) -> (
    meshcheck::fixtures::Fixtures,
    meshcheck::istio::Mesh,
    meshcheck::oracle::output::Output,
) {
    let fx = meshcheck::fixtures::load_dir(dir).unwrap();
    let mesh = meshcheck::istio::Mesh::build(&fx);
    let input = meshcheck::oracle::input::build(&fx, &mesh, suite);
    let out = meshcheck::oracle::run(bin, &input, false).unwrap();
    (fx, mesh, out)
}

/// The error findings of comparing `mesh` (possibly doctored) with istiod's `out`.
pub fn error_findings(
    fx: &meshcheck::fixtures::Fixtures,
    mesh: &meshcheck::istio::Mesh,
    suite: &meshcheck::suite::Suite,
    out: &meshcheck::oracle::output::Output,
) -> Vec<String> {
    meshcheck::oracle::compare(fx, mesh, suite, out)
        .into_iter()
        .filter(|f| f.severity == meshcheck::analysis::Severity::Error)
        .map(|f| f.to_string())
        .collect()
}

/// `analyze --oracle` of the fixtures in `dir` with the suite `text`.
pub fn analyze_with_oracle(bin: &Path, dir: &Path, text: &str) -> super::RunResult {
    let suite = super::suite_file(text);
    super::Run::new()
        .arg("analyze")
        .arg("--suite")
        .arg(suite.path())
        .fixtures(dir)
        .arg("--oracle")
        .arg(bin)
        .run_plain()
}
