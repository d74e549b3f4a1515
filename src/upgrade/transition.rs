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

impl Strategy {
    /// The most minor versions one upgrade of this strategy may cross: in place one
    /// minor at a time, a canary up to two (istio.io, "Upgrade with istioctl": "in-place
    /// upgrades ... across more than one minor version ... are not supported"; "Canary
    /// upgrades": "from 1.X to 1.X+2"; ISTIO-NOTES.md "Installing a version").
    pub fn max_minors(self) -> u32 {
        match self {
            Strategy::InPlace => 1,
            Strategy::Canary => 2,
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Strategy::InPlace => "in-place",
            Strategy::Canary => "canary",
        }
    }
}

/// Refuses an upgrade from `from` to `to` that crosses more minor versions (either
/// way) than `strategy` supports, or another major; why, naming what would do.
/// Versions that do not parse are left to istioctl.
pub fn check_version_skip(from: &str, to: &str, strategy: Strategy) -> Result<(), String> {
    use crate::targets::kind::config::major_minor;
    let (Some((fa, fi)), Some((ta, ti))) = (major_minor(from), major_minor(to)) else {
        return Ok(());
    };
    let crossed = fi.abs_diff(ti);
    if fa == ta && crossed <= strategy.max_minors() {
        return Ok(());
    }
    let hint = if fa == ta && crossed <= Strategy::Canary.max_minors() {
        " (--strategy canary may cross two)".to_string()
    } else {
        format!(
            "; upgrade in steps of at most {} minor(s)",
            strategy.max_minors()
        )
    };
    Err(format!(
        "Istio {from} -> {to} crosses {} minor version(s), and an upgrade --strategy {} supports at most {}{hint}",
        if fa == ta { crossed.to_string() } else { "major".to_string() },
        strategy.flag(),
        strategy.max_minors(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In place: one minor at a time; a canary: up to two; never another major.
    #[test]
    fn an_upgrade_crosses_no_more_minors_than_its_strategy_supports() {
        for (from, to) in [
            ("1.29.6", "1.30.3"),
            ("1.30.0", "1.30.3"),
            ("1.30.3", "1.29.6"),
            ("v1.30.3", "1.31.0-rc.0"),
        ] {
            check_version_skip(from, to, Strategy::InPlace).unwrap();
            check_version_skip(from, to, Strategy::Canary).unwrap();
        }
        let e = check_version_skip("1.28.3", "1.30.3", Strategy::InPlace).unwrap_err();
        assert!(
            e.contains("crosses 2 minor version(s)")
                && e.contains("--strategy in-place supports at most 1")
                && e.contains("--strategy canary may cross two"),
            "{e}"
        );
        check_version_skip("1.28.3", "1.30.3", Strategy::Canary).unwrap();
        let e = check_version_skip("1.27.0", "1.30.3", Strategy::Canary).unwrap_err();
        assert!(
            e.contains("crosses 3") && e.contains("steps of at most 2"),
            "{e}"
        );
        let e = check_version_skip("1.27.0", "1.30.3", Strategy::InPlace).unwrap_err();
        assert!(e.contains("steps of at most 1"), "{e}");
        assert!(check_version_skip("1.30.3", "2.0.0", Strategy::Canary).is_err());
        // Left to istioctl.
        check_version_skip("master", "1.30.3", Strategy::InPlace).unwrap();
    }
}
