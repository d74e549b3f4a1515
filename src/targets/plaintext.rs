//! A plaintext HTTP request sent straight to a pod's address, bypassing the gateway:
//! what a client outside the mesh (no sidecar, no Istio certificate) gets from the
//! pod. Under PeerAuthentication STRICT the pod's sidecar has no filter chain for
//! plaintext (pilot/pkg/networking/core/filterchain_options.go
//! `getFilterChainMatchOptions` keeps only the TLS chains for STRICT, with the mode from
//! pilot/pkg/security/authn/policy_applier.go `InboundMTLSSettings`), so Envoy closes
//! the connection without an answer; under PERMISSIVE or DISABLE the app answers.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a plaintext request to a pod got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaintextAnswer {
    /// An HTTP answer: its status line (plaintext got in).
    Answered(String),
    /// The pod accepted the connection and closed it (or reset it, or spoke
    /// something other than HTTP) without answering the request: how.
    Refused(String),
    /// No connection to the pod at all (refused port, no route, timeout): nothing
    /// can be concluded about its sidecar.
    Unreachable(String),
}

/// Sends the plaintext request from where a target's pods are reachable when that is
/// not this machine (a kind node's container).
pub trait PlaintextFrom: Send + Sync {
    fn send(
        &self,
        addr: SocketAddr,
        connect: Duration,
        answer: Duration,
    ) -> crate::targets::BoxFuture<'_, PlaintextAnswer>;
}

/// The request sent: plain HTTP/1.1, closed after the answer.
pub const REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: meshcheck-plaintext\r\nUser-Agent: meshcheck\r\nConnection: close\r\n\r\n";

/// Sends [`REQUEST`] to `addr` from this machine: connect within `connect`, the
/// answer's first line within `answer`.
pub async fn from_here(addr: SocketAddr, connect: Duration, answer: Duration) -> PlaintextAnswer {
    let mut stream = match tokio::time::timeout(connect, tokio::net::TcpStream::connect(addr)).await
    {
        Err(_) => return PlaintextAnswer::Unreachable(format!("no connection within {connect:?}")),
        Ok(Err(e)) => return PlaintextAnswer::Unreachable(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    if let Err(e) = stream.write_all(REQUEST).await {
        return PlaintextAnswer::Refused(format!("closed before the request was sent ({e})"));
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(answer, async {
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.contains(&b'\n') {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match read {
        Err(_) if got.is_empty() => {
            PlaintextAnswer::Refused(format!("connection held open, no answer within {answer:?}"))
        }
        Ok(Err(e)) if got.is_empty() => PlaintextAnswer::Refused(format!("reset ({e})")),
        _ => judge(&got),
    }
}

/// What the bytes a pod sent back say: an HTTP status line is an answer; nothing, or
/// anything else (a TLS alert), is a refusal.
pub fn judge(bytes: &[u8]) -> PlaintextAnswer {
    if bytes.is_empty() {
        return PlaintextAnswer::Refused("closed without an answer".into());
    }
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first).trim().to_string();
    if line.starts_with("HTTP/") {
        PlaintextAnswer::Answered(line)
    } else {
        PlaintextAnswer::Refused(format!(
            "answered {} byte(s) that are not HTTP",
            bytes.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn a_status_line_is_an_answer_anything_else_a_refusal() {
        assert_eq!(
            judge(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            PlaintextAnswer::Answered("HTTP/1.1 200 OK".into())
        );
        assert!(matches!(judge(b""), PlaintextAnswer::Refused(_)));
        // A TLS alert record.
        assert!(matches!(
            judge(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
            PlaintextAnswer::Refused(_)
        ));
    }

    #[tokio::test]
    async fn an_app_answering_plaintext_a_closing_proxy_and_a_closed_port() {
        let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = app.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let strict = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let strict_addr = strict.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = strict.accept().await.unwrap();
            drop(s);
        });
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let t = Duration::from_secs(5);
        assert_eq!(
            from_here(app_addr, t, t).await,
            PlaintextAnswer::Answered("HTTP/1.1 200 OK".into())
        );
        assert!(matches!(
            from_here(strict_addr, t, t).await,
            PlaintextAnswer::Refused(_)
        ));
        assert!(matches!(
            from_here(closed_addr, t, t).await,
            PlaintextAnswer::Unreachable(_)
        ));
    }
}
