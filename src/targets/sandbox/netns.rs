//! The sandbox's networks: one private network namespace for the whole cluster (the
//! "node": control plane on its loopback, a bridge carrying the node address and the
//! pod network, kube-proxy's NodePort rules), and one network namespace per pod,
//! joined to the bridge by a veth pair, as a bridge CNI plugin does. Every namespace
//! is anonymous: it lives as long as a process in it (or an open handle) does, so
//! nothing is left mounted when meshcheck ends, however it ends.
//!
//! Kubernetes refuses loopback pod addresses in EndpointSlices
//! (pkg/apis/core/validation ValidateEndpointIP), so the pods get a private range that
//! is local only inside the node namespace.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The node's address in its namespace: the bridge, the pods' gateway, where NodePorts
/// answer and where pods reach istiod.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The pod network (the bridge's subnet); pods take addresses from [`POD_CIDR`].
pub const NETWORK_PREFIX: u8 = 16;
/// The node's `spec.podCIDR`, where kwok takes pod addresses from.
pub const POD_CIDR: &str = "10.244.1.0/24";
/// The bridge in the node namespace.
pub const BRIDGE: &str = "mcbr0";

/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot create a network namespace (unshare(CLONE_NEWNET): {0}); the sandbox target runs as root (CAP_SYS_ADMIN and CAP_NET_ADMIN), e.g. in a CI job without Docker: `sudo -E cargo run -- --target sandbox`")]
    Permission(std::io::Error),
    #[error("the `ip` command (iproute2) is not installed; the sandbox target needs it to build its network (apt-get install iproute2)")]
    NoIpCommand,
    #[error("`ip {args}` failed: {why}")]
    Ip { args: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Moves the calling thread into a new, empty network namespace. Threads and processes
/// it starts afterwards are in it too; threads started before stay where they were.
pub fn unshare_current_thread() -> Result<(), NetnsError> {
    // SAFETY: a plain syscall; it affects only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Permission(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether this process may create network namespaces: tried on a throwaway thread
/// (its namespace goes with it), before anything is built or started.
pub fn check_permission() -> Result<(), NetnsError> {
    std::thread::spawn(unshare_current_thread)
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::Permission(std::io::Error::other(
                "the check panicked",
            )))
        })?;
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ip {
        Ok(_) => Ok(()),
        Err(_) => Err(NetnsError::NoIpCommand),
    }
}

/// A handle on the calling thread's network namespace (keeps it alive; other threads
/// join it with [`enter`]).
pub fn current() -> Result<OwnedFd, NetnsError> {
    open_ns(Path::new("/proc/thread-self/ns/net"))
}

/// Opens a network namespace file (`/proc/PID/ns/net`).
pub fn open_ns(path: &Path) -> Result<OwnedFd, NetnsError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| NetnsError::Io {
            what: format!("cannot open {}", path.display()),
            source,
        })
}

/// Moves the calling thread into the network namespace `ns`.
pub fn enter(ns: &OwnedFd) -> Result<(), NetnsError> {
    // SAFETY: a plain syscall on a namespace file we hold open.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Io {
            what: "cannot enter the sandbox's network namespace".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Makes `cmd` run in the network namespace `ns` (joined between fork and exec).
pub fn run_in(cmd: &mut Command, ns: &OwnedFd) {
    let fd = ns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; the fd is open in the child (fork copies it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `ip -batch -` with `lines`, in `ns` (else the calling thread's namespace).
pub fn ip_batch(lines: &[String], ns: Option<&OwnedFd>) -> Result<(), NetnsError> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ns) = ns {
        run_in(&mut cmd, ns);
    }
    let shown = lines.join("; ");
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NetnsError::NoIpCommand,
        _ => NetnsError::Ip {
            args: shown.clone(),
            why: e.to_string(),
        },
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.join("\n").as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let out = wait_with_timeout(child, IP_TIMEOUT).map_err(|why| NetnsError::Ip {
        args: shown.clone(),
        why,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            args: shown,
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn wait_with_timeout(
    child: std::process::Child,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            // SAFETY: a plain syscall on the child we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(format!("did not finish within {timeout:?}"))
        }
    }
}

/// Sets up the node namespace (the calling thread's, fresh): loopback up, the bridge
/// with the node address, forwarding on (pods reach Services through kube-proxy's
/// rules here).
pub fn configure_node() -> Result<(), NetnsError> {
    ip_batch(
        &[
            "link set lo up".into(),
            format!("link add {BRIDGE} type bridge"),
            format!("addr add {NODE_IP}/{NETWORK_PREFIX} dev {BRIDGE}"),
            format!("link set {BRIDGE} up"),
        ],
        None,
    )?;
    for (key, value) in [
        ("net/ipv4/ip_forward", "1"),
        // kube-proxy serves NodePorts on 127.0.0.1 too; it sets this itself when it can.
        ("net/ipv4/conf/all/route_localnet", "1"),
    ] {
        let path = Path::new("/proc/sys").join(key);
        std::fs::write(&path, value).map_err(|source| NetnsError::Io {
            what: format!("cannot set {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

/// The network of one pod: the pod namespace `ns` (held by the pod's pause process,
/// `pause_pid`) gets `eth0` with `ip`, its host end `host_if` joins the bridge.
pub fn connect_pod(
    ns: &OwnedFd,
    pause_pid: u32,
    host_if: &str,
    ip: Ipv4Addr,
) -> Result<(), NetnsError> {
    ip_batch(
        &[
            format!("link add {host_if} type veth peer name eth0 netns {pause_pid}"),
            format!("link set {host_if} master {BRIDGE}"),
            format!("link set {host_if} up"),
        ],
        None,
    )?;
    ip_batch(
        &[
            "link set lo up".into(),
            format!("link set eth0 address {}", mac_for(ip)),
            format!("addr add {ip}/{NETWORK_PREFIX} dev eth0"),
            "link set eth0 up".into(),
            format!("route add default via {NODE_IP}"),
        ],
        Some(ns),
    )
}

/// The MAC of the pod interface with address `ip`, derived from it (locally
/// administered): kwok hands a freed address to the next pod, and the neighbours'
/// ARP caches (the gateway pod's, the node's) still map it to the old pod's MAC for
/// up to a minute; with a random MAC the new pod would not see those frames, and
/// connections to it time out (503 "connection timeout" after a rollout restart).
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The host-side interface name for a pod (at most 15 bytes, unique per pod uid).
pub fn host_if_name(pod_uid: &str) -> String {
    let compact: String = pod_uid.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    format!("mc{}", &compact[..compact.len().min(11)])
}

/// Makes `cmd` start in a new network namespace of its own (a pod's pause process).
pub fn new_namespace_for(cmd: &mut Command) {
    // SAFETY: unshare is async-signal-safe; it affects only the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pod_address_keeps_its_mac() {
        let ip = Ipv4Addr::new(10, 244, 1, 15);
        assert_eq!(mac_for(ip), "02:00:0a:f4:01:0f");
        assert_eq!(mac_for(ip), mac_for(Ipv4Addr::new(10, 244, 1, 15)));
        assert_ne!(mac_for(ip), mac_for(Ipv4Addr::new(10, 244, 1, 16)));
    }

    #[test]
    fn host_interface_names_fit_the_kernel_limit_and_differ_per_pod() {
        let a = host_if_name("0b6e1c9a-3f1e-4a55-9e7b-1c2d3e4f5a6b");
        let b = host_if_name("1b6e1c9a-3f1e-4a55-9e7b-1c2d3e4f5a6b");
        assert!(a.len() <= 15, "{a}");
        assert_ne!(a, b);
        assert!(a.starts_with("mc"));
    }
}
