//! `steps`: http requests in a stated order, one after another, each judged in the
//! state the ones before it left (e.g. a pod answers 5xx, outlier detection ejects it,
//! then the gateway answers 503 no healthy upstream). A step waits for its expectation
//! like an http check, or, marked `once`, sends its requests once and judges each.
//! The check stops at the first step that fails and names it.

use super::{http, Ctx, Outcome};
use crate::istio::Prediction;
use crate::suite::Step;

pub async fn run(ctx: &Ctx, steps: &[Step], predictions: &[Option<Prediction>]) -> Outcome {
    let mut transcript = String::new();
    let mut attempts = 0;
    let mut flaky = false;
    for (i, step) in steps.iter().enumerate() {
        let predicted = predictions.get(i).and_then(Option::as_ref);
        let ctx = predicted.map_or_else(|| ctx.clone(), |p| ctx.allowing(p.longest_answer));
        let o = if step.once {
            http::run_once(&ctx, &step.http).await
        } else {
            http::run(&ctx, &step.http).await
        };
        attempts += o.attempts;
        flaky |= o.flaky;
        transcript.push_str(&format!(
            "--- step {} {} ---\n{}",
            i + 1,
            step.name,
            o.transcript
        ));
        if !o.passed {
            return failed_step(steps, i, o, predicted, transcript, attempts);
        }
    }
    Outcome {
        passed: true,
        message: format!("{} step(s) in order, each as expected", steps.len()),
        detail: String::new(),
        transcript,
        attempts,
        flaky,
    }
}

/// Step `i` failed: its message, named, with what the model predicts for it.
fn failed_step(
    steps: &[Step],
    i: usize,
    o: Outcome,
    predicted: Option<&Prediction>,
    transcript: String,
    attempts: u32,
) -> Outcome {
    let step = &steps[i];
    let mut message = format!(
        "step {}/{} {}: {}",
        i + 1,
        steps.len(),
        step.name,
        o.message
    );
    let mut detail = o.detail;
    if let Some(p) = predicted {
        message.push_str(&format!(" [predicted {}]", p.summary()));
        detail.push_str(&format!(
            "\npredicted from the fixtures after the steps before it:\n  {}",
            p.explain()
        ));
    }
    let before: Vec<&str> = steps[..i].iter().map(|s| s.name.as_str()).collect();
    if !before.is_empty() {
        detail = format!(
            "steps before it, each as expected: {}\n{detail}",
            before.join(", ")
        );
    }
    Outcome {
        passed: false,
        message,
        detail,
        transcript,
        attempts,
        flaky: false,
    }
}
