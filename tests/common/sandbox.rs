//! The sandbox target in the tests: whether it can run on this machine (root for
//! network namespaces, iptables, `ip`, and Go or its programs already built), and one
//! sandbox per test binary (`meshcheck sandbox --expose-api 127.0.0.1:0`) for the
//! tests that talk to a real API server from the host. Where the sandbox cannot run,
//! a test says so on stderr (past libtest's capture) and passes without running;
//! `MESHCHECK_REQUIRE_SANDBOX=1` makes that a failure (as `.ci/run` sets it).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the sandbox cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        if !cfg!(target_os = "linux") {
            return Some("the sandbox target needs Linux".into());
        }
        if !succeeds(Command::new("unshare").args(["--net", "true"])) {
            return Some("this user cannot create network namespaces (not root)".into());
        }
        if !succeeds(Command::new("ip").arg("-V")) {
            return Some("the `ip` command (iproute2) is not installed".into());
        }
        if !succeeds(Command::new("iptables-restore").arg("--version")) {
            return Some("iptables is not installed".into());
        }
        let go = succeeds(Command::new("go").arg("version"));
        let built = succeeds(Command::new("bash").arg(super::root().join("scripts/kube-build.sh")))
            && succeeds(
                Command::new("bash")
                    .arg(super::root().join("scripts/istio-build.sh"))
                    .args(["1.30.3", "dir"]),
            );
        if !go && !built {
            return Some("Go is not installed and the sandbox's programs are not built".into());
        }
        None
    })
    .clone()
}

/// True when the sandbox can run; otherwise says why (once per test) and returns
/// false, or fails the test under `MESHCHECK_REQUIRE_SANDBOX=1`.
pub fn available(test: &str) -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    if std::env::var_os("MESHCHECK_REQUIRE_SANDBOX").is_some_and(|v| v == "1") {
        panic!("{test}: the sandbox cannot run here ({why}) and MESHCHECK_REQUIRE_SANDBOX=1");
    }
    let _ = writeln!(std::io::stderr().lock(), "note: {test} did not run: {why}");
    false
}

/// The sandbox this test binary shares, reached from the host.
pub struct Shared {
    /// The kubeconfig naming the exposed API server.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub api: String,
}

/// Starts the shared sandbox on first use. Its `meshcheck sandbox` process is the
/// child of a thread that lives as long as the test binary; when the binary exits,
/// the parent-death signal (SIGTERM) makes it stop everything and remove its files.
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcheck"));
            cmd.args(["sandbox", "--expose-api", "127.0.0.1:0"])
                .current_dir(super::root())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("meshcheck sandbox starts");
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            let (mut api, mut kubeconfig) = (String::new(), PathBuf::new());
            for line in out.lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("api: ") {
                    api = a.to_string();
                } else if let Some(k) = line.strip_prefix("kubeconfig: ") {
                    kubeconfig = PathBuf::from(k);
                } else if line.starts_with("sandbox: up") {
                    let _ = tx.send(Some(Shared {
                        kubeconfig: kubeconfig.clone(),
                        api: api.clone(),
                    }));
                    break;
                }
            }
            let _ = tx.send(None);
            // Lives as long as the sandbox (the parent-death signal follows this thread).
            let _ = child.wait();
        });
        rx.recv_timeout(std::time::Duration::from_secs(40 * 60))
            .ok()
            .flatten()
            .expect("the shared sandbox came up (see its output above)")
    })
}

/// A kube client for the shared sandbox, on a runtime of the caller's.
pub async fn client() -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&shared().kubeconfig).unwrap();
    let config = kube::config::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// `meshcheck --target existing` on the shared sandbox under the namespace prefix
/// `prefix` (the stub image given as one pushed to a registry, which the sandbox
/// plays as the stub), only `sidecars::injected` (read through the API: the node
/// address is inside the sandbox's network namespace), with `extra` arguments.
pub fn existing_with(
    prefix: &str,
    fixtures: Option<&std::path::Path>,
    extra: &[&str],
) -> super::RunResult {
    existing_checks(prefix, fixtures, extra, "sidecars::injected")
}

/// [`existing_with`], running only the check named `check`.
pub fn existing_checks(
    prefix: &str,
    fixtures: Option<&std::path::Path>,
    extra: &[&str],
    check: &str,
) -> super::RunResult {
    let s = shared();
    let junit = tempfile::tempdir().unwrap();
    let mut run = super::Run::new()
        .arg("--target")
        .arg("existing")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--stub-image")
        .arg("registry.example/team/meshcheck/stub:v1")
        .arg("--namespace-prefix")
        .arg(prefix)
        .arg("--junit")
        .arg(junit.path().join("junit.xml"));
    if let Some(f) = fixtures {
        run = run.fixtures(f);
    }
    for a in extra {
        run = run.arg(a);
    }
    run.arg("--exact").arg(check).run_plain()
}
