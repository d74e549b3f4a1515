//! Per-run certificates for the local target: a mesh root CA and one workload
//! certificate per service account with the SPIFFE URI SAN Istio's CA issues
//! (`spiffe://cluster.local/ns/NS/sa/SA`). Made in-process with rcgen; nothing is
//! reused between runs.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot create certificate for {what}: {source}")]
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

/// Files of one workload identity.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct MeshCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub root_file: PathBuf,
    dir: PathBuf,
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        what: what.to_string(),
        source,
    }
}

fn write(path: &Path, data: &str) -> Result<(), CertError> {
    std::fs::write(path, data).map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl MeshCa {
    /// A new root CA; its certificate is written to `dir/root-cert.pem`.
    pub fn new(dir: &Path) -> Result<MeshCa, CertError> {
        let key = KeyPair::generate().map_err(gen_err("the mesh root CA"))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(gen_err("the mesh root CA"))?;
        let root_file = dir.join("root-cert.pem");
        write(&root_file, &issuer.pem())?;
        Ok(MeshCa {
            issuer,
            root_file,
            dir: dir.to_path_buf(),
        })
    }

    /// A workload certificate for `spiffe_id` (and DNS names, for gateway servers).
    pub fn issue(
        &self,
        file_stem: &str,
        spiffe_id: Option<&str>,
        dns: &[String],
    ) -> Result<CertFiles, CertError> {
        let what = spiffe_id.unwrap_or(file_stem).to_string();
        let key = KeyPair::generate().map_err(gen_err(&what))?;
        let mut params = CertificateParams::default();
        // Istio's workload certificates have an empty subject; the identity is the SAN.
        params.distinguished_name = rcgen::DistinguishedName::new();
        if spiffe_id.is_none() {
            // A gateway server certificate: Envoy wants a CN or a SAN.
            params
                .distinguished_name
                .push(DnType::CommonName, file_stem);
        }
        if let Some(id) = spiffe_id {
            let uri = id.to_string().try_into().map_err(gen_err(&what))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for d in dns {
            let name = d.clone().try_into().map_err(gen_err(&what))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(gen_err(&what))?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}
