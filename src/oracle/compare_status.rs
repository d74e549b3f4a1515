//! The Gateway API conditions the model computes (src/fixtures/gateway_api/status.rs)
//! against those istiod's own controller writes (the oracle's `statuses`): per
//! Gateway its Accepted and Programmed and each listener's conditions, per HTTPRoute
//! each parent's Accepted and ResolvedRefs; status and reason must agree (MC407).

use super::output::{Condition, Output};
use crate::fixtures::gateway_api::ObjectStatus;
use crate::fixtures::Fixtures;

/// (scope, type, status, reason) of a condition, as both sides are compared.
type Seen = (String, String, bool, String);

fn oracle_seen(o: &super::output::ObjectStatus) -> Vec<Seen> {
    let view = |scope: &str, c: &Condition| {
        (
            scope.to_string(),
            c.type_.clone(),
            c.status == "True",
            c.reason.clone(),
        )
    };
    let mut out: Vec<Seen> = o.conditions.iter().map(|c| view("", c)).collect();
    for l in &o.listeners {
        let scope = format!("listener {}", l.name);
        out.extend(l.conditions.iter().map(|c| view(&scope, c)));
    }
    for p in &o.parents {
        let (_, rest) = p.parent.split_once('/').unwrap_or(("", &p.parent));
        let gw = format!("Gateway {rest}");
        let scope = if p.section_name.is_empty() {
            gw
        } else {
            format!("{gw} listener {}", p.section_name)
        };
        out.extend(p.conditions.iter().map(|c| view(&scope, c)));
    }
    out
}

fn model_seen(s: &ObjectStatus) -> Vec<Seen> {
    s.conditions
        .iter()
        .map(|c| (c.scope.clone(), c.type_.clone(), c.status, c.reason.clone()))
        .collect()
}

/// The types compared: what the model computes for each kind.
fn compared(kind: &str, scope: &str, type_: &str) -> bool {
    match kind {
        "HTTPRoute" => matches!(type_, "Accepted" | "ResolvedRefs"),
        _ if scope.is_empty() => matches!(type_, "Accepted" | "Programmed"),
        _ => matches!(
            type_,
            "Accepted" | "Programmed" | "ResolvedRefs" | "Conflicted"
        ),
    }
}

fn show(v: &[Seen]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|(scope, t, s, r)| {
            let s = if *s { "True" } else { "False" };
            if scope.is_empty() {
                format!("{t}={s} ({r})")
            } else {
                format!("{scope}: {t}={s} ({r})")
            }
        })
        .collect();
    parts.join("; ")
}

/// (object, source, meshcheck's view, istiod's view) for every object whose
/// compared conditions differ.
pub fn differences(
    fx: &Fixtures,
    o: &Output,
) -> Vec<(String, crate::fixtures::Source, String, String)> {
    let mut out = Vec::new();
    for s in &fx.gateway_api.statuses {
        let key = format!("{}/{}/{}", s.kind, s.namespace, s.name);
        let mut mine: Vec<Seen> = model_seen(s)
            .into_iter()
            .filter(|(sc, t, _, _)| compared(&s.kind, sc, t))
            .collect();
        let mut theirs: Vec<Seen> = o
            .status_of(&key)
            .map(oracle_seen)
            .unwrap_or_default()
            .into_iter()
            .filter(|(sc, t, _, _)| compared(&s.kind, sc, t))
            .collect();
        mine.sort();
        theirs.sort();
        if mine != theirs {
            out.push((
                s.object.clone(),
                s.source.clone(),
                show(&mine),
                show(&theirs),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(reason: &str, status: &str) -> Output {
        serde_json::from_value(serde_json::json!({
            "istio": {"release": "1.30.3", "module": "m"},
            "rejected": [], "warnings": [], "gateways": [], "simulations": [],
            "statuses": [{
                "object": "HTTPRoute/web/r",
                "parents": [{"parent": "Gateway/web/gw", "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted"},
                    {"type": "ResolvedRefs", "status": status, "reason": reason},
                ]}],
            }],
        }))
        .unwrap()
    }

    fn fixtures() -> Fixtures {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: web}\nspec:\n  gatewayClassName: istio\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: web}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: nope, port: 80}]}]\n",
        )
        .unwrap();
        crate::fixtures::load_dir(d.path()).unwrap()
    }

    #[test]
    fn equal_conditions_are_no_difference_and_another_reason_is_one() {
        let fx = fixtures();
        let route_diffs = |o: &Output| {
            differences(&fx, o)
                .into_iter()
                .filter(|(obj, ..)| obj == "HTTPRoute web/r")
                .count()
        };
        assert_eq!(route_diffs(&output("BackendNotFound", "False")), 0);
        assert_eq!(route_diffs(&output("ResolvedRefs", "True")), 1);
        assert_eq!(route_diffs(&output("RefNotPermitted", "False")), 1);
    }
}
