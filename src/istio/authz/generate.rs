//! One AuthorizationPolicy rule into an Envoy RBAC policy, as pilot builds it for an
//! HTTP filter chain (pilot/pkg/security/authz/model/model.go New and Generate,
//! generator.go, permission.go, principal.go, util.go; matcher/string.go, header.go,
//! template.go, metadata.go).

use super::rbac::{
    Action, Cidr, HeaderMatcher, MetadataMatcher, Pattern, Permission, Policy, Principal,
    StringMatcher, ValueMatcher,
};
use crate::fixtures::security::Rule;
use crate::istio::mesh::quote_meta;

/// Why a value or a rule cannot be generated (pilot: "skipped invalid rule").
pub type GenError = String;

/// The generator of one attribute (generator.go's generator and extendedGenerator).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gen {
    DestIp,
    DestPort,
    ConnSni,
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcServiceAccount,
    SrcTrustDomain,
    SrcPrincipal,
    RequestHeader,
    Host,
    Path,
    Method,
    // Extended: all values into one matcher.
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestClaims,
}

impl Gen {
    fn extended(self) -> bool {
        matches!(
            self,
            Gen::RequestPrincipal
                | Gen::RequestAudiences
                | Gen::RequestPresenter
                | Gen::RequestClaims
        )
    }
}

/// model.go's `rule`: one attribute with its values and not-values.
#[derive(Debug, Clone)]
struct AttrRule {
    key: String,
    values: Vec<String>,
    not_values: Vec<String>,
    g: Gen,
}

/// model.go's `ruleList`.
#[derive(Debug, Clone, Default)]
struct RuleList(Vec<AttrRule>);

impl RuleList {
    fn rule(g: Gen, key: &str, values: &[String], not_values: &[String]) -> Option<AttrRule> {
        (!values.is_empty() || !not_values.is_empty()).then(|| AttrRule {
            key: key.to_string(),
            values: values.to_vec(),
            not_values: not_values.to_vec(),
            g,
        })
    }
    fn insert_front(&mut self, g: Gen, key: &str, values: &[String], not_values: &[String]) {
        if let Some(r) = Self::rule(g, key, values, not_values) {
            self.0.insert(0, r);
        }
    }
    fn append_last(&mut self, g: Gen, key: &str, values: &[String], not_values: &[String]) {
        if let Some(r) = Self::rule(g, key, values, not_values) {
            self.0.push(r);
        }
    }
}

/// The attribute a `when` key names, and whether it is a principal (else a
/// permission) attribute (model.go New); None: unknown to pilot.
fn when_generator(key: &str) -> Option<(Gen, bool)> {
    Some(match key {
        "destination.ip" => (Gen::DestIp, false),
        "destination.port" => (Gen::DestPort, false),
        "connection.sni" => (Gen::ConnSni, false),
        "source.ip" => (Gen::SrcIp, true),
        "remote.ip" => (Gen::RemoteIp, true),
        "source.namespace" => (Gen::SrcNamespace, true),
        "source.trustDomain" => (Gen::SrcTrustDomain, true),
        "source.serviceAccount" => (Gen::SrcServiceAccount, true),
        "source.principal" => (Gen::SrcPrincipal, true),
        "request.auth.principal" => (Gen::RequestPrincipal, true),
        "request.auth.audiences" => (Gen::RequestAudiences, true),
        "request.auth.presenter" => (Gen::RequestPresenter, true),
        k if k.starts_with("request.headers") => (Gen::RequestHeader, true),
        k if k.starts_with("request.auth.claims") => (Gen::RequestClaims, true),
        _ => return None,
    })
}

/// model.go New + Generate for an HTTP filter chain: the Envoy policy of `rule` of
/// policy `policy_ns`, or why pilot skips it.
pub fn policy(rule: &Rule, policy_ns: &str, action: Action) -> Result<Policy, GenError> {
    let mut base_perm = RuleList::default();
    let mut base_princ = RuleList::default();
    for w in &rule.when {
        if w.key.starts_with("experimental.envoy.filters.") {
            return Err(format!("when key {} is not modelled by meshcheck", w.key));
        }
        let Some((g, principal)) = when_generator(&w.key) else {
            return Err(format!("unknown attribute {}", w.key));
        };
        let list = if principal {
            &mut base_princ
        } else {
            &mut base_perm
        };
        list.append_last(g, &w.key, &w.values, &w.not_values);
    }
    let mut principals_lists = Vec::new();
    for f in &rule.from {
        let mut merged = base_princ.clone();
        if let Some(s) = &f.source {
            merged.insert_front(Gen::SrcIp, "source.ip", &s.ip_blocks, &s.not_ip_blocks);
            merged.insert_front(
                Gen::RemoteIp,
                "remote.ip",
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            );
            merged.insert_front(
                Gen::SrcNamespace,
                "source.namespace",
                &s.namespaces,
                &s.not_namespaces,
            );
            merged.insert_front(
                Gen::SrcTrustDomain,
                "source.trustDomain",
                &s.trust_domains,
                &s.not_trust_domains,
            );
            merged.insert_front(
                Gen::SrcServiceAccount,
                "source.serviceAccount",
                &s.service_accounts,
                &s.not_service_accounts,
            );
            merged.insert_front(
                Gen::RequestPrincipal,
                "request.auth.principal",
                &s.request_principals,
                &s.not_request_principals,
            );
            merged.insert_front(
                Gen::SrcPrincipal,
                "source.principal",
                &s.principals,
                &s.not_principals,
            );
        }
        principals_lists.push(merged);
    }
    if rule.from.is_empty() {
        principals_lists.push(base_princ);
    }
    let mut permission_lists = Vec::new();
    for t in &rule.to {
        let mut merged = base_perm.clone();
        if let Some(o) = &t.operation {
            merged.insert_front(Gen::DestPort, "destination.port", &o.ports, &o.not_ports);
            merged.insert_front(Gen::Path, "path-matcher", &o.paths, &o.not_paths);
            merged.insert_front(Gen::Method, ":method", &o.methods, &o.not_methods);
            merged.insert_front(Gen::Host, ":authority", &o.hosts, &o.not_hosts);
        }
        permission_lists.push(merged);
    }
    if rule.to.is_empty() {
        permission_lists.push(base_perm);
    }
    let ctx = Ctx { policy_ns, action };
    let permissions = permission_lists
        .iter()
        .map(|rl| ctx.permission_list(rl))
        .collect::<Result<Vec<_>, _>>()?;
    let principals = principals_lists
        .iter()
        .map(|rl| ctx.principal_list(rl))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        permissions,
        principals,
    })
}

struct Ctx<'a> {
    policy_ns: &'a str,
    action: Action,
}

impl Ctx<'_> {
    /// model.go checkError: an ALLOW rule with an invalid value is skipped whole (a
    /// narrower allow); a DENY or AUDIT rule just loses the value (a wider deny).
    fn keep<T>(&self, r: Result<T, GenError>) -> Result<Option<T>, GenError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.action == Action::Allow => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// generatePermission: the rules ANDed, or `any`.
    fn permission_list(&self, rl: &RuleList) -> Result<Permission, GenError> {
        let mut and = Vec::new();
        for r in &rl.0 {
            and.extend(self.rule_permissions(r)?);
        }
        if and.is_empty() {
            and.push(Permission::Any);
        }
        Ok(Permission::And(and))
    }

    fn principal_list(&self, rl: &RuleList) -> Result<Principal, GenError> {
        let mut and = Vec::new();
        for r in &rl.0 {
            and.extend(self.rule_principals(r)?);
        }
        if and.is_empty() {
            and.push(Principal::Any);
        }
        Ok(Principal::And(and))
    }

    /// rule.permission: values ORed, not-values ORed under a NOT.
    fn rule_permissions(&self, r: &AttrRule) -> Result<Vec<Permission>, GenError> {
        let mut out = Vec::new();
        for (values, negate) in [(&r.values, false), (&r.not_values, true)] {
            let mut or = Vec::new();
            for v in values {
                if let Some(p) = self.keep(permission(r.g, &r.key, v))? {
                    or.push(p);
                }
            }
            if !or.is_empty() {
                let p = Permission::Or(or);
                out.push(if negate {
                    Permission::Not(Box::new(p))
                } else {
                    p
                });
            }
        }
        Ok(out)
    }

    fn rule_principals(&self, r: &AttrRule) -> Result<Vec<Principal>, GenError> {
        let mut out = Vec::new();
        for (values, negate) in [(&r.values, false), (&r.not_values, true)] {
            if values.is_empty() {
                continue;
            }
            let p = if r.g.extended() {
                self.keep(extended_principal(r.g, &r.key, values))?
            } else {
                let mut or = Vec::new();
                for v in values.iter() {
                    if let Some(p) = self.keep(principal(r.g, &r.key, v, self.policy_ns))? {
                        or.push(p);
                    }
                }
                (!or.is_empty()).then_some(Principal::Or(or))
            };
            if let Some(p) = p {
                out.push(if negate {
                    Principal::Not(Box::new(p))
                } else {
                    p
                });
            }
        }
        Ok(out)
    }
}

fn cidr(v: &str) -> Result<Cidr, GenError> {
    Cidr::parse(v).ok_or_else(|| format!("invalid IP address or CIDR {v}"))
}

/// generator.go's permission() of the non-extended generators.
fn permission(g: Gen, key: &str, v: &str) -> Result<Permission, GenError> {
    Ok(match g {
        Gen::DestIp => Permission::DestinationIp(cidr(v)?),
        Gen::DestPort => Permission::DestinationPort(port(v)?),
        Gen::ConnSni => Permission::RequestedServerName(string_matcher(v, "")),
        Gen::Host => Permission::Header(host_matcher(":authority", v)),
        Gen::Method => Permission::Header(header_matcher(":method", v)),
        Gen::Path if v.contains("{*}") || v.contains("{**}") => {
            Permission::UriTemplate(v.replace("{**}", "**").replace("{*}", "*"))
        }
        Gen::Path => Permission::UrlPath(string_matcher(v, "")),
        _ => return Err(format!("{key}: unimplemented")),
    })
}

/// generator.go's principal() of the non-extended generators.
fn principal(g: Gen, key: &str, v: &str, policy_ns: &str) -> Result<Principal, GenError> {
    Ok(match g {
        Gen::SrcIp => Principal::DirectRemoteIp(cidr(v)?),
        Gen::RemoteIp => Principal::RemoteIp(cidr(v)?),
        Gen::SrcNamespace => {
            let ns = v.split('*').map(quote_meta).collect::<Vec<_>>().join(".*");
            Principal::Authenticated(StringMatcher::regex(&format!(".*/ns/{ns}/.*")))
        }
        Gen::SrcServiceAccount => {
            let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
            Principal::Authenticated(StringMatcher::regex(&format!(
                "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                quote_meta(ns),
                quote_meta(sa)
            )))
        }
        Gen::SrcTrustDomain => Principal::Authenticated(trust_domain_matcher(v)),
        Gen::SrcPrincipal => Principal::Authenticated(string_matcher(v, "spiffe://")),
        Gen::RequestHeader => {
            let name = in_brackets(key.trim_start_matches("request.headers"))?;
            Principal::Header(header_matcher(&name, v))
        }
        _ => return Err(format!("{key}: unimplemented")),
    })
}

/// generator.go's extendedPrincipal().
fn extended_principal(g: Gen, key: &str, values: &[String]) -> Result<Principal, GenError> {
    Ok(match g {
        Gen::RequestPrincipal => {
            let mut or: Vec<Principal> = values.iter().map(|v| request_principal(v)).collect();
            if or.len() == 1 {
                or.remove(0)
            } else {
                Principal::Or(or)
            }
        }
        Gen::RequestAudiences => Principal::Metadata(jwt_claims(&["aud".into()], values)),
        Gen::RequestPresenter => Principal::Metadata(jwt_claims(&["azp".into()], values)),
        Gen::RequestClaims => {
            let claims = nested_brackets(key.trim_start_matches("request.auth.claims"))?;
            Principal::Metadata(jwt_claims(&claims, values))
        }
        _ => return Err(format!("{key}: unimplemented")),
    })
}

/// requestPrincipalGenerator: `iss/sub`, split at the last `/`, with `*` forms.
fn request_principal(value: &str) -> Principal {
    let any = || StringMatcher::regex(".+");
    let (iss, sub, found) = match value.rfind('/') {
        Some(i) => (&value[..i], &value[i + 1..], true),
        None => (value, "", false),
    };
    let (m_iss, m_sub) = if value == "*" {
        (any(), any())
    } else if let Some(rest) = value.strip_prefix('*') {
        if found {
            let m_iss = if iss == "*" {
                any()
            } else {
                StringMatcher::suffix(iss.trim_start_matches('*'), false)
            };
            (m_iss, StringMatcher::exact(sub))
        } else {
            (any(), StringMatcher::suffix(rest, false))
        }
    } else if let Some(rest) = value.strip_suffix('*') {
        if found {
            let m_sub = if sub == "*" {
                any()
            } else {
                StringMatcher::prefix(sub.trim_end_matches('*'), false)
            };
            (StringMatcher::exact(iss), m_sub)
        } else {
            (StringMatcher::prefix(rest, false), any())
        }
    } else {
        (StringMatcher::exact(iss), StringMatcher::exact(sub))
    };
    let claim = |c: &str, m: StringMatcher| {
        Principal::Metadata(MetadataMatcher {
            filter: JWT_FILTER.into(),
            path: vec!["payload".into(), c.into()],
            value: ValueMatcher::String(m),
        })
    };
    Principal::And(vec![claim("iss", m_iss), claim("sub", m_sub)])
}

/// The JWT filter's name, whose dynamic metadata holds the payload.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

/// util.go MetadataListValueMatcherForJWTClaims (extended JWT: a list containing a
/// match, or the value itself).
fn jwt_claims(claims: &[String], values: &[String]) -> MetadataMatcher {
    let value = string_or_matcher(values);
    let mut path = vec!["payload".to_string()];
    path.extend(claims.iter().cloned());
    MetadataMatcher {
        filter: JWT_FILTER.into(),
        path,
        value: ValueMatcher::Or(vec![
            ValueMatcher::ListOneOf(Box::new(value.clone())),
            value,
        ]),
    }
}

/// matcher/string.go StringOrMatcher.
fn string_or_matcher(values: &[String]) -> ValueMatcher {
    let mut ms: Vec<ValueMatcher> = values
        .iter()
        .map(|v| ValueMatcher::String(string_matcher(v, "")))
        .collect();
    if ms.len() == 1 {
        ms.remove(0)
    } else {
        ValueMatcher::Or(ms)
    }
}

/// matcher/string.go StringMatcherWithPrefix.
pub fn string_matcher(v: &str, prefix: &str) -> StringMatcher {
    if v == "*" {
        StringMatcher::regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        if prefix.is_empty() {
            StringMatcher::suffix(rest, false)
        } else {
            StringMatcher::regex(&format!("{prefix}.*{}", quote_meta(rest)))
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        StringMatcher::prefix(&format!("{prefix}{rest}"), false)
    } else {
        StringMatcher::exact(&format!("{prefix}{v}"))
    }
}

/// matcher/header.go HeaderMatcher (case-sensitive) and HostMatcher (ignore case).
fn header_with_case(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    let string = if v == "*" {
        None
    } else if let Some(rest) = v.strip_prefix('*') {
        Some(StringMatcher::of(Pattern::Suffix(rest.into()), ignore_case))
    } else if let Some(rest) = v.strip_suffix('*') {
        Some(StringMatcher::of(Pattern::Prefix(rest.into()), ignore_case))
    } else {
        Some(StringMatcher::of(Pattern::Exact(v.into()), ignore_case))
    };
    HeaderMatcher {
        name: name.to_string(),
        string,
    }
}

fn header_matcher(name: &str, v: &str) -> HeaderMatcher {
    header_with_case(name, v, false)
}

fn host_matcher(name: &str, v: &str) -> HeaderMatcher {
    header_with_case(name, v, true)
}

/// srcTrustDomainGenerator.
fn trust_domain_matcher(v: &str) -> StringMatcher {
    if v == "*" {
        StringMatcher::prefix("spiffe://", false)
    } else if !v.contains('*') {
        StringMatcher::prefix(&format!("spiffe://{v}/"), false)
    } else {
        let (a, b) = v.split_once('*').unwrap_or((v, ""));
        StringMatcher::regex(&format!(
            "spiffe://{}[^/]*{}/.*",
            quote_meta(a),
            quote_meta(b)
        ))
    }
}

/// util.go convertToPort.
fn port(v: &str) -> Result<u32, GenError> {
    v.parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535)
        .ok_or_else(|| format!("invalid port {v}"))
}

/// util.go extractNameInBrackets: `[name]`.
fn in_brackets(s: &str) -> Result<String, GenError> {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .map(str::to_string)
        .ok_or_else(|| format!("expecting format [<NAME>], but found {s}"))
}

/// util.go extractNameInNestedBrackets: `[a][b]` is `a`, `b`; otherwise one name.
fn nested_brackets(s: &str) -> Result<Vec<String>, GenError> {
    let b = s.as_bytes();
    let end_of = |begin: usize| -> Option<usize> {
        if begin >= b.len() || b[begin] != b'[' {
            return None;
        }
        for (i, c) in b.iter().enumerate().skip(begin + 1) {
            match c {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < b.len() {
        match end_of(begin) {
            Some(end) => {
                claims.push(s[begin + 1..end].to_string());
                begin = end + 1;
            }
            None => return Ok(vec![in_brackets(s)?]),
        }
    }
    Ok(claims)
}
