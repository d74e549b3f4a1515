//! Finding (or building) the oracle binary and running it.
//!
//! `--oracle` takes a path to a built oracle, or an Istio version: then
//! `scripts/istio-oracle.sh VERSION` builds it (or finds it in the cache) and prints
//! its path.

use super::input::Input;
use super::output::Output;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Istio's feature flags that leave Istio-only Envoy extensions out of what istiod
/// generates (pilot/pkg/features: telemetry.go MetadataExchange, pilot.go ALPNFilter).
pub const ENVOY_COMPATIBLE_FLAGS: &[(&str, &str)] = &[
    ("PILOT_ENABLE_METADATA_EXCHANGE", "false"),
    ("PILOT_ENABLE_ALPN_FILTER", "false"),
];

#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error("building the Istio {version} oracle failed (scripts/istio-oracle.sh exited {code}):\n{stderr}")]
    Build {
        version: String,
        code: String,
        stderr: String,
    },
    #[error("the Istio oracle cannot be built here: {0}")]
    Unavailable(String),
    #[error("running the Istio oracle {path} failed: {message}")]
    Run { path: PathBuf, message: String },
    #[error("the Istio oracle {path} answered something meshcheck cannot read: {message}")]
    Answer { path: PathBuf, message: String },
}

impl OracleError {
    /// An unknown version or a missing file: the user's input, not the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            OracleError::Build { code, .. } => code == "2",
            OracleError::Unavailable(m) => m.ends_with("no such file"),
            _ => false,
        }
    }
}

/// The build script, from the source tree meshcheck was built from.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/istio-oracle.sh")
}

/// `spec` is a path to an oracle binary, or an Istio version to build one for.
pub fn locate(spec: &str) -> Result<PathBuf, OracleError> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if spec.contains('/') {
        return Err(OracleError::Unavailable(format!("{spec}: no such file")));
    }
    if which("go").is_none() {
        return Err(OracleError::Unavailable(
            "Go is not installed (the oracle is a Go program built against Istio's module; Istio 1.30 needs Go >= 1.25.9)".into(),
        ));
    }
    eprintln!("oracle: locating the Istio {spec} oracle (a first build takes 10-15 minutes; cached after)");
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = crate::oracle::wait::output_with_timeout(cmd, BUILD_TIMEOUT, false)
        .map_err(|e| OracleError::Unavailable(format!("{}: {e}", script().display())))?;
    if !out.status.success() {
        return Err(OracleError::Build {
            version: spec.to_string(),
            code: out
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "by a signal".into()),
            stderr: "(see the lines above)".into(),
        });
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    if path.is_empty() || !Path::new(&path).is_file() {
        return Err(OracleError::Unavailable(format!(
            "scripts/istio-oracle.sh printed no binary path (got {path:?})"
        )));
    }
    Ok(PathBuf::from(path))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// How long building the oracle may take (a cold build is 10-15 minutes on 2 cores).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// How long one oracle run may take (istiod's fake discovery starts in about a second).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the oracle on `input`. `envoy_compatible` switches Istio-only extensions off
/// through istiod's own flags (for serving its config to the PyPI Envoy).
pub fn run(oracle: &Path, input: &Input, envoy_compatible: bool) -> Result<Output, OracleError> {
    let raw = run_raw(oracle, input, envoy_compatible)?;
    serde_json::from_value(raw).map_err(|e| OracleError::Answer {
        path: oracle.to_path_buf(),
        message: e.to_string(),
    })
}

/// Runs the oracle and returns its JSON answer as it printed it.
pub fn run_raw(
    oracle: &Path,
    input: &Input,
    envoy_compatible: bool,
) -> Result<serde_json::Value, OracleError> {
    let run_err = |message: String| OracleError::Run {
        path: oracle.to_path_buf(),
        message,
    };
    let dir = tempfile::tempdir().map_err(|e| run_err(format!("temporary directory: {e}")))?;
    let input_path = dir.path().join("input.json");
    let body = serde_json::to_vec(input).map_err(|e| run_err(e.to_string()))?;
    std::fs::write(&input_path, body).map_err(|e| run_err(format!("writing input: {e}")))?;
    let mut cmd = Command::new(oracle);
    // istiod fetches a RequestAuthentication's jwksUri while it generates the config
    // (pilot/pkg/model/jwks_resolver.go, Go's ProxyFromEnvironment): the oracle must
    // never reach the network. A proxy on a closed loopback port fails every such
    // fetch at once (Go never proxies loopback addresses); istiod then inlines its
    // fail-closed JWKS, which the comparison leaves out (compare_authz.rs).
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        cmd.env(var, "http://127.0.0.1:9");
    }
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    if envoy_compatible {
        cmd.arg("-no-telemetry");
        cmd.envs(ENVOY_COMPATIBLE_FLAGS.iter().copied());
    }
    cmd.arg(&input_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output =
        crate::oracle::wait::output_with_timeout(cmd, RUN_TIMEOUT, true).map_err(run_err)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(run_err(format!(
            "{}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| OracleError::Answer {
        path: oracle.to_path_buf(),
        message: e.to_string(),
    })
}
