//! `distribution`: N requests; the share answered by each version must lie within the
//! exact binomial acceptance interval of its configured weight (src/stats.rs), so a
//! correct split fails less than once in a million runs while 80/20 or 10/90 against
//! 90/10 is caught. Any non-2xx answer, or an answer from another service, fails.

use super::{send, Ctx, Outcome};
use crate::stats::{acceptance_interval, prob_within};
use crate::suite::DistributionCheck;
use std::collections::BTreeMap;
use std::time::Instant;

pub async fn run(ctx: &Ctx, check: &DistributionCheck) -> Outcome {
    let (addr, single, pooled) = match ctx.ingress_for(&check.request).and_then(|a| {
        Ok((
            a,
            ctx.client_for(&check.request, a, false)?,
            ctx.client_for(&check.request, a, true)?,
        ))
    }) {
        Ok(x) => x,
        Err(e) => return Outcome::fail(e, ""),
    };
    // Wait (within the budget) for the route to answer once, so a slow convergence is
    // not counted as a skewed split.
    let deadline = Instant::now() + ctx.budget;
    let mut warmup = 0;
    loop {
        warmup += 1;
        let x = send(&single, addr, &check.request).await;
        if x.status.map(|s| (200..300).contains(&s)).unwrap_or(false) && x.echo.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            return Outcome {
                passed: false,
                message: ctx.with_health(format!(
                    "the route never answered 2xx from a backend within {:?} ({warmup} attempts); last: {}",
                    ctx.budget,
                    x.summary()
                )),
                detail: String::new(),
                transcript: x.transcript,
                attempts: warmup,
                flaky: false,
            };
        }
        tokio::time::sleep(ctx.timeouts.failure_pause).await;
    }

    let n = check.requests as usize;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..check.concurrency.max(1) {
        let client = pooled.clone();
        let req = check.request.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                got.push(send(&client, addr, &req).await);
            }
            got
        });
    }
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut others: BTreeMap<String, u64> = BTreeMap::new();
    let mut sample_error = None;
    while let Some(res) = tasks.join_next().await {
        for x in res.unwrap_or_default() {
            match (&x.status, &x.echo) {
                (Some(s), Some(e)) if (200..300).contains(s) => {
                    if check
                        .service
                        .as_ref()
                        .map(|svc| svc != &e.identity.service)
                        .unwrap_or(false)
                    {
                        *others
                            .entry(format!("{}/{}", e.identity.service, e.identity.version))
                            .or_default() += 1;
                    } else {
                        *versions.entry(e.identity.version.clone()).or_default() += 1;
                    }
                }
                _ => {
                    let key = match x.status {
                        Some(s) => format!("{s}"),
                        None => x.error.clone().unwrap_or_else(|| "no response".into()),
                    };
                    *errors.entry(key).or_default() += 1;
                    if sample_error.is_none() {
                        sample_error = Some(x.transcript.clone());
                    }
                }
            }
        }
    }

    let total = n as u64;
    let alpha = check.false_failure / check.shares.len().max(1) as f64;
    let mut table = String::from("version  expected  observed  accepted range (count)\n");
    let mut problems = Vec::new();
    for (v, share) in &check.shares {
        let p = share / 100.0;
        let (lo, hi) = acceptance_interval(total, p, alpha);
        let got = versions.get(v).copied().unwrap_or(0);
        table.push_str(&format!(
            "{v:<8} {share:>7.1}%  {:>7.1}%  {lo}..={hi} of {total} (got {got})\n",
            100.0 * got as f64 / total as f64
        ));
        if got < lo || got > hi {
            problems.push(format!(
                "{v}: {got} of {total} ({:.1}%), expected {share}% (accepted {lo}..={hi})",
                100.0 * got as f64 / total as f64
            ));
        }
    }
    for (v, c) in &versions {
        if !check.shares.contains_key(v) {
            problems.push(format!("{c} answer(s) from unexpected version {v:?}"));
            table.push_str(&format!(
                "{v:<8}      -    {:>7.1}%  (not expected)\n",
                100.0 * *c as f64 / total as f64
            ));
        }
    }
    for (who, c) in &others {
        problems.push(format!("{c} answer(s) from another service ({who})"));
    }
    for (e, c) in &errors {
        problems.push(format!("{c} request(s) failed: {e}"));
    }
    // What the bound guarantees, for the report.
    let note = check
        .shares
        .iter()
        .map(|(v, s)| {
            let (lo, hi) = acceptance_interval(total, s / 100.0, alpha);
            let shifted = (s / 100.0 + 0.1).min(1.0);
            format!(
                "{v}: a true share of {:.0}% would pass with probability {:.1e}",
                shifted * 100.0,
                prob_within(total, shifted, lo, hi)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let detail = format!(
        "{table}false-failure bound {:.0e} (Bonferroni over {} versions); {note}",
        check.false_failure,
        check.shares.len()
    );
    let summary: String = check
        .shares
        .keys()
        .map(|v| {
            format!(
                "{v} {:.1}%",
                100.0 * versions.get(v).copied().unwrap_or(0) as f64 / total as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if problems.is_empty() {
        Outcome {
            passed: true,
            message: format!("{total} requests: {summary}"),
            detail,
            transcript: String::new(),
            attempts: 1,
            flaky: false,
        }
    } else {
        Outcome {
            passed: false,
            message: ctx.with_health(format!("{total} requests: {}", problems.join("; "))),
            detail,
            transcript: sample_error.unwrap_or_default(),
            attempts: 1,
            flaky: false,
        }
    }
}
