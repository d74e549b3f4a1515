//! Istio's security policy at the gateway, as istiod programs it: AuthorizationPolicy
//! into Envoy's RBAC HTTP filters (pilot/pkg/security/authz/builder/builder.go,
//! model/model.go, model/generator.go, matcher/), evaluated by the simulation as
//! Envoy's RBAC filter does (rbac.rs); RequestAuthentication into the JWT filter
//! before them (jwt.rs).

pub mod ext_authz;
pub mod generate;
pub mod jwt;
pub mod rbac;
pub mod template;

use crate::fixtures::k8s::Labels;
use crate::fixtures::security::{AuthorizationPolicy, PolicyTargetReference, WorkloadSelector};
use crate::fixtures::{Fixtures, Item, Source, Warning};
use rbac::{Action, Policy, RbacFilter, Rules};

/// The label of pods a Gateway API Gateway's automated deployment runs
/// (pilot/pkg/model/policyattachment.go workloadGatewayName).
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The Envoy filter that answered a request itself, refusing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedBy {
    /// envoy.filters.http.rbac: 403 `RBAC: access denied`.
    Rbac,
    /// envoy.filters.http.jwt_authn: 401 (`Jwt is missing`, `Jwt verification fails`).
    Jwt,
    /// envoy.filters.http.ext_authz: the CUSTOM authorizer's denial (its status and
    /// body; Istio's sample server: 403, ext_authz.rs DENY_BODY).
    ExtAuthz,
}

/// What the gateway's security filters decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// None: the filters let the request through.
    pub denied_by: Option<DeniedBy>,
    /// The Envoy policy that decided (`ns[istio-ingress]-policy[deny-admin]-rule[0]`):
    /// the DENY rule that matched, the ALLOW rule that let the request in; None when
    /// no policy matched (an ALLOW filter with no match denies).
    pub policy: Option<String>,
    /// The decision in words, for the decision path.
    pub why: String,
}

/// The security filters istiod puts into one gateway pod's HTTP connection managers,
/// in their order (listener_builder.go: CUSTOM's RBAC and ext_authz filters, the JWT
/// filter, then builder.go build: AUDIT, DENY, ALLOW).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthzPlan {
    /// CUSTOM policies: per provider its shadow RBAC and ext_authz filters (ext_authz.rs).
    pub custom: Vec<ext_authz::CustomFilter>,
    /// RequestAuthentication's envoy.filters.http.jwt_authn (jwt.rs).
    pub jwt: Option<jwt::JwtFilter>,
    pub rbac: Vec<RbacFilter>,
    /// `Kind namespace/name` of each policy that applies to the pod, with its place.
    pub applied: Vec<(String, Source)>,
}

/// What the security filters did with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The status the filters answer with themselves (RBAC 403; JWT 401, or 403 for
    /// audiences); None when they let the request through.
    pub status: Option<u16>,
    /// The request headers after the filters (the JWT filter adds its payload and
    /// claim headers and removes the token's), for the route and the backend.
    pub headers: crate::istio::headers::Headers,
    /// The verified token's payload (route claim conditions read it).
    pub payload: Option<serde_json::Value>,
}

impl AuthzPlan {
    /// The filters as Envoy JSON, in order.
    pub fn http_filters(&self) -> Vec<serde_json::Value> {
        self.custom
            .iter()
            .flat_map(ext_authz::CustomFilter::json)
            .chain(self.jwt.iter().map(jwt::JwtFilter::json))
            .chain(self.rbac.iter().map(RbacFilter::json))
            .collect()
    }

    /// What Envoy's security filters decide for `r`; None when the pod has none.
    pub fn decide(&self, r: &rbac::Request) -> Option<Verdict> {
        self.outcome(r).map(|o| o.verdict)
    }

    /// What the security filters do with `r`: the JWT filter (its payload into the
    /// dynamic metadata the RBAC matchers read, its header changes), then the RBAC
    /// filters; None when the pod has none.
    pub fn outcome(&self, r: &rbac::Request) -> Option<Outcome> {
        if self.rbac.is_empty() && self.jwt.is_none() && self.custom.is_empty() {
            return None;
        }
        let mut r = r.clone();
        // CUSTOM first (listener_builder.go: before the JWT filter).
        let mut custom_why = None;
        for c in &self.custom {
            let Some((v, status)) = c.decide(&r) else {
                continue;
            };
            // Not the verdict's policy: MC409 compares that with istiod's RBAC filters'
            // decision, and the oracle does not ask an authorizer.
            if status.is_some() {
                return Some(Outcome {
                    status,
                    verdict: v,
                    headers: r.headers,
                    payload: None,
                });
            }
            for (k, val) in c.upstream_headers() {
                r.headers.insert(k, vec![val]);
            }
            custom_why = Some(v.why);
        }
        let mut jwt_why = custom_why;
        if let Some(j) = &self.jwt {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let a = j.apply(&r, now);
            if a.status != jwt::Status::Ok {
                let why = match &jwt_why {
                    Some(c) => format!("{c}; {}", a.why),
                    None => a.why,
                };
                return Some(Outcome {
                    status: Some(a.status.http_status()),
                    verdict: Verdict {
                        denied_by: Some(DeniedBy::Jwt),
                        policy: None,
                        why,
                    },
                    headers: r.headers,
                    payload: None,
                });
            }
            r.headers = a.headers;
            if let Some(p) = a.payload {
                let mut m = serde_json::Map::new();
                m.insert(jwt::PAYLOAD.to_string(), p);
                r.metadata
                    .insert(jwt::FILTER.to_string(), serde_json::Value::Object(m));
            }
            jwt_why = Some(match jwt_why {
                Some(c) => format!("{c}; {}", a.why),
                None => a.why,
            });
        }
        let rbac = self.decide_rbac(&r);
        let verdict = match (jwt_why, rbac) {
            (Some(j), Some(v)) => Verdict {
                why: format!("{j}; {}", v.why),
                ..v
            },
            (Some(j), None) => Verdict {
                denied_by: None,
                policy: None,
                why: j,
            },
            (None, Some(v)) => v,
            // Only CUSTOM filters, none of whose policies matched.
            (None, None) => Verdict {
                denied_by: None,
                policy: None,
                why: "no CUSTOM policy matches".to_string(),
            },
        };
        let payload = r
            .metadata
            .get(jwt::FILTER)
            .and_then(|m| m.get(jwt::PAYLOAD))
            .cloned();
        Some(Outcome {
            status: verdict.denied_by.map(|_| 403),
            verdict,
            headers: r.headers,
            payload,
        })
    }

    /// What Envoy's RBAC filters decide for `r`; None when the pod has none.
    fn decide_rbac(&self, r: &rbac::Request) -> Option<Verdict> {
        if self.rbac.is_empty() {
            return None;
        }
        let mut allowed_by = None;
        for f in &self.rbac {
            let Some(rules) = &f.rules else { continue };
            let hit = rules.matching(r).map(str::to_string);
            match (rules.action, hit) {
                (Action::Log, _) => {}
                (Action::Deny, Some(p)) => {
                    return Some(Verdict {
                        denied_by: Some(DeniedBy::Rbac),
                        why: format!("RBAC: access denied by DENY policy {p}: 403"),
                        policy: Some(p),
                    })
                }
                (Action::Deny, None) => {}
                (Action::Allow, Some(p)) => allowed_by = Some(p),
                (Action::Allow, None) => {
                    return Some(Verdict {
                        denied_by: Some(DeniedBy::Rbac),
                        policy: None,
                        why: format!(
                        "RBAC: access denied: ALLOW policies apply and none of [{}] matches: 403",
                        rules
                            .policies
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    })
                }
            }
        }
        let why = match &allowed_by {
            Some(p) => format!("RBAC: allowed by ALLOW policy {p}"),
            None => "RBAC: no DENY policy matches".to_string(),
        };
        Some(Verdict {
            denied_by: None,
            policy: allowed_by,
            why,
        })
    }
}

/// builder.go policyName: `ns[<ns>]-policy[<name>]-rule[<i>]`.
pub fn policy_name(namespace: &str, name: &str, rule: usize) -> String {
    format!("ns[{namespace}]-policy[{name}]-rule[{rule}]")
}

/// The AuthorizationPolicy of `fx` an Envoy policy name ([`policy_name`]) comes from.
pub fn policy_of<'a>(fx: &'a Fixtures, envoy_name: &str) -> Option<&'a Item<AuthorizationPolicy>> {
    // CUSTOM's names carry `istio-ext-authz-<provider>-` first (a provider name has
    // no `[`).
    let name = envoy_name
        .find("ns[")
        .map_or(envoy_name, |i| &envoy_name[i..]);
    fx.authorization_policies
        .iter()
        .find(|p| name.starts_with(&format!("ns[{}]-policy[{}]-", p.namespace, p.name)))
}

/// Whether policy `p` attaches to a workload in `namespace` with `labels`
/// (authorization.go ListAuthorizationPolicies: the root namespace's (meshConfig
/// rootNamespace, policies there apply to every namespace) and the
/// workload's own; policyattachment.go ShouldAttachPolicy: a selector, or for a
/// Gateway API gateway's pods a targetRef to that Gateway; selector-based policy
/// applies to those too, ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY being on by
/// default).
pub fn attaches(
    p: &Item<AuthorizationPolicy>,
    root_namespace: &str,
    namespace: &str,
    labels: &Labels,
) -> bool {
    let spec = &p.spec.spec;
    attaches_by(
        &p.namespace,
        spec.selector.as_ref(),
        &spec.target_refs(),
        root_namespace,
        namespace,
        labels,
    )
}

/// [`attaches`] for any security policy of `policy_namespace` with this selector and
/// these target references (RequestAuthentication attaches as AuthorizationPolicy
/// does: authentication.go getConfigsForWorkload, the same ShouldAttachPolicy).
pub(crate) fn attaches_by(
    policy_namespace: &str,
    selector: Option<&WorkloadSelector>,
    refs: &[&PolicyTargetReference],
    root_namespace: &str,
    namespace: &str,
    labels: &Labels,
) -> bool {
    if policy_namespace != root_namespace && policy_namespace != namespace {
        return false;
    }
    let selected =
        || selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let Some(gateway) = labels.get(GATEWAY_NAME_LABEL) else {
        return refs.is_empty() && selected();
    };
    if refs.is_empty() {
        return selected();
    }
    refs.iter().any(|r| {
        policy_namespace == namespace
            && (r.namespace.is_empty() || r.namespace == namespace)
            && r.group == crate::fixtures::gateway_api::GROUP
            && r.kind == "Gateway"
            && &r.name == gateway
    })
}

/// isDryRun: the `istio.io/dry-run` annotation, read as Go's strconv.ParseBool (an
/// unparsable value is not dry run).
fn dry_run(p: &AuthorizationPolicy) -> bool {
    matches!(
        p.metadata
            .annotations
            .get("istio.io/dry-run")
            .map(String::as_str),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

/// The security filters of a gateway pod in `namespace` with `labels`.
pub fn plan(
    fx: &Fixtures,
    namespace: &str,
    labels: &Labels,
    warnings: &mut Vec<Warning>,
) -> AuthzPlan {
    let mut policies: Vec<&Item<AuthorizationPolicy>> = fx
        .authorization_policies
        .iter()
        .filter(|p| attaches(p, fx.root_namespace(), namespace, labels))
        .collect();
    // authorization.go: by creation time, then name, then namespace (one apply, one
    // creation second).
    policies.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
    let mut out = AuthzPlan {
        applied: policies
            .iter()
            .map(|p| (p.describe(), p.source.clone()))
            .collect(),
        ..Default::default()
    };
    for (kind, action) in [
        ("AUDIT", Action::Log),
        ("DENY", Action::Deny),
        ("ALLOW", Action::Allow),
    ] {
        let of_kind: Vec<_> = policies
            .iter()
            .filter(|p| p.spec.spec.action() == kind)
            .collect();
        if let Some(f) = filter(&of_kind, action, warnings) {
            out.rbac.push(f);
        }
    }
    let (jwt, jwt_applied) = jwt::plan(fx, namespace, labels, warnings);
    out.jwt = jwt;
    out.applied.extend(jwt_applied);
    let custom: Vec<_> = policies
        .iter()
        .copied()
        .filter(|p| p.spec.spec.action() == "CUSTOM")
        .collect();
    if !custom.is_empty() {
        out.custom = ext_authz::plan(fx, &custom, warnings);
    }
    out
}

/// The security filters of a workload pod's sidecar, in `namespace` with `labels`:
/// the same policies attach (authorization.go ListAuthorizationPolicies,
/// authentication.go getConfigsForWorkload) and make the same filters, in each
/// inbound HTTP connection manager before the router (listener_inbound.go
/// buildInboundNetworkFiltersForHTTP -> listener_builder.go
/// buildHTTPConnectionManager; authz.NewBuilder(authz.Local, ...) as for a gateway,
/// CUSTOM's shadow RBAC and ext_authz filters included: the sidecar asks the
/// provider's `outbound|<port>||<host>` cluster, which istiod gives every proxy);
/// only the JWT providers do not clear the route cache (authentication.go BuildHTTP:
/// `JwtFilter(proxy.Type != model.SidecarProxy)`).
pub fn sidecar_plan(
    fx: &Fixtures,
    namespace: &str,
    labels: &Labels,
    warnings: &mut Vec<Warning>,
) -> AuthzPlan {
    let mut out = plan(fx, namespace, labels, warnings);
    if let Some(j) = &mut out.jwt {
        j.clear_route_cache = false;
    }
    out
}

fn warn(warnings: &mut Vec<Warning>, p: &Item<AuthorizationPolicy>, message: String) {
    let w = Warning {
        at: p.source.clone(),
        object: p.describe(),
        message,
        field: None,
    };
    if !warnings.contains(&w) {
        warnings.push(w);
    }
}

/// builder.go build + buildHTTP for the policies of one action.
fn filter(
    policies: &[&&Item<AuthorizationPolicy>],
    action: Action,
    warnings: &mut Vec<Warning>,
) -> Option<RbacFilter> {
    if policies.is_empty() {
        return None;
    }
    let mut enforce: Option<Rules> = None;
    let mut shadow: Option<Rules> = None;
    for p in policies {
        let target = if dry_run(&p.spec) {
            &mut shadow
        } else {
            &mut enforce
        };
        let rules = target.get_or_insert_with(|| Rules::new(action));
        for (name, policy) in generated(p, action, warnings) {
            rules.policies.insert(name, policy);
        }
    }
    let shadow_rules_stat_prefix = match shadow.as_ref().map(|s| s.action) {
        Some(Action::Deny) => "istio_dry_run_deny_",
        Some(Action::Log) => "",
        _ => "istio_dry_run_allow_",
    }
    .to_string();
    Some(RbacFilter {
        rules: enforce,
        shadow_rules: shadow,
        shadow_rules_stat_prefix,
    })
}

/// The Envoy policies of one AuthorizationPolicy: one per rule pilot can generate
/// (the others are warned, as istiod logs them), or the never-matching policy when it
/// has no rules.
fn generated(
    p: &Item<AuthorizationPolicy>,
    action: Action,
    warnings: &mut Vec<Warning>,
) -> Vec<(String, Policy)> {
    let rules = p.spec.spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() {
        return vec![(policy_name(&p.namespace, &p.name, 0), Policy::never())];
    }
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        match generate::policy(rule, &p.namespace, action) {
            Ok(policy) => out.push((policy_name(&p.namespace, &p.name, i), policy)),
            Err(e) => warn(
                warnings,
                p,
                format!("rules[{i}] is skipped by istiod ({e}): it matches no request"),
            ),
        }
    }
    out
}
