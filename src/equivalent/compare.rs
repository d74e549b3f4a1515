//! The requests of a suite asked of two fixture sets (OLD and NEW), each answered by
//! one source (the simulation, or istiod through the oracle), paired by request.

use super::answers::Answers;
use crate::analysis::sim_request;
use crate::istio::{Mesh, Prediction, SimRequest};
use crate::oracle::output::Output;
use crate::suite::{CheckKind, Suite};
use std::collections::BTreeMap;

/// One fixture set as the comparison reads it.
pub struct FixtureSet {
    /// As given on the command line.
    pub shown: String,
    pub fixtures: crate::fixtures::Fixtures,
    pub mesh: Mesh,
}

/// A request of the suite: its id (check name, or `check::step`) and what is sent.
pub struct Request {
    pub id: String,
    pub sim: SimRequest,
}

impl Request {
    /// `GET http://node/atlas-rest/items (port 80; x-atlas-version: v2)`.
    pub fn describe(&self) -> String {
        let r = &self.sim;
        let scheme = if r.https { "https" } else { "http" };
        let mut extra = vec![format!("port {}", r.service_port)];
        if !r.headers.is_empty() {
            extra.push(super::model::render_headers(&r.headers));
        }
        format!(
            "{} {scheme}://{}{} ({})",
            r.method,
            r.host,
            r.path,
            extra.join("; ")
        )
    }
}

/// One side's answer to a request and how it was reached.
pub struct Side {
    pub answers: Answers,
    pub decision_path: String,
}

/// A request answered by OLD and NEW, by one source.
pub struct Comparison {
    /// `simulation` or `istiod 1.30.3`.
    pub source: String,
    pub request: usize,
    pub old: Side,
    pub new: Side,
    /// The aspects whose answers differ (empty: equivalent).
    pub differing: Vec<&'static str>,
}

impl Comparison {
    fn new(source: &str, request: usize, old: Side, new: Side) -> Comparison {
        let differing = old.answers.differing_aspects(&new.answers);
        Comparison {
            source: source.to_string(),
            request,
            old,
            new,
            differing,
        }
    }

    pub fn differs(&self) -> bool {
        !self.differing.is_empty()
    }
}

/// The requests of the suite's http and distribution checks and of its steps, in
/// the suite's order.
pub fn requests(suite: &Suite) -> Vec<Request> {
    suite
        .checks
        .iter()
        .flat_map(|c| c.requests())
        .map(|(id, req)| Request {
            id,
            sim: sim_request(req, suite.ingress.port),
        })
        .collect()
}

/// The simulation's prediction for every request, by id: steps in the state the
/// steps before them leave (outlier ejections), the others in the steady state.
fn predictions(suite: &Suite, mesh: &Mesh, requests: &[Request]) -> BTreeMap<String, Prediction> {
    let mut by_id: BTreeMap<String, Prediction> =
        crate::step_analysis::step_predictions(suite, mesh)
            .into_iter()
            .collect();
    let stepped: Vec<String> = suite
        .checks
        .iter()
        .filter(|c| matches!(c.kind, CheckKind::Steps(_)))
        .flat_map(|c| c.requests().into_iter().map(|(id, _)| id))
        .collect();
    for r in requests.iter().filter(|r| !stepped.contains(&r.id)) {
        by_id.insert(r.id.clone(), mesh.simulate(&r.sim));
    }
    by_id
}

/// Every request as the model of OLD and of NEW answers it.
pub fn by_simulation(
    suite: &Suite,
    requests: &[Request],
    old: &FixtureSet,
    new: &FixtureSet,
) -> Vec<Comparison> {
    let old_sides = simulated(suite, requests, old);
    let new_sides = simulated(suite, requests, new);
    old_sides
        .into_iter()
        .zip(new_sides)
        .enumerate()
        .map(|(i, (o, n))| Comparison::new("simulation", i, o, n))
        .collect()
}

/// Each request as the model of `set` answers it, in the order of `requests`.
fn simulated(suite: &Suite, requests: &[Request], set: &FixtureSet) -> Vec<Side> {
    let mut predicted = predictions(suite, &set.mesh, requests);
    requests
        .iter()
        .map(|r| match predicted.remove(&r.id) {
            Some(p) => Side {
                answers: super::model::answers(&set.mesh, &r.sim, &p),
                decision_path: p.explain(),
            },
            // A step the simulation did not reach (it predicts every step).
            None => Side {
                answers: Answers::default(),
                decision_path: "not simulated".into(),
            },
        })
        .collect()
}

/// Every request as istiod answers it for OLD (`old`) and NEW (`new`).
pub fn by_oracle(
    requests: &[Request],
    old: (&Output, &crate::istio::Mesh),
    new: (&Output, &crate::istio::Mesh),
) -> Vec<Comparison> {
    let source = format!("istiod {}", old.0.istio.release);
    let side = |(o, mesh): (&Output, &crate::istio::Mesh), id: &str| {
        let s = o.simulations.iter().find(|s| s.id == id);
        Side {
            answers: super::oracle::answers(s, mesh),
            decision_path: super::oracle::decision_path(s),
        }
    };
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| Comparison::new(&source, i, side(old, &r.id), side(new, &r.id)))
        .collect()
}
