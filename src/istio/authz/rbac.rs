//! Envoy's RBAC configuration (envoy.config.rbac.v3, envoy.type.matcher.v3) as the
//! model holds it: written out as Envoy JSON for the local target and the oracle
//! comparison, and evaluated for the simulation as Envoy's RBAC filter evaluates it
//! (source/extensions/filters/common/rbac/matchers.cc, engine_impl.cc).

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// envoy.type.matcher.v3.StringMatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct StringMatcher {
    pub pattern: Pattern,
    pub ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `safe_regex` (RE2; a full match).
    Regex(String),
}

impl StringMatcher {
    pub fn exact(v: &str) -> Self {
        Self::of(Pattern::Exact(v.to_string()), false)
    }
    pub fn prefix(v: &str, ignore_case: bool) -> Self {
        Self::of(Pattern::Prefix(v.to_string()), ignore_case)
    }
    pub fn suffix(v: &str, ignore_case: bool) -> Self {
        Self::of(Pattern::Suffix(v.to_string()), ignore_case)
    }
    pub fn regex(v: &str) -> Self {
        Self::of(Pattern::Regex(v.to_string()), false)
    }
    pub fn of(pattern: Pattern, ignore_case: bool) -> Self {
        StringMatcher {
            pattern,
            ignore_case,
        }
    }

    pub fn json(&self) -> Value {
        let mut m = Map::new();
        match &self.pattern {
            Pattern::Exact(v) => m.insert("exact".into(), json!(v)),
            Pattern::Prefix(v) => m.insert("prefix".into(), json!(v)),
            Pattern::Suffix(v) => m.insert("suffix".into(), json!(v)),
            Pattern::Regex(v) => m.insert("safe_regex".into(), json!({ "regex": v })),
        };
        if self.ignore_case {
            m.insert("ignore_case".into(), json!(true));
        }
        Value::Object(m)
    }

    /// Envoy's StringMatcherImpl::match (ignore_case does not apply to safe_regex).
    pub fn matches(&self, v: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        match &self.pattern {
            Pattern::Exact(p) => fold(v) == fold(p),
            Pattern::Prefix(p) => fold(v).starts_with(&fold(p)),
            Pattern::Suffix(p) => fold(v).ends_with(&fold(p)),
            Pattern::Regex(r) => regex::Regex::new(&format!("^(?:{r})$"))
                .map(|re| re.is_match(v))
                .unwrap_or(false),
        }
    }
}

/// envoy.config.route.v3.HeaderMatcher, as pilot's authz matcher writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatcher {
    pub name: String,
    /// None: `present_match`.
    pub string: Option<StringMatcher>,
}

impl HeaderMatcher {
    fn json(&self) -> Value {
        match &self.string {
            None => json!({"name": self.name, "present_match": true}),
            Some(s) => json!({"name": self.name, "string_match": s.json()}),
        }
    }

    /// Envoy joins repeated header values with `,` before matching
    /// (HeaderUtility::getAllOfHeaderAsString); an absent header matches nothing.
    fn matches(&self, r: &Request) -> bool {
        let Some(v) = r.header(&self.name) else {
            return false;
        };
        self.string.as_ref().is_none_or(|s| s.matches(&v))
    }
}

/// envoy.config.core.v3.CidrRange.
#[derive(Debug, Clone, PartialEq)]
pub struct Cidr {
    /// As written (`10.0.0.1/8` keeps `10.0.0.1`: Go's netip.Prefix.Addr).
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// pilot/pkg/networking/util/util.go AddrStrToCidrRange: a CIDR as written, or an
    /// address as /32 (/128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr {
            address: addr,
            prefix_len: len,
        })
    }

    fn json(&self) -> Value {
        json!({"address_prefix": self.address.to_string(), "prefix_len": self.prefix_len})
    }

    /// Envoy's Network::Address::CidrRange::isInRange.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// envoy.type.matcher.v3.ValueMatcher, the parts pilot writes.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatcher {
    String(StringMatcher),
    Or(Vec<ValueMatcher>),
    /// `list_match.one_of`: some element of a list matches.
    ListOneOf(Box<ValueMatcher>),
}

impl ValueMatcher {
    fn json(&self) -> Value {
        match self {
            ValueMatcher::String(s) => json!({"string_match": s.json()}),
            ValueMatcher::Or(v) => {
                json!({"or_match": {"value_matchers": v.iter().map(Self::json).collect::<Vec<_>>()}})
            }
            ValueMatcher::ListOneOf(v) => json!({"list_match": {"one_of": v.json()}}),
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match self {
            ValueMatcher::String(s) => v.as_str().is_some_and(|t| s.matches(t)),
            ValueMatcher::Or(ms) => ms.iter().any(|m| m.matches(v)),
            ValueMatcher::ListOneOf(m) => v
                .as_array()
                .is_some_and(|items| items.iter().any(|i| m.matches(i))),
        }
    }
}

/// envoy.type.matcher.v3.MetadataMatcher on dynamic metadata (the JWT filter's
/// payload).
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataMatcher {
    pub filter: String,
    pub path: Vec<String>,
    pub value: ValueMatcher,
}

impl MetadataMatcher {
    fn json(&self) -> Value {
        json!({"filter": self.filter,
               "path": self.path.iter().map(|k| json!({"key": k})).collect::<Vec<_>>(),
               "value": self.value.json()})
    }

    fn matches(&self, r: &Request) -> bool {
        let Some(mut v) = r.metadata.get(&self.filter) else {
            return false;
        };
        for k in &self.path {
            match v.get(k) {
                Some(next) => v = next,
                None => return false,
            }
        }
        self.value.matches(v)
    }
}

/// envoy.config.rbac.v3.Permission, the rules pilot writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
    /// `uri_template` with this path template (`/a/*/b/**`).
    UriTemplate(String),
    DestinationPort(u32),
    DestinationIp(Cidr),
    RequestedServerName(StringMatcher),
    Metadata(MetadataMatcher),
}

/// envoy.config.rbac.v3.Principal, the identifiers pilot writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// `authenticated.principal_name`: the peer certificate's URI SAN.
    Authenticated(StringMatcher),
    DirectRemoteIp(Cidr),
    RemoteIp(Cidr),
    Header(HeaderMatcher),
    Metadata(MetadataMatcher),
}

/// What the RBAC filter sees of one request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `:path` after the connection manager's normalization, query included (Envoy's
    /// url_path matcher drops the query).
    pub path: String,
    pub method: String,
    /// `:authority` as sent.
    pub authority: String,
    /// Lower-case names, every value in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The listener port the request arrived on.
    pub destination_port: u16,
    pub destination_ip: Option<IpAddr>,
    /// The connection's peer address.
    pub direct_remote_ip: Option<IpAddr>,
    /// The client address the connection manager settled on (use_remote_address,
    /// x-forwarded-for and xff_num_trusted_hops).
    pub remote_ip: Option<IpAddr>,
    /// The peer certificate's URI SAN (None: no client certificate).
    pub peer_principal: Option<String>,
    /// The TLS SNI (None: plaintext).
    pub sni: Option<String>,
    /// Dynamic metadata by filter name (the JWT filter's `payload`).
    pub metadata: BTreeMap<String, Value>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        match name {
            ":path" => Some(self.path.clone()),
            ":method" => Some(self.method.clone()),
            ":authority" => Some(self.authority.clone()),
            _ => self
                .headers
                .get(&name.to_ascii_lowercase())
                .map(|vs| vs.join(",")),
        }
    }

    /// The path without the query string or fragment (Envoy PathMatcher).
    fn path_only(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }
}

impl Permission {
    pub fn json(&self) -> Value {
        match self {
            Permission::Any => json!({"any": true}),
            Permission::And(v) => {
                json!({"and_rules": {"rules": v.iter().map(Self::json).collect::<Vec<_>>()}})
            }
            Permission::Or(v) => {
                json!({"or_rules": {"rules": v.iter().map(Self::json).collect::<Vec<_>>()}})
            }
            Permission::Not(p) => json!({"not_rule": p.json()}),
            Permission::Header(h) => json!({"header": h.json()}),
            Permission::UrlPath(s) => json!({"url_path": {"path": s.json()}}),
            Permission::UriTemplate(t) => json!({"uri_template": {
                "name": "uri-template",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                    "path_template": t}}}),
            Permission::DestinationPort(p) => json!({ "destination_port": p }),
            Permission::DestinationIp(c) => json!({"destination_ip": c.json()}),
            Permission::RequestedServerName(s) => json!({"requested_server_name": s.json()}),
            Permission::Metadata(m) => json!({"metadata": m.json()}),
        }
    }

    pub fn matches(&self, r: &Request) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(v) => v.iter().all(|p| p.matches(r)),
            Permission::Or(v) => v.iter().any(|p| p.matches(r)),
            Permission::Not(p) => !p.matches(r),
            Permission::Header(h) => h.matches(r),
            Permission::UrlPath(s) => s.matches(r.path_only()),
            Permission::UriTemplate(t) => super::template::matches(t, r.path_only()),
            Permission::DestinationPort(p) => u32::from(r.destination_port) == *p,
            Permission::DestinationIp(c) => r.destination_ip.is_some_and(|ip| c.contains(ip)),
            Permission::RequestedServerName(s) => s.matches(r.sni.as_deref().unwrap_or("")),
            Permission::Metadata(m) => m.matches(r),
        }
    }
}

impl Principal {
    pub fn json(&self) -> Value {
        match self {
            Principal::Any => json!({"any": true}),
            Principal::And(v) => {
                json!({"and_ids": {"ids": v.iter().map(Self::json).collect::<Vec<_>>()}})
            }
            Principal::Or(v) => {
                json!({"or_ids": {"ids": v.iter().map(Self::json).collect::<Vec<_>>()}})
            }
            Principal::Not(p) => json!({"not_id": p.json()}),
            Principal::Authenticated(s) => json!({"authenticated": {"principal_name": s.json()}}),
            Principal::DirectRemoteIp(c) => json!({"direct_remote_ip": c.json()}),
            Principal::RemoteIp(c) => json!({"remote_ip": c.json()}),
            Principal::Header(h) => json!({"header": h.json()}),
            Principal::Metadata(m) => json!({"metadata": m.json()}),
        }
    }

    pub fn matches(&self, r: &Request) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(v) => v.iter().all(|p| p.matches(r)),
            Principal::Or(v) => v.iter().any(|p| p.matches(r)),
            Principal::Not(p) => !p.matches(r),
            // AuthenticatedMatcher: without a peer certificate nothing matches.
            Principal::Authenticated(s) => {
                r.peer_principal.as_deref().is_some_and(|p| s.matches(p))
            }
            Principal::DirectRemoteIp(c) => r.direct_remote_ip.is_some_and(|ip| c.contains(ip)),
            Principal::RemoteIp(c) => r.remote_ip.is_some_and(|ip| c.contains(ip)),
            Principal::Header(h) => h.matches(r),
            Principal::Metadata(m) => m.matches(r),
        }
    }
}

/// envoy.config.rbac.v3.Policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub permissions: Vec<Permission>,
    pub principals: Vec<Principal>,
}

impl Policy {
    /// A policy that matches nothing (builder.go rbacPolicyMatchNever: a policy
    /// without rules).
    pub fn never() -> Policy {
        Policy {
            permissions: vec![Permission::Not(Box::new(Permission::Any))],
            principals: vec![Principal::Not(Box::new(Principal::Any))],
        }
    }

    fn json(&self) -> Value {
        json!({"permissions": self.permissions.iter().map(Permission::json).collect::<Vec<_>>(),
               "principals": self.principals.iter().map(Principal::json).collect::<Vec<_>>()})
    }

    /// Envoy PolicyMatcher: some permission and some principal.
    pub fn matches(&self, r: &Request) -> bool {
        self.permissions.iter().any(|p| p.matches(r))
            && self.principals.iter().any(|p| p.matches(r))
    }
}

/// envoy.config.rbac.v3.RBAC.Action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Log,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Log => "LOG",
        }
    }
}

/// envoy.config.rbac.v3.RBAC: an action and its policies by name (Envoy keeps them
/// in a sorted map and reports the first that matches).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub action: Action,
    pub policies: BTreeMap<String, Policy>,
}

impl Rules {
    pub fn new(action: Action) -> Rules {
        Rules {
            action,
            policies: BTreeMap::new(),
        }
    }

    fn json(&self) -> Value {
        // protojson leaves an empty map out (CUSTOM's shadow rules with only dry-run
        // policies).
        let mut v = json!({});
        if !self.policies.is_empty() {
            v["policies"] = Value::Object(
                self.policies
                    .iter()
                    .map(|(k, p)| (k.clone(), p.json()))
                    .collect::<Map<String, Value>>(),
            );
        }
        // ALLOW is the enum's zero: protojson leaves it out, as in istiod's config.
        if self.action != Action::Allow {
            v["action"] = json!(self.action.name());
        }
        v
    }

    /// The first policy (by name) that matches.
    pub fn matching(&self, r: &Request) -> Option<&str> {
        self.policies
            .iter()
            .find(|(_, p)| p.matches(r))
            .map(|(n, _)| n.as_str())
    }
}

/// One envoy.filters.http.rbac filter (envoy.extensions.filters.http.rbac.v3.RBAC).
#[derive(Debug, Clone, PartialEq)]
pub struct RbacFilter {
    /// Enforced; None: the filter enforces nothing.
    pub rules: Option<Rules>,
    /// Dry-run policies: counted in statistics, no effect on traffic.
    pub shadow_rules: Option<Rules>,
    /// builder.go shadowRuleStatPrefix: `istio_dry_run_allow_` unless the shadow
    /// rules are DENY (also when there are none: Go's nil GetAction is ALLOW).
    pub shadow_rules_stat_prefix: String,
}

impl RbacFilter {
    /// The filter as Envoy JSON (name and typed_config).
    pub fn json(&self) -> Value {
        let mut tc =
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"});
        // protojson leaves an empty string out (AUDIT's, CUSTOM's deny filter).
        if !self.shadow_rules_stat_prefix.is_empty() {
            tc["shadow_rules_stat_prefix"] = json!(self.shadow_rules_stat_prefix);
        }
        if let Some(r) = &self.rules {
            tc["rules"] = r.json();
        }
        if let Some(r) = &self.shadow_rules {
            tc["shadow_rules"] = r.json();
        }
        json!({"name": "envoy.filters.http.rbac", "typed_config": tc})
    }
}
