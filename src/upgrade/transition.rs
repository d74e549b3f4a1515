//! One Istio upgrade as steps a target knows how to take. The upgrade command
//! (src/upgrade/mod.rs) runs the suite between the steps (phases `before`, `skew`,
//! `after`) while the prober keeps traffic flowing; each target kind says how its
//! control plane and proxies move from version A to version B:
//! - local (src/upgrade/local.rs): istiod A's then B's generated configuration pushed
//!   to the running Envoys, then each proxy restarted;
//! - kind / existing (src/upgrade/cluster.rs): istioctl (in-place or canary revision),
//!   rollout restarts, or the user's own commands.

use crate::error::Error;
use crate::targets::BoxFuture;

/// A check made before anything changes (kind: `istioctl x precheck` with B's
/// istioctl): one testcase of the `upgrade` testsuite.
#[derive(Debug, Clone, PartialEq)]
pub struct Precheck {
    /// Testcase name, e.g. `precheck`.
    pub name: String,
    pub passed: bool,
    /// One line: why it failed, or what it checked.
    pub message: String,
    /// The tool's output, for the report.
    pub output: String,
}

/// How a target moves from Istio A to Istio B. Called in this order: `precheck`,
/// `upgrade_control_plane`, `restart_proxies`, `finish`; `abort` instead of the
/// remaining steps when one fails or the run is interrupted.
pub trait Transition: Send {
    /// Checks before anything changes (may be none).
    fn precheck(&mut self) -> BoxFuture<'_, Result<Vec<Precheck>, Error>>;
    /// The control plane goes to B; the proxies keep A's (the run enters `skew`).
    fn upgrade_control_plane(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// Gateways, then workloads, restart onto B, each waited for (the run enters
    /// `after`).
    fn restart_proxies(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// Ends the upgrade (canary: the old revision removed).
    fn finish(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// Undoes what can be undone after a failed step (best effort).
    fn abort(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// How a cluster's control plane moves to B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Strategy {
    /// `istioctl upgrade`: istiod replaced in place.
    #[default]
    InPlace,
    /// A revision for B beside A, namespaces relabelled to it, A removed at the end.
    Canary,
}
