//! Every timeout of a run in one place, each with its documented default (the shape of
//! the Gateway API conformance suite's `TimeoutConfig`).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// How long an http expectation may take to first hold (the rest of its 3
    /// successes in a row then complete, however long right answers take).
    /// `None`: the target's suggestion (local: 5 s, clusters: 30 s, the Gateway API
    /// conformance default). Flag `--budget`.
    pub consistency: Option<Duration>,
    /// One HTTP request, connect to last byte (conformance: 10 s); a check adds what
    /// its route's configuration makes the answer take (`Ctx::allowing`).
    pub request: Duration,
    /// Pause after a failed attempt before the next one (conformance: 100 ms).
    pub failure_pause: Duration,
    /// One TCP connect of the port scan.
    pub connect: Duration,
    /// All proxies and apps of the local target up and ready.
    pub local_ready: Duration,
    /// Between SIGTERM and SIGKILL when stopping a process group.
    pub stop_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            consistency: None,
            request: Duration::from_secs(10),
            failure_pause: Duration::from_millis(100),
            connect: Duration::from_secs(1),
            local_ready: Duration::from_secs(20),
            stop_grace: Duration::from_millis(800),
        }
    }
}

/// `30s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}` (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in `{s}` (ms, s or m)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("duration must be positive: `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}
