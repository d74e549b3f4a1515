//! A bounded, deterministic fuzz/property test of the fixtures loader
//! (`meshcheck::fixtures::load_dir`), run inside `cargo test`.
//!
//! Every input is written to `x.yaml` in a fresh temp dir and loaded. Properties:
//! - `load_dir` returns (Ok or Err) and never panics (checked with `catch_unwind`);
//! - no single input takes more than [`PER_INPUT_LIMIT`] (2 s) of CPU time (wall time
//!   off Linux);
//! - an Err renders as `<file>:<line>: ...` with 1 <= line <= lines in the file + 1,
//!   except `LoadError::Io` / `LoadError::Empty`, which name the path;
//! - an Ok names the file and an in-range line for every object and warning.
//!
//! Inputs: hand-written hostile ones (invalid UTF-8, NULs, huge lines, 10k-deep
//! nesting, `{` storms, alias bombs, tabs, BOMs, `---` storms, ...), byte-level
//! mutations of the shipped fixtures, and YAML streams built from a small grammar
//! (block/flow mappings and sequences, scalars of every YAML type, Kubernetes/Istio
//! field names) seeded with the shipped objects and mutated.
//!
//! The PRNG is a fixed-seed xorshift64*, so every case reproduces: a failure prints
//! its case label (with its seed) and input, and saves the input under
//! `$CARGO_TARGET_TMPDIR/loader_fuzz-failures/`. Knobs (environment):
//! `LOADER_FUZZ_SEED=<seed>` re-runs that one generated case (both generators);
//! `LOADER_FUZZ_CASES=<n>` changes the number of generated cases (default 1000 grammar
//! + 500 byte-level); `LOADER_FUZZ_VERBOSE=1` prints every input's outcome and time.

use meshcheck::fixtures::{load_dir, LoadError};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest any single input may take to load.
const PER_INPUT_LIMIT: Duration = Duration::from_secs(2);
const GRAMMAR_CASES: u64 = 1000;
const BYTE_CASES: u64 = 500;
const GRAMMAR_SEED: u64 = 0x6d65_7368_6368_6b31; // "meshchk1"
const BYTE_SEED: u64 = 0x6279_7465_7366_757a; // "bytesfuz"

// ---------------------------------------------------------------------------------
// PRNG

/// xorshift64* (Vigna): tiny, deterministic, good enough for test-input generation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero (xorshift's fixed point); mix the seed a little.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of generated case `i` of a generator (printed on failure).
fn case_seed(base: u64, i: u64) -> u64 {
    base ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

// ---------------------------------------------------------------------------------
// The harness: load one input, check the properties, remember failures.

struct Harness {
    dir: tempfile::TempDir,
    file: PathBuf,
    failures: Vec<String>,
    inputs: usize,
    slowest: (Duration, String),
    outcomes: [usize; 2], // [ok, err]
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("x.yaml");
        Harness {
            dir,
            file,
            failures: Vec::new(),
            inputs: 0,
            slowest: (Duration::ZERO, String::new()),
            outcomes: [0, 0],
        }
    }

    fn check(&mut self, label: &str, input: &[u8]) {
        self.inputs += 1;
        std::fs::write(&self.file, input).expect("write x.yaml");
        let dir = self.dir.path().to_path_buf();
        let start = Instant::now();
        let cpu_start = thread_cpu_time();
        let res = catch_unwind(AssertUnwindSafe(|| load_dir(&dir)));
        let wall = start.elapsed();
        let took = cpu_since(cpu_start).unwrap_or(wall);
        if took > self.slowest.0 {
            self.slowest = (took, label.to_string());
        }
        let mut problems = Vec::new();
        if took > PER_INPUT_LIMIT {
            problems.push(format!(
                "took {took:?} of CPU ({wall:?} wall; limit {PER_INPUT_LIMIT:?}; input is {} bytes)",
                input.len()
            ));
        }
        let lines = line_count(input);
        if std::env::var_os("LOADER_FUZZ_VERBOSE").is_some() {
            let outcome = match &res {
                Err(_) => "PANIC".to_string(),
                Ok(Ok(fx)) => format!(
                    "Ok: {} objects, {} warnings",
                    fx.objects.len(),
                    fx.warnings.len()
                ),
                Ok(Err(e)) => format!("Err: {}", short(&e.to_string(), 160)),
            };
            eprintln!("{label} [{} bytes, {took:?}]: {outcome}", input.len());
        }
        match res {
            Err(panic) => problems.push(format!("load_dir panicked: {}", panic_message(&panic))),
            Ok(Ok(fx)) => {
                self.outcomes[0] += 1;
                let places = fx
                    .objects
                    .iter()
                    .map(|o| (&o.source, o.describe()))
                    .chain(fx.warnings.iter().map(|w| (&w.at, w.to_string())));
                for (at, what) in places {
                    if at.file != self.file || at.line < 1 || at.line > lines {
                        problems.push(format!(
                            "Ok, but `{what}` is placed at {at} (file has {lines} lines)"
                        ));
                    }
                }
            }
            Ok(Err(e)) => {
                self.outcomes[1] += 1;
                if let Err(why) = check_error(&e, &dir, &self.file, lines) {
                    problems.push(why);
                }
            }
        }
        if !problems.is_empty() {
            let saved = save_failure(label, input);
            self.failures.push(format!(
                "[{label}] {}\n    input ({} bytes, saved to {}): {}",
                problems.join("; "),
                input.len(),
                saved,
                show(input)
            ));
        }
    }

    fn finish(self, what: &str, started: Instant) {
        eprintln!(
            "{what}: {} inputs ({} Ok, {} Err) in {:?}; slowest {:?} of CPU ({})",
            self.inputs,
            self.outcomes[0],
            self.outcomes[1],
            started.elapsed(),
            self.slowest.0,
            self.slowest.1
        );
        if !self.failures.is_empty() {
            let mut msg = format!(
                "{} of {} inputs failed:\n",
                self.failures.len(),
                self.inputs
            );
            for f in self.failures.iter().take(20) {
                msg.push_str(f);
                msg.push('\n');
            }
            panic!("{msg}");
        }
    }
}

/// CPU time of the calling thread: the per-input limit is on CPU, not wall time, so
/// a busy machine (a parallel build on 2 cores) does not make the test flaky.
#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Option<Duration> {
    None // callers fall back to wall time
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu_time()?.saturating_sub(start?))
}

/// Lines of the file as YAML (and an editor) counts them: LF, CRLF and a lone CR
/// each end a line; a last line without a line break counts too; an empty file has 1.
fn line_count(input: &[u8]) -> usize {
    let mut n = 1;
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' || (b == b'\r' && input.get(i + 1) != Some(&b'\n')) {
            n += 1;
        }
    }
    n
}

/// `<file>:<line>: ...` with the line in range, or the path for Io/Empty.
fn check_error(e: &LoadError, dir: &Path, file: &Path, lines: usize) -> Result<(), String> {
    let msg = e.to_string();
    match e {
        LoadError::Io { .. } => {
            if msg.contains(&file.display().to_string()) || msg.contains(&dir.display().to_string())
            {
                Ok(())
            } else {
                Err(format!("Io error does not name the path: {msg:?}"))
            }
        }
        LoadError::Empty { .. } => {
            if msg.contains(&dir.display().to_string()) {
                Ok(())
            } else {
                Err(format!("Empty error does not name the directory: {msg:?}"))
            }
        }
        _ => {
            let prefix = format!("{}:", file.display());
            let rest = msg
                .strip_prefix(&prefix)
                .ok_or_else(|| format!("error does not start with `{prefix}`: {msg:?}"))?;
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let line: usize = digits
                .parse()
                .map_err(|_| format!("error has no line after the file: {msg:?}"))?;
            if !rest[digits.len()..].starts_with(": ") {
                return Err(format!("error has no `: ` after the line: {msg:?}"));
            }
            if line < 1 || line > lines + 1 {
                return Err(format!(
                    "error names line {line}, file has {lines} lines: {}",
                    short(&msg, 300)
                ));
            }
            Ok(())
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// The input, escaped, shortened for the terminal.
fn show(input: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(input).escape_debug().collect();
    format!("\"{}\"", short(&s, 700))
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}...[{} chars in all]", s.chars().count())
}

fn save_failure(label: &str, input: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loader_fuzz-failures");
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("{name}.yaml"));
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, input)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Case seeds of a generator: the one from LOADER_FUZZ_SEED, or `n` from `base`.
fn seeds(base: u64, default_n: u64) -> Vec<u64> {
    if let Some(s) = env_u64("LOADER_FUZZ_SEED") {
        return vec![s];
    }
    let n = env_u64("LOADER_FUZZ_CASES").unwrap_or(default_n);
    (0..n).map(|i| case_seed(base, i)).collect()
}

fn shipped_fixtures() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("fixtures/ingress") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            out.push((name, std::fs::read_to_string(&p).expect("fixture text")));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

// ---------------------------------------------------------------------------------
// Hand-written hostile inputs

fn hostile_inputs() -> Vec<(String, Vec<u8>)> {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\n  namespace: atlas\nspec:\n  selector:\n    istio: x\n  servers:\n  - port:\n      number: 80\n      name: http\n      protocol: HTTP\n    hosts:\n    - \"*\"\n";
    let head = |kind: &str, api: &str| {
        format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: nm\n  namespace: atlas\n")
    };
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| v.push((name.to_string(), bytes));

    // Encodings and odd bytes.
    add("empty file", Vec::new());
    add("only comments", b"# a\n# b\n\n   \n".to_vec());
    add("invalid utf-8 only", vec![0xff, 0xfe, 0xfd, 0x80, 0xc3]);
    add("invalid utf-8 on line 9", {
        let mut b = gateway.as_bytes().to_vec();
        b.splice(120..120, [0xc3, 0x28, 0xa0, 0xa1]);
        b
    });
    add("utf-16 le bom", {
        let mut b = vec![0xff, 0xfe];
        for u in gateway.encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        b
    });
    add(
        "nul bytes",
        b"apiVersion: v1\0\nkind: Name\0space\nmetadata:\n  name: \0\n".to_vec(),
    );
    add("all nul", vec![0; 4096]);
    add("bom then object", format!("\u{feff}{gateway}").into_bytes());
    add(
        "bom after ---",
        format!("{gateway}---\n\u{feff}{gateway}").into_bytes(),
    );
    add(
        "bom inside document",
        "apiVersion: v1\n\u{feff}kind: Namespace\nmetadata:\n  name: a\n"
            .to_string()
            .into_bytes(),
    );
    add("bom storm", "\u{feff}".repeat(10_000).into_bytes());
    add(
        "control chars",
        (0u8..32).chain(127..=127).cycle().take(2000).collect(),
    );
    add("all bytes", (0..=255u8).cycle().take(256 * 64).collect());
    add("crlf object", gateway.replace('\n', "\r\n").into_bytes());
    add("cr-only object", gateway.replace('\n', "\r").into_bytes());
    add(
        "cr-only with a type error",
        format!(
            "{}---\r{}",
            gateway,
            gateway.replace("number: 80", "number: http")
        )
        .replace('\n', "\r")
        .into_bytes(),
    );
    add(
        "unicode line separators",
        gateway.replace('\n', "\u{2028}").into_bytes(),
    );
    add(
        "NEL line ends",
        gateway.replace('\n', "\u{85}").into_bytes(),
    );
    add(
        "tabs as indentation",
        gateway.replace("  ", "\t").into_bytes(),
    );
    add(
        "tab before key",
        b"\tapiVersion: v1\nkind: Namespace\n".to_vec(),
    );
    add(
        "tabs everywhere",
        "\t:\t-\t[\t{\t}\t]\t#\t\n".repeat(500).into_bytes(),
    );

    // Long lines and big scalars.
    add(
        "1 MiB line",
        format!("{gateway}  x: {}\n", "y".repeat(1 << 20)).into_bytes(),
    );
    add(
        "1 MiB key",
        format!("{}: 1\n", "k".repeat(1 << 20)).into_bytes(),
    );
    add("1 MiB of dashes", "-".repeat(1 << 20).into_bytes());
    add(
        "1 MiB quoted, unterminated",
        format!("a: \"{}", "q".repeat(1 << 20)).into_bytes(),
    );
    add("100k short lines", "a\n".repeat(100_000).into_bytes());
    add(
        "100k keys",
        (0..100_000)
            .map(|i| format!("k{i}: {i}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    add("huge numbers", format!("{}spec:\n  servers:\n  - port:\n      number: 99999999999999999999999999\n    hosts: [1e400, -1e400, .nan, 0x7fffffffffffffffff]\n", head("Gateway", "networking.istio.io/v1")).into_bytes());

    // Deep nesting.
    add("[ x 10k", "[".repeat(10_000).into_bytes());
    add(
        "[ x 10k balanced",
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
    );
    add("{ x 10k", "{".repeat(10_000).into_bytes());
    add("{a: x 10k", "{a: ".repeat(10_000).into_bytes());
    add("{ storm with text", "{ { {\n".repeat(5_000).into_bytes());
    add(
        "- x 10k on a line",
        format!("{}x\n", "- ".repeat(10_000)).into_bytes(),
    );
    add("block maps 3k deep", {
        let mut s = String::new();
        for i in 0..3_000 {
            let _ = writeln!(s, "{}a:", " ".repeat(i));
        }
        s.into_bytes()
    });
    add("block seqs 3k deep", {
        let mut s = String::new();
        for i in 0..3_000 {
            let _ = writeln!(s, "{}-", " ".repeat(i));
        }
        s.into_bytes()
    });
    add(
        "deep spec of a Gateway",
        format!(
            "{}spec: {}{}\n",
            head("Gateway", "networking.istio.io/v1"),
            "[".repeat(60),
            "]".repeat(60)
        )
        .into_bytes(),
    );
    add(
        "deep unmodelled field of a VirtualService",
        format!(
            "{}spec:\n  foo: {}1{}\n",
            head("VirtualService", "networking.istio.io/v1"),
            "{a: ".repeat(60),
            "}".repeat(60)
        )
        .into_bytes(),
    );
    add(
        "deep List item",
        format!(
            "apiVersion: v1\nkind: List\nitems: {}{}\n",
            "[".repeat(62),
            "]".repeat(62)
        )
        .into_bytes(),
    );

    // Aliases.
    add("self-referencing alias", b"a: &a [*a, *a]\n".to_vec());
    add("alias to itself as map", b"a: &a {b: *a}\n".to_vec());
    add("undefined alias", b"a: *nope\n".to_vec());
    add("billion laughs", {
        let mut s = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, cur) = (w[0], w[1]);
            let _ = writeln!(s, "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]");
        }
        s.into_bytes()
    });
    add("billion laughs in a Gateway spec", {
        let mut s = head("Gateway", "networking.istio.io/v1");
        s.push_str("x0: &x0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
        for i in 1..10 {
            let p = i - 1;
            let _ = writeln!(
                s,
                "x{i}: &x{i} [*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p}]"
            );
        }
        s.push_str("spec:\n  selector: {}\n  extra: *x9\n");
        s.into_bytes()
    });
    add("binary alias chain 40 deep", {
        let mut s = String::from("a0: &a0 [x, x]\n");
        for i in 1..40 {
            let _ = writeln!(s, "a{i}: &a{i} [*a{}, *a{}]", i - 1, i - 1);
        }
        s.into_bytes()
    });
    add("nested anchors of deep values", {
        let mut s = format!("a0: &a0 {}x{}\n", "[".repeat(50), "]".repeat(50));
        for i in 1..30 {
            let _ = writeln!(
                s,
                "a{i}: &a{i} {}*a{}{}",
                "[".repeat(50),
                i - 1,
                "]".repeat(50)
            );
        }
        s.into_bytes()
    });
    add("merge-key storm", {
        let mut s = String::from("base: &b {x: 1, y: 2}\n");
        for i in 0..20_000 {
            let _ = writeln!(s, "m{i}: {{<<: *b, z: {i}}}");
        }
        s.into_bytes()
    });
    add("merge of merges", {
        let mut s = String::from("m0: &m0 {a: 1, b: 2, c: 3}\n");
        for i in 1..40 {
            let _ = writeln!(s, "m{i}: &m{i} {{<<: [*m{}, *m{}], k{i}: 1}}", i - 1, i - 1);
        }
        s.into_bytes()
    });
    add(
        "100k anchors",
        (0..100_000)
            .map(|i| format!("- &a{i} {i}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    add("alias as key", b"a: &k key\n*k : v\n".to_vec());
    add(
        "anchor on document root",
        format!("&root\n{gateway}").into_bytes(),
    );

    // Document markers.
    add("--- storm", "---\n".repeat(200_000).into_bytes());
    add("... storm", "...\n".repeat(100_000).into_bytes());
    add("--- inline storm", "--- a\n".repeat(50_000).into_bytes());
    add(
        "--- then objects x 2000",
        (0..2_000)
            .map(|i| {
                format!(
                    "---\n{}",
                    gateway.replace("name: g", &format!("name: g{i}"))
                )
            })
            .collect::<String>()
            .into_bytes(),
    );
    add(
        "duplicate objects",
        format!("{gateway}---\n{gateway}").into_bytes(),
    );
    add("--- with inline flow object", b"--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n".to_vec());
    add(
        "--- inline, broken",
        b"--- {apiVersion: v1, kind: [\n".to_vec(),
    );
    add("--- tab inline", b"---\t[1, 2\n".to_vec());
    add(
        "directives",
        format!(
            "%YAML 1.2\n%TAG ! tag:x,2000:\n---\n{gateway}...\n%YAML 1.1\n---\n{}",
            gateway.replace("name: g", "name: h")
        )
        .into_bytes(),
    );
    add("directive without document", b"%YAML 1.2\n".to_vec());
    add(
        "bad directive",
        b"%YAML 9.9\n%FOO bar\n---\na: 1\n".to_vec(),
    );
    add("--- inside block scalar", b"a: |\n  x\n---\n  y\n".to_vec());
    add("-- and ---- lines", b"--\n----\n--- -\n---x\n".to_vec());

    // Kubernetes-shaped oddities.
    add(
        "List without items",
        b"apiVersion: v1\nkind: List\n".to_vec(),
    );
    add(
        "List of scalars",
        b"apiVersion: v1\nkind: List\nitems: [1, two, null]\n".to_vec(),
    );
    add("List of Lists", b"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  metadata: {name: l}\n  items: []\n".to_vec());
    add(
        "non-string kind",
        b"apiVersion: v1\nkind: [Namespace]\nmetadata: {name: a}\n".to_vec(),
    );
    add(
        "empty kind",
        b"apiVersion: v1\nkind: ''\nmetadata: {name: a}\n".to_vec(),
    );
    add(
        "metadata not a map",
        b"apiVersion: v1\nkind: Namespace\nmetadata: [name, a]\n".to_vec(),
    );
    add(
        "namespace not a string",
        b"apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: {x: 1}}\n".to_vec(),
    );
    add(
        "non-string keys",
        b"? [a, b]\n: c\n{x: 1}: 2\n1: one\nnull: n\n".to_vec(),
    );
    add(
        "duplicate keys",
        b"apiVersion: v1\nkind: Namespace\nkind: Namespace\nmetadata: {name: a}\n".to_vec(),
    );
    add("custom tags", b"apiVersion: !!binary aGk=\nkind: !custom Namespace\nmetadata: !!python/object:os.system {name: a}\n".to_vec());
    add(
        "gateway port as string",
        gateway.replace("number: 80", "number: \"80\"").into_bytes(),
    );
    add(
        "gateway port out of range",
        gateway.replace("number: 80", "number: 70000").into_bytes(),
    );
    add(
        "gateway port negative float",
        gateway.replace("number: 80", "number: -8.5").into_bytes(),
    );
    add(
        "gateway servers as map",
        gateway.replace("  - port:", "    port:").into_bytes(),
    );
    add(
        "gateway unknown fields everywhere",
        gateway
            .replace(
                "      protocol: HTTP\n",
                "      protocol: HTTP\n      extra: {a: [1, {b: 2}]}\n    bogus: 1\n",
            )
            .into_bytes(),
    );
    add(
        "unmodelled field with a dotted/bracketed name",
        format!(
            "{}spec:\n  \"a.b[0]\": 1\n  \"\": 2\n  \"[\": 3\n",
            head("VirtualService", "networking.istio.io/v1")
        )
        .into_bytes(),
    );
    add("deployment with sidecar annotations", b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata:\n      annotations: {sidecar.istio.io/proxyCPU: 1, traffic.sidecar.istio.io/x: [1]}\n".to_vec());
    add("only a scalar", b"just a string\n".to_vec());
    add("only null", b"~\n---\nnull\n---\n".to_vec());
    add(
        "object, then garbage line",
        format!("{gateway}: : :\n").into_bytes(),
    );
    add(
        "unterminated flow at end",
        format!("{gateway}  extra: [1, 2\n").into_bytes(),
    );
    add(
        "bom before ---",
        format!(
            "{gateway}\u{feff}---\n{}",
            gateway.replace("name: g", "name: h")
        )
        .into_bytes(),
    );
    add(
        "--- at end without newline",
        format!("{gateway}---").into_bytes(),
    );
    add(
        "... with a comment",
        format!("{gateway}... # end\n").into_bytes(),
    );
    add(
        "---\\r line in an LF file",
        format!("{gateway}---\r\n{}", gateway.replace("name: g", "name: h")).into_bytes(),
    );
    add("1000 unmodelled fields", {
        let mut s = head("VirtualService", "networking.istio.io/v1");
        s.push_str("spec:\n");
        for i in 0..1_000 {
            let _ = writeln!(s, "  k{i}: {i}");
        }
        s.into_bytes()
    });
    add(
        "unterminated quote at end",
        format!("{gateway}  extra: 'abc").into_bytes(),
    );
    v
}

#[test]
fn hostile_inputs_load_without_panicking_and_errors_are_located() {
    let started = Instant::now();
    let mut h = Harness::new();
    for (name, bytes) in hostile_inputs() {
        h.check(&format!("hostile: {name}"), &bytes);
    }
    h.finish("hostile inputs", started);
}

// ---------------------------------------------------------------------------------
// Byte-level fuzzing: mutations of the shipped fixtures, and raw random bytes.

const TOKENS: &[&str] = &[
    "---\n",
    "--- ",
    "...\n",
    "&a ",
    "*a",
    "<<: ",
    "? ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "|\n",
    ">-\n",
    "!!str ",
    "!!int ",
    "!x ",
    "%YAML 1.2\n",
    "\"",
    "'",
    "\t",
    "\r",
    "\r\n",
    "\u{feff}",
    "\0",
    "\\",
    "@",
    "`",
    "~",
    "null",
    "true",
    "0x1F",
    ".inf",
    "1e400",
    "apiVersion: v1\nkind: List\nitems:\n",
    "kind: ",
    "metadata:\n  name: x\n",
    "\n  ",
    "\n",
    "\u{2028}",
    "\u{85}",
    "é",
    "😀",
];

fn byte_mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        let len = b.len();
        let at = if len == 0 { 0 } else { rng.below(len + 1) };
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 => b.insert(at, rng.next() as u8),
            2 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                let start = at.min(end);
                b.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = b[start..end].to_vec();
                let at = rng.below(b.len() + 1);
                b.splice(at..at, chunk);
            }
            4 => {
                let t = rng.pick(TOKENS).as_bytes().to_vec();
                b.splice(at..at, t);
            }
            5 if len > 0 => {
                // Change the indentation of a line.
                let line_start = b[..at.min(len)]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map(|p| p + 1)
                    .unwrap_or(0);
                if rng.chance(50) {
                    b.insert(line_start, b' ');
                } else if b.get(line_start) == Some(&b' ') {
                    b.remove(line_start);
                }
            }
            _ => {
                let t = rng.pick(&[
                    0x00u8, 0xff, 0xc3, 0xe2, 0x80, b'\t', b'\r', b'\n', b':', b'-',
                ]);
                b.insert(at, *t);
            }
        }
    }
    b
}

#[test]
fn random_bytes_load_without_panicking_and_errors_are_located() {
    let started = Instant::now();
    let fixtures = shipped_fixtures();
    let mut h = Harness::new();
    for seed in seeds(BYTE_SEED, BYTE_CASES) {
        let mut rng = Rng::new(seed);
        let input = match rng.below(10) {
            // Raw random bytes over a YAML-heavy alphabet.
            0 => {
                let alphabet = b"abc:-[]{},#&*!|>'\"\n\n\n  \t\r%?@`\x00\xff\xc3";
                let len = rng.below(400);
                (0..len).map(|_| *rng.pick(alphabet)).collect()
            }
            // Fully random bytes.
            1 => {
                let len = rng.below(300);
                (0..len).map(|_| rng.next() as u8).collect()
            }
            // Mutations of a shipped fixture file, or of two concatenated.
            _ => {
                let (_, a) = rng.pick(&fixtures);
                let mut base = a.clone().into_bytes();
                if rng.chance(20) {
                    let (_, b) = rng.pick(&fixtures);
                    base.extend_from_slice(b"---\n");
                    base.extend_from_slice(b.as_bytes());
                }
                byte_mutate(&mut rng, base)
            }
        };
        h.check(&format!("bytes seed=0x{seed:016x}"), &input);
    }
    h.finish("byte-level fuzz", started);
}

// ---------------------------------------------------------------------------------
// Grammar-based YAML documents

/// A YAML node as written: scalars keep their source text (so `yes`, `0x1F`, `~`,
/// `!!str 5` can be produced), block scalars keep their lines.
#[derive(Clone, Debug)]
enum Node {
    Scalar(String),
    Block(&'static str, Vec<String>),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

const FIELD_NAMES: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "spec",
    "http",
    "route",
    "destination",
    "host",
    "subsets",
    "subset",
    "labels",
    "ports",
    "port",
    "targetPort",
    "nodePort",
    "selector",
    "servers",
    "hosts",
    "weight",
    "number",
    "protocol",
    "match",
    "uri",
    "prefix",
    "exact",
    "regex",
    "rewrite",
    "gateways",
    "trafficPolicy",
    "tls",
    "mode",
    "items",
    "template",
    "containers",
    "annotations",
    "matchLabels",
    "replicas",
    "type",
    "headers",
    "status",
    "<<",
    "",
    "x y",
    "ключ",
    "a:b",
    "-",
    "#x",
    "'q'",
];
const KINDS: &[&str] = &[
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "Service",
    "Deployment",
    "Namespace",
    "ServiceAccount",
    "List",
    "ConfigMap",
    "Secret",
    "Role",
    "Widget",
    "",
];
const API_VERSIONS: &[&str] = &[
    "v1",
    "apps/v1",
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "rbac.authorization.k8s.io/v1",
    "example.com/v1",
    "/",
    "",
];

fn random_scalar(rng: &mut Rng) -> Node {
    let s = match rng.below(24) {
        0 => rng.next().to_string(),
        1 => format!("-{}", rng.below(100_000)),
        2 => rng.below(70_000).to_string(),
        3 => format!("{}.{}", rng.below(1000), rng.below(1000)),
        4 => rng
            .pick(&["true", "false", "True", "yes", "no", "on", "off", "TRUE"])
            .to_string(),
        5 => rng.pick(&["null", "~", "Null", ""]).to_string(),
        6 => rng
            .pick(&[
                ".inf", "-.inf", ".nan", "1e400", "0x1F", "0o17", "017", "1_000", "+12",
            ])
            .to_string(),
        7 => format!("\"{}\"", rng.below(70_000)),
        8 => format!("'{}'", rng.pick(FIELD_NAMES).replace('\'', "''")),
        9 => rng
            .pick(&[
                "\"*\"",
                "'*'",
                "/atlas-ui",
                "/",
                "\"\\u00e9\\t\\0\"",
                "\"\\x\"",
            ])
            .to_string(),
        10 => rng
            .pick(&[
                "!!str 5",
                "!!int \"7\"",
                "!!float x",
                "!!bool maybe",
                "!!null",
                "!custom v",
                "!!binary aGk=",
            ])
            .to_string(),
        11 => rng
            .pick(&["&a v", "*a", "&b [1, 2]", "*b", "*undefined"])
            .to_string(),
        12 => rng
            .pick(&[
                "2001-12-14t21:59:43.10-05:00",
                "1:20",
                "12:30:45",
                "0.",
                "-0",
                "1e3",
            ])
            .to_string(),
        13 => rng
            .pick(&[
                "é€😀",
                "a # not a comment?",
                "a: b",
                "- x",
                "[x",
                "{x",
                "`x",
                "@x",
                "%x",
            ])
            .to_string(),
        14 => "x".repeat(rng.below(3000)),
        15 => rng
            .pick(&[
                "ISTIO_MUTUAL",
                "HTTP",
                "HTTPS",
                "LoadBalancer",
                "ClusterIP",
                "atlas",
                "v1",
                "v2",
            ])
            .to_string(),
        16 => {
            let kind = rng.pick(&["|", ">", "|-", ">+", "|2", "|+"]);
            let n = rng.below(4);
            let lines = (0..n).map(|i| format!("line {i}")).collect();
            return Node::Block(kind, lines);
        }
        _ => rng.pick(FIELD_NAMES).to_string(),
    };
    Node::Scalar(s)
}

fn random_key(rng: &mut Rng) -> String {
    let k = *rng.pick(FIELD_NAMES);
    match rng.below(20) {
        0 => format!("\"{k}\""),
        1 => format!("{k}s"),
        2 => rng.below(100).to_string(),
        3 => "? complex".to_string(),
        _ => {
            if k.is_empty() || k.contains(": ") || k.starts_with(['-', '#', '\'']) {
                format!("\"{k}\"")
            } else {
                k.to_string()
            }
        }
    }
}

fn random_node(rng: &mut Rng, depth: usize) -> Node {
    if depth == 0 || rng.chance(45) {
        return random_scalar(rng);
    }
    let n = rng.below(5);
    if rng.chance(55) {
        Node::Map(
            (0..n)
                .map(|_| (random_key(rng), random_node(rng, depth - 1)))
                .collect(),
        )
    } else {
        Node::Seq((0..n).map(|_| random_node(rng, depth - 1)).collect())
    }
}

fn yaml_string(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"]
            .contains(&s.to_ascii_lowercase().as_str());
    if plain_ok {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("string")
    }
}

fn node_of(v: &serde_json::Value) -> Node {
    match v {
        serde_json::Value::Null => Node::Scalar("null".into()),
        serde_json::Value::Bool(b) => Node::Scalar(b.to_string()),
        serde_json::Value::Number(n) => Node::Scalar(n.to_string()),
        serde_json::Value::String(s) => Node::Scalar(yaml_string(s)),
        serde_json::Value::Array(a) => Node::Seq(a.iter().map(node_of).collect()),
        serde_json::Value::Object(m) => Node::Map(
            m.iter()
                .map(|(k, v)| (yaml_string(k), node_of(v)))
                .collect(),
        ),
    }
}

/// A random subtree of `n` (possibly `n` itself).
fn random_subtree<'a>(rng: &mut Rng, n: &'a mut Node) -> &'a mut Node {
    let len = match n {
        Node::Map(m) => m.len(),
        Node::Seq(s) => s.len(),
        _ => 0,
    };
    if len == 0 || rng.chance(30) {
        return n;
    }
    let i = rng.below(len);
    match n {
        Node::Map(m) => random_subtree(rng, &mut m[i].1),
        Node::Seq(s) => random_subtree(rng, &mut s[i]),
        _ => unreachable!("collections only"),
    }
}

fn mutate_node(rng: &mut Rng, root: &mut Node) {
    let t = random_subtree(rng, root);
    match rng.below(8) {
        0 => *t = random_node(rng, 3),
        1 => *t = random_scalar(rng),
        2 => match t {
            Node::Map(m) if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i].0 = random_key(rng);
            }
            _ => *t = random_node(rng, 2),
        },
        3 => match t {
            Node::Map(m) if !m.is_empty() => {
                m.remove(rng.below(m.len()));
            }
            Node::Seq(s) if !s.is_empty() => {
                s.remove(rng.below(s.len()));
            }
            _ => *t = Node::Seq(vec![]),
        },
        4 => match t {
            Node::Map(m) => {
                let at = rng.below(m.len() + 1);
                m.insert(at, (random_key(rng), random_node(rng, 2)));
            }
            Node::Seq(s) => {
                let at = rng.below(s.len() + 1);
                s.insert(at, random_node(rng, 2));
            }
            _ => *t = random_scalar(rng),
        },
        5 => match t {
            // Duplicate an entry (a duplicate key for maps).
            Node::Map(m) if !m.is_empty() => {
                let e = m[rng.below(m.len())].clone();
                m.push(e);
            }
            Node::Seq(s) if !s.is_empty() => {
                let e = s[rng.below(s.len())].clone();
                s.push(e);
            }
            _ => {}
        },
        6 => {
            let inner = t.clone();
            *t = if rng.chance(50) {
                Node::Seq(vec![inner])
            } else {
                Node::Map(vec![(random_key(rng), inner)])
            };
        }
        _ => {
            // Unwrap a collection to its first element.
            let first = match t {
                Node::Map(m) => m.first().map(|e| e.1.clone()),
                Node::Seq(s) => s.first().cloned(),
                _ => None,
            };
            if let Some(f) = first {
                *t = f;
            }
        }
    }
}

fn emit_flow(n: &Node, out: &mut String) {
    match n {
        Node::Scalar(s) => out.push_str(if s.is_empty() { "''" } else { s }),
        Node::Block(_, lines) => out.push_str(&serde_json::to_string(&lines.join("\n")).unwrap()),
        Node::Map(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str(": ");
                emit_flow(v, out);
            }
            out.push('}');
        }
        Node::Seq(s) => {
            out.push('[');
            for (i, v) in s.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit_flow(v, out);
            }
            out.push(']');
        }
    }
}

/// Emits `n` in block style at `indent`; the first line starts with the indent.
fn emit_block(rng: &mut Rng, n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Scalar(_) | Node::Block(..) => {
            out.push_str(&pad);
            emit_value_inline(rng, n, indent, out);
        }
        Node::Map(m) if m.is_empty() => out.push_str(&format!("{pad}{{}}\n")),
        Node::Seq(s) if s.is_empty() => out.push_str(&format!("{pad}[]\n")),
        Node::Map(m) => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(k);
                out.push(':');
                match v {
                    Node::Map(c) if !c.is_empty() && !rng.chance(10) => {
                        out.push('\n');
                        emit_block(rng, v, indent + 2, out);
                    }
                    Node::Seq(c) if !c.is_empty() && !rng.chance(10) => {
                        out.push('\n');
                        // Kubernetes style (`- ` at the key's indent) or indented.
                        let i = if rng.chance(70) { indent } else { indent + 2 };
                        emit_block(rng, v, i, out);
                    }
                    _ => {
                        out.push(' ');
                        emit_value_inline(rng, v, indent, out);
                    }
                }
            }
        }
        Node::Seq(s) => {
            for v in s {
                match v {
                    Node::Map(c) if !c.is_empty() && !rng.chance(10) => {
                        let mut child = String::new();
                        emit_block(rng, v, indent + 2, &mut child);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&child[indent + 2..]);
                    }
                    Node::Seq(c) if !c.is_empty() && !rng.chance(10) => {
                        let mut child = String::new();
                        emit_block(rng, v, indent + 2, &mut child);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&child[indent + 2..]);
                    }
                    _ => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        emit_value_inline(rng, v, indent, out);
                    }
                }
            }
        }
    }
}

/// A value after `key: ` or `- `: scalars, block scalars, or flow collections.
fn emit_value_inline(rng: &mut Rng, n: &Node, indent: usize, out: &mut String) {
    match n {
        Node::Block(kind, lines) => {
            out.push_str(kind);
            out.push('\n');
            for l in lines {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(l);
                out.push('\n');
            }
        }
        _ => {
            emit_flow(n, out);
            if rng.chance(5) {
                out.push_str(" # comment");
            }
            out.push('\n');
        }
    }
}

/// Small text-level glitches: indentation off by one, tabs, lost colons, ...
fn glitch(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let i = rng.below(lines.len());
    match rng.below(7) {
        0 => lines[i].insert(0, ' '),
        1 => {
            if lines[i].starts_with(' ') {
                lines[i].remove(0);
            }
        }
        2 => lines[i].insert(0, '\t'),
        3 => lines[i] = lines[i].replacen(':', "", 1),
        4 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        5 => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
        _ => lines[i]
            .push_str(rng.pick::<&str>(&[" &a", " *a", " [", " {", " '", " \"", " |", " #"])),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn random_document(rng: &mut Rng, templates: &[serde_json::Value]) -> String {
    let mut node = match rng.below(20) {
        // A shipped object, mutated.
        0..=10 => {
            let mut n = node_of(rng.pick(templates));
            for _ in 0..rng.below(4) {
                mutate_node(rng, &mut n);
            }
            n
        }
        // A Kubernetes-looking head over a random body.
        11..=15 => {
            let mut m = vec![
                (
                    "apiVersion".to_string(),
                    Node::Scalar(yaml_string(rng.pick::<&str>(API_VERSIONS))),
                ),
                (
                    "kind".to_string(),
                    Node::Scalar(yaml_string(rng.pick::<&str>(KINDS))),
                ),
                (
                    "metadata".to_string(),
                    Node::Map(vec![
                        (
                            "name".to_string(),
                            Node::Scalar(rng.pick(&["a", "b", "atlas-ui"]).to_string()),
                        ),
                        (
                            "namespace".to_string(),
                            Node::Scalar(rng.pick(&["atlas", "default"]).to_string()),
                        ),
                    ]),
                ),
            ];
            let body = random_node(rng, 5);
            let key = if rng.chance(80) {
                "spec".to_string()
            } else {
                random_key(rng)
            };
            m.push((key, body));
            if rng.chance(10) {
                m.push((
                    "items".to_string(),
                    Node::Seq(vec![node_of(rng.pick(templates))]),
                ));
            }
            let mut n = Node::Map(m);
            if rng.chance(30) {
                mutate_node(rng, &mut n);
            }
            n
        }
        // Anything at all.
        16..=17 => random_node(rng, 6),
        // Empty or comment-only documents.
        _ => Node::Scalar(rng.pick(&["", "# just a comment", "null"]).to_string()),
    };
    if rng.chance(5) {
        // A List wrapping it.
        node = Node::Map(vec![
            ("apiVersion".into(), Node::Scalar("v1".into())),
            ("kind".into(), Node::Scalar("List".into())),
            ("items".into(), Node::Seq(vec![node])),
        ]);
    }
    let mut text = String::new();
    if rng.chance(8) {
        emit_flow(&node, &mut text);
        text.push('\n');
    } else {
        emit_block(rng, &node, 0, &mut text);
    }
    if rng.chance(20) {
        text = glitch(rng, &text);
    }
    if rng.chance(10) {
        text.insert_str(0, "# leading comment\n\n");
    }
    text
}

fn random_stream(rng: &mut Rng, templates: &[serde_json::Value]) -> String {
    let mut out = String::new();
    if rng.chance(5) {
        out.push_str("%YAML 1.2\n---\n");
    } else if rng.chance(10) {
        out.push_str("---\n");
    }
    let docs = 1 + rng.below(4);
    for d in 0..docs {
        if d > 0 {
            let sep = match rng.below(10) {
                0 => "--- # next\n",
                1 => "...\n---\n",
                2 => "\n---\n\n",
                3 => "---\r\n",
                _ => "---\n",
            };
            out.push_str(sep);
        }
        out.push_str(&random_document(rng, templates));
    }
    if rng.chance(10) {
        out.push_str("...\n");
    }
    if rng.chance(10) {
        // No final newline.
        while out.ends_with('\n') {
            out.pop();
        }
    }
    if rng.chance(5) {
        out = out.replace('\n', "\r\n");
    }
    out
}

#[test]
fn generated_yaml_streams_load_without_panicking_and_errors_are_located() {
    let started = Instant::now();
    let shipped = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress"))
        .expect("shipped fixtures load");
    let templates: Vec<serde_json::Value> = shipped.objects.iter().map(|o| o.raw.clone()).collect();
    assert!(
        templates.len() >= 5,
        "too few shipped objects to use as templates"
    );
    let mut h = Harness::new();
    for seed in seeds(GRAMMAR_SEED, GRAMMAR_CASES) {
        let mut rng = Rng::new(seed);
        let text = random_stream(&mut rng, &templates);
        h.check(&format!("grammar seed=0x{seed:016x}"), text.as_bytes());
    }
    // The generator must reach the typed decoders, not only the parser.
    assert!(
        h.outcomes[0] >= 50,
        "only {} generated streams loaded Ok: generator too hostile",
        h.outcomes[0]
    );
    assert!(
        h.outcomes[1] >= 50,
        "only {} generated streams failed: generator too tame",
        h.outcomes[1]
    );
    h.finish("grammar fuzz", started);
}

// ---------------------------------------------------------------------------------
// Regression tests for loader bugs this fuzzer found (quadratic field location,
// sequence indexes ignored when placing a warning, a quoted number placed at the
// object instead of the field); all fixed in src/fixtures/load.rs.

/// Loads `text` as `x.yaml` of a fresh temp dir; returns the file path too.
fn load_text(
    text: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<meshcheck::fixtures::Fixtures, LoadError>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, text).expect("write x.yaml");
    let res = load_dir(dir.path());
    (dir, file, res)
}

#[test]

fn many_unmodelled_fields_load_quickly() {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n",
    );
    for i in 0..8_000 {
        let _ = writeln!(s, "  k{i}: 1");
    }
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let (_dir, _file, res) = load_text(&s);
    let took = cpu_since(cpu_start).unwrap_or(start.elapsed());
    let fx = res.expect("loads");
    assert_eq!(fx.warnings.len(), 8_000);
    assert!(
        took < PER_INPUT_LIMIT,
        "8000 unmodelled fields took {took:?}"
    );
}

#[test]
fn warnings_point_at_the_right_sequence_item() {
    let (_dir, file, res) = load_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  http:\n  - name: r0\n    delegate: {}\n  - name: r1\n    delegate: {}\n",
    );
    let fx = res.expect("loads");
    let lines: Vec<String> = fx.warnings.iter().map(|w| w.at.to_string()).collect();
    let at = |l: usize| format!("{}:{l}", file.display());
    assert_eq!(lines, [at(8), at(10)], "{:#?}", fx.warnings);
}

#[test]

fn type_error_of_a_quoted_number_is_placed_at_the_field() {
    let (_dir, file, res) = load_text(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: a\nspec:\n  servers:\n  - port:\n      number: \"80\"\n",
    );
    let e = res
        .expect_err("a string port number is rejected")
        .to_string();
    let want = format!("{}:8: ", file.display());
    assert!(e.starts_with(&want), "{e}");
}
