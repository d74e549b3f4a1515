//! Installing Istio into the sandbox with the release's own istioctl: `istioctl
//! install` (or `upgrade`) with the arguments the kind target uses (profile minimal,
//! src/targets/kind/config.rs), plus an IstioOperator overlay that says where the
//! revision's istiod is reached (its webhooks by URL: chart values
//! `istiodRemote.injectionURL` and `base.validationURL`; the proxies' discovery
//! address) and leaves out the telemetry filter upstream Envoy lacks
//! (`defaultProviders.metrics`: no Prometheus stats filter, `istio.stats`).

use super::istiod::Ports;
use crate::targets::cluster::{file_args, run_tool, Step};
use crate::targets::kind::config::{istioctl_install_args, IstioInstall};
use crate::targets::TargetError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `istioctl install` may take (it waits for istiod's Deployment).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The IstioOperator overlay for a revision served at `ports`.
pub fn overlay(ports: &Ports) -> String {
    format!(
        "apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    defaultConfig:
      discoveryAddress: {discovery}
    defaultProviders:
      metrics: []
  values:
    global:
      caAddress: {discovery}
    istiodRemote:
      injectionURL: {inject}
    base:
      validationURL: {validate}
",
        discovery = ports.discovery_address(),
        inject = ports.injection_url(),
        validate = ports.validation_url(),
    )
}

/// `istioctl <verb> ... -f overlay...`: `install` (a revision when `revision` is set) or
/// `upgrade` (in place); istioctl merges the files in order.
pub fn args(
    verb: &str,
    kubeconfig: &Path,
    revision: Option<&str>,
    overlay_files: &[PathBuf],
) -> Vec<String> {
    let mut a = istioctl_install_args(&IstioInstall {
        version: String::new(),
        revision: revision.map(str::to_string),
        kubeconfig: kubeconfig.display().to_string(),
        context: None,
    });
    a[0] = verb.to_string();
    a.extend(file_args(overlay_files));
    a
}

/// Writes the overlay for `rev` under `dir`.
pub fn write_overlay(dir: &Path, rev: &str, ports: &Ports) -> Result<PathBuf, TargetError> {
    let path = dir.join(format!("istio-{rev}.yaml"));
    std::fs::write(&path, overlay(ports)).map_err(|source| TargetError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// Runs `istioctl install` for revision `rev` (`default`: no `--revision`).
pub async fn install(
    istioctl: &Path,
    release: &str,
    kubeconfig: &Path,
    rev: &str,
    overlay_files: &[PathBuf],
) -> Result<String, TargetError> {
    let revision = (rev != "default").then_some(rev);
    let step = Step::start(format!(
        "sandbox: istioctl install (Istio {release}, revision {rev})"
    ));
    let out = run_tool(
        istioctl,
        &args("install", kubeconfig, revision, overlay_files),
        INSTALL_TIMEOUT,
        &format!("istioctl install (Istio {release})"),
    )
    .await?;
    step.done();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_points_webhooks_and_proxies_at_the_revisions_istiod() {
        let o = overlay(&Ports::block(1));
        assert!(o.contains("discoveryAddress: 10.244.0.1:15112"), "{o}");
        assert!(
            o.contains("injectionURL: https://127.0.0.1:15117/inject"),
            "{o}"
        );
        assert!(
            o.contains("validationURL: https://127.0.0.1:15117/validate"),
            "{o}"
        );
        let a = args(
            "install",
            Path::new("/k"),
            Some("1-31-0"),
            &[PathBuf::from("/mesh.yaml"), PathBuf::from("/o.yaml")],
        );
        assert_eq!(a[0], "install");
        assert!(a.windows(2).any(|w| w == ["--revision", "1-31-0"]), "{a:?}");
        // The fixtures' mesh config first, the revision's own overlay last (it wins).
        let files: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "-f")
            .map(|w| &w[1])
            .collect();
        assert_eq!(files, ["/mesh.yaml", "/o.yaml"], "{a:?}");
        assert!(
            a.windows(2).any(|w| w == ["--set", "profile=minimal"]),
            "{a:?}"
        );
    }
}
