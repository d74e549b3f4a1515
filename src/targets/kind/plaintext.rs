//! The plaintext check's request on a kind cluster: pod addresses live on the node's
//! own network (inside its container), not routed from this host, so the request is
//! sent from inside the node container (`docker exec NODE bash -c SCRIPT`) with
//! bash's `/dev/tcp`, as the port scan is (node_scan.rs).

use crate::targets::cluster::run_tool;
use crate::targets::plaintext::{judge, PlaintextAnswer, PlaintextFrom, REQUEST};
use crate::targets::BoxFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Connects to `$1:$2` within `$3` seconds (else prints `UNREACHABLE`), then sends
/// the request (`$5`, with `\r\n` escapes) and prints what came back within `$4`
/// seconds after `ANSWER:`; always exits 0 (the output says what happened; a pod that
/// closes first is an EPIPE, not a SIGPIPE that would end the shell).
const SCRIPT: &str = r#"trap '' PIPE; ip=$1; port=$2; ct=$3; at=$4; req=$5
if command -v timeout >/dev/null 2>&1; then tc="timeout $ct"; ta="timeout $at"; else tc=""; ta=""; fi
if ! $tc bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ip" "$port" 2>/dev/null; then echo UNREACHABLE; exit 0; fi
exec 3<>"/dev/tcp/$ip/$port" || { echo UNREACHABLE; exit 0; }
printf "$req" >&3 2>/dev/null
printf 'ANSWER:'
$ta head -c 256 <&3 2>/dev/null | head -n 1
exit 0
"#;

/// Sends the plaintext request from inside a kind node container.
pub struct FromNodeContainer {
    pub docker: PathBuf,
    /// `<cluster>-control-plane`.
    pub container: String,
}

impl FromNodeContainer {
    fn args(&self, addr: SocketAddr, connect: Duration, answer: Duration) -> Vec<String> {
        let request = String::from_utf8_lossy(REQUEST).replace("\r\n", "\\r\\n");
        vec![
            "exec".into(),
            self.container.clone(),
            "bash".into(),
            "-c".into(),
            SCRIPT.into(),
            "bash".into(),
            addr.ip().to_string(),
            addr.port().to_string(),
            format!("{:.1}", connect.as_secs_f64().max(0.1)),
            format!("{:.1}", answer.as_secs_f64().max(0.1)),
            request,
        ]
    }
}

/// What the script printed, as an answer.
fn parse(out: &str) -> PlaintextAnswer {
    match out.split_once("ANSWER:") {
        Some((_, got)) => judge(got.as_bytes()),
        None if out.trim() == "UNREACHABLE" => {
            PlaintextAnswer::Unreachable("no connection from the node container".into())
        }
        None => PlaintextAnswer::Unreachable(format!("unexpected output: {:?}", out.trim())),
    }
}

impl PlaintextFrom for FromNodeContainer {
    fn send(
        &self,
        addr: SocketAddr,
        connect: Duration,
        answer: Duration,
    ) -> BoxFuture<'_, PlaintextAnswer> {
        Box::pin(async move {
            let whole = Duration::from_secs(30) + connect + answer;
            match run_tool(
                &self.docker,
                &self.args(addr, connect, answer),
                whole,
                "docker exec (plaintext to a pod)",
            )
            .await
            {
                Ok(out) => parse(&out),
                Err(e) => PlaintextAnswer::Unreachable(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The script runs as `docker exec` would, in a shell of "the node" (here: this
    /// machine, with a fake `docker` that execs what follows the container name): an
    /// app answering, a proxy closing, a closed port.
    #[tokio::test]
    async fn the_request_goes_out_from_inside_the_node_container() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        std::fs::write(
            &docker,
            "#!/bin/sh\n[ \"$1\" = exec ] || exit 9\nshift 2\nexec \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app.local_addr().unwrap();
        tokio::spawn(async move {
            // The reachability probe, then the request.
            for _ in 0..2 {
                let (mut s, _) = app.accept().await.unwrap();
                let mut buf = [0u8; 512];
                if let Ok(n) = s.read(&mut buf).await {
                    if n > 0 {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            }
        });
        let strict = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let strict_addr = strict.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (s, _) = strict.accept().await.unwrap();
                drop(s);
            }
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let node = FromNodeContainer {
            docker,
            container: "mc-control-plane".into(),
        };
        let t = Duration::from_secs(3);
        assert_eq!(
            node.send(app_addr, t, t).await,
            PlaintextAnswer::Answered("HTTP/1.1 200 OK".into())
        );
        assert!(matches!(
            node.send(strict_addr, t, t).await,
            PlaintextAnswer::Refused(_)
        ));
        assert!(matches!(
            node.send(closed_addr, t, t).await,
            PlaintextAnswer::Unreachable(_)
        ));
    }
}
