//! `meshcheck equivalent`: the shipped fixtures are equivalent to themselves and to a
//! copy written differently with the same meaning; a real change of the
//! `atlas-rest-split` route is reported per request with both answers and decision
//! paths (by the simulation, and by istiod when the oracle is available); bad input
//! exits 2 naming the file.

mod common;
use common::*;

/// `meshcheck equivalent --fixtures OLD --fixtures NEW` plus `extra`.
fn equivalent(old: &std::path::Path, new: &std::path::Path, extra: &[&str]) -> RunResult {
    let mut run = Run::new().arg("equivalent").fixtures(old).fixtures(new);
    for a in extra {
        run = run.arg(a);
    }
    run.run_plain()
}

fn shipped() -> std::path::PathBuf {
    root().join("fixtures/ingress")
}

/// The `atlas-rest-split` route without its `rewrite.uri: /`: nb-rest now sees the
/// path as sent.
fn split_without_rewrite() -> FixtureCopy {
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "  - name: atlas-rest-split\n    match:\n    - uri:\n        prefix: /atlas-rest/\n    - uri:\n        exact: /atlas-rest\n    rewrite:\n      uri: /\n",
        "  - name: atlas-rest-split\n    match:\n    - uri:\n        prefix: /atlas-rest/\n    - uri:\n        exact: /atlas-rest\n",
    );
    f
}

/// The oracle's path for `--oracle`, or None (said once) when it is unavailable.
fn oracle_arg() -> Option<String> {
    match common::oracle::oracle() {
        Ok(p) => Some(p.display().to_string()),
        Err(why) => {
            common::oracle::note_unavailable(why);
            None
        }
    }
}

#[test]
fn the_shipped_fixtures_are_equivalent_to_themselves() {
    let r = equivalent(&shipped(), &shipped(), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("simulation: 28 requests, 0 differ"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("28 requests, 0 differ\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("differs in"), "{}", r.stdout);
}

#[test]
fn a_removed_rewrite_is_reported_per_request_with_both_answers() {
    let f = split_without_rewrite();
    let r = equivalent(&shipped(), f.path(), &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "routing::atlas-rest-rewrite (simulation) differs in path: GET http://node/atlas-rest/items (port 80)"
        ),
        "{}",
        r.stdout
    );
    let block = block_of(&r.stdout, "routing::atlas-rest-rewrite (simulation)");
    assert!(
        block.contains("OLD: [90%] status 200, backend nb-rest v1 (atlas), path /items\n"),
        "{block}"
    );
    assert!(
        block.contains(
            "NEW: [90%] status 200, backend nb-rest v1 (atlas), path /atlas-rest/items\n"
        ),
        "{block}"
    );
    // Both decision paths: OLD's rewrites, NEW's does not.
    assert!(
        block.contains("rewrite /atlas-rest/items -> /items"),
        "{block}"
    );
    assert_eq!(block.matches("decision path:").count(), 2, "{block}");
    // The requests the route does not answer are not reported.
    for same in [
        "routing::atlas-ui ",
        "routing::authz ",
        "subsets::header-pins-v2 ",
    ] {
        assert!(!r.stdout.contains(same), "{same}: {}", r.stdout);
    }
    assert!(
        r.stdout.contains("simulation: 28 requests, 4 differ"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("28 requests, 4 differ\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_bare_prefix_rewritten_to_slash_doubles_the_slash_and_opens_a_path_beside_the_route() {
    // `prefix: /atlas-rest` with `rewrite.uri: /` (Envoy prefix_rewrite replaces exactly
    // the prefix): /atlas-rest/items reaches nb-rest as //items; /atlas-rest stays /.
    let f = FixtureCopy::new();
    f.replace(
        "40-virtualservices.yaml",
        "  - name: atlas-rest-split\n    match:\n    - uri:\n        prefix: /atlas-rest/\n    - uri:\n        exact: /atlas-rest\n",
        "  - name: atlas-rest-split\n    match:\n    - uri:\n        prefix: /atlas-rest\n",
    );
    let r = equivalent(&shipped(), f.path(), &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let block = block_of(&r.stdout, "routing::atlas-rest-rewrite (simulation)");
    assert!(block.contains("differs in path:"), "{block}");
    assert!(
        block.contains("OLD: [90%] status 200, backend nb-rest v1 (atlas), path /items\n"),
        "{block}"
    );
    assert!(
        block.contains("NEW: [90%] status 200, backend nb-rest v1 (atlas), path //items\n"),
        "{block}"
    );
    assert!(
        block.contains("matched uri prefix /atlas-rest\n"),
        "{block}"
    );
    // And the bare prefix takes /atlas-restricted too: the security group's spellings
    // of it that a route now reaches (not the doubled slash, upper case or the
    // escaped dot, which no route takes) differ, reaching nb-rest.
    for label in [
        "as-written",
        "dot-segment",
        "dot-dot-segment",
        "percent-encoded-letter",
        "trailing-slash",
        "semicolon",
        "fragment",
        "encoded-dot",
    ] {
        let id = format!("security::no-path-beside-a-route::{label} (simulation)");
        assert!(r.stdout.contains(&id), "{id}\n{}", r.stdout);
    }
    assert!(
        r.stdout.ends_with("28 requests, 9 differ\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn swapped_weights_are_a_backend_difference() {
    let f = FixtureCopy::new();
    f.replace("40-virtualservices.yaml", "weight: 90", "weight: 10x")
        .replacen_first("40-virtualservices.yaml", "weight: 10\n", "weight: 90\n")
        .replace("40-virtualservices.yaml", "weight: 10x", "weight: 10");
    let r = equivalent(&shipped(), f.path(), &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let block = block_of(&r.stdout, "subsets::split-90-10 (simulation)");
    assert!(block.contains("differs in backend:"), "{block}");
    assert!(
        block.contains("NEW: [90%] status 200, backend nb-rest v2 (atlas)"),
        "{block}"
    );
}

#[test]
fn the_same_routes_written_otherwise_are_equivalent() {
    // One VirtualService instead of three, FQDN destination hosts, the Gateway named
    // with its namespace, the split's weights as 9/1.
    let f = FixtureCopy::new();
    f.write("40-virtualservices.yaml", MERGED_VIRTUAL_SERVICE);
    let r = equivalent(&shipped(), f.path(), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.ends_with("28 requests, 0 differ\n"),
        "{}",
        r.stdout
    );
    if let Some(oracle) = oracle_arg() {
        let r = equivalent(&shipped(), f.path(), &["--oracle", &oracle]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains("istiod 1.30.3: 28 requests, 0 differ"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn istiod_reports_the_removed_rewrite_too() {
    let Some(oracle) = oracle_arg() else {
        return;
    };
    let f = split_without_rewrite();
    let r = equivalent(&shipped(), f.path(), &["--oracle", &oracle]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let block = block_of(&r.stdout, "routing::atlas-rest-rewrite (istiod 1.30.3)");
    assert!(block.contains("differs in path:"), "{block}");
    assert!(
        block.contains("OLD: [90%] outcome forwarded, path /items,"),
        "{block}"
    );
    assert!(
        block.contains("NEW: [90%] outcome forwarded, path /atlas-rest/items,"),
        "{block}"
    );
    assert!(
        block.contains("`atlas-rest-split` of VirtualService atlas/nb-rest"),
        "{block}"
    );
    assert!(
        r.stdout.contains("istiod 1.30.3: 28 requests, 4 differ"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_junit_report_has_a_failing_testcase_per_differing_request() {
    let f = split_without_rewrite();
    let junit = tempfile::NamedTempFile::new().unwrap();
    let path = junit.path().display().to_string();
    let r = equivalent(&shipped(), f.path(), &["--junit", &path]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 28, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 4, "{xml}");
    assert!(xml.contains("OLD and NEW differ in path"), "{xml}");
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let f = FixtureCopy::new();
    f.write(
        "60-broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
    );
    let r = equivalent(&shipped(), f.path(), &[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("60-broken.yaml:"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    let once = Run::new()
        .arg("equivalent")
        .fixtures(&shipped())
        .run_plain();
    assert_eq!(once.code, 2, "{}", once.stderr);
    assert!(
        once.stderr.contains("--fixtures is given 1 time(s)"),
        "{}",
        once.stderr
    );

    let missing = equivalent(
        &shipped(),
        std::path::Path::new("/nonexistent/fixtures"),
        &[],
    );
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("/nonexistent/fixtures"),
        "{}",
        missing.stderr
    );
}

/// The block of the difference whose header starts with `head`.
#[track_caller]
fn block_of<'a>(stdout: &'a str, head: &str) -> &'a str {
    let start = stdout
        .find(head)
        .unwrap_or_else(|| panic!("no difference {head:?} in:\n{stdout}"));
    let rest = &stdout[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    &rest[..end]
}

const MERGED_VIRTUAL_SERVICE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: atlas-routes
  namespace: atlas
spec:
  hosts:
  - "*"
  gateways:
  - atlas/atlas-gateway
  http:
  - name: ui
    match:
    - uri:
        prefix: /atlas-ui
    route:
    - destination:
        host: atlas-ui.atlas.svc.cluster.local
        port:
          number: 80
  - name: authz
    match:
    - uri:
        prefix: /authz
    route:
    - destination:
        host: authz.atlas.svc.cluster.local
        port:
          number: 80
  - name: rest-pinned
    match:
    - uri:
        prefix: /atlas-rest/
      headers:
        x-atlas-version:
          exact: v2
    - uri:
        exact: /atlas-rest
      headers:
        x-atlas-version:
          exact: v2
    rewrite:
      uri: /
    route:
    - destination:
        host: nb-rest.atlas.svc.cluster.local
        subset: v2
        port:
          number: 80
  - name: rest-split
    match:
    - uri:
        prefix: /atlas-rest/
    - uri:
        exact: /atlas-rest
    rewrite:
      uri: /
    route:
    - destination:
        host: nb-rest.atlas.svc.cluster.local
        subset: v1
        port:
          number: 80
      weight: 9
    - destination:
        host: nb-rest.atlas.svc.cluster.local
        subset: v2
        port:
          number: 80
      weight: 1
"#;
