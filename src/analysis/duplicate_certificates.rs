//! Gateways whose TLS servers serve the same certificate to the same workloads: a
//! client may reuse an HTTP/2 connection opened for one server's host for the other's
//! (the certificate covers both), and the gateway answers 404 (envoyproxy/envoy#6767).
//!
//! istioctl: pkg/config/analysis/analyzers/gateway/certificate.go (1.30.3)
//! CertificateAnalyzer.analyzeDuplicateCertificate, getGatewaysWithSelector,
//! selectorSubset and haveSameCertificate (IST0138 GatewayDuplicateCertificate), with
//! PILOT_SCOPE_GATEWAY_TO_NAMESPACE at its default (off).

use super::{Ctx, Severity};
use crate::fixtures::k8s::Labels;
use serde_json::Value;

/// A Gateway server's certificate as written: credentialName, or the file pair.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cert {
    credential_name: String,
    server_certificate: String,
    private_key: String,
}

fn field(tls: &Value, name: &str) -> String {
    tls.get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The certificates of the TLS servers of a Gateway as written.
fn certs(raw: &Value) -> Vec<Cert> {
    raw.get("spec")
        .and_then(|s| s.get("servers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("tls").filter(|t| t.is_object()))
        .map(|t| Cert {
            credential_name: field(t, "credentialName"),
            server_certificate: field(t, "serverCertificate"),
            private_key: field(t, "privateKey"),
        })
        .collect()
}

/// haveSameCertificate: both credentialNames set and equal; or neither set and the
/// same serverCertificate and privateKey files (both set).
fn same_certificate(a: &Cert, b: &Cert) -> bool {
    match (a.credential_name.is_empty(), b.credential_name.is_empty()) {
        (false, false) => a.credential_name == b.credential_name,
        (true, true) => {
            !a.server_certificate.is_empty()
                && a.server_certificate == b.server_certificate
                && !a.private_key.is_empty()
                && a.private_key == b.private_key
        }
        _ => false,
    }
}

/// selectorSubset: every label of `x` is in `y` with the same value. An empty `x`
/// selects every Gateway (getGatewaysWithSelector).
fn selector_subset(x: &Labels, y: &Labels) -> bool {
    x.iter().all(|(k, v)| y.get(k) == Some(v))
}

pub(super) fn duplicate_certificates(c: &mut Ctx) {
    let fx = c.fx;
    let raw = |ns: &str, name: &str| {
        fx.objects
            .iter()
            .find(|o| {
                o.kind == "Gateway"
                    && o.api_version.starts_with("networking.istio.io/")
                    && o.namespace == ns
                    && o.name == name
            })
            .map(|o| certs(&o.raw))
            .unwrap_or_default()
    };
    let gateways: Vec<_> = fx
        .gateways
        .iter()
        .map(|g| (g, raw(&g.namespace, &g.name)))
        .collect();
    for (g, mine) in &gateways {
        for (other, theirs) in &gateways {
            let itself = other.namespace == g.namespace && other.name == g.name;
            if itself || !selector_subset(&g.spec.spec.selector, &other.spec.spec.selector) {
                continue;
            }
            let shared: Vec<&Cert> = mine
                .iter()
                .filter(|a| theirs.iter().any(|b| same_certificate(a, b)))
                .collect();
            let Some(cert) = shared.first() else { continue };
            let which = if cert.credential_name.is_empty() {
                format!("serverCertificate {}", cert.server_certificate)
            } else {
                format!("credentialName {}", cert.credential_name)
            };
            c.push(
                "gateway-credentials",
                Severity::Warning,
                "MC133",
                Some("IST0138 GatewayDuplicateCertificate"),
                g.describe(),
                &g.source,
                format!("serves the same certificate ({which}) as {}, to the same gateway workloads", other.describe()),
                "a client may reuse an HTTP/2 connection opened for one Gateway's host for the other's (the certificate covers both): the gateway answers 404 (envoyproxy/envoy#6767)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, file: &str, key: &str) -> Cert {
        Cert {
            credential_name: cn.into(),
            server_certificate: file.into(),
            private_key: key.into(),
        }
    }

    #[test]
    fn same_certificate_as_istioctl_compares_them() {
        assert!(same_certificate(&cert("a", "", ""), &cert("a", "", "")));
        assert!(!same_certificate(&cert("a", "", ""), &cert("b", "", "")));
        assert!(!same_certificate(&cert("a", "f", "k"), &cert("", "f", "k")));
        assert!(same_certificate(&cert("", "f", "k"), &cert("", "f", "k")));
        assert!(!same_certificate(&cert("", "f", ""), &cert("", "f", "")));
        assert!(!same_certificate(&cert("", "f", "k"), &cert("", "f", "k2")));
    }

    #[test]
    fn a_selector_is_a_subset_when_the_other_has_all_its_labels() {
        let l = |p: &[(&str, &str)]| -> Labels {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_subset(&l(&[]), &l(&[("a", "1")])));
        assert!(selector_subset(
            &l(&[("a", "1")]),
            &l(&[("a", "1"), ("b", "2")])
        ));
        assert!(!selector_subset(
            &l(&[("a", "1"), ("b", "2")]),
            &l(&[("a", "1")])
        ));
        assert!(!selector_subset(&l(&[("a", "1")]), &l(&[("a", "2")])));
    }
}
