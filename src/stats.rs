//! The binomial bound behind the distribution check.
//!
//! With n requests and a configured share p for a version, the count X of answers from
//! that version is Binomial(n, p) when the data plane honours the weights (requests are
//! independent draws of Envoy's weighted cluster choice). The check accepts X when it
//! lies in the central interval [lo, hi] with P(X < lo) <= a/2 and P(X > hi) <= a/2,
//! where a = false_failure / (number of versions) (Bonferroni). A correct configuration
//! therefore fails with probability at most `false_failure` (default 1e-6). The
//! interval is exact (computed from the binomial pmf in log space), not a normal
//! approximation. README shows the numbers for the shipped 90/10 split.

/// ln P(X = k) for k = 0..=n, X ~ Binomial(n, p), 0 < p < 1.
fn log_pmf(n: u64, p: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n as usize + 1);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut cur = n as f64 * lq;
    out.push(cur);
    for k in 0..n {
        cur += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + lp - lq;
        out.push(cur);
    }
    out
}

fn pmf(n: u64, p: f64) -> Vec<f64> {
    log_pmf(n, p).into_iter().map(f64::exp).collect()
}

/// The acceptance interval for a count out of `n` at share `p` (0..=1), with two-sided
/// false-failure probability at most `alpha`.
pub fn acceptance_interval(n: u64, p: f64, alpha: f64) -> (u64, u64) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    let probs = pmf(n, p);
    let half = alpha / 2.0;
    // lo: largest k with P(X < k) <= half.
    let mut lo = 0u64;
    let mut acc = 0.0;
    for (k, pk) in probs.iter().enumerate() {
        if acc + pk > half {
            lo = k as u64;
            break;
        }
        acc += pk;
    }
    let mut hi = n;
    let mut acc = 0.0;
    for (k, pk) in probs.iter().enumerate().rev() {
        if acc + pk > half {
            hi = k as u64;
            break;
        }
        acc += pk;
    }
    (lo, hi)
}

/// P(lo <= X <= hi) for X ~ Binomial(n, p): the chance a check with that interval
/// passes when the true share is `p`.
pub fn prob_within(n: u64, p: f64, lo: u64, hi: u64) -> f64 {
    if p <= 0.0 {
        return if lo == 0 { 1.0 } else { 0.0 };
    }
    if p >= 1.0 {
        return if hi >= n { 1.0 } else { 0.0 };
    }
    pmf(n, p)[lo as usize..=hi.min(n) as usize].iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmf_sums_to_one() {
        for (n, p) in [(10, 0.5), (1000, 0.1), (1000, 0.9), (5000, 0.01)] {
            let s: f64 = pmf(n, p).iter().sum();
            assert!((s - 1.0).abs() < 1e-9, "{n} {p} {s}");
        }
    }

    #[test]
    fn shipped_split_is_tight_and_powerful() {
        // The shipped suite: 1000 requests, 90/10, false failure 1e-6 over 2 versions.
        let n = 1000;
        let alpha = 1e-6 / 2.0;
        let (lo, hi) = acceptance_interval(n, 0.10, alpha);
        // A correct 90/10 fails less than once in a million runs...
        assert!(1.0 - prob_within(n, 0.10, lo, hi) <= alpha);
        // ...80/20 is caught (passes far less than once in a thousand runs)...
        assert!(prob_within(n, 0.20, lo, hi) < 1e-4, "{lo}..{hi}");
        // ...and so are 10/90 and 50/50.
        assert!(prob_within(n, 0.90, lo, hi) < 1e-100);
        assert!(prob_within(n, 0.50, lo, hi) < 1e-100);
        assert!(lo > 40 && hi < 160, "{lo}..{hi}");
    }

    #[test]
    fn degenerate_shares() {
        assert_eq!(acceptance_interval(100, 0.0, 1e-6), (0, 0));
        assert_eq!(acceptance_interval(100, 1.0, 1e-6), (100, 100));
    }
}
