//! The local target's upgrade: the gateways run istiod A's configuration; the control
//! plane step pushes istiod B's over their xDS while traffic flows (a real update,
//! drained by Envoy); the proxy step restarts every proxy, gateways first, by Envoy hot
//! restart (the replacement takes the sockets over, the old one drains), as a rolling
//! restart replaces a pod only once the new one is ready. Sidecars keep the model's
//! configuration (the local target has no traffic capture for istiod's sidecar
//! config) except their security filters, which the push gives them from B's answer
//! too; so restarting them checks continuity, not the rest of B's sidecar config.

use super::transition::{Precheck, Transition};
use crate::error::Error;
use crate::oracle::output::Output;
use crate::targets::local::LocalTarget;
use crate::targets::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// How long a gateway may take to apply a push, and a proxy to come back live.
const STEP_WITHIN: Duration = Duration::from_secs(30);

pub struct LocalTransition {
    target: Arc<LocalTarget>,
    to: Arc<Output>,
    /// False only for the test-only transition that kills proxies without draining.
    drain: bool,
}

impl LocalTransition {
    pub fn new(target: Arc<LocalTarget>, to: Arc<Output>, drain: bool) -> Self {
        LocalTransition { target, to, drain }
    }
}

impl Transition for LocalTransition {
    fn precheck(&mut self) -> BoxFuture<'_, Result<Vec<Precheck>, Error>> {
        // What `istioctl x precheck` stands for here: istiod B takes every object.
        let rejected: Vec<String> = self
            .to
            .rejected
            .iter()
            .map(|r| format!("{} ({}): {}", r.object, r.source, r.reason))
            .collect();
        let check = Precheck {
            name: "precheck".into(),
            passed: rejected.is_empty(),
            message: if rejected.is_empty() {
                format!(
                    "istiod {} takes every object of the fixtures",
                    self.to.istio.release
                )
            } else {
                format!(
                    "istiod {} does not take {} object(s)",
                    self.to.istio.release,
                    rejected.len()
                )
            },
            output: rejected.join("\n"),
        };
        Box::pin(async move { Ok(vec![check]) })
    }

    // The steps block: the upgrade polls them with `block_on` on the thread that
    // started the target, which is where restarted proxies must be spawned from
    // (children die with the thread that started them).
    fn upgrade_control_plane(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.target
                .push_istiod_config(&self.to, STEP_WITHIN)
                .map_err(Error::from)
        })
    }

    fn restart_proxies(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.target
                .restart_proxies(self.drain, STEP_WITHIN)
                .map(|_| ())
                .map_err(Error::from)
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}
