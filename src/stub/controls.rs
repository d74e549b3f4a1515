//! What a request may tell the stub to do: answer slowly or with a given status, by a
//! request header (`x-meshcheck-delay: 2s`, `x-meshcheck-status: 503`) or a query
//! parameter (`meshcheck-delay=2s`, `meshcheck-status=503`). The header wins when both
//! are given. A value the stub cannot read is answered with 400 and says why.

use std::time::Duration;

pub const DELAY_HEADER: &str = "x-meshcheck-delay";
pub const STATUS_HEADER: &str = "x-meshcheck-status";
pub const DELAY_PARAM: &str = "meshcheck-delay";
pub const STATUS_PARAM: &str = "meshcheck-status";
/// Only the stubs of this version (their VERSION) fail: with `x-meshcheck-status`, or
/// 503 without it; the others answer 200. Makes one version misbehave, e.g. for
/// outlier detection.
pub const FAIL_VERSION_HEADER: &str = "x-meshcheck-fail-version";
pub const FAIL_VERSION_PARAM: &str = "meshcheck-fail-version";
/// The longest delay the stub honours (a typo must not hang a run).
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// How to answer one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Controls {
    pub delay: Option<Duration>,
    pub status: Option<u16>,
    /// See [`FAIL_VERSION_HEADER`].
    pub fail_version: Option<String>,
}

impl Controls {
    /// The status a stub of `version` answers with.
    pub fn status_for(&self, version: &str) -> u16 {
        match &self.fail_version {
            Some(v) if v == version => self.status.unwrap_or(503),
            Some(_) => 200,
            None => self.status.unwrap_or(200),
        }
    }
}

/// The first value of query parameter `name` (not percent-decoded: durations and
/// status codes need none).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn parse_delay(v: &str) -> Result<Duration, String> {
    let ms = crate::istio::duration_ms(v).ok_or_else(|| {
        format!("{DELAY_HEADER}/{DELAY_PARAM} {v:?}: not a duration like 300ms or 2s")
    })?;
    let d = Duration::from_millis(ms);
    if d > MAX_DELAY {
        return Err(format!(
            "{DELAY_HEADER}/{DELAY_PARAM} {v:?}: longer than {MAX_DELAY:?}"
        ));
    }
    Ok(d)
}

fn parse_status(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(s) if (200..600).contains(&s) => Ok(s),
        _ => Err(format!(
            "{STATUS_HEADER}/{STATUS_PARAM} {v:?}: not an HTTP status 200-599"
        )),
    }
}

/// The controls of a request from its header lookup and query string.
pub fn controls(header: impl Fn(&str) -> Option<String>, query: &str) -> Result<Controls, String> {
    let delay =
        header(DELAY_HEADER).or_else(|| query_param(query, DELAY_PARAM).map(str::to_string));
    let status =
        header(STATUS_HEADER).or_else(|| query_param(query, STATUS_PARAM).map(str::to_string));
    let fail_version = header(FAIL_VERSION_HEADER)
        .or_else(|| query_param(query, FAIL_VERSION_PARAM).map(str::to_string));
    Ok(Controls {
        fail_version,
        delay: delay.as_deref().map(parse_delay).transpose()?,
        status: status.as_deref().map(parse_status).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn headers_and_query_parameters_control_the_answer() {
        let c = controls(
            headers(&[("x-meshcheck-delay", "1.5s")]),
            "meshcheck-status=503",
        )
        .unwrap();
        assert_eq!(c.delay, Some(Duration::from_millis(1500)));
        assert_eq!(c.status, Some(503));
        let c = controls(headers(&[]), "a=b&meshcheck-delay=20ms").unwrap();
        assert_eq!((c.delay, c.status), (Some(Duration::from_millis(20)), None));
        // The header wins over the query.
        let c = controls(
            headers(&[("x-meshcheck-status", "418")]),
            "meshcheck-status=503",
        )
        .unwrap();
        assert_eq!(c.status, Some(418));
        assert_eq!(controls(headers(&[]), "").unwrap(), Controls::default());
    }

    #[test]
    fn unreadable_controls_are_refused_with_the_reason() {
        let e = controls(headers(&[("x-meshcheck-delay", "soon")]), "").unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = controls(headers(&[]), "meshcheck-status=99").unwrap_err();
        assert!(e.contains("200-599"), "{e}");
        let e = controls(headers(&[("x-meshcheck-delay", "1h")]), "").unwrap_err();
        assert!(e.contains("longer than"), "{e}");
    }
}

#[cfg(test)]
mod fail_version_tests {
    use super::*;

    #[test]
    fn only_the_named_version_fails() {
        let c = controls(|n| (n == FAIL_VERSION_HEADER).then(|| "v1".to_string()), "").unwrap();
        assert_eq!(c.status_for("v1"), 503);
        assert_eq!(c.status_for("v2"), 200);
        let c = controls(|_| None, "meshcheck-fail-version=v2&meshcheck-status=500").unwrap();
        assert_eq!(c.status_for("v2"), 500);
        assert_eq!(c.status_for("v1"), 200);
        assert_eq!(
            controls(|_| None, "meshcheck-status=502")
                .unwrap()
                .status_for("v1"),
            502
        );
    }
}
