//! The sandbox cluster's certificates and kubeconfigs, made in process (rcgen) for
//! each sandbox: a cluster CA, the API server's serving certificate, one client
//! certificate per component (the identities Kubernetes' default RBAC binds:
//! `system:kube-controller-manager`, `system:kube-scheduler`, `system:kube-proxy`,
//! and an admin in `system:masters`), the service-account signing key, and a
//! kubeconfig per client.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create the sandbox's {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files a sandbox's components are started with.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// Kubeconfigs by client: `admin`, `controller-manager`, `scheduler`, `kube-proxy`.
    pub kubeconfigs: std::collections::BTreeMap<&'static str, PathBuf>,
}

impl Pki {
    pub fn kubeconfig(&self, client: &str) -> &Path {
        &self.kubeconfigs[client]
    }
}

/// The clients that get a kubeconfig: (name, CN, O).
const CLIENTS: &[(&str, &str, Option<&str>)] = &[
    ("admin", "meshcheck-admin", Some("system:masters")),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("kube-proxy", "system:kube-proxy", None),
];

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn write(path: &Path, data: &str) -> Result<(), PkiError> {
    std::fs::write(path, data).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn ca() -> Result<CertifiedIssuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::generate().map_err(gen_err("cluster CA"))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "meshcheck-sandbox-ca");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, key).map_err(gen_err("cluster CA"))
}

/// A leaf certificate and key signed by `issuer`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    what: &str,
    cn: &str,
    org: Option<&str>,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(gen_err(what))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).map_err(gen_err(what))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The API server's names: its loopback address, the first Service address
/// (`kubernetes.default`), and the in-cluster DNS names.
fn apiserver_sans(service_ip: IpAddr) -> Result<Vec<SanType>, PkiError> {
    let mut sans = vec![
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(service_ip),
    ];
    for d in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        sans.push(SanType::DnsName(
            d.to_string()
                .try_into()
                .map_err(gen_err("API server name"))?,
        ));
    }
    Ok(sans)
}

/// A kubeconfig for `server` with a client certificate, embedded.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: sandbox\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\ncurrent-context: sandbox\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem)
    )
}

/// Makes every file under `dir`; the API server answers at `server`.
pub fn create(dir: &Path, server: &str, service_ip: IpAddr) -> Result<Pki, PkiError> {
    let ca = ca()?;
    let ca_pem = ca.pem();
    let ca_cert = dir.join("ca.crt");
    write(&ca_cert, &ca_pem)?;
    let (cert, key) = leaf(
        &ca,
        "API server certificate",
        "kube-apiserver",
        None,
        apiserver_sans(service_ip)?,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (apiserver_cert, apiserver_key) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
    write(&apiserver_cert, &cert)?;
    write(&apiserver_key, &key)?;
    let sa = KeyPair::generate().map_err(gen_err("service-account key"))?;
    let (sa_key, sa_pub) = (dir.join("sa.key"), dir.join("sa.pub"));
    write(&sa_key, &sa.serialize_pem())?;
    write(&sa_pub, &sa.public_key_pem())?;
    let mut kubeconfigs = std::collections::BTreeMap::new();
    for (name, cn, org) in CLIENTS {
        let (cert, key) = leaf(
            &ca,
            &format!("{name} client certificate"),
            cn,
            *org,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let path = dir.join(format!("{name}.kubeconfig"));
        write(&path, &kubeconfig(server, &ca_pem, &cert, &key))?;
        kubeconfigs.insert(*name, path);
    }
    Ok(Pki {
        ca_cert,
        apiserver_cert,
        apiserver_key,
        sa_key,
        sa_pub,
        kubeconfigs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_gets_a_kubeconfig_for_the_server_with_its_own_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = create(
            dir.path(),
            "https://127.0.0.1:6443",
            "10.96.0.1".parse().unwrap(),
        )
        .unwrap();
        for client in ["admin", "controller-manager", "scheduler", "kube-proxy"] {
            let text = std::fs::read_to_string(pki.kubeconfig(client)).unwrap();
            assert!(text.contains("server: https://127.0.0.1:6443"), "{text}");
            let kc: ::kube::config::Kubeconfig = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(kc.current_context.as_deref(), Some("sandbox"));
        }
        let sa = std::fs::read_to_string(&pki.sa_pub).unwrap();
        assert!(sa.starts_with("-----BEGIN PUBLIC KEY-----"), "{sa}");
    }
}
