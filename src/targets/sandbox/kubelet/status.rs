//! The pod status the sandbox's kubelet reports, in the shape the kubelet's status
//! manager writes (pkg/kubelet/status, kubelet_pods.go generateAPIPodStatus): the
//! phase, the conditions (PodReadyToStartContainers, Initialized, ContainersReady,
//! Ready, and the scheduler's PodScheduled kept), and one status per container with
//! its state, readiness and restarts.

use serde_json::{json, Value};

/// Where a container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started: why (`ContainerCreating`, `PodInitializing`, `ErrImagePull`,
    /// `CrashLoopBackOff`...) and a message.
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: String,
        finished_at: String,
    },
}

/// What the status says of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<State>,
    pub ready: bool,
    /// Native sidecars and containers with a startup probe: started yet.
    pub started: bool,
    pub restart_count: i32,
    /// `meshcheck://<pid>` while a process plays it.
    pub container_id: Option<String>,
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason,
            "startedAt": started_at, "finishedAt": finished_at,
        }}),
    }
}

impl ContainerView {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("meshcheck-sandbox://{}", self.image),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state_json(&self.state),
            "lastState": self.last.as_ref().map(state_json).unwrap_or_else(|| json!({})),
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// A condition with the time it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub since: String,
    pub reason: Option<String>,
}

/// The whole status of a pod, as patched (a JSON merge patch replaces the lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub phase: &'static str,
    pub conditions: Vec<Condition>,
    /// The scheduler's `PodScheduled` condition, kept as it is.
    pub scheduled: Option<Value>,
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub start_time: String,
}

impl PodView {
    pub fn to_patch(&self) -> Value {
        let mut conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|c| {
                let mut v = json!({
                    "type": c.type_,
                    "status": if c.status { "True" } else { "False" },
                    "lastTransitionTime": c.since,
                    "lastProbeTime": null,
                });
                if let Some(r) = &c.reason {
                    v["reason"] = json!(r);
                }
                v
            })
            .collect();
        if let Some(s) = &self.scheduled {
            conditions.push(s.clone());
        }
        json!({"status": {
            "phase": self.phase,
            "conditions": conditions,
            "initContainerStatuses": self.init.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
            "containerStatuses": self.containers.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
            "startTime": self.start_time,
        }})
    }
}

/// Whether the API server's pod status says otherwise than the kubelet's last patch
/// on the conditions the kubelet owns (`Ready`, `ContainersReady`...): someone else
/// changed them, as the node lifecycle controller sets `Ready=False` on every pod of a
/// node it found NotReady. A real kubelet's status manager then writes its own view
/// again; so does this one.
pub fn drifted(patched: &Value, live: &k8s_openapi::api::core::v1::Pod) -> bool {
    let ours = patched
        .pointer("/status/conditions")
        .and_then(Value::as_array);
    let theirs = live.status.as_ref().and_then(|s| s.conditions.as_ref());
    let Some(ours) = ours else { return false };
    ours.iter().any(|c| {
        let kind = c.get("type").and_then(Value::as_str).unwrap_or_default();
        let status = c.get("status").and_then(Value::as_str).unwrap_or_default();
        let live = theirs.into_iter().flatten().find(|l| l.type_ == kind);
        live.is_some_and(|l| l.status != status)
    })
}

/// Now, as the API writes times.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Keeps `since` of conditions whose status did not change from `before`.
pub fn carry_times(before: &[Condition], after: &mut [Condition]) {
    for c in after.iter_mut() {
        if let Some(b) = before
            .iter()
            .find(|b| b.type_ == c.type_ && b.status == c.status)
        {
            c.since = b.since.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ready: bool) -> PodView {
        PodView {
            phase: "Running",
            conditions: vec![Condition {
                type_: "Ready",
                status: ready,
                since: "2026-12-07T06:00:01Z".into(),
                reason: None,
            }],
            scheduled: Some(json!({"type": "PodScheduled", "status": "True"})),
            init: vec![],
            containers: vec![ContainerView {
                name: "app".into(),
                image: "meshcheck/stub:latest".into(),
                state: State::Running {
                    started_at: "2026-12-07T06:00:00Z".into(),
                },
                last: None,
                ready,
                started: true,
                restart_count: 0,
                container_id: Some("meshcheck://42".into()),
            }],
            start_time: "2026-12-07T06:00:00Z".into(),
        }
    }

    #[test]
    fn the_patch_has_the_kubelets_shape_and_keeps_the_schedulers_condition() {
        let p = view(true).to_patch();
        let s = &p["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][0]["type"], "Ready");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][1]["type"], "PodScheduled");
        assert_eq!(
            s["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-12-07T06:00:00Z"
        );
        assert_eq!(s["containerStatuses"][0]["containerID"], "meshcheck://42");
        let _: k8s_openapi::api::core::v1::PodStatus =
            serde_json::from_value(s.clone()).expect("a valid PodStatus");
    }

    #[test]
    fn a_ready_condition_changed_by_someone_else_is_drift() {
        let sent = view(true).to_patch();
        let mut live: k8s_openapi::api::core::v1::Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "status": sent["status"].clone()}),
        )
        .unwrap();
        assert!(!drifted(&sent, &live));
        // The node lifecycle controller's MarkPodsNotReady.
        for c in live.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            if c.type_ == "Ready" {
                c.status = "False".into();
            }
        }
        assert!(drifted(&sent, &live));
    }

    #[test]
    fn a_condition_keeps_its_time_until_it_changes() {
        let before = view(true).conditions;
        let mut same = view(true).conditions;
        same[0].since = "2026-12-07T06:00:09Z".into();
        carry_times(&before, &mut same);
        assert_eq!(same[0].since, "2026-12-07T06:00:01Z");
        let mut changed = view(false).conditions;
        changed[0].since = "2026-12-07T06:00:09Z".into();
        carry_times(&before, &mut changed);
        assert_eq!(changed[0].since, "2026-12-07T06:00:09Z");
    }
}
