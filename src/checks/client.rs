//! The HTTP/1.1 client of the checks, the probe and the upgrade prober: every request
//! through the ingress goes out with its path exactly as the suite writes it
//! (`/./admin`, `/a/../admin`, `//admin`, `/%61dmin`, `\admin`, `/admin#x`), from the
//! request's `source` address when it names one, over TCP or TLS (SNI = the request's
//! host; the suite's `ca_file`, the target's CA, or anything with `insecure`).
//!
//! hyper's client connection (`hyper::client::conn::http1`) writes the request and
//! reads the answer. A URL-based client cannot be used: reqwest (through the `url`
//! crate) resolves `.` and `..` segments, percent-encodes or refuses other spellings and
//! cannot send a backslash, so the gateway would never see the path an
//! AuthorizationPolicy suite attacks with. hyper writes an origin-form `http::Uri` as
//! given; where `http::Uri` refuses the path or would change it (no leading `/` as in
//! `\admin`, a `#fragment` it drops, a byte it rejects), this module writes the request
//! line itself ([`OwnRequestLine`]) and hyper still writes the headers and the body and
//! reads the answer.

use super::{truncate, Exchange};
use crate::suite::RequestSpec;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Idle connections kept per address by a pooled client.
const MAX_IDLE_PER_ADDRESS: usize = 64;

/// A client for requests through the ingress: no proxy, no redirect followed, Nagle
/// off, every request bounded by its timeout. Cheap to clone (clones share idle
/// connections); an unpooled client opens a connection per request (as the Gateway
/// API conformance suite does).
#[derive(Clone)]
pub struct Client(Arc<Config>);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.0.timeout)
            .field("tls", &self.0.tls.as_ref().map(|t| &t.name))
            .field("source", &self.0.source)
            .field("pooled", &self.0.idle.is_some())
            .finish()
    }
}

struct Config {
    timeout: Duration,
    tls: Option<Tls>,
    source: Option<IpAddr>,
    /// Idle connections by address; None: one connection per request.
    idle: Option<Mutex<HashMap<SocketAddr, Vec<Conn>>>>,
}

struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// How a client is built.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Bounds each request, from connecting to the end of the answer's body.
    pub timeout: Duration,
    /// Keep connections for reuse.
    pub pooled: bool,
    /// The address requests are sent from (`request.source`); None: the system's
    /// choice.
    pub source: Option<IpAddr>,
    /// https: TLS with this server name (SNI) and trust.
    pub tls: Option<(String, Trust)>,
}

/// The server certificates an https client accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Those signed by a CA of this PEM bundle.
    CaFile(PathBuf),
    /// Any (`insecure: true`).
    Anything,
}

impl Client {
    /// A plain-http client.
    pub fn plain(timeout: Duration, pooled: bool) -> Client {
        Client(Arc::new(Config {
            timeout,
            tls: None,
            source: None,
            idle: pooled.then(Default::default),
        }))
    }

    pub fn new(o: Options) -> Result<Client, String> {
        let tls = match &o.tls {
            None => None,
            Some((name, trust)) => Some(Tls {
                config: tls_config(trust)?,
                name: ServerName::try_from(name.clone())
                    .map_err(|_| format!("https: {name:?} is not a TLS server name"))?,
            }),
        };
        Ok(Client(Arc::new(Config {
            timeout: o.timeout,
            tls,
            source: o.source,
            idle: o.pooled.then(Default::default),
        })))
    }

    pub fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// Sends `out` to `addr`: the answer's head and the connection it came on (to be
    /// given back with [`Client::checkin`] once the body is read). A pooled
    /// connection that closed before the request was written is replaced by a new
    /// one.
    async fn round_trip(
        &self,
        addr: SocketAddr,
        out: &Outgoing,
    ) -> Result<(Response<Incoming>, Conn), String> {
        let own_line = out.own_line();
        if own_line.is_none() {
            while let Some(mut conn) = self.checkout(addr) {
                if conn.sender.ready().await.is_err() {
                    continue;
                }
                match conn.sender.try_send_request(out.request()).await {
                    Ok(resp) => return Ok((resp, conn)),
                    Err(e) if e.message().is_some() => continue,
                    Err(e) => return Err(cause(e.error())),
                }
            }
        }
        let mut conn = self.open(addr, own_line).await?;
        let resp = conn
            .sender
            .send_request(out.request())
            .await
            .map_err(|e| cause(&e))?;
        Ok((resp, conn))
    }

    /// An idle connection to `addr`, if the client keeps them.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.0.idle.as_ref()?.lock().ok()?;
        let conns = idle.get_mut(&addr)?;
        while let Some(c) = conns.pop() {
            if !c.sender.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `conn` for another request to `addr` when the client pools and the
    /// connection can carry one.
    fn checkin(&self, addr: SocketAddr, conn: Conn) {
        let Some(idle) = &self.0.idle else { return };
        if !conn.reusable || conn.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = idle.lock() {
            let conns = idle.entry(addr).or_default();
            if conns.len() < MAX_IDLE_PER_ADDRESS {
                conns.push(conn);
            }
        }
    }

    /// A new connection to `addr` (TLS when the client speaks it), whose first
    /// request line is `own_line` when given.
    async fn open(&self, addr: SocketAddr, own_line: Option<Vec<u8>>) -> Result<Conn, String> {
        let tcp = self.connect(addr).await?;
        let io: Box<dyn Io> = match &self.0.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(handshake(tls, tcp).await?),
        };
        let reusable = own_line.is_none();
        let io: Box<dyn Io> = match own_line {
            Some(line) => Box::new(OwnRequestLine::new(io, line)),
            None => io,
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            // One buffer per write, so OwnRequestLine sees hyper's request line first.
            .writev(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| cause(&e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            driver,
            reusable,
        })
    }

    /// A TCP connection to `addr` from the client's source address, if any.
    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("cannot connect: {e}"))?;
        if let Some(src) = self.0.source {
            socket
                .bind(SocketAddr::new(src, 0))
                .map_err(|e| format!("cannot send from {src}: {e}"))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// A connection and the task driving it (aborted when the connection is dropped, so
/// a request given up on does not leave it open).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    /// Whether it may carry another request: not when its request line was this
    /// module's.
    reusable: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What a connection is carried on: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS over `tcp`, with the client's server name and trust.
async fn handshake(
    tls: &Tls,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.name.clone(), tcp)
        .await
        .map_err(|e| format!("cannot connect: TLS handshake failed: {}", root_cause(&e)))
}

/// The rustls configuration for `trust`: ring, TLS 1.2 and 1.3, ALPN http/1.1.
fn tls_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot build the https client: {e}"))?;
    let mut config = match trust {
        Trust::CaFile(path) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates of the PEM bundle at `path`.
fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let bad = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| bad(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(roots)
}

/// `insecure: true`: any server certificate is accepted (the handshake's signatures
/// are still verified, with the provider's algorithms).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `source` when requests to `addr` can come from it here: an address of this
/// machine (any of 127.0.0.0/8 on Linux) of `addr`'s family. Otherwise why not: a
/// request sent from elsewhere would not test what the suite states (`target` names
/// the target for the message).
pub fn usable_source(source: IpAddr, addr: SocketAddr, target: &str) -> Result<IpAddr, String> {
    if source.is_ipv4() != addr.is_ipv4() {
        return Err(format!(
            "request.source {source} cannot reach the gateway at {} on the {target} target (another address family)",
            addr.ip()
        ));
    }
    std::net::UdpSocket::bind(SocketAddr::new(source, 0)).map_err(|e| {
        format!(
            "request.source {source} is not an address of this machine ({e}): the {target} target cannot be sent a request from it"
        )
    })?;
    Ok(source)
}

/// A request as it goes out: method, request-target (the path and query as the
/// suite writes them), header lines in order, body.
struct Outgoing {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Outgoing {
    /// `req` to `addr`, with its Host header (default `addr`) first; `accept: */*`
    /// unless the suite gives one (what the checks have always sent).
    fn of(req: &RequestSpec, addr: SocketAddr) -> Result<Outgoing, String> {
        // The suite loader refuses unknown methods; never send another one instead.
        let method = Method::from_bytes(req.method().as_bytes())
            .map_err(|_| format!("unknown HTTP method {:?}", req.method()))?;
        let mut headers = HeaderMap::new();
        append(&mut headers, "host", &host_header(req, addr))?;
        // Each value its own header line, in order.
        for (k, vs) in &req.headers {
            for v in vs.all() {
                append(&mut headers, k, v)?;
            }
        }
        // The request's JWT (as a query parameter it is in the target already).
        if let Some((k, v)) = req.token.as_ref().and_then(|t| t.header()) {
            append(&mut headers, &k, &v)?;
        }
        if !headers.contains_key(hyper::header::ACCEPT) {
            headers.insert(hyper::header::ACCEPT, HeaderValue::from_static("*/*"));
        }
        Ok(Outgoing {
            method,
            target: req.path_and_query(),
            headers,
            body: req.body.clone().map(Bytes::from).unwrap_or_default(),
        })
    }

    /// hyper's request: its Uri is the request-target when `http::Uri` carries it
    /// unchanged; otherwise `/`, which [`OwnRequestLine`] replaces on the wire.
    fn request(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = as_uri(&self.target).unwrap_or_else(|| Uri::from_static("/"));
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// The request line this module writes, when `http::Uri` cannot carry the target.
    fn own_line(&self) -> Option<Vec<u8>> {
        as_uri(&self.target)
            .is_none()
            .then(|| request_line(&self.method, &self.target))
    }
}

fn append(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header {name:?}: not a valid header name"))?;
    let v = HeaderValue::from_str(value)
        .map_err(|_| format!("header {name}: {value:?} is not a valid header value"))?;
    headers.append(n, v);
    Ok(())
}

/// The request-target as an `http::Uri` when it is one unchanged (hyper then writes
/// it as given); None when `http::Uri` refuses it (`\admin`, a space) or would change
/// it (it drops a `#fragment`).
fn as_uri(target: &str) -> Option<Uri> {
    let uri: Uri = target.parse().ok()?;
    // What hyper writes is the Uri's Display, compared byte for byte (Uri's own
    // equality with a str ignores case in the authority).
    #[allow(clippy::cmp_owned)]
    let unchanged = uri.to_string() == target;
    unchanged.then_some(uri)
}

/// The HTTP/1.1 request line of `method` and `target`, byte for byte.
fn request_line(method: &Method, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\n").into_bytes()
}

/// A stream whose first request line is `line` instead of the one hyper writes:
/// hyper's is swallowed up to its line end, then `line` goes out, then everything
/// else as hyper writes it (headers, body). Used only where `http::Uri` cannot carry
/// the path as written (see the module comment); such a connection carries one
/// request.
struct OwnRequestLine<S> {
    inner: S,
    line: Vec<u8>,
    /// How much of `line` is written.
    written: usize,
    /// Whether hyper's own request line has been swallowed.
    swallowed: bool,
}

impl<S> OwnRequestLine<S> {
    fn new(inner: S, line: Vec<u8>) -> Self {
        OwnRequestLine {
            inner,
            line,
            written: 0,
            swallowed: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> OwnRequestLine<S> {
    /// Writes what is left of `line`.
    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.line.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.line[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for OwnRequestLine<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OwnRequestLine<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.swallowed {
            return Poll::Ready(Ok(match buf.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    this.swallowed = true;
                    end + 1
                }
                None => buf.len(),
            }));
        }
        ready!(this.poll_line(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.swallowed {
            ready!(this.poll_line(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The Host header: the request's host, or the node address and port.
fn host_header(req: &RequestSpec, addr: SocketAddr) -> String {
    req.host.clone().unwrap_or_else(|| addr.to_string())
}

/// The name an https request connects to (its SNI): the request's host without port.
pub fn tls_host(req: &RequestSpec, addr: SocketAddr) -> String {
    let host = req.host.clone().unwrap_or_else(|| addr.ip().to_string());
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h.to_string(),
        _ => host,
    }
}

/// The innermost cause of `e` (`Connection refused (os error 111)`), after `e` when
/// they differ.
fn cause(e: &hyper::Error) -> String {
    let root = root_cause(e);
    let top = e.to_string();
    if root == top {
        top
    } else {
        format!("{top}: {root}")
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// The request part of a transcript: TLS and source, request line, header lines, body.
fn transcript_head(client: &Client, addr: SocketAddr, req: &RequestSpec, out: &Outgoing) -> String {
    let mut t = String::new();
    if req.is_https() {
        t.push_str(&format!("* TLS to {addr}, SNI {}\n", tls_host(req, addr)));
    }
    if let Some(src) = client.0.source {
        t.push_str(&format!("* from {src}\n"));
    }
    t.push_str(&format!("> {} {} HTTP/1.1\n", out.method, out.target));
    for (k, v) in &out.headers {
        t.push_str(&format!(
            "> {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    if let Some(b) = &req.body {
        t.push_str(&format!(">\n{}\n", truncate(b, 1024)));
    }
    t
}

/// Sends `req` to the ingress at `addr` (for https, `client` is one from
/// [`super::Ctx::client_for`]: TLS with SNI = the request's host) and reads the whole
/// answer, within the client's timeout. Redirects are not followed.
pub async fn send(client: &Client, addr: SocketAddr, req: &RequestSpec) -> Exchange {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + client.timeout();
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
    let out = match Outgoing::of(req, addr) {
        Ok(o) => o,
        Err(e) => return failed(e, String::new()),
    };
    let mut t = transcript_head(client, addr, req, &out);
    let timed_out = || format!("timed out (no answer within {:?})", client.timeout());
    let (resp, conn) = match tokio::time::timeout_at(deadline, client.round_trip(addr, &out)).await
    {
        Err(_) => return failed(timed_out(), t),
        Ok(Err(e)) => return failed(e, t),
        Ok(Ok(r)) => r,
    };
    let (head, body) = resp.into_parts();
    let status = head.status;
    let headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    t.push_str(&format!("< HTTP/1.1 {status}\n"));
    for (k, v) in &headers {
        t.push_str(&format!("< {k}: {v}\n"));
    }
    let body = match tokio::time::timeout_at(deadline, body.collect()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        failure => {
            let err = match failure {
                Ok(Err(e)) => cause(&e),
                _ => timed_out(),
            };
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
    let elapsed = started.elapsed();
    client.checkin(addr, conn);
    t.push_str("<\n");
    t.push_str(&truncate(&body, 4096));
    t.push('\n');
    Exchange {
        status: Some(status.as_u16()),
        headers,
        echo: serde_json::from_str::<crate::stub::Echo>(&body).ok(),
        body,
        error: None,
        transcript: t,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The attack spellings of a DENY rule on /admin.
    const SPELLINGS: &[&str] = &[
        "/./admin",
        "/a/../admin",
        "//admin",
        "/%61dmin",
        "/%2e/admin",
        "/admin/",
        "/ADMIN",
        "\\admin",
        "/admin;x",
        "/admin?x",
        "/admin#x",
    ];

    #[test]
    fn uris_carry_a_path_only_when_unchanged() {
        for p in [
            "/./admin",
            "/a/../admin",
            "//admin",
            "/%61dmin",
            "/%2e/admin",
            "/admin/",
            "/ADMIN",
            "/admin;x",
            "/admin?x",
            "/a\\b",
        ] {
            let uri = as_uri(p).unwrap_or_else(|| panic!("{p} as an http::Uri"));
            assert_eq!(uri.to_string(), p);
        }
        // http::Uri refuses these or drops the fragment: the line is written here.
        for p in ["\\admin", "/admin#x", "/a b", "/a\tb"] {
            assert!(as_uri(p).is_none(), "{p} would not go out as written");
        }
    }

    #[test]
    fn the_request_line_is_the_target_byte_for_byte() {
        assert_eq!(
            request_line(&Method::GET, "\\admin"),
            b"GET \\admin HTTP/1.1\r\n"
        );
        assert_eq!(
            request_line(&Method::from_bytes(b"PATCH").unwrap(), "/admin#x"),
            b"PATCH /admin#x HTTP/1.1\r\n"
        );
    }

    /// A server on 127.0.0.1 answering one connection: the head it received and the
    /// peer address, sent on the returned channel.
    async fn one_answer() -> (
        SocketAddr,
        tokio::sync::oneshot::Receiver<(String, SocketAddr)>,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, peer) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                assert!(
                    n > 0,
                    "closed mid-head: {:?}",
                    String::from_utf8_lossy(&head)
                );
                head.extend_from_slice(&b[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\nx-a: 2\r\n\r\nok")
                .await
                .unwrap();
            let _ = tx.send((String::from_utf8_lossy(&head).into_owned(), peer));
        });
        (addr, rx)
    }

    fn get(path: &str) -> RequestSpec {
        RequestSpec {
            path: path.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_spelling_goes_out_as_written() {
        let client = Client::plain(Duration::from_secs(5), false);
        for p in SPELLINGS {
            let (addr, seen) = one_answer().await;
            let x = send(&client, addr, &get(p)).await;
            assert_eq!(x.status, Some(200), "{p}: {}", x.transcript);
            let (head, _) = seen.await.unwrap();
            let first = head.lines().next().unwrap();
            assert_eq!(first, format!("GET {p} HTTP/1.1"), "{head}");
            // hyper's placeholder line never reaches the wire.
            assert_eq!(head.matches("HTTP/1.1").count(), 1, "{head}");
            assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
        }
    }

    #[tokio::test]
    async fn headers_body_and_answer_survive_an_own_request_line() {
        let client = Client::plain(Duration::from_secs(5), false);
        let (addr, seen) = one_answer().await;
        let mut req = get("\\admin");
        req.method = Some("post".into());
        req.host = Some("a.example".into());
        req.body = Some("hello".into());
        req.headers.insert(
            "x-forwarded-for".into(),
            crate::suite::HeaderValues::Many(vec!["1.2.3.4, 5.6.7.8".into(), "9.9.9.9".into()]),
        );
        let x = send(&client, addr, &req).await;
        let (head, _) = seen.await.unwrap();
        assert!(
            head.starts_with("POST \\admin HTTP/1.1\r\nhost: a.example\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8\r\nx-forwarded-for: 9.9.9.9\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");
        assert_eq!(x.status, Some(200));
        assert_eq!(x.body, "ok");
        assert_eq!(x.header_values("x-a"), ["1", "2"]);
        assert!(
            x.transcript.contains("> POST \\admin HTTP/1.1\n"),
            "{}",
            x.transcript
        );
    }

    #[tokio::test]
    async fn the_source_address_is_the_peer_the_server_sees() {
        let src: IpAddr = "127.0.0.55".parse().unwrap();
        let client = Client::new(Options {
            timeout: Duration::from_secs(5),
            source: Some(src),
            ..Default::default()
        })
        .unwrap();
        let (addr, seen) = one_answer().await;
        send(&client, addr, &get("/")).await;
        assert_eq!(seen.await.unwrap().1.ip(), src);
        // Without one, the system picks (127.0.0.1 to 127.0.0.1).
        let (addr, seen) = one_answer().await;
        send(
            &Client::plain(Duration::from_secs(5), false),
            addr,
            &get("/"),
        )
        .await;
        assert_ne!(seen.await.unwrap().1.ip(), src);
    }

    #[test]
    fn a_source_that_is_not_here_is_refused() {
        let gw: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(usable_source("127.0.0.55".parse().unwrap(), gw, "local").is_ok());
        let e = usable_source("192.0.2.10".parse().unwrap(), gw, "kind").unwrap_err();
        assert!(
            e.starts_with("request.source 192.0.2.10 is not an address of this machine"),
            "{e}"
        );
        let e = usable_source("::1".parse().unwrap(), gw, "local").unwrap_err();
        assert!(e.contains("another address family"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_silent_server_are_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        let x = send(
            &Client::plain(Duration::from_secs(5), false),
            closed,
            &get("/"),
        )
        .await;
        assert_eq!(x.status, None);
        let e = x.error.unwrap();
        assert!(e.starts_with("cannot connect: "), "{e}");

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let x = send(
            &Client::plain(Duration::from_millis(300), false),
            addr,
            &get("/"),
        )
        .await;
        assert!(
            x.error.unwrap().starts_with("timed out"),
            "{}",
            x.transcript
        );
        assert!(x.elapsed >= Duration::from_millis(300));
        drop(silent);
    }

    /// A server answering every request on one connection with `connection:
    /// keep-alive`: how many connections it accepted.
    async fn keep_alive_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            "{}",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_pooled_client_reuses_its_connection_and_an_unpooled_one_does_not() {
        use std::sync::atomic::Ordering::SeqCst;
        let (addr, accepted) = keep_alive_server().await;
        let pooled = Client::plain(Duration::from_secs(5), true);
        for _ in 0..3 {
            assert_eq!(send(&pooled, addr, &get("/a")).await.status, Some(200));
        }
        assert_eq!(accepted.load(SeqCst), 1);
        // A path this module writes itself is never sent on a pooled connection.
        assert_eq!(send(&pooled, addr, &get("/a#b")).await.status, Some(200));
        assert_eq!(accepted.load(SeqCst), 2);
        let unpooled = Client::plain(Duration::from_secs(5), false);
        for _ in 0..2 {
            assert_eq!(send(&unpooled, addr, &get("/a")).await.status, Some(200));
        }
        assert_eq!(accepted.load(SeqCst), 4);
    }

    /// A TLS server for `gw.example` (a certificate of a fresh CA) answering one
    /// connection: the SNI and the head it received. The CA's PEM file is returned.
    async fn one_tls_answer(
        dir: &Path,
    ) -> (
        SocketAddr,
        PathBuf,
        tokio::sync::oneshot::Receiver<(Option<String>, String)>,
    ) {
        use rustls::pki_types::PrivateKeyDer;
        let ca = crate::targets::local::certs::MeshCa::new(dir).unwrap();
        let files = ca.issue("gw", None, &["gw.example".into()]).unwrap();
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let Ok(mut s) = acceptor.accept(tcp).await else {
                return;
            };
            let sni = s.get_ref().1.server_name().map(str::to_string);
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&b[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            let _ = s.flush().await;
            let _ = tx.send((sni, String::from_utf8_lossy(&head).into_owned()));
        });
        (addr, ca.root_file, rx)
    }

    fn https(ca: &Path) -> Client {
        Client::new(Options {
            timeout: Duration::from_secs(5),
            tls: Some(("gw.example".into(), Trust::CaFile(ca.to_path_buf()))),
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn https_carries_the_path_as_written_with_sni_and_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, ca, seen) = one_tls_answer(dir.path()).await;
        let mut req = get("\\admin");
        req.host = Some("gw.example".into());
        req.scheme = crate::suite::Scheme::Https;
        let x = send(&https(&ca), addr, &req).await;
        assert_eq!(x.status, Some(200), "{}", x.transcript);
        let (sni, head) = seen.await.unwrap();
        assert_eq!(sni.as_deref(), Some("gw.example"));
        assert!(
            head.starts_with("GET \\admin HTTP/1.1\r\nhost: gw.example\r\n"),
            "{head}"
        );
        assert!(x.transcript.starts_with("* TLS to "), "{}", x.transcript);

        // A server whose certificate another CA signed is refused.
        let other = tempfile::tempdir().unwrap();
        let (addr, _, _) = one_tls_answer(other.path()).await;
        let x = send(&https(&ca), addr, &req).await;
        let e = x.error.unwrap();
        assert!(
            e.starts_with("cannot connect: TLS handshake failed: "),
            "{e}"
        );
    }
}
