//! What a Gateway server's `credentialName` Secret holds, judged as istiod and Envoy
//! judge it: the certificate and key are there and not empty, the certificate parses
//! and is valid now, the key parses and matches the certificate, and a MUTUAL server
//! has a CA certificate that parses and is valid.
//!
//! Sources (1.30.3): pilot/pkg/credentials/kube/secrets.go ExtractCertInfo (`cert`/`key`
//! first, then `tls.crt`/`tls.key`, each pair present and non-empty), ExtractRoot
//! (`cacert`, then `ca.crt`) and GetCaCert (the `<name>-cacert` Secret, else `<name>`);
//! pilot/pkg/xds/sds.go ValidateCertificate (the certificates of the first PEM block
//! parse and `NotBefore <= now <= NotAfter`), which istioctl's gateway.SecretAnalyzer
//! (pkg/config/analysis/analyzers/gateway/secret.go isValidSecret) reports as IST0161.
//! A key that does not match its certificate passes istioctl; Envoy refuses the SDS
//! secret (its TLS context fails to load), so the handshake fails all the same.

use crate::fixtures::k8s::Secret;
use base64::Engine;
use serde_json::Value;

/// A problem with a credential; `istioctl` says whether istioctl analyze reports it
/// (IST0161).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub istioctl: bool,
}

fn problem(message: String, istioctl: bool) -> Problem {
    Problem { message, istioctl }
}

/// The bytes of key `k` (`data` is base64, `stringData` plain text); None when absent
/// or not decodable.
fn value(s: &Secret, k: &str) -> Option<Vec<u8>> {
    if let Some(Value::String(v)) = s.string_data.get(k) {
        return Some(v.as_bytes().to_vec());
    }
    match s.data.get(k) {
        Some(Value::String(v)) => base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok(),
        _ => None,
    }
}

fn has_key(s: &Secret, k: &str) -> bool {
    s.has_key(k)
}

/// A certificate and its private key as a Secret holds them, with their key names.
struct CertInfo {
    cert_key: &'static str,
    cert: Vec<u8>,
    key_key: &'static str,
    key: Vec<u8>,
}

/// ExtractCertInfo: the first pair present and not empty.
fn cert_info(s: &Secret) -> Result<CertInfo, String> {
    for (ck, kk) in [("cert", "key"), ("tls.crt", "tls.key")] {
        match (value(s, ck), value(s, kk)) {
            (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
                return Ok(CertInfo {
                    cert_key: ck,
                    cert: c,
                    key_key: kk,
                    key: k,
                })
            }
            _ if has_key(s, ck) && has_key(s, kk) => {
                return Err(format!(
                    "found keys {ck} and {kk}, but they were empty (or not base64)"
                ))
            }
            _ => {}
        }
    }
    Err("has neither tls.crt/tls.key nor cert/key".into())
}

/// ExtractRoot: the CA certificate (key name, bytes), or None.
fn root(s: &Secret) -> Option<(&'static str, Vec<u8>)> {
    ["cacert", "ca.crt"]
        .into_iter()
        .find_map(|k| value(s, k).filter(|v| !v.is_empty()).map(|v| (k, v)))
}

/// ValidateCertificate: the certificates of the first PEM block, checked at `now`
/// (seconds since the epoch). Returns the first one's DER.
fn validate_certificate(pem: &[u8], what: &str, now: i64) -> Result<Vec<u8>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| format!("{what} holds no PEM block (pem decode failed)"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| format!("{what} does not parse as an X.509 certificate ({e})"))?;
    let v = cert.validity();
    if now > v.not_after.timestamp() {
        return Err(format!(
            "the certificate in {what} expired on {}",
            v.not_after
        ));
    }
    if now < v.not_before.timestamp() {
        return Err(format!(
            "the certificate in {what} is not valid before {}",
            v.not_before
        ));
    }
    Ok(block.contents)
}

/// Whether the private key parses and matches the certificate (rustls compares the
/// key's SubjectPublicKeyInfo with the certificate's, as Envoy's TLS context loading
/// refuses a mismatch).
fn key_matches(cert_der: Vec<u8>, key_pem: &[u8], what: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| format!("{what} holds no PEM private key"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{what} is not a usable private key ({e})"))?;
    let ck = rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der)], signing);
    match ck.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err(format!(
            "the private key in {what} does not match the certificate's public key"
        )),
    }
}

/// Every problem of the Secret `s` for a server with TLS `mode`; `ca_secret` is the
/// `<name>-cacert` Secret when the fixtures hold one. `now`: seconds since the epoch.
pub fn problems(
    s: &Secret,
    ca_secret: Option<&Secret>,
    mode: Option<&str>,
    now: i64,
) -> Vec<Problem> {
    let mut out = Vec::new();
    match cert_info(s) {
        Err(e) => out.push(problem(e, true)),
        Ok(ci) => match validate_certificate(&ci.cert, ci.cert_key, now) {
            Err(e) => out.push(problem(e, true)),
            Ok(der) => out.extend(
                key_matches(der, &ci.key, ci.key_key)
                    .err()
                    .map(|e| problem(e, false)),
            ),
        },
    }
    if mode.is_some_and(|m| m.eq_ignore_ascii_case("MUTUAL")) {
        let (holder, ca) = match ca_secret {
            Some(c) => ("the -cacert Secret", root(c)),
            None => ("the Secret", root(s)),
        };
        match ca {
            None => out.push(problem(
                format!("tls.mode MUTUAL needs a CA certificate (cacert or ca.crt) and {holder} has none: istiod sends no validation context, the handshake fails"),
                false,
            )),
            Some((k, pem)) => {
                out.extend(validate_certificate(&pem, k, now).err().map(|e| problem(e, false)))
            }
        }
    }
    out
}

/// Seconds since the epoch now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["example.com".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let c = p.self_signed(&key).unwrap();
        (c.pem(), key.serialize_pem())
    }

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let b64 = base64::engine::general_purpose::STANDARD;
        Secret {
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(b64.encode(v))))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    const NOW_2026: i64 = 1_780_000_000; // 2026-05-28

    #[test]
    fn a_valid_matching_pair_has_no_problem() {
        let (c, k) = cert((2025, 1, 1), (2030, 1, 1));
        assert!(problems(
            &secret(&[("tls.crt", &c), ("tls.key", &k)]),
            None,
            None,
            NOW_2026
        )
        .is_empty());
        assert!(problems(
            &secret(&[("cert", &c), ("key", &k)]),
            None,
            Some("SIMPLE"),
            NOW_2026
        )
        .is_empty());
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_ist0161() {
        let (c, k) = cert((2020, 1, 1), (2021, 1, 1));
        let p = problems(
            &secret(&[("tls.crt", &c), ("tls.key", &k)]),
            None,
            None,
            NOW_2026,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].istioctl && p[0].message.contains("expired on"),
            "{p:?}"
        );
        let (c, k) = cert((2029, 1, 1), (2030, 1, 1));
        let p = problems(
            &secret(&[("tls.crt", &c), ("tls.key", &k)]),
            None,
            None,
            NOW_2026,
        );
        assert!(p[0].message.contains("not valid before"), "{p:?}");
    }

    #[test]
    fn a_key_of_another_certificate_does_not_match() {
        let (c, _) = cert((2025, 1, 1), (2030, 1, 1));
        let (_, other) = cert((2025, 1, 1), (2030, 1, 1));
        let p = problems(
            &secret(&[("tls.crt", &c), ("tls.key", &other)]),
            None,
            None,
            NOW_2026,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            !p[0].istioctl && p[0].message.contains("does not match"),
            "{p:?}"
        );
    }

    #[test]
    fn garbage_and_empty_values_are_ist0161() {
        let (_, k) = cert((2025, 1, 1), (2030, 1, 1));
        let p = problems(
            &secret(&[("tls.crt", "not a cert"), ("tls.key", &k)]),
            None,
            None,
            NOW_2026,
        );
        assert!(
            p[0].istioctl && p[0].message.contains("no PEM block"),
            "{p:?}"
        );
        let p = problems(
            &secret(&[("tls.crt", ""), ("tls.key", "")]),
            None,
            None,
            NOW_2026,
        );
        assert!(p[0].message.contains("but they were empty"), "{p:?}");
        let p = problems(&secret(&[("ca.crt", "x")]), None, None, NOW_2026);
        assert!(p[0].message.contains("has neither"), "{p:?}");
    }

    #[test]
    fn mutual_needs_a_valid_ca_in_the_secret_or_its_cacert_secret() {
        let (c, k) = cert((2025, 1, 1), (2030, 1, 1));
        let (ca, _) = cert((2025, 1, 1), (2030, 1, 1));
        let plain = secret(&[("tls.crt", &c), ("tls.key", &k)]);
        let p = problems(&plain, None, Some("MUTUAL"), NOW_2026);
        assert!(p.len() == 1 && p[0].message.contains("needs a CA"), "{p:?}");
        let with_ca = secret(&[("tls.crt", &c), ("tls.key", &k), ("ca.crt", &ca)]);
        assert!(problems(&with_ca, None, Some("MUTUAL"), NOW_2026).is_empty());
        let ca_secret = secret(&[("cacert", &ca)]);
        assert!(problems(&plain, Some(&ca_secret), Some("MUTUAL"), NOW_2026).is_empty());
        let (old_ca, _) = cert((2020, 1, 1), (2021, 1, 1));
        let p = problems(
            &plain,
            Some(&secret(&[("cacert", &old_ca)])),
            Some("MUTUAL"),
            NOW_2026,
        );
        assert!(
            p.len() == 1 && p[0].message.contains("cacert expired"),
            "{p:?}"
        );
    }
}
