//! RequestAuthentication at the gateway, as istiod programs it and as Envoy enforces
//! it: the `envoy.filters.http.jwt_authn` filter pilot writes for a gateway pod
//! (pilot/pkg/security/authn/policy_applier.go newPolicyApplier, convertToEnvoyJwtConfig;
//! the JWKS as pilot/pkg/model/jwks_resolver.go BuildLocalJwks inlines it), placed
//! before the RBAC filters (pilot/pkg/networking/core/listener_builder.go: authn, then
//! authz; istiod 1.30 writes no `istio_authn` filter), and what that filter does with a
//! request (Envoy source/extensions/filters/http/jwt_authn: extractor.cc, verifier.cc,
//! authenticator.cc, filter.cc; source/common/jwt: jwt.cc, jwks.cc, verify.cc,
//! check_audience.cc). The signatures are checked with ring, the project's one crypto
//! provider.

use super::rbac;
use crate::fixtures::k8s::Labels;
use crate::fixtures::security::{JwtRule, RequestAuthentication};
use crate::fixtures::{Fixtures, Item, Source, Warning};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The filter's name (pilot/pkg/xds/filters EnvoyJwtFilterName).
pub const FILTER: &str = "envoy.filters.http.jwt_authn";
/// Where the verified payload goes in the filter's dynamic metadata
/// (filters.EnvoyJwtFilterPayload), read by the RBAC matchers (generate.rs).
pub const PAYLOAD: &str = "payload";

/// Istio's sample JWKS (istio/istio security/tools/jwt/samples/jwks.json, byte for
/// byte: what istiod fetches from its raw URL).
pub const ISTIO_SAMPLE_JWKS: &str = include_str!("samples/istio-sample-jwks.json");
/// The issuer Istio's samples and docs use with that key.
pub const ISTIO_SAMPLE_ISSUER: &str = "testing@secure.istio.io";

/// jwks_resolver.go PublicOnlyJwks: what istiod inlines when it cannot fetch a
/// `jwksUri` (fail closed: nobody holds its private key, so every token is refused).
pub const PUBLIC_ONLY_JWKS: &str = r#"{
  "keys": [
    {
      "kty": "RSA",
      "e": "AQAB",
      "n": "0xObjM0UvS_oaazjpEYlAbwctEJ4L8pH3OuTb7qth7gUwqet-EzQB4dgFdvSdMgrLnSncQGRjpEYz3F3viIbH-3EN3TxSlPNviHxeOdyiBVfumN8dMxbLvVJUpfNOnvmMxJcl-8NNjAwcOjk4otSALaYgYYyOPyvKtgVdrQr-FoubWX4yrjxW-MJ2-7OBeepUUNOsVwGV23YX03sVkkyvY3otRflkBcY3_HKpBxJl9wk2GyOShN4_PNUF9-vwfnvOXMbCDX-w4PTef4geeb_GiT40YCKHTKMSPVanGRn5GExIWmki-mmqh94-mPTJyBR74ShspL3BxPZitDL574T1w"
    }
  ]
}"#;

/// Whether `uri` is where Istio's docs point `jwksUri` (Istio's sample JWKS on a
/// branch of istio/istio): meshcheck knows what it serves without fetching it.
pub fn is_istio_sample_jwks_uri(uri: &str) -> bool {
    uri.strip_prefix("https://raw.githubusercontent.com/istio/istio/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(branch, path)| {
            !branch.is_empty() && path == "security/tools/jwt/samples/jwks.json"
        })
}

/// Where a provider's JWKS comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    /// The rule's `jwks`, inlined as written.
    Inline,
    /// `jwksUri` naming Istio's sample JWKS: inlined as istiod writes it once fetched.
    SampleUri(String),
    /// Any other `jwksUri`: istiod fetches it when it programs the gateway; meshcheck
    /// never reaches the network and serves the JWKS of this run's own key there
    /// ([`crate::token::served_jwks`]: tokens minted with `key: served` verify).
    Unfetched(String),
}

/// One `jwtRules` entry as the Envoy provider `origins-<i>`
/// (envoy.extensions.filters.http.jwt_authn.v3.JwtProvider).
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    /// `RequestAuthentication ns/name jwtRules[i]`.
    pub rule: String,
    pub source: Source,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: String,
    pub jwks_source: JwksSource,
    pub forward: bool,
    /// (name, value_prefix).
    pub from_headers: Vec<(String, String)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub forward_payload_header: String,
    /// (header, claim).
    pub claim_to_headers: Vec<(String, String)>,
    pub space_delimited_claims: Vec<String>,
}

/// The filter's requirement (envoy.extensions.filters.http.jwt_authn.v3.JwtRequirement).
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Provider(usize),
    AllowMissing,
    Any(Vec<Requirement>),
    All(Vec<Requirement>),
}

/// The jwt_authn filter of a gateway pod (or of a sidecar's inbound listeners).
#[derive(Debug, Clone, PartialEq)]
pub struct JwtFilter {
    pub providers: Vec<Provider>,
    /// Each provider's `clear_route_cache` (authentication.go BuildHTTP:
    /// `JwtFilter(clearRouteCache: proxy.Type != SidecarProxy)`): a gateway re-picks
    /// its route after the claim headers are added; a sidecar's inbound route is one.
    pub clear_route_cache: bool,
}

impl Provider {
    fn json(&self, clear_route_cache: bool) -> Value {
        // protojson: empty strings, empty lists and false are left out.
        let mut m = Map::new();
        if !self.issuer.is_empty() {
            m.insert("issuer".into(), json!(self.issuer));
        }
        if !self.audiences.is_empty() {
            m.insert("audiences".into(), json!(self.audiences));
        }
        m.insert("local_jwks".into(), json!({"inline_string": self.jwks}));
        if self.forward {
            m.insert("forward".into(), json!(true));
        }
        if !self.from_headers.is_empty() {
            let hs: Vec<Value> = self
                .from_headers
                .iter()
                .map(|(name, prefix)| {
                    let mut h = json!({ "name": name });
                    if !prefix.is_empty() {
                        h["value_prefix"] = json!(prefix);
                    }
                    h
                })
                .collect();
            m.insert("from_headers".into(), Value::Array(hs));
        }
        if !self.from_params.is_empty() {
            m.insert("from_params".into(), json!(self.from_params));
        }
        if !self.forward_payload_header.is_empty() {
            m.insert(
                "forward_payload_header".into(),
                json!(self.forward_payload_header),
            );
        }
        m.insert("payload_in_metadata".into(), json!(PAYLOAD));
        if !self.claim_to_headers.is_empty() {
            let cs: Vec<Value> = self
                .claim_to_headers
                .iter()
                .map(|(h, c)| json!({"header_name": h, "claim_name": c}))
                .collect();
            m.insert("claim_to_headers".into(), Value::Array(cs));
        }
        m.insert(
            "normalize_payload_in_metadata".into(),
            json!({"space_delimited_claims": self.space_delimited_claims}),
        );
        // JwtFilter(clearRouteCache: proxy is not a sidecar): a gateway re-picks its
        // route after the claim headers are added; false is left out.
        if clear_route_cache {
            m.insert("clear_route_cache".into(), json!(true));
        }
        if !self.from_cookies.is_empty() {
            m.insert("from_cookies".into(), json!(self.from_cookies));
        }
        Value::Object(m)
    }
}

impl Requirement {
    fn json(&self, providers: &[Provider]) -> Value {
        match self {
            Requirement::Provider(i) => json!({"provider_name": providers[*i].name}),
            Requirement::AllowMissing => json!({"allow_missing": {}}),
            Requirement::Any(v) => json!({"requires_any": {"requirements":
                v.iter().map(|r| r.json(providers)).collect::<Vec<_>>()}}),
            Requirement::All(v) => json!({"requires_all": {"requirements":
                v.iter().map(|r| r.json(providers)).collect::<Vec<_>>()}}),
        }
    }
}

impl JwtFilter {
    /// convertToEnvoyJwtConfig: one provider, `{provider OR allow_missing}`; several,
    /// `{P1 OR P2 ... OR AND{OR{P1, allow_missing}, OR{P2, allow_missing}, ...}}` (a
    /// token, if present, must be valid; none at all passes).
    pub fn requirement(&self) -> Requirement {
        let optional =
            |i| Requirement::Any(vec![Requirement::Provider(i), Requirement::AllowMissing]);
        if self.providers.len() == 1 {
            return optional(0);
        }
        let mut or: Vec<Requirement> = (0..self.providers.len())
            .map(Requirement::Provider)
            .collect();
        or.push(Requirement::All(
            (0..self.providers.len()).map(optional).collect(),
        ));
        Requirement::Any(or)
    }

    /// The filter as Envoy JSON (name and typed_config), as istiod writes it.
    pub fn json(&self) -> Value {
        let providers: Map<String, Value> = self
            .providers
            .iter()
            .map(|p| (p.name.clone(), p.json(self.clear_route_cache)))
            .collect();
        json!({"name": FILTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"},
                       "requires": self.requirement().json(&self.providers)}],
            "bypass_cors_preflight": true,
        }})
    }
}

/// The RequestAuthentications that attach to a gateway pod in `namespace` with
/// `labels`, in istiod's order (authentication.go getConfigsForWorkload: the pod's
/// namespace, then the root namespace; each by creation time, then name: one apply,
/// one creation second), and the filter they make; None without JWT rules.
pub fn plan(
    fx: &Fixtures,
    namespace: &str,
    labels: &Labels,
    warnings: &mut Vec<Warning>,
) -> (Option<JwtFilter>, Vec<(String, Source)>) {
    let root = fx.root_namespace();
    let attached = |ns: &str| {
        let mut v: Vec<&Item<RequestAuthentication>> = fx
            .request_authentications
            .iter()
            .filter(|p| p.namespace == ns)
            .filter(|p| {
                let s = &p.spec.spec;
                super::attaches_by(
                    &p.namespace,
                    s.selector.as_ref(),
                    &s.target_refs(),
                    root,
                    namespace,
                    labels,
                )
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let mut policies = attached(namespace);
    if root != namespace {
        policies.extend(attached(root));
    }
    let mut applied = Vec::new();
    let mut rules: Vec<(&JwtRule, String, Source)> = Vec::new();
    for p in policies {
        if let Some(why) = refused(&p.spec) {
            warn(
                warnings,
                p,
                format!("istiod's validation refuses it ({why}): not applied"),
            );
            continue;
        }
        applied.push((p.describe(), p.source.clone()));
        for (i, r) in p.spec.spec.jwt_rules.iter().enumerate() {
            rules.push((
                r,
                format!("{} jwtRules[{i}]", p.describe()),
                p.source.clone(),
            ));
        }
    }
    // newPolicyApplier: sorted by issuer (Go's sort, stable for the few rules a gateway
    // has: insertion sort below 13 elements).
    rules.sort_by(|a, b| a.0.issuer.cmp(&b.0.issuer));
    if rules.is_empty() {
        return (None, applied);
    }
    let providers = rules
        .into_iter()
        .enumerate()
        .map(|(i, (r, rule, source))| {
            let (jwks, jwks_source) = jwks_of(r);
            match &jwks_source {
                JwksSource::SampleUri(uri) => warn_at(
                    warnings,
                    &rule,
                    &source,
                    format!(
                        "jwksUri {uri} is Istio's sample JWKS: meshcheck inlines it as istiod does once fetched (meshcheck never fetches it); an oracle run without network writes istiod's fail-closed JWKS there instead, so MC408 compares this provider without local_jwks"
                    ),
                ),
                JwksSource::Unfetched(uri) => warn_at(
                    warnings,
                    &rule,
                    &source,
                    format!(
                        "jwksUri {uri}: istiod fetches it when it programs the gateway; meshcheck never reaches the network, so the local target and the simulation serve a JWKS of this run's own key there instead: tokens of issuer {:?} verify locally when the suite mints them with `key: served`, and no other token does. On a cluster istiod fetches the real JWKS (a `key: served` token gets 401 there). MC408 compares this provider without local_jwks",
                        r.issuer
                    ),
                ),
                JwksSource::Inline => {}
            }
            Provider {
                name: format!("origins-{i}"),
                rule,
                source,
                issuer: r.issuer.clone(),
                audiences: r.audiences.clone(),
                jwks,
                jwks_source,
                forward: r.forward_original_token,
                from_headers: r
                    .from_headers
                    .iter()
                    .map(|h| (h.name.clone(), h.prefix.clone()))
                    .collect(),
                from_params: r.from_params.clone(),
                from_cookies: r.from_cookies.clone(),
                forward_payload_header: r.output_payload_to_header.clone(),
                claim_to_headers: r
                    .output_claim_to_headers
                    .iter()
                    .map(|c| (c.header.clone(), c.claim.clone()))
                    .collect(),
                space_delimited_claims: space_delimited(r.space_delimited_claims.as_deref()),
            }
        })
        .collect();
    (
        Some(JwtFilter {
            providers,
            clear_route_cache: true,
        }),
        applied,
    )
}

/// BuildLocalJwks: `jwks` as written; else what istiod fetched from `jwksUri`.
fn jwks_of(r: &JwtRule) -> (String, JwksSource) {
    if !r.jwks.is_empty() || r.jwks_uri.is_empty() {
        return (r.jwks.clone(), JwksSource::Inline);
    }
    if is_istio_sample_jwks_uri(&r.jwks_uri) {
        return (
            ISTIO_SAMPLE_JWKS.to_string(),
            JwksSource::SampleUri(r.jwks_uri.clone()),
        );
    }
    (
        crate::token::served_jwks().unwrap_or_else(|| PUBLIC_ONLY_JWKS.to_string()),
        JwksSource::Unfetched(r.jwks_uri.clone()),
    )
}

/// buildSpaceDelimitedClaims: `permission` and `scope` always, with the rule's own,
/// sorted.
fn space_delimited(own: Option<&[String]>) -> Vec<String> {
    let mut s: BTreeSet<String> = own.unwrap_or_default().iter().cloned().collect();
    s.insert("permission".into());
    s.insert("scope".into());
    s.into_iter().collect()
}

/// Why istiod's validation (pkg/config/validation ValidateRequestAuthentication,
/// validateJwtRule) refuses `p`, or None.
fn refused(p: &RequestAuthentication) -> Option<String> {
    let s = &p.spec;
    if s.selector
        .as_ref()
        .is_some_and(|sel| !sel.match_labels.is_empty())
        && !s.target_refs().is_empty()
    {
        return Some("only one of targetRefs or workloadSelector can be set".into());
    }
    for (i, r) in s.jwt_rules.iter().enumerate() {
        let bad = |m: String| Some(format!("jwtRules[{i}]: {m}"));
        if r.audiences.iter().any(String::is_empty) {
            return bad("audience must be non-empty string".into());
        }
        if r.issuer.is_empty() && r.jwks_uri.is_empty() {
            return bad("issuer or jwksUri must be non-empty string".into());
        }
        if !r.jwks_uri.is_empty() {
            let scheme = r.jwks_uri.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("http" | "https")) {
                return bad(format!(
                    "jwksUri {:?}: URI scheme is not supported",
                    r.jwks_uri
                ));
            }
        }
        if !r.jwks.is_empty() {
            if let Err(e) = Jwks::parse(&r.jwks) {
                return bad(format!("jwks parse error: {e}"));
            }
        }
        if r.from_headers.iter().any(|h| h.name.is_empty()) {
            return bad("location header name must be non-empty string".into());
        }
        if r.from_params.iter().any(String::is_empty) {
            return bad("location query must be non-empty string".into());
        }
        if r.from_cookies.iter().any(String::is_empty) {
            return bad("cookie name must be non-empty string".into());
        }
        for c in &r.output_claim_to_headers {
            if c.claim.is_empty() || c.header.is_empty() {
                return bad(
                    "outputClaimToHeaders header and claim value must be non-empty string".into(),
                );
            }
            if !c
                .header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return bad(format!(
                    "outputClaimToHeaders header {:?}: invalid header name",
                    c.header
                ));
            }
        }
        if let Some(t) = &r.timeout {
            // agent.ValidateDuration: at least 1ms, in whole milliseconds.
            let ms = crate::istio::mesh::duration_ms(t);
            if ms.is_none_or(|ms| ms < 1) {
                return bad(format!("timeout {t:?}: duration must be greater than 1ms"));
            }
        }
    }
    None
}

fn warn(warnings: &mut Vec<Warning>, p: &Item<RequestAuthentication>, message: String) {
    warn_at(warnings, &p.describe(), &p.source, message)
}

fn warn_at(warnings: &mut Vec<Warning>, object: &str, at: &Source, message: String) {
    let w = Warning {
        at: at.clone(),
        object: object.to_string(),
        message,
        field: None,
    };
    if !warnings.contains(&w) {
        warnings.push(w);
    }
}

// ---- what the filter does with a request ------------------------------------------

/// Envoy's JWT verification statuses (source/common/jwt/status.h) that the model can
/// reach, with Envoy's words for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    Missed,
    NotYetValid,
    Expired,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    /// `[iss]`, `[sub]`, `[jti]` not a string.
    ClaimNotString(&'static str),
    /// `[iat]`, `[nbf]`, `[exp]` not an integer.
    ClaimNotInteger(&'static str),
    /// ... or negative.
    ClaimOutOfRange(&'static str),
    AudNotString,
    SignatureBadBase64,
    UnknownIssuer,
    AudienceNotAllowed,
    VerificationFail,
    Ed25519SignatureWrongLength,
    JwksNoValidKeys,
    JwksKidAlgMismatch,
    /// A signature Envoy checks and ring cannot (ES512: P-521): not predicted.
    Unverifiable(String),
}

impl Status {
    /// Envoy's getStatusString (the 401 body).
    pub fn message(&self) -> String {
        match self {
            Status::Ok => "OK".into(),
            Status::Missed => "Jwt is missing".into(),
            Status::NotYetValid => "Jwt not yet valid".into(),
            Status::Expired => "Jwt is expired".into(),
            Status::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
                    .into()
            }
            Status::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded".into(),
            Status::HeaderBadJson => "Jwt header is an invalid JSON".into(),
            Status::HeaderBadAlg => {
                "Jwt header [alg] field is required and must be a string".into()
            }
            Status::HeaderNotImplementedAlg => "Jwt header [alg] is not supported".into(),
            Status::HeaderBadKid => "Jwt header [kid] field is not a string".into(),
            Status::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded".into(),
            Status::PayloadBadJson => "Jwt payload is an invalid JSON".into(),
            Status::ClaimNotString(c) => format!("Jwt payload [{c}] field is not a string"),
            Status::ClaimNotInteger(c) => format!("Jwt payload [{c}] field is not an integer"),
            Status::ClaimOutOfRange(c) => {
                format!("Jwt payload [{c}] field is not a positive 64 bit integer")
            }
            Status::AudNotString => "Jwt payload [aud] field is not a string or string list".into(),
            Status::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded".into(),
            Status::UnknownIssuer => "Jwt issuer is not configured".into(),
            Status::AudienceNotAllowed => "Audiences in Jwt are not allowed".into(),
            Status::VerificationFail => "Jwt verification fails".into(),
            Status::Ed25519SignatureWrongLength => "Jwt ED25519 signature is wrong length".into(),
            Status::JwksNoValidKeys => "Jwks doesn't have any valid public key".into(),
            Status::JwksKidAlgMismatch => {
                "Jwks doesn't have key to match kid or alg from Jwt".into()
            }
            Status::Unverifiable(alg) => {
                format!("meshcheck cannot check {alg} signatures (Envoy can): taken as failing")
            }
        }
    }

    /// filter.cc onComplete: 403 for audiences, 401 for every other failure.
    pub fn http_status(&self) -> u16 {
        if *self == Status::AudienceNotAllowed {
            403
        } else {
            401
        }
    }
}

/// What the filter did with one request.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Ok, or why the filter answered itself (`status.http_status()`).
    pub status: Status,
    /// The provider whose verdict that is (its rule is named in `why`).
    pub provider: Option<usize>,
    /// The request headers after the filter: the providers' output headers sanitized,
    /// the payload and claim headers added, the token header removed unless
    /// `forwardOriginalToken`.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The verified payload (dynamic metadata `payload`), if any.
    pub payload: Option<Value>,
    pub why: String,
}

/// The request state the verifiers share (verifier.cc ContextImpl).
struct Ctx<'a> {
    r: &'a rbac::Request,
    headers: BTreeMap<String, Vec<String>>,
    payload: Option<Value>,
    verified: Option<usize>,
    now: u64,
}

impl JwtFilter {
    /// Runs the filter over `r` at unix time `now` (seconds).
    pub fn apply(&self, r: &rbac::Request, now: u64) -> Applied {
        // bypass_cors_preflight (filter.cc, Http::Utility::isCorsPreflightRequest): an
        // OPTIONS request with Origin and Access-Control-Request-Method is not looked at.
        let non_empty = |h: &str| {
            r.headers
                .get(h)
                .is_some_and(|v| v.iter().any(|x| !x.is_empty()))
        };
        if r.method.eq_ignore_ascii_case("OPTIONS")
            && non_empty("origin")
            && non_empty("access-control-request-method")
        {
            return Applied {
                status: Status::Ok,
                provider: None,
                headers: r.headers.clone(),
                payload: None,
                why: "JWT: a CORS preflight is not verified (bypass_cors_preflight)".into(),
            };
        }
        let mut ctx = Ctx {
            r,
            headers: r.headers.clone(),
            payload: None,
            verified: None,
            now,
        };
        let (status, provider) = self.eval(&self.requirement(), &mut ctx);
        let named = |i: Option<usize>| {
            i.map(|i| {
                let p = &self.providers[i];
                format!("{} (issuer {:?}, provider {})", p.rule, p.issuer, p.name)
            })
        };
        let why = match (&status, named(provider.or(ctx.verified))) {
            (Status::Ok, Some(rule)) => format!("JWT: token verified by {rule}"),
            (Status::Ok, None) => {
                "JWT: no token where the rules look (a request without a token passes)".to_string()
            }
            (s, rule) => format!(
                "JWT: {}{}: {}",
                s.message(),
                rule.map(|r| format!(" ({r})")).unwrap_or_default(),
                s.http_status()
            ),
        };
        let ok = status == Status::Ok;
        Applied {
            status,
            provider: provider.or(ctx.verified),
            headers: ctx.headers,
            payload: if ok { ctx.payload } else { None },
            why,
        }
    }

    /// verifier.cc: a requirement's status and the provider it comes from.
    fn eval(&self, req: &Requirement, ctx: &mut Ctx) -> (Status, Option<usize>) {
        match req {
            Requirement::Provider(i) => (self.authenticate(*i, ctx), Some(*i)),
            // Istio's requirements always give allow_missing a provider beside it.
            Requirement::AllowMissing => (Status::Ok, None),
            Requirement::Any(children) => {
                let allow_missing = children.contains(&Requirement::AllowMissing);
                let mut done = Vec::new();
                for c in children.iter().filter(|c| **c != Requirement::AllowMissing) {
                    let s = self.eval(c, ctx);
                    if s.0 == Status::Ok {
                        return s;
                    }
                    done.push(s);
                }
                // AnyVerifierImpl::onComplete: prefer errors other than JwtMissed and
                // JwtUnknownIssuer; JwtUnknownIssuer over JwtMissed.
                let mut fin = (Status::Missed, None);
                for s in done {
                    if !matches!(s.0, Status::Missed | Status::UnknownIssuer)
                        || fin.0 == Status::Missed
                    {
                        fin = s;
                    }
                }
                if allow_missing && fin.0 == Status::Missed {
                    return (Status::Ok, None);
                }
                fin
            }
            Requirement::All(children) => {
                let mut last = (Status::Ok, None);
                for c in children {
                    last = self.eval(c, ctx);
                    if last.0 != Status::Ok {
                        return last;
                    }
                }
                last
            }
        }
    }

    /// ProviderVerifierImpl::verify and the authenticator of provider `i`: its output
    /// headers sanitized, its tokens extracted, each verified (the last found first);
    /// all must be valid.
    fn authenticate(&self, i: usize, ctx: &mut Ctx) -> Status {
        let p = &self.providers[i];
        if !p.forward_payload_header.is_empty() {
            ctx.headers
                .remove(&p.forward_payload_header.to_ascii_lowercase());
        }
        for (h, _) in &p.claim_to_headers {
            ctx.headers.remove(&h.to_ascii_lowercase());
        }
        let mut tokens = extract(p, &ctx.headers, &ctx.r.path);
        if tokens.is_empty() {
            return Status::Missed;
        }
        let jwks = Jwks::parse(&p.jwks).unwrap_or_default();
        while let Some(t) = tokens.pop() {
            let jwt = match Jwt::parse(&t.token) {
                Ok(j) => j,
                Err(s) => return s,
            };
            if !p.issuer.is_empty() && jwt.iss != p.issuer {
                return Status::UnknownIssuer;
            }
            // verifyTimeConstraint with the default clock skew of 60 s.
            const SKEW: u64 = 60;
            if ctx.now + SKEW < jwt.nbf {
                return Status::NotYetValid;
            }
            if jwt.exp != 0 && ctx.now > jwt.exp + SKEW {
                return Status::Expired;
            }
            if !audiences_allowed(&p.audiences, &jwt.audiences) {
                return Status::AudienceNotAllowed;
            }
            if jwks.keys.is_empty() {
                return Status::JwksNoValidKeys;
            }
            let s = jwks.verify(&jwt);
            if s != Status::Ok {
                return s;
            }
            // handleGoodJwt.
            if !p.forward_payload_header.is_empty() {
                ctx.headers
                    .entry(p.forward_payload_header.to_ascii_lowercase())
                    .or_default()
                    .push(jwt.payload_b64.clone());
            }
            for (h, c) in &p.claim_to_headers {
                if let Some(v) = claim_header_value(&jwt.payload, c) {
                    ctx.headers
                        .entry(h.to_ascii_lowercase())
                        .or_default()
                        .push(v);
                }
            }
            if !p.forward {
                if let Location::Header(h) = &t.location {
                    ctx.headers.remove(h);
                }
            }
            ctx.payload = Some(normalized(&jwt.payload, &p.space_delimited_claims));
            ctx.verified = Some(i);
        }
        Status::Ok
    }
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq)]
enum Location {
    /// A header (lower-case name): removed after verification unless forwarded.
    Header(String),
    /// A query parameter or cookie: Envoy leaves it in place.
    Other,
}

struct Found {
    token: String,
    location: Location,
}

/// extractor.cc ExtractorImpl::extract for one provider: header locations (ordered by
/// name and prefix), then query parameters, then cookies (each by name); by default
/// `Authorization: Bearer` and `access_token`.
fn extract(p: &Provider, headers: &BTreeMap<String, Vec<String>>, path: &str) -> Vec<Found> {
    let mut header_locs: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut params: BTreeSet<String> = p.from_params.iter().cloned().collect();
    let cookies: BTreeSet<String> = p.from_cookies.iter().cloned().collect();
    for (name, prefix) in &p.from_headers {
        let lower = name.to_ascii_lowercase();
        header_locs.insert(format!("{lower}{prefix}"), (lower, prefix.clone()));
    }
    if p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
        header_locs.insert(
            "authorizationBearer ".into(),
            ("authorization".into(), "Bearer ".into()),
        );
        params.insert("access_token".into());
    }
    let mut out = Vec::new();
    for (name, prefix) in header_locs.values() {
        let Some(values) = headers.get(name) else {
            continue;
        };
        let value = values.join(",");
        let token = if prefix.is_empty() {
            value
        } else {
            let Some(pos) = value.find(prefix.as_str()) else {
                continue;
            };
            jwt_run(&value, pos + prefix.len()).to_string()
        };
        out.push(Found {
            token,
            location: Location::Header(name.clone()),
        });
    }
    if !params.is_empty() {
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
        let query = query.split('#').next().unwrap_or("");
        for name in &params {
            // Http::Utility::parseAndDecodeQueryString: the first of a repeated key.
            let found = query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k) == *name).then(|| percent_decode(v))
            });
            if let Some(token) = found {
                out.push(Found {
                    token,
                    location: Location::Other,
                });
            }
        }
    }
    if !cookies.is_empty() {
        for name in &cookies {
            let found = headers
                .get("cookie")
                .into_iter()
                .flatten()
                .find_map(|line| {
                    line.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k.trim() == name).then(|| {
                            let v = v.trim();
                            v.strip_prefix('"')
                                .and_then(|x| x.strip_suffix('"'))
                                .unwrap_or(v)
                                .to_string()
                        })
                    })
                });
            if let Some(token) = found {
                out.push(Found {
                    token,
                    location: Location::Other,
                });
            }
        }
    }
    out
}

/// ExtractorImpl::extractJWT: the run of base64url characters and dots from the first
/// one at or after `after` (the value itself when there is none).
fn jwt_run(value: &str, after: usize) -> &str {
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let rest = &value[after.min(value.len())..];
    let Some(start) = rest.find(legal) else {
        return value;
    };
    let run = &rest[start..];
    let end = run.find(|c: char| !legal(c)).unwrap_or(run.len());
    &run[..end]
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// check_audience.cc: any of the token's audiences among the configured ones (both
/// without an `http://`/`https://` prefix and a trailing `/`); none configured: any.
fn audiences_allowed(config: &[String], token: &[String]) -> bool {
    fn sanitize(a: &str) -> &str {
        let a = a
            .strip_prefix("http://")
            .or_else(|| a.strip_prefix("https://"))
            .unwrap_or(a);
        a.strip_suffix('/').unwrap_or(a)
    }
    if config.is_empty() {
        return true;
    }
    let allowed: BTreeSet<&str> = config.iter().map(|a| sanitize(a)).collect();
    token.iter().any(|a| allowed.contains(sanitize(a)))
}

/// authenticator.cc setPayloadMetadata: each space-delimited claim that is a string
/// becomes the list of its words.
fn normalized(payload: &Value, claims: &[String]) -> Value {
    let mut out = payload.clone();
    for c in claims {
        if let Some(Value::String(s)) = payload.get(c) {
            let words: Vec<Value> = s
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(|w| json!(w))
                .collect();
            if !words.is_empty() {
                out[c] = Value::Array(words);
            }
        }
    }
    out
}

/// authenticator.cc addJWTClaimToHeader: the claim (a dotted path into the payload)
/// as a header value: strings as they are, numbers as integers when whole, booleans,
/// objects and lists as base64 of their JSON.
fn claim_header_value(payload: &Value, claim: &str) -> Option<String> {
    let mut v = payload;
    for part in claim.split('.') {
        v = v.as_object()?.get(part)?;
    }
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let d = n.as_f64()?;
            if d >= 0.0 && d < u64::MAX as f64 && d.fract() == 0.0 {
                (d as u64).to_string()
            } else {
                format!("{d:.6}")
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Object(_) | Value::Array(_) => {
            base64::engine::general_purpose::STANDARD.encode(v.to_string())
        }
        Value::Null => return None,
    };
    (!s.is_empty()).then_some(s)
}

// ---- tokens and keys ---------------------------------------------------------------

/// base64url, padded or not (absl WebSafeBase64Unescape).
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// A parsed token (source/common/jwt/jwt.cc Jwt::parseFromString).
#[derive(Debug, Clone)]
pub struct Jwt {
    pub alg: String,
    pub kid: String,
    pub iss: String,
    pub audiences: Vec<String>,
    pub nbf: u64,
    pub exp: u64,
    pub payload: Value,
    pub payload_b64: String,
    signed: String,
    signature: Vec<u8>,
}

const IMPLEMENTED_ALGS: &[&str] = &[
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "EdDSA",
];

impl Jwt {
    pub fn parse(token: &str) -> Result<Jwt, Status> {
        let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
        if parts.len() != 3 {
            return Err(Status::BadFormat);
        }
        let header = b64url_decode(parts[0]).ok_or(Status::HeaderBadBase64)?;
        let header: Value = serde_json::from_slice(&header).map_err(|_| Status::HeaderBadJson)?;
        let header = header.as_object().ok_or(Status::HeaderBadJson)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Status::HeaderBadAlg)?
            .to_string();
        if !IMPLEMENTED_ALGS.contains(&alg.as_str()) {
            return Err(Status::HeaderNotImplementedAlg);
        }
        let kid = match header.get("kid") {
            None => String::new(),
            Some(Value::String(k)) => k.clone(),
            Some(_) => return Err(Status::HeaderBadKid),
        };
        let payload_raw = b64url_decode(parts[1]).ok_or(Status::PayloadBadBase64)?;
        let payload: Value =
            serde_json::from_slice(&payload_raw).map_err(|_| Status::PayloadBadJson)?;
        let obj = payload.as_object().ok_or(Status::PayloadBadJson)?;
        let string = |k: &'static str| match obj.get(k) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Status::ClaimNotString(k)),
        };
        let iss = string("iss")?;
        string("sub")?;
        let int = |k: &'static str| match obj.get(k) {
            None => Ok(0),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(d) if d < 0.0 || d >= u64::MAX as f64 => Err(Status::ClaimOutOfRange(k)),
                Some(d) => Ok(d as u64),
                None => Err(Status::ClaimNotInteger(k)),
            },
            Some(_) => Err(Status::ClaimNotInteger(k)),
        };
        int("iat")?;
        let nbf = int("nbf")?;
        let exp = int("exp")?;
        string("jti")?;
        let audiences = match obj.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or(Status::AudNotString))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Status::AudNotString),
        };
        let signature = b64url_decode(parts[2]).ok_or(Status::SignatureBadBase64)?;
        Ok(Jwt {
            alg,
            kid,
            iss,
            audiences,
            nbf,
            exp,
            payload,
            payload_b64: parts[1].to_string(),
            signed: format!("{}.{}", parts[0], parts[1]),
            signature,
        })
    }
}

/// One key of a JWKS (source/common/jwt/jwks.cc).
#[derive(Debug, Clone)]
struct Jwk {
    kid: String,
    alg: String,
    key: Key,
}

#[derive(Debug, Clone)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { crv: String, point: Vec<u8> },
    Oct(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// A JWKS: its keys Envoy can use (a key it cannot read is skipped).
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document; Err when it is no JWKS at all.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = v
            .get("keys")
            .ok_or("no [keys] field")?
            .as_array()
            .ok_or("[keys] is not an array")?;
        let keys = keys.iter().filter_map(Jwk::parse).collect();
        Ok(Jwks { keys })
    }

    /// Whether `jwt`'s signature verifies with one of the keys.
    pub fn verifies(&self, jwt: &Jwt) -> bool {
        self.verify(jwt) == Status::Ok
    }

    /// verify.cc verifyJwtWithoutTimeChecking.
    fn verify(&self, jwt: &Jwt) -> Status {
        use ring::signature as sig;
        let msg = jwt.signed.as_bytes();
        let mut matched = false;
        for k in &self.keys {
            if !jwt.kid.is_empty() && !k.kid.is_empty() && k.kid != jwt.kid {
                continue;
            }
            if !k.alg.is_empty() && k.alg != jwt.alg {
                continue;
            }
            matched = true;
            let ok = match &k.key {
                Key::Ec { crv, point } => {
                    // Envoy hashes by the token's alg and verifies with the key's
                    // curve; ring has the usual pairs.
                    let alg: Option<&'static dyn sig::VerificationAlgorithm> =
                        match (crv.as_str(), jwt.alg.as_str()) {
                            ("P-256", "ES256") => Some(&sig::ECDSA_P256_SHA256_FIXED),
                            ("P-384", "ES384") => Some(&sig::ECDSA_P384_SHA384_FIXED),
                            // Not an ECDSA signature: it cannot verify.
                            (_, a) if !a.starts_with("ES") => None,
                            _ => return Status::Unverifiable(format!("{} with {crv}", jwt.alg)),
                        };
                    alg.is_some_and(|alg| {
                        sig::UnparsedPublicKey::new(alg, point)
                            .verify(msg, &jwt.signature)
                            .is_ok()
                    })
                }
                Key::Rsa { n, e } => {
                    let alg: Option<&sig::RsaParameters> = match jwt.alg.as_str() {
                        "RS384" => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
                        "RS512" => Some(&sig::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY),
                        a if a.starts_with("RS") => {
                            Some(&sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY)
                        }
                        "PS384" => Some(&sig::RSA_PSS_2048_8192_SHA384),
                        "PS512" => Some(&sig::RSA_PSS_2048_8192_SHA512),
                        a if a.starts_with("PS") => Some(&sig::RSA_PSS_2048_8192_SHA256),
                        _ => None,
                    };
                    alg.is_some_and(|alg| {
                        sig::RsaPublicKeyComponents { n, e }
                            .verify(alg, msg, &jwt.signature)
                            .is_ok()
                    })
                }
                Key::Oct(k) => {
                    let alg = match jwt.alg.as_str() {
                        "HS384" => ring::hmac::HMAC_SHA384,
                        "HS512" => ring::hmac::HMAC_SHA512,
                        _ => ring::hmac::HMAC_SHA256,
                    };
                    ring::hmac::verify(&ring::hmac::Key::new(alg, k), msg, &jwt.signature).is_ok()
                }
                Key::Ed25519(x) => {
                    if jwt.signature.len() != 64 {
                        return Status::Ed25519SignatureWrongLength;
                    }
                    sig::UnparsedPublicKey::new(&sig::ED25519, x)
                        .verify(msg, &jwt.signature)
                        .is_ok()
                }
            };
            if ok {
                return Status::Ok;
            }
        }
        if matched {
            Status::VerificationFail
        } else {
            Status::JwksKidAlgMismatch
        }
    }
}

impl Jwk {
    fn parse(v: &Value) -> Option<Jwk> {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let b = |k: &str| s(k).and_then(b64url_decode);
        let key = match s("kty")? {
            "RSA" => Key::Rsa {
                n: b("n")?,
                e: b("e")?,
            },
            "EC" => {
                let crv = s("crv").unwrap_or("P-256").to_string();
                let width = match crv.as_str() {
                    "P-256" => 32,
                    "P-384" => 48,
                    _ => 66,
                };
                let pad = |mut c: Vec<u8>| {
                    while c.len() < width {
                        c.insert(0, 0);
                    }
                    c
                };
                let mut point = vec![4u8];
                point.extend(pad(b("x")?));
                point.extend(pad(b("y")?));
                Key::Ec { crv, point }
            }
            "oct" => Key::Oct(b("k")?),
            "OKP" if s("crv") == Some("Ed25519") => Key::Ed25519(b("x")?),
            _ => return None,
        };
        Some(Jwk {
            kid: s("kid").unwrap_or("").to_string(),
            alg: s("alg").unwrap_or("").to_string(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(jwks: &str) -> Provider {
        Provider {
            name: "origins-0".into(),
            rule: "RequestAuthentication ns/a jwtRules[0]".into(),
            source: Source::default(),
            issuer: ISTIO_SAMPLE_ISSUER.into(),
            audiences: vec![],
            jwks: jwks.into(),
            jwks_source: JwksSource::Inline,
            forward: false,
            from_headers: vec![],
            from_params: vec![],
            from_cookies: vec![],
            forward_payload_header: String::new(),
            claim_to_headers: vec![],
            space_delimited_claims: space_delimited(None),
        }
    }

    fn request(headers: &[(&str, &str)], path: &str) -> rbac::Request {
        let mut r = rbac::Request {
            path: path.into(),
            ..Default::default()
        };
        for (k, v) in headers {
            r.headers
                .entry(k.to_string())
                .or_default()
                .push(v.to_string());
        }
        r
    }

    /// Istio's own sample token (security/tools/jwt/samples/demo.jwt: exp 4685989700).
    const DEMO: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRIRmJwb0lVcXJZOHQyenBBMnFYZkNtcjVWTzVaRXI0UnpIVV8tZW52dlEiLCJ0eXAiOiJKV1QifQ.eyJleHAiOjQ2ODU5ODk3MDAsImZvbyI6ImJhciIsImlhdCI6MTUzMjM4OTcwMCwiaXNzIjoidGVzdGluZ0BzZWN1cmUuaXN0aW8uaW8iLCJzdWIiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyJ9.CfNnxWP2tcnR9q0vxyxweaF3ovQYHYZl82hAUsn21bwQd9zP7c-LS9qd_vpdLG4Tn1A15NxfCjp5f7QNBUo-KC9PJqYpgGbaXhaGx7bEdFWjcwv3nZzvc7M__ZpaCERdwU7igUmJqYGBYQ51vr2njU9ZimyKkfDe3axcyiBZde7G6dabliUosJvvKOPcKIWPccCgefSj_GNfwIip3-SsFdlR7BtbVUcqR-yv-XOxJ3Uc1MI0tz3uMiiZcyPV7sNCU4KRnemRIMHVOfuvHsU60_GhGbiSFzgPTAa9WTltbnarTbxudb_YEOx12JiwYToeX0DCPb43W1tzIBxgm8NxUg";

    #[test]
    fn istios_demo_token_verifies_with_istios_sample_jwks() {
        let f = JwtFilter {
            providers: vec![provider(ISTIO_SAMPLE_JWKS)],
            clear_route_cache: true,
        };
        let bearer = format!("Bearer {DEMO}");
        let a = f.apply(&request(&[("authorization", &bearer)], "/"), 1_800_000_000);
        assert_eq!(a.status, Status::Ok, "{}", a.why);
        assert_eq!(a.payload.unwrap()["foo"], "bar");
        // Not forwarded: the token's header is removed.
        assert!(!a.headers.contains_key("authorization"));
        // The signature checked: one character changed fails.
        let bad = format!("Bearer {}", DEMO.replacen(".Cf", ".Df", 1));
        let a = f.apply(&request(&[("authorization", &bad)], "/"), 1_800_000_000);
        assert_eq!(a.status, Status::VerificationFail);
        // The fail-closed JWKS refuses it.
        let f = JwtFilter {
            providers: vec![provider(PUBLIC_ONLY_JWKS)],
            clear_route_cache: true,
        };
        let a = f.apply(&request(&[("authorization", &bearer)], "/"), 1_800_000_000);
        // (The token has a kid, the fail-closed key none: the key is tried.)
        assert_eq!(a.status, Status::VerificationFail);
    }

    #[test]
    fn missing_passes_expired_and_other_issuers_fail() {
        let f = JwtFilter {
            providers: vec![provider(ISTIO_SAMPLE_JWKS)],
            clear_route_cache: true,
        };
        let a = f.apply(&request(&[], "/"), 1_800_000_000);
        assert_eq!(a.status, Status::Ok);
        assert!(a.payload.is_none());
        // Past exp + 60 s of clock skew.
        let q = format!("/?access_token={DEMO}");
        assert_eq!(
            f.apply(&request(&[], &q), 4_685_989_761).status,
            Status::Expired
        );
        assert_eq!(f.apply(&request(&[], &q), 4_685_989_760).status, Status::Ok);
        let mut other = provider(ISTIO_SAMPLE_JWKS);
        other.issuer = "other".into();
        let f = JwtFilter {
            providers: vec![other],
            clear_route_cache: true,
        };
        assert_eq!(
            f.apply(&request(&[], &q), 1_800_000_000).status,
            Status::UnknownIssuer
        );
    }

    #[test]
    fn two_providers_take_either_issuer_and_refuse_a_third() {
        let mut b = provider(ISTIO_SAMPLE_JWKS);
        b.name = "origins-1".into();
        b.issuer = "zz-other".into();
        let f = JwtFilter {
            providers: vec![provider(ISTIO_SAMPLE_JWKS), b],
            clear_route_cache: true,
        };
        let bearer = format!("Bearer {DEMO}");
        let a = f.apply(&request(&[("authorization", &bearer)], "/"), 1_800_000_000);
        assert_eq!(a.status, Status::Ok, "{}", a.why);
        assert_eq!(a.provider, Some(0));
        let a = f.apply(&request(&[], "/"), 1_800_000_000);
        assert_eq!(a.status, Status::Ok);
        let a = f.apply(
            &request(&[("authorization", "Bearer YWJj.e30.c2ln")], "/"),
            1_800_000_000,
        );
        assert_eq!(a.status, Status::HeaderBadJson);
        // An issuer neither provider names: the error of a provider that read it.
        let a = f.apply(
            &request(&[("authorization", "Bearer e30.e30.c2ln")], "/"),
            1_800_000_000,
        );
        assert_eq!(a.status, Status::HeaderBadAlg);
    }

    #[test]
    fn headers_prefixes_and_outputs_are_envoys() {
        let mut p = provider(ISTIO_SAMPLE_JWKS);
        p.from_headers = vec![("X-Jwt".into(), "Token ".into())];
        p.forward_payload_header = "x-payload".into();
        p.claim_to_headers = vec![
            ("x-foo".into(), "foo".into()),
            ("x-iat".into(), "iat".into()),
        ];
        p.forward = true;
        let f = JwtFilter {
            providers: vec![p],
            clear_route_cache: true,
        };
        // Without the prefix the header is no location; the Bearer header is not read.
        let bearer = format!("Bearer {DEMO}");
        let a = f.apply(
            &request(&[("authorization", &bearer), ("x-payload", "spoofed")], "/"),
            1_800_000_000,
        );
        assert_eq!(a.status, Status::Ok);
        assert!(a.payload.is_none());
        assert!(!a.headers.contains_key("x-payload"), "sanitized");
        let t = format!("xx Token {DEMO};rest");
        let a = f.apply(&request(&[("x-jwt", &t)], "/"), 1_800_000_000);
        assert_eq!(a.status, Status::Ok, "{}", a.why);
        assert_eq!(a.headers["x-foo"], vec!["bar"]);
        assert_eq!(a.headers["x-iat"], vec!["1532389700"]);
        assert_eq!(
            a.headers["x-payload"],
            vec![DEMO.split('.').nth(1).unwrap()]
        );
        assert_eq!(a.headers["x-jwt"], vec![t], "forwarded");
    }

    #[test]
    fn a_cors_preflight_is_not_verified() {
        let f = JwtFilter {
            providers: vec![provider(ISTIO_SAMPLE_JWKS)],
            clear_route_cache: true,
        };
        let mut r = request(
            &[
                ("authorization", "Bearer garbage"),
                ("origin", "https://a.example"),
                ("access-control-request-method", "GET"),
            ],
            "/",
        );
        r.method = "OPTIONS".into();
        assert_eq!(f.apply(&r, 1_800_000_000).status, Status::Ok);
        r.method = "GET".into();
        assert_eq!(f.apply(&r, 1_800_000_000).status, Status::BadFormat);
    }

    #[test]
    fn audiences_are_compared_without_scheme_and_trailing_slash() {
        assert!(audiences_allowed(&[], &[]));
        assert!(audiences_allowed(&["https://a/".into()], &["a".into()]));
        assert!(!audiences_allowed(&["a".into()], &["b".into()]));
        assert!(!audiences_allowed(&["a".into()], &[]));
        assert_eq!(Status::AudienceNotAllowed.http_status(), 403);
        assert_eq!(Status::Expired.http_status(), 401);
    }

    #[test]
    fn space_delimited_claims_become_lists() {
        let p = json!({"scope": "read  write", "other": "a b"});
        let n = normalized(&p, &space_delimited(None));
        assert_eq!(n["scope"], json!(["read", "write"]));
        assert_eq!(n["other"], json!("a b"));
        assert_eq!(
            space_delimited(Some(&["roles".into()])),
            ["permission", "roles", "scope"]
        );
    }

    #[test]
    fn istios_sample_uri_is_recognised() {
        assert!(is_istio_sample_jwks_uri(
            "https://raw.githubusercontent.com/istio/istio/release-1.30/security/tools/jwt/samples/jwks.json"
        ));
        assert!(!is_istio_sample_jwks_uri(
            "https://raw.githubusercontent.com/istio/istio/release-1.30/security/tools/jwt/samples/other.json"
        ));
        assert!(Jwks::parse(PUBLIC_ONLY_JWKS).unwrap().keys.len() == 1);
        assert!(Jwks::parse(ISTIO_SAMPLE_JWKS).unwrap().keys.len() == 1);
    }
}
