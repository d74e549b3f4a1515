//! Check kinds (one file each) and what they share: the context a check runs in, its
//! outcome, and requests through the ingress with their transcripts.

mod distribution;
pub mod http;
mod mirror;
mod ports;
mod sidecars;
pub mod status;
mod steps;

pub use sidecars::{injection_status, sidecar_shape, xfcc_uris, InjectionStatus};

use crate::suite::{CheckKind, CheckSpec, RequestSpec};
use crate::targets::Target;
use crate::timeouts::Timeouts;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a check may use.
#[derive(Clone)]
pub struct Ctx {
    pub target: Arc<dyn Target>,
    pub timeouts: Timeouts,
    /// Budget for an expectation to become consistently true.
    pub budget: Duration,
    /// The gateway Service port under test (the suite's `ingress.port`).
    pub service_port: u16,
    /// Connections not reused (as the Gateway API conformance suite does).
    pub client: reqwest::Client,
    /// A pooled client for bulk requests.
    pub pooled: reqwest::Client,
}

/// A client for requests through the ingress: no proxy, no redirects followed, Nagle
/// off, every request bounded by `timeout`; `pooled` keeps connections for reuse.
fn client_builder(timeout: Duration, pooled: bool) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true);
    if pooled {
        b
    } else {
        b.pool_max_idle_per_host(0)
    }
}

/// The unpooled and the pooled client for plain-http requests, every request bounded
/// by `timeout`. They never speak TLS (an https request gets a client of its own with
/// the CA it trusts: [`Ctx::client_for`]; redirects are not followed), so they trust no
/// certificate: without `tls_certs_only` reqwest's rustls builds the platform verifier,
/// which reads and parses the whole system root store (/etc/ssl/certs, ~150 certificates
/// twice) for every client, 10-80 ms each, and a run builds two per check.
fn clients(timeout: Duration) -> (reqwest::Client, reqwest::Client) {
    let build = |pooled| {
        client_builder(timeout, pooled)
            .tls_certs_only(std::iter::empty())
            .build()
            .unwrap_or_default()
    };
    (build(false), build(true))
}

impl Ctx {
    pub fn new(target: Arc<dyn Target>, timeouts: Timeouts, service_port: u16) -> Ctx {
        // reqwest's rustls needs the process-level provider (idempotent).
        crate::targets::kind::tools::install_crypto_provider();
        let budget = timeouts
            .consistency
            .unwrap_or_else(|| target.consistency_budget());
        let (client, pooled) = clients(timeouts.request);
        Ctx {
            target,
            budget,
            service_port,
            client,
            pooled,
            timeouts,
        }
    }

    /// The context for a check whose answers the configuration makes slow: each
    /// request may take `configured` (the simulation's longest answer: fault delay,
    /// timeouts, retries, the stub's delay) on top of the usual request timeout, so a
    /// right answer is never cut off as a timeout.
    pub fn allowing(&self, configured: Duration) -> Ctx {
        if configured.is_zero() {
            return self.clone();
        }
        let mut timeouts = self.timeouts.clone();
        timeouts.request += configured;
        let (client, pooled) = clients(timeouts.request);
        Ctx {
            client,
            pooled,
            timeouts,
            ..self.clone()
        }
    }

    /// node address : NodePort of the gateway Service port `req` goes to.
    pub fn ingress_for(&self, req: &RequestSpec) -> Result<SocketAddr, String> {
        let port = req.service_port(self.service_port);
        let node_port = match &req.gateway {
            None => self.target.node_port(port).ok_or_else(|| {
                format!(
                    "the target exposes no NodePort for gateway Service port {port} (no LoadBalancer/NodePort Service in front of a gateway pod has that port)"
                )
            })?,
            Some(g) => self.target.node_port_via(g, port).ok_or_else(|| {
                format!(
                    "the {} target exposes no NodePort for port {port} of gateway {g} (no gateway Service of that Gateway or name with that port; request.gateway is resolved on the local target only)",
                    self.target.name()
                )
            })?,
        };
        Ok(SocketAddr::new(self.target.node_address(), node_port))
    }

    /// The client for `req` sent to `addr`: the shared one for plain HTTP; for https a
    /// client that connects to `addr` with SNI = the request's host and trusts the
    /// suite's `ca_file`, or the target's CA (the local target's per-run CA), or
    /// anything (`insecure`).
    pub fn client_for(
        &self,
        req: &RequestSpec,
        addr: SocketAddr,
        pooled: bool,
    ) -> Result<reqwest::Client, String> {
        if !req.is_https() {
            return Ok(if pooled {
                self.pooled.clone()
            } else {
                self.client.clone()
            });
        }
        let host = tls_host(req, addr);
        let mut b = client_builder(self.timeouts.request, pooled).resolve(&host, addr);
        if req.insecure {
            b = b.tls_danger_accept_invalid_certs(true);
        } else {
            let ca = req.ca_file.clone().or_else(|| self.target.tls_ca_file());
            let Some(ca) = ca else {
                return Err(format!(
                    "an https request to the {} target needs `ca_file` (the CA of the gateway's Secret) or `insecure: true`",
                    self.target.name()
                ));
            };
            let pem = std::fs::read(&ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            b = b.tls_certs_only(certs);
        }
        b.build()
            .map_err(|e| format!("cannot build the https client: {}", error_text(&e)))
    }

    /// Appends what the target noticed (a process that died) to a failure message.
    pub fn with_health(&self, mut msg: String) -> String {
        let h = self.target.health();
        if !h.is_empty() {
            msg.push_str("; target: ");
            msg.push_str(&h.join("; "));
        }
        msg
    }
}

/// The result of one check.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub passed: bool,
    /// One line: why it failed, or a summary of what passed.
    pub message: String,
    /// Expected vs observed, for the report body.
    pub detail: String,
    /// The last attempt's requests and responses.
    pub transcript: String,
    pub attempts: u32,
    /// Failed at least once before passing.
    pub flaky: bool,
}

impl Outcome {
    pub fn pass(message: impl Into<String>) -> Outcome {
        Outcome {
            passed: true,
            message: message.into(),
            attempts: 1,
            ..Default::default()
        }
    }
    pub fn fail(message: impl Into<String>, detail: impl Into<String>) -> Outcome {
        Outcome {
            passed: false,
            message: message.into(),
            detail: detail.into(),
            attempts: 1,
            ..Default::default()
        }
    }
}

/// Runs one check.
pub async fn run(ctx: &Ctx, check: &CheckSpec) -> Outcome {
    run_predicted(ctx, check, &[]).await
}

/// Runs one check; a `steps` check with the model's prediction for each step (by
/// position), which allows each request what the configuration makes it take and is
/// shown beside a failed step.
pub async fn run_predicted(
    ctx: &Ctx,
    check: &CheckSpec,
    step_predictions: &[Option<crate::istio::Prediction>],
) -> Outcome {
    match &check.kind {
        CheckKind::Http(h) => http::run(ctx, h).await,
        CheckKind::Distribution(d) => distribution::run(ctx, d).await,
        CheckKind::Ports(p) => ports::run(ctx, p).await,
        CheckKind::Sidecars(s) => sidecars::run(ctx, s).await,
        CheckKind::Steps(s) => steps::run(ctx, s, step_predictions).await,
        CheckKind::Status(s) => status::run(ctx, s).await,
    }
}

/// One exchange through the ingress.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: Option<u16>,
    /// Response headers (lower-case names), in the order received.
    pub headers: Vec<(String, String)>,
    pub echo: Option<crate::stub::Echo>,
    pub body: String,
    /// Transport error when there is no response.
    pub error: Option<String>,
    pub transcript: String,
    /// From sending the request to the end of the response body.
    pub elapsed: Duration,
}

impl Exchange {
    /// The first response header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of response header `name` (any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `200 from atlas-ui v1 (pod atlas-ui-…)`, `404 (no route)`, `connection refused`.
    pub fn summary(&self) -> String {
        match (&self.status, &self.echo, &self.error) {
            (_, _, Some(e)) => e.clone(),
            (Some(s), Some(e), _) => format!(
                "{s} from {} {} (pod {}/{}, path {})",
                e.identity.service,
                e.identity.version,
                e.identity.namespace,
                e.identity.pod,
                e.path
            ),
            (Some(s), None, _) => {
                let body = self.body.trim();
                if body.is_empty() {
                    format!("{s} with an empty body")
                } else {
                    format!("{s}: {}", truncate(body, 120))
                }
            }
            _ => "no response".into(),
        }
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Describes a reqwest error by its root cause (`connection refused`, `timed out`).
fn error_text(e: &reqwest::Error) -> String {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    if e.is_timeout() {
        format!("timed out ({last})")
    } else if e.is_connect() {
        format!("cannot connect: {last}")
    } else {
        last
    }
}

/// The name an https request connects to (its SNI): the request's host without port.
fn tls_host(req: &RequestSpec, addr: SocketAddr) -> String {
    let host = req.host.clone().unwrap_or_else(|| addr.ip().to_string());
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h.to_string(),
        _ => host,
    }
}

/// Sends `req` to the ingress at `addr` (for https, `client` comes from
/// [`Ctx::client_for`], which connects the request's host to `addr`).
pub async fn send(client: &reqwest::Client, addr: SocketAddr, req: &RequestSpec) -> Exchange {
    let path = req.path_and_query();
    let url = if req.is_https() {
        format!("https://{}:{}{path}", tls_host(req, addr), addr.port())
    } else {
        format!("http://{addr}{path}")
    };
    let started = std::time::Instant::now();
    let failed = |err: String, mut t: String| {
        t.push_str(&format!("! {err}\n"));
        Exchange {
            status: None,
            headers: Vec::new(),
            echo: None,
            body: String::new(),
            error: Some(err),
            transcript: t,
            elapsed: started.elapsed(),
        }
    };
    // The suite loader refuses unknown methods; never send another one instead.
    let method = match reqwest::Method::from_bytes(req.method().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return failed(
                format!("unknown HTTP method {:?}", req.method()),
                String::new(),
            )
        }
    };
    let mut t = format!("> {method} {path} HTTP/1.1\n");
    if req.is_https() {
        t = format!("* TLS to {addr}, SNI {}\n{t}", tls_host(req, addr));
    }
    let host = req.host.clone().unwrap_or_else(|| addr.to_string());
    t.push_str(&format!("> host: {host}\n"));
    let mut rb = client.request(method, &url).header("host", &host);
    // Each value its own header line (reqwest appends), in order.
    for (k, vs) in &req.headers {
        for v in vs.all() {
            rb = rb.header(k, v);
            t.push_str(&format!("> {k}: {v}\n"));
        }
    }
    // The request's JWT (its query parameter is in `path` already).
    if let Some((k, v)) = req.token.as_ref().and_then(|t| t.header()) {
        rb = rb.header(&k, &v);
        t.push_str(&format!("> {k}: {v}\n"));
    }
    if let Some(b) = &req.body {
        t.push_str(&format!(">\n{}\n", truncate(b, 1024)));
        rb = rb.body(b.clone());
    }
    match rb.send().await {
        Err(e) => failed(error_text(&e), t),
        Ok(resp) => {
            let status = resp.status();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            t.push_str(&format!("< HTTP/1.1 {status}\n"));
            for (k, v) in resp.headers() {
                t.push_str(&format!(
                    "< {k}: {}\n",
                    String::from_utf8_lossy(v.as_bytes())
                ));
            }
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) => {
                    let err = error_text(&e);
                    t.push_str(&format!("! reading the body: {err}\n"));
                    return Exchange {
                        status: Some(status.as_u16()),
                        headers,
                        echo: None,
                        body: String::new(),
                        error: Some(format!("{status} but the body failed: {err}")),
                        transcript: t,
                        elapsed: started.elapsed(),
                    };
                }
            };
            t.push_str("<\n");
            t.push_str(&truncate(&body, 4096));
            t.push('\n');
            let echo = serde_json::from_str::<crate::stub::Echo>(&body).ok();
            Exchange {
                status: Some(status.as_u16()),
                headers,
                echo,
                body,
                error: None,
                transcript: t,
                elapsed: started.elapsed(),
            }
        }
    }
}
