//! What the stub received: a bounded ring buffer of the requests (newest last), one
//! JSON line per request on stdout (`{"seen":{...}}`, so cluster targets read them
//! from the pod's log), and the control socket through which the local target asks
//! for the requests carrying a given `x-meshcheck-id`.
//!
//! The control endpoint is served only on a unix socket (`--control PATH`), never on
//! the app ports: no route through the mesh can reach it or be shadowed by it.

use super::Echo;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header a check puts a unique id in, to find its requests again.
pub const ID_HEADER: &str = "x-meshcheck-id";
/// How many requests the stub keeps.
pub const CAPACITY: usize = 4096;

/// One line of the stub's stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenLine {
    pub seen: Echo,
}

/// The requests a stub received, newest last, at most [`CAPACITY`].
#[derive(Debug, Clone, Default)]
pub struct Seen {
    ring: Arc<Mutex<VecDeque<Echo>>>,
    /// Also print each request's line on stdout (the stub process does).
    print: bool,
}

impl Seen {
    /// A record that also prints one `{"seen":...}` line per request on stdout.
    pub fn printing() -> Seen {
        Seen {
            print: true,
            ..Seen::default()
        }
    }

    /// Records `e`, dropping the oldest when full (and prints its line).
    pub fn record(&self, e: &Echo) {
        if self.print {
            if let Ok(line) = serde_json::to_string(&SeenLine { seen: e.clone() }) {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        let mut q = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= CAPACITY {
            q.pop_front();
        }
        q.push_back(e.clone());
    }

    /// The recorded requests whose `x-meshcheck-id` is `id`.
    pub fn with_id(&self, id: &str) -> Vec<Echo> {
        let q = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .filter(|e| e.header(ID_HEADER) == Some(id))
            .cloned()
            .collect()
    }
}

/// The requests with `id` among log lines (a pod's log; other lines are skipped).
pub fn from_log(log: &str, id: &str) -> Vec<Echo> {
    log.lines()
        .filter(|l| l.starts_with("{\"seen\":"))
        .filter_map(|l| serde_json::from_str::<SeenLine>(l).ok())
        .map(|l| l.seen)
        .filter(|e| e.header(ID_HEADER) == Some(id))
        .collect()
}

/// The value of `id=` in a query string, percent-decoded.
fn id_param(query: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned())
}

/// Serves `GET /seen?id=ID` (a JSON array of the requests with that id) on the unix
/// socket `path` until the process stops.
pub async fn serve_control(path: &Path, seen: Seen) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) =
                        match (req.uri().path(), req.uri().query().and_then(id_param)) {
                            ("/seen", Some(id)) => (
                                200,
                                serde_json::to_vec(&seen.with_id(&id)).unwrap_or_default(),
                            ),
                            _ => (404, b"GET /seen?id=ID".to_vec()),
                        };
                    async move {
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Asks the stub behind control socket `path` for the requests with `id`.
pub async fn ask(path: &Path, id: &str, timeout: Duration) -> Result<Vec<Echo>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let what = format!("the stub's control socket {}", path.display());
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        let q: String = reqwest::Url::parse_with_params("http://x/seen", [("id", id)])
            .map(|u| u.query().unwrap_or("").to_string())
            .unwrap_or_default();
        s.write_all(format!("GET /seen?{q} HTTP/1.0\r\nhost: stub\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{what}: no answer within {timeout:?}"))?
        .map_err(|e| format!("{what}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!("{what}: {}", head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(id: &str, path: &str) -> Echo {
        let mut e = Echo {
            path: path.into(),
            ..Default::default()
        };
        e.headers.insert(ID_HEADER.into(), vec![id.into()]);
        e
    }

    #[test]
    fn the_ring_keeps_the_newest_requests() {
        let seen = Seen::default();
        for i in 0..CAPACITY + 2 {
            seen.record(&echo(&format!("id-{i}"), "/x"));
        }
        assert!(seen.with_id("id-0").is_empty() && seen.with_id("id-1").is_empty());
        assert_eq!(seen.with_id("id-2").len(), 1);
        assert_eq!(seen.with_id(&format!("id-{}", CAPACITY + 1)).len(), 1);
    }

    #[test]
    fn log_lines_are_read_back_by_id() {
        let a = serde_json::to_string(&SeenLine {
            seen: echo("a", "/one"),
        })
        .unwrap();
        let b = serde_json::to_string(&SeenLine {
            seen: echo("b", "/two"),
        })
        .unwrap();
        let log = format!("meshcheck-stub: listening\n{a}\nnot json\n{b}\n{a}\n");
        let got = from_log(&log, "a");
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.path == "/one"));
        assert!(from_log(&log, "c").is_empty());
    }

    #[tokio::test]
    async fn the_control_socket_answers_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock");
        let seen = Seen::default();
        seen.record(&echo("id one&two", "/p"));
        seen.record(&echo("other", "/q"));
        let server = tokio::spawn({
            let (sock, seen) = (sock.clone(), seen.clone());
            async move { serve_control(&sock, seen).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !sock.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = ask(&sock, "id one&two", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "/p");
        assert!(ask(&sock, "none", Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty());
        server.abort();
        let e = ask(&dir.path().join("absent.sock"), "x", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.contains("absent.sock"), "{e}");
    }
}
