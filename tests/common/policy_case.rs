//! A security policy case: the seed's ingress (fixtures/ingress) plus one policy file
//! of tests/authz/ (`<name>.yaml`), run with the suite beside it
//! (`<name>.suite.yaml`), edited one field at a time to show which checks each field
//! decides (tests/authz.rs, authz_jwt.rs, authz_sidecar.rs).

use super::{assert_suite_fails_exactly, root, run_suite, FixtureCopy};

/// Where the policies are written in the fixture copy.
pub const POLICIES: &str = "60-authz.yaml";

/// A file of tests/authz/.
pub fn data(file: &str) -> String {
    let path = root().join("tests/authz").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct PolicyCase {
    pub fixtures: FixtureCopy,
    pub suite: String,
}

impl PolicyCase {
    /// The seed with tests/authz/`name`.yaml, and its suite.
    pub fn of(name: &str) -> PolicyCase {
        let fixtures = FixtureCopy::new();
        fixtures.write(POLICIES, &data(&format!("{name}.yaml")));
        PolicyCase {
            fixtures,
            suite: data(&format!("{name}.suite.yaml")),
        }
    }

    /// Replaces `from` (which must occur exactly once) by `to` in `file`.
    #[track_caller]
    pub fn breaks_in(&self, file: &str, from: &str, to: &str) -> &Self {
        let text = self.fixtures.read(file);
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} occurs once in {file}"
        );
        self.fixtures.write(file, &text.replacen(from, to, 1));
        self
    }

    /// Replaces `from` (which must occur exactly once) by `to` in the policies.
    #[track_caller]
    pub fn breaks(&self, from: &str, to: &str) -> &Self {
        self.breaks_in(POLICIES, from, to)
    }

    /// Replaces `from` (which must occur exactly once) by `to` in the suite.
    #[track_caller]
    pub fn asks(&mut self, from: &str, to: &str) -> &mut Self {
        assert_eq!(self.suite.matches(from).count(), 1, "{from:?} occurs once");
        self.suite = self.suite.replacen(from, to, 1);
        self
    }

    /// The run failed exactly `checks`, each live and in the simulation, and passed
    /// every other check of the suite; nothing was reported as not modelled.
    #[track_caller]
    pub fn fails_exactly(&self, checks: &[&str]) {
        self.judge(checks, &[], &[]);
    }

    /// [`PolicyCase::fails_exactly`], with `live_only` failing live only: the
    /// simulation judges a backend header only when it is expected with a plain value
    /// and predicted (analysis.rs branch_mismatch), so a header a filter should have
    /// added, or removed, is judged live alone.
    #[track_caller]
    pub fn fails_exactly_and_live(&self, checks: &[&str], live_only: &[&str]) {
        self.judge(checks, live_only, &[]);
    }

    /// [`PolicyCase::fails_exactly`], with these static findings failing too.
    #[track_caller]
    pub fn fails_exactly_and_findings(&self, checks: &[&str], static_findings: &[&str]) {
        self.judge(checks, &[], static_findings);
    }

    #[track_caller]
    fn judge(&self, checks: &[&str], live_only: &[&str], static_findings: &[&str]) {
        let r = run_suite(&self.fixtures, &self.suite);
        assert_suite_fails_exactly(&r, &self.suite, checks, live_only, static_findings);
    }
}
