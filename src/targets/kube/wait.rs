//! Waiting for Deployments to roll out, and a generic poller.
//!
//! The rollout rule is `kubectl rollout status`'s, split into small predicates on
//! `&Deployment` (like kube-runtime's `conditions`) that are tested on their own.

use super::error::KubeError;
use ::kube::api::Api;
use ::kube::Client;
use k8s_openapi::api::apps::v1::Deployment;
use std::future::Future;
use std::time::Duration;

/// How often [`wait_rollouts`] polls.
pub const ROLLOUT_POLL: Duration = Duration::from_secs(1);

/// What one poll of [`wait_for`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Check<T> {
    /// Done, with the result.
    Ready(T),
    /// Not yet: why (kept for the timeout message).
    Pending(String),
}

/// Polls `f` every `every` until it is [`Check::Ready`], fails, or `deadline` is
/// over ([`KubeError::Timeout`] naming `what` and the last pending reason). The
/// whole wait, including a request that hangs, is bounded by `deadline`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut f: F,
) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>, KubeError>>,
{
    let mut last = String::from("not checked yet");
    let poll = async {
        loop {
            match f().await? {
                Check::Ready(t) => return Ok(t),
                Check::Pending(why) => last = why,
            }
            tokio::time::sleep(every).await;
        }
    };
    match tokio::time::timeout(deadline, poll).await {
        Ok(result) => result,
        Err(_) => Err(KubeError::Timeout {
            what: what.to_string(),
            waited: deadline,
            last,
        }),
    }
}

/// Waits until every Deployment `(namespace, name)` has rolled out completely
/// ([`rollout_complete`]), polling every second. Fails at once when one exceeded
/// its progress deadline; after `deadline`, fails with
/// [`KubeError::RolloutTimeout`] for the first one still pending and its last status.
/// `progress` gets a line whenever a Deployment's status changes, e.g.
/// `atlas/atlas-ui: 0/1 updated, 0 available`.
pub async fn wait_rollouts(
    client: &Client,
    deployments: &[(String, String)],
    deadline: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), KubeError> {
    wait_rollouts_every(client, deployments, deadline, ROLLOUT_POLL, progress).await
}

/// A Deployment being waited for.
struct Pending {
    namespace: String,
    name: String,
    last_status: String,
    done: bool,
}

impl Pending {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// [`wait_rollouts`] with another polling interval.
pub async fn wait_rollouts_every(
    client: &Client,
    deployments: &[(String, String)],
    deadline: Duration,
    every: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), KubeError> {
    let mut pending: Vec<Pending> = deployments
        .iter()
        .map(|(namespace, name)| Pending {
            namespace: namespace.clone(),
            name: name.clone(),
            last_status: "not looked at yet".to_string(),
            done: false,
        })
        .collect();
    let poll = async {
        loop {
            for p in pending.iter_mut().filter(|p| !p.done) {
                poll_one(client, p, progress).await?;
            }
            if pending.iter().all(|p| p.done) {
                return Ok(());
            }
            tokio::time::sleep(every).await;
        }
    };
    match tokio::time::timeout(deadline, poll).await {
        Ok(result) => result,
        // The deadline fell while the first Deployment not complete was being read
        // or waited for; none pending means the last one completed just then.
        Err(_) => match pending.iter().find(|p| !p.done) {
            Some(p) => Err(KubeError::RolloutTimeout {
                deployment: p.id(),
                waited: deadline,
                last_status: p.last_status.clone(),
            }),
            None => Ok(()),
        },
    }
}

async fn poll_one(
    client: &Client,
    p: &mut Pending,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &p.namespace);
    let status = match api.get_opt(&p.name).await {
        Ok(Some(d)) => {
            if let Some(message) = progress_deadline_exceeded(&d) {
                return Err(KubeError::RolloutFailed {
                    deployment: p.id(),
                    reason: "ProgressDeadlineExceeded".to_string(),
                    message,
                });
            }
            p.done = rollout_complete(&d);
            rollout_status(&d)
        }
        Ok(None) => "not found".to_string(),
        // Permissions do not fix themselves: fail now.
        Err(::kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
            return Err(KubeError::from_kube(
                ::kube::Error::Api(s),
                "read",
                &format!("Deployment {}", p.id()),
                None,
            ))
        }
        // Anything else may be a blip: note it and poll again.
        Err(e) => {
            tracing::debug!("reading Deployment {}: {e}", p.id());
            format!("cannot read it: {e}")
        }
    };
    if status != p.last_status || p.done {
        let line = if p.done {
            format!("{}: rolled out ({status})", p.id())
        } else {
            format!("{}: {status}", p.id())
        };
        progress(&line);
    }
    p.last_status = status;
    Ok(())
}

/// `spec.replicas`, which the API defaults to 1.
fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_field(
    d: &Deployment,
    f: impl Fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>,
) -> i32 {
    d.status.as_ref().and_then(f).unwrap_or(0)
}

/// The controller has seen the latest spec: `status.observedGeneration >= metadata.generation`.
pub fn observed_latest(d: &Deployment) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = d
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    observed >= generation
}

/// Every desired replica runs the new template: `updatedReplicas >= spec.replicas`.
pub fn all_updated(d: &Deployment) -> bool {
    status_field(d, |s| s.updated_replicas) >= desired(d)
}

/// No replica of an old template is left: `replicas <= updatedReplicas`.
pub fn no_old_replicas(d: &Deployment) -> bool {
    status_field(d, |s| s.replicas) <= status_field(d, |s| s.updated_replicas)
}

/// Every updated replica is available: `availableReplicas >= updatedReplicas`.
pub fn all_available(d: &Deployment) -> bool {
    status_field(d, |s| s.available_replicas) >= status_field(d, |s| s.updated_replicas)
}

/// The message of a `Progressing` condition with reason `ProgressDeadlineExceeded`
/// for the current generation (as `kubectl rollout status`, a stale condition of an
/// older generation does not count).
pub fn progress_deadline_exceeded(d: &Deployment) -> Option<String> {
    if !observed_latest(d) {
        return None;
    }
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| "progress deadline exceeded".to_string())
        })
}

/// `kubectl rollout status`'s "successfully rolled out".
pub fn rollout_complete(d: &Deployment) -> bool {
    observed_latest(d) && all_updated(d) && no_old_replicas(d) && all_available(d)
}

/// A short status: `1/2 updated, 0 available`, with old replicas pending
/// termination when there are, or that the controller has not seen the spec yet.
pub fn rollout_status(d: &Deployment) -> String {
    if !observed_latest(d) {
        return format!(
            "waiting for the controller to observe generation {}",
            d.metadata.generation.unwrap_or(0)
        );
    }
    let updated = status_field(d, |s| s.updated_replicas);
    let mut s = format!(
        "{updated}/{} updated, {} available",
        desired(d),
        status_field(d, |s| s.available_replicas)
    );
    let old = status_field(d, |s| s.replicas) - updated;
    if old > 0 {
        s.push_str(&format!(", {old} old pending termination"));
    }
    s
}
