//! The `ports` check on a kind node reached through port mappings (Docker Desktop,
//! a rootless engine): a scan of 127.0.0.1 from here would judge this host's own
//! ports, not the node's, so the node is scanned from inside its container
//! (`docker exec NODE bash -c SCRIPT`), at its InternalIP, with bash's `/dev/tcp`
//! (kindest/node is Debian with bash and coreutils; it has no scanner).

use crate::targets::cluster::run_tool;
use crate::targets::{BoxFuture, NodeScan};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Connects in flight at once inside the node.
const PARALLEL: usize = 64;

/// Connects to `$1` on each port after it (bounded by `timeout $2` when the node
/// has it), `PARALLEL` at a time; prints each port that accepted, one a line.
const SCRIPT: &str = r#"ip=$1; t=$2; shift 2
if command -v timeout >/dev/null 2>&1; then bound="timeout $t"; else bound=""; fi
n=0
for p in "$@"; do
  $bound bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ip" "$p" 2>/dev/null && echo "$p" &
  n=$((n+1))
  if [ $((n % PARALLEL)) -eq 0 ]; then wait; fi
done
wait
"#;

/// The node container of a kind cluster, scanned from inside.
pub struct DockerExecScan {
    pub docker: PathBuf,
    /// `<cluster>-control-plane`.
    pub container: String,
    /// The node's InternalIP.
    pub node: IpAddr,
    /// Gateway Service port -> NodePort (the Service's, not the host's mapping).
    pub node_ports: BTreeMap<u16, u16>,
}

impl DockerExecScan {
    /// `docker exec CONTAINER bash -c SCRIPT bash IP SECONDS PORT...`.
    fn args(&self, ports: &[u16], timeout: Duration) -> Vec<String> {
        let mut a = vec![
            "exec".to_string(),
            self.container.clone(),
            "bash".into(),
            "-c".into(),
            SCRIPT.replace("PARALLEL", &PARALLEL.to_string()),
            "bash".into(),
            self.node.to_string(),
            format!("{:.1}", timeout.as_secs_f64().max(0.1)),
        ];
        a.extend(ports.iter().map(u16::to_string));
        a
    }
}

/// The ports the script printed, sorted; anything else in its output is an error.
fn parse_open(out: &str) -> Result<Vec<u16>, String> {
    let mut open = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<u16>()
                .map_err(|_| format!("unexpected output of the scan: {l:?}"))
        })
        .collect::<Result<Vec<u16>, String>>()?;
    open.sort_unstable();
    open.dedup();
    Ok(open)
}

impl NodeScan for DockerExecScan {
    fn place(&self) -> String {
        format!("inside the node container {}", self.container)
    }
    fn node(&self) -> IpAddr {
        self.node
    }
    fn node_port(&self, service_port: u16) -> Option<u16> {
        self.node_ports.get(&service_port).copied()
    }
    fn open_ports<'a>(
        &'a self,
        ports: &'a [u16],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u16>, String>> {
        Box::pin(async move {
            // Every batch may wait for its slowest connect.
            let batches = ports.len().div_ceil(PARALLEL) as u32;
            let whole = Duration::from_secs(30) + timeout * batches.max(1);
            let out = run_tool(
                &self.docker,
                &self.args(ports, timeout),
                whole,
                "docker exec (port scan)",
            )
            .await
            .map_err(|e| e.to_string())?;
            parse_open(&out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The scan runs the script as `docker exec` would, in a shell of "the node"
    /// (here: this machine, with a fake `docker` that execs what follows the
    /// container name): listening ports are found, refused ones are not.
    #[tokio::test]
    async fn the_node_is_scanned_from_inside_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let docker = dir.path().join("docker");
        std::fs::write(
            &docker,
            format!(
                "#!/bin/sh\necho \"$1 $2\" >> '{}'\n[ \"$1\" = exec ] || exit 9\nshift 2\nexec \"$@\"\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (p1, p2, pc) = (
            l1.local_addr().unwrap().port(),
            l2.local_addr().unwrap().port(),
            closed.local_addr().unwrap().port(),
        );
        drop(closed);
        let scan = DockerExecScan {
            docker,
            container: "mc-control-plane".into(),
            node: IpAddr::from([127, 0, 0, 1]),
            node_ports: BTreeMap::from([(80, 30080)]),
        };
        let mut ports = vec![p1, pc, p2];
        // More than one batch: ports just released (nothing listens there).
        let released: Vec<std::net::TcpListener> = (0..PARALLEL + 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        ports.extend(released.iter().map(|l| l.local_addr().unwrap().port()));
        drop(released);
        let open = scan
            .open_ports(&ports, Duration::from_secs(2))
            .await
            .expect("the scan ran");
        let mut want = vec![p1, p2];
        want.sort_unstable();
        assert_eq!(open, want);
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap().trim(),
            "exec mc-control-plane"
        );
        assert_eq!(scan.node_port(80), Some(30080));
        assert_eq!(scan.place(), "inside the node container mc-control-plane");
        assert!(parse_open("30080\nbash: oops\n").is_err());
    }
}
