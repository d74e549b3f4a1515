//! Check kinds (one file each) and what they share: the context a check runs in, its
//! outcome, and requests through the ingress with their transcripts.

mod client;
mod distribution;
pub mod http;
mod mirror;
mod plaintext;
mod ports;
mod sidecars;
pub mod status;
mod steps;

pub use client::{send, usable_source, Client, Options, Trust};
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
    /// Plain http, connections not reused (as the Gateway API conformance suite does).
    pub client: Client,
    /// Plain http, a pooled client for bulk requests.
    pub pooled: Client,
}

/// The unpooled and the pooled client for plain-http requests, every request bounded
/// by `timeout` (an https request, or one from a stated source, gets a client of its
/// own: [`Ctx::client_for`]).
fn clients(timeout: Duration) -> (Client, Client) {
    (Client::plain(timeout, false), Client::plain(timeout, true))
}

impl Ctx {
    pub fn new(target: Arc<dyn Target>, timeouts: Timeouts, service_port: u16) -> Ctx {
        // The process-level TLS provider, for what the checks reach through the
        // target (idempotent).
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

    /// The client for `req` sent to `addr`: the shared one for plain HTTP; else one of
    /// its own: from `req.source` (which must be an address of this machine:
    /// [`usable_source`]), and for https connecting with SNI = the request's host and
    /// trusting the suite's `ca_file`, or the target's CA (the local target's per-run
    /// CA), or anything (`insecure`).
    pub fn client_for(
        &self,
        req: &RequestSpec,
        addr: SocketAddr,
        pooled: bool,
    ) -> Result<Client, String> {
        if !req.is_https() && req.source.is_none() {
            return Ok(if pooled {
                self.pooled.clone()
            } else {
                self.client.clone()
            });
        }
        let source = req
            .source
            .map(|s| usable_source(s, addr, self.target.name()))
            .transpose()?;
        let tls = if req.is_https() {
            Some((client::tls_host(req, addr), self.trust(req)?))
        } else {
            None
        };
        Client::new(Options {
            timeout: self.timeouts.request,
            pooled,
            source,
            tls,
        })
    }

    /// What an https request trusts: anything (`insecure`), the suite's `ca_file`, or
    /// the target's CA.
    fn trust(&self, req: &RequestSpec) -> Result<Trust, String> {
        if req.insecure {
            return Ok(Trust::Anything);
        }
        match req.ca_file.clone().or_else(|| self.target.tls_ca_file()) {
            Some(ca) => Ok(Trust::CaFile(ca)),
            None => Err(format!(
                "an https request to the {} target needs `ca_file` (the CA of the gateway's Secret) or `insecure: true`",
                self.target.name()
            )),
        }
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
