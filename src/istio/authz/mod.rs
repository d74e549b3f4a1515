//! Istio's security policy at the gateway, as istiod programs it: AuthorizationPolicy
//! into Envoy's RBAC HTTP filters (pilot/pkg/security/authz/builder/builder.go,
//! model/model.go, model/generator.go, matcher/), evaluated by the simulation as
//! Envoy's RBAC filter does (rbac.rs).

pub mod generate;
pub mod rbac;
pub mod template;

use crate::fixtures::k8s::Labels;
use crate::fixtures::security::AuthorizationPolicy;
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
/// in their order (builder.go build: AUDIT, DENY, ALLOW).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthzPlan {
    pub rbac: Vec<RbacFilter>,
    /// `Kind namespace/name` of each policy that applies to the pod, with its place.
    pub applied: Vec<(String, Source)>,
}

impl AuthzPlan {
    /// The filters as Envoy JSON, in order.
    pub fn http_filters(&self) -> Vec<serde_json::Value> {
        self.rbac.iter().map(RbacFilter::json).collect()
    }

    /// What Envoy's RBAC filters decide for `r`; None when the pod has none.
    pub fn decide(&self, r: &rbac::Request) -> Option<Verdict> {
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
    if p.namespace != root_namespace && p.namespace != namespace {
        return false;
    }
    let spec = &p.spec.spec;
    let refs = spec.target_refs();
    let selected = || {
        spec.selector
            .as_ref()
            .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let Some(gateway) = labels.get(GATEWAY_NAME_LABEL) else {
        return refs.is_empty() && selected();
    };
    if refs.is_empty() {
        return selected();
    }
    refs.iter().any(|r| {
        p.namespace == namespace
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
    for p in policies.iter().filter(|p| p.spec.spec.action() == "CUSTOM") {
        warn(warnings, p, "action CUSTOM (ext_authz) is not modelled by meshcheck: the local target and the simulation do not apply it".into());
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
