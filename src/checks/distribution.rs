//! `distribution`: N requests; the share answered by each version (`shares`), or the
//! share of each response status (`statuses`), must lie within the exact binomial
//! acceptance interval of its configured weight (src/stats.rs), so a correct split
//! fails less than once in a million runs while 80/20 or 10/90 against 90/10 is
//! caught. With `shares`, any non-2xx answer, or an answer from another service,
//! fails; with `statuses`, every answer counts by its status (a request without an
//! answer fails).

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
        if warm(check, &x) {
            break;
        }
        if Instant::now() >= deadline {
            return Outcome {
                passed: false,
                message: ctx.with_health(format!(
                    "the route never answered {} within {:?} ({warmup} attempts); last: {}",
                    if check.shares.is_empty() {
                        "with an expected status"
                    } else {
                        "2xx from a backend"
                    },
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
    let by_status = check.shares.is_empty();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut others: BTreeMap<String, u64> = BTreeMap::new();
    let mut sample_error = None;
    while let Some(res) = tasks.join_next().await {
        for x in res.unwrap_or_default() {
            match (&x.status, &x.echo) {
                (Some(s), _) if by_status => {
                    *versions.entry(s.to_string()).or_default() += 1;
                }
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
    let expected = check.expected();
    let what = if by_status { "status" } else { "version" };
    let alpha = check.false_failure / expected.len().max(1) as f64;
    let (table, mut problems) = if check.at_least.is_empty() {
        judge(what, expected, &versions, total, alpha)
    } else {
        judge_at_least(&check.at_least, &versions)
    };
    for (who, c) in &others {
        problems.push(format!("{c} answer(s) from another service ({who})"));
    }
    for (e, c) in &errors {
        problems.push(format!("{c} request(s) failed: {e}"));
    }
    // What the bound guarantees, for the report.
    let note = expected
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
        "{table}false-failure bound {:.0e} (Bonferroni over {} {}); {note}",
        check.false_failure,
        expected.len(),
        if by_status { "statuses" } else { "versions" }
    );
    let summary: String = expected
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

/// Whether `x` shows the route ready to be measured: a 2xx from a backend (`shares`),
/// or an answer with one of the expected statuses (`statuses`).
fn warm(check: &DistributionCheck, x: &super::Exchange) -> bool {
    match x.status {
        Some(s) if check.shares.is_empty() => {
            let s = s.to_string();
            check.statuses.contains_key(&s) || check.at_least.contains_key(&s)
        }
        Some(s) => (200..300).contains(&s) && x.echo.is_some(),
        None => false,
    }
}

/// `at_least`: the table of observed statuses, and each expected status seen fewer
/// times than its minimum. Statuses not named are not problems (their number is not
/// configured anywhere, e.g. circuit-breaker overflow beside successes).
fn judge_at_least(
    at_least: &BTreeMap<String, u64>,
    observed: &BTreeMap<String, u64>,
) -> (String, Vec<String>) {
    let mut table = String::from("status  observed  at least\n");
    let mut problems = Vec::new();
    for (status, count) in observed {
        let min = at_least
            .get(status)
            .map(|m| m.to_string())
            .unwrap_or("-".into());
        table.push_str(&format!("{status:<7} {count:>8}  {min:>8}\n"));
    }
    for (status, min) in at_least {
        let got = observed.get(status).copied().unwrap_or(0);
        if got < *min {
            problems.push(format!(
                "status {status}: expected at least {min} answer(s), got {got}"
            ));
        }
    }
    (table, problems)
}

/// The table and the problems of `observed` counts (per version or status) against
/// the `expected` shares in percent: each count must lie in the exact binomial
/// acceptance interval of its share ([`acceptance_interval`]); an outcome not
/// expected at all is a problem.
fn judge(
    what: &str,
    expected: &BTreeMap<String, f64>,
    observed: &BTreeMap<String, u64>,
    total: u64,
    alpha: f64,
) -> (String, Vec<String>) {
    let pct = |c: u64| 100.0 * c as f64 / total.max(1) as f64;
    let mut table = format!("{what:<8} expected  observed  accepted range (count)\n");
    let mut problems = Vec::new();
    for (v, share) in expected {
        let (lo, hi) = acceptance_interval(total, share / 100.0, alpha);
        let got = observed.get(v).copied().unwrap_or(0);
        table.push_str(&format!(
            "{v:<8} {share:>7.1}%  {:>7.1}%  {lo}..={hi} of {total} (got {got})\n",
            pct(got)
        ));
        if got < lo || got > hi {
            problems.push(format!(
                "{what} {v}: {got} of {total} ({:.1}%), expected {share}% (accepted {lo}..={hi})",
                pct(got)
            ));
        }
    }
    for (v, c) in observed {
        if !expected.contains_key(v) {
            problems.push(format!("{c} answer(s) with unexpected {what} {v:?}"));
            table.push_str(&format!(
                "{v:<8}      -    {:>7.1}%  (not expected)\n",
                pct(*c)
            ));
        }
    }
    (table, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<T: Copy>(v: &[(&str, T)]) -> BTreeMap<String, T> {
        v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
    }

    #[test]
    fn status_shares_use_the_binomial_bound() {
        let want = map(&[("200", 50.0), ("503", 50.0)]);
        let (_, p) = judge(
            "status",
            &want,
            &map(&[("200", 480u64), ("503", 520)]),
            1000,
            5e-7,
        );
        assert!(p.is_empty(), "{p:?}");
        let (table, p) = judge(
            "status",
            &want,
            &map(&[("200", 900u64), ("503", 100)]),
            1000,
            5e-7,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("status 200: 900 of 1000"), "{p:?}");
        assert!(table.contains("503"), "{table}");
        let (_, p) = judge(
            "status",
            &want,
            &map(&[("200", 500u64), ("404", 500)]),
            1000,
            5e-7,
        );
        assert!(
            p.iter().any(|x| x.contains("unexpected status \"404\"")),
            "{p:?}"
        );
    }

    #[test]
    fn version_shares_are_judged_as_before() {
        let want = map(&[("v1", 90.0), ("v2", 10.0)]);
        let (_, p) = judge(
            "version",
            &want,
            &map(&[("v1", 900u64), ("v2", 100)]),
            1000,
            5e-7,
        );
        assert!(p.is_empty(), "{p:?}");
        let (_, p) = judge(
            "version",
            &want,
            &map(&[("v1", 800u64), ("v2", 200)]),
            1000,
            5e-7,
        );
        assert!(!p.is_empty());
    }
}
