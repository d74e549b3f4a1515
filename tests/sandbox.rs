//! The sandbox target as a user runs it (`meshcheck --target sandbox`): the ingress
//! suite on a real API server, controllers and istiod, with Istio's own injection and
//! pilot-agent; nothing left afterwards; and the environments it cannot run in, each
//! named, with exit 3.

mod common;
use common::sandbox::available;
use common::*;

/// The run's sandbox directory, from the JUnit report's `sandbox.dir` property.
fn sandbox_dir(junit: &std::path::Path) -> std::path::PathBuf {
    let xml = std::fs::read_to_string(junit).unwrap();
    let at = xml
        .find("name=\"sandbox.dir\" value=\"")
        .expect("sandbox.dir property");
    let rest = &xml[at + "name=\"sandbox.dir\" value=\"".len()..];
    std::path::PathBuf::from(&rest[..rest.find('"').unwrap()])
}

#[test]
fn the_ingress_suite_passes_on_the_real_control_plane_and_leaves_nothing_behind() {
    if !available("the sandbox ingress run") {
        return;
    }
    let junit = tempfile::NamedTempFile::new().unwrap();
    let out = Run::new()
        .arg("--suite")
        .arg("ingress")
        .arg("--target")
        .arg("sandbox")
        .arg("--junit")
        .arg(junit.path())
        .command()
        .output()
        .unwrap();
    let r = parse(out);
    assert_fails_exactly::<&str>(&r, &[]);
    assert!(
        r.stdout.contains("test result: ok. 76 passed"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // Istio's own istioctl installed it; pods went through its injector.
    assert!(
        r.stderr.contains("istioctl install (Istio 1.30.3"),
        "{}",
        r.stderr
    );
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    // The gateway took its configuration from istiod over xDS (what istiod says it
    // serves), and each app pod runs pilot-agent + Envoy.
    assert!(
        xml.contains("name=\"sandbox.xds.proxies\" value=\"")
            && xml.contains("my-ingress-gateway-"),
        "{xml}"
    );
    // Nothing left: no process of the run, no directory.
    let dir = sandbox_dir(junit.path());
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let left = processes_with(&dir.display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn without_permission_for_network_namespaces_it_says_so_and_exits_3() {
    if !available("the sandbox permission check") {
        return;
    }
    let cmd = Run::new().arg("--target").arg("sandbox").command();
    // As `nobody`: no CAP_SYS_ADMIN, so no network namespace.
    let mut args = vec![
        "--reuid=65534".to_string(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        env!("CARGO_BIN_EXE_meshcheck").into(),
    ];
    args.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let out = std::process::Command::new("setpriv")
        .args(&args)
        .current_dir(root())
        .output()
        .unwrap();
    let r = parse(out);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot create a network namespace"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("runs as root"), "{}", r.stderr);
}

#[test]
fn an_istio_version_that_cannot_be_built_here_exits_3_naming_it() {
    if !available("the sandbox unbuildable-version check") {
        return;
    }
    let r = Run::new()
        .arg("--target")
        .arg("sandbox")
        .arg("--istio-version")
        .arg("1.29.6")
        .run();
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("serves no istio.io/istio commit of the 1.29.6 line"),
        "{}",
        r.stderr
    );
    // A version nobody knows is the user's input: exit 2.
    let r = Run::new()
        .arg("--target")
        .arg("sandbox")
        .arg("--istio-version")
        .arg("banana")
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn without_go_and_without_built_programs_it_says_so_and_exits_3() {
    if !available("the sandbox no-Go check") {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let r = Run::new()
        .arg("--target")
        .arg("sandbox")
        .command()
        .env("MESHCHECK_CACHE_DIR", empty.path())
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let r = parse(r);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("Go is not installed"), "{}", r.stderr);
}

#[test]
fn an_exposed_api_port_in_use_exits_3_naming_it() {
    if !available("the sandbox port-in-use check") {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let r = Run::new()
        .arg("sandbox")
        .arg("--expose-api")
        .arg(addr.to_string())
        .run_plain();
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{addr} is in use")),
        "{}",
        r.stderr
    );
}
