//! The stub fork server (`meshcheck-stub --fork-server`) the local target starts its
//! pods' apps with: each pod is its own process with its own identity, a kill of one
//! is reported as that pod's exit and spares the others, a pod that cannot listen
//! exits 3 with the reason in its log, and closing the server's stdin takes every pod
//! with it.

use meshcheck::stub::fork_server::{PodRequest, Report};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    out: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshcheck-stub"))
            .arg("--fork-server")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Server { child, out, dir }
    }

    fn ask(&mut self, pod: &PodRequest) {
        let stdin = self.child.stdin.as_mut().unwrap();
        serde_json::to_writer(&mut *stdin, pod).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next report (the server answers at once; a line read blocks at most until
    /// the child is killed by the test's end).
    fn report(&mut self) -> Report {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn pod(&self, name: &str, listen: SocketAddr, service: &str) -> PodRequest {
        PodRequest {
            name: name.into(),
            listen: vec![listen],
            control: None,
            env: vec![
                ("SERVICE_NAME".into(), service.into()),
                ("POD_NAME".into(), name.into()),
            ],
            log: self
                .dir
                .path()
                .join(format!("{}.log", name.replace('/', "."))),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// GET / on `addr` once it answers (deadline 10 s): the body.
fn get(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            return body;
        }
        assert!(Instant::now() < deadline, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'))
}

fn started(r: Report, want: &str) -> u32 {
    match r {
        Report::Started { name, pid } if name == want => pid,
        other => panic!("expected {want} started, got {other:?}"),
    }
}

#[test]
fn each_pod_is_its_own_process_and_a_kill_spares_the_others() {
    let mut s = Server::start();
    let (a, b) = (free_addr(), free_addr());
    s.ask(&s.pod("ns/a app", a, "svc-a"));
    s.ask(&s.pod("ns/b app", b, "svc-b"));
    let pa = started(s.report(), "ns/a app");
    let pb = started(s.report(), "ns/b app");
    assert_ne!(pa, pb);
    assert!(get(a).contains("\"service\":\"svc-a\""), "pod a's identity");
    assert!(get(b).contains("\"service\":\"svc-b\""), "pod b's identity");
    // SAFETY: a pid the server just started.
    unsafe { libc::kill(pa as i32, libc::SIGKILL) };
    match s.report() {
        Report::Exited { pid, status } => {
            assert_eq!(pid, pa);
            assert_eq!(status & 0x7f, libc::SIGKILL, "killed by SIGKILL");
        }
        other => panic!("expected pod a's exit, got {other:?}"),
    }
    assert!(get(b).contains("svc-b"), "pod b still answers");
    // Closing stdin ends the server and its pods.
    drop(s.child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pb) {
        assert!(Instant::now() < deadline, "pod b outlived its fork server");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_pod_that_cannot_listen_exits_3_with_the_reason_in_its_log() {
    let mut s = Server::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // The stub listens with SO_REUSEADDR, which a listening socket still refuses.
    let pod = s.pod("ns/c app", addr, "svc-c");
    s.ask(&pod);
    let pid = started(s.report(), "ns/c app");
    match s.report() {
        Report::Exited { pid: p, status } => {
            assert_eq!(p, pid);
            assert_eq!((status >> 8) & 0xff, 3, "exit status 3: {status}");
        }
        other => panic!("expected the pod's exit, got {other:?}"),
    }
    let log = std::fs::read_to_string(&pod.log).unwrap();
    assert!(log.contains(&addr.to_string()), "{log}");
}

#[test]
fn an_unreadable_request_is_reported_not_fatal() {
    let mut s = Server::start();
    let stdin = s.child.stdin.as_mut().unwrap();
    stdin.write_all(b"{not json\n").unwrap();
    stdin.flush().unwrap();
    match s.report() {
        Report::Failed { error, .. } => assert!(error.contains("unreadable"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let a = free_addr();
    s.ask(&s.pod("ns/d app", a, "svc-d"));
    started(s.report(), "ns/d app");
    assert!(get(a).contains("svc-d"));
}

#[test]
fn sigterm_ends_the_server_and_its_pods() {
    let mut s = Server::start();
    let a = free_addr();
    s.ask(&s.pod("ns/e app", a, "svc-e"));
    let pid = started(s.report(), "ns/e app");
    assert!(get(a).contains("svc-e"));
    // SAFETY: the server we started.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the pod was killed and reaped before the server exited"
    );
}
