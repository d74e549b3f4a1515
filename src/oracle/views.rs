//! One comparable form for a route, an answer to a request and a cluster, built from
//! the model and from istiod's Envoy config alike, so a difference in any field shows
//! as two different strings.

use super::input::pod_index;
use super::output::{Destination, RouteResult, SimResult};
use crate::fixtures::istio::StringMatch;
use crate::istio::{Mesh, PathMatch, Prediction, RouteKind, RoutePlan, UpstreamTls, UriRewrite};
use serde_json::Value;
use std::fmt;

/// A route as Envoy would evaluate it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteView {
    pub virtual_service: String,
    pub path: String,
    pub case_sensitive: bool,
    /// Header and query matchers, sorted: `x-a exact:v2`, `:method exact:GET`, `?q present`.
    pub matchers: Vec<String>,
    /// `cluster 100%` or `c1 90%, c2 10%`, or `redirect`, `direct_response 503`.
    pub action: String,
    /// `prefix_rewrite /`, `regex_rewrite ^/a/?(.*) -> /\1`, or empty.
    pub rewrite: String,
    pub host_rewrite: String,
    /// Header operations, sorted: `request set k=v`, `response remove k`, and per
    /// weighted cluster `<cluster>: response add k=v`.
    pub header_ops: Vec<String>,
    /// `timeout 0ms`, `retries 2 on connect-failure,... codes [503] per try 500ms`
    /// (forwarding routes only).
    pub timeouts: String,
    /// Per-route filter settings: `fault delay 1000ms 20/100, abort 503 unset`,
    /// `cors origins=[exact:https://a] methods=GET ...`, or empty.
    pub filters: String,
    /// Request mirror policies in order: `<cluster> 50%` (`, host -shadow` when Envoy
    /// would append the suffix, `, trace sampled` when set).
    pub mirrors: Vec<String>,
    /// `hash_policy` entries in order: `header x-user`, `cookie u ttl 0ms`,
    /// `source_ip true`, `query q`.
    pub hash_policy: Vec<String>,
}

impl RouteView {
    /// The fields in which `self` and `other` differ: (field, self's, other's).
    pub fn diff(&self, other: &RouteView) -> Vec<(&'static str, String, String)> {
        let mut d = Vec::new();
        let mut cmp = |f: &'static str, a: String, b: String| {
            if a != b {
                d.push((f, a, b));
            }
        };
        cmp(
            "VirtualService",
            self.virtual_service.clone(),
            other.virtual_service.clone(),
        );
        cmp("path match", self.path.clone(), other.path.clone());
        cmp(
            "case sensitive",
            self.case_sensitive.to_string(),
            other.case_sensitive.to_string(),
        );
        cmp(
            "header/query matchers",
            self.matchers.join("; "),
            other.matchers.join("; "),
        );
        cmp("action", self.action.clone(), other.action.clone());
        cmp("rewrite", or_none(&self.rewrite), or_none(&other.rewrite));
        cmp(
            "authority rewrite",
            or_none(&self.host_rewrite),
            or_none(&other.host_rewrite),
        );
        cmp(
            "timeout and retries",
            self.timeouts.clone(),
            other.timeouts.clone(),
        );
        cmp(
            "header operations",
            self.header_ops.join("; "),
            other.header_ops.join("; "),
        );
        cmp(
            "fault and CORS",
            or_none(&self.filters),
            or_none(&other.filters),
        );
        cmp(
            "request mirrors",
            or_none(&self.mirrors.join("; ")),
            or_none(&other.mirrors.join("; ")),
        );
        cmp(
            "hash_policy",
            or_none(&self.hash_policy.join("; ")),
            or_none(&other.hash_policy.join("; ")),
        );
        d
    }
}

impl fmt::Display for RouteView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.virtual_service, self.path)?;
        if !self.case_sensitive {
            f.write_str(" (any case)")?;
        }
        for m in &self.matchers {
            write!(f, " [{m}]")?;
        }
        write!(f, " -> {}", self.action)?;
        if !self.rewrite.is_empty() {
            write!(f, ", {}", self.rewrite)?;
        }
        Ok(())
    }
}

/// `redirect 301 path=/x host=h scheme=https port=8443` (empty parts left out).
fn redirect_view(code: u16, path: &str, host: &str, scheme: &str, port: u32) -> String {
    let mut v = format!("redirect {code}");
    for (k, x) in [("path", path), ("host", host), ("scheme", scheme)] {
        if !x.is_empty() {
            v.push_str(&format!(" {k}={x}"));
        }
    }
    if port != 0 {
        v.push_str(&format!(" port={port}"));
    }
    v
}

/// `direct_response 503 body="..."`.
fn direct_view(status: u32, body: &str) -> String {
    if body.is_empty() {
        format!("direct_response {status}")
    } else {
        format!("direct_response {status} body={body:?}")
    }
}

/// `timeout 0ms, retries 2 on <retry_on> codes [..] per try 500ms` (or `no retries`).
fn timeouts_view(
    timeout_ms: u64,
    retry: Option<(u32, &str, &[u32], Option<u64>)>,
    previous_hosts: bool,
) -> String {
    let mut v = format!("timeout {timeout_ms}ms, ");
    match retry {
        None => v.push_str("no retries"),
        Some((n, on, codes, per_try)) => {
            v.push_str(&format!("retries {n} on {on}"));
            if !previous_hosts {
                v.push_str(" (no previous_hosts predicate)");
            }
            if !codes.is_empty() {
                v.push_str(&format!(" codes {codes:?}"));
            }
            if let Some(p) = per_try {
                v.push_str(&format!(" per try {p}ms"));
            }
        }
    }
    v
}

/// `request set k=v`, `request add k=v`, `request remove k` for the model's operations.
fn ops_view(prefix: &str, which: &str, ops: &crate::istio::HeaderOps) -> Vec<String> {
    let mut v: Vec<String> = ops
        .set
        .iter()
        .map(|(k, x)| format!("{prefix}{which} set {}={x}", k.to_ascii_lowercase()))
        .collect();
    v.extend(
        ops.add
            .iter()
            .map(|(k, x)| format!("{prefix}{which} add {}={x}", k.to_ascii_lowercase())),
    );
    v.extend(
        ops.remove
            .iter()
            .map(|k| format!("{prefix}{which} remove {}", k.to_ascii_lowercase())),
    );
    v
}

/// The same from Envoy's JSON (`append_action` absent is APPEND_IF_EXISTS_OR_ADD, the
/// enum's zero).
fn envoy_ops(prefix: &str, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for which in ["request", "response"] {
        for h in v
            .get(format!("{which}_headers_to_add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = h
                .pointer("/header/key")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let val = h
                .pointer("/header/value")
                .and_then(Value::as_str)
                .unwrap_or("");
            let op = match h.get("append_action").and_then(Value::as_str) {
                Some("OVERWRITE_IF_EXISTS_OR_ADD") => "set",
                Some("ADD_IF_ABSENT") => "add-if-absent",
                Some("OVERWRITE_IF_EXISTS") => "overwrite",
                _ => "add",
            };
            out.push(format!(
                "{prefix}{which} {op} {}={val}",
                key.to_ascii_lowercase()
            ));
        }
        for k in v
            .get(format!("{which}_headers_to_remove"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out.push(format!("{prefix}{which} remove {}", k.to_ascii_lowercase()));
        }
    }
    out
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s.to_string()
    }
}

fn string_match(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => format!("exact:{v}"),
        StringMatch::Prefix(v) => format!("prefix:{v}"),
        StringMatch::Regex(v) => format!("regex:{v}"),
    }
}

fn shares(weights: &[(String, f64)]) -> String {
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    weights
        .iter()
        .map(|(c, w)| {
            let share = if total > 0.0 { w * 100.0 / total } else { 0.0 };
            format!("{c} {}%", (share * 10.0).round() / 10.0)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n/d`, or `unset`.
fn fraction_view(f: Option<(u64, u64)>) -> String {
    match f {
        Some((n, d)) => format!("{n}/{d}"),
        None => "unset".into(),
    }
}

fn fault_view(
    delay: Option<(u64, Option<(u64, u64)>)>,
    abort: Option<(u64, Option<(u64, u64)>)>,
) -> String {
    let mut parts = Vec::new();
    if let Some((ms, p)) = delay {
        parts.push(format!("fault delay {ms}ms {}", fraction_view(p)));
    }
    if let Some((status, p)) = abort {
        parts.push(format!("fault abort {status} {}", fraction_view(p)));
    }
    parts.join(", ")
}

struct CorsView<'a> {
    origins: Vec<String>,
    methods: &'a str,
    headers: &'a str,
    expose: &'a str,
    max_age: Option<String>,
    credentials: Option<bool>,
    forward_unmatched: Option<bool>,
}

impl CorsView<'_> {
    fn text(&self) -> String {
        format!(
            "cors origins=[{}] methods={} headers={} expose={} max_age={} credentials={} forward_not_matching_preflights={}",
            self.origins.join(","),
            self.methods,
            self.headers,
            self.expose,
            self.max_age.as_deref().unwrap_or("unset"),
            self.credentials.map(|b| b.to_string()).unwrap_or("unset".into()),
            self.forward_unmatched.map(|b| b.to_string()).unwrap_or("unset".into()),
        )
    }
}

/// The model's fault and CORS settings of a route.
fn model_filters(f: &crate::istio::RouteFilters) -> String {
    let frac = |x: &crate::istio::Fraction| (u64::from(x.numerator), u64::from(x.denominator));
    let mut parts = Vec::new();
    if let Some(fault) = &f.fault {
        parts.push(fault_view(
            fault
                .delay
                .as_ref()
                .map(|d| (d.fixed_delay_ms, Some(frac(&d.percentage)))),
            fault
                .abort
                .as_ref()
                .map(|a| (u64::from(a.http_status), a.percentage.as_ref().map(frac))),
        ));
    }
    if let Some(c) = &f.cors {
        parts.push(
            CorsView {
                origins: c.allow_origins.iter().map(string_match).collect(),
                methods: &c.allow_methods,
                headers: &c.allow_headers,
                expose: &c.expose_headers,
                max_age: c.max_age_s.map(|s| s.to_string()),
                credentials: c.allow_credentials,
                forward_unmatched: Some(c.forward_not_matching_preflights),
            }
            .text(),
        );
    }
    parts.join("; ")
}

/// Envoy's FractionalPercent JSON: (numerator, denominator); proto3 defaults 0 and
/// HUNDRED are left out of the JSON.
fn envoy_fraction(v: Option<&Value>) -> Option<(u64, u64)> {
    let v = v?;
    let n = v.get("numerator").and_then(Value::as_u64).unwrap_or(0);
    let d = match v.get("denominator").and_then(Value::as_str) {
        Some("MILLION") => 1_000_000,
        Some("TEN_THOUSAND") => 10_000,
        _ => 100,
    };
    Some((n, d))
}

/// istiod's fault and CORS settings of a route (`typed_per_filter_config`).
fn envoy_filters(cfg: Option<&Value>) -> String {
    let Some(cfg) = cfg else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(f) = cfg.get("envoy.filters.http.fault") {
        let delay = f.get("delay").map(|d| {
            (
                d.get("fixed_delay")
                    .and_then(Value::as_str)
                    .and_then(crate::istio::duration_ms)
                    .unwrap_or(0),
                envoy_fraction(d.get("percentage")),
            )
        });
        let abort = f.get("abort").map(|a| {
            (
                a.get("http_status").and_then(Value::as_u64).unwrap_or(0),
                envoy_fraction(a.get("percentage")),
            )
        });
        parts.push(fault_view(delay, abort));
    }
    if let Some(c) = cfg.get("envoy.filters.http.cors") {
        let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
        let origins = c
            .get("allow_origin_string_match")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| {
                let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
                if let Some(v) = field("exact") {
                    format!("exact:{v}")
                } else if let Some(v) = field("prefix") {
                    format!("prefix:{v}")
                } else if let Some(v) = m.pointer("/safe_regex/regex").and_then(Value::as_str) {
                    format!("regex:{v}")
                } else {
                    format!("(unrecognised: {m})")
                }
            })
            .collect();
        parts.push(
            CorsView {
                origins,
                methods: text("allow_methods"),
                headers: text("allow_headers"),
                expose: text("expose_headers"),
                max_age: c.get("max_age").and_then(Value::as_str).map(str::to_string),
                credentials: c.get("allow_credentials").and_then(Value::as_bool),
                forward_unmatched: c
                    .get("forward_not_matching_preflights")
                    .and_then(Value::as_bool),
            }
            .text(),
        );
    }
    parts.join("; ")
}

/// `<cluster> <percent>%` plus what differs from pilot's fixed settings.
fn mirror_view(cluster: &str, percent: f64, shadow_suffix: bool, trace_sampled: bool) -> String {
    let mut v = format!("{cluster} {percent}%");
    if shadow_suffix {
        v.push_str(", host -shadow");
    }
    if trace_sampled {
        v.push_str(", trace sampled");
    }
    v
}

/// Envoy's request_mirror_policies of a route (JSON) as [`mirror_view`]s.
fn envoy_mirrors(route: &Value) -> Vec<String> {
    let policies = route
        .pointer("/route/request_mirror_policies")
        .and_then(Value::as_array);
    policies
        .into_iter()
        .flatten()
        .map(|m| {
            // No runtime_fraction: Envoy mirrors every request.
            let percent = match envoy_fraction(m.pointer("/runtime_fraction/default_value")) {
                None => 100.0,
                Some((n, d)) => 100.0 * n as f64 / d as f64,
            };
            let flag = |k: &str| m.get(k).and_then(Value::as_bool);
            mirror_view(
                m.get("cluster").and_then(Value::as_str).unwrap_or("?"),
                percent,
                !flag("disable_shadow_host_suffix_append").unwrap_or(false),
                // Envoy's default when unset is true.
                flag("trace_sampled").unwrap_or(true),
            )
        })
        .collect()
}

/// The model's route.
pub fn model_route(r: &RoutePlan) -> RouteView {
    let path = match &r.path {
        PathMatch::Prefix(p) => format!("prefix {p}"),
        PathMatch::Exact(p) => format!("path {p}"),
        PathMatch::Regex(p) => format!("safe_regex {p}"),
        PathMatch::PathSeparatedPrefix(p) => format!("path_separated_prefix {p}"),
    };
    let view = |m: &crate::istio::Matcher| {
        let not = if m.invert { "!" } else { "" };
        let what = match &m.value {
            None => "present:true".to_string(),
            Some(sm) => string_match(sm),
        };
        format!("{not}{} {what}", m.name)
    };
    let mut matchers: Vec<String> = r.headers.iter().map(view).collect();
    matchers.extend(r.query.iter().map(|q| format!("?{}", view(q))));
    if let Some(m) = &r.method {
        matchers.push(format!(":method {}", string_match(m)));
    }
    if let Some(m) = &r.authority {
        matchers.push(format!(":authority {}", string_match(m)));
    }
    matchers.sort();
    let weights: Vec<(String, f64)> = r
        .destinations
        .iter()
        .map(|d| (d.cluster.clone(), d.weight as f64))
        .collect();
    let action = match &r.action {
        RouteKind::Forward => shares(&weights),
        RouteKind::Redirect(x) => redirect_view(
            x.code,
            &if x.prefix {
                format!("prefix:{}", x.path)
            } else {
                x.path.clone()
            },
            &x.host,
            x.scheme.as_deref().unwrap_or(""),
            x.port,
        ),
        RouteKind::DirectResponse { status, body } => {
            direct_view(u32::from(*status), body.as_deref().unwrap_or(""))
        }
    };
    let mut header_ops = ops_view("", "request", &r.request_headers);
    header_ops.extend(ops_view("", "response", &r.response_headers));
    for d in &r.destinations {
        // pilot: a single destination's operations are the route's.
        let prefix = if r.destinations.len() == 1 {
            String::new()
        } else {
            format!("{}: ", d.cluster)
        };
        header_ops.extend(ops_view(&prefix, "request", &d.request_headers));
        header_ops.extend(ops_view(&prefix, "response", &d.response_headers));
    }
    header_ops.sort();
    let timeouts = match &r.action {
        RouteKind::Forward => timeouts_view(
            r.timeout_ms,
            r.retry.as_ref().map(|p| {
                (
                    p.attempts,
                    p.retry_on.as_str(),
                    &p.status_codes[..],
                    p.per_try_timeout_ms,
                )
            }),
            r.retry.as_ref().is_none_or(|p| p.previous_hosts),
        ),
        _ => String::new(),
    };
    RouteView {
        hash_policy: r.hash_policy.iter().map(|h| h.view()).collect(),
        timeouts,
        header_ops,
        filters: model_filters(&r.filters),
        mirrors: r
            .mirrors
            .iter()
            .map(|m| mirror_view(&m.cluster, m.fraction.percent(), false, false))
            .collect(),
        virtual_service: r.virtual_service.clone(),
        path,
        case_sensitive: !r.ignore_case,
        matchers,
        action,
        rewrite: match &r.rewrite {
            None => String::new(),
            Some(UriRewrite::Prefix(p)) => format!("prefix_rewrite {p}"),
            Some(UriRewrite::Regex(p, s)) => format!("regex_rewrite {p} -> {s}"),
        },
        host_rewrite: r.rewrite_authority.clone().unwrap_or_default(),
    }
}

/// istiod's route.
pub fn oracle_route(r: &RouteResult) -> RouteView {
    let m = &r.route_match;
    let path = if let Some(p) = m.get("prefix").and_then(Value::as_str) {
        format!("prefix {p}")
    } else if let Some(p) = m.get("path").and_then(Value::as_str) {
        format!("path {p}")
    } else if let Some(p) = m.pointer("/safe_regex/regex").and_then(Value::as_str) {
        format!("safe_regex {p}")
    } else if let Some(p) = m.get("path_separated_prefix").and_then(Value::as_str) {
        format!("path_separated_prefix {p}")
    } else {
        format!("(unrecognised: {m})")
    };
    let mut matchers: Vec<String> = m
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(header_matcher)
        .chain(
            m.get("query_parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|q| format!("?{}", header_matcher(q))),
        )
        .collect();
    matchers.sort();
    let action = match r.action.as_str() {
        "route" => shares(
            &r.destinations
                .iter()
                .map(|d| (d.cluster.clone(), d.weight as f64))
                .collect::<Vec<_>>(),
        ),
        "direct_response" => {
            let d = r.direct_response.as_ref();
            direct_view(
                d.map(|d| d.status).unwrap_or(0),
                d.map(|d| d.body.as_str()).unwrap_or(""),
            )
        }
        "redirect" => {
            let j = r.redirect.clone().unwrap_or_default();
            let text = |k: &str| j.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let code = crate::istio::Redirect::status_of(&text("response_code"));
            let port = j.get("port_redirect").and_then(Value::as_u64).unwrap_or(0) as u32;
            let path = match j.get("prefix_rewrite").and_then(Value::as_str) {
                Some(p) => format!("prefix:{p}"),
                None => text("path_redirect"),
            };
            redirect_view(
                code,
                &path,
                &text("host_redirect"),
                &text("scheme_redirect"),
                port,
            )
        }
        other => other.to_string(),
    };
    let rewrite = match (&r.prefix_rewrite, &r.regex_rewrite) {
        (Some(p), _) => format!("prefix_rewrite {p}"),
        (None, Some(rr)) => format!("regex_rewrite {} -> {}", rr.pattern, rr.substitution),
        (None, None) => String::new(),
    };
    let mut header_ops = envoy_ops("", &r.envoy);
    for c in r
        .envoy
        .pointer("/route/weighted_clusters/clusters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
        header_ops.extend(envoy_ops(&format!("{name}: "), c));
    }
    header_ops.sort();
    let timeouts = match r.envoy.get("route") {
        Some(a) => {
            let ms = |v: Option<&Value>| {
                v.and_then(Value::as_str)
                    .and_then(crate::istio::duration_ms)
            };
            let retry = a.get("retry_policy");
            let codes: Vec<u32> = retry
                .and_then(|p| p.get("retriable_status_codes"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_u64().map(|c| c as u32))
                .collect();
            timeouts_view(
                ms(a.get("timeout")).unwrap_or(0),
                retry.map(|p| {
                    (
                        p.get("num_retries").and_then(Value::as_u64).unwrap_or(1) as u32,
                        p.get("retry_on").and_then(Value::as_str).unwrap_or(""),
                        &codes[..],
                        ms(p.get("per_try_timeout")),
                    )
                }),
                retry.is_none_or(|p| p.get("retry_host_predicate").is_some()),
            )
        }
        None => String::new(),
    };
    let hash_policy = r
        .envoy
        .pointer("/route/hash_policy")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(envoy_hash_policy)
        .collect();
    RouteView {
        hash_policy,
        timeouts,
        header_ops,
        filters: envoy_filters(r.envoy.get("typed_per_filter_config")),
        mirrors: envoy_mirrors(&r.envoy),
        virtual_service: r
            .virtual_service()
            .unwrap_or_else(|| format!("(config {})", r.config)),
        path,
        case_sensitive: m
            .get("case_sensitive")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        matchers,
        action,
        rewrite,
        host_rewrite: r.host_rewrite.clone(),
    }
}

/// A route hash policy from Envoy's JSON, in [`crate::istio::policy::HashPolicy::view`]'s
/// terms.
fn envoy_hash_policy(h: &Value) -> String {
    let text = |p: &str| {
        h.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if h.get("header").is_some() {
        return format!(
            "header {}",
            text("/header/header_name").to_ascii_lowercase()
        );
    }
    if let Some(c) = h.get("cookie") {
        let mut v = format!("cookie {}", text("/cookie/name"));
        let path = text("/cookie/path");
        if !path.is_empty() {
            v.push_str(&format!(" path {path}"));
        }
        if let Some(ms) = c
            .get("ttl")
            .and_then(Value::as_str)
            .and_then(crate::istio::duration_ms)
        {
            v.push_str(&format!(" ttl {ms}ms"));
        }
        return v;
    }
    if let Some(c) = h.get("connection_properties") {
        let b = c.get("source_ip").and_then(Value::as_bool).unwrap_or(false);
        return format!("source_ip {b}");
    }
    if h.get("query_parameter").is_some() {
        return format!("query {}", text("/query_parameter/name"));
    }
    h.to_string()
}

/// `name kind:value`, `name present`, `!name ...` (invert), from Envoy's HeaderMatcher
/// or QueryParameterMatcher JSON.
fn header_matcher(h: &Value) -> String {
    let name = h.get("name").and_then(Value::as_str).unwrap_or("?");
    let invert = if h
        .get("invert_match")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        "!"
    } else {
        ""
    };
    let what = if let Some(p) = h.get("present_match") {
        format!("present:{p}")
    } else if let Some(sm) = h.get("string_match") {
        let ic = if sm
            .get("ignore_case")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            " (any case)"
        } else {
            ""
        };
        let kind = ["exact", "prefix", "suffix", "contains"]
            .iter()
            .find_map(|k| {
                sm.get(*k)
                    .and_then(Value::as_str)
                    .map(|v| format!("{k}:{v}"))
            })
            .or_else(|| {
                sm.pointer("/safe_regex/regex")
                    .and_then(Value::as_str)
                    .map(|v| format!("regex:{v}"))
            })
            .unwrap_or_else(|| sm.to_string());
        format!("{kind}{ic}")
    } else {
        h.to_string()
    };
    format!("{invert}{name} {what}")
}

/// Where a request goes, in the terms both sides share.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `no listener`, `404`, `route`, `redirect`, `direct_response 503`, `error: ...`.
    pub outcome: String,
    pub virtual_service: String,
    /// Destination clusters and their shares.
    pub clusters: String,
    /// The path the backend sees.
    pub path: String,
}

impl Answer {
    pub fn diff(&self, other: &Answer) -> Vec<(&'static str, String, String)> {
        let mut d = Vec::new();
        if self.outcome != other.outcome {
            d.push(("outcome", self.outcome.clone(), other.outcome.clone()));
            return d;
        }
        for (f, a, b) in [
            (
                "VirtualService",
                &self.virtual_service,
                &other.virtual_service,
            ),
            ("destinations", &self.clusters, &other.clusters),
            ("path at the backend", &self.path, &other.path),
        ] {
            if a != b {
                d.push((f, a.clone(), b.clone()));
            }
        }
        d
    }
}

pub fn model_answer(p: &Prediction) -> Answer {
    let refused = p.branches.iter().any(|b| b.status.is_none());
    let Some(route) = &p.route else {
        let status = p.branches.first().and_then(|b| b.status);
        let outcome = match status {
            _ if refused => "no listener",
            Some(301) => "https redirect (301)",
            _ => "404",
        };
        return Answer {
            outcome: outcome.into(),
            virtual_service: String::new(),
            clusters: String::new(),
            path: String::new(),
        };
    };
    // A cluster's endpoints of several versions are several branches: one share each.
    let mut weights: Vec<(String, f64)> = Vec::new();
    for b in &p.branches {
        let Some(c) = &b.cluster else { continue };
        match weights.iter_mut().find(|(x, _)| x == c) {
            Some((_, w)) => *w += b.share,
            None => weights.push((c.clone(), b.share)),
        }
    }
    if weights.is_empty() {
        // Answered by the gateway itself (redirect, direct response).
        let status = p.branches.first().and_then(|b| b.status).unwrap_or(0);
        return Answer {
            outcome: format!("answered by the gateway: {status}"),
            virtual_service: route.virtual_service.clone(),
            clusters: String::new(),
            path: String::new(),
        };
    }
    Answer {
        outcome: "route".into(),
        virtual_service: route.virtual_service.clone(),
        clusters: shares(&weights),
        path: route.path_seen.clone(),
    }
}

pub fn oracle_answer(s: &SimResult) -> Answer {
    let blank = |outcome: &str| Answer {
        outcome: outcome.into(),
        virtual_service: String::new(),
        clusters: String::new(),
        path: String::new(),
    };
    if let Some(r) = &s.route {
        let v = oracle_route(r);
        if r.action != "route" {
            let status = match r.action.as_str() {
                // A CORS preflight Envoy's CORS filter answers (oracle/cors.go).
                "direct_response" | "cors_preflight" => {
                    r.direct_response.as_ref().map(|d| d.status).unwrap_or(0)
                }
                "redirect" => u32::from(crate::istio::Redirect::status_of(
                    r.redirect
                        .as_ref()
                        .and_then(|j| j.get("response_code"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                )),
                _ => 0,
            };
            return Answer {
                outcome: format!("answered by the gateway: {status}"),
                virtual_service: v.virtual_service,
                clusters: String::new(),
                path: String::new(),
            };
        }
        return Answer {
            outcome: "route".into(),
            virtual_service: v.virtual_service,
            clusters: v.action,
            // Envoy forwards the query with the path; the backend's path is without it.
            path: crate::istio::split_query(&r.rewritten_path).0.to_string(),
        };
    }
    match s.error.as_str() {
        "no listener matched" | "no filter chains matched" => blank("no listener"),
        "no virtual host matched" | "no route matched" => blank("404"),
        "tls required, sending 301" => blank("https redirect (301)"),
        e => blank(&format!("error: {e}")),
    }
}

/// A cluster's TLS mode, endpoints and traffic policy, in the terms both sides share.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub tls: String,
    pub sni: String,
    /// `ns/pod:port tlsMode`, sorted.
    pub endpoints: Vec<String>,
    /// `lb_policy` with its config: `RING_HASH min ring 1024`.
    pub lb: String,
    /// `connect_timeout` in ms.
    pub connect_timeout: String,
    /// `max_connections 1, max_pending_requests 1, max_requests .., max_retries ..`.
    pub circuit_breakers: String,
    /// `outlier_detection` fields, or `none`.
    pub outlier: String,
    /// `common_lb_config.healthy_panic_threshold`, or `none`.
    pub panic_threshold: String,
    /// `common_http_protocol_options`: idle timeout, max requests per connection, max
    /// connection duration, or `none`.
    pub http_options: String,
}

/// The traffic-policy fields of a cluster, from the model.
fn model_policy(p: &crate::istio::policy::ClusterPolicy) -> [String; 6] {
    let t = &p.thresholds;
    let outlier = p.outlier.as_ref().map_or("none".to_string(), |o| {
        let e = |n: u32| if n > 0 { 100 } else { 0 };
        outlier_view(
            o.consecutive_5xx.map(|n| (n, e(n))),
            o.consecutive_gateway_failure.map(|n| (n, e(n))),
            o.interval_ms,
            o.base_ejection_time_ms,
            o.max_ejection_percent,
            Some(0),
        )
    });
    [
        p.lb.view(),
        format!("{}ms", p.connect_timeout_ms),
        thresholds_view([
            Some(u64::from(t.max_connections)),
            Some(u64::from(t.max_pending_requests)),
            Some(u64::from(t.max_requests)),
            Some(u64::from(t.max_retries)),
        ]),
        outlier,
        p.healthy_panic_threshold
            .map_or("none".into(), |v| format!("{v}%")),
        http_options_view(
            p.idle_timeout_ms,
            p.max_requests_per_connection.map(u64::from),
            p.max_connection_duration_ms,
        ),
    ]
}

/// The same fields from istiod's Envoy cluster JSON (Envoy's defaults where a field is
/// absent are left as `default`, so an absent field differs from any value written).
fn oracle_policy(c: &Value) -> [String; 6] {
    let num = |v: Option<&Value>| -> Option<u64> {
        v.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let ms = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(crate::istio::duration_ms)
    };
    let lb = c
        .get("lb_policy")
        .and_then(Value::as_str)
        .unwrap_or("ROUND_ROBIN");
    let lb = match lb {
        "RING_HASH" => match num(c.pointer("/ring_hash_lb_config/minimum_ring_size")) {
            Some(n) => format!("RING_HASH min ring {n}"),
            None => "RING_HASH".into(),
        },
        "MAGLEV" => match num(c.pointer("/maglev_lb_config/table_size")) {
            Some(n) => format!("MAGLEV table {n}"),
            None => "MAGLEV".into(),
        },
        other => other.to_string(),
    };
    let th = c.pointer("/circuit_breakers/thresholds/0");
    let th_field = |k: &str| num(th.and_then(|t| t.get(k)));
    let outlier = c.get("outlier_detection").map_or("none".to_string(), |o| {
        let pair = |n: &str, e: &str| {
            num(o.get(n)).map(|n| (n as u32, num(o.get(e)).unwrap_or(100) as u32))
        };
        outlier_view(
            pair("consecutive_5xx", "enforcing_consecutive_5xx"),
            pair(
                "consecutive_gateway_failure",
                "enforcing_consecutive_gateway_failure",
            ),
            ms(o.get("interval")),
            ms(o.get("base_ejection_time")),
            num(o.get("max_ejection_percent")).map(|n| n as u32),
            num(o.get("enforcing_success_rate")).map(|n| n as u32),
        )
    });
    let panic = c
        .pointer("/common_lb_config/healthy_panic_threshold")
        .map_or("none".to_string(), |p| {
            format!("{}%", p.get("value").and_then(Value::as_f64).unwrap_or(0.0))
        });
    let common = c
        .get("typed_extension_protocol_options")
        .and_then(|o| o.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"))
        .and_then(|o| o.get("common_http_protocol_options"));
    let common_field = |k: &str| common.and_then(|x| x.get(k));
    [
        lb,
        ms(c.get("connect_timeout")).map_or("default".into(), |v| format!("{v}ms")),
        thresholds_view([
            th_field("max_connections"),
            th_field("max_pending_requests"),
            th_field("max_requests"),
            th_field("max_retries"),
        ]),
        outlier,
        panic,
        http_options_view(
            ms(common_field("idle_timeout")),
            num(common_field("max_requests_per_connection")),
            ms(common_field("max_connection_duration")),
        ),
    ]
}

fn thresholds_view(v: [Option<u64>; 4]) -> String {
    let names = [
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "max_retries",
    ];
    names
        .iter()
        .zip(v)
        .map(|(n, x)| match x {
            Some(x) => format!("{n} {x}"),
            None => format!("{n} default"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `consecutive_5xx 3 (enforcing 100), interval 5000ms, ...`.
fn outlier_view(
    c5xx: Option<(u32, u32)>,
    gateway: Option<(u32, u32)>,
    interval_ms: Option<u64>,
    base_ms: Option<u64>,
    max_pct: Option<u32>,
    enforcing_success_rate: Option<u32>,
) -> String {
    let mut parts = Vec::new();
    if let Some((n, e)) = c5xx {
        parts.push(format!("consecutive_5xx {n} (enforcing {e})"));
    }
    if let Some((n, e)) = gateway {
        parts.push(format!("consecutive_gateway_failure {n} (enforcing {e})"));
    }
    if let Some(v) = interval_ms {
        parts.push(format!("interval {v}ms"));
    }
    if let Some(v) = base_ms {
        parts.push(format!("base_ejection_time {v}ms"));
    }
    if let Some(v) = max_pct {
        parts.push(format!("max_ejection_percent {v}"));
    }
    if let Some(v) = enforcing_success_rate {
        parts.push(format!("enforcing_success_rate {v}"));
    }
    parts.join(", ")
}

fn http_options_view(
    idle_ms: Option<u64>,
    per_conn: Option<u64>,
    duration_ms: Option<u64>,
) -> String {
    let mut parts = Vec::new();
    if let Some(v) = idle_ms {
        parts.push(format!("idle_timeout {v}ms"));
    }
    if let Some(v) = per_conn {
        parts.push(format!("max_requests_per_connection {v}"));
    }
    if let Some(v) = duration_ms {
        parts.push(format!("max_connection_duration {v}ms"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub fn model_cluster(mesh: &Mesh, name: &str) -> Option<ClusterView> {
    let c = mesh.clusters.get(name)?;
    let mut endpoints: Vec<String> = c
        .endpoints
        .iter()
        .map(|e| {
            let p = &mesh.pods[e.pod];
            let mode = if e.istio_tls { "istio" } else { "disabled" };
            format!("{}/{}:{} {mode}", p.namespace, p.name, e.port)
        })
        .collect();
    endpoints.sort();
    let [lb, connect_timeout, circuit_breakers, outlier, panic_threshold, http_options] =
        model_policy(&c.policy);
    Some(ClusterView {
        lb,
        connect_timeout,
        circuit_breakers,
        outlier,
        panic_threshold,
        http_options,
        tls: match c.tls {
            UpstreamTls::Auto => "AUTO",
            UpstreamTls::IstioMutual => "ISTIO_MUTUAL",
            UpstreamTls::Disable => "DISABLE",
        }
        .into(),
        sni: c.sni.clone(),
        endpoints,
    })
}

/// istiod's cluster: its summary `d` and its Envoy JSON `envoy` (Null when istiod
/// sent none: every policy field then reads as Envoy's default).
pub fn oracle_cluster(mesh: &Mesh, d: &Destination, envoy: &Value) -> ClusterView {
    let mut endpoints: Vec<String> = d
        .endpoints
        .iter()
        .map(|e| {
            let who = pod_index(&e.address)
                .and_then(|i| mesh.pods.get(i))
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .unwrap_or_else(|| e.address.clone());
            let mode = if e.tls_mode.is_empty() {
                "disabled"
            } else {
                &e.tls_mode
            };
            format!("{who}:{} {mode}", e.port)
        })
        .collect();
    endpoints.sort();
    let [lb, connect_timeout, circuit_breakers, outlier, panic_threshold, http_options] =
        oracle_policy(envoy);
    ClusterView {
        lb,
        connect_timeout,
        circuit_breakers,
        outlier,
        panic_threshold,
        http_options,
        tls: d.tls.clone(),
        sni: d.sni.clone(),
        endpoints,
    }
}

impl ClusterView {
    pub fn diff(&self, other: &ClusterView) -> Vec<(&'static str, String, String)> {
        let mut d = Vec::new();
        if self.tls != other.tls {
            d.push(("TLS", self.tls.clone(), other.tls.clone()));
        }
        // istiod sets SNI only where it originates TLS itself.
        if self.tls == "ISTIO_MUTUAL" && other.tls == "ISTIO_MUTUAL" && self.sni != other.sni {
            d.push(("SNI", self.sni.clone(), other.sni.clone()));
        }
        if self.endpoints != other.endpoints {
            d.push((
                "endpoints",
                self.endpoints.join(", "),
                other.endpoints.join(", "),
            ));
        }
        for (f, a, b) in [
            ("lb_policy", &self.lb, &other.lb),
            (
                "connect_timeout",
                &self.connect_timeout,
                &other.connect_timeout,
            ),
            (
                "circuit_breakers",
                &self.circuit_breakers,
                &other.circuit_breakers,
            ),
            ("outlier_detection", &self.outlier, &other.outlier),
            (
                "healthy_panic_threshold",
                &self.panic_threshold,
                &other.panic_threshold,
            ),
            (
                "common_http_protocol_options",
                &self.http_options,
                &other.http_options,
            ),
        ] {
            if a != b {
                d.push((f, a.clone(), b.clone()));
            }
        }
        d
    }
}
