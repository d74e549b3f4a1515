//! The stub's HTTP server and command line: one listener per `--listen`, the controls
//! applied per request, every request recorded.

use super::controls::{controls, response_headers, Controls, RESPONSE_HEADER_HEADER};
use super::seen::{serve_control, Seen};
use super::{Echo, Identity};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The largest body the stub reads.
const MAX_BODY: usize = 64 * 1024;

pub const HELP: &str = "\
meshcheck-stub [--listen ADDR]... [--control PATH]

Answers every request with JSON: who answered (SERVICE_NAME, VERSION, POD_NAME,
NAMESPACE from the environment) and what arrived (method, path, query, host,
headers, body, port). Prints one line per request on stdout: {\"seen\":{...}}.

  --listen ADDR    listen on ADDR; repeat for several ports (default $LISTEN_ADDR,
                   a comma-separated list, else 0.0.0.0:8080)
  --control PATH   serve GET /seen?id=ID on the unix socket PATH: the requests
                   whose x-meshcheck-id header is ID (the last 4096 are kept).
                   Never served on the app ports.
  --fork-server [NAME]
                   (for the local target) read pods as JSON lines on stdin and
                   start each by fork; report pids and exits on stdout. NAME
                   only shows in ps

A request controls the answer with a header or a query parameter (the header wins):
  x-meshcheck-delay: 2s     meshcheck-delay=2s     answer after this long (<= 5m)
  x-meshcheck-status: 503   meshcheck-status=503   answer with this status
  x-meshcheck-fail-version: v1   meshcheck-fail-version=v1
                            only a stub of this VERSION fails (the status, else
                            503); the others answer 200
  x-meshcheck-response-header: foo=bar   meshcheck-response-header=foo%3Dbar
                            send response header foo: bar; repeatable (one
                            header line per value, in order)
A value the stub cannot read is answered 400 with the reason.

With STUB_ROLE=ext-authz in the environment the stub answers instead as Istio's sample
ext-authz HTTP server (samples/extauthz): 200 when the request carries
`x-ext-authz: allow`, else 403 with `denied by ext_authz for not found header
`x-ext-authz: allow` in the request`; x-ext-authz-check-result: allowed/denied.";

/// The environment variable choosing what the stub answers as (authz/ext_authz.rs).
pub const ROLE_VAR: &str = "STUB_ROLE";

/// What the stub answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The echo with the request's controls.
    Echo,
    /// Istio's sample ext-authz HTTP server (samples/extauthz/cmd/extauthz/main.go
    /// ServeHTTP).
    SampleExtAuthz,
}

impl Role {
    /// The role `STUB_ROLE` names (`ext-authz`); anything else is the echo.
    pub fn from_env_value(v: Option<&str>) -> Role {
        match v {
            Some("ext-authz") => Role::SampleExtAuthz,
            _ => Role::Echo,
        }
    }
}

/// main.go ServeHTTP: allowed when `x-ext-authz` is `allow` (Go's Header.Get: the
/// first value), else 403 with denyBody; the result, the override header echoed and
/// what was received as response headers.
fn sample_ext_authz(
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    let first = |n: &str| {
        parts
            .headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let allowed = first("x-ext-authz") == "allow";
    let received = format!(
        "{} {}{}, headers: {:?}, body: [{}]",
        parts.method,
        first("host"),
        parts.uri,
        parts.headers,
        String::from_utf8_lossy(body)
    );
    let received: String = received
        .chars()
        .filter(|c| !c.is_control())
        .take(4096)
        .collect();
    let b = Response::builder()
        .header(
            "x-ext-authz-check-result",
            if allowed { "allowed" } else { "denied" },
        )
        .header(
            "x-ext-authz-additional-header-override",
            first("x-ext-authz-additional-header-override"),
        )
        .header(
            "x-ext-authz-check-received",
            hyper::header::HeaderValue::from_str(&received)
                .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("")),
        );
    if allowed {
        b.status(200).body(Full::new(Bytes::new()))
    } else {
        b.status(403)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(
                b"denied by ext_authz for not found header `x-ext-authz: allow` in the request",
            )))
    }
}

/// The echo of `parts` with `body`, as received on `port`.
fn echo(identity: &Identity, parts: &hyper::http::request::Parts, body: &[u8], port: u16) -> Echo {
    let mut headers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Echo {
        identity: identity.clone(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        host: parts
            .headers
            .get(hyper::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default(),
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
        port,
    }
}

/// The controls of a request (a header read as text) and the response headers it
/// asks for.
fn request_controls(
    parts: &hyper::http::request::Parts,
) -> Result<(Controls, Vec<(String, String)>), String> {
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let query = parts.uri.query().unwrap_or("");
    let asked: Vec<String> = parts
        .headers
        .get_all(RESPONSE_HEADER_HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    Ok((controls(header, query)?, response_headers(&asked, query)?))
}

fn json_response(status: u16, body: Vec<u8>) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    json_response_with(status, body, &[])
}

/// A JSON answer with `extra` headers appended (each one header line).
fn json_response_with(
    status: u16,
    body: Vec<u8>,
    extra: &[(String, String)],
) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in extra {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(body)))
}

/// Answers one request: read it, record it, wait if told to, echo it.
async fn answer(
    identity: Arc<Identity>,
    seen: Seen,
    port: u16,
    role: Role,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let msg = format!("{{\"error\":\"reading the body: {e}\"}}");
            return json_response(413, msg.into_bytes());
        }
    };
    let e = echo(&identity, &parts, &body, port);
    seen.record(&e);
    if role == Role::SampleExtAuthz {
        return sample_ext_authz(&parts, &body);
    }
    let (c, extra) = match request_controls(&parts) {
        Ok(c) => c,
        Err(why) => {
            let msg = serde_json::json!({ "error": why }).to_string();
            return json_response(400, msg.into_bytes());
        }
    };
    if let Some(d) = c.delay {
        tokio::time::sleep(d).await;
    }
    json_response_with(
        c.status_for(&identity.version),
        serde_json::to_vec(&e).unwrap_or_default(),
        &extra,
    )
}

/// Serves on `listener` until the process is stopped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: Identity,
    seen: Seen,
) -> std::io::Result<()> {
    serve_as(listener, identity, seen, Role::Echo).await
}

/// [`serve`] answering as `role`.
pub async fn serve_as(
    listener: tokio::net::TcpListener,
    identity: Identity,
    seen: Seen,
    role: Role,
) -> std::io::Result<()> {
    let identity = Arc::new(identity);
    let port = listener.local_addr()?.port();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (identity, seen) = (identity.clone(), seen.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                answer(identity.clone(), seen.clone(), port, role, req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The command line of the stub.
#[derive(Debug, PartialEq)]
pub(super) struct Args {
    pub(super) listen: Vec<SocketAddr>,
    pub(super) control: Option<PathBuf>,
}

fn parse_args(args: &[String], env_listen: Option<String>) -> Result<Option<Args>, String> {
    let mut listen = Vec::new();
    let mut control = None;
    let mut it = args.iter();
    let addr = |v: &str| {
        v.trim()
            .parse::<SocketAddr>()
            .map_err(|e| format!("bad listen address {v}: {e}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen.push(addr(it.next().ok_or("--listen needs an address")?)?),
            "--control" => {
                control = Some(PathBuf::from(it.next().ok_or("--control needs a path")?))
            }
            // Informational (shows in `ps`); identity comes from the environment.
            "--pod" => {
                it.next();
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if listen.is_empty() {
        let env = env_listen.unwrap_or_else(|| "0.0.0.0:8080".into());
        for v in env.split(',').filter(|v| !v.trim().is_empty()) {
            listen.push(addr(v)?);
        }
    }
    Ok(Some(Args { listen, control }))
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// Runs every listener (and the control socket) until SIGTERM/SIGINT or an error.
async fn run(args: Args, identity: Identity) -> Result<(), String> {
    let seen = Seen::printing();
    let role = Role::from_env_value(std::env::var(ROLE_VAR).ok().as_deref());
    let mut tasks = tokio::task::JoinSet::new();
    for addr in &args.listen {
        let l = bind(*addr).map_err(|e| format!("{addr}: {e}"))?;
        let (identity, seen, addr) = (identity.clone(), seen.clone(), *addr);
        tasks.spawn(async move {
            serve_as(l, identity, seen, role)
                .await
                .map_err(|e| format!("{addr}: {e}"))
        });
    }
    if let Some(path) = args.control {
        tasks.spawn(async move {
            serve_control(&path, seen)
                .await
                .map_err(|e| format!("control socket {}: {e}", path.display()))
        });
    }
    // As PID 1 in a container a process gets no default SIGTERM action: exit on
    // SIGTERM/SIGINT explicitly, so pod deletion does not wait the grace period.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        r = tasks.join_next() => match r {
            Some(Ok(Err(e))) => Err(e),
            _ => Ok(()),
        },
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

/// Entry point of the `meshcheck-stub` binary and `meshcheck stub` (see [`HELP`]).
pub fn main_with_args(args: &[String]) -> std::process::ExitCode {
    if args.first().map(String::as_str) == Some("--fork-server") {
        return super::fork_server::run();
    }
    let args = match parse_args(args, std::env::var("LISTEN_ADDR").ok()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => return usage(&e),
    };
    std::process::ExitCode::from(run_pod(args) as u8)
}

/// Serves one pod (identity from the environment) on a runtime of its own until it is
/// stopped: exit code 0, or 3 with the reason on stderr.
pub(super) fn run_pod(args: Args) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshcheck-stub: cannot start runtime: {e}");
            return 3;
        }
    };
    match rt.block_on(run(args, Identity::from_env())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("meshcheck-stub: {e}");
            3
        }
    }
}

fn usage(msg: &str) -> std::process::ExitCode {
    eprintln!("meshcheck-stub: {msg}\nusage: meshcheck-stub [--listen ADDR]... [--control PATH]");
    std::process::ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn listen_repeats_and_the_environment_lists_addresses() {
        let a = parse_args(
            &s(&[
                "--listen",
                "127.0.0.1:1",
                "--listen",
                "127.0.0.1:2",
                "--control",
                "/c",
            ]),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.listen.len(), 2);
        assert_eq!(a.control, Some(PathBuf::from("/c")));
        let a = parse_args(&[], Some("127.0.0.1:1, 127.0.0.1:9".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            a.listen,
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:9".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_args(&[], None).unwrap().unwrap().listen,
            vec!["0.0.0.0:8080".parse().unwrap()]
        );
        assert!(parse_args(&s(&["--listen"]), None).is_err());
        assert!(parse_args(&s(&["--listen", "nowhere"]), None)
            .unwrap_err()
            .contains("nowhere"));
        assert_eq!(parse_args(&s(&["--help"]), None).unwrap(), None);
    }

    /// A stub on two ports of 127.0.0.1; returns the ports and what it saw.
    async fn two_port_stub() -> (u16, u16, Seen) {
        let seen = Seen::default();
        let mut ports = Vec::new();
        for _ in 0..2 {
            let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            ports.push(l.local_addr().unwrap().port());
            let id = Identity {
                service: "s".into(),
                version: "v9".into(),
                ..Default::default()
            };
            tokio::spawn(serve(l, id, seen.clone()));
        }
        (ports[0], ports[1], seen)
    }

    #[tokio::test]
    async fn as_the_sample_authorizer_allows_only_x_ext_authz_allow() {
        crate::targets::kind::tools::install_crypto_provider();
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(serve_as(
            l,
            Identity::default(),
            Seen::default(),
            Role::SampleExtAuthz,
        ));
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://127.0.0.1:{port}/headers");
        let r = c
            .get(&url)
            .header("x-ext-authz", "allow")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ext-authz-check-result"], "allowed");
        let r = c
            .get(&url)
            .header("x-ext-authz", "deny")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-ext-authz-check-result"], "denied");
        assert_eq!(
            r.text().await.unwrap(),
            crate::istio::authz::ext_authz::DENY_BODY
        );
        assert_eq!(
            Role::from_env_value(Some("ext-authz")),
            Role::SampleExtAuthz
        );
        assert_eq!(Role::from_env_value(Some("other")), Role::Echo);
    }

    #[tokio::test]
    async fn answers_on_every_port_with_the_status_and_delay_asked_for() {
        crate::targets::kind::tools::install_crypto_provider();
        let (a, b, seen) = two_port_stub().await;
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = c
            .get(format!("http://127.0.0.1:{b}/x?meshcheck-status=503"))
            .header("x-meshcheck-id", "one")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let e: Echo = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            (e.port, e.identity.version.as_str(), e.path.as_str()),
            (b, "v9", "/x")
        );
        let started = std::time::Instant::now();
        let r = c
            .post(format!("http://127.0.0.1:{a}/y"))
            .header("x-meshcheck-delay", "300ms")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(300));
        assert_eq!(r.status().as_u16(), 200);
        let e: Echo = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            (e.body.as_str(), e.method.as_str(), e.port),
            ("hello", "POST", a)
        );
        let r = c
            .get(format!("http://127.0.0.1:{a}/"))
            .header("x-meshcheck-status", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r.text().await.unwrap().contains("200-599"));
        assert_eq!(seen.with_id("one").len(), 1);
    }

    #[tokio::test]
    async fn sends_the_response_headers_asked_for_each_value_a_line() {
        crate::targets::kind::tools::install_crypto_provider();
        let (a, _, _) = two_port_stub().await;
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = c
            .get(format!("http://127.0.0.1:{a}/h"))
            .header("x-meshcheck-response-header", "foo=bar")
            .header("x-meshcheck-response-header", "foo=baz")
            .header("x-meshcheck-response-header", "x-one=1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let all = |n: &str| -> Vec<String> {
            r.headers()
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(all("foo"), vec!["bar", "baz"]);
        assert_eq!(all("x-one"), vec!["1"]);
        let r = c
            .get(format!("http://127.0.0.1:{a}/h"))
            .header("x-meshcheck-response-header", "content-length=1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("frames the stub's own answer"));
    }
}
