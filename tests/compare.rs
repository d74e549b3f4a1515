//! `meshcheck compare`: two JUnit reports in, the testcases whose outcome changed out
//! (regressions, fixes, new, gone, skips), exit 1 on a regression, 2 on a report that
//! cannot be read; and on two real reports of the ingress suite before and after a
//! fixture mutation.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// None: passed; Some((element, message)): a `failure`, `error` or `skipped` child.
type Outcome<'a> = Option<(&'a str, &'a str)>;

/// A JUnit report as meshcheck writes it (quick-junit), testcases given as
/// (classname, name, None: passed | Some(("failure"|"error"|"skipped", message))).
fn junit(suite: &str, cases: &[(&str, &str, Outcome)]) -> String {
    let mut body = String::new();
    for (class, name, outcome) in cases {
        match outcome {
            None => body.push_str(&format!(
                "    <testcase name=\"{name}\" classname=\"{class}\" time=\"0.010\"/>\n"
            )),
            Some((kind, msg)) => body.push_str(&format!(
                "    <testcase name=\"{name}\" classname=\"{class}\" time=\"0.010\">\n      <{kind} message=\"{msg}\" type=\"http\">{msg}&#10;expected: status 200</{kind}>\n      <system-out>&gt; GET /x HTTP/1.1</system-out>\n    </testcase>\n"
            )),
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"meshcheck\" tests=\"{n}\">\n  <testsuite name=\"{suite}\" tests=\"{n}\">\n{body}  </testsuite>\n</testsuites>\n",
        n = cases.len()
    )
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn compare(before: &Path, after: &Path) -> RunResult {
    Run::new().arg("compare").arg(before).arg(after).run_plain()
}

/// The table row of `testcase` (its first column is the change).
#[track_caller]
fn row<'a>(r: &'a RunResult, testcase: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == testcase))
        .unwrap_or_else(|| panic!("no row for {testcase}\n{}", r.stdout))
}

#[test]
fn regressions_fixes_renamed_missing_and_skipped_testcases() {
    let d = tempfile::tempdir().unwrap();
    let fail = |m| Some(("failure", m));
    let before = write(
        d.path(),
        "before.xml",
        &junit(
            "ingress",
            &[
                ("routing", "atlas-ui", None),
                ("routing", "authz", fail("expected status 200, got 503")),
                ("routing", "old-name", None),
                ("ports", "only-http-nodeport", None),
                (
                    "sidecars",
                    "injected",
                    Some(("skipped", "not on this target")),
                ),
                ("subsets", "split-90-10", fail("v2 share 30%")),
                ("subsets", "header-pins-v2", None),
            ],
        ),
    );
    let after = write(
        d.path(),
        "after.xml",
        &junit(
            // The testsuite name is not part of the identity: a renamed suite file
            // still matches its testcases.
            "ingress-renamed",
            &[
                (
                    "routing",
                    "atlas-ui",
                    fail("expected service atlas-ui, got 200 from authz"),
                ),
                ("routing", "authz", None),
                ("routing", "new-name", None),
                ("ports", "only-http-nodeport", Some(("skipped", "no scan"))),
                ("sidecars", "injected", None),
                ("subsets", "split-90-10", Some(("error", "v2 share 40%"))),
                ("subsets", "header-pins-v2", None),
            ],
        ),
    );
    let r = compare(&before, &after);
    assert_eq!(
        r.code, 1,
        "a regression exits 1\n{}\n{}",
        r.stdout, r.stderr
    );
    let reg = row(&r, "routing::atlas-ui");
    assert!(reg.starts_with("regression"), "{reg}");
    assert!(
        reg.contains("passed")
            && reg.contains("failed: expected service atlas-ui, got 200 from authz"),
        "{reg}"
    );
    assert!(
        !reg.contains("expected: status 200"),
        "first line only: {reg}"
    );
    let fixed = row(&r, "routing::authz");
    assert!(fixed.starts_with("fixed"), "{fixed}");
    assert!(
        fixed.contains("failed: expected status 200, got 503"),
        "{fixed}"
    );
    assert!(
        row(&r, "routing::new-name").starts_with("new"),
        "{}",
        r.stdout
    );
    assert!(
        row(&r, "routing::old-name").starts_with("gone"),
        "{}",
        r.stdout
    );
    assert!(row(&r, "ports::only-http-nodeport").starts_with("now skipped"));
    assert!(row(&r, "sidecars::injected").starts_with("no longer skipped"));
    // Failing on both sides (failure, then error): not a change, counted.
    assert!(!r.stdout.contains("subsets::split-90-10"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("subsets::header-pins-v2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "compare: 1 regression(s), 1 fixed, 1 new, 1 gone, 1 now skipped, 1 no longer skipped; 1 still failing; 6 testcase(s) in both"
        ),
        "{}",
        r.stdout
    );
    // Regressions are listed first, under the header.
    let mut lines = r.stdout.lines().skip_while(|l| !l.starts_with("change"));
    lines.next();
    assert!(
        lines.next().unwrap().starts_with("regression"),
        "{}",
        r.stdout
    );
}

#[test]
fn fixes_new_and_gone_alone_exit_0() {
    let d = tempfile::tempdir().unwrap();
    let before = write(
        d.path(),
        "b.xml",
        &junit(
            "ingress",
            &[
                ("routing", "a", Some(("failure", "broken"))),
                ("routing", "gone", None),
            ],
        ),
    );
    let after = write(
        d.path(),
        "a.xml",
        &junit(
            "ingress",
            &[
                ("routing", "a", None),
                ("routing", "new", Some(("failure", "new and failing"))),
            ],
        ),
    );
    let r = compare(&before, &after);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(row(&r, "routing::a").starts_with("fixed"));
    assert!(row(&r, "routing::new").contains("failed: new and failing"));
    assert!(row(&r, "routing::gone").starts_with("gone"));
    // Identical reports: nothing changed.
    let r = compare(&after, &after);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("no testcase changed outcome"),
        "{}",
        r.stdout
    );
}

#[test]
fn any_junit_is_read_a_single_testsuite_root_and_error_elements() {
    // pytest / Surefire shape: one <testsuite> root, <error>, message only as text.
    let d = tempfile::tempdir().unwrap();
    let before = write(
        d.path(),
        "b.xml",
        r#"<testsuite name="pytest" tests="2"><testcase classname="tests.test_x" name="test_a"/><testcase classname="tests.test_x" name="test_b"/></testsuite>"#,
    );
    let after = write(
        d.path(),
        "a.xml",
        r#"<testsuite name="pytest" tests="2"><testcase classname="tests.test_x" name="test_a"><error type="E">Traceback &lt;x&gt;
line 2</error></testcase><testcase classname="tests.test_x" name="test_b"/></testsuite>"#,
    );
    let r = compare(&before, &after);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let reg = row(&r, "tests.test_x::test_a");
    assert!(reg.contains("failed: Traceback <x>"), "{reg}");
}

#[test]
fn malformed_missing_or_non_junit_files_exit_2_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let good = write(
        d.path(),
        "good.xml",
        &junit("ingress", &[("routing", "a", None)]),
    );
    // An unclosed testcase: the error names file, line and column.
    let bad = write(
        d.path(),
        "bad.xml",
        "<testsuites>\n  <testsuite name=\"s\">\n    <testcase name=\"a\">\n  </testsuite>\n</testsuites>\n",
    );
    let r = compare(&good, &bad);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let want = format!("{}:4:", bad.display());
    assert!(r.stderr.contains(&want), "want {want} in: {}", r.stderr);
    assert!(r.stderr.contains("not well-formed XML"), "{}", r.stderr);

    let html = write(d.path(), "page.html", "<html><body>hi</body></html>");
    let r = compare(&html, &good);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains(&format!("{}: not a JUnit report", html.display()))
            && r.stderr.contains("<html>"),
        "{}",
        r.stderr
    );

    let missing = d.path().join("missing.xml");
    let r = compare(&good, &missing);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains(&format!("cannot read JUnit report {}", missing.display())),
        "{}",
        r.stderr
    );
}

#[test]
fn markdown_table_for_a_ci_step_summary() {
    let d = tempfile::tempdir().unwrap();
    let before = write(
        d.path(),
        "b.xml",
        &junit("ingress", &[("routing", "a", None)]),
    );
    let after = write(
        d.path(),
        "a.xml",
        &junit(
            "ingress",
            &[("routing", "a", Some(("failure", "got 503 | 404")))],
        ),
    );
    let md = d.path().join("summary/step.md");
    let r = Run::new()
        .arg("compare")
        .arg(&before)
        .arg(&after)
        .arg("--markdown")
        .arg(&md)
        .run_plain();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("| change | testcase | before | after |\n|---|---|---|---|\n"),
        "{text}"
    );
    assert!(
        text.contains("| regression | `routing::a` | passed | failed: got 503 \\| 404 |"),
        "{text}"
    );
}

/// Runs the ingress suite on the local target with `fixtures`, writing JUnit to `junit`.
fn suite_run(fixtures: Option<&Path>, junit: &Path) -> RunResult {
    let mut run = Run::new().arg("--target").arg("local");
    if let Some(f) = fixtures {
        run = run.fixtures(f).arg("--budget").arg("3s");
    }
    run.arg("--junit").arg(junit).run_plain()
}

#[test]
fn two_real_reports_before_and_after_a_broken_route() {
    let d = tempfile::tempdir().unwrap();
    let (before, after) = (d.path().join("before.xml"), d.path().join("after.xml"));
    let r = suite_run(None, &before);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "        host: atlas-ui\n",
        "        host: authz\n",
    );
    let r = suite_run(Some(f.path()), &after);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);

    let r = compare(&before, &after);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let reg = row(&r, "routing::atlas-ui");
    assert!(reg.starts_with("regression"), "{reg}");
    assert!(
        reg.contains("failed: expected service atlas-ui, got 200 from authz"),
        "{reg}"
    );
    assert!(row(&r, "static::simulate::routing::atlas-ui").starts_with("regression"));
    assert!(
        r.stdout
            .contains("compare: 2 regression(s), 0 fixed, 0 new, 0 gone"),
        "only the broken route and its simulation changed:\n{}",
        r.stdout
    );
    // The other way round, the same testcases are fixes and nothing regressed.
    let r = compare(&after, &before);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(row(&r, "routing::atlas-ui").starts_with("fixed"));
}
