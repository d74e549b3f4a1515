//! The route simulation judged against what a check says the backend received (its
//! method, query string, every value of a header) and the response headers the client
//! receives; and the simulation of `steps` checks: each step predicted in the state
//! the steps before it leave (src/istio/steps.rs: outlier ejections) and judged as an
//! http check is. Used by the analysis (its `static::simulate::` testcases) and by a
//! run (the predictions shown beside a failed step). `denied` is judged against the
//! security filters' decision (`Prediction::authz`), and a mismatch that decision
//! explains names the policy that decided.

use crate::analysis::{branch_mismatch, latency_mismatch, mirror_mismatch, sim_request};
use crate::istio::authz::{DeniedBy, Verdict};
use crate::istio::ejection::Ejections;
use crate::istio::steps::{StepPrediction, StepRequest};
use crate::istio::{Branch, Mesh, Prediction, SimRequest};
use crate::suite::{
    CheckKind, CheckSpec, Denied, HeaderExpect, HttpCheck, HttpExpect, RequestSpec, Step, Suite,
};

/// Why the response headers predicted for `b` miss `e.response_headers`, or None.
/// Only headers the model predicts (those the stub is asked to send and those the
/// route's `headers.response` touch) are judged.
pub fn response_mismatch(e: &HttpExpect, b: &Branch) -> Option<String> {
    e.response_headers.iter().find_map(|(name, want)| {
        let got = b.response.values(name)?;
        (!want.meets(&got)).then(|| {
            format!(
                "expected response header {name} {want}, predicted {}",
                HeaderExpect::describe_got(&got)
            )
        })
    })
}

/// Why a branch a backend answers misses what `e` says the backend received: the
/// method (Envoy forwards it as sent), the query string, every value of a header the
/// model predicts (sent by the check or set/added by the route), or None.
fn seen_mismatch(e: &HttpExpect, req: &SimRequest, b: &Branch) -> Option<String> {
    b.backend.as_ref()?;
    if let Some(m) = e
        .method
        .as_ref()
        .filter(|m| !m.eq_ignore_ascii_case(&req.method))
    {
        return Some(format!(
            "expected the backend to receive method {}, predicted {}",
            m.to_ascii_uppercase(),
            req.method
        ));
    }
    if let Some(m) = e.query.as_ref().and_then(|q| q.mismatch(&b.query)) {
        return Some(m.replace("it received", "predicted"));
    }
    e.headers.iter().find_map(|(name, want)| {
        let HeaderExpect::Rule(r) = want else {
            return None;
        };
        let values = r.values.as_ref()?;
        let got = b.headers_seen.get(&name.to_ascii_lowercase())?;
        (values != got).then(|| {
            format!(
                "expected header {name} {want} at the backend, predicted {}",
                HeaderExpect::describe_got(got)
            )
        })
    })
}

/// The security filters' decision in words: `RBAC denial (403) by <policy>: <why>`,
/// `allowed by <policy>: <why>`.
pub fn verdict_words(v: &Verdict) -> String {
    let what = match v.denied_by {
        Some(DeniedBy::Rbac) => "RBAC denial (403)",
        Some(DeniedBy::Jwt) => "JWT denial (401)",
        Some(DeniedBy::ExtAuthz) => "ext_authz denial (403)",
        None => "allowed",
    };
    let by = v
        .policy
        .as_ref()
        .map(|p| format!(" by {p}"))
        .unwrap_or_default();
    let why = if v.why.is_empty() {
        String::new()
    } else {
        format!(": {}", v.why)
    };
    format!("{what}{by}{why}")
}

/// Why the security filters' predicted decision misses `e.denied` (not denied, or by
/// the other filter), naming the policy that decided; None when `e` expects no
/// denial or the right filter denies.
pub fn authz_mismatch(e: &HttpExpect, p: &Prediction) -> Option<String> {
    let want = e.denied?;
    // Let through at the gateway, refused by the sidecar of every pod it reaches
    // (their RBAC, JWT or ext_authz filter answers the same way: authz::sidecar_plan).
    if p.authz.as_ref().is_none_or(|v| v.denied_by.is_none()) {
        let outcomes = p.outcomes();
        let refusals: Vec<&crate::istio::authz::Verdict> = outcomes
            .iter()
            .filter_map(|b| b.sidecar.as_ref().filter(|v| v.denied_by.is_some()))
            .collect();
        if !outcomes.is_empty() && refusals.len() == outcomes.len() {
            return refusals
                .iter()
                .find(|v| v.denied_by != Some(want.by()))
                .map(|v| {
                    format!(
                        "expected {}, predicted the sidecar's {}",
                        want.describe(),
                        verdict_words(v)
                    )
                });
        }
    }
    match &p.authz {
        Some(v) if v.denied_by == Some(want.by()) => None,
        Some(v) => Some(format!(
            "expected {}, predicted {}",
            want.describe(),
            verdict_words(v)
        )),
        None => Some(format!(
            "expected {}, predicted {} (no AuthorizationPolicy or RequestAuthentication applies to the gateway)",
            want.describe(),
            p.summary()
        )),
    }
}

/// What the security filters decided, when it explains a mismatch: a denial the
/// expectation does not want, or the request let through when `e` wants it refused
/// (`denied`, `not_reached`).
fn authz_context(e: &HttpExpect, p: &Prediction) -> Option<String> {
    let wants_refusal = e.denied.is_some() || e.not_reached;
    match &p.authz {
        Some(v) if v.denied_by.is_some() && e.denied.map(Denied::by) != v.denied_by => {
            Some(verdict_words(v))
        }
        Some(v) if v.denied_by.is_none() && wants_refusal => Some(verdict_words(v)),
        None if wants_refusal => {
            Some("no AuthorizationPolicy or RequestAuthentication applies to the gateway".into())
        }
        _ => None,
    }
}

/// Every way the predicted answers of `p` miss `h`'s expectation (identical mismatches
/// of several branches are one, with their shares added). A `denied` expectation is
/// judged against the security filters' decision first ([`authz_mismatch`]); a
/// mismatch their decision explains says what it was.
pub fn predicted_mismatches(h: &HttpCheck, sim: &SimRequest, p: &Prediction) -> Vec<String> {
    if let Some(m) = authz_mismatch(&h.expect, p) {
        return vec![m];
    }
    let context = authz_context(&h.expect, p);
    let mut by_msg: Vec<(String, f64)> = Vec::new();
    for b in p.outcomes().iter().filter(|b| b.share > 0.0) {
        let found = branch_mismatch(&h.expect, b)
            .map(|m| match &context {
                Some(c) => format!("{m} (authz: {c})"),
                None => m,
            })
            .or_else(|| seen_mismatch(&h.expect, sim, b));
        if let Some(m) = found {
            match by_msg.iter_mut().find(|(x, _)| *x == m) {
                Some((_, s)) => *s += b.share,
                None => by_msg.push((m, b.share)),
            }
        }
    }
    let mut bad: Vec<String> = by_msg
        .into_iter()
        .map(|(m, share)| {
            if share < 1.0 - 1e-9 {
                format!("{m} for {:.0}% of requests", share * 100.0)
            } else {
                m
            }
        })
        .collect();
    bad.extend(mirror_mismatch(&h.expect, p));
    bad.extend(latency_mismatch(&h.expect, &h.request, p));
    bad
}

/// The steps of `steps` as the simulation sends them.
fn step_requests(steps: &[Step], port: u16) -> Vec<StepRequest> {
    steps
        .iter()
        .map(|s| StepRequest {
            name: s.name.clone(),
            request: sim_request(&s.http.request, port),
            repeat: s.http.repeat,
            once: s.once,
        })
        .collect()
}

/// Each step predicted after the ones before it, and the ejections they leave.
fn simulate_with_state(mesh: &Mesh, steps: &[Step], port: u16) -> (Vec<StepPrediction>, Ejections) {
    let reqs = step_requests(steps, port);
    mesh.simulate_steps(&reqs, |i, p| {
        predicted_mismatches(&steps[i].http, &reqs[i].request, p).is_empty()
    })
}

/// Each step predicted after the ones before it.
fn simulate(mesh: &Mesh, steps: &[Step], port: u16) -> Vec<StepPrediction> {
    simulate_with_state(mesh, steps, port).0
}

/// State a `steps` check changes that other checks would see: for each cluster whose
/// endpoints its steps eject, the other checks whose requests reach that cluster (in
/// the steady state). Returns (cluster FQDN, message).
pub fn shared_state(
    mesh: &Mesh,
    suite: &Suite,
    check: &CheckSpec,
    steps: &[Step],
) -> Vec<(String, String)> {
    let port = suite.ingress.port;
    let (_, state) = simulate_with_state(mesh, steps, port);
    let mut out = Vec::new();
    for (cluster, pods) in state.ejected_clusters() {
        let others: Vec<String> = suite
            .checks
            .iter()
            .filter(|o| o.full_name() != check.full_name())
            .filter(|o| {
                o.requests().iter().any(|(_, req)| {
                    let p = mesh.simulate(&sim_request(req, port));
                    p.branches
                        .iter()
                        .any(|b| b.cluster.as_deref() == Some(cluster))
                })
            })
            .map(|o| o.full_name())
            .collect();
        if others.is_empty() {
            continue;
        }
        let names: Vec<&str> = pods.iter().map(|i| mesh.pods[*i].name.as_str()).collect();
        let fqdn = mesh
            .clusters
            .get(cluster)
            .map(|c| c.fqdn.clone())
            .unwrap_or_default();
        out.push((
            fqdn,
            format!(
                "check {}: its steps eject {} from cluster {cluster}, which {} also reach(es) while it runs: they see the ejection for baseEjectionTime",
                check.full_name(),
                names.join(", "),
                others.join(", ")
            ),
        ));
    }
    out
}

/// The first step of `check` whose predicted answers miss its expectation: its
/// request, the prediction and the mismatches (prefixed with the step, and the
/// request for a `once` step of several), or None when every step is predicted to
/// pass.
pub fn first_failing_step(
    mesh: &Mesh,
    steps: &[Step],
    port: u16,
) -> Option<(RequestSpec, Prediction, Vec<String>)> {
    let predicted = simulate(mesh, steps, port);
    for (i, (step, sp)) in steps.iter().zip(&predicted).enumerate() {
        let sim = sim_request(&step.http.request, port);
        let n = sp.requests.len();
        for (j, p) in sp.requests.iter().enumerate() {
            let bad = predicted_mismatches(&step.http, &sim, p);
            if bad.is_empty() {
                continue;
            }
            let which = if n > 1 {
                format!(" (request {} of {n})", j + 1)
            } else {
                String::new()
            };
            let bad = bad
                .into_iter()
                .map(|m| format!("step {}/{} {}{which}: {m}", i + 1, steps.len(), step.name))
                .collect();
            return Some((step.http.request.clone(), p.clone(), bad));
        }
    }
    None
}

/// The prediction shown for each step of the suite's `steps` checks, by step id.
pub fn step_predictions(suite: &Suite, mesh: &Mesh) -> Vec<(String, Prediction)> {
    let mut out = Vec::new();
    for c in &suite.checks {
        let CheckKind::Steps(steps) = &c.kind else {
            continue;
        };
        for (step, sp) in steps.iter().zip(simulate(mesh, steps, suite.ingress.port)) {
            if let Some(p) = sp.shown() {
                out.push((c.step_id(step), p.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod authz_tests {
    //! `denied` and `not_reached` judged against synthetic predictions carrying the
    //! security filters' verdict.
    use super::*;
    use crate::istio::{Backend, Branch, Prediction};

    const DENY_ADMIN: &str = "ns[istio-ingress]-policy[deny-admin]-rule[0]";

    fn branch(status: u16, backend: bool) -> Branch {
        Branch {
            share: 1.0,
            status: Some(status),
            backend: backend.then(|| Backend {
                service: "nb-rest".into(),
                version: "v1".into(),
                namespace: "atlas".into(),
                pods: vec!["nb-rest-v1-abc".into()],
            }),
            path_seen: backend.then(|| "/admin/users".into()),
            query: String::new(),
            headers_seen: Default::default(),
            response: Default::default(),
            mtls: None,
            cluster: None,
            reason: if backend {
                "cluster outbound|80||nb-rest.atlas.svc.cluster.local".into()
            } else {
                "the gateway answers itself".into()
            },
            sidecar: None,
            sidecar_hops: Vec::new(),
        }
    }

    fn verdict(denied_by: Option<DeniedBy>, policy: Option<&str>, why: &str) -> Verdict {
        Verdict {
            denied_by,
            policy: policy.map(str::to_string),
            why: why.into(),
        }
    }

    /// A request predicted `status` (from nb-rest when `backend`), with `authz`.
    fn predicted(status: u16, backend: bool, authz: Option<Verdict>) -> Prediction {
        Prediction {
            steps: Vec::new(),
            route: None,
            branches: vec![branch(status, backend)],
            fault: None,
            mirrors: Vec::new(),
            longest_answer: Default::default(),
            authz,
        }
    }

    fn denied_by_rbac() -> Prediction {
        predicted(
            403,
            false,
            Some(verdict(
                Some(DeniedBy::Rbac),
                Some(DENY_ADMIN),
                "DENY rule matched path /admin/*",
            )),
        )
    }

    fn check(expect: HttpExpect) -> HttpCheck {
        HttpCheck {
            request: RequestSpec {
                path: "/admin/users".into(),
                ..Default::default()
            },
            repeat: 1,
            expect,
        }
    }

    fn judge(expect: HttpExpect, p: &Prediction) -> Vec<String> {
        let h = check(expect);
        predicted_mismatches(&h, &sim_request(&h.request, 80), p)
    }

    fn denied(d: Denied) -> HttpExpect {
        HttpExpect {
            denied: Some(d),
            ..Default::default()
        }
    }

    fn not_reached() -> HttpExpect {
        HttpExpect {
            not_reached: true,
            ..Default::default()
        }
    }

    #[test]
    fn an_rbac_denial_is_predicted_by_the_rbac_filter() {
        assert!(judge(denied(Denied::Rbac), &denied_by_rbac()).is_empty());
        // Allowed by a policy: named, with why.
        let allowed = predicted(
            200,
            true,
            Some(verdict(
                None,
                Some("ns[istio-ingress]-policy[allow-all]-rule[0]"),
                "ALLOW rule matched",
            )),
        );
        assert_eq!(
            judge(denied(Denied::Rbac), &allowed),
            ["expected RBAC denial (403 RBAC: access denied), predicted allowed by ns[istio-ingress]-policy[allow-all]-rule[0]: ALLOW rule matched"]
        );
        // Denied by the other filter.
        let jwt = predicted(
            401,
            false,
            Some(verdict(Some(DeniedBy::Jwt), None, "no JWT: Jwt is missing")),
        );
        assert_eq!(
            judge(denied(Denied::Rbac), &jwt),
            ["expected RBAC denial (403 RBAC: access denied), predicted JWT denial (401): no JWT: Jwt is missing"]
        );
        // No policy at the gateway at all.
        let open = predicted(200, true, None);
        let m = judge(denied(Denied::Rbac), &open);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with(
                "expected RBAC denial (403 RBAC: access denied), predicted 200 from nb-rest v1"
            ) && m[0].ends_with(
                "(no AuthorizationPolicy or RequestAuthentication applies to the gateway)"
            ),
            "{m:?}"
        );
    }

    #[test]
    fn a_jwt_denial_is_predicted_by_the_jwt_filter() {
        let jwt = predicted(
            401,
            false,
            Some(verdict(Some(DeniedBy::Jwt), None, "Jwt is missing")),
        );
        assert!(judge(denied(Denied::Jwt), &jwt).is_empty());
        assert_eq!(
            judge(denied(Denied::Jwt), &denied_by_rbac()),
            [format!("expected JWT denial (401 Jwt ...), predicted RBAC denial (403) by {DENY_ADMIN}: DENY rule matched path /admin/*")]
        );
    }

    #[test]
    fn a_denial_the_verdict_gives_but_the_branches_contradict_is_still_a_mismatch() {
        // The verdict says RBAC, the answer says a backend: judged on the answer too.
        let inconsistent = predicted(
            200,
            true,
            Some(verdict(Some(DeniedBy::Rbac), Some(DENY_ADMIN), "")),
        );
        let m = judge(denied(Denied::Rbac), &inconsistent);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with(
                "expected RBAC denial (403 RBAC: access denied), predicted 200 from nb-rest v1"
            ),
            "{m:?}"
        );
        // A 403 the backend answers is no denial either.
        let from_backend = predicted(
            403,
            true,
            Some(verdict(Some(DeniedBy::Rbac), Some(DENY_ADMIN), "")),
        );
        let m = judge(denied(Denied::Rbac), &from_backend);
        assert_eq!(
            m,
            ["expected RBAC denial (403 RBAC: access denied), predicted 403 from nb-rest v1"]
        );
    }

    #[test]
    fn an_unexpected_denial_names_the_policy_that_decided() {
        let e = HttpExpect {
            status: Some(200),
            backend: Some(crate::suite::BackendExpect {
                service: Some("nb-rest".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            judge(e.clone(), &denied_by_rbac()),
            [format!("expected status 200, predicted 403 (authz: RBAC denial (403) by {DENY_ADMIN}: DENY rule matched path /admin/*)")]
        );
        // Allowed and as expected: nothing to say.
        let allowed = predicted(200, true, Some(verdict(None, None, "no DENY rule matched")));
        assert!(judge(e, &allowed).is_empty());
        // A plain status 403 expectation accepts the denial as before.
        let plain = HttpExpect {
            status: Some(403),
            ..Default::default()
        };
        assert!(judge(plain, &denied_by_rbac()).is_empty());
    }

    #[test]
    fn not_reached_is_any_4xx_without_a_backend() {
        assert!(judge(not_reached(), &denied_by_rbac()).is_empty());
        assert!(judge(not_reached(), &predicted(404, false, None)).is_empty());
        let m = judge(not_reached(), &predicted(200, true, None));
        assert_eq!(
            m,
            ["expected the gateway to refuse the request itself (a 4xx, or no connection; no backend), predicted 200 from nb-rest v1 (authz: no AuthorizationPolicy or RequestAuthentication applies to the gateway)"]
        );
        let allowed = predicted(200, true, Some(verdict(None, None, "no DENY rule matched")));
        let m = judge(not_reached(), &allowed);
        assert!(
            m[0].ends_with("predicted 200 from nb-rest v1 (authz: allowed: no DENY rule matched)"),
            "{m:?}"
        );
        // A backend's own 404 was reached.
        let m = judge(not_reached(), &predicted(404, true, None));
        assert!(m[0].ends_with("predicted 404 from nb-rest v1 (authz: no AuthorizationPolicy or RequestAuthentication applies to the gateway)"), "{m:?}");
        // The gateway's own 503 is no refusal: it routed the request toward a backend.
        let m = judge(not_reached(), &predicted(503, false, None));
        assert!(m[0].starts_with("expected the gateway to refuse the request itself (a 4xx, or no connection; no backend), predicted 503"), "{m:?}");
        // With a status, only that one.
        let e = HttpExpect {
            status: Some(404),
            ..not_reached()
        };
        let m = judge(e, &denied_by_rbac());
        assert!(
            m[0].starts_with("expected status 404, predicted 403"),
            "{m:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::analysis::{analyze, Finding, Severity};
    use std::path::Path;

    /// The analysis of examples/outlier-ejection.yaml with `from` replaced by `to`.
    fn findings(from: &str, to: &str) -> Vec<Finding> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let text = std::fs::read_to_string(root.join("outlier-ejection.yaml")).unwrap();
        assert!(text.contains(from), "{from:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suite.yaml");
        let fixtures = format!(
            "fixtures: [{}, {}]",
            root.join("bookinfo").display(),
            root.join("outlier-ejection").display()
        );
        let text = text
            .replace(from, to)
            .replace("fixtures: [bookinfo, outlier-ejection]", &fixtures);
        std::fs::write(&path, text).unwrap();
        let suite = crate::suite::load(&path).unwrap();
        let fx = crate::fixtures::load_dirs(&suite.fixtures_dirs()).unwrap();
        let mesh = crate::istio::Mesh::build(&fx);
        analyze(&fx, &mesh, &suite)
    }

    #[test]
    fn each_spelling_of_an_attack_is_simulated_as_its_own_check() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suite.yaml");
        std::fs::write(
            &path,
            format!(
                "name: s\nfixtures: {}\nchecks:\n  - group: security\n    name: ui-admin\n    attack:\n      request: {{ path: /atlas-ui/admin }}\n",
                root.join("fixtures/ingress").display()
            ),
        )
        .unwrap();
        let suite = crate::suite::load(&path).unwrap();
        let names = crate::analysis::testcase_names(&suite);
        for label in ["as-written", "dot-segment", "upper-case", "fragment"] {
            assert!(
                names.contains(&format!("simulate::security::ui-admin::{label}")),
                "{label}: {names:?}"
            );
        }
        let fx = crate::fixtures::load_dirs(&suite.fixtures_dirs()).unwrap();
        let mesh = crate::istio::Mesh::build(&fx);
        let found = analyze(&fx, &mesh, &suite);
        let of = |label: &str| {
            found
                .iter()
                .find(|f| f.analysis == format!("simulate::security::ui-admin::{label}"))
        };
        // Nothing closes /atlas-ui/admin in these fixtures: it reaches atlas-ui.
        let f = of("as-written").expect("the path as written reaches a backend");
        assert_eq!(f.code, "MC201");
        assert!(
            f.message.starts_with("check security::ui-admin::as-written: expected the gateway to refuse the request itself (a 4xx, or no connection; no backend), predicted 200 from atlas-ui"),
            "{f}"
        );
        // No route matches the upper-case spelling (routes are case-sensitive): 404.
        assert!(of("upper-case").is_none(), "{:?}", of("upper-case"));
    }

    #[test]
    fn steps_that_eject_a_pod_another_check_reaches_are_a_warning_naming_both() {
        let shared = findings(
            "request: { path: /reviews/0 }",
            "request: { path: /ratings/1 }",
        );
        let f = shared
            .iter()
            .find(|f| f.code == "MC202")
            .expect("an MC202 finding");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.message.contains("check outlier-detection::ejected-then-no-healthy-upstream: its steps eject ratings-")
                && f.message.contains("which routing::reviews-beside-it also reach(es)")
                && f.object == "DestinationRule bookinfo/ratings",
            "{f}"
        );
        // The shipped example gives the scenario a service of its own.
        assert!(!findings("", "").iter().any(|f| f.code == "MC202"));
        // Its steps are predicted to pass: no MC201.
        assert!(!findings("", "").iter().any(|f| f.code == "MC201"));
    }
}
