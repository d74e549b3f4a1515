//! [`KubeError`]: what can go wrong talking to the Kubernetes API.
//!
//! `Display` and `Error` are written by hand rather than derived with thiserror:
//! several variants carry the fixture position in a field named `source` (a
//! [`Source`], which is not an error), and thiserror would take any field of that
//! name for the error's cause.

use crate::fixtures::Source;
use std::fmt;
use std::time::Duration;

/// Why an interaction with the Kubernetes API failed. Every variant names the
/// object (and, for fixture objects, its `file:line`) it was about.
#[derive(Debug)]
pub enum KubeError {
    /// The API server refused the object: 400 BadRequest, 403 Forbidden,
    /// 409 Conflict or 422 Invalid (e.g. Istio's validating webhook).
    Rejected {
        /// `VirtualService atlas/nb-rest`
        object: String,
        source: Source,
        status: u16,
        /// The API's machine-readable reason (`Invalid`, `Conflict`, `Forbidden`).
        reason: String,
        /// The API's message, verbatim.
        message: String,
    },
    /// The kind of a fixture object is not served by the API server, and did not
    /// become served (its CRD established) within the allowed time.
    KindNotServed {
        /// `DestinationRule atlas/nb-rest`: its kind is the first word.
        object: String,
        source: Source,
        api_version: String,
        waited: Duration,
        /// What discovery answered last.
        last_error: String,
    },
    /// A fixture object exists on the cluster already and meshcheck did not create
    /// it (no earlier meshcheck apply manages it): applying would take it over.
    NotOurs {
        object: String,
        source: Source,
        /// Its field managers (`kubectl-client-side-apply`, `helm`...).
        managers: Vec<String>,
    },
    /// A fixture object cannot be sent as it is (no apiVersion, no name...).
    BadObject {
        object: String,
        source: Source,
        message: String,
    },
    /// The API server answered an unexpected error status.
    Api {
        /// What was being done: `apply VirtualService atlas/nb-rest`.
        action: String,
        source: Option<Source>,
        status: u16,
        reason: String,
        message: String,
    },
    /// The request did not get an API answer (connection, TLS, decoding).
    Request {
        action: String,
        source: Option<Source>,
        error: ::kube::Error,
    },
    /// A Deployment did not complete its rollout in time.
    RolloutTimeout {
        /// `atlas/atlas-ui`
        deployment: String,
        waited: Duration,
        /// e.g. `1/2 updated, 0 available`
        last_status: String,
    },
    /// A Deployment's rollout failed for good (`ProgressDeadlineExceeded`).
    RolloutFailed {
        deployment: String,
        reason: String,
        message: String,
    },
    /// A rollout failed or timed out, and why (its first pod that is not ready).
    RolloutBlocked {
        /// [`KubeError::RolloutTimeout`] or [`KubeError::RolloutFailed`].
        rollout: Box<KubeError>,
        /// `pod atlas/nb-rest-v1-7d9f8b6c5-k9qzp: container nb-rest is waiting: ImagePullBackOff (...)`
        why: String,
    },
    /// A generic wait ([`super::wait_for`]) ran out of time.
    Timeout {
        what: String,
        waited: Duration,
        /// The last reason it was still pending.
        last: String,
    },
    /// No Ready node with an InternalIP address.
    NoNodeAddress { why: String },
    /// The fixtures hold Gateway API objects, the cluster lacks Gateway API CRDs, and
    /// meshcheck may not install them (an existing cluster without
    /// `--install-gateway-api-crds`).
    GatewayApiCrdsMissing {
        /// `gateways.gateway.networking.k8s.io`, ...
        missing: Vec<String>,
        /// The standard channel's version meshcheck would install.
        version: String,
    },
    /// The Gateway API CRDs could not be provided (no Go, not served, unreadable).
    GatewayApiCrds { why: String },
}

impl KubeError {
    /// Whether the fixtures are at fault (exit code 2) rather than the environment.
    pub fn is_bad_input(&self) -> bool {
        match self {
            KubeError::Rejected { status, .. } => matches!(status, 400 | 422),
            KubeError::BadObject { .. } => true,
            _ => false,
        }
    }

    /// The Deployment (`namespace/name`) a rollout error is about.
    pub fn rollout_of(&self) -> Option<&str> {
        match self {
            KubeError::RolloutTimeout { deployment, .. }
            | KubeError::RolloutFailed { deployment, .. } => Some(deployment),
            KubeError::RolloutBlocked { rollout, .. } => rollout.rollout_of(),
            _ => None,
        }
    }

    /// The fixture position this error is about, when known.
    pub fn fixture_source(&self) -> Option<&Source> {
        match self {
            KubeError::Rejected { source, .. }
            | KubeError::KindNotServed { source, .. }
            | KubeError::NotOurs { source, .. }
            | KubeError::BadObject { source, .. } => Some(source),
            KubeError::Api { source, .. } | KubeError::Request { source, .. } => source.as_ref(),
            _ => None,
        }
    }

    /// Maps a kube error from `action` on `object` (defined at `source`, if from
    /// the fixtures): refusals of the object become [`KubeError::Rejected`].
    pub(crate) fn from_kube(
        error: ::kube::Error,
        action: &str,
        object: &str,
        source: Option<&Source>,
    ) -> Self {
        match error {
            ::kube::Error::Api(status) => {
                let code = status.code;
                match (code, source) {
                    (400 | 403 | 409 | 422, Some(source)) => KubeError::Rejected {
                        object: object.to_string(),
                        source: source.clone(),
                        status: code,
                        reason: status.reason.clone(),
                        message: status.message.clone(),
                    },
                    _ => KubeError::Api {
                        action: format!("{action} {object}"),
                        source: source.cloned(),
                        status: code,
                        reason: status.reason.clone(),
                        message: status.message.clone(),
                    },
                }
            }
            error => KubeError::Request {
                action: format!("{action} {object}"),
                source: source.cloned(),
                error,
            },
        }
    }
}

fn at(source: &Option<Source>) -> String {
    source
        .as_ref()
        .map(|s| format!("{s}: "))
        .unwrap_or_default()
}

/// `60s`, `1.5s`, `0.2s`.
pub(crate) fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(10) || d.subsec_millis() == 0 {
        format!("{}s", d.as_secs_f64().round())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn status_text(status: u16, reason: &str) -> String {
    if reason.is_empty() {
        status.to_string()
    } else {
        format!("{status} {reason}")
    }
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeError::Rejected {
                object,
                source,
                status,
                reason,
                message,
            } => write!(
                f,
                "{source}: {object} was rejected by the API server ({}): {message}",
                status_text(*status, reason)
            ),
            KubeError::KindNotServed {
                object,
                source,
                api_version,
                waited,
                last_error,
            } => write!(
                f,
                "{source}: cannot apply {object}: the API server does not serve kind {} of \
                 {api_version} (waited {} for its CustomResourceDefinition to be established; \
                 last answer: {last_error})",
                object.split(' ').next().unwrap_or_default(),
                secs(*waited)
            ),
            KubeError::NotOurs {
                object,
                source,
                managers,
            } => write!(
                f,
                "{source}: {object} exists already and meshcheck did not create it{}: \
                 applying would take it over. Run beside it with --namespace-prefix, \
                 delete it, or pass --adopt to take it over",
                if managers.is_empty() {
                    String::new()
                } else {
                    format!(" (managed by {})", managers.join(", "))
                }
            ),
            KubeError::BadObject {
                object,
                source,
                message,
            } => write!(f, "{source}: cannot apply {object}: {message}"),
            KubeError::Api {
                action,
                source,
                status,
                reason,
                message,
            } => write!(
                f,
                "{}failed to {action}: the API server answered {}: {message}",
                at(source),
                status_text(*status, reason)
            ),
            KubeError::Request { action, source, .. } => {
                write!(f, "{}failed to {action}", at(source))
            }
            KubeError::RolloutTimeout {
                deployment,
                waited,
                last_status,
            } => write!(
                f,
                "Deployment {deployment} did not finish rolling out within {} (last status: {last_status})",
                secs(*waited)
            ),
            KubeError::RolloutFailed {
                deployment,
                reason,
                message,
            } => write!(f, "Deployment {deployment} failed to roll out ({reason}): {message}"),
            KubeError::RolloutBlocked { rollout, why } => write!(f, "{rollout}; {why}"),
            KubeError::Timeout { what, waited, last } => write!(
                f,
                "timed out after {} waiting for {what} (last: {last})",
                secs(*waited)
            ),
            KubeError::NoNodeAddress { why } => {
                write!(f, "cannot find the address of a Ready node: {why}")
            }
            KubeError::GatewayApiCrdsMissing { missing, version } => write!(
                f,
                "the fixtures use the Kubernetes Gateway API and the cluster lacks its \
                 CustomResourceDefinitions {}: pass {} to have meshcheck install the \
                 standard channel's CRDs ({version}, the version the Istio release \
                 supports; they are kept after the run), or install them yourself",
                missing.join(", "),
                super::gateway_api::INSTALL_FLAG
            ),
            KubeError::GatewayApiCrds { why } => {
                write!(f, "cannot install the Gateway API CRDs: {why}")
            }
        }
    }
}

impl std::error::Error for KubeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KubeError::Request { error, .. } => Some(error),
            _ => None,
        }
    }
}
