//! What the kind target checks before it creates anything: kind's node provider is
//! Docker, the Docker engine is on this host and answers, the docker CLI is on
//! PATH, and the stub image's sources are meshcheck's own. Each refusal is an
//! environment error (exit 3) saying what to do instead.

use super::{unavailable, which};
use crate::targets::TargetError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Checks what the kind target needs before anything is started.
pub fn preflight() -> Result<PathBuf, TargetError> {
    check_provider(std::env::var("KIND_EXPERIMENTAL_PROVIDER").ok().as_deref())?;
    let docker_host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let endpoint = docker_host.or_else(|| which("docker").and_then(|d| context_endpoint(&d)));
    check_engine_endpoint(endpoint.as_deref())?;
    if !crate::targets::docker_answers() {
        return Err(unavailable(
            "no Docker engine answers (DOCKER_HOST, the docker CLI's current context, or /var/run/docker.sock): start Docker (or Docker Desktop, Colima...), or run the suite with --target local",
        ));
    }
    which("docker").ok_or_else(|| unavailable("the docker CLI is not on PATH (the engine answers, but images are built and inspected with the CLI)"))
}

/// meshcheck's own sources, where the stub image is built from: the directory
/// meshcheck was built from. Never the current directory: another project's
/// Dockerfile there must not become the stub image.
pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Refuses `dir` unless it holds meshcheck's sources: a `Dockerfile` and a
/// `Cargo.toml` whose package is `meshcheck` (checked before anything is created).
pub fn check_project_dir(dir: &Path) -> Result<(), TargetError> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if package_name(&manifest) == Some("meshcheck") && dir.join("Dockerfile").is_file() {
        return Ok(());
    }
    Err(unavailable(format!(
        "the stub image is built from meshcheck's own Dockerfile, and {} does not hold meshcheck's sources (a Dockerfile and the Cargo.toml of package meshcheck): run a meshcheck built from its checkout, or use --target existing with --stub-image",
        dir.display()
    )))
}

/// The `name` of a Cargo.toml's `[package]` table.
fn package_name(manifest: &str) -> Option<&str> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(v) = line.strip_prefix("name").map(str::trim_start) {
            if in_package {
                return v
                    .strip_prefix('=')?
                    .trim()
                    .strip_prefix('"')?
                    .strip_suffix('"');
            }
        }
    }
    None
}

/// Refuses a kind node provider other than Docker (`KIND_EXPERIMENTAL_PROVIDER`):
/// the kind target builds, saves and inspects the stub image and finds the
/// published ports with the docker CLI, and an image built there is not in
/// podman's (or nerdctl's) store, so the cluster would start without it.
pub fn check_provider(provider: Option<&str>) -> Result<(), TargetError> {
    match provider.map(str::trim).filter(|p| !p.is_empty()) {
        None | Some("docker") => Ok(()),
        Some(p) => Err(unavailable(format!(
            "KIND_EXPERIMENTAL_PROVIDER={p}: the kind target supports Docker only (it builds and saves the stub image and finds the published ports with the docker CLI); unset KIND_EXPERIMENTAL_PROVIDER to use Docker, or run on a cluster you brought up with --target existing --stub-image IMAGE"
        ))),
    }
}

/// The endpoint of the docker CLI's current context (`docker context inspect`,
/// which honours `DOCKER_CONTEXT`, within 15 s), if it tells.
fn context_endpoint(docker: &Path) -> Option<String> {
    use std::io::{Read, Seek};
    let mut out = tempfile::tempfile().ok()?;
    let mut cmd = std::process::Command::new(docker);
    cmd.args([
        "context",
        "inspect",
        "--format",
        "{{.Endpoints.docker.Host}}",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(out.try_clone().ok()?)
    .stderr(std::process::Stdio::null());
    let status =
        crate::targets::local::provision::status_within(&mut cmd, Duration::from_secs(15)).ok()?;
    let mut host = String::new();
    out.rewind().ok()?;
    out.read_to_string(&mut host).ok()?;
    let host = host.trim().to_string();
    (status.success() && !host.is_empty()).then_some(host)
}

/// Refuses a Docker engine on another host (`tcp://` or `ssh://` to a host that is
/// not this one): kind would publish the API server and the gateway NodePorts on
/// that host's 127.0.0.1, and its node network is that host's, so neither the
/// kubeconfig kind writes nor the checks would reach the cluster from here.
pub fn check_engine_endpoint(endpoint: Option<&str>) -> Result<(), TargetError> {
    let Some(host) = endpoint.and_then(remote_engine_host) else {
        return Ok(());
    };
    Err(unavailable(format!(
        "the Docker engine is on another host ({host}, from DOCKER_HOST or the docker context): kind would publish the cluster's API server and NodePorts on that host's loopback, out of reach from here. Run meshcheck on that host, or bring the cluster up there and use --target existing --kubeconfig FILE --node-address ADDRESS"
    )))
}

/// The host of a `tcp://` or `ssh://` engine endpoint that is not this machine
/// (`localhost`, a loopback address); `None` for a local one (`unix://`, `npipe://`).
fn remote_engine_host(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("ssh://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.split(':').next().unwrap_or(host_port),
    };
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|a| a.is_loopback() || a.is_unspecified());
    (!local).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Podman (or nerdctl) as kind's provider is refused, naming the variable, as
    /// an environment error (exit 3); Docker (explicit or default) passes.
    #[test]
    fn a_provider_other_than_docker_is_refused() {
        for ok in [None, Some(""), Some("docker")] {
            check_provider(ok).unwrap();
        }
        for p in ["podman", "nerdctl"] {
            let err = check_provider(Some(p)).expect_err(p);
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("KIND_EXPERIMENTAL_PROVIDER={p}"))
                    && msg.contains("Docker only"),
                "{msg}"
            );
            assert_eq!(
                crate::error::Error::from(err).exit_code(),
                crate::error::exit::ENVIRONMENT
            );
        }
    }

    /// An engine on another host is refused; this host's (a socket, or tcp to
    /// loopback) is not.
    #[test]
    fn a_remote_docker_host_is_refused() {
        for local in [
            None,
            Some("unix:///var/run/docker.sock"),
            Some("tcp://127.0.0.1:2375"),
            Some("tcp://localhost:2376"),
            Some("tcp://[::1]:2375"),
            Some("tcp://0.0.0.0:2375"),
            Some("ssh://me@localhost"),
            Some("npipe:////./pipe/docker_engine"),
        ] {
            check_engine_endpoint(local).unwrap_or_else(|e| panic!("{local:?}: {e}"));
        }
        for (remote, host) in [
            ("tcp://10.0.0.5:2376", "10.0.0.5"),
            ("ssh://builder@build-host.example", "build-host.example"),
            ("ssh://builder@build-host:2222", "build-host"),
            ("tcp://[2001:db8::5]:2375", "2001:db8::5"),
        ] {
            let err = check_engine_endpoint(Some(remote)).expect_err(remote);
            let msg = err.to_string();
            assert!(msg.contains(&format!("another host ({host},")), "{msg}");
            assert!(msg.contains("--target existing"), "{msg}");
            assert_eq!(
                crate::error::Error::from(err).exit_code(),
                crate::error::exit::ENVIRONMENT
            );
        }
    }
}
