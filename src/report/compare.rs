//! `meshcheck compare`: reads two JUnit reports (meshcheck's own or any JUnit:
//! testsuites/testsuite/testcase with failure, error or skipped children) and lists the
//! testcases whose outcome changed between them: regressions, fixes, new, gone, and
//! changes to or from skipped, each with both sides' failure message.
//!
//! A testcase is identified by classname and name: what survives between two runs of
//! meshcheck (the testsuite is the suite's name, the same on both sides). Only where one
//! report holds the same classname and name in several testsuites (a report with
//! phases) is the testsuite part of the identity.

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::XmlVersion;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Longest failure message shown in a table cell (its first line, truncated).
const MESSAGE_WIDTH: usize = 100;

/// Why a report could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read JUnit report {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not well-formed XML: {why}")]
    Xml {
        path: PathBuf,
        line: usize,
        column: usize,
        why: String,
    },
    #[error("{path}: not a JUnit report: {why}")]
    NotJunit { path: PathBuf, why: String },
    #[error("cannot write the Markdown table to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CompareError {
    /// A report that cannot be read or is not JUnit is bad input; a table that cannot be
    /// written is the environment's.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, CompareError::Write { .. })
    }
}

/// A testcase's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// `<failure>` or `<error>`.
    Failed,
    Skipped,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One testcase of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub testsuite: String,
    pub classname: String,
    pub name: String,
    pub verdict: Verdict,
    /// The failure's (or skip's) message: its `message` attribute, else its text.
    pub message: String,
}

impl Case {
    /// `classname::name` as meshcheck's console shows it (or `name` alone).
    pub fn display(&self) -> String {
        if self.classname.is_empty() {
            self.name.clone()
        } else {
            format!("{}::{}", self.classname, self.name)
        }
    }
}

/// Reads and parses one report; errors name the file (and the position in it).
pub fn read(path: &Path) -> Result<Vec<Case>, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ParseError::Xml { offset, why } => {
            let (line, column) = line_column(&text, offset);
            CompareError::Xml {
                path: path.to_path_buf(),
                line,
                column,
                why,
            }
        }
        ParseError::NotJunit(why) => CompareError::NotJunit {
            path: path.to_path_buf(),
            why,
        },
    })
}

/// Why a text is not a JUnit report.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed XML at a byte offset.
    Xml {
        offset: usize,
        why: String,
    },
    NotJunit(String),
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The testcase being read and the element of it whose text is its message.
#[derive(Default)]
struct Reading {
    /// Names of the open testsuites (innermost last).
    testsuites: Vec<String>,
    case: Option<Case>,
    /// Inside a `<failure>`, `<error>` or `<skipped>` without a message attribute.
    message_text: Option<String>,
    cases: Vec<Case>,
    root_seen: bool,
}

/// Parses a JUnit report.
pub fn parse(text: &str) -> Result<Vec<Case>, ParseError> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut r = Reading::default();
    loop {
        let at = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| ParseError::Xml {
            offset: reader.error_position() as usize,
            why: e.to_string(),
        })?;
        match event {
            Event::Start(e) => r.open(&e, false, at)?,
            Event::Empty(e) => r.open(&e, true, at)?,
            Event::End(e) => r.close(e.name().as_ref()),
            Event::Text(t) => {
                let s = t.xml10_content().map_err(|e| xml_error(at, e))?;
                r.text(&s);
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| xml_error(at, e))?;
                r.text(&s);
            }
            Event::GeneralRef(g) => r.text(&resolve_ref(&g, at)?),
            Event::Eof => break,
            _ => {}
        }
    }
    if !r.root_seen {
        return Err(ParseError::NotJunit(
            "no <testsuites> or <testsuite> element".into(),
        ));
    }
    Ok(r.cases)
}

fn xml_error(offset: usize, e: impl std::fmt::Display) -> ParseError {
    ParseError::Xml {
        offset,
        why: e.to_string(),
    }
}

/// `&amp;`, `&#10;`: the text an entity or character reference stands for.
fn resolve_ref(g: &BytesRef<'_>, at: usize) -> Result<String, ParseError> {
    if g.is_char_ref() {
        return match g.resolve_char_ref().map_err(|e| xml_error(at, e))? {
            Some(c) => Ok(c.to_string()),
            None => Ok(String::new()),
        };
    }
    let name = g.decode().map_err(|e| xml_error(at, e))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_string)
        .ok_or_else(|| xml_error(at, format!("unknown entity &{name};")))
}

/// The value of attribute `name` (entities resolved), or "".
fn attr(e: &BytesStart<'_>, name: &str, at: usize) -> Result<String, ParseError> {
    match e.try_get_attribute(name).map_err(|x| xml_error(at, x))? {
        Some(a) => Ok(a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|x| xml_error(at, x))?
            .into_owned()),
        None => Ok(String::new()),
    }
}

impl Reading {
    fn open(&mut self, e: &BytesStart<'_>, empty: bool, at: usize) -> Result<(), ParseError> {
        let tag = e.name();
        let tag = String::from_utf8_lossy(tag.as_ref()).into_owned();
        if !self.root_seen {
            if tag != "testsuites" && tag != "testsuite" {
                return Err(ParseError::NotJunit(format!(
                    "the root element is <{tag}>, not <testsuites> or <testsuite>"
                )));
            }
            self.root_seen = true;
        }
        match tag.as_str() {
            // `<testsuite/>` has no end tag: nothing to push.
            "testsuite" if self.case.is_none() && !empty => {
                self.testsuites.push(attr(e, "name", at)?);
            }
            "testcase" if self.case.is_none() => {
                let name = attr(e, "name", at)?;
                if name.is_empty() {
                    return Err(ParseError::Xml {
                        offset: at,
                        why: "a <testcase> without a name".into(),
                    });
                }
                let case = Case {
                    testsuite: self.testsuites.last().cloned().unwrap_or_default(),
                    classname: attr(e, "classname", at)?,
                    name,
                    verdict: Verdict::Passed,
                    message: String::new(),
                };
                if empty {
                    self.cases.push(case);
                } else {
                    self.case = Some(case);
                }
            }
            "failure" | "error" | "skipped" => self.outcome(&tag, e, empty, at)?,
            _ => {}
        }
        Ok(())
    }

    /// A `<failure>`, `<error>` or `<skipped>` of the open testcase: a failure wins
    /// over a skip, the first failure's message is kept.
    fn outcome(
        &mut self,
        tag: &str,
        e: &BytesStart<'_>,
        empty: bool,
        at: usize,
    ) -> Result<(), ParseError> {
        let Some(case) = self.case.as_mut() else {
            return Ok(());
        };
        let verdict = if tag == "skipped" {
            Verdict::Skipped
        } else {
            Verdict::Failed
        };
        if case.verdict == Verdict::Failed {
            return Ok(());
        }
        case.verdict = verdict;
        case.message = attr(e, "message", at)?;
        if case.message.is_empty() && !empty {
            self.message_text = Some(String::new());
        }
        Ok(())
    }

    fn text(&mut self, s: &str) {
        if let Some(t) = self.message_text.as_mut() {
            t.push_str(s);
        }
    }

    fn close(&mut self, tag: &[u8]) {
        match tag {
            b"failure" | b"error" | b"skipped" => {
                if let (Some(t), Some(case)) = (self.message_text.take(), self.case.as_mut()) {
                    case.message = t;
                }
            }
            b"testcase" => {
                if let Some(case) = self.case.take() {
                    self.cases.push(case);
                }
            }
            b"testsuite" if self.case.is_none() => {
                self.testsuites.pop();
            }
            _ => {}
        }
    }
}

/// How a testcase's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Passed before, fails after.
    Regression,
    /// Failed before, passes after.
    Fixed,
    /// Only in the second report.
    New,
    /// Only in the first report.
    Gone,
    /// Passed or failed before, skipped after.
    NowSkipped,
    /// Skipped before, passed or failed after.
    NoLongerSkipped,
}

impl Change {
    pub fn word(self) -> &'static str {
        match self {
            Change::Regression => "regression",
            Change::Fixed => "fixed",
            Change::New => "new",
            Change::Gone => "gone",
            Change::NowSkipped => "now skipped",
            Change::NoLongerSkipped => "no longer skipped",
        }
    }

    fn of(before: Option<Verdict>, after: Option<Verdict>) -> Option<Change> {
        use Verdict::*;
        match (before, after) {
            (None, Some(_)) => Some(Change::New),
            (Some(_), None) => Some(Change::Gone),
            (Some(Passed), Some(Failed)) => Some(Change::Regression),
            (Some(Failed), Some(Passed)) => Some(Change::Fixed),
            (Some(Skipped), Some(Passed | Failed)) => Some(Change::NoLongerSkipped),
            (Some(Passed | Failed), Some(Skipped)) => Some(Change::NowSkipped),
            _ => None,
        }
    }
}

/// One testcase whose outcome changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub change: Change,
    /// What the console shows: `classname::name` (with `[testsuite]` where needed).
    pub testcase: String,
    pub before: Option<Case>,
    pub after: Option<Case>,
}

/// The comparison of two reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Changed testcases: regressions first, then by testcase.
    pub rows: Vec<Row>,
    /// Testcases in both reports failing on both sides (not listed as changes).
    pub still_failing: usize,
    /// Testcases in both reports.
    pub common: usize,
}

impl Comparison {
    pub fn count(&self, c: Change) -> usize {
        self.rows.iter().filter(|r| r.change == c).count()
    }

    pub fn has_regression(&self) -> bool {
        self.count(Change::Regression) > 0
    }
}

/// Keys the testcases of one report: `classname::name`, qualified by `[testsuite]`
/// where that pair occurs in several testsuites, and by `#n` where it repeats within
/// one (the n-th occurrence).
fn keyed(cases: &[Case]) -> BTreeMap<String, Case> {
    let mut suites: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for c in cases {
        suites
            .entry(c.display())
            .or_default()
            .insert(c.testsuite.as_str());
    }
    let mut out = BTreeMap::new();
    for c in cases {
        let base = if suites[&c.display()].len() > 1 {
            format!("[{}] {}", c.testsuite, c.display())
        } else {
            c.display()
        };
        let mut key = base.clone();
        let mut n = 1;
        while out.contains_key(&key) {
            n += 1;
            key = format!("{base} #{n}");
        }
        out.insert(key, c.clone());
    }
    out
}

/// Compares two reports' testcases.
pub fn compare(before: &[Case], after: &[Case]) -> Comparison {
    let (b, a) = (keyed(before), keyed(after));
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    let mut rows = Vec::new();
    let (mut still_failing, mut common) = (0, 0);
    for k in keys {
        let (bc, ac) = (b.get(k), a.get(k));
        if let (Some(x), Some(y)) = (bc, ac) {
            common += 1;
            if x.verdict == Verdict::Failed && y.verdict == Verdict::Failed {
                still_failing += 1;
            }
        }
        if let Some(change) = Change::of(bc.map(|c| c.verdict), ac.map(|c| c.verdict)) {
            rows.push(Row {
                change,
                testcase: k.clone(),
                before: bc.cloned(),
                after: ac.cloned(),
            });
        }
    }
    rows.sort_by(|x, y| (x.change, &x.testcase).cmp(&(y.change, &y.testcase)));
    Comparison {
        rows,
        still_failing,
        common,
    }
}

/// A side of a row as a cell: `passed`, `failed: <first line of the message>`, `-`.
fn cell(c: Option<&Case>) -> String {
    let Some(c) = c else {
        return "-".into();
    };
    let first = c.message.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        Some(m) if c.verdict != Verdict::Passed => format!(
            "{}: {}",
            c.verdict.word(),
            crate::checks::truncate(m, MESSAGE_WIDTH)
        ),
        _ => c.verdict.word().into(),
    }
}

/// `12 testcases: 11 passed, 1 failed`.
pub fn tally(cases: &[Case]) -> String {
    let n = |v| cases.iter().filter(|c| c.verdict == v).count();
    format!(
        "{} testcase(s): {} passed, {} failed, {} skipped",
        cases.len(),
        n(Verdict::Passed),
        n(Verdict::Failed),
        n(Verdict::Skipped)
    )
}

/// The closing line: counts of each change.
pub fn summary(c: &Comparison) -> String {
    format!(
        "{} regression(s), {} fixed, {} new, {} gone, {} now skipped, {} no longer skipped; {} still failing; {} testcase(s) in both",
        c.count(Change::Regression),
        c.count(Change::Fixed),
        c.count(Change::New),
        c.count(Change::Gone),
        c.count(Change::NowSkipped),
        c.count(Change::NoLongerSkipped),
        c.still_failing,
        c.common
    )
}

/// The table for a terminal: aligned columns.
pub fn text_table(c: &Comparison) -> String {
    if c.rows.is_empty() {
        return "no testcase changed outcome\n".into();
    }
    let head = ["change", "testcase", "before", "after"];
    let rows: Vec<[String; 4]> = c
        .rows
        .iter()
        .map(|r| {
            [
                r.change.word().to_string(),
                r.testcase.clone(),
                cell(r.before.as_ref()),
                cell(r.after.as_ref()),
            ]
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = String::new();
    let mut line = |c: [&str; 4]| {
        let _ = writeln!(out, "{:w0$}  {:w1$}  {:w2$}  {}", c[0], c[1], c[2], c[3]);
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    out
}

/// A Markdown table cell: pipes escaped, no line breaks.
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// The same table as GitHub-flavoured Markdown (for a CI step summary).
pub fn markdown(c: &Comparison, before: &Path, after: &Path) -> String {
    let mut out = format!(
        "### meshcheck compare\n\n`{}` → `{}`: {}\n\n",
        md(&before.display().to_string()),
        md(&after.display().to_string()),
        summary(c)
    );
    if c.rows.is_empty() {
        out.push_str("No testcase changed outcome.\n");
        return out;
    }
    out.push_str("| change | testcase | before | after |\n|---|---|---|---|\n");
    for r in &c.rows {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            r.change.word(),
            md(&r.testcase).replace('`', "'"),
            md(&cell(r.before.as_ref())),
            md(&cell(r.after.as_ref()))
        );
    }
    out
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The earlier JUnit report.
    pub before: PathBuf,
    /// The later JUnit report.
    pub after: PathBuf,
    /// Also write the table as GitHub-flavoured Markdown (e.g. $GITHUB_STEP_SUMMARY).
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

/// `meshcheck compare`: exit 1 when a testcase that passed before fails after.
pub fn command(args: CompareArgs) -> Result<u8, crate::error::Error> {
    let regressed = run(&args.before, &args.after, args.markdown.as_deref())?;
    Ok(if regressed {
        crate::error::exit::CHECK_FAILED
    } else {
        crate::error::exit::OK
    })
}

/// Compares two reports: prints the table on stdout (and writes it as Markdown);
/// returns whether a testcase regressed.
pub fn run(
    before: &Path,
    after: &Path,
    markdown_path: Option<&Path>,
) -> Result<bool, CompareError> {
    let (b, a) = (read(before)?, read(after)?);
    let cmp = compare(&b, &a);
    if let Some(path) = markdown_path {
        write_markdown(path, &markdown(&cmp, before, after))?;
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // Errors ignored: `meshcheck compare ... | head` must not panic.
    let _ = writeln!(out, "before: {} ({})", before.display(), tally(&b));
    let _ = writeln!(out, "after:  {} ({})", after.display(), tally(&a));
    let _ = write!(out, "\n{}\n", text_table(&cmp));
    let _ = writeln!(out, "compare: {}", summary(&cmp));
    if let Some(path) = markdown_path {
        let _ = writeln!(out, "Markdown: {}", path.display());
    }
    Ok(cmp.has_regression())
}

fn write_markdown(path: &Path, text: &str) -> Result<(), CompareError> {
    let err = |source| CompareError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(v: Verdict, msg: &str) -> (Verdict, String) {
        (v, msg.to_string())
    }

    #[test]
    fn reads_failure_error_skipped_and_flaky_testcases() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="x">
  <testsuite name="ingress" tests="5">
    <testcase name="a" classname="routing"/>
    <testcase name="b" classname="routing">
      <failure message="expected status 200, got 503&#10;second line" type="http">body</failure>
    </testcase>
    <testcase name="c" classname="routing"><error>panicked &amp; died
at x</error></testcase>
    <testcase name="d" classname="ports"><skipped message="not on local"/></testcase>
    <testcase name="e" classname="subsets"><flakyFailure message="once"/><system-out>out</system-out></testcase>
  </testsuite>
</testsuites>"#;
        let cases = parse(xml).unwrap();
        let got: Vec<(String, Verdict, String)> = cases
            .iter()
            .map(|c| (c.display(), c.verdict, c.message.clone()))
            .collect();
        let want = [
            ("routing::a", case(Verdict::Passed, "")),
            (
                "routing::b",
                case(Verdict::Failed, "expected status 200, got 503\nsecond line"),
            ),
            ("routing::c", case(Verdict::Failed, "panicked & died\nat x")),
            ("ports::d", case(Verdict::Skipped, "not on local")),
            ("subsets::e", case(Verdict::Passed, "")),
        ];
        let want: Vec<(String, Verdict, String)> = want
            .into_iter()
            .map(|(n, (v, m))| (n.to_string(), v, m))
            .collect();
        assert_eq!(got, want);
        assert!(cases.iter().all(|c| c.testsuite == "ingress"));
    }

    #[test]
    fn a_single_testsuite_root_is_junit_and_html_is_not() {
        let one = parse(r#"<testsuite name="s"><testcase name="t"/></testsuite>"#).unwrap();
        assert_eq!(one.len(), 1);
        assert!(matches!(
            parse("<html><body/></html>"),
            Err(ParseError::NotJunit(m)) if m.contains("<html>")
        ));
        assert!(matches!(parse(""), Err(ParseError::NotJunit(_))));
    }

    #[test]
    fn malformed_xml_names_line_and_column() {
        let text =
            "<testsuites>\n  <testsuite name=\"s\">\n    <testcase name=\"t\">\n  </testsuite>\n";
        let Err(ParseError::Xml { offset, .. }) = parse(text) else {
            panic!("{:?}", parse(text));
        };
        assert_eq!(line_column(text, offset).0, 4, "{offset}");
    }

    #[test]
    fn changes_between_reports() {
        let c = |n: &str, v: Verdict, m: &str| Case {
            testsuite: "s".into(),
            classname: "g".into(),
            name: n.into(),
            verdict: v,
            message: m.into(),
        };
        use Verdict::*;
        let before = [
            c("reg", Passed, ""),
            c("fix", Failed, "was broken"),
            c("gone", Passed, ""),
            c("skip", Passed, ""),
            c("unskip", Skipped, ""),
            c("same", Failed, "x"),
            c("ok", Passed, ""),
        ];
        let after = [
            c("reg", Failed, "now broken\ndetail"),
            c("fix", Passed, ""),
            c("new", Failed, "new and broken"),
            c("skip", Skipped, ""),
            c("unskip", Passed, ""),
            c("same", Failed, "y"),
            c("ok", Passed, ""),
        ];
        let cmp = compare(&before, &after);
        let rows: Vec<(Change, &str)> = cmp
            .rows
            .iter()
            .map(|r| (r.change, r.testcase.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (Change::Regression, "g::reg"),
                (Change::Fixed, "g::fix"),
                (Change::New, "g::new"),
                (Change::Gone, "g::gone"),
                (Change::NowSkipped, "g::skip"),
                (Change::NoLongerSkipped, "g::unskip"),
            ]
        );
        assert!(cmp.has_regression());
        assert_eq!((cmp.still_failing, cmp.common), (1, 6));
        let t = text_table(&cmp);
        assert!(t.contains("failed: now broken\n") || t.contains("failed: now broken"));
        assert!(!t.contains("detail"), "first line only: {t}");
        let m = markdown(&cmp, Path::new("a.xml"), Path::new("b|c.xml"));
        assert!(
            m.contains("| regression | `g::reg` | passed | failed: now broken |"),
            "{m}"
        );
        assert!(m.contains("b\\|c.xml"), "{m}");
    }

    #[test]
    fn the_testsuite_is_part_of_the_identity_only_where_a_report_repeats_a_testcase() {
        let c = |s: &str, v: Verdict| Case {
            testsuite: s.into(),
            classname: "g".into(),
            name: "t".into(),
            verdict: v,
            message: String::new(),
        };
        // Renamed suite, same testcase: matched.
        let cmp = compare(&[c("old", Verdict::Passed)], &[c("new", Verdict::Failed)]);
        assert_eq!(cmp.rows.len(), 1);
        assert_eq!(cmp.rows[0].change, Change::Regression);
        // Phases: each testsuite's testcase is its own.
        let before = [c("before", Verdict::Passed), c("after", Verdict::Passed)];
        let after = [c("before", Verdict::Passed), c("after", Verdict::Failed)];
        let cmp = compare(&before, &after);
        assert_eq!(cmp.rows.len(), 1, "{cmp:?}");
        assert_eq!(cmp.rows[0].testcase, "[after] g::t");
    }

    #[test]
    fn long_messages_are_truncated_in_cells() {
        let long = "x".repeat(300);
        let case = Case {
            testsuite: String::new(),
            classname: String::new(),
            name: "n".into(),
            verdict: Verdict::Failed,
            message: long,
        };
        let s = cell(Some(&case));
        assert!(s.chars().count() < 120, "{s}");
        assert!(s.ends_with('…'));
    }
}
