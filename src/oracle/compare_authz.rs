//! A gateway's or sidecar's security filters (JWT, RBAC, CUSTOM's ext_authz: istio/authz/) against
//! istiod's: the model's envoy.filters.http.jwt_authn, envoy.filters.http.rbac and
//! envoy.filters.http.ext_authz filters, in order
//! and whole, must be the ones istiod puts into the same HttpConnectionManager (MC408).
//!
//! One part is left out, knowingly: the JWKS of a provider whose rule names a
//! `jwksUri`. istiod fetches it when it generates the config (jwks_resolver.go), so
//! what it inlines depends on the network at that moment (an oracle run offline writes
//! its fail-closed JWKS), while meshcheck never fetches (jwt.rs JwksSource); the
//! loader warns about every such rule. Everything else of those providers is compared.

use crate::istio::authz::jwt::{JwksSource, FILTER as JWT_FILTER};
use crate::istio::authz::AuthzPlan;
use serde_json::Value;

/// The names of the HTTP filters compared here.
const SECURITY_FILTERS: &[&str] = &[
    JWT_FILTER,
    "envoy.filters.http.rbac",
    crate::istio::authz::ext_authz::FILTER,
];

/// istiod's security filters of connection manager `hcm` (its typed_config), in its
/// order: a gateway's, or a sidecar's inbound one (what meshcheck's sidecars run under
/// `--control-plane istiod`).
pub fn theirs(hcm: &Value) -> Vec<Value> {
    hcm.get("http_filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| {
            f.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| SECURITY_FILTERS.contains(&n))
        })
        .cloned()
        .collect()
}

/// The first place two JSON values differ: (path, mine, theirs).
pub fn first_difference(
    mine: &Value,
    theirs: &Value,
    at: &str,
) -> Option<(String, String, String)> {
    match (mine, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                let here = format!("{at}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_difference(x, y, &here),
                    (x, y) => Some((here, shown(x), shown(y))),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{at}[{i}]"))),
        (a, b) if a == b => None,
        (a, b) => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "unset".to_string(), Value::to_string)
}

/// How the model's security filters differ from those in istiod's connection manager
/// `hcm`: (meshcheck's side, istiod's side), or None when they are the same.
pub fn difference(plan: &AuthzPlan, hcm: &Value) -> Option<(String, String)> {
    let mut mine = plan.http_filters();
    let mut theirs = theirs(hcm);
    // The JWKS istiod fetched (or failed to) for a jwksUri: not comparable (above).
    if let Some(j) = &plan.jwt {
        for p in j
            .providers
            .iter()
            .filter(|p| p.jwks_source != JwksSource::Inline)
        {
            for f in mine.iter_mut().chain(theirs.iter_mut()) {
                if f.get("name").and_then(Value::as_str) != Some(JWT_FILTER) {
                    continue;
                }
                if let Some(Value::Object(provider)) =
                    f.pointer_mut(&format!("/typed_config/providers/{}", p.name))
                {
                    provider.remove("local_jwks");
                }
            }
        }
    }
    if mine.len() != theirs.len() {
        let names = |fs: &[Value]| {
            fs.iter()
                .map(|f| {
                    match f.get("name").and_then(Value::as_str) {
                        Some(JWT_FILTER) => return "jwt_authn".to_string(),
                        Some(crate::istio::authz::ext_authz::FILTER) => {
                            return "ext_authz".to_string()
                        }
                        _ => {}
                    }
                    let action = f
                        .pointer("/typed_config/rules/action")
                        .and_then(Value::as_str)
                        .unwrap_or("ALLOW");
                    format!("rbac {action}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Some((
            format!("security filters [{}]", names(&mine)),
            format!("security filters [{}]", names(&theirs)),
        ));
    }
    mine.iter()
        .zip(&theirs)
        .enumerate()
        .find_map(|(i, (m, t))| {
            let what = match m.get("name").and_then(Value::as_str) {
                Some(JWT_FILTER) => "jwt_authn filter".to_string(),
                Some(crate::istio::authz::ext_authz::FILTER) => format!("ext_authz filter {i}"),
                _ => format!("security filter {i}"),
            };
            first_difference(m, t, &what)
        })
        .map(|(path, m, t)| (format!("{path} {m}"), format!("{path} {t}")))
}

/// The model's verdict as the comparison words it: `denied (policy)`, `allowed
/// (policy)`, `denied by the JWT filter (why)`.
pub fn verdict_words(v: &crate::istio::authz::Verdict) -> String {
    use crate::istio::authz::DeniedBy;
    match v.denied_by {
        Some(DeniedBy::Jwt) => format!("denied by the JWT filter ({})", v.why),
        Some(DeniedBy::ExtAuthz) => format!("denied by the ext_authz authorizer ({})", v.why),
        Some(DeniedBy::Rbac) | None => format!(
            "{} ({})",
            if v.denied_by.is_some() {
                "denied"
            } else {
                "allowed"
            },
            v.policy.as_deref().unwrap_or("no policy matched")
        ),
    }
}

/// How the model's verdict for a request differs from the oracle's (its evaluation
/// of istiod's RBAC filters): (meshcheck's side, istiod's side), or None.
pub fn verdict_difference(
    mine: Option<&crate::istio::authz::Verdict>,
    theirs: Option<&super::output::Authz>,
) -> Option<(String, String)> {
    use crate::istio::authz::DeniedBy;
    let show_mine = |v: Option<&crate::istio::authz::Verdict>| match v {
        None => "no security filter".to_string(),
        Some(v) => verdict_words(v),
    };
    let show_theirs = |a: Option<&super::output::Authz>| match a {
        None => "no security filter".to_string(),
        Some(a) if a.denied_by == "jwt" => format!("denied by the JWT filter ({})", a.why),
        Some(a) => format!(
            "{} ({})",
            if a.denied { "denied" } else { "allowed" },
            if a.policy.is_empty() {
                "no policy matched"
            } else {
                &a.policy
            }
        ),
    };
    let same = match (mine, theirs) {
        (None, None) => true,
        // The oracle does not ask an ext_authz authorizer (CUSTOM): its denial is not
        // compared (MC408 compares the filter itself).
        (Some(m), _) if m.denied_by == Some(DeniedBy::ExtAuthz) => true,
        (Some(m), None) if m.denied_by.is_none() && m.policy.is_none() => true,
        (Some(m), Some(t)) => match m.denied_by {
            // Refused by the JWT filter on both sides (Envoy's 401, or 403 for audiences:
            // the statuses are the oracle's; the model's messages are pinned to Envoy's).
            Some(DeniedBy::Jwt) => {
                t.denied && t.denied_by == "jwt" && m.why.contains(jwt_reason(&t.why))
            }
            _ => {
                t.denied_by != "jwt"
                    && m.denied_by.is_some() == t.denied
                    && m.policy.as_deref().unwrap_or("") == t.policy.as_str()
            }
        },
        _ => false,
    };
    (!same).then(|| (show_mine(mine), show_theirs(theirs)))
}

/// The status message of the oracle's JWT refusal (`JWT: 401 Jwt is expired`).
fn jwt_reason(why: &str) -> &str {
    why.strip_prefix("JWT: ")
        .and_then(|w| w.split_once(' '))
        .map_or(why, |(_, reason)| reason)
}

#[cfg(test)]
mod tests {
    use super::{first_difference, verdict_difference};
    use serde_json::json;

    #[test]
    fn the_first_differing_field_is_named_both_ways() {
        let a = json!({"rules": {"policies": {"p": {"x": 1}}}});
        let b = json!({"rules": {"policies": {"p": {"x": 2}}}});
        let d = first_difference(&a, &b, "f").unwrap();
        assert_eq!(d.0, "f.rules.policies.p.x");
        let c = json!({"rules": {"policies": {"p": {"x": 1}, "q": {}}}});
        assert_eq!(
            first_difference(&a, &c, "f").unwrap().0,
            "f.rules.policies.q"
        );
        assert!(first_difference(&a, &a, "f").is_none());
    }

    fn theirs(v: serde_json::Value) -> crate::oracle::output::Authz {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn jwt_refusals_agree_only_with_the_same_status() {
        use crate::istio::authz::{DeniedBy, Verdict};
        let expired = Verdict {
            denied_by: Some(DeniedBy::Jwt),
            policy: None,
            why: "JWT: Jwt is expired (rule 0): 401".into(),
        };
        let oracle_expired = theirs(json!({"filters": 1, "denied": true, "denied_by": "jwt",
            "status": 401, "why": "JWT: 401 Jwt is expired"}));
        assert!(verdict_difference(Some(&expired), Some(&oracle_expired)).is_none());
        // Another status, or the oracle letting the token through, is a difference.
        let oracle_bad_sig = theirs(json!({"filters": 1, "denied": true, "denied_by": "jwt",
            "status": 401, "why": "JWT: 401 Jwt verification fails"}));
        assert!(verdict_difference(Some(&expired), Some(&oracle_bad_sig)).is_some());
        let oracle_allowed = theirs(json!({"filters": 1, "denied": false,
            "policy": "ns[istio-ingress]-policy[p]-rule[0]", "why": "allowed"}));
        assert!(verdict_difference(Some(&expired), Some(&oracle_allowed)).is_some());
        // The model letting through what the oracle's JWT filter refuses.
        let allowed = Verdict {
            denied_by: None,
            policy: Some("ns[istio-ingress]-policy[p]-rule[0]".into()),
            why: String::new(),
        };
        let (mine, their) = verdict_difference(Some(&allowed), Some(&oracle_expired)).unwrap();
        assert!(mine.starts_with("allowed"), "{mine}");
        assert!(their.contains("Jwt is expired"), "{their}");
        // An RBAC denial is not a JWT one.
        let rbac = Verdict {
            denied_by: Some(DeniedBy::Rbac),
            policy: None,
            why: String::new(),
        };
        assert!(verdict_difference(Some(&rbac), Some(&oracle_expired)).is_some());
    }
}
