//! What runs for a container image: the sandbox has no container runtime, so it
//! knows the images it can play by name. meshcheck's stub image runs the stub binary;
//! Istio's proxyv2 runs that release's own pilot-agent (which starts Envoy); Istio's
//! pilot is istiod, which the sandbox runs out of the pod (istiod.rs). Anything else
//! cannot run here, and the pod says so, as a kubelet says ErrImagePull.

/// How a container of an image is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// `meshcheck-stub` (the image `meshcheck/stub`).
    Stub,
    /// Istio's `pilot-agent` of this release (`docker.io/istio/proxyv2:1.30.3`).
    PilotAgent { release: String },
    /// istiod of this release (`docker.io/istio/pilot:1.30.3`).
    Istiod { release: String },
}

/// The repository's last path segment and the tag of `image` (`docker.io/istio/
/// proxyv2:1.30.3-distroless` -> `("proxyv2", "1.30.3")`; no tag: `latest`).
pub fn name_and_tag(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    let (name, tag) = last.split_once(':').unwrap_or((last, "latest"));
    let tag = tag.strip_suffix("-distroless").unwrap_or(tag);
    (name, tag)
}

/// Whether `image` is meshcheck's stub, as built (`meshcheck/stub:TAG`) or pushed
/// somewhere a cluster pulls it from (`--stub-image registry.example/team/meshcheck/stub:v1`).
fn is_stub(image: &str) -> bool {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    let repo = match last.split_once(':') {
        Some((name, _tag)) => &image[..image.len() - last.len() + name.len()],
        None => image,
    };
    repo == crate::istio::STUB_IMAGE || repo.ends_with(&format!("/{}", crate::istio::STUB_IMAGE))
}

/// The program for `image`, or why the sandbox cannot run it.
pub fn program_for(image: &str) -> Result<Program, String> {
    if is_stub(image) {
        return Ok(Program::Stub);
    }
    let (name, tag) = name_and_tag(image);
    match name {
        "proxyv2" => Ok(Program::PilotAgent {
            release: tag.to_string(),
        }),
        "pilot" => Ok(Program::Istiod {
            release: tag.to_string(),
        }),
        _ => Err(format!(
            "the sandbox cannot run image {image}: it has no container runtime and plays only {} (the stub), Istio's proxyv2 (pilot-agent and Envoy) and pilot (istiod)",
            crate::istio::STUB_IMAGE
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_played_by_name_and_release() {
        assert_eq!(program_for("meshcheck/stub:latest"), Ok(Program::Stub));
        assert_eq!(program_for("meshcheck/stub"), Ok(Program::Stub));
        assert_eq!(
            program_for("registry.example:5000/team/meshcheck/stub:v1"),
            Ok(Program::Stub)
        );
        assert_eq!(
            program_for("registry.example/meshcheck/stub@sha256:00"),
            Ok(Program::Stub)
        );
        assert!(program_for("registry.example/meshcheck/stubborn:v1").is_err());
        assert!(program_for("meshcheck/stub-other:v1").is_err());
        assert_eq!(
            program_for("docker.io/istio/proxyv2:1.30.3"),
            Ok(Program::PilotAgent {
                release: "1.30.3".into()
            })
        );
        assert_eq!(
            program_for("gcr.io/istio-release/proxyv2:1.31.0-distroless"),
            Ok(Program::PilotAgent {
                release: "1.31.0".into()
            })
        );
        assert_eq!(
            program_for("docker.io/istio/pilot:1.31.0"),
            Ok(Program::Istiod {
                release: "1.31.0".into()
            })
        );
        let e = program_for("nginx:1.27").unwrap_err();
        assert!(e.contains("cannot run image nginx:1.27"), "{e}");
        assert_eq!(name_and_tag("localhost:5000/x/y"), ("y", "latest"));
    }
}
