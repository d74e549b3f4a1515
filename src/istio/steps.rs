//! The route simulation of a suite's `steps`: each step's request predicted in the
//! state the steps before it leave behind (outlier ejections, [`super::ejection`]),
//! as Envoy reaches it.

use super::ejection::Ejections;
use super::mesh::Mesh;
use super::simulate::{Prediction, SimRequest};

/// How a step sends its request.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub name: String,
    pub request: SimRequest,
    /// Requests per attempt.
    pub repeat: u32,
    /// Sent `repeat` times and judged each once (else: until the expectation holds).
    pub once: bool,
}

/// What the model predicts for one step.
#[derive(Debug, Clone)]
pub struct StepPrediction {
    pub name: String,
    /// A `once` step: one prediction per request, in order. Otherwise one: the state
    /// the step's repeated attempts settle in (what its expectation is judged on).
    pub requests: Vec<Prediction>,
}

impl StepPrediction {
    /// The prediction shown beside a failure of the step: the last one.
    pub fn shown(&self) -> Option<&Prediction> {
        self.requests.last()
    }
}

/// The most attempts a step that waits for its expectation is followed for (a check
/// makes about this many within the local budget, with its pause after a failure).
const ATTEMPT_LIMIT: usize = 64;
/// Consecutive attempts that must meet the expectation (the http check's rule).
const REQUIRED: usize = 3;
/// The most requests of one step followed (a large `repeat` settles long before).
const REQUEST_LIMIT: usize = 1024;

impl Mesh {
    /// Predicts `steps` in order, each after the requests of those before it.
    /// `meets(i, p)` says whether a request of step `i` predicted as `p` meets the
    /// step's expectation: a step that waits for it is followed attempt by attempt,
    /// each attempt changing the state, until 3 in a row meet it (what the check
    /// waits for) or the attempts run out.
    /// Also returns the ejections the steps leave behind.
    pub fn simulate_steps(
        &self,
        steps: &[StepRequest],
        meets: impl Fn(usize, &Prediction) -> bool,
    ) -> (Vec<StepPrediction>, Ejections) {
        let mut state = Ejections::default();
        let predicted = steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepPrediction {
                name: s.name.clone(),
                requests: if s.once {
                    self.once(s, &mut state)
                } else {
                    vec![self.until_it_holds(s, &mut state, |p| meets(i, p))]
                },
            })
            .collect();
        (predicted, state)
    }

    /// Each of the step's requests in the state the ones before it leave.
    fn once(&self, s: &StepRequest, state: &mut Ejections) -> Vec<Prediction> {
        (0..s.repeat.max(1))
            .map(|_| self.send(&s.request, state))
            .collect()
    }

    /// One request: its prediction, then its answer recorded.
    fn send(&self, req: &SimRequest, state: &mut Ejections) -> Prediction {
        let p = self.simulate_in(req, Some(state));
        state.record(self, &p, 1);
        p
    }

    /// The attempts of a step that waits for its expectation: the last attempt's
    /// prediction (one that meets it when 3 in a row did).
    fn until_it_holds(
        &self,
        s: &StepRequest,
        state: &mut Ejections,
        meets: impl Fn(&Prediction) -> bool,
    ) -> Prediction {
        let mut streak = 0;
        let mut last = None;
        let mut sent = 0;
        for _ in 0..ATTEMPT_LIMIT {
            let mut ok = true;
            for _ in 0..s.repeat.max(1) {
                let p = self.send(&s.request, state);
                ok &= meets(&p);
                last = Some(p);
                sent += 1;
            }
            streak = if ok { streak + 1 } else { 0 };
            if streak >= REQUIRED || sent >= REQUEST_LIMIT {
                break;
            }
        }
        last.unwrap_or_else(|| self.simulate_in(&s.request, Some(state)))
    }
}
