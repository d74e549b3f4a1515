//! Requests go out as the suite writes them: the path byte for byte in the request
//! line (the spellings an AuthorizationPolicy suite attacks a DENY rule with), a
//! suite's `x-forwarded-for` as given, and from `request.source` when stated. A tiny
//! TCP listener stands in for the gateway and records what it receives; the checks run
//! as a run does (suite file, `Ctx`, `checks::run`) against a target whose NodePort is
//! that listener.

use meshcheck::checks::{self, Ctx, Outcome};
use meshcheck::targets::{BoxFuture, PodInfo, Target};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// What the listener received on one connection.
#[derive(Debug)]
struct Received {
    peer: SocketAddr,
    /// The request head, up to and including the blank line.
    head: String,
}

impl Received {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }
}

/// A listener on 127.0.0.1 answering every request `200` with an empty body and
/// closing; what it received arrives on the channel before the answer is sent.
fn listener() -> (u16, mpsc::Receiver<Received>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(n) if n > 0 => head.extend_from_slice(&b[..n]),
                    _ => break,
                }
            }
            // Recorded before answering: once a check has its answers, the channel
            // holds every request of it.
            let head = String::from_utf8_lossy(&head).into_owned();
            if tx.send(Received { peer, head }).is_err() {
                return;
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

/// A target whose every NodePort is `port` on 127.0.0.1, named `name` (`local`,
/// `kind`, ...).
struct OneNode {
    name: &'static str,
    port: u16,
}

impl Target for OneNode {
    fn name(&self) -> &'static str {
        self.name
    }
    fn node_address(&self) -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }
    fn node_port(&self, _service_port: u16) -> Option<u16> {
        Some(self.port)
    }
    fn gateway_identities(&self) -> Vec<String> {
        Vec::new()
    }
    fn pods(&self) -> BoxFuture<'_, Result<Vec<PodInfo>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn consistency_budget(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn health(&self) -> Vec<String> {
        Vec::new()
    }
    fn properties(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A suite of `http` checks named `c0`, `c1`, ... with these request flow mappings,
/// each expecting 200.
fn suite_text(requests: &[&str]) -> String {
    let mut text = String::from("name: raw\nfixtures: .\nchecks:\n");
    for (i, r) in requests.iter().enumerate() {
        text += &format!(
            "  - group: raw\n    name: c{i}\n    http:\n      request: {r}\n      expect: {{ status: 200 }}\n"
        );
    }
    text
}

fn load(text: &str) -> Result<meshcheck::suite::Suite, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suite.yaml");
    std::fs::write(&path, text).unwrap();
    meshcheck::suite::load(&path).map_err(|e| e.to_string())
}

/// Runs every check of a suite of `requests` against `target`: each outcome with what
/// the listener received during that check.
fn run_on(
    target: OneNode,
    requests: &[&str],
    rx: &mpsc::Receiver<Received>,
) -> Vec<(Outcome, Vec<Received>)> {
    let suite = load(&suite_text(requests)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = Ctx::new(Arc::new(target), Default::default(), 80);
    suite
        .checks
        .iter()
        .map(|c| {
            let o = rt.block_on(checks::run(&ctx, c));
            // Every request of the check was answered before it ended.
            (o, rx.try_iter().collect())
        })
        .collect()
}

#[test]
fn paths_reach_the_gateway_unnormalized_byte_for_byte() {
    let (port, rx) = listener();
    // (request as the suite writes it, request-target expected on the wire)
    let cases = [
        (r"{ path: /./atlas-ui }", "/./atlas-ui"),
        (r"{ path: /atlas-ui/../admin }", "/atlas-ui/../admin"),
        (r"{ path: /./admin }", "/./admin"),
        (r"{ path: /a/../admin }", "/a/../admin"),
        (r"{ path: //admin }", "//admin"),
        (r"{ path: /%61dmin }", "/%61dmin"),
        (r"{ path: /%2e/admin }", "/%2e/admin"),
        (r"{ path: /admin/ }", "/admin/"),
        (r"{ path: /ADMIN }", "/ADMIN"),
        (r"{ path: '\admin' }", r"\admin"),
        (r"{ path: '/admin;x' }", "/admin;x"),
        (r"{ path: '/admin?x' }", "/admin?x"),
        (r"{ path: '/admin#x' }", "/admin#x"),
        // The query map is appended, URL-encoded, to the path as written.
        (
            r"{ path: '/./admin?x', query: { q: 'a b' } }",
            "/./admin?x&q=a+b",
        ),
    ];
    let requests: Vec<&str> = cases.iter().map(|(r, _)| *r).collect();
    let outcomes = run_on(
        OneNode {
            name: "local",
            port,
        },
        &requests,
        &rx,
    );
    for ((o, got), (r, want)) in outcomes.iter().zip(cases) {
        assert!(o.passed, "{r}: {}\n{}", o.message, o.transcript);
        assert_eq!(got.len(), 3, "{r}: three requests in a row");
        for g in got {
            assert_eq!(
                g.request_line(),
                format!("GET {want} HTTP/1.1"),
                "{r}:\n{}",
                g.head
            );
        }
        // The transcript shows the line as sent.
        assert!(
            o.transcript.contains(&format!("> GET {want} HTTP/1.1\n")),
            "{}",
            o.transcript
        );
    }
}

#[test]
fn a_suites_x_forwarded_for_goes_out_as_written() {
    let (port, rx) = listener();
    let outcomes = run_on(
        OneNode {
            name: "local",
            port,
        },
        &[
            r"{ path: /admin, headers: { x-forwarded-for: [ '203.0.113.7, 10.0.0.1', '198.51.100.2' ] } }",
        ],
        &rx,
    );
    let (o, got) = &outcomes[0];
    assert!(o.passed, "{}", o.message);
    for g in got {
        assert!(
            g.head.contains(
                "\r\nx-forwarded-for: 203.0.113.7, 10.0.0.1\r\nx-forwarded-for: 198.51.100.2\r\n"
            ),
            "{}",
            g.head
        );
    }
}

#[test]
fn requests_come_from_the_stated_source_address() {
    let (port, rx) = listener();
    let outcomes = run_on(
        OneNode {
            name: "local",
            port,
        },
        &["{ path: /admin, source: 127.0.0.55 }", "{ path: /admin }"],
        &rx,
    );
    let (o, from_source) = &outcomes[0];
    assert!(o.passed, "{}", o.message);
    assert!(!from_source.is_empty());
    for g in from_source {
        assert_eq!(
            g.peer.ip(),
            IpAddr::from([127, 0, 0, 55]),
            "{}",
            o.transcript
        );
    }
    assert!(
        o.transcript.contains("* from 127.0.0.55\n"),
        "{}",
        o.transcript
    );
    // Without `source`, the system's choice: not that address.
    let (o, default) = &outcomes[1];
    assert!(o.passed, "{}", o.message);
    assert!(default
        .iter()
        .all(|g| g.peer.ip() == IpAddr::from([127, 0, 0, 1])));
}

#[test]
fn a_source_that_is_not_this_machines_fails_the_check_before_anything_is_sent() {
    let (port, rx) = listener();
    // 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    let outcomes = run_on(
        OneNode { name: "kind", port },
        &[
            "{ path: /admin, source: 192.0.2.10 }",
            "{ path: /admin, source: 127.0.0.55 }",
        ],
        &rx,
    );
    let (o, got) = &outcomes[0];
    assert!(!o.passed);
    assert!(
        o.message
            .starts_with("request.source 192.0.2.10 is not an address of this machine")
            && o.message
                .contains("the kind target cannot be sent a request from it"),
        "{}",
        o.message
    );
    assert_eq!(o.attempts, 1, "failed at once, not retried for the budget");
    assert!(got.is_empty(), "nothing was sent: {got:?}");
    // An address of this machine is used on any target.
    let (o, got) = &outcomes[1];
    assert!(o.passed, "{}", o.message);
    assert!(got
        .iter()
        .all(|g| g.peer.ip() == IpAddr::from([127, 0, 0, 55])));
}

#[test]
fn a_source_or_a_path_that_cannot_go_out_is_a_load_error() {
    let e = load(&suite_text(&["{ path: /admin, source: not-an-address }"])).unwrap_err();
    assert!(e.contains("invalid IP address syntax"), "{e}");
    let e = load(&suite_text(&[r#"{ path: "/admin\r\nx-injected: 1" }"#])).unwrap_err();
    assert!(e.contains("control character '\\r'"), "{e}");
    let e = load(&suite_text(&["{ path: '' }"])).unwrap_err();
    assert!(e.contains("request path is empty"), "{e}");
    // The attack spellings themselves load.
    load(&suite_text(&[
        r"{ path: '\admin', source: 127.0.0.55 }",
        "{ path: '/admin#x' }",
    ]))
    .unwrap();
}
