//! The stub backend: answers every request with JSON saying who answered (service,
//! version, pod, namespace, from the environment) and what it received (method, path,
//! host, headers), like the Gateway API conformance echo server. The same code is the
//! `meshcheck-stub` binary, the container image of the cluster targets and the app
//! process of every pod on the local target.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Who a stub is. Read from SERVICE_NAME, VERSION, POD_NAME, NAMESPACE.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub namespace: String,
}

impl Identity {
    pub fn from_env() -> Identity {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Identity {
            service: var("SERVICE_NAME"),
            version: var("VERSION"),
            pod: var("POD_NAME"),
            namespace: var("NAMESPACE"),
        }
    }
}

/// The stub's answer: its identity and the request as it arrived.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    #[serde(flatten)]
    pub identity: Identity,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    pub host: String,
    /// Lower-case header name -> values in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(|s| s.as_str())
    }
}

fn echo(identity: &Identity, req: &Request<hyper::body::Incoming>) -> Echo {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Echo {
        identity: identity.clone(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        host: req
            .headers()
            .get(hyper::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default(),
        headers,
    }
}

/// Serves until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, identity: Identity) -> std::io::Result<()> {
    let identity = std::sync::Arc::new(identity);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let identity = identity.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = serde_json::to_vec(&echo(&identity, &req)).unwrap_or_default();
                async move {
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Entry point of the `meshcheck-stub` binary and `meshcheck stub`:
/// `[--listen ADDR]` (default `$LISTEN_ADDR`, else `0.0.0.0:8080`).
pub fn main_with_args(args: &[String]) -> std::process::ExitCode {
    let mut listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => match it.next() {
                Some(v) => listen = v.clone(),
                None => return usage("--listen needs an address"),
            },
            "--pod" => {
                // Informational (shows in `ps`); identity comes from the environment.
                it.next();
            }
            "-h" | "--help" => {
                println!("meshcheck-stub [--listen ADDR]\n\nIdentity from SERVICE_NAME, VERSION, POD_NAME, NAMESPACE.");
                return std::process::ExitCode::SUCCESS;
            }
            other => return usage(&format!("unexpected argument {other}")),
        }
    }
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => return usage(&format!("bad listen address {listen}: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshcheck-stub: cannot start runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let identity = Identity::from_env();
    let res = rt.block_on(async move {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        sock.bind(addr)?;
        let listener = sock.listen(4096)?;
        // As PID 1 in a container a process gets no default SIGTERM action: exit on
        // SIGTERM/SIGINT explicitly, so pod deletion does not wait the grace period.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            r = serve(listener, identity) => r,
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
        }
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshcheck-stub: {listen}: {e}");
            std::process::ExitCode::from(3)
        }
    }
}

fn usage(msg: &str) -> std::process::ExitCode {
    eprintln!("meshcheck-stub: {msg}\nusage: meshcheck-stub [--listen ADDR]");
    std::process::ExitCode::from(2)
}
