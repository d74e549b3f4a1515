//! Suites are data: `suites/<name>.yaml` declares the fixtures, the ingress under test
//! and the checks. Adding a routing case is a few lines of YAML; check kinds are Rust
//! (src/checks/, one file each). An `attack` check is expanded when the suite loads
//! into one http check per spelling of its path (attack.rs), so everything after the
//! loader sees only the kinds a check runs as ([`CheckKind`]).

pub mod attack;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("no suite named {name}: looked for {}", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { name: String, tried: Vec<PathBuf> },
    #[error("cannot read suite {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A suite as loaded: its checks as they run (an `attack` check expanded into one
/// http check per spelling).
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// Fixtures directory, relative to the suite file, or several loaded as one set
    /// (a shared base and the suite's own objects).
    pub fixtures: FixturePaths,
    pub ingress: IngressSpec,
    pub policy: Policy,
    pub checks: Vec<CheckSpec>,
    /// Where the suite was read from (set by the loader).
    pub path: PathBuf,
}

/// A suite file as written.
#[derive(Debug, Clone, Deserialize)]
struct SuiteFile {
    name: String,
    #[serde(default)]
    description: String,
    fixtures: FixturePaths,
    #[serde(default)]
    ingress: IngressSpec,
    #[serde(default)]
    policy: Policy,
    checks: Vec<WrittenCheck>,
}

/// A check as written: one of the kinds a check runs as, or an `attack`, which the
/// loader expands into http checks.
#[derive(Debug, Clone, Deserialize)]
struct WrittenCheck {
    group: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(flatten)]
    kind: Kind,
}

/// [`CheckKind`] and `attack`, as a check is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // a few per suite, read once
enum Kind {
    Http(Box<HttpCheck>),
    Distribution(DistributionCheck),
    Ports(PortsCheck),
    Sidecars(SidecarsCheck),
    Steps(Vec<Step>),
    Status(StatusCheck),
    Attack(Box<AttackCheck>),
}

impl WrittenCheck {
    fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }

    /// The checks it runs as: itself, or an attack's variants
    /// (`<group>::<name>::<label>`). Err: why an attack cannot be expanded.
    fn expand(self) -> Result<Vec<CheckSpec>, String> {
        let kind = match self.kind {
            Kind::Http(h) => CheckKind::Http(h),
            Kind::Distribution(d) => CheckKind::Distribution(d),
            Kind::Ports(p) => CheckKind::Ports(p),
            Kind::Sidecars(s) => CheckKind::Sidecars(s),
            Kind::Steps(s) => CheckKind::Steps(s),
            Kind::Status(s) => CheckKind::Status(s),
            Kind::Attack(a) => {
                return Ok(a
                    .variants()?
                    .into_iter()
                    .map(|(v, http)| CheckSpec {
                        group: self.group.clone(),
                        name: format!("{}::{}", self.name, v.label),
                        description: match self.description.as_str() {
                            "" => attack::describe(&v),
                            d => format!("{d}: {}", attack::describe(&v)),
                        },
                        kind: CheckKind::Http(Box::new(http)),
                    })
                    .collect())
            }
        };
        Ok(vec![CheckSpec {
            group: self.group,
            name: self.name,
            description: self.description,
            kind,
        }])
    }
}

/// An `attack` check: a path the gateway must keep closed, sent in every spelling
/// [`attack::SPELLINGS`] makes of it (or those `variants` names), each its own http
/// check judged by `expect` (default: [`HttpExpect::not_reached`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackCheck {
    /// The request; its `path` is written plainly (`/admin/users`).
    pub request: RequestSpec,
    /// Spelling labels, or `[all]` (the default).
    #[serde(default)]
    pub variants: Vec<String>,
    /// What every spelling must get (default: `not_reached: true`).
    #[serde(default)]
    pub expect: Option<HttpExpect>,
}

impl AttackCheck {
    /// Each spelling chosen and its http check. Err: the path is not plain or a
    /// variant cannot be made of it.
    pub fn variants(&self) -> Result<Vec<(attack::Variant, HttpCheck)>, String> {
        let expect = self.expect.clone().unwrap_or(HttpExpect {
            not_reached: true,
            ..Default::default()
        });
        let as_written = HttpCheck {
            request: self.request.clone(),
            repeat: 1,
            expect: expect.clone(),
        };
        if let Some(why) = http_problem(&as_written) {
            return Err(why);
        }
        Ok(attack::select(&self.request.path, &self.variants)?
            .into_iter()
            .map(|v| {
                let http = HttpCheck {
                    request: attack::request(&self.request, &v),
                    repeat: 1,
                    expect: expect.clone(),
                };
                (v, http)
            })
            .collect())
    }
}

/// `fixtures: dir` or `fixtures: [base, own]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FixturePaths {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

/// Which gateway Service port the suite drives; its NodePort comes from the target.
#[derive(Debug, Clone, Deserialize)]
pub struct IngressSpec {
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Default for IngressSpec {
    fn default() -> Self {
        IngressSpec { port: 80 }
    }
}

fn default_port() -> u16 {
    80
}

/// What the static analysis holds the fixtures to.
#[derive(Debug, Clone, Deserialize)]
pub struct Policy {
    /// Service ports the gateway Service may expose (default `[80]`).
    #[serde(default = "default_allowed_ports")]
    pub allowed_ports: Vec<u16>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_ports: default_allowed_ports(),
        }
    }
}

fn default_allowed_ports() -> Vec<u16> {
    vec![80]
}

/// A check as it runs (as written, or one spelling of an `attack`).
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// The report's classname; the console shows `group::name`.
    pub group: String,
    /// As written; an attack's spelling is `<name>::<label>`.
    pub name: String,
    pub description: String,
    pub kind: CheckKind,
}

impl CheckSpec {
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }

    /// `group::name::step` of one of its steps.
    pub fn step_id(&self, step: &Step) -> String {
        format!("{}::{}", self.full_name(), step.name)
    }

    /// The requests the check sends through the ingress, each with its id: the check's
    /// full name, or for `steps` each step's [`CheckSpec::step_id`].
    pub fn requests(&self) -> Vec<(String, &RequestSpec)> {
        match &self.kind {
            CheckKind::Http(h) => vec![(self.full_name(), &h.request)],
            CheckKind::Distribution(d) => vec![(self.full_name(), &d.request)],
            CheckKind::Steps(steps) => steps
                .iter()
                .map(|s| (self.step_id(s), &s.http.request))
                .collect(),
            CheckKind::Ports(_) | CheckKind::Sidecars(_) | CheckKind::Status(_) => Vec::new(),
        }
    }
}

/// What a check runs as: the kinds a check is written as (`Kind`), an `attack`
/// expanded by the loader into `Http` checks.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a few per suite, read once: boxing buys nothing
pub enum CheckKind {
    Http(Box<HttpCheck>),
    Distribution(DistributionCheck),
    Ports(PortsCheck),
    Sidecars(SidecarsCheck),
    /// Requests in a stated order, one after another (see [`Step`]).
    Steps(Vec<Step>),
    /// Conditions on a Gateway API object, as istiod's controller writes them.
    Status(StatusCheck),
}

/// A `status` check: the conditions of a Gateway API object (`HTTPRoute atlas/nb-rest`,
/// `Gateway istio-ingress/atlas-gateway`) in a scope: for a route its parent
/// (`Gateway ns/name`, or `Gateway ns/name listener L` for a sectionName), for a
/// Gateway one of its listeners (`listener http`); no scope: the object's own
/// conditions, and for a route every parent's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCheck {
    pub object: String,
    #[serde(default)]
    pub scope: String,
    pub conditions: Vec<ExpectedCondition>,
}

/// One expected condition: its type, status (`True`/`False`) and, optionally, reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `True` or `False` (a YAML boolean is taken too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionStatus(pub bool);

impl<'de> Deserialize<'de> for ConditionStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(ConditionStatus(b)),
            Raw::Text(t) if t == "True" => Ok(ConditionStatus(true)),
            Raw::Text(t) if t == "False" => Ok(ConditionStatus(false)),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "condition status {t:?}: expected True or False"
            ))),
        }
    }
}

impl StatusCheck {
    /// (kind, namespace, name) of `object` (`Kind namespace/name`).
    pub fn target(&self) -> Option<(&str, &str, &str)> {
        let (kind, rest) = self.object.split_once(' ')?;
        let (ns, name) = rest.trim().split_once('/')?;
        Some((kind, ns, name))
    }
}

/// One step of a `steps` check: an http request and its expectation, judged after the
/// steps before it and before the ones after it, e.g. a pod that answers 5xx, then
/// the gateway answering 503 once outlier detection has ejected it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Send the request `repeat` times and judge each answer once, without waiting for
    /// the expectation to hold 3 times in a row: for a request that changes state
    /// (a 5xx that counts toward an ejection). Default: the http check's rule.
    #[serde(default)]
    pub once: bool,
    pub http: HttpCheck,
}

impl CheckKind {
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Distribution(_) => "distribution",
            CheckKind::Ports(_) => "ports",
            CheckKind::Sidecars(_) => "sidecars",
            CheckKind::Steps(_) => "steps",
            CheckKind::Status(_) => "status",
        }
    }
}

/// A request through the ingress.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    /// Host header (default: the node address and port).
    #[serde(default)]
    pub host: Option<String>,
    /// Request headers; a list (`x-a: [one, two]`) is sent as repeated header lines,
    /// in order.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Query parameters, URL-encoded onto the path (`?a=1&b=x%20y`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// The request body.
    #[serde(default)]
    pub body: Option<String>,
    /// `https`: TLS to the gateway with SNI = the host (default `http`).
    #[serde(default)]
    pub scheme: Scheme,
    /// The gateway Service port the request goes to (default `ingress.port`).
    #[serde(default)]
    pub port: Option<u16>,
    /// The gateway the request goes through, `namespace/name`: a Gateway API Gateway
    /// (its automated deployment's Service, or the Service its `addresses` name) or a
    /// gateway Service. Default: the suite's one ingress (the first gateway Service
    /// with the port).
    #[serde(default)]
    pub gateway: Option<String>,
    /// https: a PEM CA bundle to trust (relative to the suite file); on the local
    /// target the run's CA is trusted without it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// https: accept any certificate.
    #[serde(default)]
    pub insecure: bool,
    /// The address the request is sent from (the client socket is bound to it): what
    /// `remoteIpBlocks`/`ipBlocks` see. It must be an address of this machine (any of
    /// 127.0.0.0/8 on Linux, e.g. `127.0.0.55`, for the local target); a check whose
    /// source cannot be used fails rather than sending from elsewhere.
    #[serde(default)]
    pub source: Option<std::net::IpAddr>,
    /// A JWT sent with the request (a string, `{file}`, or minted at load: see
    /// src/token.rs): `Authorization: Bearer <token>` unless `header`, `param` or
    /// `cookie` says where.
    #[serde(default)]
    pub token: Option<crate::token::TokenSpec>,
}

/// A request header's value (`x-a: one`), or several (`x-a: [one, two]`), sent as
/// one header line each.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl HeaderValues {
    /// Every value, in order.
    pub fn all(&self) -> &[String] {
        match self {
            HeaderValues::One(v) => std::slice::from_ref(v),
            HeaderValues::Many(v) => v,
        }
    }
}

impl From<String> for HeaderValues {
    fn from(v: String) -> Self {
        HeaderValues::One(v)
    }
}

impl From<&str> for HeaderValues {
    fn from(v: &str) -> Self {
        HeaderValues::One(v.to_string())
    }
}

/// How a request reaches the gateway.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// The methods a request may use (RFC 9110 and PATCH).
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl RequestSpec {
    /// The gateway Service port the request targets.
    pub fn service_port(&self, ingress_port: u16) -> u16 {
        self.port.unwrap_or(ingress_port)
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The path with the query parameters URL-encoded onto it.
    pub fn path_and_query(&self) -> String {
        let token = self.token.as_ref().and_then(|t| t.param());
        if self.query.is_empty() && token.is_none() {
            return self.path.clone();
        }
        let mut q = reqwest::Url::parse("http://x/").expect("a constant URL");
        q.query_pairs_mut().extend_pairs(self.query.iter());
        q.query_pairs_mut().extend_pairs(token);
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.path, q.query().unwrap_or(""))
    }

    /// The headers by lower-case name, every value in order.
    pub fn header_values(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &self.headers {
            out.entry(k.to_ascii_lowercase())
                .or_default()
                .extend(v.all().iter().cloned());
        }
        if let Some((k, v)) = self.token.as_ref().and_then(|t| t.header()) {
            out.entry(k).or_default().push(v);
        }
        out
    }

    /// The headers by lower-case name, the values of a repeated one joined by `,` (as
    /// Envoy's header matching reads them: HeaderUtility::getAllOfHeaderAsString).
    pub fn header_map(&self) -> BTreeMap<String, String> {
        self.header_values()
            .into_iter()
            .map(|(k, v)| (k, v.join(",")))
            .collect()
    }

    /// The method (default GET), upper-case.
    pub fn method(&self) -> String {
        self.method.as_deref().unwrap_or("GET").to_ascii_uppercase()
    }

    /// Why the request cannot be sent, or None.
    fn invalid(&self) -> Option<String> {
        if let Some(why) = path_problem(&self.path) {
            return Some(why);
        }
        let m = self.method();
        if !METHODS.contains(&m.as_str()) {
            return Some(format!(
                "unknown HTTP method {:?} (one of {})",
                self.method.as_deref().unwrap_or(""),
                METHODS.join(", ")
            ));
        }
        self.headers
            .iter()
            .find(|(_, v)| v.all().is_empty())
            .map(|(k, _)| format!("header {k}: an empty list sends no header (leave it out)"))
    }
}

/// Why `path` cannot go out as written, or None. The path is sent byte for byte in
/// the request line (`/./admin`, `//admin`, `\admin` and `/admin#x` included), so it
/// must not be empty and cannot hold a control character: a CR or LF would end the
/// request line and make the rest a header.
fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("request path is empty (write / for the root)".into());
    }
    path.chars().find(char::is_ascii_control).map(|c| {
        format!(
            "request path {path:?} holds the control character {c:?}, which cannot go out in a request line (percent-encode it)"
        )
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub request: RequestSpec,
    /// Requests per attempt; every one must meet the expectation.
    #[serde(default = "one")]
    pub repeat: u32,
    pub expect: HttpExpect,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpExpect {
    /// The status; implied by `denied`, optional with `not_reached` (then any 4xx).
    #[serde(default)]
    pub status: Option<u16>,
    /// The gateway's own security filter refused the request: `rbac` (403, body
    /// `RBAC: access denied`), `jwt` (401, a body starting `Jwt `) or `ext_authz`
    /// (CUSTOM: the authorizer's 403, a body of its own); no backend
    /// answered.
    #[serde(default)]
    pub denied: Option<Denied>,
    /// No backend answered: the gateway refused the request itself, with a 4xx (any,
    /// unless `status` says which). The default of an `attack` check.
    #[serde(default)]
    pub not_reached: bool,
    #[serde(default)]
    pub backend: Option<BackendExpect>,
    /// The path the backend saw.
    #[serde(default)]
    pub path: Option<String>,
    /// The method the backend received (`POST`).
    #[serde(default)]
    pub method: Option<String>,
    /// The query string the backend received: exactly (`"a=1&b=2"`, `""` for none),
    /// or per parameter (`{ a: "1", b: { absent: true }, c: { values: [x, y] } }`,
    /// percent-decoded).
    #[serde(default)]
    pub query: Option<QueryExpect>,
    /// Headers the backend received.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderExpect>,
    /// Headers of the response (e.g. `location` of a redirect).
    #[serde(default)]
    pub response_headers: BTreeMap<String, HeaderExpect>,
    /// Text the response body contains.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// How long each answer may take (`{ at_least: 2s, at_most: 5s }`).
    #[serde(default)]
    pub latency: Option<LatencyExpect>,
    /// A backend that must also have received each request, as a mirror (the
    /// response still comes from the primary).
    #[serde(default)]
    pub mirrored_to: Option<MirrorExpect>,
}

/// Envoy's RBAC filter's answer to a denied request (403).
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";
/// How Envoy's JWT filter's answers start (401: `Jwt is missing`, `Jwt verification
/// fails`, `Jwt issuer is not configured`, `Jwt is expired`, ...).
pub const JWT_DENIED_PREFIX: &str = "Jwt ";

/// `denied: rbac | jwt | ext_authz`: which of the gateway's security filters refused a request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Denied {
    /// envoy.filters.http.rbac (AuthorizationPolicy; also a RequestAuthentication's
    /// required principal): 403 `RBAC: access denied`.
    Rbac,
    /// envoy.filters.http.jwt_authn (RequestAuthentication): 401 `Jwt ...`.
    Jwt,
    /// envoy.filters.http.ext_authz (a CUSTOM AuthorizationPolicy): the authorizer's
    /// 403 (Istio's sample server's), with its own body, neither RBAC's nor JWT's.
    #[serde(rename = "ext_authz")]
    ExtAuthz,
}

impl Denied {
    /// The status the filter answers with.
    pub fn status(self) -> u16 {
        match self {
            Denied::Rbac => 403,
            Denied::Jwt => 401,
            Denied::ExtAuthz => 403,
        }
    }

    /// Whether `body` is the filter's own answer.
    pub fn body_is_its(self, body: &str) -> bool {
        match self {
            Denied::Rbac => body.trim_end() == RBAC_DENIED_BODY,
            Denied::Jwt => body.starts_with(JWT_DENIED_PREFIX),
            Denied::ExtAuthz => {
                body.trim_end() != RBAC_DENIED_BODY && !body.starts_with(JWT_DENIED_PREFIX)
            }
        }
    }

    /// The model's name for the filter.
    pub fn by(self) -> crate::istio::authz::DeniedBy {
        match self {
            Denied::Rbac => crate::istio::authz::DeniedBy::Rbac,
            Denied::Jwt => crate::istio::authz::DeniedBy::Jwt,
            Denied::ExtAuthz => crate::istio::authz::DeniedBy::ExtAuthz,
        }
    }

    /// `RBAC denial (403 RBAC: access denied)`.
    pub fn describe(self) -> String {
        match self {
            Denied::Rbac => format!("RBAC denial (403 {RBAC_DENIED_BODY})"),
            Denied::Jwt => "JWT denial (401 Jwt ...)".to_string(),
            Denied::ExtAuthz => "ext_authz denial (403 from the CUSTOM authorizer)".to_string(),
        }
    }

    /// `rbac` / `jwt`, as written.
    pub fn word(self) -> &'static str {
        match self {
            Denied::Rbac => "rbac",
            Denied::Jwt => "jwt",
            Denied::ExtAuthz => "ext_authz",
        }
    }
}

/// What `not_reached` means, for messages.
pub const NOT_REACHED: &str =
    "the gateway to refuse the request itself (a 4xx, or no connection; no backend)";

impl HttpExpect {
    /// The one status an answer must have: `status`, or the one `denied` implies;
    /// None with `not_reached` alone (any 4xx).
    pub fn expected_status(&self) -> Option<u16> {
        self.status.or(self.denied.map(Denied::status))
    }

    /// Whether the expectation says a backend answers (its identity, or what it
    /// received, is judged).
    pub fn needs_backend(&self) -> bool {
        self.backend.as_ref().is_some_and(|b| !b.none)
            || self.path.is_some()
            || self.method.is_some()
            || self.query.is_some()
            || !self.headers.is_empty()
            || self.mirrored_to.is_some()
    }

    /// Why the expectation contradicts itself or says nothing, or None.
    fn problem(&self) -> Option<String> {
        let refused = match (self.denied, self.not_reached) {
            (Some(d), _) => format!("`denied: {}`", d.word()),
            (None, true) => "`not_reached`".to_string(),
            (None, false) => {
                return self.status.is_none().then(|| {
                    "expect needs `status` (or `denied: rbac|jwt`, `not_reached: true`)".into()
                })
            }
        };
        if let (Some(s), Some(d)) = (self.status, self.denied) {
            if s != d.status() {
                return Some(format!(
                    "expect.status {s} contradicts `denied: {}` (the filter answers {})",
                    d.word(),
                    d.status()
                ));
            }
        }
        if let Some(s) = self.status.filter(|s| !(400..500).contains(s)) {
            if self.not_reached {
                return Some(format!(
                    "expect.status {s} contradicts `not_reached` (the gateway refuses with a 4xx)"
                ));
            }
        }
        let judged = [
            ("backend", self.backend.as_ref().is_some_and(|b| !b.none)),
            ("path", self.path.is_some()),
            ("method", self.method.is_some()),
            ("query", self.query.is_some()),
            ("headers", !self.headers.is_empty()),
            ("mirrored_to", self.mirrored_to.is_some()),
        ];
        judged.iter().find(|(_, set)| *set).map(|(what, _)| {
            format!("expect.{what} contradicts {refused}: no backend receives the request")
        })
    }
}

/// `backend: { service, version, namespace }`, or `backend: none`: no stub answered
/// (the gateway or Envoy did).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(try_from = "BackendRepr")]
pub struct BackendExpect {
    pub service: Option<String>,
    pub version: Option<String>,
    pub namespace: Option<String>,
    /// `backend: none`.
    pub none: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BackendRepr {
    Word(String),
    Fields(BackendFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFields {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl TryFrom<BackendRepr> for BackendExpect {
    type Error = String;
    fn try_from(r: BackendRepr) -> Result<Self, String> {
        match r {
            BackendRepr::Word(w) if w == "none" => Ok(BackendExpect {
                none: true,
                ..Default::default()
            }),
            BackendRepr::Word(w) => Err(format!(
                "backend {w:?}: expected `none` or {{service, version, namespace}}"
            )),
            BackendRepr::Fields(f) => Ok(BackendExpect {
                service: f.service,
                version: f.version,
                namespace: f.namespace,
                none: false,
            }),
        }
    }
}

/// Latency bounds of each answer, Go durations (`300ms`, `2s`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatencyExpect {
    #[serde(default)]
    pub at_least: Option<String>,
    #[serde(default)]
    pub at_most: Option<String>,
}

impl LatencyExpect {
    /// (at least, at most); Err names the value that is not a duration.
    pub fn bounds(
        &self,
    ) -> Result<(Option<std::time::Duration>, Option<std::time::Duration>), String> {
        let parse = |what: &str, v: &Option<String>| {
            v.as_deref()
                .map(|d| {
                    crate::istio::duration_ms(d)
                        .map(std::time::Duration::from_millis)
                        .ok_or_else(|| {
                            format!("latency.{what} {d:?} is not a duration like 300ms or 2s")
                        })
                })
                .transpose()
        };
        let (lo, hi) = (
            parse("at_least", &self.at_least)?,
            parse("at_most", &self.at_most)?,
        );
        if let (Some(l), Some(h)) = (lo, hi) {
            if l > h {
                return Err(format!(
                    "latency.at_least {l:?} is above latency.at_most {h:?}"
                ));
            }
        }
        Ok((lo, hi))
    }
}

/// `mirrored_to: { service: nb-rest, version: v2 }`: a stub of that service (and
/// version, namespace when given) also received the request.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorExpect {
    pub service: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl MirrorExpect {
    /// Whether `id` (a stub's identity) is the mirror backend.
    pub fn is(&self, id: &crate::stub::Identity) -> bool {
        self.service == id.service
            && self.version.as_ref().is_none_or(|v| *v == id.version)
            && self.namespace.as_ref().is_none_or(|n| *n == id.namespace)
    }
}

impl std::fmt::Display for MirrorExpect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.service)?;
        if let Some(v) = &self.version {
            write!(f, " {v}")?;
        }
        if let Some(n) = &self.namespace {
            write!(f, " (namespace {n})")?;
        }
        Ok(())
    }
}

/// The query string the backend received: the exact string, or rules per parameter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum QueryExpect {
    Exact(String),
    Params(BTreeMap<String, HeaderExpect>),
}

/// `name: value` (exact) or `name: {contains: x}` / `{present: true}` / `{absent: true}`
/// / `{values: [a, b]}` (every value of a repeated header, in order).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum HeaderExpect {
    Exact(String),
    Rule(HeaderRule),
}

impl HeaderExpect {
    /// Whether a header whose values are `got` (in order; empty: absent) meets this:
    /// `equals`/`contains` (and the plain form) read the first value, `values` every
    /// one.
    pub fn meets(&self, got: &[String]) -> bool {
        let first = got.first().map(String::as_str);
        match self {
            HeaderExpect::Exact(v) => first == Some(v.as_str()),
            HeaderExpect::Rule(r) => {
                r.equals.as_ref().is_none_or(|v| first == Some(v.as_str()))
                    && r.contains
                        .as_ref()
                        .is_none_or(|v| first.is_some_and(|g| g.contains(v.as_str())))
                    && r.present.is_none_or(|p| got.is_empty() != p)
                    && r.absent.is_none_or(|a| got.is_empty() == a)
                    && r.values.as_ref().is_none_or(|v| v.as_slice() == got)
            }
        }
    }

    /// How `got` reads in a mismatch: `none`, `"v"`, or `["a", "b"]`.
    pub fn describe_got(got: &[String]) -> String {
        match got {
            [] => "none".into(),
            [one] => format!("{one:?}"),
            many => format!("{many:?}"),
        }
    }
}

impl QueryExpect {
    /// Why the query string `got` (without `?`, as the backend received it) does not
    /// meet this, or None.
    pub fn mismatch(&self, got: &str) -> Option<String> {
        match self {
            QueryExpect::Exact(want) => (want != got).then(|| {
                format!("expected the backend to receive query {want:?}, it received {got:?}")
            }),
            QueryExpect::Params(params) => {
                let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{got}"))
                    .map(|u| {
                        u.query_pairs()
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                params.iter().find_map(|(name, want)| {
                    let values: Vec<String> = pairs
                        .iter()
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .collect();
                    (!want.meets(&values)).then(|| {
                        format!(
                            "expected query parameter {name} {want} at the backend, got {} (query {got:?})",
                            HeaderExpect::describe_got(&values)
                        )
                    })
                })
            }
        }
    }
}

impl std::fmt::Display for HeaderExpect {
    /// `equals v`, `contains /x`, `present`, `absent`, joined by `and`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = match self {
            HeaderExpect::Exact(v) => return write!(f, "equals {v:?}"),
            HeaderExpect::Rule(r) => r,
        };
        let mut parts = Vec::new();
        if let Some(v) = &r.equals {
            parts.push(format!("equals {v:?}"));
        }
        if let Some(v) = &r.contains {
            parts.push(format!("contains {v:?}"));
        }
        if let Some(p) = r.present {
            parts.push(if p { "present" } else { "not present" }.to_string());
        }
        if let Some(a) = r.absent {
            parts.push(if a { "absent" } else { "not absent" }.to_string());
        }
        if let Some(v) = &r.values {
            parts.push(format!("has exactly the values {v:?}"));
        }
        if parts.is_empty() {
            parts.push("anything".into());
        }
        f.write_str(&parts.join(" and "))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub absent: Option<bool>,
    /// Every value, in order (a header sent or added several times).
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributionCheck {
    pub request: RequestSpec,
    /// How many requests to send (see README: the binomial bound).
    #[serde(default = "default_requests")]
    pub requests: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// The service every answer must come from.
    #[serde(default)]
    pub service: Option<String>,
    /// Expected share per version, in percent (sums to 100).
    #[serde(default)]
    pub shares: BTreeMap<String, f64>,
    /// Expected share per response status (`"200": 50, "503": 50`), in percent (sums
    /// to 100); instead of `shares`.
    #[serde(default)]
    pub statuses: BTreeMap<String, f64>,
    /// Each of these statuses answered at least this many times (`"503": 1`), for
    /// outcomes with no configured share, e.g. circuit breaking under concurrency;
    /// instead of `shares` and `statuses`.
    #[serde(default)]
    pub at_least: BTreeMap<String, u64>,
    /// Chance that a correct configuration fails the check.
    #[serde(default = "default_false_failure")]
    pub false_failure: f64,
}

fn default_requests() -> u32 {
    1000
}
fn default_concurrency() -> u32 {
    8
}
fn default_false_failure() -> f64 {
    1e-6
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsCheck {
    /// Port ranges scanned on the node address (`30000-32767`, `80`).
    pub scan: Vec<String>,
    /// Gateway Service ports whose NodePorts may answer.
    pub allow_service_ports: Vec<u16>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SidecarsCheck {
    /// Every pod of these namespaces must carry a running istio-proxy sidecar.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Requests whose backends must show they were reached through their sidecar over
    /// Istio mTLS from the gateway (XFCC URI = the gateway's SPIFFE identity).
    #[serde(default)]
    pub via: Vec<RequestSpec>,
    /// No pod of these namespaces answers a plaintext request sent straight to its
    /// address and declared ports, bypassing the gateway (PeerAuthentication STRICT:
    /// only Istio mTLS gets in).
    #[serde(default)]
    pub plaintext_refused: Vec<String>,
}

impl DistributionCheck {
    /// The expected shares: per version (`shares`) or per status (`statuses`).
    pub fn expected(&self) -> &BTreeMap<String, f64> {
        if self.shares.is_empty() {
            &self.statuses
        } else {
            &self.shares
        }
    }
}

/// What is wrong with a check that parses (a method no server knows, a latency bound
/// that is not a duration, shares and statuses both or neither), or None.
fn check_problem(c: &CheckSpec) -> Option<String> {
    match &c.kind {
        CheckKind::Http(h) => http_problem(h),
        CheckKind::Distribution(d) => d.request.invalid().or_else(|| {
            let given = [
                !d.shares.is_empty(),
                !d.statuses.is_empty(),
                !d.at_least.is_empty(),
            ];
            match given.iter().filter(|g| **g).count() {
                0 => Some("needs `shares` (per version), `statuses` or `at_least`".into()),
                1 => d
                    .statuses
                    .keys()
                    .chain(d.at_least.keys())
                    .find(|k| !k.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)))
                    .map(|k| format!("{k:?} is not an HTTP status")),
                _ => Some("give one of `shares`, `statuses`, `at_least`".into()),
            }
        }),
        CheckKind::Sidecars(s) => s.via.iter().find_map(RequestSpec::invalid),
        CheckKind::Ports(_) => None,
        CheckKind::Steps(steps) => steps_problem(steps),
        CheckKind::Status(s) => match s.target() {
            None => Some(format!(
                "status.object {:?}: expected `Kind namespace/name` (e.g. `HTTPRoute atlas/nb-rest`)",
                s.object
            )),
            Some(_) if s.conditions.is_empty() => Some("status: no conditions to check".into()),
            Some(_) => None,
        },
    }
}

/// What is wrong with the steps of a `steps` check, or None.
fn steps_problem(steps: &[Step]) -> Option<String> {
    if steps.is_empty() {
        return Some("`steps` needs at least one step".into());
    }
    let mut names = std::collections::BTreeSet::new();
    steps.iter().find_map(|s| {
        if s.name.trim().is_empty() {
            return Some("a step needs a `name`".into());
        }
        if !names.insert(s.name.as_str()) {
            return Some(format!("step {} is declared twice", s.name));
        }
        http_problem(&s.http).map(|why| format!("step {}: {why}", s.name))
    })
}

/// What is wrong with an http check (or step): its request, a latency bound, an
/// expectation that contradicts itself.
fn http_problem(h: &HttpCheck) -> Option<String> {
    h.request
        .invalid()
        .or_else(|| h.expect.latency.as_ref().and_then(|l| l.bounds().err()))
        .or_else(|| h.expect.problem())
}

/// For an `unknown field `k`` error reported at line `near` (inside a check, the
/// line of its kind), the first line from there that writes `k:`; else `near`.
fn line_of_unknown_field(text: &str, message: &str, near: usize) -> usize {
    let Some(key) = message
        .split("unknown field `")
        .nth(1)
        .and_then(|r| r.split('`').next())
    else {
        return near;
    };
    let pat = regex::Regex::new(&format!(r"(^|[\s{{,-]){}\s*:", regex::escape(key))).ok();
    text.lines()
        .enumerate()
        .skip(near.saturating_sub(1))
        .find(|(_, l)| pat.as_ref().is_some_and(|p| p.is_match(l)))
        .map_or(near, |(i, _)| i + 1)
}

/// The line of `name: <check name>` in the suite text (1 when not found).
fn line_of_check(text: &str, name: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix("name:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
        .map_or(1, |i| i + 1)
}

/// Finds `suites/<name>.yaml` (a path to a file works too), relative to the current
/// directory, then to the project the binary was built from.
pub fn locate(name: &str) -> Result<PathBuf, SuiteError> {
    let direct = PathBuf::from(name);
    if name.ends_with(".yaml") || name.ends_with(".yml") || name.contains('/') {
        if direct.is_file() {
            return Ok(direct);
        }
        return Err(SuiteError::NotFound {
            name: name.into(),
            tried: vec![direct],
        });
    }
    let mut tried = Vec::new();
    for base in [
        PathBuf::from("."),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ] {
        for ext in ["yaml", "yml"] {
            let p = base.join("suites").join(format!("{name}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    Err(SuiteError::NotFound {
        name: name.into(),
        tried,
    })
}

/// Reads and validates a suite file. Unknown keys are errors (a typo in a check would
/// otherwise silently drop an expectation).
pub fn load(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |line: usize, message: String| SuiteError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let value: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        invalid(
            e.location().map(|l| l.line() as usize).unwrap_or(1),
            crate::fixtures::first_line_of(&e.to_string()),
        )
    })?;
    let mut unknown = Vec::new();
    let file: SuiteFile = serde_ignored::deserialize(value, |p| unknown.push(p.to_string()))
        .map_err(|e| invalid(1, e.to_string()))
        .or_else(|_| {
            // Re-parse from text for the line of the offending field.
            serde_saphyr::from_str::<SuiteFile>(&text).map_err(|e| {
                let message = crate::fixtures::first_line_of(&e.to_string()).replace(
                    "no variant of enum Kind found in flattened data",
                    "a check needs its kind: one of http, distribution, ports, sidecars, steps, status, attack",
                );
                let near = e.location().map(|l| l.line() as usize).unwrap_or(1);
                invalid(line_of_unknown_field(&text, &message, near), message)
            })
        })?;
    if let Some(u) = unknown.first() {
        let key = u.rsplit('.').next().unwrap_or(u);
        let line = text
            .lines()
            .position(|l| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{key}:"))
            })
            .map(|i| i + 1)
            .unwrap_or(1);
        return Err(invalid(line, format!("unknown key `{u}`")));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut checks = Vec::new();
    for w in file.checks {
        let (line, written) = (line_of_check(&text, &w.name), w.full_name());
        let expanded = w
            .expand()
            .map_err(|why| invalid(line, format!("check {written}: {why}")))?;
        for c in expanded {
            if !seen.insert(c.full_name()) {
                return Err(invalid(
                    line,
                    format!("check {} is declared twice", c.full_name()),
                ));
            }
            if let Some(why) = check_problem(&c) {
                return Err(invalid(line, format!("check {}: {why}", c.full_name())));
            }
            checks.push(c);
        }
    }
    let mut suite = Suite {
        name: file.name,
        description: file.description,
        fixtures: file.fixtures,
        ingress: file.ingress,
        policy: file.policy,
        checks,
        path: PathBuf::new(),
    };
    for c in &suite.checks {
        if let CheckKind::Distribution(d) = &c.kind {
            let sum: f64 = d.expected().values().sum();
            let bad_sum = (sum - 100.0).abs() > 1e-9 || d.expected().values().any(|s| *s < 0.0);
            if d.at_least.is_empty() && bad_sum {
                return Err(invalid(
                    1,
                    format!(
                        "check {}: {} must be >= 0 and sum to 100 (sum {sum})",
                        c.full_name(),
                        if d.shares.is_empty() {
                            "statuses"
                        } else {
                            "shares"
                        }
                    ),
                ));
            }
            if !(d.false_failure > 0.0 && d.false_failure < 1.0) || d.requests == 0 {
                return Err(invalid(
                    1,
                    format!(
                        "check {}: needs requests > 0 and 0 < false_failure < 1",
                        c.full_name()
                    ),
                ));
            }
        }
        if let CheckKind::Ports(p) = &c.kind {
            for r in &p.scan {
                parse_range(r).map_err(|m| invalid(1, format!("check {}: {m}", c.full_name())))?;
            }
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    for c in &mut suite.checks {
        let (name, line) = (
            c.full_name(),
            line_of_check(&text, c.name.split("::").next().unwrap_or(&c.name)),
        );
        let reqs: Vec<&mut RequestSpec> = match &mut c.kind {
            CheckKind::Http(h) => vec![&mut h.request],
            CheckKind::Distribution(d) => vec![&mut d.request],
            CheckKind::Steps(steps) => steps.iter_mut().map(|s| &mut s.http.request).collect(),
            CheckKind::Sidecars(s) => s.via.iter_mut().collect(),
            _ => continue,
        };
        for req in reqs {
            if let Some(f) = req.ca_file.as_mut().filter(|f| f.is_relative()) {
                *f = base.join(&*f);
            }
            if let Some(t) = req.token.as_mut() {
                t.resolve(base)
                    .map_err(|m| invalid(line, format!("check {name}: {m}")))?;
            }
        }
    }
    suite.path = path.to_path_buf();
    Ok(suite)
}

impl Suite {
    /// The fixtures directories the suite names, resolved against the suite file.
    pub fn fixtures_dirs(&self) -> Vec<PathBuf> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let paths = match &self.fixtures {
            FixturePaths::One(p) => std::slice::from_ref(p),
            FixturePaths::Many(v) => v.as_slice(),
        };
        paths.iter().map(|p| base.join(p)).collect()
    }
}

/// `30000-32767` or `80` -> inclusive range.
pub fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("bad port range `{s}` (want `N` or `N-M`, 1-65535)");
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Suite, SuiteError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        load(f.path())
    }

    const STEPS: &str = "name: s\nfixtures: .\nchecks:\n  - group: g\n    name: c\n    steps:\n      - name: one\n        http:\n          request: { path: /a }\n          expect: { status: 200 }\n";

    #[track_caller]
    fn invalid(text: &str) -> (usize, String) {
        match load_text(text) {
            Err(SuiteError::Invalid { line, message, .. }) => (line, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn steps_load_with_their_ids_and_requests() {
        let s = load_text(STEPS).unwrap();
        let c = &s.checks[0];
        assert_eq!(c.kind.label(), "steps");
        let ids: Vec<String> = c.requests().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["g::c::one".to_string()]);
    }

    #[test]
    fn bad_steps_are_load_errors_naming_the_check() {
        let (_, m) = invalid(&STEPS.replace("      - name: one\n        http:\n          request: { path: /a }\n          expect: { status: 200 }\n", "      []\n").replace("    steps:\n      []", "    steps: []"));
        assert!(
            m.contains("check g::c: `steps` needs at least one step"),
            "{m}"
        );
        let twice = format!("{STEPS}{}", "      - name: one\n        http:\n          request: { path: /b }\n          expect: { status: 200 }\n");
        let (_, m) = invalid(&twice);
        assert!(m.contains("step one is declared twice"), "{m}");
        let (_, m) = invalid(&STEPS.replace("path: /a", "path: /a, method: FETCH"));
        assert!(m.contains("step one: unknown HTTP method"), "{m}");
        let (_, m) = invalid(&STEPS.replace("path: /a", "path: /a, headers: { x-a: [] }"));
        assert!(
            m.contains("step one: header x-a: an empty list sends no header"),
            "{m}"
        );
    }

    #[test]
    fn an_unknown_key_inside_a_check_names_its_line() {
        let (line, m) = invalid(&STEPS.replace(
            "expect: { status: 200 }",
            "expect: { status: 200, methd: GET }",
        ));
        assert!(m.contains("unknown field `methd`"), "{m}");
        assert_eq!(line, 10);
        let (line, m) =
            invalid(&STEPS.replace("        http:", "        onse: true\n        http:"));
        assert!(m.contains("unknown field `onse`"), "{m}");
        assert_eq!(line, 8);
    }

    const HTTP: &str = "name: s\nfixtures: .\nchecks:\n  - group: g\n    name: c\n    http:\n      request: { path: /a }\n      expect: { denied: rbac }\n";

    fn only_http(s: &Suite) -> &HttpCheck {
        match &s.checks[0].kind {
            CheckKind::Http(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn denied_implies_its_status_and_no_backend() {
        let s = load_text(HTTP).unwrap();
        let e = &only_http(&s).expect;
        assert_eq!((e.denied, e.status), (Some(Denied::Rbac), None));
        assert_eq!(e.expected_status(), Some(403));
        let s = load_text(&HTTP.replace("denied: rbac", "denied: jwt, status: 401")).unwrap();
        assert_eq!(only_http(&s).expect.expected_status(), Some(401));
        let s = load_text(&HTTP.replace("denied: rbac", "not_reached: true")).unwrap();
        let e = &only_http(&s).expect;
        assert!(e.not_reached && e.expected_status().is_none());
        let s = load_text(&HTTP.replace("denied: rbac", "not_reached: true, status: 404")).unwrap();
        assert_eq!(only_http(&s).expect.expected_status(), Some(404));
        // Plain checks keep their status.
        let s = load_text(&HTTP.replace("denied: rbac", "status: 200")).unwrap();
        assert_eq!(only_http(&s).expect.expected_status(), Some(200));
    }

    #[test]
    fn a_denial_or_refusal_that_contradicts_itself_is_a_load_error_naming_the_check() {
        for (expect, says) in [
            (
                "denied: rbac, status: 200",
                "check g::c: expect.status 200 contradicts `denied: rbac` (the filter answers 403)",
            ),
            (
                "denied: jwt, status: 403",
                "check g::c: expect.status 403 contradicts `denied: jwt` (the filter answers 401)",
            ),
            (
                "not_reached: true, status: 503",
                "check g::c: expect.status 503 contradicts `not_reached` (the gateway refuses with a 4xx)",
            ),
            (
                "denied: rbac, backend: { service: nb-rest }",
                "check g::c: expect.backend contradicts `denied: rbac`: no backend receives the request",
            ),
            (
                "not_reached: true, path: /a",
                "check g::c: expect.path contradicts `not_reached`: no backend receives the request",
            ),
            (
                "denied: rbac, headers: { x-a: b }",
                "check g::c: expect.headers contradicts `denied: rbac`",
            ),
            (
                "backend: none",
                "check g::c: expect needs `status` (or `denied: rbac|jwt`, `not_reached: true`)",
            ),
        ] {
            let (line, m) = invalid(&HTTP.replace("denied: rbac", expect));
            assert!(m.contains(says), "{expect}: {m}");
            assert_eq!(line, 5, "{expect}: the line of the check's name");
        }
        // `backend: none` agrees with a denial.
        assert!(load_text(&HTTP.replace("denied: rbac", "denied: rbac, backend: none")).is_ok());
        let (_, m) = invalid(&HTTP.replace("denied: rbac", "denied: opa"));
        assert!(m.contains("unknown variant `opa`"), "{m}");
        // In a step too, named by the step.
        let (_, m) = invalid(&STEPS.replace("status: 200", "denied: rbac, status: 401"));
        assert!(
            m.contains("check g::c: step one: expect.status 401 contradicts `denied: rbac`"),
            "{m}"
        );
    }

    const ATTACK: &str = "name: s\nfixtures: .\nchecks:\n  - group: security\n    name: admin-closed\n    attack:\n      request: { path: /admin/users, method: GET }\n";

    fn http_checks(s: &Suite) -> Vec<(String, &HttpCheck)> {
        s.checks
            .iter()
            .map(|c| match &c.kind {
                CheckKind::Http(h) => (c.full_name(), h.as_ref()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_check_without_a_kind_names_the_kinds() {
        let (line, m) = invalid("name: s\nfixtures: .\nchecks:\n  - group: g\n    name: c\n");
        assert!(
            m.contains("a check needs its kind: one of http, distribution, ports, sidecars, steps, status, attack"),
            "{m}"
        );
        assert_eq!(line, 4);
    }

    #[test]
    fn an_attack_loads_as_one_http_check_per_spelling() {
        let s = load_text(ATTACK).unwrap();
        let checks = http_checks(&s);
        let names: Vec<&str> = checks.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 16);
        assert_eq!(names[0], "security::admin-closed::as-written");
        assert_eq!(names[1], "security::admin-closed::dot-segment");
        assert_eq!(names[12], "security::admin-closed::fragment");
        assert_eq!(names[15], "security::admin-closed::inner-double-slash");
        for (name, h) in &checks {
            assert!(
                h.expect.not_reached && h.expect.expected_status().is_none(),
                "{name}"
            );
            assert_eq!(h.request.method.as_deref(), Some("GET"));
            assert_eq!(h.repeat, 1);
        }
        let path = |label: &str| {
            checks
                .iter()
                .find(|(n, _)| n.ends_with(&format!("::{label}")))
                .map(|(_, h)| h.request.path.clone())
                .unwrap()
        };
        assert_eq!(path("encoded-slash"), "/admin%2Fusers");
        assert_eq!(path("backslash"), "/admin\\users");
        // Each is a check of its own everywhere a check's requests are used.
        let ids: Vec<String> = s
            .checks
            .iter()
            .flat_map(|c| c.requests())
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids[3], "security::admin-closed::encoded-dot");
        assert!(
            s.checks[3].description.contains("BASE and stricter"),
            "{}",
            s.checks[3].description
        );
    }

    #[test]
    fn an_attack_takes_a_subset_of_spellings_and_any_expectation() {
        let text = format!(
            "{ATTACK}      variants: [fragment, double-slash]\n      expect: {{ denied: rbac }}\n"
        );
        let s = load_text(&text).unwrap();
        let checks = http_checks(&s);
        let got: Vec<(&str, &str)> = checks
            .iter()
            .map(|(n, h)| (n.as_str(), h.request.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("security::admin-closed::double-slash", "//admin/users"),
                ("security::admin-closed::fragment", "/admin/users#x"),
            ]
        );
        assert!(checks
            .iter()
            .all(|(_, h)| h.expect.denied == Some(Denied::Rbac)));
    }

    #[test]
    fn a_bad_attack_is_a_load_error_naming_the_check_and_its_line() {
        for (edit, says) in [
            (
                "      variants: [dot-segment, double-dot]\n",
                "check security::admin-closed: attack.variants: unknown variant \"double-dot\"",
            ),
            (
                "      expect: { denied: rbac, status: 200 }\n",
                "check security::admin-closed: expect.status 200 contradicts `denied: rbac`",
            ),
            (
                "      expect: { status: 200, backend: { service: nb-rest } }\n",
                "",
            ),
        ] {
            let text = format!("{ATTACK}{edit}");
            if says.is_empty() {
                // A check that expects the path open is a plain expectation: allowed.
                assert!(load_text(&text).is_ok());
                continue;
            }
            let (line, m) = invalid(&text);
            assert!(m.contains(says), "{m}");
            assert_eq!(line, 5);
        }
        let (line, m) = invalid(&ATTACK.replace("path: /admin/users", "path: \"\""));
        assert!(
            m.contains("check security::admin-closed: request path is empty"),
            "{m}"
        );
        assert_eq!(line, 5);
        let (_, m) = invalid(&ATTACK.replace("/admin/users", "/admin/../users"));
        assert!(m.contains("without dot segments"), "{m}");
        let (_, m) = invalid(&ATTACK.replace("method: GET", "method: FETCH"));
        assert!(
            m.contains("check security::admin-closed: unknown HTTP method"),
            "{m}"
        );
        let (_, m) = invalid(&format!("{ATTACK}      repeat: 3\n"));
        assert!(m.contains("unknown field `repeat`"), "{m}");
        // A variant's name taken by another check.
        let twice = format!(
            "{ATTACK}  - group: security\n    name: admin-closed::fragment\n    http:\n      request: {{ path: /x }}\n      expect: {{ status: 404 }}\n"
        );
        let (_, m) = invalid(&twice);
        assert!(
            m.contains("check security::admin-closed::fragment is declared twice"),
            "{m}"
        );
    }

    #[test]
    fn header_expectations_read_the_first_value_or_every_value() {
        let got = vec!["a".to_string(), "b".to_string()];
        assert!(HeaderExpect::Exact("a".into()).meets(&got));
        let values = |v: &[&str]| {
            HeaderExpect::Rule(HeaderRule {
                values: Some(v.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            })
        };
        assert!(values(&["a", "b"]).meets(&got));
        assert!(!values(&["a"]).meets(&got) && !values(&["b", "a"]).meets(&got));
        assert!(values(&[]).meets(&[]));
    }

    #[test]
    fn query_expectations_read_the_exact_string_or_decoded_parameters() {
        assert_eq!(QueryExpect::Exact("a=1".into()).mismatch("a=1"), None);
        let m = QueryExpect::Exact("a=2".into()).mismatch("a=1").unwrap();
        assert!(
            m.contains("expected the backend to receive query \"a=2\", it received \"a=1\""),
            "{m}"
        );
        let params: BTreeMap<String, HeaderExpect> = serde_json::from_str(
            r#"{"tag": "a b", "n": {"values": ["1", "2"]}, "gone": {"absent": true}}"#,
        )
        .unwrap();
        let q = QueryExpect::Params(params);
        assert_eq!(q.mismatch("tag=a+b&n=1&n=2"), None);
        let m = q.mismatch("tag=a+b&n=1").unwrap();
        assert!(
            m.contains("expected query parameter n has exactly the values"),
            "{m}"
        );
        let m = q.mismatch("tag=a+b&n=1&n=2&gone=x").unwrap();
        assert!(
            m.contains("expected query parameter gone absent at the backend, got \"x\""),
            "{m}"
        );
    }
}
