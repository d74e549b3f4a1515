//! The status istiod's controller wrote on a Gateway API object, read from the API
//! server (`status.conditions`, `status.listeners[].conditions` of a Gateway,
//! `status.parents[].conditions` of a route), as scoped conditions
//! (src/fixtures/gateway_api/status.rs).

use crate::fixtures::gateway_api::{Condition, ObjectStatus};
use serde_json::Value;

/// The plural of a Gateway API kind meshcheck reads the status of.
fn plural(kind: &str) -> Option<&'static str> {
    match kind {
        "Gateway" => Some("gateways"),
        "HTTPRoute" => Some("httproutes"),
        "GRPCRoute" => Some("grpcroutes"),
        "GatewayClass" => Some("gatewayclasses"),
        _ => None,
    }
}

/// `kind` `namespace`/`name`'s status (None: no such object). `unrename` maps a
/// namespace as named on the cluster back to the fixtures' (namespace prefix).
pub async fn read(
    client: &::kube::Client,
    kind: &str,
    namespace: &str,
    name: &str,
    unrename: impl Fn(&str) -> String,
) -> Result<Option<ObjectStatus>, String> {
    let Some(plural) = plural(kind) else {
        return Err(format!(
            "{kind} is not a Gateway API kind meshcheck reads the status of"
        ));
    };
    let gvk = ::kube::core::GroupVersionKind::gvk(crate::fixtures::gateway_api::GROUP, "v1", kind);
    let ar = ::kube::core::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: ::kube::Api<::kube::core::DynamicObject> =
        ::kube::Api::namespaced_with(client.clone(), namespace, &ar);
    let obj = api.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(obj.map(|o| {
        let status = o.data.get("status").cloned().unwrap_or(Value::Null);
        ObjectStatus {
            object: crate::fixtures::describe(kind, &unrename(namespace), name),
            kind: kind.to_string(),
            namespace: unrename(namespace),
            name: name.to_string(),
            source: Default::default(),
            conditions: scoped_conditions(&status, &unrename(namespace), &unrename),
        }
    }))
}

fn conditions_of(v: &Value, scope: &str) -> Vec<Condition> {
    v.get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Condition::new(
                scope,
                &text("type"),
                text("status") == "True",
                &text("reason"),
                text("message"),
            )
        })
        .collect()
}

/// Every condition of `status`, scoped as the model scopes them.
pub fn scoped_conditions(
    status: &Value,
    namespace: &str,
    unrename: &impl Fn(&str) -> String,
) -> Vec<Condition> {
    let mut out = conditions_of(status, "");
    for l in status
        .get("listeners")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = l.get("name").and_then(Value::as_str).unwrap_or("");
        out.extend(conditions_of(l, &format!("listener {name}")));
    }
    for p in status
        .get("parents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = p.get("parentRef").cloned().unwrap_or(Value::Null);
        let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        let ns = text("namespace")
            .map(|n| unrename(&n))
            .unwrap_or_else(|| namespace.to_string());
        let mut scope = format!(
            "{} {ns}/{}",
            text("kind").unwrap_or_else(|| "Gateway".into()),
            text("name").unwrap_or_default()
        );
        if let Some(s) = text("sectionName") {
            scope.push_str(&format!(" listener {s}"));
        }
        out.extend(conditions_of(p, &scope));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_listeners_are_scoped_as_the_model_scopes_them() {
        let status = serde_json::json!({
            "parents": [{
                "parentRef": {"name": "gw", "namespace": "p-istio-ingress", "sectionName": "http"},
                "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners"}],
            }],
            "listeners": [{"name": "http", "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]}],
        });
        let unrename = |n: &str| n.trim_start_matches("p-").to_string();
        let c = scoped_conditions(&status, "atlas", &unrename);
        assert_eq!(c[0].scope, "listener http");
        assert!(c[0].status);
        assert_eq!(c[1].scope, "Gateway istio-ingress/gw listener http");
        assert_eq!(
            (c[1].status, c[1].reason.as_str()),
            (false, "NotAllowedByListeners")
        );
    }
}
