//! DestinationRules that originate TLS (`SIMPLE` or `MUTUAL`) without a CA to verify
//! the server's certificate: Envoy accepts any certificate the server presents.
//!
//! istioctl: pkg/config/analysis/analyzers/destinationrule/ca-certificates.go (1.30.3)
//! CaCertificateAnalyzer.analyzeDestinationRule: no `caCertificates`, unless a
//! `credentialName` together with a `workloadSelector` (IST0128
//! NoServerCertificateVerificationDestinationLevel, IST0129 ...PortLevel).

use super::{Ctx, Severity};
use serde_json::Value;

/// The mode of `tls` when it originates TLS without verifying the server, else None.
fn unverified(tls: Option<&Value>, selected: bool) -> Option<&str> {
    let tls = tls?;
    let mode = tls.get("mode").and_then(Value::as_str)?;
    if mode != "SIMPLE" && mode != "MUTUAL" {
        return None;
    }
    let text = |k: &str| tls.get(k).and_then(Value::as_str).unwrap_or("");
    let verified =
        !text("caCertificates").is_empty() || (!text("credentialName").is_empty() && selected);
    (!verified).then_some(mode)
}

pub(super) fn upstream_tls(c: &mut Ctx) {
    let fx = c.fx;
    for dr in &fx.destination_rules {
        let Some(raw) = fx
            .objects
            .iter()
            .find(|o| o.kind == dr.kind && o.namespace == dr.namespace && o.name == dr.name)
            .map(|o| &o.raw)
        else {
            continue;
        };
        let spec = raw.get("spec");
        let selected = spec
            .and_then(|s| s.get("workloadSelector"))
            .is_some_and(|w| !w.is_null());
        let policy = spec.and_then(|s| s.get("trafficPolicy"));
        let host = &dr.spec.spec.host;
        let istio = "Envoy originates TLS without verifying the server's certificate: any server, or a man in the middle, is accepted";
        if let Some(mode) = unverified(policy.and_then(|p| p.get("tls")), selected) {
            c.push(
                "mtls",
                Severity::Warning,
                "MC125",
                Some("IST0128 NoServerCertificateVerificationDestinationLevel"),
                dr.describe(),
                &dr.source,
                format!("trafficPolicy.tls.mode {mode} toward {host} without caCertificates"),
                istio,
            );
        }
        let ports = policy
            .and_then(|p| p.get("portLevelSettings"))
            .and_then(Value::as_array);
        for (i, p) in ports.into_iter().flatten().enumerate() {
            let Some(mode) = unverified(p.get("tls"), selected) else {
                continue;
            };
            let port = p
                .get("port")
                .and_then(|x| x.get("number"))
                .and_then(Value::as_u64)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into());
            c.push(
                "mtls",
                Severity::Warning,
                "MC126",
                Some("IST0129 NoServerCertificateVerificationPortLevel"),
                dr.describe(),
                &dr.source,
                format!("trafficPolicy.portLevelSettings[{i}] (port {port}) tls.mode {mode} toward {host} without caCertificates"),
                istio,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_originated_tls_without_a_ca_is_unverified() {
        assert_eq!(
            unverified(Some(&json!({"mode": "SIMPLE"})), false),
            Some("SIMPLE")
        );
        assert_eq!(
            unverified(Some(&json!({"mode": "MUTUAL"})), true),
            Some("MUTUAL")
        );
        assert_eq!(
            unverified(Some(&json!({"mode": "ISTIO_MUTUAL"})), false),
            None
        );
        assert_eq!(
            unverified(
                Some(&json!({"mode": "SIMPLE", "caCertificates": "/ca.pem"})),
                false
            ),
            None
        );
        assert_eq!(
            unverified(
                Some(&json!({"mode": "SIMPLE", "credentialName": "c"})),
                false
            ),
            Some("SIMPLE")
        );
        assert_eq!(
            unverified(
                Some(&json!({"mode": "SIMPLE", "credentialName": "c"})),
                true
            ),
            None
        );
        assert_eq!(unverified(None, false), None);
    }
}
