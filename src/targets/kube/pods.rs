//! Pods as the sidecars check sees them, and the node address.

use super::error::KubeError;
use crate::targets::{ContainerInfo, PodInfo};
use ::kube::api::{Api, ListParams};
use ::kube::Client;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Node, Pod};
use std::net::IpAddr;

/// Every live pod of `namespaces`, in the API's order (by name) per namespace.
/// Pods on their way out ([`judged`] is false) are left out: a re-run (`--reuse`, the
/// existing target) still sees the old ReplicaSet's pods terminating, and finished
/// pods of Jobs, which say nothing about the workloads as they run now.
pub async fn list_pods(client: &Client, namespaces: &[String]) -> Result<Vec<PodInfo>, KubeError> {
    let mut pods = Vec::new();
    for ns in namespaces {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            KubeError::from_kube(e, "list", &format!("the pods of namespace {ns}"), None)
        })?;
        pods.extend(list.items.iter().filter(|p| judged(p)).map(pod_info));
    }
    Ok(pods)
}

/// Whether a pod is one the checks judge: not terminating (`metadata.deletionTimestamp`
/// set) and not finished (phase `Succeeded` or `Failed`).
pub fn judged(pod: &Pod) -> bool {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !terminating && !finished
}

/// Why `pod` is not ready, or `None` when it is (or is on its way out, see
/// [`judged`]): the first init container, then container, that is waiting
/// (`ImagePullBackOff`, `CrashLoopBackOff`, `CreateContainerConfigError`...), failed,
/// or runs unready; else a false `PodScheduled` condition; else the phase.
pub fn not_ready_reason(pod: &Pod) -> Option<String> {
    if !judged(pod) {
        return None;
    }
    let status = pod.status.as_ref();
    let with_message = |reason: &str, message: Option<&String>| match message {
        Some(m) if !m.is_empty() => format!("{reason} ({m})"),
        _ => reason.to_string(),
    };
    let lists = [
        (
            "init container",
            status.and_then(|s| s.init_container_statuses.as_deref()),
        ),
        (
            "container",
            status.and_then(|s| s.container_statuses.as_deref()),
        ),
    ];
    let native = |name: &str| {
        pod.spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    for (what, statuses) in lists {
        for c in statuses.unwrap_or_default() {
            let state = c.state.as_ref();
            if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.as_deref().unwrap_or("waiting");
                return Some(format!(
                    "{what} {} is waiting: {}",
                    c.name,
                    with_message(reason, w.message.as_ref())
                ));
            }
            if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                let init_done = what == "init container" && t.exit_code == 0;
                if !init_done {
                    return Some(format!(
                        "{what} {} terminated: {} (exit code {})",
                        c.name,
                        with_message(
                            t.reason.as_deref().unwrap_or("terminated"),
                            t.message.as_ref()
                        ),
                        t.exit_code
                    ));
                }
                continue;
            }
            let must_be_ready = what == "container" || native(&c.name);
            if must_be_ready && !c.ready {
                return Some(format!("{what} {} is running but not ready", c.name));
            }
        }
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some(format!(
            "not scheduled: {}",
            with_message(
                c.reason.as_deref().unwrap_or("Unschedulable"),
                c.message.as_ref()
            )
        ));
    }
    let phase = status.and_then(|s| s.phase.as_deref());
    let ready = match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) => c.status == "True",
        // No Ready condition reported: running with every container ready.
        None => {
            phase == Some("Running")
                && status
                    .and_then(|s| s.container_statuses.as_deref())
                    .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
        }
    };
    if ready {
        return None;
    }
    Some(format!("phase {}", phase.unwrap_or("unknown")))
}

/// Why the Deployment `namespace/name` is not ready: its first pod that is not, with
/// the reason ([`not_ready_reason`]); or, when it has no pod, why none was created
/// (the `ReplicaFailure` condition: e.g. the injection webhook refused the pods).
/// `None` when nothing explains it (or it cannot be read).
pub async fn why_not_ready(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = deployments.get_opt(name).await.ok()??;
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for p in list.iter() {
        if let Some(why) = not_ready_reason(p) {
            return Some(format!(
                "pod {namespace}/{}: {why}",
                p.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    if list.iter().any(judged) {
        return None;
    }
    let failure = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some(format!(
        "no pod was created: {}: {}",
        failure.reason.as_deref().unwrap_or("ReplicaFailure"),
        failure.message.as_deref().unwrap_or_default()
    ))
}

/// The parts of `pod` the checks look at. Init containers keep their
/// `restartPolicy` (`Always` for a native sidecar); `running` is whether the
/// container's status shows it running now.
pub fn pod_info(pod: &Pod) -> PodInfo {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init_containers = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let init_statuses = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    PodInfo {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        containers: containers
            .iter()
            .map(|c| container_info(c, statuses))
            .collect(),
        init_containers: init_containers
            .iter()
            .map(|c| container_info(c, init_statuses))
            .collect(),
        ip: status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        ports: app_ports(containers),
    }
}

/// The TCP `containerPort`s of the containers other than istio-proxy, sorted.
fn app_ports(containers: &[Container]) -> Vec<u16> {
    let mut ports: Vec<u16> = containers
        .iter()
        .filter(|c| c.name != "istio-proxy")
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn container_info(c: &Container, statuses: &[ContainerStatus]) -> ContainerInfo {
    let running = statuses
        .iter()
        .find(|s| s.name == c.name)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|state| state.running.is_some());
    ContainerInfo {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        restart_policy: c.restart_policy.clone(),
        running,
    }
}

/// The InternalIP of the first Ready node (in the API's order).
pub async fn node_address(client: &Client) -> Result<IpAddr, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = api
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::from_kube(e, "list", "the nodes", None))?;
    first_ready_internal_ip(&nodes.items)
}

/// Whether `node` has condition `Ready` `True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// [`node_address`] on a list of nodes already read.
pub fn first_ready_internal_ip(nodes: &[Node]) -> Result<IpAddr, KubeError> {
    if nodes.is_empty() {
        return Err(KubeError::NoNodeAddress {
            why: "the cluster has no nodes".to_string(),
        });
    }
    let mut seen = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if !node_ready(node) {
            seen.push(format!("{name} is not Ready"));
            continue;
        }
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<IpAddr>().ok());
        match ip {
            Some(ip) => return Ok(ip),
            None => seen.push(format!("{name} has no InternalIP address")),
        }
    }
    Err(KubeError::NoNodeAddress {
        why: seen.join("; "),
    })
}

/// Containers whose logs are Istio's, not an app's.
const ISTIO_CONTAINERS: &[&str] = &["istio-proxy", "istio-init", "istio-validation"];

/// The requests with `x-meshcheck-id: id` the stubs of `namespaces` received, read
/// from the logs of every live pod's app containers (the stub prints one
/// `{"seen":{...}}` line per request; the last [`LOG_LINES`] lines are read).
pub async fn seen_in_logs(
    client: &Client,
    namespaces: &[String],
    id: &str,
) -> Result<Vec<crate::stub::Echo>, KubeError> {
    let mut out = Vec::new();
    for ns in namespaces {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            KubeError::from_kube(e, "list", &format!("the pods of namespace {ns}"), None)
        })?;
        for pod in list.items.iter().filter(|p| judged(p)) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
            for c in containers.filter(|c| !ISTIO_CONTAINERS.contains(&c.name.as_str())) {
                let params = ::kube::api::LogParams {
                    container: Some(c.name.clone()),
                    tail_lines: Some(LOG_LINES),
                    ..Default::default()
                };
                let log = api.logs(&name, &params).await.map_err(|e| {
                    KubeError::from_kube(
                        e,
                        "read the log of",
                        &format!("pod {ns}/{name} container {}", c.name),
                        None,
                    )
                })?;
                out.extend(crate::stub::seen::from_log(&log, id));
            }
        }
    }
    Ok(out)
}

/// How many lines of a pod's log [`seen_in_logs`] reads (the stub keeps as many).
pub const LOG_LINES: i64 = crate::stub::seen::CAPACITY as i64;
