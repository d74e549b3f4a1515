//! AuthorizationPolicy action CUSTOM with a meshConfig `envoyExtAuthzHttp` extension
//! provider, as istiod 1.30 writes it (pilot/pkg/security/authz/builder/builder.go
//! buildHTTP, extauthz.go buildExtAuthzHTTP/generateHTTPConfig): per provider an
//! envoy.filters.http.rbac filter whose `shadow_rules` (stat prefix
//! `istio_ext_authz_`) hold the CUSTOM policies, named
//! `istio-ext-authz-<provider>-ns[..]-policy[..]-rule[i]`, then an
//! envoy.filters.http.ext_authz filter enabled by the dynamic metadata the shadow rules
//! leave when one matches (`filter_enabled_metadata`). A provider istiod cannot use
//! (unknown, another kind, invalid) gives builder.go's deny filter instead
//! (getBadCustomDenyRules: the policies, suffixed `-deny-due-to-bad-CUSTOM-action`,
//! as a DENY RBAC filter).
//!
//! The simulation knows one authorizer: meshcheck's stub run with `STUB_ROLE:
//! ext-authz`, which answers as Istio's sample ext-authz HTTP server
//! (samples/extauthz/cmd/extauthz/main.go ServeHTTP). Any other authorizer's answer is
//! not predicted, and the verdict says so.

use super::rbac::{Action, Policy, RbacFilter, Request, Rules, StringMatcher};
use super::{DeniedBy, Verdict};
use crate::fixtures::mesh_config::ExtAuthzHttpProvider;
use crate::fixtures::security::AuthorizationPolicy;
use crate::fixtures::{Fixtures, Item, Warning};
use serde_json::{json, Value};

/// extauthz.go extAuthzMatchPrefix.
pub const MATCH_PREFIX: &str = "istio-ext-authz";
/// builder.go badCustomActionSuffix.
pub const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";
/// model.go RBACExtAuthzShadowRulesStatPrefix.
pub const SHADOW_STAT_PREFIX: &str = "istio_ext_authz_";
pub const FILTER: &str = "envoy.filters.http.ext_authz";

/// The stub environment variable and value that make it Istio's sample authorizer.
pub const STUB_ROLE_VAR: &str = "STUB_ROLE";
pub const STUB_ROLE_EXT_AUTHZ: &str = "ext-authz";
/// samples/extauthz/cmd/extauthz/main.go: checkHeader, allowedValue, resultHeader,
/// denyBody.
pub const CHECK_HEADER: &str = "x-ext-authz";
pub const ALLOWED_VALUE: &str = "allow";
pub const RESULT_HEADER: &str = "x-ext-authz-check-result";
pub const DENY_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

/// What answers the provider's check requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Authorizer {
    /// meshcheck's stub as Istio's sample ext-authz server: allows a check request
    /// carrying `x-ext-authz: allow`, otherwise 403 with [`DENY_BODY`].
    SampleStub,
    /// Something else (why the answer is not predicted).
    Unknown(String),
}

/// One envoy.filters.http.ext_authz filter (envoy.extensions.filters.http.ext_authz.v3).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthzFilter {
    pub provider: String,
    /// `http://<hostname>` (required by Envoy, unused).
    pub uri: String,
    /// `outbound|<port>||<hostname>`.
    pub cluster: String,
    /// protojson Duration (`600s`).
    pub timeout: String,
    pub path_prefix: String,
    /// Headers of the client request sent in the check (Envoy adds `:authority`,
    /// `:method`, `:path`, `content-length` and `authorization` itself).
    pub allowed_headers: Vec<StringMatcher>,
    pub headers_to_add: Vec<(String, String)>,
    /// None: no authorization_response.
    pub response: Option<[Vec<StringMatcher>; 3]>,
    pub failure_mode_allow: bool,
    pub status_on_error: Option<u16>,
    pub with_request_body: Option<(u32, bool, bool)>,
    pub authorizer: Authorizer,
}

/// extauthz.go generateHeaders: `*x` suffix, `x*` prefix, else exact; all ignore case.
fn header_matchers(headers: &[String]) -> Vec<StringMatcher> {
    headers
        .iter()
        .map(|h| {
            if let Some(s) = h.strip_prefix('*') {
                StringMatcher::suffix(s, true)
            } else if let Some(p) = h.strip_suffix('*') {
                StringMatcher::prefix(p, true)
            } else {
                StringMatcher::of(super::rbac::Pattern::Exact(h.clone()), true)
            }
        })
        .collect()
}

fn list(ms: &[StringMatcher]) -> Value {
    json!({"patterns": ms.iter().map(StringMatcher::json).collect::<Vec<_>>()})
}

impl ExtAuthzFilter {
    /// The filter as istiod writes it (protojson: unset and zero fields left out).
    pub fn json(&self) -> Value {
        let mut service = json!({"server_uri": {
            "uri": self.uri, "cluster": self.cluster, "timeout": self.timeout}});
        if !self.path_prefix.is_empty() {
            service["path_prefix"] = json!(self.path_prefix);
        }
        if !self.headers_to_add.is_empty() {
            service["authorization_request"] = json!({"headers_to_add": self.headers_to_add
                .iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()});
        }
        if let Some([up, deny, allow]) = &self.response {
            let mut r = serde_json::Map::new();
            for (k, v) in [
                ("allowed_upstream_headers", up),
                ("allowed_client_headers", deny),
                ("allowed_client_headers_on_success", allow),
            ] {
                if !v.is_empty() {
                    r.insert(k.into(), list(v));
                }
            }
            service["authorization_response"] = Value::Object(r);
        }
        let mut tc = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "http_service": service,
            "transport_api_version": "V3",
            "filter_enabled_metadata": {
                "filter": "envoy.filters.http.rbac",
                "path": [{"key": format!("{SHADOW_STAT_PREFIX}shadow_effective_policy_id")}],
                "value": {"string_match": {"prefix": format!("{MATCH_PREFIX}-{}", self.provider)}}
            }
        });
        if self.failure_mode_allow {
            tc["failure_mode_allow"] = json!(true);
        }
        if let Some(code) = self.status_on_error {
            tc["status_on_error"] = match status_name(code) {
                Some("Empty") | None => json!({}),
                Some(n) => json!({ "code": n }),
            };
        }
        if let Some((max, partial, bytes)) = self.with_request_body {
            let mut b = serde_json::Map::new();
            if max != 0 {
                b.insert("max_request_bytes".into(), json!(max));
            }
            if partial {
                b.insert("allow_partial_message".into(), json!(true));
            }
            if bytes {
                b.insert("pack_as_bytes".into(), json!(true));
            }
            tc["with_request_body"] = Value::Object(b);
        }
        if !self.allowed_headers.is_empty() {
            tc["allowed_headers"] = list(&self.allowed_headers);
        }
        json!({"name": FILTER, "typed_config": tc})
    }

    /// The value of client request header `name` in the check request Envoy sends:
    /// only headers `allowed_headers` matches are copied (Envoy's HTTP ext_authz client
    /// adds none but its own `:authority`, `:method`, `:path`, `content-length`,
    /// `authorization`); `headers_to_add` are set on it.
    fn check_header(&self, r: &Request, name: &str) -> Option<String> {
        if let Some((_, v)) = self
            .headers_to_add
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return Some(v.clone());
        }
        if !self.allowed_headers.iter().any(|m| m.matches(name)) {
            return None;
        }
        r.headers.get(name).and_then(|vs| vs.first()).cloned()
    }

    /// What the authorizer answers the check of `r`, as far as it is known: Ok(true)
    /// allowed, Ok(false) denied (403), Err: not predicted.
    fn answer(&self, r: &Request) -> Result<bool, String> {
        match &self.authorizer {
            // main.go ServeHTTP: allowedValue == request.Header.Get(checkHeader).
            Authorizer::SampleStub => {
                Ok(self.check_header(r, CHECK_HEADER).as_deref() == Some(ALLOWED_VALUE))
            }
            Authorizer::Unknown(why) => Err(why.clone()),
        }
    }
}

/// The filters of one CUSTOM provider, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomFilter {
    /// The shadow-rules RBAC filter (CUSTOM policies), or for a provider istiod cannot
    /// use, the DENY filter that takes its place.
    pub rbac: RbacFilter,
    /// None: the provider is unusable (`rbac` denies what its policies match).
    pub ext_authz: Option<ExtAuthzFilter>,
}

impl CustomFilter {
    pub fn json(&self) -> Vec<Value> {
        std::iter::once(self.rbac.json())
            .chain(self.ext_authz.iter().map(ExtAuthzFilter::json))
            .collect()
    }

    /// What this pair does with `r`: Some(verdict) when it decides (a denial, or the
    /// authorizer's answer), None when no CUSTOM policy matches. Envoy's RBAC filter
    /// enforces `rules` (a dry-run CUSTOM policy: builder.go puts them there with
    /// action DENY), records the first matching `shadow_rules` policy in the dynamic
    /// metadata, and ext_authz runs when that name starts with its provider's prefix.
    pub fn decide(&self, r: &Request) -> Option<(Verdict, Option<u16>)> {
        if let Some(p) = self.rbac.rules.as_ref().and_then(|rules| rules.matching(r)) {
            return Some((
                Verdict {
                    denied_by: Some(DeniedBy::Rbac),
                    why: format!("RBAC: access denied by CUSTOM policy {p}: 403"),
                    policy: Some(p.to_string()),
                },
                Some(403),
            ));
        }
        let ext = self.ext_authz.as_ref()?;
        let hit = self.rbac.shadow_rules.as_ref()?.matching(r)?.to_string();
        if !hit.starts_with(&format!("{MATCH_PREFIX}-{}", ext.provider)) {
            return None;
        }
        Some(match ext.answer(r) {
            Ok(true) => (
                Verdict {
                    denied_by: None,
                    why: format!("ext_authz {} (CUSTOM policy {hit}): the authorizer allowed (`{CHECK_HEADER}: {ALLOWED_VALUE}` in the check request)", ext.cluster),
                    policy: Some(hit),
                },
                None,
            ),
            Ok(false) => (
                Verdict {
                    denied_by: Some(DeniedBy::ExtAuthz),
                    why: format!("ext_authz {} (CUSTOM policy {hit}): the authorizer denied (no `{CHECK_HEADER}: {ALLOWED_VALUE}` in the check request): 403", ext.cluster),
                    policy: Some(hit),
                },
                Some(403),
            ),
            Err(why) => (
                Verdict {
                    denied_by: None,
                    why: format!("ext_authz {} (CUSTOM policy {hit}) asks an authorizer whose answer meshcheck does not predict ({why}): taken as allowed", ext.cluster),
                    policy: Some(hit),
                },
                None,
            ),
        })
    }

    /// The response headers of the authorizer the upstream request gets on an allow
    /// (authorization_response.allowed_upstream_headers over what the sample server
    /// sets; its `x-ext-authz-check-received` echo is not predicted).
    pub fn upstream_headers(&self) -> Vec<(String, String)> {
        let Some(ext) = &self.ext_authz else {
            return Vec::new();
        };
        if ext.authorizer != Authorizer::SampleStub {
            return Vec::new();
        }
        match &ext.response {
            Some([up, _, _]) if up.iter().any(|m| m.matches(RESULT_HEADER)) => {
                vec![(RESULT_HEADER.to_string(), "allowed".to_string())]
            }
            _ => Vec::new(),
        }
    }
}

/// builder.go policyName with the CUSTOM prefix.
fn custom_policy_name(provider: &str, namespace: &str, name: &str, rule: usize) -> String {
    let prefix = if provider.is_empty() {
        format!("{MATCH_PREFIX}-")
    } else {
        format!("{MATCH_PREFIX}-{provider}-")
    };
    format!("{prefix}{}", super::policy_name(namespace, name, rule))
}

/// builder.go build (IsCustomBuilder) and buildHTTP for the CUSTOM policies that attach
/// to a pod (`policies` in pilot's order).
pub fn plan(
    fx: &Fixtures,
    policies: &[&Item<AuthorizationPolicy>],
    warnings: &mut Vec<Warning>,
) -> Vec<CustomFilter> {
    // Per provider: (enforced, dry-run) rules (selectProviderRuleSet).
    let mut by_provider: std::collections::BTreeMap<String, (Rules, Rules)> = Default::default();
    for p in policies {
        let provider = p
            .spec
            .spec
            .provider
            .as_ref()
            .map(|x| x.name.clone())
            .unwrap_or_default();
        let (enforce, shadow) = by_provider
            .entry(provider.clone())
            .or_insert_with(|| (Rules::new(Action::Deny), Rules::new(Action::Deny)));
        let target = if super::dry_run(&p.spec) {
            shadow
        } else {
            enforce
        };
        let rules = p.spec.spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() {
            target.policies.insert(
                custom_policy_name(&provider, &p.namespace, &p.name, 0),
                Policy::never(),
            );
        }
        for (i, rule) in rules.iter().enumerate() {
            match super::generate::policy(rule, &p.namespace, Action::Deny) {
                Ok(policy) => {
                    target.policies.insert(
                        custom_policy_name(&provider, &p.namespace, &p.name, i),
                        policy,
                    );
                }
                Err(e) => super::warn(
                    warnings,
                    p,
                    format!("rules[{i}] is skipped by istiod ({e}): it matches no request"),
                ),
            }
        }
    }
    // getBadCustomDenyRules: the enforced policies, renamed, as a DENY filter.
    let deny = |enforce: &Rules| RbacFilter {
        rules: Some(Rules {
            action: Action::Deny,
            policies: enforce
                .policies
                .iter()
                .map(|(k, v)| (format!("{k}{BAD_CUSTOM_SUFFIX}"), v.clone()))
                .collect(),
        }),
        shadow_rules: None,
        shadow_rules_stat_prefix: String::new(),
    };
    let warn_all = |warnings: &mut Vec<Warning>, provider: &str, why: &str| {
        for p in policies.iter().filter(|p| {
            p.spec
                .spec
                .provider
                .as_ref()
                .map(|x| x.name.as_str())
                .unwrap_or("")
                == provider
        }) {
            super::warn(warnings, p, format!("istiod cannot use CUSTOM provider {provider:?} ({why}): it denies every request the policy matches (`{BAD_CUSTOM_SUFFIX}`)"));
        }
    };
    // PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS is off by default.
    if by_provider.len() > 1 {
        let names: Vec<String> = by_provider.keys().cloned().collect();
        for n in &names {
            warn_all(warnings, n, &format!("several CUSTOM providers on one workload ({}) need PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS", names.join(", ")));
        }
        return by_provider
            .values()
            .map(|(enforce, _)| CustomFilter {
                rbac: deny(enforce),
                ext_authz: None,
            })
            .collect();
    }
    let mut out = Vec::new();
    for (name, (enforce, shadow)) in by_provider {
        match provider(fx, &name) {
            Err(why) => {
                warn_all(warnings, &name, &why);
                out.push(CustomFilter {
                    rbac: deny(&enforce),
                    ext_authz: None,
                });
            }
            Ok(None) => {
                for p in policies {
                    super::warn(warnings, p, format!("action CUSTOM with provider {name:?}: only envoyExtAuthzHttp providers are modelled by meshcheck; the local target and the simulation do not apply it"));
                }
            }
            Ok(Some(ext)) => {
                if let Authorizer::Unknown(why) = &ext.authorizer {
                    for p in policies {
                        super::warn(warnings, p, format!("CUSTOM provider {name:?}: the simulation does not predict its authorizer's answers ({why})"));
                    }
                }
                out.push(CustomFilter {
                    rbac: RbacFilter {
                        rules: (!shadow.policies.is_empty()).then_some(shadow),
                        shadow_rules: Some(enforce),
                        shadow_rules_stat_prefix: SHADOW_STAT_PREFIX.to_string(),
                    },
                    ext_authz: Some(ext),
                });
            }
        }
    }
    out
}

/// envoy.type.v3.StatusCode's names (extauthz.go parseStatusOnError accepts these).
pub fn status_name(code: u16) -> Option<&'static str> {
    Some(match code {
        0 => "Empty",
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "NonAuthoritativeInformation",
        204 => "NoContent",
        205 => "ResetContent",
        206 => "PartialContent",
        207 => "MultiStatus",
        208 => "AlreadyReported",
        226 => "IMUsed",
        300 => "MultipleChoices",
        301 => "MovedPermanently",
        302 => "Found",
        303 => "SeeOther",
        304 => "NotModified",
        305 => "UseProxy",
        307 => "TemporaryRedirect",
        308 => "PermanentRedirect",
        400 => "BadRequest",
        401 => "Unauthorized",
        402 => "PaymentRequired",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        407 => "ProxyAuthenticationRequired",
        408 => "RequestTimeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "LengthRequired",
        412 => "PreconditionFailed",
        413 => "PayloadTooLarge",
        414 => "URITooLong",
        415 => "UnsupportedMediaType",
        416 => "RangeNotSatisfiable",
        417 => "ExpectationFailed",
        421 => "MisdirectedRequest",
        422 => "UnprocessableEntity",
        423 => "Locked",
        424 => "FailedDependency",
        426 => "UpgradeRequired",
        428 => "PreconditionRequired",
        429 => "TooManyRequests",
        431 => "RequestHeaderFieldsTooLarge",
        500 => "InternalServerError",
        501 => "NotImplemented",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        505 => "HTTPVersionNotSupported",
        506 => "VariantAlsoNegotiates",
        507 => "InsufficientStorage",
        508 => "LoopDetected",
        510 => "NotExtended",
        511 => "NetworkAuthenticationRequired",
        _ => return None,
    })
}

/// A protobuf Duration as written (`10s`, `0.5s`, `1.25s`) in protojson's form
/// (`10s`, `0.500s`: 0, 3, 6 or 9 fraction digits); None when it does not parse.
pub fn duration(text: &str) -> Option<String> {
    let t = text.trim().strip_suffix('s')?;
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 9
    {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    Some(if nanos == 0 {
        format!("{secs}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}s")
    })
}

/// extauthz.go validateProviderName: DNS-1123 label.
fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// telemetry_logging.go LookupCluster: `<namespace>/<host>`, or a host one namespace
/// has; (hostname, cluster) or why not.
fn lookup_cluster(
    fx: &Fixtures,
    service: &str,
    port: u32,
) -> Result<(String, String, String), String> {
    if service.is_empty() {
        return Err("service must not be empty".into());
    }
    let host_of = |s: &crate::fixtures::Item<crate::fixtures::k8s::Service>| {
        format!("{}.{}.svc.cluster.local", s.name, s.namespace)
    };
    let found: Vec<_> = match service.split('/').collect::<Vec<_>>()[..] {
        [ns, host] => fx
            .services
            .iter()
            .filter(|s| s.namespace == ns && host_of(s) == host)
            .collect(),
        _ => fx
            .services
            .iter()
            .filter(|s| host_of(s) == service)
            .collect(),
    };
    match found[..] {
        [s] => {
            let h = host_of(s);
            Ok((format!("outbound|{port}||{h}"), h, s.namespace.clone()))
        }
        [] => Err(format!(
            "could not find service {service} in Istio service registry"
        )),
        _ => Err(format!("found {service} in multiple namespaces, specify the namespace explicitly in the format of <Namespace>/<Hostname>")),
    }
}

/// Who answers at `hostname` (in `namespace`): the stub as the sample authorizer when
/// every Deployment the Service selects runs it with `STUB_ROLE: ext-authz`.
fn authorizer(fx: &Fixtures, hostname: &str, namespace: &str) -> Authorizer {
    let Some(svc) = fx.services.iter().find(|s| {
        s.namespace == namespace
            && format!("{}.{}.svc.cluster.local", s.name, s.namespace) == hostname
    }) else {
        return Authorizer::Unknown(format!("no Service {hostname}"));
    };
    let sel = &svc.spec.spec.selector;
    let deps: Vec<_> = fx
        .deployments
        .iter()
        .filter(|d| {
            d.namespace == namespace
                && !sel.is_empty()
                && crate::fixtures::k8s::selects(sel, &d.spec.spec.template.metadata.labels)
        })
        .collect();
    let sample = |d: &&crate::fixtures::Item<crate::fixtures::k8s::Deployment>| {
        d.spec.spec.template.spec.containers.iter().any(|c| {
            c.env
                .iter()
                .any(|e| e.name == STUB_ROLE_VAR && e.value.as_deref() == Some(STUB_ROLE_EXT_AUTHZ))
        })
    };
    if !deps.is_empty() && deps.iter().all(sample) {
        Authorizer::SampleStub
    } else {
        Authorizer::Unknown(format!(
            "the pods of {hostname} are not meshcheck's stub with {STUB_ROLE_VAR}: {STUB_ROLE_EXT_AUTHZ}"
        ))
    }
}

/// extauthz.go processExtensionProvider + getExtAuthz for provider `name`: its filter,
/// or why istiod cannot use it (then builder.go writes the deny filter). `Ok(None)`:
/// the provider is of a kind meshcheck does not model (gRPC, ...).
pub fn provider(fx: &Fixtures, name: &str) -> Result<Option<ExtAuthzFilter>, String> {
    let providers = fx
        .mesh_config
        .as_ref()
        .map(|m| m.spec.extension_providers.as_slice())
        .unwrap_or_default();
    let same: Vec<_> = providers.iter().filter(|p| p.name == name).collect();
    let Some(p) = same.first() else {
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "available providers are [{}] but found {name:?}",
            names.join(" ")
        ));
    };
    let mut errs = Vec::new();
    if same.len() > 1 {
        errs.push(format!(
            "extension provider name must be unique, found duplicate: {name}"
        ));
    }
    if !valid_provider_name(name) {
        errs.push(format!("invalid provider name {name:?}"));
    }
    let Some(h) = &p.envoy_ext_authz_http else {
        return if errs.is_empty() {
            Ok(None)
        } else {
            Err(errs.join("; "))
        };
    };
    let built = http(fx, name, h);
    match built {
        Ok(f) if errs.is_empty() => Ok(Some(f)),
        Ok(_) => Err(errs.join("; ")),
        Err(e) => {
            errs.push(e);
            Err(errs.join("; "))
        }
    }
}

/// extauthz.go buildExtAuthzHTTP (with agent.ValidateExtensionProviderEnvoyExtAuthzHTTP)
/// and generateHTTPConfig.
fn http(fx: &Fixtures, name: &str, h: &ExtAuthzHttpProvider) -> Result<ExtAuthzFilter, String> {
    let mut errs = Vec::new();
    if !(1..=65535).contains(&h.port) {
        errs.push(format!(
            "port must be in the range [1, 65535], found: {}",
            h.port
        ));
    }
    let looked = lookup_cluster(fx, &h.service, h.port);
    if let Err(e) = &looked {
        errs.push(e.clone());
    }
    let status_on_error = if h.status_on_error.is_empty() {
        None
    } else {
        match h
            .status_on_error
            .parse::<u16>()
            .ok()
            .filter(|c| status_name(*c).is_some())
        {
            Some(c) => Some(c),
            None => {
                errs.push(format!("unsupported statusOnError {}", h.status_on_error));
                None
            }
        }
    };
    if !h.path_prefix.is_empty() && !h.path_prefix.starts_with('/') {
        errs.push(format!(
            "pathPrefix must begin with `/`, found: {:?}",
            h.path_prefix
        ));
    }
    for (field, v) in [
        (
            "IncludeRequestHeadersInCheck",
            &h.include_request_headers_in_check,
        ),
        ("IncludeHeadersInCheck", &h.include_headers_in_check),
        (
            "HeadersToDownstreamOnDeny",
            &h.headers_to_downstream_on_deny,
        ),
        (
            "HeadersToDownstreamOnAllow",
            &h.headers_to_downstream_on_allow,
        ),
        ("HeadersToUpstreamOnAllow", &h.headers_to_upstream_on_allow),
    ] {
        if v.iter().any(|x| x == "*") {
            errs.push(format!(
                "a single wildcard (\"*\") is not supported: {field}"
            ));
        }
    }
    let timeout = match &h.timeout {
        None => "600s".to_string(),
        Some(t) => match duration(t) {
            Some(d) => d,
            None => {
                errs.push(format!("timeout {t:?} is not a duration"));
                String::new()
            }
        },
    };
    let (cluster, hostname, namespace) = match looked {
        Ok(l) if errs.is_empty() => l,
        _ => return Err(errs.join("; ")),
    };
    let mut allowed = header_matchers(&h.include_request_headers_in_check);
    if allowed.is_empty() {
        allowed = header_matchers(&h.include_headers_in_check);
    }
    let response = (!h.headers_to_upstream_on_allow.is_empty()
        || !h.headers_to_downstream_on_deny.is_empty()
        || !h.headers_to_downstream_on_allow.is_empty())
    .then(|| {
        [
            header_matchers(&h.headers_to_upstream_on_allow),
            header_matchers(&h.headers_to_downstream_on_deny),
            header_matchers(&h.headers_to_downstream_on_allow),
        ]
    });
    Ok(ExtAuthzFilter {
        provider: name.to_string(),
        uri: format!("http://{hostname}"),
        authorizer: authorizer(fx, &hostname, &namespace),
        cluster,
        timeout,
        path_prefix: h.path_prefix.clone(),
        allowed_headers: allowed,
        headers_to_add: h
            .include_additional_headers_in_check
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        response,
        failure_mode_allow: h.fail_open,
        status_on_error,
        with_request_body: h.include_request_body_in_check.as_ref().map(|b| {
            (
                b.max_request_bytes,
                b.allow_partial_message,
                b.pack_as_bytes,
            )
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ext-authz test fixtures (tests/authz/ext-authz.yaml) with `from` replaced by
    /// `to`, loaded alone: the CUSTOM filters of a pod `istio: my-ingress-gateway` in
    /// istio-ingress, and the warnings.
    fn custom(from: &str, to: &str) -> (Vec<CustomFilter>, Vec<Warning>) {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/authz/ext-authz.yaml"),
        )
        .unwrap();
        assert!(from.is_empty() || text.contains(from), "{from}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), text.replacen(from, to, 1)).unwrap();
        let fx = crate::fixtures::load::load_dir(dir.path()).unwrap();
        let labels: crate::fixtures::k8s::Labels =
            [("istio".to_string(), "my-ingress-gateway".to_string())]
                .into_iter()
                .collect();
        let mut w = Vec::new();
        let plan = super::super::plan(&fx, "istio-ingress", &labels, &mut w);
        (plan.custom, w)
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            path: path.into(),
            method: "GET".into(),
            authority: "a".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            destination_port: 8080,
            destination_ip: None,
            direct_remote_ip: None,
            remote_ip: None,
            peer_principal: None,
            sni: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn the_stub_authorizer_decides_the_matching_requests_only() {
        let (c, w) = custom("", "");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.len(), 1);
        let f = &c[0];
        let name =
            "istio-ext-authz-sample-ext-authz-http-ns[istio-ingress]-policy[ext-authz]-rule[0]";
        assert!(f
            .rbac
            .shadow_rules
            .as_ref()
            .unwrap()
            .policies
            .contains_key(name));
        assert!(f.rbac.rules.is_none());
        let ext = f.ext_authz.as_ref().unwrap();
        assert_eq!(
            ext.cluster,
            "outbound|8000||ext-authz.ext-authz.svc.cluster.local"
        );
        assert_eq!(ext.authorizer, Authorizer::SampleStub);
        let (v, s) = f.decide(&request("/authz/headers", &[])).unwrap();
        assert_eq!((v.denied_by, s), (Some(DeniedBy::ExtAuthz), Some(403)));
        assert_eq!(v.policy.as_deref(), Some(name));
        let (v, s) = f
            .decide(&request("/authz/headers", &[("x-ext-authz", "allow")]))
            .unwrap();
        assert_eq!((v.denied_by, s), (None, None));
        assert_eq!(
            f.upstream_headers(),
            [(RESULT_HEADER.to_string(), "allowed".to_string())]
        );
        assert!(f
            .decide(&request("/authz/other", &[("x-ext-authz", "allow")]))
            .is_none());
    }

    #[test]
    fn an_unusable_provider_is_a_deny_filter_and_another_kind_is_not_applied() {
        let bad = "istio-ext-authz-sample-ext-authz-http-ns[istio-ingress]-policy[ext-authz]-rule[0]-deny-due-to-bad-CUSTOM-action";
        for (from, to) in [
            ("port: \"8000\"", "port: \"0\""),
            ("service: ext-authz.ext-authz", "service: nowhere.ext-authz"),
            (
                "port: \"8000\"",
                "port: \"8000\"\n        statusOnError: \"299\"",
            ),
            (
                "port: \"8000\"",
                "port: \"8000\"\n        pathPrefix: check",
            ),
            ("[\"x-ext-authz\"]", "[\"*\"]"),
        ] {
            let (c, w) = custom(from, to);
            assert_eq!(c.len(), 1, "{to}");
            assert!(c[0].ext_authz.is_none(), "{to}");
            let rules = c[0].rbac.rules.as_ref().unwrap();
            assert_eq!(rules.action, Action::Deny);
            assert!(rules.policies.contains_key(bad), "{to}: {rules:?}");
            assert!(
                w.iter().any(|w| w.message.contains("cannot use")),
                "{to}: {w:?}"
            );
            let (v, s) = c[0]
                .decide(&request("/authz/headers", &[("x-ext-authz", "allow")]))
                .unwrap();
            assert_eq!((v.denied_by, s), (Some(DeniedBy::Rbac), Some(403)));
        }
        let (c, w) = custom("envoyExtAuthzHttp:", "envoyExtAuthzGrpc:");
        assert!(c.is_empty());
        assert!(
            w.iter()
                .any(|w| w.message.contains("only envoyExtAuthzHttp")),
            "{w:?}"
        );
    }

    #[test]
    fn several_providers_on_one_pod_deny_as_istiod_does_without_the_feature_flag() {
        let second = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: other\n  namespace: istio-ingress\nspec:\n  action: CUSTOM\n  provider:\n    name: other\n  rules:\n  - to:\n    - operation:\n        paths: [\"/other\"]\n";
        let (c, w) = custom(
            "        paths: [\"/authz/headers\"]\n",
            &format!("        paths: [\"/authz/headers\"]\n{second}"),
        );
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|f| f.ext_authz.is_none()));
        assert!(w.iter().any(|w| w
            .message
            .contains("PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS")));
        let (v, _) = c[0]
            .decide(&request("/other", &[]))
            .or_else(|| c[1].decide(&request("/other", &[])))
            .unwrap();
        assert_eq!(v.denied_by, Some(DeniedBy::Rbac));
    }

    #[test]
    fn another_authorizer_s_answer_is_not_predicted() {
        let (c, w) = custom("value: ext-authz\n", "value: echo\n");
        assert!(
            w.iter().any(|w| w.message.contains("does not predict")),
            "{w:?}"
        );
        let (v, s) = c[0].decide(&request("/authz/headers", &[])).unwrap();
        assert_eq!((v.denied_by, s), (None, None));
        assert!(v.why.contains("does not predict"), "{}", v.why);
    }

    #[test]
    fn what_istio_s_validation_refuses_of_custom_is_refused() {
        for (from, to) in [
            // checkDryRunAnnotation: ALLOW/DENY only.
            (
                "  name: ext-authz\n  namespace: istio-ingress\n",
                "  name: ext-authz\n  namespace: istio-ingress\n  annotations:\n    istio.io/dry-run: \"true\"\n",
            ),
            ("    name: sample-ext-authz-http\n  rules:", "    name: \"\"\n  rules:"),
            ("  rules:\n  - to:", "  rules:\n  - when:\n    - key: request.auth.claims[iss]\n      values: [a]\n    to:"),
            ("  action: CUSTOM\n", "  action: DENY\n"),
        ] {
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/authz/ext-authz.yaml"),
            )
            .unwrap();
            assert!(text.contains(from), "{from}");
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("a.yaml"), text.replacen(from, to, 1)).unwrap();
            let fx = crate::fixtures::load::load_dir(dir.path()).unwrap();
            assert!(fx.authorization_policies.is_empty(), "{to}");
            assert_eq!(fx.refused.len(), 1, "{to}: {:?}", fx.refused);
        }
    }

    #[test]
    fn durations_are_written_as_protojson_writes_them() {
        assert_eq!(duration("10s").as_deref(), Some("10s"));
        assert_eq!(duration("0.5s").as_deref(), Some("0.500s"));
        assert_eq!(duration("1.000001s").as_deref(), Some("1.000001s"));
        assert_eq!(duration("10"), None);
        assert_eq!(duration("1m"), None);
        assert_eq!(duration("s"), None);
    }

    #[test]
    fn header_lists_are_exact_prefix_or_suffix_ignoring_case() {
        let m = header_matchers(&["x-a".into(), "x-b*".into(), "*-c".into()]);
        assert!(m[0].matches("X-A"));
        assert!(m[1].matches("x-b-1") && !m[1].matches("x-a"));
        assert!(m[2].matches("a-C"));
        assert!(!valid_provider_name("Sample") && valid_provider_name("sample-ext-authz-http"));
        assert_eq!(status_name(403), Some("Forbidden"));
        assert_eq!(status_name(299), None);
    }
}
