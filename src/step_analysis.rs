//! The route simulation judged against what a check says the backend received (its
//! method, query string, every value of a header) and the response headers the client
//! receives; and the simulation of `steps` checks: each step predicted in the state
//! the steps before it leave (src/istio/steps.rs: outlier ejections) and judged as an
//! http check is. Used by the analysis (its `static::simulate::` testcases) and by a
//! run (the predictions shown beside a failed step).

use crate::analysis::{branch_mismatch, latency_mismatch, mirror_mismatch, sim_request};
use crate::istio::ejection::Ejections;
use crate::istio::steps::{StepPrediction, StepRequest};
use crate::istio::{Branch, Mesh, Prediction, SimRequest};
use crate::suite::{
    CheckKind, CheckSpec, HeaderExpect, HttpCheck, HttpExpect, RequestSpec, Step, Suite,
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

/// Every way the predicted answers of `p` miss `h`'s expectation (identical mismatches
/// of several branches are one, with their shares added).
pub fn predicted_mismatches(h: &HttpCheck, sim: &SimRequest, p: &Prediction) -> Vec<String> {
    let mut by_msg: Vec<(String, f64)> = Vec::new();
    for b in p.outcomes().iter().filter(|b| b.share > 0.0) {
        let found = branch_mismatch(&h.expect, b).or_else(|| seen_mismatch(&h.expect, sim, b));
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
