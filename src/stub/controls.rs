//! What a request may tell the stub to do: answer slowly, with a given status or with
//! given response headers, by a request header (`x-meshcheck-delay: 2s`,
//! `x-meshcheck-status: 503`, `x-meshcheck-response-header: foo=bar`) or a query
//! parameter (`meshcheck-delay=2s`, `meshcheck-status=503`,
//! `meshcheck-response-header=foo%3Dbar`). The header wins when both are given. A value
//! the stub cannot read is answered with 400 and says why.

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
/// A response header the stub sends, `name=value`; repeatable (each value one header
/// line, in order), so a VirtualService's `headers.response` can be seen acting on it.
pub const RESPONSE_HEADER_HEADER: &str = "x-meshcheck-response-header";
pub const RESPONSE_HEADER_PARAM: &str = "meshcheck-response-header";
/// Headers the stub will not send on request: they frame or end its own answer.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];
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

/// One `name=value` of `x-meshcheck-response-header`: a header the stub can send.
fn parse_response_header(v: &str) -> Result<(String, String), String> {
    let bad = |why: &str| format!("{RESPONSE_HEADER_HEADER}/{RESPONSE_HEADER_PARAM} {v:?}: {why}");
    let (name, value) = v.split_once('=').ok_or_else(|| bad("not name=value"))?;
    let name = name.trim().to_ascii_lowercase();
    if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(bad("not a header name"));
    }
    if FRAMING_HEADERS.contains(&name.as_str()) {
        return Err(bad("a header that frames the stub's own answer"));
    }
    if hyper::header::HeaderValue::from_str(value).is_err() {
        return Err(bad("not a header value"));
    }
    Ok((name, value.to_string()))
}

/// The response headers a request asks for: every `x-meshcheck-response-header`
/// value (`header_values`), or else every `meshcheck-response-header` query parameter
/// (percent-decoded), in order.
pub fn response_headers(
    header_values: &[String],
    query: &str,
) -> Result<Vec<(String, String)>, String> {
    let from_query: Vec<String>;
    let values = if header_values.is_empty() {
        from_query = reqwest::Url::parse(&format!("http://x/?{query}"))
            .map(|u| {
                u.query_pairs()
                    .filter(|(k, _)| k == RESPONSE_HEADER_PARAM)
                    .map(|(_, v)| v.into_owned())
                    .collect()
            })
            .unwrap_or_default();
        &from_query
    } else {
        header_values
    };
    values.iter().map(|v| parse_response_header(v)).collect()
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
mod response_header_tests {
    use super::*;

    #[test]
    fn response_headers_come_from_every_header_value_or_else_the_query() {
        let got = response_headers(&["Foo=bar".into(), "foo=baz=1".into()], "").unwrap();
        assert_eq!(
            got,
            vec![
                ("foo".to_string(), "bar".to_string()),
                ("foo".to_string(), "baz=1".to_string())
            ]
        );
        let got = response_headers(&[], "a=1&meshcheck-response-header=x-q%3Dv%20w").unwrap();
        assert_eq!(got, vec![("x-q".to_string(), "v w".to_string())]);
        // The header wins over the query.
        let got = response_headers(&["h=1".into()], "meshcheck-response-header=q%3D2").unwrap();
        assert_eq!(got, vec![("h".to_string(), "1".to_string())]);
        assert!(response_headers(&[], "").unwrap().is_empty());
    }

    #[test]
    fn unreadable_response_headers_are_refused_with_the_reason() {
        for (v, why) in [
            ("novalue", "not name=value"),
            ("bad name=x", "not a header name"),
            ("content-length=5", "frames the stub's own answer"),
            ("x=a\nb", "not a header value"),
        ] {
            let e = response_headers(&[v.to_string()], "").unwrap_err();
            assert!(
                e.contains(why) && e.contains(RESPONSE_HEADER_HEADER),
                "{v}: {e}"
            );
        }
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
