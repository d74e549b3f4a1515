//! `distribution`: N requests; the share answered by each version (`shares`), or the
//! share of each response status (`statuses`), must lie within the exact binomial
//! acceptance interval of its configured weight (src/stats.rs), so a correct split
//! fails less than once in a million runs while 80/20 or 10/90 against 90/10 is
//! caught. With `shares`, any non-2xx answer, or an answer from another service,
//! fails; with `statuses`, every answer counts by its status (a request without an
//! answer fails).

use super::{send, Ctx, Exchange, Outcome};
use crate::stats::{acceptance_interval, prob_within};
use crate::suite::DistributionCheck;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub async fn run(ctx: &Ctx, check: &DistributionCheck) -> Outcome {
    let (addr, single, pooled) = match ingress_and_clients(ctx, check) {
        Ok(x) => x,
        Err(e) => return Outcome::fail(e, ""),
    };
    let unwarmed = match wait_until_warm(ctx, check, &single, addr).await {
        Ok(unwarmed) => unwarmed,
        Err(never_warm) => return never_warm,
    };
    let answers = send_all(check, &pooled, addr).await;
    let tally = Tally::of(check, answers);
    let mut outcome = verdict(ctx, check, &tally);
    if !outcome.passed && !unwarmed.is_empty() {
        outcome.message.push_str(&format!(
            " (never answered during the warm-up: {})",
            unwarmed.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    outcome
}

/// The ingress address of the check's request, with a single-connection client (for
/// the warm-up) and a pooled one (for the measured requests).
fn ingress_and_clients(
    ctx: &Ctx,
    check: &DistributionCheck,
) -> Result<(SocketAddr, super::Client, super::Client), String> {
    let addr = ctx.ingress_for(&check.request)?;
    Ok((
        addr,
        ctx.client_for(&check.request, addr, false)?,
        ctx.client_for(&check.request, addr, true)?,
    ))
}

/// Waits (within the budget) for the route to have converged before anything is
/// counted, so a slow convergence is not counted as a skewed split: each version with
/// a share above 0 has answered a 2xx once (a subset whose pods, sidecars or endpoints
/// are not ready yet answers 503 meanwhile, as Istio's own traffic tests wait for every
/// version before they count), or with `statuses` an expected status has come. At the
/// deadline, a route that answered but not from every version is measured anyway (the
/// versions still missing are returned, for the message: the tally then says what
/// they answer); one that never answered is the failed outcome.
async fn wait_until_warm(
    ctx: &Ctx,
    check: &DistributionCheck,
    client: &super::Client,
    addr: SocketAddr,
) -> Result<BTreeSet<String>, Outcome> {
    let deadline = Instant::now() + ctx.budget;
    let mut missing = versions_to_warm(check);
    let mut answered = false;
    let mut warmup = 0;
    loop {
        warmup += 1;
        let x = send(client, addr, &check.request).await;
        if warm(check, &x) {
            answered = true;
            if let Some(e) = x.echo.as_ref().filter(|e| {
                check
                    .service
                    .as_ref()
                    .is_none_or(|svc| svc == &e.identity.service)
            }) {
                missing.remove(&e.identity.version);
            }
            if missing.is_empty() {
                return Ok(missing);
            }
            // A right answer needs no pause: the next may come from another version.
            if Instant::now() < deadline {
                continue;
            }
        }
        if Instant::now() >= deadline {
            return if answered {
                Ok(missing)
            } else {
                Err(never_warm(ctx, check, warmup, x))
            };
        }
        tokio::time::sleep(ctx.timeouts.failure_pause).await;
    }
}

/// The versions that must each answer once before the measured requests: those with a
/// share above 0 (none with `statuses`/`at_least`: one expected status is enough).
fn versions_to_warm(check: &DistributionCheck) -> BTreeSet<String> {
    check
        .shares
        .iter()
        .filter(|(_, share)| **share > 0.0)
        .map(|(v, _)| v.clone())
        .collect()
}

/// The failed outcome of a route that did not warm up in `warmup` attempts, `last`
/// being the last answer.
fn never_warm(ctx: &Ctx, check: &DistributionCheck, warmup: u32, last: Exchange) -> Outcome {
    Outcome {
        passed: false,
        message: ctx.with_health(format!(
            "the route never answered {} within {:?} ({warmup} attempts); last: {}",
            if check.shares.is_empty() {
                "with an expected status"
            } else {
                "2xx from a backend"
            },
            ctx.budget,
            last.summary()
        )),
        detail: String::new(),
        transcript: last.transcript,
        attempts: warmup,
        flaky: false,
    }
}

/// Sends the check's `requests` requests over `concurrency` workers sharing `client`;
/// the answers in the order the workers finish (each worker's in sending order).
async fn send_all(
    check: &DistributionCheck,
    client: &super::Client,
    addr: SocketAddr,
) -> Vec<Exchange> {
    let n = check.requests as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..check.concurrency.max(1) {
        let client = client.clone();
        let req = check.request.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                got.push(send(&client, addr, &req).await);
            }
            got
        });
    }
    let mut answers = Vec::with_capacity(n);
    while let Some(res) = tasks.join_next().await {
        answers.extend(res.unwrap_or_default());
    }
    answers
}

/// The answers counted: per version (`shares`) or status (`statuses`), answers from
/// another service, and failed requests by status or error, with the first failure's
/// transcript.
#[derive(Default)]
struct Tally {
    versions: BTreeMap<String, u64>,
    others: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    sample_error: Option<String>,
}

impl Tally {
    /// Counts each of `answers` for `check`.
    fn of(check: &DistributionCheck, answers: Vec<Exchange>) -> Tally {
        let mut tally = Tally::default();
        for x in answers {
            tally.count(check, x);
        }
        tally
    }

    /// Counts one answer: by its status (`statuses`), by the version of a 2xx from the
    /// expected service or the service/version of another one (`shares`), else as a
    /// failure.
    fn count(&mut self, check: &DistributionCheck, x: Exchange) {
        let by_status = check.shares.is_empty();
        match (&x.status, &x.echo) {
            (Some(s), _) if by_status => {
                *self.versions.entry(s.to_string()).or_default() += 1;
            }
            (Some(s), Some(e)) if (200..300).contains(s) => {
                if check
                    .service
                    .as_ref()
                    .map(|svc| svc != &e.identity.service)
                    .unwrap_or(false)
                {
                    *self
                        .others
                        .entry(format!("{}/{}", e.identity.service, e.identity.version))
                        .or_default() += 1;
                } else {
                    *self.versions.entry(e.identity.version.clone()).or_default() += 1;
                }
            }
            _ => {
                let key = match x.status {
                    Some(s) => format!("{s}"),
                    None => x.error.clone().unwrap_or_else(|| "no response".into()),
                };
                *self.errors.entry(key).or_default() += 1;
                if self.sample_error.is_none() {
                    self.sample_error = Some(x.transcript);
                }
            }
        }
    }
}

/// The outcome of `tally` against the check's expectation: the shares observed when
/// it is met, else every problem, with the table and the bound's guarantee as detail.
fn verdict(ctx: &Ctx, check: &DistributionCheck, tally: &Tally) -> Outcome {
    let total = check.requests as u64;
    let expected = check.expected();
    let alpha = check.false_failure / expected.len().max(1) as f64;
    let (table, problems) = problems(check, tally, total, alpha);
    let detail = format!(
        "{table}false-failure bound {:.0e} (Bonferroni over {} {}); {}",
        check.false_failure,
        expected.len(),
        if check.shares.is_empty() {
            "statuses"
        } else {
            "versions"
        },
        guarantee(expected, total, alpha)
    );
    if problems.is_empty() {
        Outcome {
            passed: true,
            message: format!(
                "{total} requests: {}",
                observed_shares(expected, &tally.versions, total)
            ),
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
            transcript: tally.sample_error.clone().unwrap_or_default(),
            attempts: 1,
            flaky: false,
        }
    }
}

/// The table of `tally` against the expected shares (or minimums, `at_least`), and
/// the problems: counts outside their bound, answers from another service, failed
/// requests.
fn problems(
    check: &DistributionCheck,
    tally: &Tally,
    total: u64,
    alpha: f64,
) -> (String, Vec<String>) {
    let what = if check.shares.is_empty() {
        "status"
    } else {
        "version"
    };
    let (table, mut problems) = if check.at_least.is_empty() {
        judge(what, check.expected(), &tally.versions, total, alpha)
    } else {
        judge_at_least(&check.at_least, &tally.versions)
    };
    for (who, c) in &tally.others {
        problems.push(format!("{c} answer(s) from another service ({who})"));
    }
    for (e, c) in &tally.errors {
        problems.push(format!("{c} request(s) failed: {e}"));
    }
    (table, problems)
}

/// What the bound guarantees, for the report: for each expected share, the chance
/// that a true share 10 points higher passes.
fn guarantee(expected: &BTreeMap<String, f64>, total: u64, alpha: f64) -> String {
    expected
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
        .join("; ")
}

/// `v1 90.2%, v2 9.8%`: the observed share of each expected version or status.
fn observed_shares(
    expected: &BTreeMap<String, f64>,
    observed: &BTreeMap<String, u64>,
    total: u64,
) -> String {
    expected
        .keys()
        .map(|v| {
            format!(
                "{v} {:.1}%",
                100.0 * observed.get(v).copied().unwrap_or(0) as f64 / total as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    fn every_version_with_a_share_must_answer_before_counting() {
        let check: DistributionCheck =
            serde_saphyr::from_str("request: {path: /}\nshares: {v1: 90, v2: 10, v3: 0}\n")
                .unwrap();
        assert_eq!(
            versions_to_warm(&check),
            ["v1", "v2"].into_iter().map(String::from).collect()
        );
        let by_status: DistributionCheck =
            serde_saphyr::from_str("request: {path: /}\nstatuses: {\"200\": 100}\n").unwrap();
        assert!(versions_to_warm(&by_status).is_empty());
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
