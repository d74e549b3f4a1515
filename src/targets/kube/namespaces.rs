//! The state of the namespaces a run applies into.

use super::KubeError;
use ::kube::api::Api;
use ::kube::Client;
use k8s_openapi::api::core::v1::Namespace;

/// Why applying into `namespaces` cannot work, if one of them is being deleted
/// (`status.phase: Terminating`): the API server refuses to create anything in it
/// ("unable to create new content in namespace ... because it is being terminated"),
/// and what the namespace still holds disappears under the run.
pub async fn terminating_namespace(
    client: &Client,
    namespaces: &[String],
) -> Result<Option<String>, KubeError> {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let live = api
            .get_opt(ns)
            .await
            .map_err(|e| KubeError::from_kube(e, "look up", &format!("Namespace {ns}"), None))?;
        if let Some(why) = live.as_ref().and_then(terminating) {
            return Ok(Some(format!(
                "Namespace {ns} is being deleted ({why}): wait until it is gone, or pass \
                 --namespace-prefix to run in namespaces of its own"
            )));
        }
    }
    Ok(None)
}

/// How a Terminating namespace is being deleted: since when, and what holds it.
fn terminating(ns: &Namespace) -> Option<String> {
    let status = ns.status.as_ref()?;
    if status.phase.as_deref() != Some("Terminating") {
        return None;
    }
    let since = ns
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| format!("Terminating since {}", t.0))
        .unwrap_or_else(|| "Terminating".into());
    let held: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status == "True" && c.message.is_some())
        .filter_map(|c| c.message.clone())
        .collect();
    Some(if held.is_empty() {
        since
    } else {
        format!("{since}; {}", held.join("; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_terminating_namespace_is_named_with_what_holds_it() {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": "atlas", "deletionTimestamp": "2026-12-07T12:00:00Z"},
            "status": {"phase": "Terminating", "conditions": [
                {"type": "NamespaceFinalizersRemaining", "status": "True",
                 "message": "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"},
                {"type": "NamespaceDeletionDiscoveryFailure", "status": "False", "message": "All resources successfully discovered"}]}
        }))
        .unwrap();
        let why = terminating(&ns).expect("terminating");
        assert!(
            why.starts_with("Terminating since 2026-12-07T12:00:00Z"),
            "{why}"
        );
        assert!(
            why.contains("example.com/hold") && !why.contains("successfully"),
            "{why}"
        );
        let active: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "atlas"}, "status": {"phase": "Active"}}),
        )
        .unwrap();
        assert_eq!(terminating(&active), None);
    }
}
