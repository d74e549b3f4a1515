//! The example suites (examples/*.yaml), each following an Istio docs task on the
//! shared Bookinfo/httpbin base: every one passes on the local target, `--list` shows
//! every check it makes, and its fixtures agree with istiod (the Istio oracle).

mod common;
use common::oracle::{note_unavailable, oracle};
use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn suite_path(name: &str) -> PathBuf {
    root().join("examples").join(format!("{name}.yaml"))
}

/// The traffic checks the suite declares (`group::name`).
fn declared_checks(name: &str) -> BTreeSet<String> {
    let suite = meshcheck::suite::load(&suite_path(name)).unwrap();
    suite.checks.iter().map(|c| c.full_name()).collect()
}

fn passes_and_lists_its_checks(name: &str) {
    let path = suite_path(name);
    let declared = declared_checks(name);
    assert!(!declared.is_empty(), "{name} declares no check");
    let r = Run::new().arg("--suite").arg(&path).run();
    assert_eq!(r.code, 0, "{name}\n{}\n{}", r.stdout, r.stderr);
    for c in &declared {
        assert!(
            r.passed.contains(c),
            "{name}: {c} did not pass\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("not modelled") && !r.stderr.contains("not modelled"),
        "{name} uses a field meshcheck does not model\n{}\n{}",
        r.stdout,
        r.stderr
    );
    let list = Run::new()
        .arg("--suite")
        .arg(&path)
        .arg("--list")
        .run_plain();
    assert_eq!(list.code, 0, "{}", list.stderr);
    for c in &declared {
        assert!(list.stdout.contains(c.as_str()), "{c}\n{}", list.stdout);
        assert!(
            list.stdout.contains(&format!("static::simulate::{c}")),
            "{c}\n{}",
            list.stdout
        );
    }
}

fn agrees_with_istiod(name: &str) {
    let bin = match oracle() {
        Ok(b) => b,
        Err(why) => {
            note_unavailable(why);
            return;
        }
    };
    let r = Run::new()
        .arg("analyze")
        .arg("--suite")
        .arg(suite_path(name))
        .arg("--oracle")
        .arg(bin)
        .run_plain();
    assert_eq!(r.code, 0, "{name}\n{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("oracle: 0 disagreement(s)"),
        "{name}\n{}",
        r.stdout
    );
}

macro_rules! examples {
    ($($test:ident => $name:literal),* $(,)?) => {
        const EXAMPLES: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                passes_and_lists_its_checks($name);
                agrees_with_istiod($name);
            }
        )*
    };
}

examples! {
    request_routing => "request-routing",
    traffic_shifting => "traffic-shifting",
    fault_injection_abort => "fault-injection-abort",
    ingress_httpbin => "ingress-httpbin",
    redirects => "redirects",
}

#[test]
fn every_example_suite_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(on_disk, tested);
}
