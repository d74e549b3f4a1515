//! The sandbox's programs, all built from Go modules by the project's scripts and
//! cached (never a container image): Kubernetes (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kube-proxy) with kwok by
//! `scripts/kube-build.sh`, and per Istio release pilot-discovery, istioctl and
//! pilot-agent (with the oracle, one Go build) by `scripts/istio-build.sh`.

use crate::targets::cluster::Step;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long building one part may take (a cold Kubernetes or Istio build is 15-20
/// minutes on 2 cores; the scripts stop at their own MESHCHECK_BUILD_TIMEOUT first).
const BUILD_TIMEOUT: Duration = Duration::from_secs(75 * 60);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("Go is not installed: the sandbox target builds Kubernetes, kwok and Istio from their Go modules (Go >= 1.26; see README \"The sandbox target\")")]
    NoGo,
    #[error("{script} failed ({why}); its output is above")]
    Failed { script: String, why: String },
    #[error("{0}")]
    UnknownVersion(String),
}

impl BuildError {
    /// A version the scripts do not know is the user's input.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, BuildError::UnknownVersion(_))
    }
}

/// Kubernetes' programs and kwok's node stages.
#[derive(Debug, Clone)]
pub struct KubeBins {
    pub dir: PathBuf,
}

impl KubeBins {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// One Istio release's programs.
#[derive(Debug, Clone)]
pub struct IstioBins {
    /// As asked (`1.30.3`, `1.31`).
    pub version: String,
    /// The release the build is stamped with (`1.30.3`, `1.31.0`): the tag of the
    /// images istioctl renders.
    pub release: String,
    pub dir: PathBuf,
}

impl IstioBins {
    pub fn istioctl(&self) -> PathBuf {
        self.dir.join("istioctl")
    }
    pub fn pilot_discovery(&self) -> PathBuf {
        self.dir.join("pilot-discovery")
    }
    pub fn pilot_agent(&self) -> PathBuf {
        self.dir.join("pilot-agent")
    }
    /// Istio's Envoy bootstrap template (the proxyv2 image's
    /// /var/lib/istio/envoy/envoy_bootstrap_tmpl.json).
    pub fn bootstrap_template(&self) -> PathBuf {
        self.dir.join("envoy_bootstrap.json")
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn go_installed() -> bool {
    Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a build script (its progress lines go to stderr as they come) and returns the
/// path it prints last.
fn run_script(name: &str, args: &[&str], what: &str) -> Result<PathBuf, BuildError> {
    let step = Step::start(format!("sandbox: {what} (built once, then cached)"));
    let mut cmd = Command::new("bash");
    cmd.arg(script(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = crate::oracle::wait::output_with_timeout(cmd, BUILD_TIMEOUT, false).map_err(|e| {
        BuildError::Failed {
            script: format!("scripts/{name}"),
            why: e.to_string(),
        }
    })?;
    if !out.status.success() {
        if !go_installed() {
            return Err(BuildError::NoGo);
        }
        let code = out.status.code();
        let why = match code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".into(),
        };
        return Err(if code == Some(2) {
            BuildError::UnknownVersion(format!(
                "scripts/{name} {} does not know that version (see above)",
                args.join(" ")
            ))
        } else {
            BuildError::Failed {
                script: format!("scripts/{name} {}", args.join(" ")),
                why,
            }
        });
    }
    let printed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    step.done();
    Ok(PathBuf::from(printed))
}

/// Kubernetes' programs, built when not cached.
pub fn kube() -> Result<KubeBins, BuildError> {
    run_script(
        "kube-build.sh",
        &[],
        "Kubernetes 1.36.3 and kwok from the Go module proxy",
    )
    .map(|dir| KubeBins { dir })
}

/// Istio `version`'s programs, built when not cached.
pub fn istio(version: &str) -> Result<IstioBins, BuildError> {
    let dir = run_script(
        "istio-build.sh",
        &[version, "dir"],
        &format!("Istio {version} (istiod, istioctl, pilot-agent) from the Go module proxy"),
    )?;
    let release = release_of(&dir).unwrap_or_else(|| version.to_string());
    Ok(IstioBins {
        version: version.to_string(),
        release,
        dir,
    })
}

/// The Gateway API CRDs (standard channel) of `version`, fetched when not cached.
pub fn gateway_api_crds(version: &str) -> Result<PathBuf, BuildError> {
    run_script(
        "gateway-api-crds.sh",
        &[version],
        &format!("the Gateway API CRDs {version} (standard channel) from the Go module proxy"),
    )
}

/// The release a build is stamped with, from its `.complete` record
/// (`istio 1.31.0 module ...`).
fn release_of(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".complete")).ok()?;
    text.split_whitespace().nth(1).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_comes_from_the_build_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".complete"),
            "istio 1.31.0 module v0.0.0-20260827124520-eed52ebb66ad built 2026-12-07T07:00:00Z in 900 s\n",
        )
        .unwrap();
        assert_eq!(release_of(dir.path()).as_deref(), Some("1.31.0"));
        assert_eq!(release_of(&dir.path().join("none")), None);
    }
}
