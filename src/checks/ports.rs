//! `ports`: scans the node address (whole NodePort range plus well-known ports). The
//! only port that may answer is the NodePort the gateway Service gives to the allowed
//! Service ports (80). Any other open port fails the check, by number, except the
//! NodePorts of Services that are not the fixtures' (on a shared cluster: other
//! tenants'), which are listed as information: the check judges what the fixtures
//! expose.

use super::{Ctx, Outcome};
use crate::suite::{parse_range, PortsCheck};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Concurrent connects in flight (loopback refusals are immediate; a real node may
/// drop SYNs, so each connect has the `connect` timeout).
const PARALLEL: usize = 256;

pub async fn run(ctx: &Ctx, check: &PortsCheck) -> Outcome {
    let ports = match ports_to_scan(&check.scan) {
        Ok(ports) => ports,
        Err(e) => return Outcome::fail(e, ""),
    };
    let (node, allowed, open) = match ctx.target.node_scan() {
        None => {
            let node = ctx.target.node_address();
            let allowed =
                allowed_node_ports(|sp| ctx.target.node_port(sp), &check.allow_service_ports);
            let open = open_ports(node, &ports, ctx.timeouts.connect).await;
            (node.to_string(), allowed, open)
        }
        // Where a scan from here would see this host, not the node.
        Some(inside) => {
            let allowed = allowed_node_ports(|sp| inside.node_port(sp), &check.allow_service_ports);
            let node = format!("{} ({})", inside.node(), inside.place());
            match inside.open_ports(&ports, ctx.timeouts.connect).await {
                Ok(open) => (node, allowed, open),
                Err(e) => {
                    return Outcome::fail(
                        format!("the ports check cannot be judged: the scan of {node} failed: {e}"),
                        "a scan of the node's address from here would see this host's ports, not the node's, so none was made",
                    )
                }
            }
        }
    };
    let (others, others_note) = other_services_node_ports(ctx).await;
    let scan = Scan {
        node,
        scanned: ports.len(),
        allowed_text: describe_allowed(&allowed),
        unexpected: unexpected_ports(&open, &allowed, &others),
        not_judged: not_judged_ports(&open, &allowed, &others),
        open,
        others_note,
    };
    scan.outcome(&check.scan)
}

/// The NodePort (`node_port`) of each allowed gateway Service port that has one,
/// with that port.
fn allowed_node_ports(
    node_port: impl Fn(u16) -> Option<u16>,
    service_ports: &[u16],
) -> Vec<(u16, u16)> {
    let mut allowed = Vec::new();
    for sp in service_ports {
        if let Some(np) = node_port(*sp) {
            allowed.push((np, *sp));
        }
    }
    allowed
}

/// The ports of the `scan` ranges, sorted, each once.
fn ports_to_scan(scan: &[String]) -> Result<Vec<u16>, String> {
    let mut ports: Vec<u16> = Vec::new();
    for r in scan {
        ports.extend(parse_range(r)?);
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The `ports` of `node` that accept a TCP connection within `timeout`, sorted.
async fn open_ports(node: IpAddr, ports: &[u16], timeout: Duration) -> Vec<u16> {
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for &p in ports {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let addr = SocketAddr::new(node, p);
            let open = matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            (p, open)
        });
    }
    let mut open = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((p, true)) = r {
            open.push(p);
        }
    }
    open.sort_unstable();
    open
}

/// The NodePorts of the cluster's other Services with their names, or none and a
/// note saying why they cannot be read.
async fn other_services_node_ports(ctx: &Ctx) -> (Vec<(u16, String)>, Option<String>) {
    match ctx.target.other_node_ports().await {
        Ok(o) => (o, None),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "the NodePorts of the cluster's other Services cannot be read ({e}): every open port is judged, which is meaningful only on a dedicated cluster"
            )),
        ),
    }
}

/// The Service owning NodePort `p` among `others`, if any.
fn other_service(others: &[(u16, String)], p: u16) -> Option<&String> {
    others.iter().find(|(np, _)| *np == p).map(|(_, s)| s)
}

/// The `open` ports that fail the check: neither allowed nor another Service's.
fn unexpected_ports(open: &[u16], allowed: &[(u16, u16)], others: &[(u16, String)]) -> Vec<u16> {
    open.iter()
        .copied()
        .filter(|p| !allowed.iter().any(|(np, _)| np == p) && other_service(others, *p).is_none())
        .collect()
}

/// The `open` ports not judged, `30080 (Service ns/name)`: other Services' NodePorts
/// that are not allowed ones.
fn not_judged_ports(open: &[u16], allowed: &[(u16, u16)], others: &[(u16, String)]) -> Vec<String> {
    open.iter()
        .filter(|p| !allowed.iter().any(|(np, _)| np == *p))
        .filter_map(|p| other_service(others, *p).map(|s| format!("{p} (Service {s})")))
        .collect()
}

/// `30080 (Service port 80)`, for each allowed NodePort, or why there is none.
fn describe_allowed(allowed: &[(u16, u16)]) -> String {
    if allowed.is_empty() {
        "none (no NodePort for the allowed Service ports)".to_string()
    } else {
        allowed
            .iter()
            .map(|(np, sp)| format!("{np} (Service port {sp})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `80, 30080`, or `none`.
fn port_list(ports: &[u16]) -> String {
    if ports.is_empty() {
        "none".to_string()
    } else {
        ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the scan of one node found, sorted for judging.
struct Scan {
    /// The address scanned (and where from, when not from here).
    node: String,
    /// How many ports were scanned.
    scanned: usize,
    /// The open ports, sorted.
    open: Vec<u16>,
    allowed_text: String,
    unexpected: Vec<u16>,
    not_judged: Vec<String>,
    /// Why other Services' NodePorts could not be told apart, if so.
    others_note: Option<String>,
}

impl Scan {
    /// The report body: what was scanned, allowed and open, what was not judged, and
    /// the note about other Services.
    fn detail(&self, ranges: &[String]) -> String {
        let mut detail = format!(
            "scanned {} port(s) on {} ({})\nallowed: {}\nopen: {}",
            self.scanned,
            self.node,
            ranges.join(", "),
            self.allowed_text,
            port_list(&self.open)
        );
        if !self.not_judged.is_empty() {
            detail.push_str(&format!(
                "\nnot judged (NodePorts of Services that are not the fixtures'): {}",
                self.not_judged.join(", ")
            ));
        }
        if let Some(n) = &self.others_note {
            detail.push_str(&format!("\nnote: {n}"));
        }
        detail
    }

    /// Passed with the open and not-judged ports when no port is unexpected, else
    /// failed naming the unexpected ones; the detail says what the `ranges` scan found.
    fn outcome(self, ranges: &[String]) -> Outcome {
        let detail = self.detail(ranges);
        if self.unexpected.is_empty() {
            Outcome {
                passed: true,
                message: self.pass_message(),
                detail,
                ..Outcome::pass("")
            }
        } else {
            Outcome::fail(self.fail_message(), detail)
        }
    }

    /// `N ports scanned on <node>; open: …`, with the ports not judged.
    fn pass_message(&self) -> String {
        let mut message = format!(
            "{} ports scanned on {}; open: {}",
            self.scanned,
            self.node,
            port_list(&self.open)
        );
        if !self.not_judged.is_empty() {
            message.push_str(&format!(
                "; not judged (other Services' NodePorts): {}",
                self.not_judged.join(", ")
            ));
        }
        message
    }

    /// `unexpected open port(s) on <node>: …`, with what may answer and the note about
    /// other Services.
    fn fail_message(&self) -> String {
        format!(
            "unexpected open port(s) on {}: {} (only {} may answer){}",
            self.node,
            self.unexpected
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.allowed_text,
            self.others_note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::testing::FixedTarget;
    use std::collections::BTreeMap;

    async fn listener() -> (tokio::net::TcpListener, u16) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let p = l.local_addr().expect("its address").port();
        (l, p)
    }

    async fn scan(target: FixedTarget, ports: &[u16]) -> Outcome {
        let ctx = Ctx::new(
            std::sync::Arc::new(target),
            crate::timeouts::Timeouts::default(),
            80,
        );
        let check = PortsCheck {
            scan: ports.iter().map(|p| p.to_string()).collect(),
            allow_service_ports: vec![80],
        };
        run(&ctx, &check).await
    }

    /// On a shared cluster another tenant's NodePort answers too: listed, not judged.
    /// A port of the fixtures' own (or of nobody known) still fails the check.
    #[tokio::test]
    async fn other_services_node_ports_are_information_not_failures() {
        let (_gw, gw) = listener().await;
        let (_other, other) = listener().await;
        let (_own, own) = listener().await;
        let target = || FixedTarget {
            node_ports: BTreeMap::from([(80, gw)]),
            other_node_ports: Ok(vec![(other, "payments/checkout".to_string())]),
            ..FixedTarget::new()
        };
        let o = scan(target(), &[gw, other]).await;
        assert!(o.passed, "{} {}", o.message, o.detail);
        assert!(
            o.message.contains(&format!(
                "not judged (other Services' NodePorts): {other} (Service payments/checkout)"
            )),
            "{}",
            o.message
        );

        let o = scan(target(), &[gw, other, own]).await;
        assert!(!o.passed);
        assert!(
            o.message.starts_with(&format!(
                "unexpected open port(s) on 127.0.0.1: {own} (only"
            )),
            "{}",
            o.message
        );

        // The other Services cannot be read: every open port is judged, and the
        // check says why.
        let o = scan(
            FixedTarget {
                other_node_ports: Err("services is forbidden".into()),
                ..target()
            },
            &[gw, other],
        )
        .await;
        assert!(!o.passed);
        assert!(
            o.message.contains(&format!(": {other} (only")),
            "{}",
            o.message
        );
        assert!(o.message.contains("services is forbidden"), "{}", o.message);
        assert!(o.message.contains("dedicated cluster"), "{}", o.message);
    }

    /// A node scanned from where it is (a kind node behind port mappings): what
    /// that scan finds is judged, against the node's own NodePorts; this host's
    /// open ports (a listener on 127.0.0.1 here) are not scanned.
    struct Inside {
        open: Result<Vec<u16>, String>,
        asked: std::sync::Mutex<Vec<u16>>,
    }

    impl crate::targets::NodeScan for Inside {
        fn place(&self) -> String {
            "inside the node container mc-control-plane".into()
        }
        fn node(&self) -> IpAddr {
            IpAddr::from([172, 18, 0, 2])
        }
        fn node_port(&self, service_port: u16) -> Option<u16> {
            (service_port == 80).then_some(30080)
        }
        fn open_ports<'a>(
            &'a self,
            ports: &'a [u16],
            _timeout: Duration,
        ) -> crate::targets::BoxFuture<'a, Result<Vec<u16>, String>> {
            self.asked.lock().unwrap().extend_from_slice(ports);
            let open = self.open.clone();
            Box::pin(async move { open })
        }
    }

    struct Mapped {
        inner: FixedTarget,
        inside: std::sync::Arc<Inside>,
    }

    impl crate::targets::Target for Mapped {
        fn name(&self) -> &'static str {
            "kind"
        }
        fn node_address(&self) -> IpAddr {
            IpAddr::from([127, 0, 0, 1])
        }
        fn node_port(&self, sp: u16) -> Option<u16> {
            self.inner.node_port(sp)
        }
        fn gateway_identities(&self) -> Vec<String> {
            Vec::new()
        }
        fn pods(
            &self,
        ) -> crate::targets::BoxFuture<'_, Result<Vec<crate::targets::PodInfo>, String>> {
            self.inner.pods()
        }
        fn consistency_budget(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn health(&self) -> Vec<String> {
            Vec::new()
        }
        fn properties(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn shutdown(&self) -> crate::targets::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn node_scan(&self) -> Option<std::sync::Arc<dyn crate::targets::NodeScan>> {
            Some(self.inside.clone())
        }
    }

    async fn scan_mapped(open: Result<Vec<u16>, String>, ports: &[u16]) -> (Outcome, Vec<u16>) {
        // The host port 127.0.0.1 publishes the gateway's NodePort on, listening.
        let (_host, host_port) = listener().await;
        let inside = std::sync::Arc::new(Inside {
            open,
            asked: Default::default(),
        });
        let target = Mapped {
            inner: FixedTarget {
                node_ports: BTreeMap::from([(80, host_port)]),
                ..FixedTarget::new()
            },
            inside: inside.clone(),
        };
        let ctx = Ctx::new(
            std::sync::Arc::new(target),
            crate::timeouts::Timeouts::default(),
            80,
        );
        let mut scan: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        scan.push(host_port.to_string());
        let check = PortsCheck {
            scan,
            allow_service_ports: vec![80],
        };
        let o = run(&ctx, &check).await;
        let asked = inside.asked.lock().unwrap().clone();
        (o, asked)
    }

    #[tokio::test]
    async fn a_port_mapped_node_is_scanned_from_inside() {
        let (o, asked) = scan_mapped(Ok(vec![30080]), &[22, 30080]).await;
        assert!(o.passed, "{} {}", o.message, o.detail);
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert!(
            o.message.contains(
                "on 172.18.0.2 (inside the node container mc-control-plane); open: 30080"
            ),
            "{}",
            o.message
        );
        // An unexpected port open on the node fails, named.
        let (o, _) = scan_mapped(Ok(vec![22, 30080]), &[22, 30080]).await;
        assert!(!o.passed);
        assert!(
            o.message.starts_with("unexpected open port(s) on 172.18.0.2 (inside the node container mc-control-plane): 22 (only 30080 (Service port 80) may answer)"),
            "{}",
            o.message
        );
        // The scan inside cannot run: not judged, and it says so.
        let (o, _) = scan_mapped(Err("docker exec failed".into()), &[30080]).await;
        assert!(!o.passed);
        assert!(
            o.message.starts_with("the ports check cannot be judged")
                && o.message.contains("docker exec failed"),
            "{}",
            o.message
        );
    }
}
