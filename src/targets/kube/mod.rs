//! The Kubernetes API side of a cluster target: applying the fixtures with
//! server-side apply, waiting for rollouts, and reading pods and nodes.

pub mod apply;
pub mod error;
pub mod gateway_api;
pub mod gateway_status;
pub mod injection;
pub mod mesh_config;
pub mod namespaces;
pub mod pods;
pub mod wait;

#[cfg(test)]
pub(crate) mod tests;

pub use apply::{
    apply_all, apply_all_into, apply_each, apply_order, delete_applied, first_using_image,
    image_matches, Applied, ApplyOptions, Isolation, NamespaceRenamer,
};
pub use error::KubeError;
pub use namespaces::terminating_namespace;
pub use pods::{
    first_ready_internal_ip, judged, list_pods, node_address, node_ready, not_ready_reason,
    pod_info, seen_in_logs, why_not_ready,
};
pub use wait::{
    all_available, all_updated, no_old_replicas, observed_latest, progress_deadline_exceeded,
    rollout_complete, rollout_status, wait_for, wait_rollouts, wait_rollouts_every, Check,
    ROLLOUT_POLL,
};
